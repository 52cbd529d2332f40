"""``python -m dmpo_trl.pipeline --config RECIPE [--quick] [--output-dir DIR]``: same as ``dmpo-trl pipeline``."""

import sys

from dmpo_trl.cli.pipeline import main


if __name__ == "__main__":
    sys.exit(main())
