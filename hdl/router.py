"""Packet router (*ours*): the accelerator's ``s_axis`` word stream into its destinations.

A packet is a header word ``dest[31:24] | beats[23:0]`` followed by ``beats`` target beats,
each sent as ``ceil(width / 32)`` little-endian 32-bit words (bit 0 of the beat in bit 0 of the
first word). The destinations, their ids and payload layouts are
:func:`sparseforge.hdl.wire.destinations` of the configuration (the table the host driver
uses too).

Parameters
----------
cfg : AcceleratorConfig
    Gives the destination table (PE array shape, payload layouts).

Ports
-----
i : In(stream.Signature(axis_word_layout()))
    The ``s_axis`` words (``data``, ``last`` = tlast). ``i.ready`` is a function of the
    router's state only (low in the PRESENT cycle of every beat), never of a target's ready.
x[i], taps[i][j], dense[i][j], drain[j], prune, pregen : Out(stream)
    Registered destinations (the PE array's inputs, the pruner's gradients, the
    pre-generation's host-sent groups): each leaves through an output register of its own
    (*ours*, for Fmax): a target sees a valid and a payload straight from its register (no
    shared, far-reaching register, no destination decode), and the router hands a beat over
    when that register is empty (so no target ready reaches the router). Beats to one
    destination keep their order; a beat waiting for its target does not hold up the next
    packet to another one.
ctrl, pgctl, wbuf, sched, step : Out(stream)
    Direct destinations: ``valid`` in the beat's PRESENT cycle, the payload straight from the
    word buffer; the router waits for ``ready``.
pregen_hold : In(1)
    Holds the ``pregen`` output register empty (an on-chip pre-generation run drives the
    pre-generation's input itself).
end : Out(1)
    Pulse: an END header (``DEST_END``) carrying ``tlast`` was taken.
wbuf_begin : Out(1)
    Pulse: a well-framed ``wbuf`` header was taken (the weight buffer is written from
    address 0).
sched_begin : Out(1), sched_len : Out(24)
    Pulse with the beat count: a well-framed ``sched`` header was taken (a schedule load
    begins). (Well-framed: ``tlast`` on the header exactly when the packet has no payload.)
err : Out(1), err_code : Out(8)
    Pulse with an ``ERR_*`` code of :mod:`sparseforge.hdl.wire` when the stream breaks its
    framing rules (strict: ``tlast`` exactly on each packet's last word, the header itself for
    a zero-word packet; :func:`~sparseforge.hdl.wire.frame_check` is the reference the tests
    compare with): ``ERR_BAD_DEST`` (unknown destination; words up to and including the next
    ``tlast`` are discarded unless the header carries it), ``ERR_EARLY_TLAST`` (``tlast``
    before the packet's last word: the packet ends there; the beat that word belongs to is
    not presented, even when the word completes it), ``ERR_MISSING_TLAST`` (no ``tlast`` on the last word: the last beat is not
    presented, an END is not taken, and the words up to and including the next ``tlast`` are
    discarded, never parsed as a header). Beats presented before an error stay delivered. A
    malformed stream never hangs the router.
busy : Out(1)
    In a packet (not waiting for a header).
held : Out(1)
    An output register holds a beat.

Latency / throughput: one 32-bit word per cycle; a target beat of ``w`` bits costs
``ceil(w / 32) + 1`` cycles (the PRESENT cycle holds ``i.ready`` low, which keeps the targets'
ready off the next-state logic) plus one header per packet. A registered destination sees the
beat one cycle after PRESENT (one cycle of latency, no rate: the router spends >= 2 cycles per
beat).
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.wire import (DEST_END, ERR_BAD_DEST, ERR_EARLY_TLAST, ERR_MISSING_TLAST,
                                  HEADER_COUNT_BITS, axis_word_layout, destinations)

__all__ = ["PacketRouter", "REGISTERED_KINDS", "packet_ports", "packet_port"]

#: Destination kinds that leave through an output register (the others are direct).
REGISTERED_KINDS = ("x", "taps", "dense", "drain", "prune", "pregen")


def packet_ports(table, flow):
    """One stream member per kind of ``table`` (``wire.Packet`` s), an array over the
    kind's indices; kinds without a payload (``end``) get none."""
    members = {}
    for d in table:
        if d.width == 0 or d.kind in members:
            continue
        idx = [e.index for e in table if e.kind == d.kind]
        dims = [max(ix[k] for ix in idx) + 1 for k in range(len(d.index))]
        member = flow(stream.Signature(d.shape))
        members[d.kind] = member.array(*dims) if dims else member
    return members


def packet_port(component, d):
    """The stream of table entry ``d`` (``wire.Packet``) among ``component``'s members."""
    port = getattr(component, d.kind)
    for k in d.index:
        port = port[k]
    return port


