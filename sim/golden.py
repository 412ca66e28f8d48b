"""The golden-model API (``sparseforge.sim.golden``), a re-export of
:mod:`sparseforge.sim.reference.golden` where the model lives."""

from sparseforge.sim.reference.golden import *  # noqa: F401,F403
from sparseforge.sim.reference.golden import __all__  # noqa: F401
