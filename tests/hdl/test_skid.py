"""SkidBuffer: amaranth-sim unit tests and cocotb tests (Icarus, Verilator) of the emitted ``skid``.

Every run is checked three ways:

* scoreboard: the whole output list equals the whole input list (nothing lost, duplicated or
  reordered), and no beat comes out after the last one;
* a cycle-accurate reference model (a FIFO of the beats inside the slice), checked at every
  clock edge: ``o.valid`` iff the slice holds a beat, ``o.payload`` is the oldest one,
  ``i.ready`` iff the skid entry is empty (at most one beat held), at most two beats held,
  ``o.payload`` stable while ``o.valid & ~o.ready``;
* registered outputs: between edges, changing ``o.ready``, ``i.valid`` or ``i.payload``
  (``ctx.set``, then ``ctx.get`` with no clock edge) changes none of ``i.ready``, ``o.valid``,
  ``o.payload``.

Seeds are fixed and printed; hypothesis runs derandomized.
"""

from __future__ import annotations

import itertools
import random

import pytest
from amaranth.hdl import Fragment, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseforge.gen.blocks import BLOCKS, build_block
from sparseforge.gen.config import preset
from sparseforge.hdl.skid import SkidBuffer
from sparseforge.sim.testkit.amaranth_streams import run_sim, stream_sink, stream_source
from sparseforge.sim.testkit.patterns import make_pattern

from sparseforge.sim.testkit.patterns import soak_scale

CFG = preset("tiny")
WIDTH = 24                     # the cocotb block's payload width (the "skid" block's default)
SHAPES = {
    "u24": unsigned(24),
    "u1": unsigned(1),
    "struct": data.StructLayout({"value": signed(12), "col": unsigned(5), "last": 1}),
}
PATTERN_PAIRS = [("random", "random"), ("bursty", "random"), ("random", "bursty"),
                 ("cycle", "random"), ("always", "random"), ("random", "always"),
                 ("bursty", "bursty")]
HYP = settings(max_examples=30, deadline=None, derandomize=True)


def _bits(v):
    """The packed integer behind a payload (a plain signal or a data.View)."""
    return v.as_value() if hasattr(v, "as_value") else v


def random_beats(seed, n, width):
    rng = random.Random(seed)
    top = (1 << width) - 1
    return [0, top][:n] + [rng.randint(0, top) for _ in range(n - 2)]


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------

def run_skid(dut, beats, src, sink, *, probe_seed=0, tail=6, max_cycles=None):
    """Stream ``beats`` (packed ints) through ``dut`` under the ``src`` / ``sink`` pattern
    iterators, checking the reference model and the registered outputs every cycle.

    Returns ``(out, accepted, delivered, cycles)``: the output beats, and the clock edges
    (numbered from 0) at which each beat was accepted / delivered.
    """
    width = len(_bits(dut.o.payload))
    mask = (1 << width) - 1
    max_cycles = max_cycles or 30 * len(beats) + 100
    out: list[int] = []
    accepted: list[int] = []
    delivered: list[int] = []
    state = {"edges": 0}
    ipay, opay = _bits(dut.i.payload), _bits(dut.o.payload)
    probe = random.Random(probe_seed)

    async def source(ctx):
        await stream_source(ctx, dut.i, beats, src)

    async def sink_tb(ctx):
        await stream_sink(ctx, dut.o, len(beats), sink, out)
        # Nothing more comes out (no duplicated beat), and the slice is empty again.
        ctx.set(dut.o.ready, 1)
        for _ in range(tail):
            await ctx.tick()
            assert ctx.get(dut.o.valid) == 0, "a beat came out after the last one"
        assert ctx.get(dut.i.ready) == 1, "slice not empty after the stream"

    def probe_registered(ctx):
        """Between edges: the outputs do not depend combinationally on any input."""
        saved = [(s, ctx.get(s)) for s in (dut.o.ready, dut.i.valid, ipay)]
        want = (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(opay))
        for o_ready, i_valid in itertools.product((0, 1), repeat=2):
            ctx.set(dut.o.ready, o_ready)
            ctx.set(dut.i.valid, i_valid)
            ctx.set(ipay, probe.randint(0, mask))
            got = (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(opay))
            assert got == want, (f"edge {state['edges']}: o.ready={o_ready} i.valid={i_valid} "
                                 f"changed (i.ready, o.valid, o.payload) {want} -> {got} "
                                 f"without a clock edge")
        for s, v in saved:
            ctx.set(s, v)

    async def monitor(ctx):
        held = []                                    # the reference model: beats inside
        stalled = None                               # o.payload offered, not taken last edge
        assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == (1, 0), "not empty at reset"
        probe_registered(ctx)
        async for _, _, iv, ir, ip, ov, o_r, op in ctx.tick().sample(
                dut.i.valid, dut.i.ready, ipay, dut.o.valid, dut.o.ready, opay):
            e = state["edges"]
            # Values just before edge e, against the model.
            assert ov == (len(held) > 0), f"edge {e}: o.valid={ov} with {len(held)} beats held"
            assert ir == (len(held) - ov == 0), \
                f"edge {e}: i.ready={ir} but the skid entry holds {len(held) - ov} beat(s)"
            if ov:
                assert op == held[0], f"edge {e}: o.payload {op:#x} != oldest beat {held[0]:#x}"
            if stalled is not None:
                assert ov and op == stalled, \
                    f"edge {e}: stalled beat {stalled:#x} changed to valid={ov} {op:#x}"
            if ov and o_r:
                held.pop(0)
                delivered.append(e)
            if iv and ir:
                held.append(ip)
                accepted.append(e)
            assert len(held) <= 2, f"edge {e}: {len(held)} beats inside a 2-entry slice"
            stalled = op if ov and not o_r else None
            state["edges"] += 1
            assert state["edges"] < max_cycles, \
                f"timeout: {len(out)} of {len(beats)} beats after {max_cycles} cycles"
            probe_registered(ctx)                    # just after edge e, before edge e + 1

    run_sim(dut, sink_tb, background=[source, monitor])
    return out, accepted, delivered, state["edges"]


