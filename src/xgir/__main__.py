"""``python -m xgir ...`` (and ``torchrun ... -m xgir correct --config ...``): the ``xgir`` command."""

import sys

from xgir.cli import main

if __name__ == "__main__":
    sys.exit(main())
