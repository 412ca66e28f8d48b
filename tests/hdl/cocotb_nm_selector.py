"""cocotb tests of the emitted ``nm_selector`` against the golden ``nm_select_group`` (scoreboard).

Also home of the stimulus generators shared with ``test_nm_selector.py`` (amaranth-sim).
"""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from sparseforge.hdl.nm_selector import pack_group, pack_select, unpack_select
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import StreamSink, StreamSource, env_params, run_streams
from sparseforge.sim.testkit.patterns import make_pattern


# ------------------------------------------------------------------------------------------------
# Stimulus and expected outputs (shared with the amaranth-sim tests)
# ------------------------------------------------------------------------------------------------

def adversarial_groups(m, width, seed=0):
    """Corner-case groups: ties, zeros, extremes, the most negative value, one large among ties."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    g = [
        [0] * m,                                    # all zero
        [3] * m,                                    # all equal
        [-3] * m,
        [hi] * m,
        [lo] * m,                                   # all most-negative
        [lo if k % 2 else hi for k in range(m)],    # |lo| = hi + 1 beats hi
        [hi if k % 2 else lo for k in range(m)],
        [(-1) ** k for k in range(m)],              # +x / -x ties
        list(range(m)),                             # ascending magnitudes
        list(range(m, 0, -1)),                      # descending
        [-k for k in range(m)],
        [lo + 1 + k for k in range(m)],             # large negative magnitudes, descending
    ]
    for pos in range(m):                            # one large among ties, at every position
        big = [1] * m
        big[pos] = lo if pos % 2 else hi
        g.append(big)
        one = [0] * m                               # a single non-zero
        one[pos] = -1
        g.append(one)
    rng = np.random.default_rng(seed)
    for _ in range(4 * m):                          # heavy ties: tiny value range
        g.append(rng.integers(-1, 2, size=m).tolist())
    for _ in range(2 * m):                          # only the extremes and zero
        g.append(rng.choice([lo, hi, 0, -1, 1], size=m).tolist())
    return [[int(v) for v in grp] for grp in g]


def random_groups(m, width, count, seed):
    """Random groups mixing full-range, small-range (many ties), sparse and extreme values."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (width - 1)), 1 << (width - 1)
    full = rng.integers(lo, hi, size=(count, m))
    small = rng.integers(-2, 3, size=(count, m))
    kind = rng.integers(0, 4, size=count)
    groups = np.where((kind == 1)[:, None], small, full)
    groups = np.where((kind == 2)[:, None] & (rng.random((count, m)) < 0.7), 0, groups)
    extremes = rng.choice([lo, hi - 1], size=(count, m))
    groups = np.where((kind == 3)[:, None] & (rng.random((count, m)) < 0.5), extremes, groups)
    return groups.astype(np.int64).tolist()


def expected_beat(group, n, m, n_max, width):
    """The packed output beat for one group: golden ``nm_select_group``; n = 0 keeps nothing and
    n > n_max acts as n_max (the selector's documented behaviour)."""
    if n == 0:
        return pack_select(0, [0] * n_max, [0] * n_max, m=m, width=width)
    mask, values, indices = golden.nm_select_group(np.array(group, dtype=np.int64),
                                                   min(n, n_max), n_max)
    return pack_select(mask, values, indices, m=m, width=width)


def first_mismatch(got, expected, *, m, n_max, width, groups=None):
    """``None`` if equal, else a message naming the first differing beat, decoded."""
    if got == expected:
        return None
    if len(got) != len(expected):
        return f"{len(got)} beats out, {len(expected)} expected"
    k = next(k for k, (a, b) in enumerate(zip(got, expected)) if a != b)
    return (f"beat {k} (group {groups[k] if groups else '?'}): "
            f"got {unpack_select(got[k], m=m, n_max=n_max, width=width)}, "
            f"expected {unpack_select(expected[k], m=m, n_max=n_max, width=width)}")


# ------------------------------------------------------------------------------------------------
# cocotb benches
# ------------------------------------------------------------------------------------------------

async def reset(dut, n=0):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.n.value = n
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def run_job(dut, p, n, groups, src, sink, seed, extra_cycles=0):
    """Set n (pipeline drained), stream the groups through, return (outputs, sink)."""
    dut.n.value = n
    source = StreamSource(dut, "i", [pack_group(g, p["width"]) for g in groups],
                          make_pattern(src, seed))
    snk = StreamSink(dut, "o", make_pattern(sink, seed + 1), expected=len(groups))
    await run_streams(dut.clk, [source], [snk], max_cycles=20 * len(groups) + 100,
                      extra_cycles=extra_cycles)
    await FallingEdge(dut.clk)              # leave the ReadOnly phase before anyone writes
    return snk.beats, snk


