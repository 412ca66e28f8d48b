"""Board top harness (``boards/top.py``) in pysim: stimulus, XOR-reduced activity, heartbeat;
and the PRNG's reference model."""

from __future__ import annotations

from amaranth.sim import Simulator

from sparseforge.boards.top import XOR_FAN_IN, BoardTop, xorshift64
from sparseforge.gen.blocks import build_block
from sparseforge.gen.config import preset


def test_board_top_harness():
    """Stimulus obeys the stream rules; activity = XOR of all outputs two cycles earlier."""
    component, _ = build_block("compressor", preset("tiny"))
    top = BoardTop(component, heartbeat_bits=4)
    blk = top.block
    observed = [blk.o.payload.as_value(), blk.o.valid, blk.nnz, blk.error]
    assert sum(len(v) for v in observed) <= XOR_FAN_IN ** 2     # two register stages
    cycles = 400
    log = {"parity": [], "activity": [], "hb": [], "viol": 0, "o_transfers": 0}

    async def bench(ctx):
        prev = None
        for _ in range(cycles):
            await ctx.tick()
            v, r = ctx.get(blk.i.valid), ctx.get(blk.i.ready)
            pl = ctx.get(blk.i.payload.as_value())
            if prev is not None and prev[0] and not prev[1] and (not v or pl != prev[2]):
                log["viol"] += 1           # payload changed or valid dropped before the transfer
            prev = (v, r, pl)
            log["o_transfers"] += ctx.get(blk.o.valid) & ctx.get(blk.o.ready)
            bits = 0
            for value in observed:
                bits = (bits << len(value)) | ctx.get(value)
            log["parity"].append(bin(bits).count("1") & 1)
            log["activity"].append(ctx.get(top.activity))
            log["hb"].append(ctx.get(top.heartbeat))
        log["in_transfers"] = ctx.get(top.in_transfers)
        log["relu_seen"] = ctx.get(blk.relu)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["viol"] == 0
    assert log["activity"][2:] == log["parity"][:-2]
    assert 0 < sum(log["activity"]) < cycles
    assert cycles // 4 < log["in_transfers"] < cycles        # valid 3/4, ready ~3/4
    assert log["o_transfers"] > cycles // 4
    # heartbeat: MSB of a 4-bit counter -> 8 cycles low, 8 cycles high
    hb = log["hb"]
    assert all(hb[k] != hb[k + 8] for k in range(len(hb) - 8))


def test_xorshift64_reference():
    x = 0x9E3779B97F4A7C15
    seen = {x}
    for _ in range(1000):
        x = xorshift64(x)
        assert 0 < x < 1 << 64
        seen.add(x)
    assert len(seen) == 1001
