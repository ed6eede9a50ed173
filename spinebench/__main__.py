"""``python -m spinebench``: see :mod:`spinebench.cli`."""

import sys

from spinebench.cli import main

if __name__ == "__main__":
    sys.exit(main())
