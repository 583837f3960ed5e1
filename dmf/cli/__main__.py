"""``python -m dmf.cli``: see ``dmf.cli``."""

import sys

from dmf.cli import main

sys.exit(main())
