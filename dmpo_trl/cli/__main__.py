"""`python -m dmpo_trl.cli ...`: the `dmpo-trl` command line."""

import sys

from dmpo_trl.cli import main


sys.exit(main())
