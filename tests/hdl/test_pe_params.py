"""PE constructor parameters: every out-of-range or non-integer parameter is refused with a
message naming it; the ``mode`` input carries the :class:`~sparseforge.hdl.wire.Phase`
encoding the mapper uses."""

import gc
import warnings

import pytest
from amaranth.hdl import Fragment, UnusedElaboratable

from sparseforge.gen.mapper import pe as pm
from sparseforge.hdl.pe import PE
from sparseforge.hdl.wire import Phase


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"data_width": 1}, ValueError, "data_width must be in"),
    ({"data_width": "16"}, TypeError, "data_width must be an integer"),
    ({"acc_width": 20}, ValueError, "acc_width must be in"),
    ({"macs_per_pe": 0}, ValueError, "macs_per_pe must be in"),
    ({"macs_per_pe": 17}, ValueError, "macs_per_pe must be in"),
    ({"k_max": 0}, ValueError, "k_max must be in"),
    ({"max_row_len": 1}, ValueError, "max_row_len must be in"),
    ({"psum_buf_depth": 1}, ValueError, "psum_buf_depth must be in"),
    ({"act_buf_depth": 1.5}, TypeError, "act_buf_depth must be an integer"),
    ({"frac_bits": 16}, ValueError, "frac_bits must be in"),
])
def test_pe_rejects_bad_parameters(kwargs, exc, match):
    with warnings.catch_warnings():
        # the half-built component is garbage: collect it here, silently, not in a later test
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(exc, match=match) as info:
            PE(**kwargs)
        del info
        gc.collect()


def test_pe_mode_input_is_the_phase_encoding():
    """One spelling of the phases: the mapper's ``mode`` values are the ``Phase`` values, and
    the PE's ``mode`` input is as wide as ``Phase``."""
    assert pm.MODES == {"fp": Phase.FP.value, "bp": Phase.BP.value, "wg": Phase.WG.value}
    assert pm.MODES == {"fp": 0, "bp": 1, "wg": 2}          # the encoding on the wire
    dut = PE(macs_per_pe=1, k_max=3, max_row_len=8, psum_buf_depth=16, act_buf_depth=16)
    assert dut.mode.shape().width == Phase.as_shape().width == 2
    Fragment.get(dut, None)                               # it elaborates (and is used)
