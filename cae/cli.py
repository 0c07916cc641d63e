"""`cae`: one command for every stage. The dispatcher owns no subcommand: each stage registers its own
(training.cli, export.cli, service.cli), with its own defaults, and imports its heavy modules only when a
subcommand runs. A subcommand whose extra is not installed says which one in one line.

    cae train | sweep | lr-scan | train-colorizer | color-report | figures | download   (extra: train)
    cae export                                                                          (extra: export)
    cae serve                                                                           (extra: serve)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# The stages, in the order their commands are listed; each module has add_commands(subparsers) and EXTRA.
STAGES = ("training.cli", "export.cli", "service.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cae", description="Convolutional autoencoders: train, sweep, export, serve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGES:
        stage = importlib.import_module(name)
        before = set(sub.choices)
        stage.add_commands(sub)
        for command in set(sub.choices) - before:
            sub.choices[command].set_defaults(extra=stage.EXTRA)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in {"training", "export", "service", "cae"}:
            raise  # the project's own module: a bug, not a missing extra
        print(f"cae {args.command}: needs the '{args.extra}' extra (missing module {e.name}): "
              f"pip install 'cae[{args.extra}]'", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # the stages' errors about input (DatasetError is one)
        print(f"cae {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cae {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cae ... | head`: the reader has all it wanted. stdout goes to /dev/null, or Python reports the
        # broken pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
