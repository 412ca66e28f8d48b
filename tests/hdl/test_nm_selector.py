"""N:M selector: amaranth-sim unit tests and cocotb tests (Icarus, Verilator) vs the golden."""

import gc
import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.gen.verilog import to_verilog
from sparseforge.hdl.nm_selector import (NMSelector, nm_select_layout, pack_group, pack_select,
                                         unpack_select)
from sparseforge.sim.testkit.amaranth_streams import stream_put, stream_sink, stream_source
from sparseforge.sim.testkit.patterns import make_pattern

from cocotb_nm_selector import adversarial_groups, expected_beat, first_mismatch, random_groups
from sparseforge.sim.testkit.patterns import soak_scale


# ------------------------------------------------------------------------------------------------
# Scoreboard (stimulus generators and expected beats live in cocotb_nm_selector, shared)
# ------------------------------------------------------------------------------------------------

def assert_same(got, expected, *, m, n_max, width, groups=None):
    """Whole-list comparison; on failure report the first differing beat decoded."""
    msg = first_mismatch(got, expected, m=m, n_max=n_max, width=width, groups=groups)
    assert msg is None, msg


# ------------------------------------------------------------------------------------------------
# amaranth-sim harness: jobs of (n, groups); n is set between jobs or per beat
# ------------------------------------------------------------------------------------------------

def run_jobs(dut, jobs, *, src="always", sink="always", seed=0, drain=True, per_beat_n=None,
             max_cycles=None):
    """Send every job's groups; with ``drain`` wait for all outputs before changing ``n``.

    ``per_beat_n`` (a list, one n per group of the concatenated jobs) instead sets n with each
    beat, without draining. Returns ``(outputs, cycles)``; ``cycles`` counts from the first
    clock edge to the edge that transfers the last output beat.
    """
    total = sum(len(g) for _, g in jobs)
    out, state = [], {"cycles": 0}
    if max_cycles is None:
        max_cycles = 20 * total + 200
    w = dut.width

    async def source(ctx):
        pattern = make_pattern(src, seed)
        if per_beat_n is not None:
            beats = [g for _, gs in jobs for g in gs]
            for group, n in zip(beats, per_beat_n):
                while not next(pattern):
                    await ctx.tick()
                ctx.set(dut.n, n)
                await stream_put(ctx, dut.i, pack_group(group, w))
            return
        sent = 0
        for n, groups in jobs:
            if drain:
                while len(out) < sent:
                    await ctx.tick()
            ctx.set(dut.n, n)
            await stream_source(ctx, dut.i, [pack_group(g, w) for g in groups], pattern)
            sent += len(groups)

    async def sink_bench(ctx):
        await stream_sink(ctx, dut.o, total, make_pattern(sink, seed + 1), out)

    async def watchdog(ctx):
        async for _ in ctx.tick():
            state["cycles"] += 1
            if len(out) >= total:
                return
            assert state["cycles"] < max_cycles, f"timeout: {len(out)} of {total} beats"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink_bench)
    sim.add_process(watchdog)
    sim.run()
    return out, state["cycles"]


def expected_jobs(jobs, m, n_max, width):
    return [expected_beat(g, n, m, n_max, width) for n, gs in jobs for g in gs]


# ------------------------------------------------------------------------------------------------
# Parameters, ports, layout
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    ({"m": 3, "n_max": 2, "width": 8}, ValueError, r"m must be one of \(2, 4, 8, 16\), not 3"),
    ({"m": 32, "n_max": 2, "width": 8}, ValueError, "m must be one of"),
    ({"m": "8", "n_max": 2, "width": 8}, TypeError, "m must be an integer"),
    ({"m": True, "n_max": 1, "width": 8}, TypeError, "m must be an integer"),
    ({"m": 8, "n_max": 0, "width": 8}, ValueError, r"n_max must be in \[1, 8\], not 0"),
    ({"m": 8, "n_max": 9, "width": 8}, ValueError, r"n_max must be in \[1, 8\], not 9"),
    ({"m": 8, "n_max": 2.0, "width": 8}, TypeError, "n_max must be an integer"),
    ({"m": 8, "n_max": 2, "width": 1}, ValueError, "width must be in"),
    ({"m": 8, "n_max": 2, "width": 16.0}, TypeError, "width must be an integer"),
    ({"m": 8, "n_max": 2, "width": None}, TypeError, "width must be an integer"),
])
def test_nm_selector_rejects_bad_parameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        NMSelector(**kwargs)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_nm_selector_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        NMSelector(8, 4, 16)
    gc.collect()                  # the half-built instance warns when collected: do it here


