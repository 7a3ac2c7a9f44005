"""``python -m hypernet_qgis``: the command-line interface of the engine (also installed as ``hypernet``)."""

import sys

from .launch import main

if __name__ == "__main__":
    sys.exit(main())
