"""DataPlane (hdl/dataplane.py) in amaranth-sim: DMA loads from an AXI4 slave memory model, a
job through the ArrayMapper into a real PEArray, the result store, a DMA store back to memory.

Every phase test compares the **whole** result tensor read back from the memory model with the
golden model (write-back applied) and checks that no other byte of the memory changed. Error
tests check the ``err`` pulse and code, that the following commands are discarded (taken, no
effect), that nothing hangs and that the bus is left clean (every burst finished).
Seeds are fixed and printed.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from sparseforge.gen.mapper import array as am
from sparseforge.hdl.dataplane import (BUF_ACT, BUF_GRAD, BUF_MASK, BUF_OUT, BUF_WGT, CMD_DESC,
                                       CMD_JOB, DataPlane, JobErr, addr_width_of, cmd_layout)
from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE, DmaErr
from sparseforge.hdl.pe_array import PEArray
from sparseforge.hdl.wire import Phase
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.amaranth_streams import pack, run_sim, stream_put
from sparseforge.sim.testkit.axi_mem_model import AxiMemModel
from sparseforge.sim.testkit.layer_cases import ARRAY_CFG

CFG = ARRAY_CFG
MEM_BYTES = 1 << 16
CONTROLS = ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero", "raw")


class Top(Elaboratable):
    """DataPlane + PEArray, wired as the accelerator will."""

    def __init__(self, cfg):
        self.dp = DataPlane.from_config(cfg)
        self.array = PEArray.from_config(cfg)

    def elaborate(self, platform):
        m = Module()
        dp, a = self.dp, self.array
        m.submodules.dp, m.submodules.array = dp, a
        for n in CONTROLS:
            m.d.comb += getattr(a, n).eq(getattr(dp, n))
        for i in range(a.rows):
            wiring.connect(m, dp.x[i], a.x[i])
            for j in range(a.cols):
                wiring.connect(m, dp.taps[i][j], a.taps[i][j])
                wiring.connect(m, dp.dense[i][j], a.dense[i][j])
        for j in range(a.cols):
            wiring.connect(m, dp.drain[j], a.drain[j])
            wiring.connect(m, a.o[j], dp.o[j])
        return m


def desc(buf, base, length, direction, addr):
    return {"kind": CMD_DESC, "desc": {"buf": buf, "base": base, "length": length,
                                       "dir": direction, "addr": addr}}


def job_cmd(**fields):
    return {"kind": CMD_JOB, "job": fields}


def pack_cmd(cfg, c):
    lay = cmd_layout(cfg)
    out = pack(lay, {"kind": c["kind"]})
    sub = "desc" if c["kind"] == CMD_DESC else "job"
    f = dict(iter(lay))[sub]
    return out | (pack(f.shape, c[sub]) << f.offset)


def run_plane(cfg, mem, cmds, *, seed=0, pattern="random", r_err=None, abort_at=None,
              max_cycles=60_000):
    """Send ``cmds`` (each taken when ``cmd.ready``), wait until idle. ``abort_at``: raise
    ``abort`` for 2 cycles that many cycles after the first command was taken.
    Returns ``(errors [(cycle, code)], slave, dataplane counters, res)``."""
    top = Top(cfg)
    dp = top.dp
    slave = AxiMemModel(dp, mem, data_width=cfg.dma_width, max_burst=cfg.dma_max_burst,
                        seed=seed, pattern=pattern, r_err=r_err)
    res = {"now": 0, "errs": [], "taken": 0, "overlap": 0}

    async def main(ctx):
        for c in cmds:
            await stream_put(ctx, dp.cmd, pack_cmd(cfg, c))
            res["taken"] += 1
        idle = 0
        while idle < 8:
            await ctx.tick()
            idle = 0 if ctx.get(dp.busy) else idle + 1
        for n in ("dma_busy_cycles", "dma_beats", "dma_stall_cycles", "job_cycles",
                  "dma_exposed_cycles"):
            res[n] = ctx.get(getattr(dp, n))
        res["end"] = res["now"]

    async def clock(ctx):
        async for _, _, err, code, busy in ctx.tick().sample(dp.err, dp.err_code, dp.busy):
            res["now"] += 1
            if err:
                res["errs"].append((res["now"], int(code)))
            assert res["now"] < max_cycles, f"hang: still busy after {max_cycles} cycles"

    async def aborter(ctx):
        if abort_at is None:
            return
        await ctx.tick().until(dp.busy)
        await ctx.tick().repeat(abort_at)
        ctx.set(dp.abort, 1)
        await ctx.tick().repeat(2)
        ctx.set(dp.abort, 0)

    run_sim(top, main, background=[aborter], processes=[clock] + slave.processes())
    assert slave.errors == [], slave.errors[:5]
    return res, slave


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------

ADDR = {"x": 0x0000, "w": 0x1000, "m": 0x2000, "dy": 0x3000, "out": 0x4000}


def make_phase(mode, cfg, *, batch, cin, cout, h, w, k, stride, pad, nm, seed, zero_frac=0.5,
               bases=None, addr=None, out_base=6):
    """Operands written into ``mem`` (int16 little endian), the load / job / store commands
    and the golden result. Returns ``(cmds_load, cmd_job, cmd_store, golden, out_addr)``."""
    rng = np.random.default_rng(seed)
    addr = dict(ADDR, **(addr or {}))
    bases = dict({"act": 2, "grad": 4, "w": 8, "m": 10}, **(bases or {}))
    x = rng.integers(-2000, 2001, (batch, cin, h, w))
    wt = rng.integers(-2000, 2001, (cout, cin, k, k))
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    dy = rng.integers(-2000, 2001, (batch, cout, ho, wo))
    sparse = x if mode == "fp" else dy
    sparse[rng.random(sparse.shape) < zero_frac] = 0
    if nm is None:
        mask = rng.random(wt.shape) < 0.7
    else:
        mask = golden.nm_mask(wt, nm[0], nm[1], axis=1 if mode == "fp" else 0)
    if mode == "fp":
        ref = golden.conv2d_forward(x, wt * mask, stride, pad)
    elif mode == "bp":
        ref = golden.conv2d_backward_input(dy, wt * mask, x.shape, stride, pad)
    else:
        ref = golden.conv2d_backward_weight(x, dy, wt.shape, stride, pad)
    ref = golden.writeback(ref, cfg.frac_bits, cfg.data_width)
    # the mask is stored as any non-zero value (the data plane keeps elem != 0)
    mask_elems = mask * rng.integers(1, 30000, mask.shape)
    tensors = {"x": (BUF_ACT, bases["act"], x), "w": (BUF_WGT, bases["w"], wt),
               "m": (BUF_MASK, bases["m"], mask_elems), "dy": (BUF_GRAD, bases["grad"], dy)}
    used = {"fp": ("x", "w", "m"), "bp": ("dy", "w", "m"), "wg": ("x", "dy")}[mode]
    loads = []
    writes = {}
    for name in used:
        buf, base, t = tensors[name]
        writes[addr[name]] = t.ravel().astype("<i2").tobytes()
        loads.append(desc(buf, base, t.size, DIR_LOAD, addr[name]))
    job = job_cmd(mode=Phase.from_name(mode).value, batch=batch, cin=cin, cout=cout, h=h, w=w,
                  kh=k, kw=k, stride2=int(stride == 2), pad=pad, raw=0,
                  act_base=bases["act"], grad_base=bases["grad"], w_base=bases["w"],
                  m_base=bases["m"], out_base=out_base)
    store = desc(BUF_OUT, out_base, ref.size, DIR_STORE, addr["out"])
    return loads, job, store, ref, writes


def fresh_mem(seed, writes):
    rng = np.random.default_rng(seed + 7)
    mem = bytearray(rng.integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes())
    for a, b in writes.items():
        mem[a:a + len(b)] = b
    return mem


def read_result(mem, addr, ref):
    return np.frombuffer(bytes(mem[addr:addr + 2 * ref.size]), "<i2").astype(np.int64) \
        .reshape(ref.shape)


def check_untouched(before, after, ranges):
    """Every byte outside ``ranges`` ([lo, hi) byte ranges) is unchanged."""
    b, a = np.frombuffer(bytes(before), np.uint8).copy(), np.frombuffer(bytes(after), np.uint8)
    keep = np.ones(len(b), bool)
    for lo, hi in ranges:
        keep[lo:hi] = False
    bad = np.nonzero((a != b) & keep)[0]
    assert bad.size == 0, f"bytes outside the result changed, first at {bad[0]:#x}"


PHASES = [
    # (mode, batch, cin, cout, h, w, k, stride, pad, nm, pattern, seed)
    ("fp", 1, 4, 4, 6, 6, 3, 1, 1, (2, 4), "random", 1101),
    ("fp", 2, 3, 5, 7, 7, 3, 2, 1, None, "bursty", 1102),
    ("fp", 1, 4, 3, 5, 6, 2, 1, 0, (2, 4), "always", 1103),
    ("bp", 1, 4, 4, 6, 6, 3, 1, 1, (2, 4), "random", 1104),
    ("bp", 2, 5, 3, 7, 7, 3, 2, 0, None, "cycle", 1105),
    ("wg", 1, 3, 4, 6, 6, 3, 1, 1, None, "random", 1106),
    ("wg", 2, 3, 2, 7, 7, 3, 2, 0, None, "bursty", 1107),
]


@pytest.mark.parametrize("case", PHASES, ids=lambda c: f"{c[0]}-b{c[1]}-s{c[7]}-p{c[8]}")
def test_dataplane_phase(case):
    mode, batch, cin, cout, h, w, k, stride, pad, nm, pattern, seed = case
    print(f"seed={seed} {case}")
    loads, job, store, ref, writes = make_phase(mode, CFG, batch=batch, cin=cin, cout=cout, h=h,
                                                w=w, k=k, stride=stride, pad=pad, nm=nm,
                                                seed=seed)
    mem = fresh_mem(seed, writes)
    before = bytearray(mem)
    res, slave = run_plane(CFG, mem, loads + [job, store], seed=seed, pattern=pattern)
    assert res["errs"] == []
    got = read_result(mem, ADDR["out"], ref)
    assert np.array_equal(got, ref)
    check_untouched(before, mem, [(ADDR["out"], ADDR["out"] + 2 * ref.size)])
    assert slave.r_owed == 0 and slave.w_owed == 0
    print(f"{mode}: phase {res['end']} cycles, job {res['job_cycles']}, DMA busy "
          f"{res['dma_busy_cycles']} (exposed {res['dma_exposed_cycles']}), beats "
          f"{res['dma_beats']}")