def check(got, expected, p, groups):
    msg = first_mismatch(got, expected, m=p["m"], n_max=p["n_max"], width=p["width"], groups=groups)
    assert msg is None, msg


@cocotb.test()
async def nm_every_n(dut):
    """Every N (1..n_max, then 0), adversarial + random groups, n changed after each drain."""
    p = env_params()
    m, n_max, w, seed = p["m"], p["n_max"], p["width"], p["seed"]
    dut._log.info(f"seed={seed} m={m} n_max={n_max} width={w}")
    await reset(dut)
    for n in list(range(1, n_max + 1)) + [0]:
        groups = adversarial_groups(m, w, seed + n) + random_groups(m, w, 32, seed + n)
        got, _ = await run_job(dut, p, n, groups, "random", "random", seed + n, extra_cycles=8)
        check(got, [expected_beat(g, n, m, n_max, w) for g in groups], p, groups)


async def soak(dut, pattern, offset):
    """A third of the random groups under one back-pressure pattern; n changes between jobs."""
    p = env_params()
    m, n_max, w = p["m"], p["n_max"], p["width"]
    seed = p["seed"] + offset
    total = max(p["groups"] // 3, n_max)
    dut._log.info(f"seed={seed} pattern={pattern} groups={total}")
    await reset(dut)
    ns = np.random.default_rng(seed).permutation(np.arange(1, n_max + 1)).tolist()
    per_job = -(-total // len(ns))
    sent = 0
    for k, n in enumerate(ns):
        groups = random_groups(m, w, min(per_job, total - sent), seed + 17 * k)
        got, _ = await run_job(dut, p, n, groups, pattern, pattern, seed + k, extra_cycles=8)
        check(got, [expected_beat(g, n, m, n_max, w) for g in groups], p, groups)
        sent += len(groups)
    assert sent == total


@cocotb.test()
async def nm_soak_always(dut):
    await soak(dut, "always", 1)


@cocotb.test()
async def nm_soak_cycle(dut):
    await soak(dut, "cycle", 2)


@cocotb.test()
async def nm_soak_random(dut):
    await soak(dut, "random", 3)


@cocotb.test()
async def nm_throughput(dut):
    """No back-pressure: group j transfers in cycle j and leaves in cycle j + latency, so the
    last of K groups leaves in cycle K - 1 + latency (counted from the first offered beat)."""
    p = env_params()
    m, n_max, w, lat = p["m"], p["n_max"], p["width"], p["latency"]
    await reset(dut)
    for k in (50, 300):
        groups = random_groups(m, w, k, p["seed"] + k)
        got, snk = await run_job(dut, p, n_max, groups, "always", "always", 0)
        check(got, [expected_beat(g, n_max, m, n_max, w) for g in groups], p, groups)
        assert snk.cycles_at_last == k - 1 + lat, \
            f"throughput: {k} groups, last beat in cycle {snk.cycles_at_last}, " \
            f"expected {k - 1 + lat}"


@cocotb.test()
async def nm_reset_mid_stream(dut):
    """Reset with a full, stalled pipeline: in-flight beats are dropped, the next job is exact."""
    p = env_params()
    m, n_max, w, lat = p["m"], p["n_max"], p["width"], p["latency"]
    await reset(dut, n=n_max)
    dut.i__valid.value = 1
    dut.i__payload.value = pack_group([7] * m, w)
    await ClockCycles(dut.clk, lat + 3)
    await ReadOnly()
    assert int(dut.o__valid.value) == 1
    assert int(dut.i__ready.value) == 0, "a stalled full pipeline must refuse input"
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 1)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ReadOnly()
    assert int(dut.o__valid.value) == 0, "reset must drop the pending output beat"
    await FallingEdge(dut.clk)
    groups = adversarial_groups(m, w, 1)[:20]
    n = max(1, n_max // 2)
    got, _ = await run_job(dut, p, n, groups, "always", "random", 5, extra_cycles=lat + 4)
    check(got, [expected_beat(g, n, m, n_max, w) for g in groups], p, groups)
