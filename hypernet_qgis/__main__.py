"""``python -m hypernet_qgis``: the command-line interface of the engine."""

import sys

from .core.cli import main

if __name__ == "__main__":
    sys.exit(main())
