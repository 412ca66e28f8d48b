"""Strict framing of the ``s_axis`` packet stream (issue 19): the reference checker
``wire.frame_check`` on hand-written streams, and the PacketRouter (amaranth-sim) against it
under random idle gaps and random back-pressure on every destination (fixed, printed seeds),
for hand-picked cases and hypothesis-drawn mixes of good and corrupted packets."""

import random

import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparseforge.sim.testkit.layer_cases import SMALL_TOP_CFG
from sparseforge.hdl import wire
from sparseforge.hdl.router import PacketRouter, packet_port
from sparseforge.hdl.wire import (DEST_END, ERR_BAD_DEST, ERR_EARLY_TLAST,
                                  ERR_MISSING_TLAST, Frame, frame_check, header)
from sparseforge.sim.host.driver import PacketCodec
from sparseforge.sim.testkit.layers import random_array_layer

SMALL = SMALL_TOP_CFG
DESTS = wire.destinations(SMALL)
ID = {d.name: d.id for d in DESTS}
WPB = {d.id: d.words for d in DESTS}
BAD = 0xEE


def pk(dest, beats, *, words=None):
    """A well-framed packet: ``(word, tlast)`` pairs; ``beats`` as lists of words."""
    ident = ID[dest] if isinstance(dest, str) else dest
    n = len(beats) if words is None else words
    body = [w for b in beats for w in b]
    out = [(header(ident, n), 0)] + [(w, 0) for w in body]
    out[-1] = (out[-1][0], 1)
    return out


def beats_of(dest, n, seed=0):
    rng = random.Random(seed)
    d = DESTS[ID[dest]]
    return [[rng.getrandbits(32) if j < d.words - 1 or d.width % 32 == 0
             else rng.getrandbits(d.width % 32) for j in range(d.words)] for _ in range(n)]


def untlast(words):
    return [(w, 0) for w, _ in words]


# -- the reference checker on hand-written streams ----------------------------------------------

def test_frame_check_good_and_zero_word_packets():
    wpb = {0: 2, 1: 0, 2: 1}
    s = [(header(0, 2), 0), (10, 0), (11, 0), (12, 0), (13, 1),       # 2 beats of 2 words
         (header(1, 0), 1),                                           # END, tlast on the header
         (header(2, 0), 1),                                           # 0 beats, legal
         (header(1, 5), 1)]                                           # END ignores its count
    assert frame_check(s, wpb) == [Frame(0, 0, 2, (11 << 32 | 10, 13 << 32 | 12), 0, 5),
                                   Frame(5, 1, 0, (), 0, 6), Frame(6, 2, 0, (), 0, 7),
                                   Frame(7, 1, 5, (), 0, 8)]
    assert all(f.executed for f in frame_check(s, wpb))


