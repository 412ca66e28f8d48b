"""cocotb tests of the emitted ``skid`` (SkidBuffer, payload ``unsigned(width)``).

Scoreboard: the whole output list equals the whole input list, and nothing comes out after the
last beat. Every cycle the outputs are also checked against a reference model (the FIFO of
beats inside the slice): ``o__valid`` iff it holds a beat, ``o__payload`` the oldest one,
``i__ready`` iff the skid entry is empty, never more than two beats inside (the sink checks
``o__payload`` stable while not ready). Always valid + always ready: one beat per cycle, each
out exactly one cycle after it went in.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from sparseforge.sim.testkit.cocotb_streams import StreamSink, StreamSource, env_params, reset
from sparseforge.sim.testkit.patterns import make_pattern


def random_beats(rng, n, width):
    top = (1 << width) - 1
    return [0, top][:n] + [rng.randint(0, top) for _ in range(n - 2)]


async def init(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    await reset(dut)


class Model:
    """The beats inside the slice, updated from the ports at ReadOnly every cycle."""

    def __init__(self, dut):
        self.dut = dut
        self.held = []
        self.accept_cycles = []
        self.deliver_cycles = []

    def check(self, cycle):
        """Called at ReadOnly, after the drivers wrote this cycle's inputs: the ports just
        before the coming rising edge."""
        dut = self.dut
        ov, ir = int(dut.o__valid.value), int(dut.i__ready.value)
        n = len(self.held)
        assert ov == (n > 0), f"cycle {cycle}: o__valid={ov} with {n} beats inside"
        assert ir == (n - ov == 0), f"cycle {cycle}: i__ready={ir}, skid entry holds {n - ov}"
        if ov:
            op = int(dut.o__payload.value)
            assert op == self.held[0], f"cycle {cycle}: o__payload {op:#x} != {self.held[0]:#x}"
            if int(dut.o__ready.value):
                self.held.pop(0)
                self.deliver_cycles.append(cycle)
        if int(dut.i__valid.value) and ir:
            self.held.append(int(dut.i__payload.value))
            self.accept_cycles.append(cycle)
        assert len(self.held) <= 2, f"cycle {cycle}: {len(self.held)} beats inside"


async def run_checked(dut, source, sink, model, *, max_cycles, extra_cycles=8, cycles=None):
    """The run_streams clock loop with the model checked every cycle. Runs until the source is
    drained and the sink has its beats (plus ``extra_cycles``), or exactly ``cycles`` cycles."""
    cycle, tail = 0, None
    while True:
        await FallingEdge(dut.clk)
        source.drive()
        sink.drive()
        await ReadOnly()
        model.check(cycle)
        source.sample()
        sink.sample(cycle)
        cycle += 1
        if cycles is not None:
            if cycle == cycles:
                return cycle
            continue
        if tail is None and source.done and sink.done:
            tail = extra_cycles
        if tail is not None:
            if tail == 0:
                return cycle
            tail -= 1
        assert cycle < max_cycles, (f"timeout after {cycle} cycles: sent {source.sent}, "
                                    f"got {len(sink.beats)} of {sink.expected}")


def check_scoreboard(beats, got):
    assert len(got) == len(beats), f"{len(got)} beats out, {len(beats)} in"
    bad = [k for k, (a, b) in enumerate(zip(got, beats)) if a != b]
    assert not bad, f"{len(bad)} beats differ, first #{bad[0]}: {got[bad[0]]:#x} != {beats[bad[0]]:#x}"
    assert got == beats


@cocotb.test()
async def skid_scoreboard(dut):
    p = env_params()
    seed, n, width = p["seed"], p["beats"], p["width"]
    dut._log.info(f"seed={seed} beats={n} src={p['src']} sink={p['sink']} width={width}")
    beats = random_beats(random.Random(seed), n, width)
    await init(dut)
    assert (int(dut.i__ready.value), int(dut.o__valid.value)) == (1, 0), "not empty after reset"
    source = StreamSource(dut, "i", beats, make_pattern(p["src"], seed))
    sink = StreamSink(dut, "o", make_pattern(p["sink"], seed + 1), expected=n)
    model = Model(dut)
    cycles = await run_checked(dut, source, sink, model, max_cycles=30 * n + 100)
    check_scoreboard(beats, sink.beats)                 # also: nothing in the extra cycles
    assert model.held == [] and int(dut.i__ready.value) == 1
    if p["src"] == "always" and p["sink"] == "always":
        assert model.accept_cycles == list(range(n)), "input stalled at full rate"
        assert model.deliver_cycles == list(range(1, n + 1)), "not one beat per cycle, latency 1"
        assert sink.cycles_at_last == n
    dut._log.info(f"{n} beats in {cycles} cycles")


@cocotb.test()
async def skid_reset_mid_stream(dut):
    """Reset with both entries full; then the slice is empty and a fresh stream is exact."""
    p = env_params()
    seed, width = p["seed"], p["width"]
    rng = random.Random(seed)
    await init(dut)
    beats = random_beats(rng, 400, width)
    source = StreamSource(dut, "i", beats, make_pattern("random", seed))
    sink = StreamSink(dut, "o", make_pattern("random", seed + 1))
    model = Model(dut)
    await run_checked(dut, source, sink, model, max_cycles=0, cycles=200)
    got = sink.beats
    assert 0 < len(got) < len(beats) and got == beats[:len(got)], "prefix before reset"
    # Fill both entries: o__ready low, two more beats offered.
    await FallingEdge(dut.clk)
    dut.o__ready.value = 0
    dut.i__valid.value = 1
    await ClockCycles(dut.clk, 3, rising=False)
    assert (int(dut.o__valid.value), int(dut.i__ready.value)) == (1, 0), "not full"
    dut.rst.value = 1
    dut.i__valid.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    assert (int(dut.o__valid.value), int(dut.i__ready.value)) == (0, 1), "not empty after reset"
    # Nothing left over comes out.
    dut.o__ready.value = 1
    for _ in range(4):
        await FallingEdge(dut.clk)
        assert int(dut.o__valid.value) == 0, "a beat survived the reset"
    fresh = random_beats(rng, 300, width)
    source = StreamSource(dut, "i", fresh, make_pattern("bursty", seed + 2))
    sink = StreamSink(dut, "o", make_pattern("random", seed + 3), expected=len(fresh))
    await run_checked(dut, source, sink, Model(dut), max_cycles=30 * len(fresh) + 100)
    check_scoreboard(fresh, sink.beats)
