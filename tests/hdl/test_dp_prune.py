"""PruneUnit (hdl/dp_prune.py) in amaranth-sim against the golden pruning: a word memory model
serves its read port and takes its lane-enabled writes; the whole buffer is compared after the
job (the pruned range equals ``golden.stochastic_prune_int`` with the on-chip threshold, which
equals ``golden.prune_threshold_int``; every other word unchanged), and the job's cycles equal
``2 * ceil(n / epw) + overhead``. Seeds are fixed and printed."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.gen.numfmt import prune_threshold_params
from sparseforge.hdl.dp_prune import PruneUnit, xorshift32_power
from sparseforge.hdl.pruner import xorshift32_step
from sparseforge.sim.reference import golden


def _words(vals, epw, dw):
    mask = (1 << dw) - 1
    out = []
    for k in range(0, len(vals), epw):
        w = 0
        for l, v in enumerate(vals[k:k + epw]):
            w |= (int(v) & mask) << (l * dw)
        out.append(w)
    return out


def _elems(words, epw, dw):
    sign = 1 << (dw - 1)
    return [(((w >> (l * dw)) & ((1 << dw) - 1)) ^ sign) - sign for w in words for l in range(epw)]


def run_unit(*, epw, dw, depth, base, g, k_p, s, seed, jobs=1, pre_sum=None):
    unit = PruneUnit(epw=epw, data_width=dw, word_addr_width=max(1, (depth - 1).bit_length()))
    rng = np.random.default_rng(seed)
    fill = rng.integers(-(1 << (dw - 1)), 1 << (dw - 1), depth * epw)
    mem = _words(fill, epw, dw)
    start = base * epw
    before = list(fill)
    for k, v in enumerate(g):
        before[start + k] = int(v)
    mem = _words(before, epw, dw)
    res = {}

    async def bench(ctx):
        rdata = 0
        ctx.set(unit.base, base)
        ctx.set(unit.n, len(g))
        ctx.set(unit.k_p, k_p)
        ctx.set(unit.shift, s)
        ctx.set(unit.seed, seed)
        if pre_sum is not None:              # the sum came with the load: one pass
            ctx.set(unit.pre_ok, 1)
            ctx.set(unit.pre_sum, pre_sum)
        ctx.set(unit.start, 1)
        await ctx.tick()
        ctx.set(unit.start, 0)
        cycles = 1
        while True:
            addr = ctx.get(unit.rd_addr)
            en = ctx.get(unit.wr_en)
            wa, wd = ctx.get(unit.wr_addr), ctx.get(unit.wr_data)
            busy = ctx.get(unit.busy)
            ctx.set(unit.rd_data, rdata)
            await ctx.tick()
            rdata = mem[addr] if addr < depth else 0
            if en:
                w = mem[wa]
                for l in range(epw):
                    if en >> l & 1:
                        f = ((1 << dw) - 1) << (l * dw)
                        w = (w & ~f) | (wd & f)
                mem[wa] = w
            if not busy:
                break
            cycles += 1
            assert cycles < 20 * len(g) + 500, "the prune unit did not finish"
        res["cycles"] = cycles - 1
        res["tau"] = ctx.get(unit.tau)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    after = _elems(mem, epw, dw)
    return before, after, res, unit


CASES = [  # epw, dw, n, base (words), p, seed
    (1, 16, 37, 3, 0.9, 11),
    (2, 16, 1, 0, 0.5, 12),
    (2, 16, 203, 5, 0.9, 13),
    (2, 16, 256, 0, 0.5, 14),
    (4, 16, 61, 2, 0.99, 15),
    (8, 8, 77, 1, 0.9, 16),
    (2, 16, 40, 0, 0.0, 17),           # p = 0: k_p = 0, tau = 0, nothing pruned
]


@pytest.mark.parametrize("summed", [False, True], ids=["two_pass", "summed"])
@pytest.mark.parametrize("case", CASES, ids=[f"epw{c[0]}-dw{c[1]}-n{c[2]}-p{c[4]}"
                                              for c in CASES])
def test_prune_unit_matches_golden(case, summed):
    """Threshold, pruned tensor and cycles of one job equal the golden model's; ``summed``:
    ``sum|g|`` given with ``start`` (``pre_ok``), the sum pass skipped
    (``prune_job_cycles(summed=True)``)."""
    from sparseforge.hdl.dp_prune import prune_job_cycles
    epw, dw, n, base, p, seed = case
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    lim = 1 << (dw - 1)
    # mostly small gradients (many below tau), some large ones and the extremes
    g = rng.normal(0, lim / 16, n).round().clip(-lim, lim - 1).astype(np.int64)
    g[rng.random(n) < 0.3] = 0
    if n > 4:
        g[0], g[1] = -lim, lim - 1
    k_p, s = prune_threshold_params(p, n)
    depth = base + -(-n // epw) + 3
    before, after, res, unit = run_unit(epw=epw, dw=dw, depth=depth, base=base, g=g, k_p=k_p,
                                        s=s, seed=seed,
                                        pre_sum=int(np.abs(g).sum()) if summed else None)
    tau = golden.prune_threshold_int(g, k_p, s, dw)
    assert res["tau"] == tau
    want, _ = golden.stochastic_prune_int(g, tau, seed, dw)
    start = base * epw
    assert after[start:start + n] == [int(v) for v in want]
    assert after[:start] == before[:start] and after[start + n:] == before[start + n:]
    assert res["cycles"] == prune_job_cycles(n, epw, dw, summed)
    if not summed:
        assert res["cycles"] == 2 * -(-n // epw) + unit.overhead


def test_xorshift32_power_is_the_step():
    rng = np.random.default_rng(5)
    for k in (1, 2, 3, 8, 32):
        cols = xorshift32_power(k)
        for s in rng.integers(1, 1 << 32, 20):
            s = int(s)
            want = s
            for _ in range(k):
                want = xorshift32_step(want)
            got = 0
            for b in range(32):
                if s >> b & 1:
                    got ^= cols[b]
            assert got == want


def test_prune_unit_rejects_bad_epw():
    with pytest.raises(ValueError, match="epw"):
        PruneUnit(epw=3, data_width=16, word_addr_width=8)