@pytest.mark.parametrize("m,n_max,width", [(2, 1, 2), (4, 4, 8), (8, 4, 16), (16, 8, 16)])
def test_nm_selector_ports_and_layout(m, n_max, width):
    dut = NMSelector(m=m, n_max=n_max, width=width)
    iw = max(1, (m - 1).bit_length())
    assert (dut.m, dut.n_max, dut.width, dut.index_width, dut.latency) == (m, n_max, width, iw, 5)
    layout = nm_select_layout(m, n_max, width)
    assert [(name, f.offset) for name, f in layout] == \
        [("mask", 0), ("values", m), ("indices", m + n_max * width)]
    assert layout.size == m + n_max * (width + iw)
    text = to_verilog(dut, "nm_selector")
    ports = {name: int(msb) + 1 if msb else 1 for msb, name in
             re.findall(r"^\s*(?:input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", text, re.M)}
    assert ports == {"clk": 1, "rst": 1, "i__payload": m * width, "i__valid": 1, "i__ready": 1,
                     "o__payload": layout.size, "o__valid": 1, "o__ready": 1,
                     "n": n_max.bit_length()}
    assert re.search(r"^module nm_selector\(", text, re.M)


def test_pack_select_round_trip():
    p = pack_select(0b1010_0001, [-5, 7, -32768, 0], [0, 5, 7, 0], m=8, width=16)
    assert unpack_select(p, m=8, n_max=4, width=16) == \
        (0b1010_0001, [-5, 7, -32768, 0], [0, 5, 7, 0])
    assert p & 0xFF == 0b1010_0001 and (p >> 8) & 0xFFFF == (-5) & 0xFFFF


# ------------------------------------------------------------------------------------------------
# Function: every N, adversarial + random groups, runtime n changes between jobs (drained)
# ------------------------------------------------------------------------------------------------

MN_CONFIGS = [(2, 1, 4), (2, 2, 4), (4, 2, 8), (4, 4, 8), (8, 4, 16), (8, 8, 6), (16, 8, 16),
              (16, 16, 5)]


@pytest.mark.parametrize("m,n_max,width", MN_CONFIGS)
def test_nm_selector_every_n(m, n_max, width):
    """All N in 1..n_max, and n = 0, one job each, n changed at runtime after a drain."""
    seed = 100 * m + n_max
    print(f"seed={seed}")
    dut = NMSelector(m=m, n_max=n_max, width=width)
    adv = adversarial_groups(m, width, seed)
    jobs = []
    for n in list(range(1, n_max + 1)) + [0]:
        jobs.append((n, adv + random_groups(m, width, 16, seed + n)))
    out, _ = run_jobs(dut, jobs, src="random", sink="random", seed=seed)
    assert_same(out, expected_jobs(jobs, m, n_max, width), m=m, n_max=n_max, width=width,
                groups=[g for _, gs in jobs for g in gs])


def test_nm_selector_n_zero_keeps_nothing():
    dut = NMSelector(m=8, n_max=4, width=16)
    groups = adversarial_groups(8, 16)
    out, _ = run_jobs(dut, [(0, groups)])
    assert out == [pack_select(0, [0] * 4, [0] * 4, m=8, width=16)] * len(groups)


def test_nm_selector_n_above_n_max_acts_as_n_max():
    """The 3-bit n port of n_max = 4 has spare codes 5..7: they behave as n = 4."""
    dut = NMSelector(m=8, n_max=4, width=16)
    groups = adversarial_groups(8, 16) + random_groups(8, 16, 20, 7)
    jobs = [(n, groups) for n in (5, 7)]
    out, _ = run_jobs(dut, jobs)
    assert out == expected_jobs([(4, groups), (4, groups)], 8, 4, 16)


@pytest.mark.parametrize("src,sink", [("always", "always"), ("random", "random")])
def test_nm_selector_n_sampled_per_group(src, sink):
    """n travels with each group: changing it on every beat, without draining, is exact."""
    m, n_max, width, seed = 8, 8, 16, 31
    print(f"seed={seed}")
    dut = NMSelector(m=m, n_max=n_max, width=width)
    groups = random_groups(m, width, 300, seed)
    ns = np.random.default_rng(seed).integers(0, n_max + 1, size=len(groups)).tolist()
    out, _ = run_jobs(dut, [(None, groups)], src=src, sink=sink, seed=seed, per_beat_n=ns)
    expected = [expected_beat(g, n, m, n_max, width) for g, n in zip(groups, ns)]
    assert_same(out, expected, m=m, n_max=n_max, width=width, groups=groups)


