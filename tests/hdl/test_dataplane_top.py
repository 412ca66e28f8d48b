"""The accelerator's on-chip data plane at the top level (cocotb, both simulators): every
documented error case (``tests/hdl/cocotb_dataplane_errors.py``)."""

from sparseforge.gen.config import preset
from sparseforge.sim.testkit.layer_cases import SMALL_TOP_CFG

TINY = preset("tiny")
# the shared small top-level config (same key as test_accelerator.py: one simulator model)
SMALL = SMALL_TOP_CFG


def test_dataplane_errors_cocotb(sim, cocotb_run):
    cfg = TINY if sim == "verilator" else SMALL
    print(f"seed=47 sim={sim} config={cfg.name}")
    assert cocotb_run("accelerator", sim, "cocotb_dataplane_errors", config=cfg,
                      params={"config": cfg.to_dict(), "seed": 47},
                      testcase="dataplane_errors") == 1
