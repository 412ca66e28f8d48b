"""cocotb test of the emitted ``compressor`` against the golden compressor (scoreboard)."""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import StreamSink, StreamSource, env_params, run_streams
from sparseforge.sim.testkit.patterns import make_pattern


def make_rows(rng: np.random.Generator, n_rows: int, max_len: int, dw: int):
    rows = []
    for _ in range(n_rows):
        length = int(rng.integers(1, max_len + 1))
        density = float(rng.choice([0.0, 0.1, 0.5, 0.9, 1.0]))
        vals = rng.integers(-(1 << (dw - 1)), 1 << (dw - 1), size=length)
        vals[rng.random(length) >= density] = 0
        mask = rng.random(length) < 0.6
        rows.append((vals.astype(np.int64), mask))
    return rows


def pack_dense(v, mask, last, dw):
    return (int(v) & ((1 << dw) - 1)) | (int(mask) << dw) | (int(last) << (dw + 1))


def pack_sparse(v, col, last, dw, cw):
    return (int(v) & ((1 << dw) - 1)) | (int(col) << dw) | (int(last) << (dw + cw))


@cocotb.test()
async def compressor_scoreboard(dut):
    p = env_params()
    seed, dw, max_len = p["seed"], p["data_width"], p["max_row_len"]
    cw = max(1, (max_len - 1).bit_length())
    relu, use_mask = p["relu"], p["use_mask"]
    dut._log.info(f"seed={seed} beats>={p['beats']} src={p['src']} sink={p['sink']} "
                  f"relu={relu} use_mask={use_mask}")
    rng = np.random.default_rng(seed)

    rows, n = [], 0
    while n < p["beats"]:
        rows += make_rows(rng, 8, max_len, dw)
        n = sum(len(r[0]) for r in rows)

    beats, expected = [], []
    for vals, mask in rows:
        for j, (v, mk) in enumerate(zip(vals, mask)):
            beats.append(pack_dense(v, mk, j == len(vals) - 1, dw))
        x = np.maximum(vals, 0) if relu else vals
        gv, gc, gl = golden.compress_row(x, "mask" if use_mask else "none",
                                         mask if use_mask else None)
        expected += [pack_sparse(a, b, c, dw, cw) for a, b, c in zip(gv, gc, gl)]

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.relu.value = relu
    dut.use_mask.value = use_mask
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    src = StreamSource(dut, "i", beats, make_pattern(p["src"], seed))
    sink = StreamSink(dut, "o", make_pattern(p["sink"], seed + 1), expected=len(expected))
    cycles = await run_streams(dut.clk, [src], [sink], max_cycles=20 * len(beats) + 100,
                               extra_cycles=20)
    assert len(sink.beats) == len(expected), f"{len(sink.beats)} beats out, {len(expected)} expected"
    for k, (got, exp) in enumerate(zip(sink.beats, expected)):
        assert got == exp, f"beat {k}: got {got:#x}, expected {exp:#x}"
    assert int(dut.error.value) == 0
    nnz = sum(1 for e in expected if e & ((1 << dw) - 1))
    assert int(dut.nnz.value) == nnz, f"nnz counter {int(dut.nnz.value)} != {nnz}"
    if p["src"] == "always" and p["sink"] == "always":
        # One dense element per cycle: the last output beat leaves 1 cycle after the last input.
        assert sink.cycles_at_last <= len(beats) + 2, \
            f"throughput: {len(beats)} elements took {sink.cycles_at_last} cycles"
    dut._log.info(f"{len(beats)} dense beats -> {len(expected)} compressed beats in {cycles} cycles")


@cocotb.test()
async def compressor_reset_mid_row(dut):
    """Reset in the middle of a row: the next row is compressed from column 0 again."""
    p = env_params()
    dw = p["data_width"]
    cw = max(1, (p["max_row_len"] - 1).bit_length())
    Clock(dut.clk, 10, unit="ns").start()
    dut.relu.value = 0
    dut.use_mask.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    # Half a row goes in while the output is back-pressured, then reset.
    dut.o__ready.value = 0
    dut.i__valid.value = 1
    dut.i__payload.value = pack_dense(5, 1, 0, dw)
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    assert int(dut.o__valid.value) == 1
    dut.i__valid.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 1)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    assert int(dut.o__valid.value) == 0, "reset must drop the pending output beat"
    row = [0, 3, 0, -4]
    src = StreamSource(dut, "i", [pack_dense(v, 1, j == 3, dw) for j, v in enumerate(row)],
                       make_pattern("always"))
    sink = StreamSink(dut, "o", make_pattern("random", 3), expected=2)
    await run_streams(dut.clk, [src], [sink], max_cycles=100, extra_cycles=10)
    assert sink.beats == [pack_sparse(3, 1, 0, dw, cw), pack_sparse(-4, 3, 1, dw, cw)], sink.beats
