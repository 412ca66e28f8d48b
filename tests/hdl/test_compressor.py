"""Compressor: amaranth-sim unit tests and cocotb tests (Icarus, Verilator) vs the golden model."""

import numpy as np
import pytest

from sparseforge.gen.config import preset
from sparseforge.hdl.compressor import Compressor
from sparseforge.hdl.layouts import dense_elem_layout, sparse_elem_layout
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.amaranth_streams import pack, run_stream_sim, unpack

from sparseforge.sim.testkit.patterns import soak_scale

CFG = preset("tiny")
PATTERNS = [("always", "always"), ("cycle", "cycle"), ("random", "random"), ("always", "bursty")]


def _beats_and_expected(rows, masks, dw, relu, use_mask):
    dl, beats, expected = dense_elem_layout(dw), [], []
    for vals, mask in zip(rows, masks):
        for j, (v, mk) in enumerate(zip(vals, mask)):
            beats.append(pack(dl, {"value": v, "mask": mk, "last": j == len(vals) - 1}))
        x = np.maximum(vals, 0) if relu else vals
        gv, gc, gl = golden.compress_row(x, "mask" if use_mask else "none",
                                         mask if use_mask else None)
        expected += [{"value": int(a), "col": int(b), "last": int(c)} for a, b, c in zip(gv, gc, gl)]
    return beats, expected


def _random_rows(seed, n_rows, max_len, dw):
    rng = np.random.default_rng(seed)
    rows, masks = [], []
    for _ in range(n_rows):
        length = int(rng.integers(1, max_len + 1))
        v = rng.integers(-(1 << (dw - 1)), 1 << (dw - 1), size=length)
        v[rng.random(length) >= rng.choice([0.0, 0.1, 0.5, 1.0])] = 0
        rows.append(v)
        masks.append(rng.random(length) < 0.5)
    return rows, masks


@pytest.mark.parametrize("relu,use_mask", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("src,sink", PATTERNS)
def test_compressor_pysim(src, sink, relu, use_mask):
    seed = 1000 + 10 * relu + use_mask
    print(f"seed={seed}")
    dw, max_len = 8, 16
    dut = Compressor(data_width=dw, max_row_len=max_len)
    rows, masks = _random_rows(seed, 40, max_len, dw)
    rows.append(np.zeros(max_len, dtype=np.int64))           # an all-zero row
    masks.append(np.ones(max_len, dtype=bool))
    rows.append(np.array([-(1 << (dw - 1))] * 3))              # most negative values
    masks.append(np.array([True, False, True]))
    beats, expected = _beats_and_expected(rows, masks, dw, relu, use_mask)

    async def setup(ctx):
        ctx.set(dut.relu, relu)
        ctx.set(dut.use_mask, use_mask)

    out, cycles = run_stream_sim(dut, i=dut.i, o=dut.o, beats=beats, expected_count=len(expected),
                                 src_pattern=src, sink_pattern=sink, seed=seed, setup=setup)
    sl = sparse_elem_layout(dw, dut.col_width)
    assert [unpack(sl, b) for b in out] == expected
    if src == sink == "always":
        assert cycles <= len(beats) + 2, f"{len(beats)} elements took {cycles} cycles"


def test_compressor_all_zero_row_emits_one_last_beat():
    dut = Compressor(data_width=8, max_row_len=8)
    beats, expected = _beats_and_expected([np.zeros(8, dtype=np.int64)], [np.ones(8, bool)], 8, 0, 0)
    out, _ = run_stream_sim(dut, i=dut.i, o=dut.o, beats=beats, expected_count=1)
    assert [unpack(sparse_elem_layout(8, 3), b) for b in out] == [{"value": 0, "col": 7, "last": 1}]


def test_compressor_row_too_long_sets_error():
    from amaranth.sim import Simulator
    from sparseforge.sim.testkit.amaranth_streams import stream_put
    dut = Compressor(data_width=8, max_row_len=4)
    dl = dense_elem_layout(8)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for j in range(4):
            await stream_put(ctx, dut.i, pack(dl, {"value": 1, "mask": 1, "last": j == 3}))
        await ctx.tick()
        seen["ok"] = ctx.get(dut.error)
        for j in range(5):                                   # 5 > max_row_len, no last
            await stream_put(ctx, dut.i, pack(dl, {"value": 1, "mask": 1, "last": 0}))
        await ctx.tick()
        seen["bad"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"ok": 0, "bad": 1}


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"data_width": 1}, ValueError, "data_width must be in"),
    ({"data_width": "16"}, TypeError, "data_width must be an integer"),
    ({"max_row_len": 1}, ValueError, "max_row_len must be in"),
])
def test_compressor_rejects_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Compressor(**kwargs)


@pytest.mark.parametrize("relu,use_mask", [(0, 0), (1, 1)])
@pytest.mark.parametrize("src,sink", [("always", "always"), ("cycle", "cycle"), ("random", "random")])
def test_compressor_cocotb(sim, cocotb_run, src, sink, relu, use_mask):
    seed = 2000 + 7 * PATTERNS.index((src, sink)) + relu
    beats = int((10_000 if relu == 0 else 2_000) * soak_scale())
    print(f"seed={seed} beats={beats} sim={sim}")
    n = cocotb_run("compressor", sim, "cocotb_compressor", testcase="compressor_scoreboard",
                   params={"seed": seed, "beats": beats, "src": src, "sink": sink, "relu": relu,
                           "use_mask": use_mask, "data_width": CFG.data_width,
                           "max_row_len": CFG.max_row_len})
    assert n == 1


def test_compressor_cocotb_reset(sim, cocotb_run):
    n = cocotb_run("compressor", sim, "cocotb_compressor", testcase="compressor_reset_mid_row",
                   params={"data_width": CFG.data_width, "max_row_len": CFG.max_row_len})
    assert n == 1
