"""``python -m tornado_ws``."""

import sys

from tornado_ws.cli import main

if __name__ == "__main__":
    sys.exit(main())
