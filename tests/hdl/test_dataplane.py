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
from sparseforge.gen.mapper import array as am
from sparseforge.hdl import dataplane as dpm
from sparseforge.hdl.dataplane import (BUF_ACT, BUF_GRAD, BUF_MASK, BUF_OUT, BUF_WGT, CMD_DESC,
                                       CMD_JOB, DataPlane, DataPlaneSystem, JobErr, addr_width_of,
                                       buf_sizes, cmd_layout)
from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE, DmaErr
from sparseforge.hdl.wire import Phase
from sparseforge.sim.host.driver import pack_mask
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.amaranth_streams import pack, run_sim, stream_put
from sparseforge.sim.testkit.axi_mem_model import AxiMemModel
from sparseforge.sim.testkit.layer_cases import ARRAY_CFG

CFG = ARRAY_CFG
MEM_BYTES = 1 << 16


def desc(buf, base, length, direction, addr):
    return {"kind": CMD_DESC, "desc": {"buf": buf, "base": base, "length": length,
                                       "dir": direction, "addr": addr}}


def job_cmd(**fields):
    return {"kind": CMD_JOB, "job": fields}


def pack_cmd(cfg, c):
    return dpm.pack_cmd(cmd_layout(cfg), c)


def run_plane(cfg, mem, cmds, *, seed=0, pattern="random", r_err=None, abort_at=None,
              max_cycles=60_000):
    """Send ``cmds`` (each taken when ``cmd.ready``), wait until idle. ``abort_at``: raise
    ``abort`` for 2 cycles that many cycles after the first command was taken.
    Returns ``(errors [(cycle, code)], slave, dataplane counters, res)``."""
    top = DataPlaneSystem(cfg)          # DataPlane + PEArray
    dp = top
    slave = AxiMemModel(dp, mem, data_width=cfg.dma_width, max_burst=cfg.dma_max_burst,
                        seed=seed, pattern=pattern, r_err=r_err)
    res = {"now": 0, "errs": [], "taken": 0, "overlap": 0}

    async def wait_idle(ctx):
        idle = 0
        while idle < 8:
            await ctx.tick()
            idle = 0 if ctx.get(dp.busy) else idle + 1

    async def main(ctx):
        for c in cmds:
            if c == "abort":             # wait until idle, then the soft reset
                await wait_idle(ctx)
                slave.r_err.clear()      # injected faults are transient: gone after the reset
                ctx.set(dp.abort, 1)
                await ctx.tick().repeat(2)
                ctx.set(dp.abort, 0)
                continue
            await stream_put(ctx, dp.cmd, pack_cmd(cfg, c))
            res["taken"] += 1
        await wait_idle(ctx)
        for n in ("dma_busy_cycles", "dma_beats", "dma_stall_cycles", "job_cycles",
                  "dma_exposed_cycles", "prune_cycles", "prune_tau", "pregen_cycles",
                  "pregen_exposed_cycles", "stage_cycles", "stage_exposed_cycles",
                  "prune_exposed_cycles"):
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
               bases=None, addr=None, out_base=6, want_job=False, m_bit_off=0):
    """Operands written into ``mem`` (int16 little endian), the load / job / store commands
    and the golden result. Returns ``(cmds_load, cmd_job, cmd_store, golden, out_addr)``.

    The mask is packed (``driver.pack_mask``: bit ``k`` = bit ``k % 16`` of element ``k //
    16``), loaded at element ``bases["m"]``; ``m_bit_off`` random filler bits come before it
    (the job's ``m_base = bases["m"] * 16 + m_bit_off`` bits: a mask not aligned to an
    element)."""
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
    # the mask packed 16 bits per element, after m_bit_off random filler bits
    filler = rng.random(m_bit_off) < 0.5
    packed = pack_mask(np.concatenate([filler, mask.ravel()]), cfg.data_width)
    tensors = {"x": (BUF_ACT, bases["act"], x), "w": (BUF_WGT, bases["w"], wt),
               "m": (BUF_MASK, bases["m"], packed), "dy": (BUF_GRAD, bases["grad"], dy)}
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
                  m_base=bases["m"] * cfg.data_width + m_bit_off, out_base=out_base)
    store = desc(BUF_OUT, out_base, ref.size, DIR_STORE, addr["out"])
    if want_job:                     # the reference mapping (for its cycle model)
        kw = dict(cfg=cfg, stride=stride, padding=pad, raw=False)
        arr = {"fp": lambda: am.map_array("fp", x=x, w=wt, mask=mask, **kw),
               "bp": lambda: am.map_array("bp", dy=dy, w=wt, x_shape=x.shape, mask=mask, **kw),
               "wg": lambda: am.map_array("wg", x=x, dy=dy, w_shape=wt.shape, **kw)}[mode]()
        return loads, job, store, ref, writes, arr
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
    # (mode, batch, cin, cout, h, w, k, stride, pad, nm, pattern, seed, mask bit offset)
    ("fp", 1, 4, 4, 6, 6, 3, 1, 1, (2, 4), "random", 1101, 0),
    ("fp", 2, 3, 5, 7, 7, 3, 2, 1, None, "bursty", 1102, 11),
    ("fp", 1, 4, 3, 5, 6, 2, 1, 0, (2, 4), "always", 1103, 0),
    ("bp", 1, 4, 4, 6, 6, 3, 1, 1, (2, 4), "random", 1104, 5),
    ("bp", 2, 5, 3, 7, 7, 3, 2, 0, None, "cycle", 1105, 0),
    ("wg", 1, 3, 4, 6, 6, 3, 1, 1, None, "random", 1106, 0),
    ("wg", 2, 3, 2, 7, 7, 3, 2, 0, None, "bursty", 1107, 0),
]


