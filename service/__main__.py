"""`python -m service`: the container's entry point (no training code, no torch); the same as `cae serve`."""

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
