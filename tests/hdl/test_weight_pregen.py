"""Weight pre-generation (SAT): the whole W_fwd / W_bwd path in amaranth-sim and cocotb equals the
golden ``bdwp_masks`` + ``nm_compress`` bit for bit."""

import numpy as np
import pytest

from sparseforge.gen.verilog import to_verilog
from sparseforge.hdl.nm_selector import NMSelector
from sparseforge.hdl.weight_pregen import (DIR_BWD, DIR_FWD, WeightPregen, pregen_in_layout,
                                           pregen_out_layout)
from sparseforge.sim.host.pregen import (pregen_beats, pregen_group_count, pregen_reassemble,
                                         pregen_schedule, unpack_pregen_out)
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.amaranth_streams import run_stream_sim

from cocotb_nm_selector import adversarial_groups


def random_weights(shape, width, seed):
    """Random weights with ties, zeros and the extremes sprinkled in."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    w = rng.integers(lo, hi + 1, size=shape)
    pick = rng.random(shape)
    w[pick < 0.10] = 0
    w[(pick >= 0.10) & (pick < 0.15)] = lo
    w[(pick >= 0.15) & (pick < 0.20)] = hi
    ties = (pick >= 0.20) & (pick < 0.30)
    w[ties] = rng.integers(-2, 3, size=int(ties.sum()))
    return w.astype(np.int64)


def check_against_golden(res, w, n, m):
    fwd_mask, bwd_mask = golden.bdwp_masks(w, n, m)
    fv, fi, fm = golden.nm_compress(w, n, m, axis=1)
    bv, bi, bm = golden.nm_compress(w, n, m, axis=0)
    np.testing.assert_array_equal(res.fwd_mask, fwd_mask)
    np.testing.assert_array_equal(res.bwd_mask, bwd_mask)
    np.testing.assert_array_equal(fm, fwd_mask)
    np.testing.assert_array_equal(bm, bwd_mask)
    for got, exp in ((res.fwd_values, fv), (res.fwd_indices, fi), (res.bwd_values, bv),
                     (res.bwd_indices, bi)):
        assert got.shape == exp.shape
        np.testing.assert_array_equal(got, exp)
    # and the compressed forms decompress to the masked dense weights
    np.testing.assert_array_equal(golden.nm_decompress(res.fwd_values, res.fwd_indices,
                                                       res.fwd_mask, m, axis=1), w * fwd_mask)
    np.testing.assert_array_equal(golden.nm_decompress(res.bwd_values, res.bwd_indices,
                                                       res.bwd_mask, m, axis=0), w * bwd_mask)


def simulate_pregen(w, n, *, m, n_max, width, src="always", sink="always", seed=0):
    """Run the whole tensor (both directions) through WeightPregen in amaranth-sim; returns the
    reassembled result and the cycle count."""
    dut = WeightPregen(m=m, n_max=n_max, width=width)
    beats = pregen_beats(w, m, width)

    async def setup(ctx):
        ctx.set(dut.n, n)

    out, cycles = run_stream_sim(dut, i=dut.i, o=dut.o, beats=beats, expected_count=len(beats),
                                 src_pattern=src, sink_pattern=sink, seed=seed, setup=setup)
    decoded = [unpack_pregen_out(b, m=m, n_max=n_max, width=width) for b in out]
    return pregen_reassemble(decoded, w.shape, m, n), cycles


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("shape,m,n_max,width,pattern", [
    ((16, 16, 3, 3), 8, 4, 16, "always"),
    ((16, 32), 8, 4, 16, "random"),
    ((8, 4, 2, 3), 4, 4, 8, "cycle"),
])
def test_weight_pregen_equals_golden(shape, m, n_max, width, pattern, n):
    seed = 500 + 10 * n + len(shape)
    print(f"seed={seed}")
    w = random_weights(shape, width, seed)
    res, cycles = simulate_pregen(w, n, m=m, n_max=n_max, width=width, src=pattern,
                                  sink=pattern, seed=seed)
    check_against_golden(res, w, n, m)
    if pattern == "always":
        groups = pregen_group_count(shape, m)
        assert cycles <= groups + 5 + 1, f"{groups} groups took {cycles} cycles"


def test_weight_pregen_adversarial_weights():
    """Rows of the weight tensor made of the selector's corner-case groups, both directions."""
    m, n_max, width = 8, 8, 16
    groups = adversarial_groups(m, width, 3)[:24]
    w = np.array(groups, dtype=np.int64)[:, :m].reshape(24, m)          # (Cout=24, Cin=8)
    for n in (1, 3, 8):
        res, _ = simulate_pregen(w, n, m=m, n_max=n_max, width=width, src="random",
                                 sink="random", seed=n)
        check_against_golden(res, w, n, m)