def test_frame_check_errors():
    wpb = {0: 2, 1: 0, 2: 1}
    # END without tlast: not executed; the next packet up to its tlast is discarded
    s = [(header(1, 0), 0), (header(2, 1), 0), (7, 1), (header(2, 1), 0), (8, 1)]
    assert frame_check(s, wpb) == [Frame(0, 1, 0, (), ERR_MISSING_TLAST, 3),
                                   Frame(3, 2, 1, (8,), 0, 5)]
    # the extra word after a control packet (an END header) is discarded, CTRL not delivered
    s = [(header(0, 1), 0), (1, 0), (2, 0), (header(1, 0), 1), (header(1, 0), 1)]
    assert frame_check(s, wpb) == [Frame(0, 0, 1, (), ERR_MISSING_TLAST, 4),
                                   Frame(4, 1, 0, (), 0, 5)]
    # early tlast: on the header of a packet with payload; inside a beat; between beats
    s = [(header(2, 1), 1), (header(0, 2), 0), (1, 0), (2, 1), (header(0, 2), 0), (1, 0),
         (2, 0), (3, 1), (header(2, 1), 0), (9, 1)]
    assert frame_check(s, wpb) == [Frame(0, 2, 1, (), ERR_EARLY_TLAST, 1),
                                   Frame(1, 0, 2, (), ERR_EARLY_TLAST, 4),
                                   Frame(4, 0, 2, (2 << 32 | 1,), ERR_EARLY_TLAST, 8),
                                   Frame(8, 2, 1, (9,), 0, 10)]
    # a short packet without tlast followed by a good one: the good one's words complete the
    # short one's count (delivered as its beats), its header is never parsed as a header
    s = [(header(2, 3), 0), (5, 0), (header(0, 1), 0), (6, 0), (7, 1), (header(2, 1), 0),
         (9, 1)]
    assert frame_check(s, wpb) == [Frame(0, 2, 3, (5, header(0, 1)), ERR_MISSING_TLAST, 5),
                                   Frame(5, 2, 1, (9,), 0, 7)]
    # unknown destination, with and without tlast; a stream that stops mid-discard or mid-packet
    s = [(header(9, 3), 1), (header(9, 3), 0), (header(1, 0), 0), (1, 1), (header(2, 2), 0),
         (4, 0)]
    assert frame_check(s, wpb) == [Frame(0, 9, 3, (), ERR_BAD_DEST, 1),
                                   Frame(1, 9, 3, (), ERR_BAD_DEST, 4),
                                   Frame(4, 2, 2, (4,), -1, 6)]
    assert frame_check([(header(1, 0), 0), (3, 0)], wpb) == [
        Frame(0, 1, 0, (), ERR_MISSING_TLAST, 2)]
    # destinations() as the table
    assert frame_check(pk("ctrl", beats_of("ctrl", 1)), DESTS)[0].error == 0


def as_frame(packet):
    """A host packet as ``Driver.send`` puts it on ``s_axis``: one frame, tlast on its last
    word (cocotbext-axi's ``AxiStreamSource.send`` of the packet's bytes)."""
    return [(w, int(k == len(packet) - 1)) for k, w in enumerate(packet)]


def test_driver_packets_are_well_framed():
    """Every packet the host driver builds (CTRL, END, array jobs of each phase, scrub, schedule,
    step, a zero-beat packet), sent one frame per packet, is a well-framed packet for
    frame_check: executed, its count of beats delivered, nothing discarded."""
    codec = PacketCodec(SMALL)
    packets = [codec.ctrl_packet(), codec.end_packet(), codec.packet("x_r0", []),
               codec.step_packet(3), codec.sched_packet(bytes(range(16)))]
    packets += codec.scrub_packets()[0]
    for k, (mode, nm) in enumerate([("fp", (2, 4)), ("bp", None), ("wg", None)]):
        job, _ = random_array_layer(mode, cfg=SMALL, nm=nm, seed=900 + k, cin=4, cout=4,
                                    height=5, width=5)
        packets += codec.array_job_packets(job)
    words = [w for p in packets for w in as_frame(p)]
    frames = frame_check(words, DESTS)
    assert len(frames) == len(packets)
    for f, p in zip(frames, packets):
        assert f.executed and f.end - f.start == len(p), (f, p[:2])
        if f.dest != DEST_END:
            assert len(f.beats) == f.count, f


# -- the router against the reference -------------------------------------------------------------

