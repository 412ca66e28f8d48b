"""StochasticPruner constructor: every parameter checked with a message that names it, the
extreme parameters elaborate, and the ports follow the parameters."""

from __future__ import annotations

import gc

import pytest
from amaranth.hdl import Fragment

from sparseforge.hdl.pruner import StochasticPruner



@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs,exc,match", [
    ({"data_width": 1}, ValueError, r"data_width must be in \[2, 48\], not 1"),
    ({"data_width": 49}, ValueError, "data_width must be in"),
    ({"data_width": "16"}, TypeError, "data_width must be an integer"),
    ({"data_width": True}, TypeError, "data_width must be an integer"),
    ({"sum_width": 15}, ValueError, r"sum_width must be in \[16, 128\], not 15"),
    ({"sum_width": 40.0}, TypeError, "sum_width must be an integer"),
    ({"kp_width": 0}, ValueError, "kp_width must be in"),
    ({"kp_width": 65}, ValueError, "kp_width must be in"),
    ({"kp_width": None}, TypeError, "kp_width must be an integer"),
    ({"shift_max": -1}, ValueError, "shift_max must be in"),
    ({"shift_max": 256}, ValueError, "shift_max must be in"),
    ({"shift_max": 6.5}, TypeError, "shift_max must be an integer"),
])
def test_pruner_rejects_bad_parameters(kwargs, exc, match):
    _expect_rejection(exc, match, **kwargs)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_pruner_rejects_positional_arguments():
    _expect_rejection(TypeError, "positional", 16)


def _expect_rejection(exc, match, *args, **kwargs):
    with pytest.raises(exc, match=match):
        StochasticPruner(*args, **kwargs)
    gc.collect()    # the half-built component warns "never used" here, where it is filtered


def elaborated(dut):
    """Elaborate ``dut`` (proves the extreme parameters build, and marks it used)."""
    Fragment.get(dut, None)
    return dut


def test_pruner_parameters_and_ports():
    dut = elaborated(StochasticPruner(data_width=12, kp_width=20, shift_max=40))
    assert (dut.data_width, dut.sum_width, dut.kp_width, dut.shift_max, dut.shift_width,
            dut.tau_max) == (12, 36, 20, 40, 6, 2047)
    assert len(dut.tau) == len(dut.tau_next) == 11
    assert len(dut.k_p) == 20 and len(dut.shift) == 6 and len(dut.abs_sum) == 36
    assert elaborated(StochasticPruner(shift_max=0)).shift_width == 1
    assert elaborated(StochasticPruner(data_width=8, sum_width=8)).sum_width == 8