@pytest.mark.parametrize("case", PHASES, ids=lambda c: f"{c[0]}-b{c[1]}-s{c[7]}-p{c[8]}")
def test_dataplane_phase(case):
    mode, batch, cin, cout, h, w, k, stride, pad, nm, pattern, seed, m_off = case
    print(f"seed={seed} {case}")
    loads, job, store, ref, writes, arr = make_phase(
        mode, CFG, batch=batch, cin=cin, cout=cout, h=h, w=w, k=k, stride=stride, pad=pad,
        nm=nm, seed=seed, want_job=True, m_bit_off=m_off)
    mem = fresh_mem(seed, writes)
    before = bytearray(mem)
    res, slave = run_plane(CFG, mem, loads + [job, store], seed=seed, pattern=pattern)
    assert res["errs"] == []
    got = read_result(mem, ADDR["out"], ref)
    assert np.array_equal(got, ref)
    check_untouched(before, mem, [(ADDR["out"], ADDR["out"] + 2 * ref.size)])
    assert slave.r_owed == 0 and slave.w_owed == 0
    # the mask descriptor moves the packed mask: ceil(bits / data_width) elements, and the
    # engine's beats are exactly the descriptors' (the mask's ceil(elements / epw))
    n_bits = m_off + cout * cin * k * k
    masks = [c["desc"]["length"] for c in loads if c["desc"]["buf"] == BUF_MASK]
    assert masks == ([] if mode == "wg" else [-(-n_bits // CFG.data_width)])
    epw = CFG.dma_width // CFG.data_width
    assert res["dma_beats"] == sum(-(-c["desc"]["length"] // epw) for c in loads + [store])
    print(f"{mode}: phase {res['end']} cycles, job {res['job_cycles']}, DMA busy "
          f"{res['dma_busy_cycles']} (exposed {res['dma_exposed_cycles']}), beats "
          f"{res['dma_beats']}; reference array model am.cycles {am.cycles(arr).cycles}")


def _total_cmds(cmds):
    return sum(c != "abort" for c in cmds)


# ---------------------------------------------------------------------------------------------
# random layers (seeded loop)
# ---------------------------------------------------------------------------------------------

def test_dataplane_random_layers():
    """A seeded loop of random small layers (mode, batch, channels, size, kernel, stride,
    padding, N:M or random mask, memory gap pattern): whole results equal the golden model."""
    rng = np.random.default_rng(1200)
    for n in range(4):
        mode = ["fp", "bp", "wg"][n % 3]
        k = int(rng.integers(1, 4))
        stride = int(rng.integers(1, 3))
        pad = int(rng.integers(0, k))
        h, w = int(rng.integers(k + 1, 8)), int(rng.integers(k + 1, 8))
        cin, cout = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        nm = (2, 4) if (cin if mode == "fp" else cout) == 4 and mode != "wg" else None
        batch = int(rng.integers(1, 3))
        pattern = ["random", "bursty", "cycle", "always"][int(rng.integers(0, 4))]
        seed = 1200 + n
        print(f"seed={seed} {mode} b{batch} {cin}->{cout} {h}x{w} k{k} s{stride} p{pad} "
              f"nm={nm} {pattern}")
        loads, job, store, ref, writes = make_phase(mode, CFG, batch=batch, cin=cin, cout=cout,
                                                    h=h, w=w, k=k, stride=stride, pad=pad,
                                                    nm=nm, seed=seed)
        mem = fresh_mem(seed, writes)
        before = bytearray(mem)
        res, slave = run_plane(CFG, mem, loads + [job, store], seed=seed, pattern=pattern)
        assert res["errs"] == []
        assert np.array_equal(read_result(mem, ADDR["out"], ref), ref)
        check_untouched(before, mem, [(ADDR["out"], ADDR["out"] + 2 * ref.size)])


# ---------------------------------------------------------------------------------------------
# double buffering: the next job's operands load while a job runs
# ---------------------------------------------------------------------------------------------

def test_dataplane_double_buffering():
    seed = 1300
    print(f"seed={seed}")
    la, ja, sa, ra, wa = make_phase("fp", CFG, batch=1, cin=4, cout=4, h=6, w=6, k=3, stride=1,
                                    pad=1, nm=(2, 4), seed=seed)
    out_b = 6 + ((ra.size + 1) // 2) * 2
    addr_b = {"x": 0x5000, "w": 0x6000, "m": 0x7000, "dy": 0x8000, "out": 0x9000}
    lb, jb, sb, rb, wb = make_phase("bp", CFG, batch=2, cin=3, cout=4, h=6, w=6, k=3, stride=2,
                                    pad=1, nm=(2, 4), seed=seed + 1, addr=addr_b,
                                    bases={"grad": 1000, "w": 1000, "m": 100},
                                    out_base=out_b, m_bit_off=3)
    mem = fresh_mem(seed, {**wa, **wb})
    before = bytearray(mem)
    res, slave = run_plane(CFG, mem, la + [ja] + lb + [jb, sa, sb], seed=seed, pattern="random")
    assert res["errs"] == []
    assert np.array_equal(read_result(mem, ADDR["out"], ra), ra)
    assert np.array_equal(read_result(mem, addr_b["out"], rb), rb)
    check_untouched(before, mem, [(ADDR["out"], ADDR["out"] + 2 * ra.size),
                                  (addr_b["out"], addr_b["out"] + 2 * rb.size)])
    hidden = res["dma_busy_cycles"] - res["dma_exposed_cycles"]
    print(f"phase pair {res['end']} cycles; DMA busy {res['dma_busy_cycles']}, hidden under "
          f"the job {hidden}, exposed {res['dma_exposed_cycles']}; job cycles "
          f"{res['job_cycles']}")
    assert hidden > 0            # the second job's loads ran under the first job


# ---------------------------------------------------------------------------------------------
# errors: pulse + code, later commands discarded until abort, no hang, memory untouched
# ---------------------------------------------------------------------------------------------

OUT_DISCARDED = 0xA000          # where the discarded phase would have stored its result


def _bad_job(**over):
    loads, job, _, _, _ = make_phase("fp", CFG, batch=1, cin=4, cout=4, h=6, w=6, k=3,
                                     stride=1, pad=1, nm=(2, 4), seed=1400)
    j = {"kind": CMD_JOB, "job": dict(job["job"], **over)}
    return loads, j


#: error scenarios: name -> (bad commands, expected err codes, SLVERR window, abort_at)
def _error_scenarios(cfg):
    loads, _ = _bad_job()
    return {
        "err_beyond": (lambda: [desc(BUF_ACT, cfg.act_mem_elems - 4, 8, DIR_LOAD, 0x0)],
                       [0x30 | DmaErr.BEYOND_BUFFER], None, None),
        "err_len0": (lambda: [desc(BUF_WGT, 0, 0, DIR_LOAD, 0x0)], [0x30 | DmaErr.LEN_ZERO],
                     None, None),
        # the result buffer takes no loads (one write port: the result store)
        "err_out_load": (lambda: [desc(BUF_OUT, 0, 8, DIR_LOAD, 0x0)],
                         [0x30 | DmaErr.BAD_BUFFER], None, None),
        # the first phase's weight load gets SLVERR: its job and store are discarded
        "err_slverr": (lambda: [], [0x30 | DmaErr.BUS_ERROR], (ADDR["w"], ADDR["w"] + 0x100),
                       None),
        # a 2-cycle abort while the first load is on the bus: ABORTED, the burst drained,
        # the rest of the phase discarded until the next abort
        "err_abort": (lambda: [], [0x30 | DmaErr.ABORTED], None, 25),
        "err_raw": (lambda: loads + [_bad_job(raw=1)[1]], [0x40 | JobErr.RAW], None, None),
        "err_job_beyond": (lambda: loads + [_bad_job(out_base=cfg.out_mem_elems - 10)[1]],
                           [0x40 | JobErr.BEYOND], None, None),
        "err_not_loaded": (lambda: loads[:2] + [_bad_job()[1]], [0x40 | JobErr.NOT_LOADED],
                           None, None),     # the mask never loaded
        "err_shape": (lambda: loads + [_bad_job(kh=cfg.k_max + 1)[1]], [0x40 | JobErr.SHAPE],
                      None, None),
        # the packed mask's extent: ceil(144 bits / 16) = 9 elements; one element short of
        # it loaded -> NOT_LOADED; a job whose mask starts 8 elements before the end of the
        # MASK buffer -> BEYOND
        "err_mask_short": (lambda: loads[:2] + [dict(loads[2], desc=dict(
            loads[2]["desc"], length=loads[2]["desc"]["length"] - 1)), _bad_job()[1]],
            [0x40 | JobErr.NOT_LOADED], None, None),
        "err_mask_beyond": (lambda: loads + [_bad_job(m_base=(buf_sizes(cfg)[BUF_MASK] - 8)
                                                      * cfg.data_width)[1]],
                            [0x40 | JobErr.BEYOND], None, None),
        # CMD_PRUNE: n = 0, a base inside a word, seed 0 -> SHAPE; past the buffer -> BEYOND;
        # a range never loaded -> NOT_LOADED
        "err_prune_len0": (lambda: list(reversed(_prune_bad(n=0))), [0x40 | JobErr.SHAPE],
                           None, None),
        "err_prune_misaligned": (lambda: list(reversed(_prune_bad(base=_prune_bad()[0][
            "prune"]["base"] + 1))), [0x40 | JobErr.SHAPE], None, None),
        "err_prune_seed0": (lambda: list(reversed(_prune_bad(seed=0))),
                            [0x40 | JobErr.SHAPE], None, None),
        "err_prune_beyond": (lambda: [_prune_bad(base=cfg.grad_mem_elems - 2 * (
            cfg.dma_width // cfg.data_width))[0]], [0x40 | JobErr.BEYOND], None, None),
        "err_prune_not_loaded": (lambda: [_prune_bad()[0]], [0x40 | JobErr.NOT_LOADED],
                                 None, None),
        # CMD_PREGEN: Cin not a multiple of M, backward rows shorter than a word (Cin*Kh*Kw <
        # dma_width), a mask base inside a word, N > nm_n_max -> SHAPE; the weight past WGT ->
        # BEYOND; the weight never loaded -> NOT_LOADED
        "err_pregen_cin": (lambda: _pregen_bad(cin=cfg.nm_m + 1), [0x40 | JobErr.SHAPE],
                           None, None),
        "err_pregen_rows": (lambda: _pregen_bad(cin=cfg.nm_m, kh=1, kw=1, cout=cfg.nm_m),
                            [0x40 | JobErr.SHAPE], None, None),
        "err_pregen_misaligned": (lambda: _pregen_bad(m_base=2 * cfg.dma_width + 16),
                                  [0x40 | JobErr.SHAPE], None, None),
        "err_pregen_n": (lambda: _pregen_bad(n=cfg.nm_n_max + 1), [0x40 | JobErr.SHAPE],
                         None, None),
        "err_pregen_beyond": (lambda: _pregen_bad(w_base=cfg.wgt_mem_elems - 100),
                              [0x40 | JobErr.BEYOND], None, None),
        "err_pregen_not_loaded": (lambda: _pregen_bad()[3:], [0x40 | JobErr.NOT_LOADED],
                                  None, None),
        # the fused SGD update: on an FP job, a weight base inside a word -> SHAPE; the
        # weight past WGT -> BEYOND; never loaded -> NOT_LOADED
        "err_update_fp": (lambda: _update_bad(mode=Phase.FP.value),
                          [0x40 | JobErr.SHAPE], None, None),
        "err_update_misaligned": (lambda: _update_bad(w_base=9), [0x40 | JobErr.SHAPE],
                                  None, None),
        "err_update_beyond": (lambda: _update_bad(w_base=cfg.wgt_mem_elems - 20),
                              [0x40 | JobErr.BEYOND], None, None),
        "err_update_not_loaded": (lambda: _update_bad(w_base=64), [0x40 | JobErr.NOT_LOADED],
                                  None, None),
        # CMD_STAGE: a label outside [0, classes) -> LABEL after the stage ran; a loss stage
        # with pooling (H = W = 1 is not a multiple of 2) -> SHAPE; a gradient past GRAD ->
        # BEYOND; a backward stage without its forward stage (no KEEP entries) ->
        # NOT_LOADED; a command kind past CMD_STAGE -> SHAPE
        "err_stage_label": (lambda: _stage_bad(label=5), [0x40 | JobErr.LABEL], None, None),
        "err_stage_shape": (lambda: _stage_bad(lgk=1), [0x40 | JobErr.SHAPE], None, None),
        "err_stage_beyond": (lambda: _stage_bad(dst=cfg.grad_mem_elems - 2),
                             [0x40 | JobErr.BEYOND], None, None),
        "err_stage_keep": (lambda: _stage_bad(bwd_only=True), [0x40 | JobErr.NOT_LOADED],
                           None, None),
        "err_stage_kind": (lambda: [{"kind": 5}], [0x40 | JobErr.SHAPE], None, None),
    }


def prune_case(cfg, seed, *, n_extra=0):
    """On-chip pruning in line with a WG job: ``x`` and ``dy`` loaded, ``CMD_PRUNE`` prunes
    ``dy`` in place in GRAD (threshold on chip), the WG job reads the pruned ``dy`` without a
    reload, then both the result and the pruned tensor are stored. Returns ``(cmds, writes,
    results {byte address: int64 array}, tau)``; the expected values are the golden model's
    (``prune_threshold_int``, ``stochastic_prune_int``, ``conv2d_backward_weight``)."""
    from sparseforge.gen.numfmt import prune_threshold_params
    rng = np.random.default_rng(seed)
    batch, cin, cout, h, k = 1, 3, 2, 5 + n_extra, 3
    x = rng.integers(-2000, 2001, (batch, cin, h, h))
    ho = h - k + 1
    dy = rng.normal(0, 300, (batch, cout, ho, ho)).round().astype(np.int64)
    dy[rng.random(dy.shape) < 0.3] = 0
    k_p, sh = prune_threshold_params(0.9, dy.size)
    pseed = int(rng.integers(1, 1 << 32))
    tau = golden.prune_threshold_int(dy, k_p, sh, cfg.data_width)
    gp, _ = golden.stochastic_prune_int(dy, tau, pseed, cfg.data_width)
    ref = golden.writeback(golden.conv2d_backward_weight(x, gp, (cout, cin, k, k), 1, 0),
                           cfg.frac_bits, cfg.data_width)
    epw = cfg.dma_width // cfg.data_width
    gb = 2 * epw                                     # a word-aligned GRAD offset
    cmds = [desc(BUF_ACT, 2, x.size, DIR_LOAD, ADDR["x"]),
            desc(BUF_GRAD, gb, dy.size, DIR_LOAD, ADDR["dy"]),
            {"kind": dpm.CMD_PRUNE, "prune": {"base": gb, "n": dy.size, "k_p": k_p,
                                              "shift": sh, "seed": pseed}},
            job_cmd(mode=Phase.WG.value, batch=batch, cin=cin, cout=cout, h=h, w=h, kh=k,
                    kw=k, stride2=0, pad=0, raw=0, act_base=2, grad_base=gb, w_base=0,
                    m_base=0, out_base=6),
            desc(BUF_OUT, 6, ref.size, DIR_STORE, ADDR["out"]),
            desc(BUF_GRAD, gb, dy.size, DIR_STORE, ADDR["pg"])]
    writes = {ADDR["x"]: x.ravel().astype("<i2").tobytes(),
              ADDR["dy"]: dy.ravel().astype("<i2").tobytes()}
    return cmds, writes, {ADDR["out"]: ref, ADDR["pg"]: gp}, tau


ADDR["pg"] = 0x5000
ADDR["dx"] = 0x6000
ADDR["masks"] = 0x7000


def pregen_case(cfg, seed, *, with_wg=False):
    """On-chip pre-generation feeding the jobs: ``w`` loaded into WGT, ``CMD_PREGEN`` writes
    both N:M masks into MASK, an FP job uses the forward mask and a BP job the backward mask
    (``m_base`` of each = the pre-generation's, the backward one word-aligned after it), the
    results and the two masks are stored. ``with_wg``: a WG job right after the
    pre-generation command instead (it runs beside it). Returns ``(cmds, writes, results)``
    with the golden values (``bdwp_masks``, the phases with those masks, the masks packed)."""
    rng = np.random.default_rng(seed)
    n, m = 2, cfg.nm_m
    cout, cin, k, h = m, m, 3, 5
    x = rng.integers(-2000, 2001, (1, cin, h, h))
    x[rng.random(x.shape) < 0.4] = 0
    w = rng.integers(-3000, 3001, (cout, cin, k, k))
    dy = rng.integers(-2000, 2001, (1, cout, h - k + 1, h - k + 1))
    fwd, bwd = golden.bdwp_masks(w, n, m)
    wb = lambda a: golden.writeback(a, cfg.frac_bits, cfg.data_width)        # noqa: E731
    wbits = cfg.dma_width
    mbase = 2 * wbits                                    # bit offset, on a word boundary
    words = -(-w.size // wbits)
    packed = np.concatenate([pack_mask(np.concatenate([fwd.ravel(), np.zeros(
        words * wbits - w.size, bool)]), cfg.data_width),
        pack_mask(np.concatenate([bwd.ravel(), np.zeros(words * wbits - w.size, bool)]),
                  cfg.data_width)])
    geo = dict(batch=1, cin=cin, cout=cout, h=h, w=h, kh=k, kw=k, stride2=0, pad=0, raw=0,
               act_base=2, grad_base=4, w_base=8)
    cmds = [desc(BUF_ACT, 2, x.size, DIR_LOAD, ADDR["x"]),
            desc(BUF_GRAD, 4, dy.size, DIR_LOAD, ADDR["dy"]),
            desc(BUF_WGT, 8, w.size, DIR_LOAD, ADDR["w"]),
            {"kind": dpm.CMD_PREGEN, "pregen": {"w_base": 8, "m_base": mbase, "cout": cout,
                                                "cin": cin, "kh": k, "kw": k, "n": n}}]
    results = {ADDR["masks"]: packed}
    if with_wg:
        dw_ = wb(golden.conv2d_backward_weight(x, dy, w.shape, 1, 0))
        cmds += [job_cmd(mode=Phase.WG.value, m_base=0, out_base=6, **geo),
                 desc(BUF_OUT, 6, dw_.size, DIR_STORE, ADDR["out"])]
        results[ADDR["out"]] = dw_
    else:
        y = wb(golden.conv2d_forward(x, w * fwd, 1, 0))
        dx = wb(golden.conv2d_backward_input(dy, w * bwd, x.shape, 1, 0))
        cmds += [job_cmd(mode=Phase.FP.value, m_base=mbase, out_base=6, **geo),
                 desc(BUF_OUT, 6, y.size, DIR_STORE, ADDR["out"]),
                 job_cmd(mode=Phase.BP.value, m_base=mbase + words * wbits, out_base=6, **geo),
                 desc(BUF_OUT, 6, dx.size, DIR_STORE, ADDR["dx"])]
        results.update({ADDR["out"]: y, ADDR["dx"]: dx})
    cmds.append(desc(BUF_MASK, mbase // cfg.data_width, packed.size, DIR_STORE,
                     ADDR["masks"]))
    writes = {ADDR[t]: v.ravel().astype("<i2").tobytes() for t, v in
              (("x", x), ("dy", dy), ("w", w))}
    return cmds, writes, results


ADDR["wnew"] = 0x8000


def update_case(cfg, seed, *, update=True, lr_shift=3, big=False, w_base=None):
    """The fused SGD update: ``x``, ``dy`` and ``W`` loaded (W at a word-aligned WGT offset),
    a WG job with ``update = 1`` stores ``dW`` and leaves ``W' = sat(W - (dW >> lr_shift))``
    in WGT, which is then stored. ``big``: weights near the saturation bounds (``W'``
    saturates). Returns ``(cmds, writes, results)`` with the golden values; ``update=False``:
    the same WG job without the update (its timing baseline; W stored unchanged)."""
    rng = np.random.default_rng(seed)
    batch, cin, cout, h, k = 2, 3, 3, 6, 3
    x = rng.integers(-6000, 6001, (batch, cin, h, h))
    dy = rng.integers(-6000, 6001, (batch, cout, h - k + 1, h - k + 1))
    lim = 32000 if big else 4000
    w = rng.integers(-lim, lim + 1, (cout, cin, k, k))
    dw_ = golden.writeback(golden.conv2d_backward_weight(x, dy, w.shape, 1, 0), cfg.frac_bits,
                           cfg.data_width)
    hi = (1 << (cfg.data_width - 1))
    w_new = np.clip(w - (dw_ >> lr_shift), -hi, hi - 1) if update else w
    epw = cfg.dma_width // cfg.data_width
    wb_, ob = (4 * epw if w_base is None else w_base), 3 * epw
    cmds = [desc(BUF_ACT, 2, x.size, DIR_LOAD, ADDR["x"]),
            desc(BUF_GRAD, 4, dy.size, DIR_LOAD, ADDR["dy"]),
            desc(BUF_WGT, wb_, w.size, DIR_LOAD, ADDR["w"]),
            job_cmd(mode=Phase.WG.value, batch=batch, cin=cin, cout=cout, h=h, w=h, kh=k,
                    kw=k, stride2=0, pad=0, raw=0, act_base=2, grad_base=4, w_base=wb_,
                    m_base=0, out_base=ob, update=int(update), lr_shift=lr_shift),
            desc(BUF_OUT, ob, dw_.size, DIR_STORE, ADDR["out"]),
            desc(BUF_WGT, wb_, w.size, DIR_STORE, ADDR["wnew"])]
    writes = {ADDR[t]: v.ravel().astype("<i2").tobytes() for t, v in
              (("x", x), ("dy", dy), ("w", w))}
    return cmds, writes, {ADDR["out"]: dw_, ADDR["wnew"]: w_new}


def _update_bad(**over):
    """The loads and the WG+update job of :func:`update_case`, job fields replaced."""
    cmds, _, _ = update_case(CFG, 1400)
    return cmds[:3] + [{"kind": CMD_JOB, "job": dict(cmds[3]["job"], **over)}]


def _pregen_bad(**over):
    """The loads and the pre-generation command of :func:`pregen_case`, fields replaced."""
    cmds, _, _ = pregen_case(CFG, 1400)
    c = cmds[3]
    return cmds[:3] + [{"kind": c["kind"], "pregen": dict(c["pregen"], **over)}]


def _prune_bad(**over):
    """A prune command over the ``dy`` of :func:`prune_case`, with fields replaced."""
    cmds, _, _, _ = prune_case(CFG, 1400)
    c = cmds[2]
    return {"kind": c["kind"], "prune": dict(c["prune"], **over)}, cmds[1]


#: good scenarios: name -> make_phase arguments
GOOD_SCENARIOS = {
    "fp": dict(mode="fp", batch=2, cin=4, cout=3, h=6, w=6, k=3, stride=2, pad=1, nm=(2, 4)),
    "bp": dict(mode="bp", batch=1, cin=3, cout=4, h=6, w=6, k=3, stride=1, pad=1, nm=(2, 4)),
    "wg": dict(mode="wg", batch=2, cin=3, cout=2, h=5, w=5, k=3, stride=1, pad=0, nm=None),
}


def scenario(name, cfg, seed):
    """A named scenario: ``mem`` (the initial memory image), ``cmds`` (command dicts and
    ``"abort"``), ``errs`` (the expected err codes), ``want`` (the expected final image),
    ``bad`` (an SLVERR byte window or None), ``abort_at``.

    Error scenarios: the bad commands, then a whole FP phase whose store aims at
    OUT_DISCARDED (all to be discarded), abort, then the phase again (must run exactly)."""
    if name in ("pregen_fp_bp", "pregen_wg", "prune_wg", "wg_update", "stage_chain",
                "stage_beside_wg"):
        if name == "prune_wg":
            cmds, writes, results, _ = prune_case(cfg, seed)
        elif name == "stage_chain":
            cmds, writes, results, _ = stage_case(cfg, seed)
        elif name == "stage_beside_wg":
            cmds, writes, results, _ = stage_beside_case(cfg, seed)
        elif name == "wg_update":
            cmds, writes, results = update_case(cfg, seed, big=True)
        else:
            cmds, writes, results = pregen_case(cfg, seed, with_wg=name == "pregen_wg")
        mem = fresh_mem(seed, writes)
        want = bytearray(mem)
        for a, t in results.items():
            want[a:a + 2 * t.size] = t.ravel().astype("<i2").tobytes()
        return {"mem": mem, "cmds": cmds, "errs": [], "want": want, "bad": None,
                "abort_at": None, "ref": results.get(ADDR["out"])}
    if name in GOOD_SCENARIOS:
        a = dict(GOOD_SCENARIOS[name])
        loads, job, store, ref, writes = make_phase(a.pop("mode"), cfg, seed=seed, **a)
        cmds, errs, bad, abort_at = loads + [job, store], [], None, None
    else:
        make_bad, errs, bad, abort_at = _error_scenarios(cfg)[name]
        loads, job, store, ref, writes = make_phase("fp", cfg, batch=1, cin=4, cout=4, h=6,
                                                    w=6, k=3, stride=1, pad=1, nm=(2, 4),
                                                    seed=1400)
        store_d = desc(BUF_OUT, 6, ref.size, DIR_STORE, OUT_DISCARDED)
        cmds = make_bad() + loads + [job, store_d, "abort"] + loads + [job, store]
        if name.startswith("err_stage"):        # the stage commands' operands
            writes = {**writes, **stage_case(cfg, 1400, label=5 if name == "err_stage_label"
                                             else None)[1]}
    mem = fresh_mem(seed, writes)
    want = bytearray(mem)
    want[ADDR["out"]:ADDR["out"] + 2 * ref.size] = ref.ravel().astype("<i2").tobytes()
    return {"mem": mem, "cmds": cmds, "errs": errs, "want": want, "bad": bad,
            "abort_at": abort_at, "ref": ref}


def _error_case(name, seed=1400):
    sc = scenario(name, CFG, seed)
    print(f"seed={seed} {name}: expecting {[hex(c) for c in sc['errs']]}")
    r_err = None
    if sc["bad"]:
        r_err = {a: 2 for a in range(sc["bad"][0], sc["bad"][1], CFG.dma_width // 8)}
    mem = sc["mem"]
    res, slave = run_plane(CFG, mem, sc["cmds"], seed=seed, r_err=r_err,
                           abort_at=sc["abort_at"])
    assert [c for _, c in res["errs"]] == sc["errs"]
    assert res["taken"] == _total_cmds(sc["cmds"])        # every command taken: nothing hangs
    assert np.array_equal(read_result(mem, ADDR["out"], sc["ref"]), sc["ref"])
    check_untouched(sc["want"], mem, [])                  # the whole image as expected
    assert slave.r_owed == 0 and slave.w_owed == 0 and not slave.rq and not slave.bq
    return res, slave


@pytest.mark.parametrize("name", ["err_beyond", "err_len0", "err_out_load", "err_slverr",
                                  "err_abort",
                                  "err_raw", "err_job_beyond", "err_not_loaded", "err_shape",
                                  "err_mask_short", "err_mask_beyond", "err_prune_len0",
                                  "err_prune_misaligned", "err_prune_seed0",
                                  "err_prune_beyond", "err_prune_not_loaded",
                                  "err_pregen_cin", "err_pregen_rows", "err_pregen_misaligned",
                                  "err_pregen_n", "err_pregen_beyond",
                                  "err_pregen_not_loaded", "err_update_fp",
                                  "err_update_misaligned", "err_update_beyond",
                                  "err_update_not_loaded", "err_stage_label",
                                  "err_stage_shape", "err_stage_beyond", "err_stage_keep",
                                  "err_stage_kind"])
def test_dataplane_errors(name):
    _error_case(name)


def test_dataplane_cocotb(sim, cocotb_run):
    """The emitted Verilog (DataPlane + PEArray) with cocotbext-axi AxiRam: three phases and
    every error scenario, whole RAM compared."""
    seed = 1500
    names = list(GOOD_SCENARIOS) + ["prune_wg", "pregen_fp_bp", "pregen_wg", "wg_update",
                                    "stage_chain", "stage_beside_wg"] + \
        list(_error_scenarios(CFG))
    print(f"seed={seed} sim={sim} scenarios={names}")
    n = cocotb_run("dataplane", sim, "cocotb_dataplane", config=CFG,
                   params={"seed": seed, "config": CFG.to_dict(), "scenarios": names},
                   testcase="dataplane_scenarios", with_array=True)
    assert n == 1


def test_dataplane_verilog_tiny():
    from amaranth.back import verilog
    from sparseforge.gen.config import preset
    cfg = preset("tiny")
    dp = DataPlane.from_config(cfg)
    text = verilog.convert(dp, name="dataplane")
    assert "module dataplane" in text
    for port in ("m_axi_araddr", "m_axi_wstrb", "cmd__valid", "err_code", "job_active",
                 "dma_exposed_cycles", "o__1__ready", "taps__1__1__payload"):
        assert port in text, port
    # a 16,384-element weight buffer; the MASK buffer's bit addresses (two masks of 16,384
    # bits) need one more bit
    assert addr_width_of(cfg) == 15


def test_dataplane_loaded_ranges_merge():
    """The x load split in two descriptors (upper half first) after an unrelated ACT load: the
    halves replace the unrelated range, then merge (they touch) -> the job runs exactly. With
    a one-word gap between the halves the job refuses (0x43)."""
    seed = 1600
    print(f"seed={seed}")
    loads, job, store, ref, writes = make_phase("fp", CFG, batch=1, cin=4, cout=4, h=6, w=6,
                                                k=3, stride=1, pad=1, nm=(2, 4), seed=seed)
    xl = loads[0]["desc"]
    n, h2 = xl["length"], 64
    for gap, errs in ((0, []), (2, [0x40 | JobErr.NOT_LOADED])):
        split = [desc(BUF_ACT, 1000, 8, DIR_LOAD, 0x0),
                 desc(BUF_ACT, xl["base"] + h2 + gap, n - h2 - gap, DIR_LOAD,
                      xl["addr"] + 2 * (h2 + gap)),
                 desc(BUF_ACT, xl["base"], h2, DIR_LOAD, xl["addr"])]
        mem = fresh_mem(seed, writes)
        before = bytearray(mem)
        res, _ = run_plane(CFG, mem, split + loads[1:] + [job, store], seed=seed)
        assert [c for _, c in res["errs"]] == errs
        if not errs:
            assert np.array_equal(read_result(mem, ADDR["out"], ref), ref)
            check_untouched(before, mem, [(ADDR["out"], ADDR["out"] + 2 * ref.size)])
        else:
            check_untouched(before, mem, [])


def test_pack_mask_layout():
    """``pack_mask`` is the documented packing: bit ``k`` of the mask (C order) is bit ``k %
    data_width`` of element ``k // data_width``, the last element's unused bits 0; checked
    bit by bit against that definition on random masks (seed 1700) at 8 and 16 bits."""
    rng = np.random.default_rng(1700)
    print("seed=1700")
    for dw in (8, 16):
        for n in (1, dw - 1, dw, dw + 1, 5 * dw + 3):
            mask = rng.random((n,)) < 0.5
            got = pack_mask(mask.reshape(1, n) * rng.integers(1, 100, (1, n)), dw)
            assert got.shape == (-(-n // dw),)
            assert all(-(1 << (dw - 1)) <= v < (1 << (dw - 1)) for v in got)
            for k in range(len(got) * dw):
                want = bool(mask[k]) if k < n else False
                assert bool((int(got[k // dw]) >> (k % dw)) & 1) == want, (dw, n, k)


def run_exact(cmds, writes, results, seed, pattern="random"):
    """Run ``cmds`` on a fresh memory with ``writes``; no error, every tensor of ``results``
    ({byte address: expected int64 array}) read back equal, no other byte changed. Returns the
    run's counters."""
    mem = fresh_mem(seed, writes)
    before = bytearray(mem)
    res, _ = run_plane(CFG, mem, cmds, seed=seed, pattern=pattern)
    assert res["errs"] == []
    ranges = []
    for a, t in results.items():
        assert np.array_equal(read_result(mem, a, t), t), hex(a)
        ranges.append((a, a + 2 * t.size))
    check_untouched(before, mem, ranges)
    return res


@pytest.mark.parametrize("pattern,summed", [("always", True), ("random", True),
                                            ("random", False)])
def test_dataplane_prune_in_line(pattern, summed):
    """CMD_PRUNE between the loads and a WG job: the threshold computed on chip equals
    ``golden.prune_threshold_int``, the pruned tensor stored back equals
    ``golden.stochastic_prune_int``, the WG job on the pruned GRAD (no reload) equals the
    golden WG of it; nothing else in memory changes. Right after the gradient's load the sum
    came with the load: the job takes ``ceil(n / epw) + prune_overhead(summed=True)`` cycles;
    with another GRAD load in between (``summed=False``: two elements after the gradient, so
    the loaded range still covers it) both passes run: ``2 * ceil(n / epw) + overhead``."""
    from sparseforge.hdl.dp_prune import prune_job_cycles
    seed = 1600
    print(f"seed={seed} pattern={pattern} summed={summed}")
    cmds, writes, results, tau = prune_case(CFG, seed, n_extra=4)
    if not summed:
        gl = cmds[1]["desc"]
        cmds.insert(2, desc(BUF_GRAD, gl["base"] + gl["length"], 2, DIR_LOAD, 0x9000))
    res = run_exact(cmds, writes, results, seed, pattern)
    assert res["prune_tau"] == tau
    n = [c for c in cmds if c["kind"] == dpm.CMD_PRUNE][0]["prune"]["n"]
    epw = CFG.dma_width // CFG.data_width
    assert res["prune_cycles"] == prune_job_cycles(n, epw, CFG.data_width, summed)
    if not summed:
        assert res["prune_cycles"] == 2 * -(-n // epw) + \
            DataPlane.from_config(CFG).pruner.overhead
    print(f"prune of {n} elements: {res['prune_cycles']} cycles, tau {tau}")


@pytest.mark.parametrize("with_wg", [False, True], ids=["fp_bp", "wg_beside"])
def test_dataplane_pregen(with_wg):
    """CMD_PREGEN: the masks it writes into MASK equal ``golden.bdwp_masks`` (stored and
    compared packed), an FP job with the forward mask and a BP job with the backward mask equal
    the golden phases with those masks (no mask crossed the memory); a WG job issued right
    after the pre-generation runs beside it (their cycles overlap) and is exact too."""
    seed = 1700
    print(f"seed={seed} with_wg={with_wg}")
    cmds, writes, results = pregen_case(CFG, seed, with_wg=with_wg)
    res = run_exact(cmds, writes, results, seed)
    w_size = CFG.nm_m * CFG.nm_m * 9
    from sparseforge.hdl.dp_pregen import pregen_job_cycles
    lanes = CFG.pregen_lanes_eff
    assert 0 < res["pregen_cycles"] <= pregen_job_cycles(w_size, CFG.nm_m, lanes)
    if with_wg:
        # the WG job ran while the pre-generation did: the phase took less than both in turn,
        # and the pre-generation's exposed time (no job, no transfer) is below its busy time
        assert res["job_cycles"] > 0
        assert res["end"] < res["pregen_cycles"] + res["job_cycles"] + res["dma_busy_cycles"]
        assert res["pregen_exposed_cycles"] < res["pregen_cycles"]
    else:           # alone: its whole time is exposed except where a transfer overlaps it
        assert res["pregen_exposed_cycles"] <= res["pregen_cycles"]
    print(f"pre-generation of {w_size} weights: {res['pregen_cycles']} cycles "
          f"({res['pregen_exposed_cycles']} exposed); job {res['job_cycles']}; whole "
          f"{res['end']}")


@pytest.mark.parametrize("kind", ["prune", "pregen"])
def test_dataplane_abort_during_prune_and_pregen(kind):
    """A soft reset (``abort``) while a ``CMD_PRUNE`` / ``CMD_PREGEN`` runs: the unit stops at
    once (its busy counter stops short of a whole job), nothing hangs, no error is reported
    (no transfer was under way), and after it the whole in-line case runs exactly (the loaded
    ranges were cleared, so everything is loaded again)."""
    seed = 1800
    print(f"seed={seed} kind={kind}")
    if kind == "prune":
        cmds, writes, results, _ = prune_case(CFG, seed, n_extra=4)
        head, counter = cmds[:3], "prune_cycles"            # loads + CMD_PRUNE
    else:
        cmds, writes, results = pregen_case(CFG, seed)
        head, counter = cmds[:4], "pregen_cycles"           # loads + CMD_PREGEN
    # the same commands alone, to time the unit's run
    alone, _ = run_plane(CFG, fresh_mem(seed, writes), head, seed=seed, pattern="always")
    full = alone[counter]
    assert full > 40 and alone["errs"] == []
    mem = fresh_mem(seed, writes)
    before = bytearray(mem)
    res, slave = run_plane(CFG, mem, head + ["abort"] + cmds, seed=seed, pattern="always",
                           abort_at=alone["end"] - full // 2)
    assert res["errs"] == []
    assert full < res[counter] < 2 * full          # the first run cut short, the second whole
    ranges = []
    for a, t in results.items():
        assert np.array_equal(read_result(mem, a, t), t), hex(a)
        ranges.append((a, a + 2 * t.size))
    check_untouched(before, mem, ranges)
    assert slave.r_owed == 0 and slave.w_owed == 0
    print(f"{kind}: a whole run {full} cycles; cut short by the abort, then whole: "
          f"{res[counter]} in all")


@pytest.mark.parametrize("big", [False, True], ids=["small", "saturating"])
def test_dataplane_wg_update(big):
    """The fused SGD update (a WG job with ``update = 1``): ``dW`` stored equals the golden WG,
    the weight left in WGT equals ``sat(W - (dW >> lr_shift))`` (the golden step's update;
    ``big``: weights near the bounds, so it saturates), nothing else in memory changes, and
    the job takes exactly ``UPDATE_OVERHEAD`` cycles more than the same WG job without it."""
    seed = 1900 + big
    print(f"seed={seed} big={big}")
    got = {}
    for upd in (False, True):
        cmds, writes, results = update_case(CFG, seed, update=upd, big=big)
        got[upd] = run_exact(cmds, writes, results, seed)["job_cycles"]
    if big:
        w = np.frombuffer(writes[ADDR["w"]], "<i2")
        assert not np.array_equal(results[ADDR["wnew"]].ravel(), w)
    assert got[True] == got[False] + dpm.UPDATE_OVERHEAD, got
    print(f"WG job {got[False]} cycles, with the update {got[True]}")


def test_dataplane_update_beside_pregen():
    """A WG job with the update while a pre-generation runs: beside it when their weight
    ranges are apart (both exact: the masks and W'), refused with ``BUSY`` (0x45) when they
    overlap (the job is discarded)."""
    seed = 1950
    print(f"seed={seed}")
    pcmds, pwrites, presults = pregen_case(CFG, seed)
    ucmds, uwrites, uresults = update_case(CFG, seed, w_base=600)
    pg, n_pg = pcmds[3], pcmds[2]["desc"]["length"]              # 576 weights
    for pg_base, errs in ((0, []), (560, [0x40 | JobErr.BUSY])):
        # the pre-generation's weight, zeros up to the update's weight at 600, then that
        # weight: one loaded range [0, 681); at 560 the two weights overlap
        writes = {**uwrites, 0x9000: pwrites[ADDR["w"]], 0xA000: bytes(2 * 600)}
        cmds = ucmds[:2] + [desc(BUF_WGT, 0, 600, DIR_LOAD, 0xA000),
                            desc(BUF_WGT, pg_base, n_pg, DIR_LOAD, 0x9000), ucmds[2],
                            {"kind": pg["kind"], "pregen": dict(pg["pregen"], w_base=pg_base)},
                            ucmds[3], ucmds[4], ucmds[5], pcmds[-1]]
        mem = fresh_mem(seed, writes)
        res, slave = run_plane(CFG, mem, cmds, seed=seed, pattern="random")
        assert [c for _, c in res["errs"]] == errs
        if not errs:
            for a, t in {**uresults, ADDR["masks"]: presults[ADDR["masks"]]}.items():
                assert np.array_equal(read_result(mem, a, t), t), hex(a)
            # they overlapped: the whole run is shorter than the two in turn
            assert res["end"] < res["pregen_cycles"] + res["job_cycles"] + res["dma_busy_cycles"]


# ---------------------------------------------------------------------------------------------
# CMD_STAGE: the between-layer stages on chip (hdl/dp_stage.py)
# ---------------------------------------------------------------------------------------------

ADDR["stage"] = 0x8000


def _stage(op, **f):
    return {"kind": dpm.CMD_STAGE, "stage": dict(op=op, **f)}


def stage_case(cfg, seed, *, label=None):
    """A three-layer network's step between the buffers, no tensor crossing the bus between
    layers: conv1 FP -> FWD stage (ReLU, 2x2 pool) into ACT -> conv2 FP on it -> FWD stage into
    the FC view -> fc3 FP -> LOSS stage (labels loaded into ACT) -> fc3 BP on the loss
    gradient -> BWD stage (conv2's gradient into GRAD) -> CMD_PRUNE (one pass: the stage took
    the sum) -> conv2 BP -> BWD stage (conv1's gradient). Stored: both stages' outputs, the
    loss gradient, the pruned conv2 gradient and conv1's gradient; each equal to the golden
    step's functions (``sim/host/e2e.py``). Returns ``(cmds, writes, results, info)``."""
    from sparseforge.gen.numfmt import prune_threshold_params
    from sparseforge.hdl.dp_stage import STAGE_BWD, STAGE_FWD, STAGE_LOSS
    from sparseforge.sim.host.e2e import maxpool_backward, maxpool_forward
    rng = np.random.default_rng(seed)
    dw, fb = cfg.data_width, cfg.frac_bits

    def wb(v):
        return golden.writeback(v, fb, dw)

    x1 = rng.integers(-300, 301, (1, 2, 8, 8))
    w1 = rng.integers(-120, 121, (3, 2, 3, 3))
    w2 = rng.integers(-120, 121, (4, 3, 3, 3))
    w3 = rng.integers(-120, 121, (5, 16, 1, 1))
    label = int(rng.integers(0, 5)) if label is None else label
    z1 = wb(golden.conv2d_forward(x1, w1, 1, 1))
    a1, arg1 = maxpool_forward(np.maximum(z1, 0), 2, 2)
    z2 = wb(golden.conv2d_forward(a1, w2, 1, 1))
    a2, arg2 = maxpool_forward(np.maximum(z2, 0), 2, 2)
    x3 = a2.reshape(1, -1).T[None, :, None, :]                 # the FC view (1, 16, 1, 1)
    z3 = wb(golden.conv2d_forward(x3, w3, 1, 0))
    logits = z3[0, :, 0, :].T
    onehot = np.zeros_like(logits)
    if 0 <= label < 5:
        onehot[0, label] = 1 << fb
    dl = np.clip(logits - onehot, -(1 << (dw - 1)), (1 << (dw - 1)) - 1)
    g3 = dl.T[None, :, None, :]
    dx3 = wb(golden.conv2d_backward_input(g3, w3, x3.shape, 1, 0))
    d2 = dx3[0, :, 0, :].T.reshape(a2.shape)
    g2 = maxpool_backward(d2, arg2, z2.shape, 2, 2, dw) * (z2 > 0)
    k_p, sh = prune_threshold_params(0.9, g2.size)
    pseed = int(rng.integers(1, 1 << 32))
    tau = golden.prune_threshold_int(g2, k_p, sh, dw)
    gp2, _ = golden.stochastic_prune_int(g2, tau, pseed, dw)
    dx2 = wb(golden.conv2d_backward_input(gp2, w2, a1.shape, 1, 1))
    g1 = maxpool_backward(dx2, arg1, z1.shape, 2, 2, dw) * (z1 > 0)

    # ACT holds one loaded interval: the image, the labels (padded to a word), then what the
    # FWD stages write, each touching the one before (a range apart would replace it)
    # so do WGT and MASK (every tensor padded to a whole word)
    A = {"x1": 0, "lab": 128, "a1": 130, "a2": 178, "w1": 0, "w2": 54, "w3": 162,
         "m1": 0, "m2": 4, "m3": 12, "g3": 0, "g2": 64, "g1": 128,
         "z1": 0, "z2": 256, "z3": 384, "dx3": 400, "dx2": 448}
    ones = {n: pack_mask(np.ones(w.size, bool), dw) for n, w in (("m1", w1), ("m2", w2),
                                                                  ("m3", w3))}
    ones = {n: np.concatenate([v, np.zeros(len(v) % 2, np.int64)]) for n, v in ones.items()}
    base = ADDR["stage"]
    mem_t = [("x1", BUF_ACT, x1), ("w1", BUF_WGT, w1), ("w2", BUF_WGT, w2), ("w3", BUF_WGT, w3),
             ("m1", BUF_MASK, ones["m1"]), ("m2", BUF_MASK, ones["m2"]),
             ("m3", BUF_MASK, ones["m3"]), ("lab", BUF_ACT, np.array([label, 0]))]
    writes, cmds, off = {}, [], 0
    for name, buf, t in mem_t:
        writes[base + off] = t.ravel().astype("<i2").tobytes()
        cmds.append(desc(buf, A[name], t.size, DIR_LOAD, base + off))
        off += -(-(2 * t.size) // 64) * 64          # beat-aligned addresses

    def job(mode, cin, cout, h, w, k, pad, wn, mn, act=0, grad=0, out=0):
        return job_cmd(mode=Phase.from_name(mode).value, batch=1, cin=cin, cout=cout, h=h, w=w,
                       kh=k, kw=k, stride2=0, pad=pad, raw=0, act_base=act, grad_base=grad,
                       w_base=A[wn], m_base=A[mn] * dw, out_base=out)

    geo1 = dict(relu=1, lgk=1, zfc=0, b=1, c=3, h=8, w=8, aux=0, keep=0)
    geo2 = dict(relu=1, lgk=1, zfc=0, nfc=1, b=1, c=4, h=4, w=4, aux=0, keep=48)
    cmds += [
        job("fp", 2, 3, 8, 8, 3, 1, "w1", "m1", act=A["x1"], out=A["z1"]),
        _stage(STAGE_FWD, nfc=0, src=A["z1"], dst=A["a1"], **geo1),
        job("fp", 3, 4, 4, 4, 3, 1, "w2", "m2", act=A["a1"], out=A["z2"]),
        _stage(STAGE_FWD, src=A["z2"], dst=A["a2"], **geo2),
        job("fp", 16, 5, 1, 1, 1, 0, "w3", "m3", act=A["a2"], out=A["z3"]),
        _stage(STAGE_LOSS, relu=0, lgk=0, zfc=1, nfc=1, b=1, c=5, h=1, w=1, src=A["z3"],
               dst=A["g3"], aux=A["lab"], keep=0),
        job("bp", 16, 5, 1, 1, 1, 0, "w3", "m3", grad=A["g3"], out=A["dx3"]),
        _stage(STAGE_BWD, src=A["dx3"], dst=A["g2"], **geo2),
        {"kind": dpm.CMD_PRUNE, "prune": {"base": A["g2"], "n": g2.size, "k_p": k_p,
                                          "shift": sh, "seed": pseed}},
        job("bp", 3, 4, 4, 4, 3, 1, "w2", "m2", grad=A["g2"], out=A["dx2"]),
        _stage(STAGE_BWD, nfc=0, src=A["dx2"], dst=A["g1"], **geo1),
    ]
    res_t = [("a1", BUF_ACT, a1), ("a2", BUF_ACT, a2.reshape(-1)), ("g3", BUF_GRAD, dl),
             ("g2", BUF_GRAD, gp2), ("g1", BUF_GRAD, g1)]
    results, roff = {}, 0x1000
    for name, buf, t in res_t:
        cmds.append(desc(buf, A[name], t.size, DIR_STORE, base + roff))
        results[base + roff] = np.asarray(t, np.int64)
        roff += -(-(2 * t.size) // 64) * 64
    # the elements per cycle of each stage (vector mode: conv layouts, aligned; fwd1, bwd1)
    from sparseforge.hdl.dp_stage import stage_lanes
    epw = cfg.dma_width // dw
    lanes = [stage_lanes(c["stage"]["op"], lgk=c["stage"]["lgk"], w=c["stage"]["w"],
                         zfc=c["stage"]["zfc"], nfc=c["stage"]["nfc"], src=c["stage"]["src"],
                         dst=c["stage"]["dst"], keep=c["stage"]["keep"], epw=epw)
             for c in cmds if c["kind"] == dpm.CMD_STAGE]
    assert lanes == [epw, 1, 1, 1, epw]
    info = {"tau": tau, "prune_n": g2.size,
            "stages": [(STAGE_FWD, 1, 3, 8, 8, lanes[0]), (STAGE_FWD, 1, 4, 4, 4, 1),
                       (STAGE_LOSS, 1, 5, 1, 1, 1), (STAGE_BWD, 1, 4, 4, 4, 1),
                       (STAGE_BWD, 1, 3, 8, 8, lanes[4])]}
    return cmds, writes, results, info


@pytest.mark.parametrize("pattern", ["always", "random"])
def test_dataplane_stage_chain(pattern):
    """CMD_STAGE between real jobs (:func:`stage_case`): every stored tensor equals the golden
    step's, nothing else in memory changes, STAGE_CYCLES is the sum of ``stage_cycles`` of the
    five stages, the threshold is the golden one and the prune after the BWD stage took one
    pass (the stage summed |g| as it wrote the gradient)."""
    from sparseforge.hdl.dp_prune import prune_job_cycles
    from sparseforge.hdl.dp_stage import stage_cycles
    seed = 1700
    print(f"seed={seed} pattern={pattern}")
    cmds, writes, results, info = stage_case(CFG, seed)
    res = run_exact(cmds, writes, results, seed, pattern)
    assert res["stage_cycles"] == sum(stage_cycles(*s) for s in info["stages"])
    assert res["prune_tau"] == info["tau"]
    epw = CFG.dma_width // CFG.data_width
    assert res["prune_cycles"] == prune_job_cycles(info["prune_n"], epw, CFG.data_width, True)
    print(f"stages: {res['stage_cycles']} cycles; prune {res['prune_cycles']}")


def stage_beside_case(cfg, seed):
    """:func:`stage_case` with a WG job of fc3 right after its BP: the BWD stage after it
    reads the BP result (not the WG's OUT range) and writes GRAD away from the WG's gradient,
    so the data plane starts it (and the CMD_PRUNE after it) under the WG job; fc3's ``dW``
    is stored too. Returns ``(cmds, writes, results, info)``."""
    cmds, writes, results, info = stage_case(cfg, seed)
    rng = np.random.default_rng(seed)
    for shape in ((1, 2, 8, 8), (3, 2, 3, 3), (4, 3, 3, 3)):    # stage_case's draws, in order
        rng.integers(-300 if shape[0] == 1 else -120, 301 if shape[0] == 1 else 121, shape)
    w3 = rng.integers(-120, 121, (5, 16, 1, 1))
    # fc3's input (a2 in the FC view) and its loss gradient: results stage_case stores
    res_by = {(c["desc"]["buf"], c["desc"]["base"]): c["desc"]["addr"] for c in cmds
              if c["kind"] == CMD_DESC and c["desc"]["dir"] == DIR_STORE}
    a2 = results[res_by[(BUF_ACT, 178)]].reshape(1, 16, 1, 1)
    g3 = results[res_by[(BUF_GRAD, 0)]].reshape(1, 5, 1, 1)
    dw3 = golden.writeback(golden.conv2d_backward_weight(a2, g3, w3.shape, 1, 0),
                           cfg.frac_bits, cfg.data_width)
    bp3 = next(k for k, c in enumerate(cmds) if c["kind"] == CMD_JOB and
               c["job"]["mode"] == Phase.BP.value and c["job"]["cin"] == 16)
    wg3 = job_cmd(mode=Phase.WG.value, batch=1, cin=16, cout=5, h=1, w=1, kh=1, kw=1,
                  stride2=0, pad=0, raw=0, act_base=178, grad_base=0, w_base=0, m_base=0,
                  out_base=1024)
    cmds = cmds[:bp3 + 1] + [wg3] + cmds[bp3 + 1:]
    addr = ADDR["stage"] + 0x1800
    cmds.append(desc(BUF_OUT, 1024, dw3.size, DIR_STORE, addr))
    results = dict(results)
    results[addr] = dw3.reshape(-1)
    return cmds, writes, results, info


@pytest.mark.parametrize("pattern", ["always", "random"])
def test_dataplane_stage_and_prune_beside_wg(pattern):
    """A BWD stage and a CMD_PRUNE beside a WG job (*ours*, docs/dataplane.md;
    :func:`stage_beside_case`): every tensor (fc3's ``dW`` too) equals the golden step's,
    STAGE_CYCLES is unchanged and STAGE_EXPOSED is less (part ran under the job),
    PRUNE_EXPOSED <= PRUNE_CYCLES. A BWD stage right after the BP job whose result it reads
    waits for that job: with no WG (:func:`stage_case`) nothing is hidden."""
    from sparseforge.hdl.dp_stage import stage_cycles
    seed = 1700
    print(f"seed={seed} pattern={pattern}")
    cmds, writes, results, info = stage_beside_case(CFG, seed)
    res = run_exact(cmds, writes, results, seed, pattern)
    total = sum(stage_cycles(*s) for s in info["stages"])
    assert res["stage_cycles"] == total
    assert res["stage_exposed_cycles"] < total, res          # part ran under the WG job
    assert res["prune_exposed_cycles"] <= res["prune_cycles"]
    print(f"stages {total} cycles, {res['stage_exposed_cycles']} exposed; prune "
          f"{res['prune_cycles']}, {res['prune_exposed_cycles']} exposed")
    plain, writes0, results0, _ = stage_case(CFG, seed)
    res0 = run_exact(plain, writes0, results0, seed, pattern)
    assert res0["stage_exposed_cycles"] == res0["stage_cycles"] == total
    assert res0["prune_exposed_cycles"] == res0["prune_cycles"]


def _stage_bad(label=None, **over):
    """The loads and the commands of :func:`stage_case` up to the LOSS stage (fields of the
    last stage command replaced by ``over``), or only the loads and a BWD stage (``over``
    with ``bwd_only``)."""
    cmds, _, _, _ = stage_case(CFG, 1400, label=label)
    if over.pop("bwd_only", False):
        return cmds[:8] + [cmds[15]]                 # no FWD stage ran: KEEP not written
    upto = cmds[:14]
    c = upto[-1]
    return upto[:-1] + [{"kind": c["kind"], "stage": dict(c["stage"], **over)}]