def test_pregen_schedule_order():
    sched = list(pregen_schedule((4, 4, 1, 2), 2))
    assert len(sched) == pregen_group_count((4, 4, 1, 2), 2) == 32
    fwd, bwd = sched[:16], sched[16:]
    assert all(g.dir == DIR_FWD for g in fwd) and all(g.dir == DIR_BWD for g in bwd)
    assert [g.last for g in sched] == [False] * 15 + [True] + [False] * 15 + [True]
    # fwd: for cout, for cin-group, for kh, for kw; addresses w[cout, g*m + j, kh, kw]
    assert [g.pos for g in fwd[:4]] == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 0), (0, 1, 0, 1)]
    assert fwd[1].addrs == (1, 3)            # w[0, 0, 0, 1], w[0, 1, 0, 1]
    assert fwd[2].addrs == (4, 6)            # w[0, 2, 0, 0], w[0, 3, 0, 0]
    # bwd: for cin, for cout-group, for kh, for kw; addresses w[g*m + j, cin, kh, kw]
    assert [g.pos for g in bwd[:3]] == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 1, 0, 0)]
    assert bwd[0].addrs == (0, 8)            # w[0, 0, 0, 0], w[1, 0, 0, 0]
    assert bwd[2].addrs == (16, 24)          # w[2, 0, 0, 0], w[3, 0, 0, 0]
    # every element is read exactly once per direction
    for part in (fwd, bwd):
        assert sorted(a for g in part for a in g.addrs) == list(range(32))


def test_pregen_reassemble_checks_tags_and_slots():
    m, n_max, n = 2, 2, 1
    w = np.array([[3, -4], [5, 0]])
    beats = []
    for g in pregen_schedule(w.shape, m):
        vals = [int(w.ravel()[a]) for a in g.addrs]
        mask, v, i = golden.nm_select_group(np.array(vals), n, n_max)
        beats.append((mask, v, i, g.dir, int(g.last)))
    res = pregen_reassemble(beats, w.shape, m, n)
    np.testing.assert_array_equal(res.fwd_mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(res.bwd_mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(res.fwd_values, [[[-4]], [[5]]])
    np.testing.assert_array_equal(res.bwd_values, [[[5, -4]]])
    bad = list(beats)
    bad[0] = bad[0][:3] + (DIR_BWD, 0)
    with pytest.raises(ValueError, match="beat 0: tags"):
        pregen_reassemble(bad, w.shape, m, n)
    bad = list(beats)
    bad[1] = (bad[1][0], [bad[1][1][0], 9], bad[1][2], bad[1][3], bad[1][4])
    with pytest.raises(ValueError, match="unused slots"):
        pregen_reassemble(bad, w.shape, m, n)
    with pytest.raises(ValueError, match="beats for a schedule"):
        pregen_reassemble(beats[:-1], w.shape, m, n)


def test_weight_pregen_ports():
    dut = WeightPregen(m=8, n_max=4, width=16)
    assert (dut.m, dut.n_max, dut.width, dut.latency) == (8, 4, 16, 5)
    text = to_verilog(dut, "weight_pregen")
    assert "module weight_pregen(" in text and "i__payload" in text and "o__payload" in text
    assert [name for name, _ in pregen_in_layout(8, 16)] == ["group", "dir", "last"]
    out = pregen_out_layout(8, 4, 16)
    assert [(name, f.offset) for name, f in out] == \
        [("mask", 0), ("values", 8), ("indices", 72), ("dir", 84), ("last", 85)]
    assert out.size == 86 and pregen_in_layout(8, 16).size == 130


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"m": 6, "n_max": 2, "width": 8}, ValueError, "m must be one of"),
    ({"m": 8, "n_max": 9, "width": 8}, ValueError, "n_max must be in"),
    ({"m": 8, "n_max": 2, "width": 1}, ValueError, "width must be in"),
    ({"m": 8, "n_max": "2", "width": 8}, TypeError, "n_max must be an integer"),
])
def test_weight_pregen_rejects_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        WeightPregen(**kwargs)


@pytest.mark.parametrize("shape,m,exc,match", [
    ((16, 12, 3, 3), 8, ValueError, "multiples of m=8"),
    ((12, 16), 8, ValueError, "multiples of m=8"),
    ((16, 16, 3), 8, ValueError, r"w_shape must be \(Cout, Cin\)"),
    ((16, 0), 8, ValueError, "positive integers"),
    ((16, 16), 3, ValueError, "m must be one of"),
    (16, 8, TypeError, "w_shape must be a sequence"),
])
def test_pregen_schedule_rejects_bad_shapes(shape, m, exc, match):
    with pytest.raises(exc, match=match):
        list(pregen_schedule(shape, m))


def test_weight_pregen_reuses_nm_selector():
    dut = WeightPregen(m=8, n_max=4, width=16)
    mod = dut.elaborate(None)
    sel = mod.submodules.selector
    assert isinstance(sel, NMSelector) and (sel.m, sel.n_max, sel.width) == (8, 4, 16)
    for obj in (dut, mod, sel):                  # inspected, not simulated: no unused warning
        obj._MustUse__used = True


@pytest.mark.parametrize("n", [2, 4])
def test_weight_pregen_cocotb(sim, cocotb_run, n):
    """The emitted weight_pregen Verilog on a (16, 16, 3, 3) tensor, random back-pressure."""
    seed = 700 + n
    print(f"seed={seed} sim={sim}")
    assert cocotb_run("weight_pregen", sim, "cocotb_weight_pregen",
                      params={"seed": seed, "n": n, "m": 8, "n_max": 4, "width": 16,
                              "shape": [16, 16, 3, 3]},
                      m=8, n_max=4, width=16) == 1