def check_scoreboard(beats, out, accepted, delivered):
    assert len(out) == len(beats), f"{len(out)} beats out, {len(beats)} in"
    bad = [k for k, (a, b) in enumerate(zip(out, beats)) if a != b]
    assert not bad, f"{len(bad)} beats differ, first #{bad[0]}: {out[bad[0]]:#x} != {beats[bad[0]]:#x}"
    assert out == beats
    assert len(accepted) == len(delivered) == len(beats)
    # Latency: a beat leaves no earlier than one edge after it was accepted.
    assert all(d >= a + 1 for a, d in zip(accepted, delivered))


# --------------------------------------------------------------------------------------------
# amaranth sim
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [False, True], ids=["ring", "shift"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("src,sink", PATTERN_PAIRS)
@pytest.mark.parametrize("seed", [1, 2])
def test_skid_random_patterns(seed, src, sink, shape, shift):
    """Random idle / back-pressure: exact scoreboard, the model and the registered outputs
    checked at every edge (both styles: the same handshake cycle for cycle)."""
    seed = 100 * seed + 10 * PATTERN_PAIRS.index((src, sink)) + list(SHAPES).index(shape)
    print(f"seed={seed} src={src} sink={sink} shape={shape} shift={shift}")
    dut = SkidBuffer(SHAPES[shape], shift=shift)
    width = len(_bits(dut.i.payload))
    beats = random_beats(seed, 300, width)
    out, acc, dlv, cycles = run_skid(dut, beats, make_pattern(src, seed), make_pattern(sink, seed + 1),
                                     probe_seed=seed)
    check_scoreboard(beats, out, acc, dlv)
    print(f"{len(beats)} beats in {cycles} cycles")


@pytest.mark.parametrize("shift", [False, True], ids=["ring", "shift"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_skid_full_throughput_latency_1(shape, shift):
    """Always valid, always ready: one beat per edge from edge 0, each delivered exactly one
    edge after it was accepted, i.ready never drops."""
    seed = 7 + list(SHAPES).index(shape)
    print(f"seed={seed} shape={shape} shift={shift}")
    dut = SkidBuffer(SHAPES[shape], shift=shift)
    n = 200
    beats = random_beats(seed, n, len(_bits(dut.i.payload)))
    out, acc, dlv, _ = run_skid(dut, beats, make_pattern("always"), make_pattern("always"),
                                probe_seed=seed)
    check_scoreboard(beats, out, acc, dlv)
    assert acc == list(range(n)), f"accept edges {acc[:8]}... (a stall on the input)"
    assert dlv == [a + 1 for a in acc], f"deliver edges {dlv[:8]}... != accept edges + 1"


def test_skid_full_throughput_after_stalls():
    """Always valid, ready random: from the first delivery to the last, every edge with
    o.ready high delivers a beat (the skid entry covers the cycle in which i.ready is low, so
    the consumer is never starved)."""
    seed = 31
    print(f"seed={seed}")
    dut = SkidBuffer(unsigned(16))
    n = 300
    sink_bits = [bool(b) for b in itertools.islice(make_pattern("random", seed), 4 * n)]
    beats = random_beats(seed, n, 16)
    out, acc, dlv, cycles = run_skid(dut, beats, make_pattern("always"), iter(sink_bits + [True] * 50),
                                     probe_seed=seed)
    check_scoreboard(beats, out, acc, dlv)
    # The slice never starves the consumer: from the first delivery to the last, every edge
    # with ready high delivers a beat.
    ready_edges = [e for e in range(dlv[0], dlv[-1] + 1) if (sink_bits + [True] * 50)[e]]
    assert dlv == ready_edges, "an edge with o.ready high delivered nothing"


@HYP
@given(values=st.lists(st.integers(0, (1 << 8) - 1), min_size=1, max_size=40),
       src=st.lists(st.booleans(), min_size=1, max_size=24),
       sink=st.lists(st.booleans(), min_size=1, max_size=24))
def test_skid_hypothesis_patterns(values, src, sink):
    """Any payload sequence under any (periodic) idle / back-pressure pattern comes out whole,
    with the model and the registered outputs holding at every edge."""
    dut = SkidBuffer(unsigned(8))
    out, acc, dlv, _ = run_skid(dut, values, itertools.cycle(src + [True]),
                                itertools.cycle(sink + [True]), tail=3)
    check_scoreboard(values, out, acc, dlv)


def test_skid_ports_and_shape():
    shape = SHAPES["struct"]
    dut = SkidBuffer(shape)
    Fragment.get(dut, None)
    assert dut.shape is shape
    assert dut.signature.members["i"] == In(stream.Signature(shape))
    assert dut.signature.members["o"] == Out(stream.Signature(shape))
    assert len(dut.i.payload.as_value()) == len(dut.o.payload.as_value()) == 18


# --------------------------------------------------------------------------------------------
# The "skid" block (generator registry, Verilog emission)
# --------------------------------------------------------------------------------------------

def test_skid_block_registered(tmp_path):
    from sparseforge.cli import main
    assert "skid" in BLOCKS
    dut, used = build_block("skid", CFG)
    Fragment.get(dut, None)
    assert used == {"width": WIDTH} and len(dut.i.payload) == WIDTH
    dut, used = build_block("skid", CFG, width=5)
    Fragment.get(dut, None)
    assert used == {"width": 5} and len(dut.o.payload) == 5
    with pytest.raises(TypeError, match="unexpected parameter"):
        build_block("skid", CFG, depth=3)
    assert main(["verilog", "skid", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    text = (tmp_path / "tiny" / "skid.v").read_text()
    assert text.splitlines()[2] == '// params: {"width": 24}'
    assert "module skid(" in text and "input [23:0] i__payload;" in text


# --------------------------------------------------------------------------------------------
# cocotb (emitted Verilog, Icarus and Verilator)
# --------------------------------------------------------------------------------------------

COCOTB_CASES = [("random", "random"), ("bursty", "random"), ("random", "bursty"),
                ("cycle", "cycle"), ("always", "always")]


@pytest.mark.parametrize("src,sink", COCOTB_CASES)
def test_skid_cocotb(sim, cocotb_run, src, sink):
    seed = 5000 + COCOTB_CASES.index((src, sink))
    beats = int(2000 * soak_scale())
    print(f"seed={seed} src={src} sink={sink} beats={beats} sim={sim}")
    n = cocotb_run("skid", sim, "cocotb_skid", testcase="skid_scoreboard",
                   params={"seed": seed, "beats": beats, "src": src, "sink": sink,
                           "width": WIDTH},
                   width=WIDTH)
    assert n == 1


def test_skid_cocotb_reset(sim, cocotb_run):
    seed = 5100
    print(f"seed={seed} sim={sim}")
    n = cocotb_run("skid", sim, "cocotb_skid", testcase="skid_reset_mid_stream",
                   params={"seed": seed, "width": WIDTH}, width=WIDTH)
    assert n == 1
