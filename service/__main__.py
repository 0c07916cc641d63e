"""`python -m service`: the container's entry point (no training code, no torch).

Host, port and --insecure also come from CAE_HOST, CAE_PORT and CAE_INSECURE; every other setting from
the CAE_* variables of service.settings.Settings.
"""

from __future__ import annotations

import argparse
import os
import sys

from service.models import ModelLoadError
from service.serve import InsecureBindError, SettingsError, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("CAE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CAE_PORT", "8000")))
    parser.add_argument("--insecure", action="store_true", default=os.environ.get("CAE_INSECURE", "").lower() in ("1", "true", "yes"),
                        help="allow a non-loopback address without CAE_API_KEY")
    parser.add_argument("--log-level", default=os.environ.get("CAE_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    try:
        serve(host=args.host, port=args.port, insecure=args.insecure, workers_log_level=args.log_level)
    except (InsecureBindError, SettingsError, ModelLoadError) as e:
        print(f"cae service: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