class PacketRouter(wiring.Component):
    __doc__ = __doc__

    def __init__(self, cfg):
        self._dests = destinations(cfg)
        members = {"i": In(stream.Signature(axis_word_layout()))}
        members.update(packet_ports(self._dests, Out))
        members.update({
            "pregen_hold": In(1),
            "end": Out(1), "wbuf_begin": Out(1),
            "sched_begin": Out(1), "sched_len": Out(HEADER_COUNT_BITS),
            "err": Out(1), "err_code": Out(8),
            "busy": Out(1), "held": Out(1),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        dests = self._dests
        dest_id = {d.name: d.id for d in dests}
        max_words = max(d.words for d in dests)
        word, last = self.i.payload.data, self.i.payload.last
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        hdr_id, hdr_count = word[HEADER_COUNT_BITS:], word[:HEADER_COUNT_BITS]

        # init 0xFF, not 0: the first header (usually CTRL, id 0) must *change* hdr_dest, or
        # Icarus never evaluates the combinational blocks decoding it (a declaration's initial
        # value raises no event there; found by the Icarus run of tests/test_accelerator.py)
        hdr_dest = Signal(8, init=0xFF)
        beats_left = Signal(HEADER_COUNT_BITS)
        widx = Signal(range(max_words + 1))
        buf = Signal(32 * max_words)
        known = Signal()
        # the packet's words per beat, registered with the header (for Fmax: decoding it from
        # hdr_dest in the LOAD state's word count compare was on the ECP5 critical path)
        nwords = Signal(range(max_words + 1))
        nwords_in = Signal(range(max_words + 1))
        with m.Switch(hdr_id):
            for d in dests:
                with m.Case(d.id):
                    m.d.comb += [known.eq(1), nwords_in.eq(d.words)]

        # output registers of the registered destinations (see the module docstring)
        regd = [d for d in dests if d.kind in REGISTERED_KINDS]
        pv = {d.id: Signal(name=f"{d.name}_ov") for d in regd}
        pb = {d.id: Signal(d.width, name=f"{d.name}_ob") for d in regd}
        for d in regd:
            port = packet_port(self, d)
            m.d.comb += [port.valid.eq(pv[d.id]), port.payload.eq(pb[d.id])]
            with m.If(pv[d.id] & port.ready):
                m.d.sync += pv[d.id].eq(0)
        m.d.comb += self.held.eq(Cat(*pv.values()).any())
        for d in dests:                  # direct destinations: the payload from the buffer
            if d.kind not in REGISTERED_KINDS and d.width:
                m.d.comb += packet_port(self, d).payload.eq(buf[:d.width])

        present = Signal()               # in the PRESENT cycle of a beat
        present_ready = Signal()
        with m.Switch(hdr_dest):
            for d in dests:
                with m.Case(d.id):
                    if d.width == 0:                     # END: always ready
                        m.d.comb += present_ready.eq(1)
                    elif d.kind in REGISTERED_KINDS:
                        free = ~pv[d.id]
                        if d.kind == "pregen":           # not during an on-chip run
                            free = free & ~self.pregen_hold
                        m.d.comb += present_ready.eq(free)
                        with m.If(present & free):
                            m.d.sync += [pv[d.id].eq(1), pb[d.id].eq(buf[:d.width])]
                    else:
                        port = packet_port(self, d)
                        m.d.comb += [port.valid.eq(present), present_ready.eq(port.ready)]

        # strict framing (wire.py's rules): tlast exactly on a packet's last word -- the header
        # of a zero-word packet (no beats, or END), else the last word of the last beat
        # (a compare with the ids of the payload-less destinations -- END --, not nwords_in:
        # that would put the full destination decode in front of the error and END logic)
        zero = Signal()                  # the header taken in IDLE opens a zero-word packet
        m.d.comb += zero.eq((hdr_count == 0) |
                            Cat(hdr_id == d.id for d in dests if d.words == 0).any())
        framed = Signal()                # ... and carries tlast exactly when it should
        m.d.comb += framed.eq(known & (last == zero))
        beat_done = Signal()             # LOAD: the word taken completes a beat
        final = Signal()                 # LOAD: ... and is the packet's last word
        m.d.comb += [beat_done.eq(widx + 1 == nwords), final.eq(beat_done & (beats_left == 1))]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(take):
                    m.d.sync += [hdr_dest.eq(hdr_id), beats_left.eq(hdr_count), widx.eq(0),
                                 nwords.eq(nwords_in)]
                    m.d.comb += [self.wbuf_begin.eq(framed & (hdr_id == dest_id["wbuf"])),
                                 self.sched_begin.eq(framed & (hdr_id == dest_id["sched"])),
                                 self.sched_len.eq(hdr_count)]
                    with m.If(~known):
                        m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_BAD_DEST)]
                        with m.If(~last):
                            m.next = "DISCARD"
                    with m.Elif(zero):
                        with m.If(~last):            # missing tlast: never an END, discard
                            m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_MISSING_TLAST)]
                            m.next = "DISCARD"
                        with m.Elif(hdr_id == DEST_END):
                            m.d.comb += self.end.eq(1)
                    with m.Elif(last):               # a packet with payload ends at its header
                        m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_EARLY_TLAST)]
                    with m.Else():
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), self.busy.eq(1)]
                with m.If(take):
                    with m.Switch(widx):
                        for k in range(max_words):
                            with m.Case(k):
                                m.d.sync += buf[32 * k:32 * (k + 1)].eq(word)
                    with m.If(beat_done):
                        m.d.sync += widx.eq(0)
                    with m.Else():
                        m.d.sync += widx.eq(widx + 1)
                    with m.If(final & ~last):        # missing / late tlast: the beat is not
                        m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_MISSING_TLAST)]
                        m.next = "DISCARD"           # presented; discard to the next tlast
                    with m.Elif(~final & last):      # early tlast: a beat not presented
                        m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_EARLY_TLAST)]
                        m.next = "IDLE"
                    with m.Elif(beat_done):
                        m.next = "PRESENT"
            with m.State("PRESENT"):
                m.d.comb += [present.eq(1), self.busy.eq(1)]
                with m.If(present_ready):
                    m.d.sync += beats_left.eq(beats_left - 1)
                    with m.If(beats_left == 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("DISCARD"):
                m.d.comb += [self.i.ready.eq(1), self.busy.eq(1)]
                with m.If(take & last):
                    m.next = "IDLE"
        return m