def run_router(words, seed, *, p_idle=0.3, p_stall=0.4, max_cycles=None, make=PacketRouter):
    """Drive ``words`` into ``make(SMALL)`` (the PacketRouter, or whatever replaces it with the
    same ports: ``i``, the destination streams, ``err``/``err_code``/``end``/``busy``/``held``)
    with random idle cycles and random ready on every destination; returns (delivered beats
    per id, error codes, END pulses, begin pulses, busy at the end)."""
    rng = random.Random(seed)
    dut = make(SMALL)
    ports = [(d.id, packet_port(dut, d)) for d in DESTS if d.width]
    got = {i: [] for i, _ in ports}
    errs, ends, begins = [], [], []
    state = {"busy": None}
    limit = max_cycles or 8 * len(words) + 200

    def pv(p):
        return p.payload.as_value() if hasattr(p.payload, "as_value") else p.payload

    async def bench(ctx):
        k, quiet = 0, 0
        for _ in range(limit):
            offer = k < len(words) and rng.random() >= p_idle
            ctx.set(dut.i.valid, offer)
            if offer:
                ctx.set(dut.i.payload, {"data": words[k][0], "last": words[k][1]})
            done = k >= len(words)
            for _, p in ports:
                ctx.set(p.ready, 1 if done and quiet > 10 else rng.random() >= p_stall)
            sig = [dut.i.ready, dut.err, dut.err_code, dut.end, dut.wbuf_begin, dut.sched_begin,
                   dut.busy, dut.held]
            for _, p in ports:
                sig += [p.valid, p.ready, pv(p)]
            _, _, *v = await ctx.tick().sample(*sig)
            rdy, err, code, end, wb, sb, busy, held = v[:8]
            if offer and rdy:
                k += 1
            if err:
                errs.append(int(code))
            if end:
                ends.append(1)
            if wb or sb:
                begins.append("wbuf" if wb else "sched")
            for n, (i, _) in enumerate(ports):
                valid, ready, payload = v[8 + 3 * n: 11 + 3 * n]
                if valid and ready:
                    got[i].append(int(payload))
            if done:
                quiet += 1
                if quiet > 30 and not held:
                    state["busy"] = int(busy)
                    return
        raise AssertionError(f"the router did not take the whole stream in {limit} cycles "
                             f"({k} of {len(words)} words)")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, errs, ends, begins, state["busy"]


def expect(words):
    frames = frame_check(words, DESTS)
    want = {d.id: [] for d in DESTS if d.width}
    for f in frames:
        if f.dest in want:
            want[f.dest] += list(f.beats)
    errs = [f.error for f in frames if f.error > 0]
    ends = sum(1 for f in frames if f.dest == DEST_END and f.executed)
    return frames, want, errs, ends


def check(words, seed, **kw):
    """Run the router on ``words`` and compare with :func:`wire.frame_check`: the beats
    delivered to each destination, the error codes in order, the END pulses; a stream ending
    with ``tlast`` leaves the router waiting for a header."""
    frames, want, errs, ends = expect(words)
    got, gerrs, gends, begins, busy = run_router(words, seed, **kw)
    assert gerrs == errs, (gerrs, errs, frames)
    assert len(gends) == ends, (gends, ends, frames)
    for i in want:
        assert got[i] == want[i], (DESTS[i].name, got[i], want[i], frames)
    if words and words[-1][1]:            # a tlast ends every packet and every discard
        assert busy == 0, "the router is not waiting for a header after the stream"
    return frames, gerrs, gends


SEEDS = [11, 12]


@pytest.mark.parametrize("seed", SEEDS)
def test_router_good_packets(seed):
    print(f"seed={seed}")
    words = []
    for n, dest in enumerate(["ctrl", "x_r0", "taps_r0_c1", "dense_r0_c0", "drain_c1", "prune",
                              "pregen", "wbuf", "pgctl", "sched", "step", "x_r0"]):
        words += pk(dest, beats_of(dest, 1 + n % 3, seed + n))
    words += pk("end", [])
    frames, errs, ends = check(words, seed)
    assert not errs and len(ends) == 1 and all(f.executed for f in frames)


@pytest.mark.parametrize("seed", SEEDS)
def test_router_zero_word_packets(seed):
    """Zero beats (or END): legal with tlast on the header; without it ERR_MISSING_TLAST, no
    END, and the words up to the next tlast are discarded."""
    print(f"seed={seed}")
    x = pk("x_r0", beats_of("x_r0", 2, seed))
    words = [(header(ID["x_r0"], 0), 1), (header(DEST_END, 0), 1)] + x
    words += [(header(ID["sched"], 0), 0)] + x + x                  # illegal: eats the first x
    words += [(header(DEST_END, 0), 0)] + pk("end", []) + x          # eats the END packet
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_MISSING_TLAST] * 2 and len(ends) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_router_early_tlast(seed):
    print(f"seed={seed}")
    c = pk("ctrl", beats_of("ctrl", 1, seed))
    t = pk("taps_r0_c0", beats_of("taps_r0_c0", 3, seed))
    words = [(c[0][0], 1)] + c                                       # tlast on the header
    words += c[:3][:-1] + [(c[2][0], 1)] + c                         # inside the beat
    words += t[:1 + 2 * DESTS[ID["taps_r0_c0"]].words]                # after beat 2 of 3
    words[-1] = (words[-1][0], 1)
    words += t
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_EARLY_TLAST] * 3
    assert sum(f.executed for f in frames) == 3


