"""DmaEngine + TensorMemory (the ``dma`` block): amaranth-sim tests against a numpy model.

The slave is :class:`sim.testkit.axi_mem_model.AxiMemModel` (random ready/valid gaps, fixed
printed seeds, AXI rule checks). Every scoreboard compares the *whole* memory and *every*
buffer with the model after the run, so a write outside an addressed range fails the test;
error cases also check the status code, that no bus traffic happened where none may, that
every issued burst was finished (no half-done transaction), and that the engine serves a
correct transfer afterwards.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sparseforge.gen.blocks import build_block
from sparseforge.gen.config import AcceleratorConfig, preset
from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE, DmaErr, DmaSystem, desc_layout
from sparseforge.sim.testkit.amaranth_streams import pack, run_sim, stream_get, stream_put, unpack
from sparseforge.sim.testkit.axi_mem_model import AxiMemModel

MEM_BYTES = 1 << 16
ADDR_WIDTH = 16
SIZES = (256, 512, 128, 256)


@dataclasses.dataclass
class Desc:
    buf: int
    base: int
    length: int
    dir: int
    addr: int
    abort_after: int | None = None       # cycles after the descriptor is taken


def make_dut(width, sizes=SIZES, max_burst=16, timeout=64):
    return DmaSystem(sizes=sizes, data_width=width, addr_width=ADDR_WIDTH, max_burst=max_burst,
                     timeout=timeout)


def model_apply(d: Desc, mem: bytearray, bufs: list, status: int):
    """The model's effect of a completed OK descriptor (errors: nothing checked here)."""
    if status != DmaErr.OK:
        return
    n = d.length
    if d.dir == DIR_LOAD:
        bufs[d.buf][d.base:d.base + n] = np.frombuffer(bytes(mem[d.addr:d.addr + 2 * n]), "<u2")
    else:
        mem[d.addr:d.addr + 2 * n] = bufs[d.buf][d.base:d.base + n].astype("<u2").tobytes()


