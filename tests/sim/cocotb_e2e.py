"""cocotb: one full training step (FP, pruning, BP, WG, update, pre-generation) of a CNN on the
``accelerator`` RTL through the host driver, bit for bit against the golden model's step. The
test lives in the package (:mod:`sparseforge.sim.host.e2e_cocotb`) so that ``make e2e`` runs
the same code outside pytest; cocotb collects it from this module too."""

from sparseforge.sim.host.e2e_cocotb import e2e_training_step  # noqa: F401
