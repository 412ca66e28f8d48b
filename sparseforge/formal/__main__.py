"""``python -m sparseforge.formal`` (what ``make formal`` calls): run the proofs, print a table."""

import sys

from sparseforge.formal.runner import main

sys.exit(main())