def run_dma(dut, descs, *, mem, bufs, seed=0, pattern="random", r_err=None, b_err=None,
            hang=(), max_cycles=200_000):
    """Preload ``bufs`` through the compute ports, run ``descs`` one after the other, read the
    buffers back. Returns ``(statuses, done beats, mem, bufs, slave, cycles per descriptor)``."""
    eng = dut.engine
    epw, ew = eng.epw, eng.elem_width
    slave = AxiMemModel(dut, mem, data_width=eng.data_width, max_burst=eng.max_burst, seed=seed,
                        pattern=pattern, r_err=r_err, b_err=b_err, hang=hang)
    layout = desc_layout(len(eng.sizes), eng.len_width, eng.addr_width)
    done_l = dut.done.payload.shape()
    out_bufs = [np.zeros(s, np.uint16) for s in eng.sizes]
    res = {"status": [], "beats": [], "cycles": [], "now": 0}
    emask = (1 << ew) - 1

    async def main(ctx):
        for k, b in enumerate(bufs):
            cp = dut.compute[k]
            for w in range(len(b) // epw):
                word = sum(int(b[w * epw + j]) << (j * ew) for j in range(epw))
                ctx.set(cp.addr, w)
                ctx.set(cp.wdata, word)
                ctx.set(cp.we, 1)
                await ctx.tick()
            ctx.set(cp.we, 0)
        for d in descs:
            start = res["now"]
            await stream_put(ctx, dut.desc, pack(layout, {
                "buf": d.buf, "base": d.base, "length": d.length, "dir": d.dir, "addr": d.addr}))
            if d.abort_after is not None:
                await ctx.tick().repeat(d.abort_after)
                ctx.set(dut.abort, 1)
                await ctx.tick().repeat(2)
                ctx.set(dut.abort, 0)
            v = unpack(done_l, await stream_get(ctx, dut.done))
            res["status"].append(v["status"])
            res["beats"].append(v["beats"])
            res["cycles"].append(res["now"] - start)
        for k in range(len(eng.sizes)):
            cp = dut.compute[k]
            for w in range(eng.sizes[k] // epw):
                ctx.set(cp.addr, w)
                await ctx.tick()
                word = ctx.get(cp.rdata)
                for j in range(epw):
                    out_bufs[k][w * epw + j] = (word >> (j * ew)) & emask

    async def clock(ctx):
        async for _ in ctx.tick():
            res["now"] += 1
            assert res["now"] < max_cycles, f"hang: no completion after {max_cycles} cycles"

    run_sim(dut, main, processes=[clock] + slave.processes())
    res["counters"] = None
    return res, out_bufs, slave


def random_state(rng, sizes):
    mem = bytearray(rng.randbytes(MEM_BYTES))
    bufs = [np.array([rng.randrange(1 << 16) for _ in range(s)], np.uint16) for s in sizes]
    return mem, bufs


def random_desc(rng, width, sizes, max_burst):
    epw, bpb = width // 16, width // 8
    buf = rng.randrange(len(sizes))
    base = rng.randrange(sizes[buf] // epw) * epw
    room = sizes[buf] - base
    kind = rng.random()
    if kind < 0.3:
        length = min(room, max_burst * epw * rng.randint(1, 3) + rng.randrange(epw))  # max burst
    else:
        length = rng.randint(1, min(room, 200))
    length = max(1, min(length, room))
    nbytes = -(-length // epw) * bpb
    if rng.random() < 0.4:          # start just below a 4 KiB boundary: the burst must split
        page = rng.randrange(1, MEM_BYTES // 4096 - 1)
        addr = page * 4096 - bpb * rng.randint(1, 8)
    else:
        addr = rng.randrange((MEM_BYTES - nbytes) // bpb) * bpb
    return Desc(buf, base, length, rng.choice((DIR_LOAD, DIR_STORE)), addr)


def check_clean(slave, *, allow_rule_errors=False):
    if not allow_rule_errors:
        assert slave.errors == [], slave.errors[:5]
    assert slave.r_owed == 0 and slave.w_owed == 0, (slave.r_owed, slave.w_owed)
    assert not slave.bq and not slave.rq and not slave.wq


def scoreboard(descs, statuses, mem0, bufs0, mem, out_bufs):
    mem_m = bytearray(mem0)
    bufs_m = [b.copy() for b in bufs0]
    for d, s in zip(descs, statuses):
        model_apply(d, mem_m, bufs_m, s)
    assert mem == mem_m, f"memory differs at {next(i for i in range(len(mem)) if mem[i] != mem_m[i]):#x}"
    for k, (got, exp) in enumerate(zip(out_bufs, bufs_m)):
        bad = np.flatnonzero(got != exp)
        assert bad.size == 0, f"buffer {k} differs at elements {bad[:8]}"


# --------------------------------------------------------------------------------------------
# Random transfers: whole memory + every buffer equal the model
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,pattern,seed", [
    (32, "always", 1), (32, "random", 2), (32, "bursty", 3),
    (128, "random", 4), (128, "cycle", 5), (512, "random", 6), (512, "always", 7)])
def test_dma_random_transfers(width, pattern, seed):
    print(f"seed={seed} width={width} pattern={pattern}")
    rng = random.Random(seed)
    max_burst = rng.choice((4, 16))
    dut = make_dut(width, max_burst=max_burst)
    descs = [random_desc(rng, width, SIZES, max_burst) for _ in range(10)]
    mem0, bufs0 = random_state(rng, SIZES)
    res, out_bufs, slave = run_dma(dut, descs, mem=bytearray(mem0), bufs=bufs0, seed=seed,
                                   pattern=pattern)
    assert res["status"] == [DmaErr.OK] * len(descs)
    assert res["beats"] == [-(-d.length // dut.engine.epw) for d in descs]
    check_clean(slave)
    scoreboard(descs, res["status"], mem0, bufs0, slave.mem, out_bufs)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.sampled_from((32, 64, 256)),
       max_burst=st.sampled_from((1, 2, 8, 32)))
def test_dma_hypothesis(seed, width, max_burst):
    print(f"seed={seed} width={width} max_burst={max_burst}")
    rng = random.Random(seed)
    dut = make_dut(width, max_burst=max_burst)
    descs = [random_desc(rng, width, SIZES, max_burst) for _ in range(4)]
    mem0, bufs0 = random_state(rng, SIZES)
    res, out_bufs, slave = run_dma(dut, descs, mem=bytearray(mem0), bufs=bufs0, seed=seed)
    assert res["status"] == [DmaErr.OK] * len(descs)
    check_clean(slave)
    scoreboard(descs, res["status"], mem0, bufs0, slave.mem, out_bufs)


# --------------------------------------------------------------------------------------------
# Throughput (no back-pressure)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,max_burst", [(32, 16), (128, 16), (512, 64)])
def test_dma_throughput(width, max_burst):
    """A 4096-element load and store with an always-ready slave: the engine runs ahead across
    bursts, so the data beats are back to back and the cycles are the beats plus a constant
    per descriptor (docs/dma.md "Timing": 1 address cycle + the slave's latency + 3; a store
    + 1 for the B handshake), whatever the number of bursts."""
    from sparseforge.sim.perf import model as perf
    sizes = (4096,)
    dut = make_dut(width, sizes=sizes, max_burst=max_burst)
    rng = random.Random(0)
    mem0, bufs0 = random_state(rng, sizes)
    descs = [Desc(0, 0, 4096, DIR_LOAD, 0), Desc(0, 0, 4096, DIR_STORE, 0x8000)]
    res, out_bufs, slave = run_dma(dut, descs, mem=bytearray(mem0), bufs=bufs0, pattern="always")
    check_clean(slave)
    scoreboard(descs, res["status"], mem0, bufs0, slave.mem, out_bufs)
    epw = width // 16
    beats = 4096 // epw
    bursts = -(-beats // min(max_burst, 4096 // (width // 8)))
    load, store = res["cycles"]
    print(f"width={width} max_burst={max_burst}: load {load} cycles, store {store} cycles for "
          f"{beats} beats in {bursts} bursts: {beats / load:.3f} / {beats / store:.3f} beats/cycle")
    assert (slave.ar_bursts, slave.aw_bursts) == (bursts, bursts)
    # one beat per cycle between the first and the last data beat: only the per-descriptor
    # constant is left (address cycle, slave latency, accept/check/completion, B handshake)
    over = perf.DMA_DESC_OVERHEAD
    assert load == beats + over + 1 + perf.DMA_READ_LATENCY
    assert store == beats + over + 2 + perf.DMA_WRITE_LATENCY


# --------------------------------------------------------------------------------------------
# Errors: a code each, no hang, nothing outside the addressed ranges touched
# --------------------------------------------------------------------------------------------

ERROR_WIDTHS = (32, 128)


def error_case(width, bad: Desc, expect, *, seed, no_traffic=False, max_burst=16,
               good=Desc(1, 0, 100, DIR_LOAD, 0x2000), **kw):
    print(f"seed={seed} width={width} case={expect.name}")
    rng = random.Random(seed)
    dut = make_dut(width, max_burst=max_burst)
    mem0, bufs0 = random_state(rng, SIZES)
    descs = [bad, good]
    res, out_bufs, slave = run_dma(dut, descs, mem=bytearray(mem0), bufs=bufs0, seed=seed, **kw)
    assert res["status"][0] == expect, (DmaErr(res["status"][0]).name, expect.name)
    assert res["status"][1] == DmaErr.OK       # the engine recovered
    check_clean(slave, allow_rule_errors=kw.get("hang") is not None and expect == DmaErr.TIMEOUT)
    if no_traffic:
        n = -(-good.length // dut.engine.epw)
        assert slave.ar_bursts + slave.aw_bursts == -(-n // 16)      # only the good one's
        assert res["beats"][0] == 0
    return res, out_bufs, slave, mem0, bufs0, descs


@pytest.mark.parametrize("width", ERROR_WIDTHS)
@pytest.mark.parametrize("case", ["len_zero", "beyond", "beyond_wrap", "misaligned_addr",
                                  "misaligned_base", "bad_buffer", "addr_overflow"])
def test_dma_descriptor_errors(width, case):
    """Rejected before any bus traffic; memory and buffers unchanged."""
    epw, bpb = width // 16, width // 8
    bad, code = {
        "len_zero": (Desc(0, 0, 0, DIR_STORE, 0x100), DmaErr.LEN_ZERO),
        "beyond": (Desc(2, 128 - epw, epw + 1, DIR_LOAD, 0x100), DmaErr.BEYOND_BUFFER),
        "beyond_wrap": (Desc(0, (1 << 24) - epw, 2 * epw, DIR_STORE, 0), DmaErr.BEYOND_BUFFER),
        "misaligned_addr": (Desc(0, 0, 8, DIR_STORE, 0x100 + bpb // 2), DmaErr.MISALIGNED),
        "misaligned_base": (Desc(0, 1, 8, DIR_LOAD, 0x100), DmaErr.MISALIGNED),
        "bad_buffer": (Desc(9, 0, 8, DIR_LOAD, 0x100), DmaErr.BAD_BUFFER),
        "addr_overflow": (Desc(0, 0, 64, DIR_STORE, MEM_BYTES - bpb), DmaErr.ADDR_OVERFLOW),
    }[case]
    res, out_bufs, slave, mem0, bufs0, descs = error_case(width, bad, code, seed=100 + width,
                                                          no_traffic=True)
    scoreboard(descs, res["status"], mem0, bufs0, slave.mem, out_bufs)


@pytest.mark.parametrize("width", ERROR_WIDTHS)
@pytest.mark.parametrize("direction", [DIR_LOAD, DIR_STORE])
@pytest.mark.parametrize("resp,max_burst,nbursts,pattern", [
    (2, 16, 3, "random"), (3, 16, 3, "random"),
    (2, 4, 16, "always")])      # many short bursts: the error stops the issue before the end
def test_dma_bus_error(width, direction, resp, max_burst, nbursts, pattern):
    """SLVERR/DECERR in the second burst: BUS_ERROR, no burst raised after the error, every
    raised burst finished (its beats counted), the first burst landed, the erroring one not;
    later bursts (already raised by the run-ahead): a load drops their beats, a store writes a
    prefix of them (wstrb = 0 from the beat after the error); nothing outside the range."""
    bpb, epw = width // 8, width // 16
    addr = 0x4000
    n = max_burst * nbursts * epw
    bad = Desc(1, 0, n, direction, addr)
    err_at = addr + max_burst * bpb                   # the second burst's start
    kw = {"r_err": {err_at: resp}} if direction == DIR_LOAD else {"b_err": {err_at: resp}}
    res, out_bufs, slave, mem0, bufs0, descs = error_case(
        width, bad, DmaErr.BUS_ERROR, seed=200 + width + resp, max_burst=max_burst,
        pattern=pattern, good=Desc(0, 0, 100, DIR_LOAD, 0x2000), **kw)   # apart from buffer 1
    good_bursts = -(-(-(-descs[1].length // epw)) // max_burst)
    issued = slave.ar_bursts + slave.aw_bursts - good_bursts    # less the good descriptor's
    print(f"{issued} of {nbursts} bursts issued, {res['beats'][0]} beats")
    assert 2 <= issued <= nbursts
    assert res["beats"][0] == issued * max_burst      # every raised burst finished
    if nbursts > 8:                                   # the run-ahead stopped at the error
        assert issued < nbursts
    mem_m = bytearray(mem0)
    bufs_m = [b.copy() for b in bufs0]
    model_apply(descs[1], mem_m, bufs_m, DmaErr.OK)   # the good one (elsewhere)
    full_mem, full_bufs = bytearray(mem_m), [b.copy() for b in bufs_m]
    model_apply(bad, full_mem, full_bufs, DmaErr.OK)
    if direction == DIR_LOAD:
        got, before, after_ = out_bufs[1][:n], bufs_m[1][:n], full_bufs[1][:n]
        assert slave.mem == mem_m
        for k in (0, 2, 3):
            assert np.array_equal(out_bufs[k], bufs_m[k])
        assert np.array_equal(out_bufs[1][n:], bufs_m[1][n:])
    else:
        lo, hi = addr, addr + 2 * n
        got, before, after_ = (np.frombuffer(bytes(m[lo:hi]), "<u2")
                               for m in (slave.mem, mem_m, full_mem))
        assert slave.mem[:lo] == mem_m[:lo] and slave.mem[hi:] == mem_m[hi:]
        for got_b, exp in zip(out_bufs, bufs_m):
            assert np.array_equal(got_b, exp)
    e1, e2 = max_burst * epw, 2 * max_burst * epw      # the erroring burst's elements
    assert np.array_equal(got[:e1], after_[:e1])       # the first burst landed
    assert np.array_equal(got[e1:e2], before[e1:e2])   # the erroring burst did not
    rest_got, rest_old, rest_new = got[e2:], before[e2:], after_[e2:]
    if direction == DIR_LOAD:
        assert np.array_equal(rest_got, rest_old)      # drained beats dropped
    else:
        assert np.all((rest_got == rest_old) | (rest_got == rest_new))
        moved = np.flatnonzero((rest_got != rest_old) & (rest_old != rest_new))
        unmoved = np.flatnonzero((rest_got == rest_old) & (rest_old != rest_new))
        assert moved.size == 0 or unmoved.size == 0 or moved[-1] < unmoved[0]   # a prefix


@pytest.mark.parametrize("width", ERROR_WIDTHS)
@pytest.mark.parametrize("direction", [DIR_LOAD, DIR_STORE])
@pytest.mark.parametrize("after", [3, 11, 40])
def test_dma_abort(width, direction, after):
    """Abort mid-transfer: ABORTED, every issued burst finished, and only a prefix of whole
    bursts (plus at most the beat in flight) changed inside the range, nothing outside it."""
    epw = width // 16
    bad = Desc(0, 0, 200, direction, 0x3000, abort_after=after)
    res, out_bufs, slave, mem0, bufs0, descs = error_case(width, bad, DmaErr.ABORTED,
                                                          seed=300 + after, pattern="random")
    mem_m = bytearray(mem0)
    bufs_m = [b.copy() for b in bufs0]
    model_apply(descs[1], mem_m, bufs_m, DmaErr.OK)
    # Whatever the abort let through is a prefix of the transfer: apply the full transfer to a
    # copy and require each element to be either untouched or transferred, and the transferred
    # ones a prefix.
    full_mem, full_bufs = bytearray(mem_m), [b.copy() for b in bufs_m]
    model_apply(Desc(0, 0, 200, direction, 0x3000), full_mem, full_bufs, DmaErr.OK)
    if direction == DIR_LOAD:
        got, before, after_ = out_bufs[0][:200], bufs_m[0][:200], full_bufs[0][:200]
        moved = got != before
        assert np.all((got == before) | (got == after_))
        assert np.array_equal(out_bufs[0][200:], bufs_m[0][200:])
        for k in range(1, 4):
            assert np.array_equal(out_bufs[k], bufs_m[k])
        assert slave.mem == mem_m
    else:
        got = np.frombuffer(bytes(slave.mem[0x3000:0x3000 + 400]), "<u2")
        before = np.frombuffer(bytes(mem_m[0x3000:0x3000 + 400]), "<u2")
        after_ = np.frombuffer(bytes(full_mem[0x3000:0x3000 + 400]), "<u2")
        moved = got != before
        assert np.all((got == before) | (got == after_))
        assert slave.mem[:0x3000] == mem_m[:0x3000] and slave.mem[0x3000 + 400:] == mem_m[0x3000 + 400:]
    changed = np.flatnonzero(moved & (before != after_))
    if changed.size:
        assert changed[-1] < res["beats"][0] * epw


@pytest.mark.parametrize("width", ERROR_WIDTHS)
@pytest.mark.parametrize("hang", ["ar", "r", "aw", "w", "b"])
def test_dma_timeout(width, hang):
    """A slave that stops answering on one channel: TIMEOUT within the budget, back to idle,
    memory and buffers outside the range untouched. (The slave recovers for the next one.)"""
    direction = DIR_LOAD if hang in ("ar", "r") else DIR_STORE
    bad = Desc(0, 0, 64, direction, 0x5000)
    print(f"seed={400} width={width} hang={hang}")
    rng = random.Random(400)
    dut = make_dut(width, timeout=64)
    mem0, bufs0 = random_state(rng, SIZES)
    res, out_bufs, slave = run_dma(dut, [bad], mem=bytearray(mem0), bufs=bufs0, seed=400,
                                   hang={hang}, max_cycles=20_000)
    assert res["status"] == [DmaErr.TIMEOUT]
    assert res["cycles"][0] < 64 + 8 * 64            # 64 idle cycles after the last progress
    assert slave.mem == mem0 or hang == "b"          # a store that hangs on B wrote nothing yet
    for k in range(1, 4):
        assert np.array_equal(out_bufs[k], bufs0[k])
    assert np.array_equal(out_bufs[0][64:], bufs0[0][64:])


@pytest.mark.parametrize("early", [False, True], ids=["extra", "early"])
def test_dma_unrequested_r_beats_are_dropped(early):
    """A broken slave that sends R beats nobody asked for (``early``: in the cycle its AR is
    accepted, before it; else: 3 more than the burst asked): BUS_ERROR, and the buffer is
    untouched outside ``[base, base + length)`` (``sparseforge formal -k dma`` proves the
    bound for any slave). The engine then serves a normal load (the well-behaved model)."""
    width, n, base = 32, 6, 4                  # 3 beats into buffer 0 at element 4
    dut = make_dut(width)
    layout = desc_layout(len(SIZES), dut.engine.len_width, dut.engine.addr_width)
    done_l = dut.done.payload.shape()
    fill = 0xABCD
    res = {}

    async def main(ctx):
        cp = dut.compute[0]
        for w in range(SIZES[0] // 2):            # the buffer starts as a known pattern
            ctx.set(cp.addr, w)
            ctx.set(cp.wdata, fill | fill << 16)
            ctx.set(cp.we, 1)
            await ctx.tick()
        ctx.set(cp.we, 0)
        await stream_put(ctx, dut.desc, pack(layout, {"buf": 0, "base": base, "length": n,
                                                      "dir": DIR_LOAD, "addr": 0x100}))
        res["done"] = unpack(done_l, await stream_get(ctx, dut.done))
        words = []
        for w in range(SIZES[0] // 2):
            ctx.set(cp.addr, w)
            await ctx.tick()
            words.append(ctx.get(cp.rdata))
        res["words"] = words

    async def slave(ctx):
        # AR always ready; R: the requested beats (value 0x1111_0000 + k) then 3 extra ones,
        # or (early) every beat in the cycle of / before its AR
        ctx.set(dut.m_axi_arready, 1)
        sent = 0
        asked = 0
        async for clk_edge, _, arv, arl, rr in ctx.tick().sample(
                dut.m_axi_arvalid, dut.m_axi_arlen, dut.m_axi_rready):
            if arv:
                asked += arl + 1
            if sent < asked + 3 or (early and sent < 8):
                ctx.set(dut.m_axi_rvalid, 1)
                ctx.set(dut.m_axi_rdata, 0x11110000 + sent)
                ctx.set(dut.m_axi_rlast, 0)
                if rr:
                    sent += 1
            else:
                ctx.set(dut.m_axi_rvalid, 0)
            if sent >= 12:
                ctx.set(dut.m_axi_rvalid, 0)
                return

    print(f"width={width} early={early} (no seed: a fixed rogue slave)")
    run_sim(dut, main, processes=[slave])
    assert res["done"]["status"] == DmaErr.BUS_ERROR
    elems = [(w >> (16 * j)) & 0xFFFF for w in res["words"] for j in range(2)]
    outside = elems[:base] + elems[base + n:]
    assert outside == [fill] * len(outside), "an element outside the range was written"


# --------------------------------------------------------------------------------------------
# Construction, config and registry
# --------------------------------------------------------------------------------------------

def test_dma_config_fields():
    assert preset("tiny").dma_width == 32 and preset("ecp5").dma_width == 32
    assert preset("vcu1525").dma_width == 512 and preset("vcu1525").dma_addr_width == 34
    for field, bad, msg in [("dma_width", 48, "dma_width must be one of"),
                            ("dma_max_burst", 12, "dma_max_burst must be a power of 2"),
                            ("dma_max_burst", 512, "dma_max_burst must be a power of 2"),
                            ("dma_addr_width", 8, r"dma_addr_width must be in \[12, 64\]"),
                            ("dma_timeout", 1, "dma_timeout must be in"),
                            ("act_mem_elems", 100, "act_mem_elems must be a multiple of 64"),
                            ("out_mem_elems", 0, "out_mem_elems must be in")]:
        with pytest.raises(ValueError, match=msg):
            AcceleratorConfig(**{field: bad})


def test_dma_param_errors():
    with pytest.raises(ValueError, match="data_width must be one of"):
        DmaSystem(data_width=48)
    with pytest.raises(ValueError, match="max_burst must be a power of 2"):
        DmaSystem(max_burst=12)
    with pytest.raises(ValueError, match=r"sizes\[1\] must be a multiple of 8"):
        DmaSystem(data_width=128, sizes=(64, 100))


@pytest.mark.parametrize("name", ["dma", "tensor_mem"])
def test_dma_blocks_registered(name):
    for p in ("tiny", "vcu1525"):
        cfg = preset(p)
        block, params = build_block(name, cfg)
        assert params["data_width" if name == "dma" else "word_width"] == cfg.dma_width
        assert tuple(params["sizes"]) == cfg.tensor_mem_elems


# --------------------------------------------------------------------------------------------
# cocotb (emitted Verilog, Icarus and Verilator), memory = cocotbext-axi AxiRam
# --------------------------------------------------------------------------------------------

COCOTB_TIMEOUT = 256


def _cocotb_cfg(width):
    return preset("tiny").replace(dma_width=width, dma_addr_width=16, act_mem_elems=512,
                                  grad_mem_elems=512, wgt_mem_elems=256, out_mem_elems=256)


@pytest.mark.parametrize("width,seed", [(32, 7000), (128, 7001)])
def test_dma_cocotb_scoreboard(sim, cocotb_run, width, seed):
    cfg = _cocotb_cfg(width)
    print(f"seed={seed} width={width} sim={sim}")
    n = cocotb_run("dma", sim, "cocotb_dma", testcase="dma_scoreboard", config=cfg,
                   params={"seed": seed, "count": 12, "width": width, "addr_width": 16,
                           "sizes": list(cfg.tensor_mem_elems)},
                   timeout=COCOTB_TIMEOUT)
    assert n == 1


@pytest.mark.parametrize("width,seed", [(32, 7100), (128, 7101)])
def test_dma_cocotb_errors(sim, cocotb_run, width, seed):
    cfg = _cocotb_cfg(width)
    print(f"seed={seed} width={width} sim={sim}")
    n = cocotb_run("dma", sim, "cocotb_dma", testcase="dma_errors", config=cfg,
                   params={"seed": seed, "width": width, "addr_width": 16,
                           "sizes": list(cfg.tensor_mem_elems)},
                   timeout=COCOTB_TIMEOUT)
    assert n == 1


# --------------------------------------------------------------------------------------------
# The performance model's DMA cost equals the engine (sim/perf/model.dma_transfer_cycles)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("width,max_burst,n,addr", [
    (32, 16, 1000, 4000),       # the first burst stops at the 4 KiB boundary after 24 beats
    (32, 16, 101, 0),           # partial last beat
    (64, 8, 777, 24),
    (512, 64, 4096, 0),         # max_burst x 64 bytes = one 4 KiB page
    (512, 64, 1000, 640)])      # 32 beats from mid-page, crossing the boundary
def test_dma_cycles_equal_perf_model(width, max_burst, n, addr):
    """An always-ready registered slave (AxiMemModel, pattern "always"): the engine's cycles
    per descriptor, from offering ``desc`` to taking ``done``, equal
    ``perf.dma_transfer_cycles`` at its default latencies (difference 0), for a load and a
    store; beats and bursts equal ``perf.dma_bursts``."""
    from sparseforge.sim.perf import model as perf
    print(f"width={width} max_burst={max_burst} n={n} addr={addr:#x}")
    sizes = (4096,)
    dut = make_dut(width, sizes=sizes, max_burst=max_burst)
    mem0, bufs0 = random_state(random.Random(7), sizes)
    descs = [Desc(0, 0, n, DIR_LOAD, addr), Desc(0, 0, n, DIR_STORE, 0x8000 + addr)]
    res, out_bufs, slave = run_dma(dut, descs, mem=bytearray(mem0), bufs=bufs0, pattern="always")
    check_clean(slave)
    scoreboard(descs, res["status"], mem0, bufs0, slave.mem, out_bufs)
    cfg = preset("tiny").replace(dma_width=width, dma_max_burst=max_burst)
    beats, bursts = perf.dma_bursts(n, cfg, addr)
    assert res["beats"] == [beats, beats]
    assert (slave.ar_bursts, slave.aw_bursts) == (bursts, bursts)
    want = [perf.dma_transfer_cycles(n, False, cfg, addr=addr),
            perf.dma_transfer_cycles(n, True, cfg, addr=addr)]
    print(f"measured {res['cycles']} model {want} ({beats} beats, {bursts} bursts)")
    assert res["cycles"] == want
