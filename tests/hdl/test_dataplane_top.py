"""The accelerator's on-chip data plane at the top level (cocotb, both simulators): every
documented error case (``tests/hdl/cocotb_dataplane_errors.py``)."""

from sparseforge.gen.config import preset

TINY = preset("tiny")
# the Icarus config of test_accelerator.py (same key: its simulator model is reused)
SMALL = preset("tiny").replace(pe_rows=1, pe_cols=2, psum_buf_depth=64, act_buf_depth=256,
                               max_row_len=16, k_max=3, name="small")


def test_dataplane_errors_cocotb(sim, cocotb_run):
    cfg = TINY if sim == "verilator" else SMALL
    print(f"seed=47 sim={sim} config={cfg.name}")
    assert cocotb_run("accelerator", sim, "cocotb_dataplane_errors", config=cfg,
                      params={"config": cfg.to_dict(), "seed": 47},
                      testcase="dataplane_errors") == 1