@pytest.mark.parametrize("seed", SEEDS)
def test_router_missing_tlast(seed):
    """A packet without tlast followed by another packet: the second is not parsed as a header,
    the first's missing tlast is reported; the stream recovers after the next tlast."""
    print(f"seed={seed}")
    x = pk("x_r0", beats_of("x_r0", 2, seed))
    s = pk("step", [[3]])
    words = untlast(x) + s + x                                       # right length, no tlast
    words += untlast(pk("x_r0", beats_of("x_r0", 3, seed))[:3]) + s + x   # short, no tlast
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_MISSING_TLAST] * 2
    assert [f.dest for f in frames if f.executed] == [ID["x_r0"]] * 2   # no step ever ran


@pytest.mark.parametrize("seed", SEEDS)
def test_router_extra_word_after_ctrl_is_no_end(seed):
    """The word after a CTRL packet's last one (an END header) inside the same frame: the CTRL
    packet misses its tlast, the END is discarded (never taken: STATUS.done cannot rise)."""
    print(f"seed={seed}")
    c = pk("ctrl", beats_of("ctrl", 1, seed))
    words = untlast(c) + [(header(DEST_END, 0), 1)]
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_MISSING_TLAST] and not ends
    # ... and a following job's CTRL + END are exact
    words += c + pk("end", [])
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_MISSING_TLAST] and len(ends) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_router_unknown_destination(seed):
    print(f"seed={seed}")
    x = pk("x_r0", beats_of("x_r0", 1, seed))
    words = [(header(BAD, 2), 1)] + x + [(header(BAD, 2), 0), (header(DEST_END, 0), 0),
                                          (header(DEST_END, 0), 1)] + x + pk("end", [])
    frames, errs, ends = check(words, seed)
    assert errs == [ERR_BAD_DEST] * 2 and len(ends) == 1


def test_router_begin_pulses_only_for_framed_headers():
    w = beats_of("wbuf", 1, 3)
    words = pk("wbuf", w) + [(header(ID["wbuf"], 1), 1)] + pk("sched", [[5]]) + \
        [(header(ID["sched"], 0), 0), (0, 1)]
    _, errs, _, begins, _ = run_router(words, 5)
    assert begins == ["wbuf", "sched"] and errs == [ERR_EARLY_TLAST, ERR_MISSING_TLAST]


# -- property: random mixes of good and corrupted packets ------------------------------------------

NAMES = [d.name for d in DESTS]


@st.composite
def streams(draw):
    words = []
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["good", "good", "bad_dest", "early", "missing", "extra",
                                     "zero", "zero_no_tlast"]))
        dest = draw(st.sampled_from(NAMES))
        n = 0 if dest == "end" else draw(st.integers(1, 3))
        p = pk(dest, beats_of(dest, n, draw(st.integers(0, 99))))
        if kind == "bad_dest":
            p = [(header(draw(st.integers(len(DESTS), 255)), n), int(len(p) == 1))] + p[1:]
        elif kind == "early" and len(p) > 1:
            cut = draw(st.integers(1, len(p) - 1))
            p = p[:cut - 1] + [(p[cut - 1][0], 1)]
        elif kind == "missing":
            p = untlast(p)
        elif kind == "extra":
            p = untlast(p) + [(draw(st.sampled_from([header(DEST_END, 0), header(ID["ctrl"], 1),
                                                     0])), 1)]
        elif kind == "zero":
            p = [(header(ID[dest], 0), 1)]
        elif kind == "zero_no_tlast":
            p = [(header(ID[dest], 0), 0)]
        words += p
    words += pk("end", [])                    # the stream ends with a tlast
    return words


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(), st.integers(0, 1 << 16))
def test_router_random_streams_match_the_reference(words, seed):
    """Executed packets (beats per destination), error codes and END pulses equal
    wire.frame_check's for random mixes of good and corrupted packets."""
    print(f"seed={seed} words={len(words)}")
    frames, errs, _ = check(words, seed)
    for code in sorted(set(errs)):
        event(f"error {code}")