# ------------------------------------------------------------------------------------------------
# Soak under back-pressure: >= 10k random groups in total, zero lost / duplicated beats
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["always", "cycle", "random"])
def test_nm_selector_soak(pattern):
    m, n_max, width = 8, 4, 16
    seed = {"always": 11, "cycle": 12, "random": 13}[pattern]
    count = int(3400 * soak_scale())
    print(f"seed={seed} groups={count}")
    dut = NMSelector(m=m, n_max=n_max, width=width)
    rng = np.random.default_rng(seed)
    jobs = [(int(n), random_groups(m, width, count // 4, seed + k))
            for k, n in enumerate(rng.permutation(np.arange(1, n_max + 1)))]
    out, _ = run_jobs(dut, jobs, src=pattern, sink=pattern, seed=seed)
    assert_same(out, expected_jobs(jobs, m, n_max, width), m=m, n_max=n_max, width=width,
                groups=[g for _, gs in jobs for g in gs])


# ------------------------------------------------------------------------------------------------
# Timing: latency and one group per cycle
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n_max", [(4, 4), (8, 4), (16, 8)])
def test_nm_selector_latency(m, n_max):
    """A group transferred in cycle t is valid on o in cycle t + latency, not earlier."""
    dut = NMSelector(m=m, n_max=n_max, width=16)
    group = list(range(m))
    seen = {}

    async def bench(ctx):
        ctx.set(dut.n, n_max)
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), pack_group(group, 16))
        assert ctx.get(dut.i.ready) == 1
        await ctx.tick()                       # transfer happens on this edge (cycle 0)
        ctx.set(dut.i.valid, 0)
        cycle = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycle += 1
            assert cycle < 50
        seen["latency"] = cycle
        seen["payload"] = ctx.get(dut.o.payload.as_value())

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["latency"] == dut.latency == 5
    assert seen["payload"] == expected_beat(group, n_max, m, n_max, 16)


@pytest.mark.parametrize("m,n_max", [(8, 4), (16, 8)])
def test_nm_selector_throughput_one_group_per_cycle(m, n_max):
    """No back-pressure: K groups take K + latency (+ harness constant) cycles, for two K."""
    dut_cycles = {}
    for k in (40, 240):
        dut = NMSelector(m=m, n_max=n_max, width=16)
        groups = random_groups(m, 16, k, k)
        out, cycles = run_jobs(dut, [(n_max, groups)])
        assert out == expected_jobs([(n_max, groups)], m, n_max, 16)
        assert k + dut.latency <= cycles <= k + dut.latency + 1, f"{k} groups took {cycles} cycles"
        dut_cycles[k] = cycles
    assert dut_cycles[240] - dut_cycles[40] == 200, dut_cycles


def test_nm_selector_stall_holds_everything():
    """Output held for many cycles with the pipeline full: nothing lost, duplicated or changed."""
    m, n_max, width = 8, 4, 16
    dut = NMSelector(m=m, n_max=n_max, width=width)
    groups = random_groups(m, width, 12, 5)
    out, hold = [], {}

    async def bench(ctx):
        ctx.set(dut.n, 2)
        ctx.set(dut.o.ready, 0)
        accepted = 0
        ctx.set(dut.i.valid, 1)
        for _ in range(30):                    # fill while the sink refuses
            ctx.set(dut.i.payload.as_value(), pack_group(groups[accepted], width))
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            accepted += ready
        ctx.set(dut.i.valid, 0)
        hold["accepted"] = accepted
        hold["payload"] = ctx.get(dut.o.payload.as_value())
        ctx.set(dut.o.ready, 1)
        while len(out) < accepted:
            _, _, valid, value = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            if valid:
                out.append(value)
        for _ in range(10):                    # nothing extra comes out
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            hold.setdefault("extra", 0)
            hold["extra"] += valid

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # A refused output stalls the whole rigid pipeline: exactly `latency` groups fit in it.
    assert hold["accepted"] == dut.latency
    assert out == expected_jobs([(2, groups[:dut.latency])], m, n_max, width)
    assert hold["payload"] == out[0]
    assert hold["extra"] == 0


# ------------------------------------------------------------------------------------------------
# cocotb: the emitted Verilog under Icarus and Verilator
# ------------------------------------------------------------------------------------------------

COCOTB_CONFIGS = [(8, 4, 16), (16, 8, 16), (4, 4, 8)]
COCOTB_IDS = [f"m{m}n{n}w{w}" for m, n, w in COCOTB_CONFIGS]


@pytest.mark.parametrize("m,n_max,width", COCOTB_CONFIGS, ids=COCOTB_IDS)
def test_nm_selector_cocotb(sim, cocotb_run, m, n_max, width):
    """Every N with adversarial groups, soak under three back-pressure patterns, throughput,
    runtime n changes, reset mid-stream: all cocotb tests of the module on one build."""
    seed = 3000 + 100 * m + n_max
    groups = int((10_000 if (m, n_max) == (8, 4) else 1_500) * soak_scale())
    print(f"seed={seed} soak_groups={groups} sim={sim}")
    n = cocotb_run("nm_selector", sim, "cocotb_nm_selector",
                   params={"seed": seed, "groups": groups, "m": m, "n_max": n_max,
                           "width": width, "latency": 5},
                   m=m, n_max=n_max, width=width)
    assert n == 6
