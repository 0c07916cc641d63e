import sys

from cae.cli import main

sys.exit(main())
