"""Driver checks that need no hardware: the per-phase buffer check (shared with
``sparseforge schedule``: gen/schedule.check_tensors) and the chunked-WG routing rule."""
import numpy as np
import pytest

from sparseforge.gen.config import preset
from sparseforge.gen.network import NetworkError
from sparseforge.sim.host.driver import Driver, PacketCodec


def _driver(cfg):
    d = object.__new__(Driver)          # the checks read only the codec's configuration
    d.codec = PacketCodec(cfg)
    return d


def test_check_fits_refuses_each_tensor_by_its_buffer():
    cfg = preset("tiny")
    d = _driver(cfg)
    ok = {"x": cfg.act_mem_elems, "w": cfg.wgt_mem_elems, "mask": 10**9,
          "out": cfg.out_mem_elems}
    d.check_fits("fp", ok)               # exactly full fits; the packed mask is not checked
    for name, field, phase in (("x", "act_mem_elems", "fp"), ("dy", "grad_mem_elems", "bp"),
                               ("w", "wgt_mem_elems", "bp"), ("out", "out_mem_elems", "wg")):
        sizes = {name: getattr(cfg, field) + 1}
        with pytest.raises(NetworkError) as e:
            d.check_fits(phase, sizes)
        msg = str(e.value)
        shown = {"fp": "y", "bp": "dx", "wg": "dW"}[phase] if name == "out" else name
        assert msg.startswith(f"run_phase({phase!r}): tensor {shown} has "
                              f"{getattr(cfg, field) + 1} elements > {field}="
                              f"{getattr(cfg, field)}"), msg
        assert "configuration tiny" in msg and "\n" not in msg


def test_chunked_wg_follows_wg_chunks():
    cfg = preset("tiny")
    d = _driver(cfg)
    depth, C = cfg.act_buf_depth, cfg.pe_cols
    plane = 8 * 8
    fit = depth // plane                  # whole planes per column that fit the scratchpad
    x_ok = np.zeros((1, fit * C, 8, 8), np.int64)
    x_big = np.zeros((1, fit * C + 1, 8, 8), np.int64)
    assert not d._chunked_wg("wg", {"x": x_ok})
    assert d._chunked_wg("wg", {"x": x_big})
    assert not d._chunked_wg("fp", {"x": x_big})
