"""``Driver.run_phase`` (the documented one-phase host call) on the accelerator RTL under both
simulators (Verilator: tiny preset; Icarus: the smaller array of test_accelerator.py, so each
simulator model is built once per session)."""

from sparseforge.gen.config import preset
from sparseforge.sim.testkit.layer_cases import SMALL_TOP_CFG

TINY = preset("tiny")
# the shared small top-level config (same key as test_accelerator.py: one simulator model)
SMALL = SMALL_TOP_CFG


def test_run_phase_cocotb(sim, cocotb_run):
    cfg = TINY if sim == "verilator" else SMALL
    # chunk_hw: the chunked WG case's plane (batch 2 x 2 channels per column x 10x10 = 400
    # words > act_buf_depth = 256 on both configs)
    params = {"config": cfg.to_dict(), "seed": 31, "cin": 4, "cout": 4,
              "hw": 6 if sim == "verilator" else 5, "chunk_hw": 10}
    print(f"seed=31 sim={sim} config={cfg.name}")
    assert cocotb_run("accelerator", sim, "cocotb_run_phase", config=cfg, params=params,
                      testcase="run_phase_equals_golden") == 1
