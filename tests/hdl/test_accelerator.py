"""Top level (AXI4-Lite + AXI4-Stream router, PE array, pruner, pre-generation) through the host
driver: cocotb under Verilator with the tiny preset and under Icarus with a smaller array."""

import pytest

from sparseforge.gen.config import preset
from sparseforge.sim.host.driver import PacketCodec

TINY = preset("tiny")
SMALL = preset("tiny").replace(pe_rows=1, pe_cols=2, psum_buf_depth=64, act_buf_depth=256,
                               max_row_len=16, k_max=3, name="small")


def test_codec_roundtrip_and_errors():
    codec = PacketCodec(SMALL)
    pk = codec.packet("x_r0", [1, 2, 3])
    assert pk[0] >> 24 == codec.dest_id["x_r0"] and pk[0] & 0xFFFFFF == 3
    with pytest.raises(ValueError, match="does not fit"):
        codec.packet("x_r0", [1 << 40])
    with pytest.raises(ValueError, match="unknown CTRL fields"):
        codec.ctrl_packet(bogus=1)
    with pytest.raises(ValueError, match="unknown source"):
        codec.parse_output([0xFF000001, 0])


@pytest.mark.parametrize("test", ["accelerator_layers", "accelerator_prune_and_pregen",
                                  "accelerator_errors_and_soft_reset",
                                  "accelerator_pregen_overlaps_wg", "accelerator_schedule"])
def test_accelerator_cocotb(sim, cocotb_run, test):
    cfg = TINY if sim == "verilator" else SMALL
    params = {"config": cfg.to_dict(), "seed": 900, "cin": 4, "cout": 4,
              "hw": 6 if sim == "verilator" else 5,
              "layers": [["fp", [2, 4], False], ["bp", None, True], ["wg", None, False]]}
    print(f"seed=900 sim={sim} config={cfg.name}")
    n = cocotb_run("accelerator", sim, "cocotb_accelerator", config=cfg, params=params,
                   testcase=test)
    assert n == 1
