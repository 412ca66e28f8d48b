"""``python -m sparseforge``: the ``sparseforge`` command (:mod:`sparseforge.cli`)."""

import sys

from sparseforge.cli import main

sys.exit(main())
