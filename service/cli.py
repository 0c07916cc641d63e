"""The service's subcommand of `cae` (`cae serve`) and `python -m service`: one parser, one behaviour.

Host, port, --insecure and the log level also come from CAE_HOST, CAE_PORT, CAE_INSECURE and
CAE_LOG_LEVEL; every other setting from the CAE_* variables of service.settings.Settings. Settings and the
model folder are checked before uvicorn starts: a problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

EXTRA = "serve"  # what `pip install cae[...]` this command needs


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("CAE_HOST", "127.0.0.1"),
                   help="address to bind (default $CAE_HOST or 127.0.0.1; others need CAE_API_KEY or --insecure)")
    p.add_argument("--port", type=int, default=int(os.environ.get("CAE_PORT", "8000")), help="(default $CAE_PORT or 8000)")
    p.add_argument("--insecure", action="store_true", default=_env_flag("CAE_INSECURE"),
                   help="allow a non-loopback address without an API key (default $CAE_INSECURE)")
    p.add_argument("--log-level", default=os.environ.get("CAE_LOG_LEVEL", "info"),
                   choices=["critical", "error", "warning", "info", "debug"], help="(default $CAE_LOG_LEVEL or info)")


def cmd_serve(args) -> int:
    # The service never imports torch; neither does this command.
    from service.serve import StartupError, serve

    try:
        serve(host=args.host, port=args.port, insecure=args.insecure, workers_log_level=args.log_level)
    except StartupError as e:
        print(f"cae serve: error: {e}", file=sys.stderr)
        return 2
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve the models over HTTP (settings: CAE_* environment variables, see README)",
                       description="Serve models/ (or $CAE_MODEL_DIR) over HTTP with onnxruntime. " + __doc__.split("\n\n")[1])
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """`python -m service`: the container's entry point, the same as `cae serve`."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    add_arguments(parser)
    return cmd_serve(parser.parse_args(argv))
