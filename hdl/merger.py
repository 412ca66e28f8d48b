"""Output merger (*ours*): the accelerator's result streams onto one ``m_axis`` word stream.

Every beat leaves as a packet: a header ``src[31:24] | words[23:0]``, then the beat in
``words = ceil(width / 32)`` little-endian 32-bit words, ``last`` (tlast) on its last word.
The sources, their ids and payload layouts are :func:`sparseforge.hdl.wire.sources` of the
configuration. Sources are served in a fixed priority (lowest id first); every source is
finite, so none starves for ever. The one parameter, ``cfg`` (an ``AcceleratorConfig``),
gives that source table (PE array columns, payload layouts).

Ports
-----
col[j], prune, pregen : In(stream)
    The PE array's column outputs, the pruner's pruned gradients, the pre-generation's
    selected groups. Each enters a 2-entry :class:`~sparseforge.hdl.skid.SkidBuffer` (for
    Fmax: the merger's pick, which depends on its own state, must not reach the column joins,
    the PEs' drain pipelines or the pre-generation pipeline and its sequencer
    combinationally; the last was the ECP5 critical path, 10.0 ns).
o : Out(stream.Signature(axis_word_layout()))
    The ``m_axis`` words (``data``, ``last`` = tlast).
clear : In(1)
    Soft reset: abandons the packet being sent. Beats waiting in the input slices stay (the
    head one is sent again in full).
busy : Out(1)
    A packet is being sent.
held : Out(len(sources))
    Per source id: its input slice holds a beat.

Latency / throughput: a beat is picked the cycle after it reaches the head of its slice (the
slice adds one more) and costs its words + 1 header word, one word per cycle, plus one pick
cycle. The merger sends a beat's words straight from the head entry and pops it with the last
word, so the pick only sets the source index and the word count (for Fmax: a pick that loaded a
payload-wide output buffer was the ECP5 critical path, 9.0 ns); the second entry takes the
source's next beat meanwhile, so no rate is lost.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.router import packet_port, packet_ports
from sparseforge.hdl.skid import SkidBuffer
from sparseforge.hdl.wire import HEADER_COUNT_BITS, axis_word_layout, sources

__all__ = ["OutputMerger"]


class OutputMerger(wiring.Component):
    __doc__ = __doc__

    def __init__(self, cfg):
        self._srcs = sources(cfg)
        members = packet_ports(self._srcs, In)
        members.update({"o": Out(stream.Signature(axis_word_layout())), "clear": In(1),
                        "busy": Out(1), "held": Out(len(self._srcs))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        srcs = self._srcs
        heads = []                       # the head entry of every source's input slice
        for s in srcs:
            m.submodules[f"{s.name}_slice"] = q = SkidBuffer(s.shape)
            wiring.connect(m, wiring.flipped(packet_port(self, s)), q.i)
            heads.append(q.o)
        m.d.comb += self.held.eq(Cat(h.valid for h in heads))

        out_words = max(s.words for s in srcs)
        left = Signal(range(out_words + 2))
        # init 0xFF: the first pick must change it, or Icarus never evaluates the blocks
        # decoding it (see the router's hdr_dest)
        src = Signal(8, init=0xFF)
        hdr = Signal()
        widx = Signal(range(out_words))
        m.d.comb += self.busy.eq(left != 0)
        take = Signal()
        m.d.comb += take.eq(self.o.valid & self.o.ready)
        picked = Signal()
        for s, head in zip(srcs, heads):
            sel = Signal(name=f"pick_{s.name}")
            m.d.comb += sel.eq(~self.busy & ~picked & head.valid)
            # popped with its last word
            m.d.comb += head.ready.eq(take & (src == s.id) & (left == 1))
            with m.If(sel):
                m.d.sync += [src.eq(s.id), left.eq(s.words + 1), hdr.eq(1), widx.eq(0)]
            nxt = Signal(name=f"picked_{s.id}")
            m.d.comb += nxt.eq(picked | sel)
            picked = nxt
        with m.Switch(src):
            for s, head in zip(srcs, heads):
                with m.Case(s.id):
                    bits = head.payload.as_value()
                    word = Signal(32, name=f"o_word_{s.id}")
                    with m.Switch(widx):
                        for j in range(s.words):
                            with m.Case(j):
                                m.d.comb += word.eq(bits[32 * j:32 * (j + 1)])
                    m.d.comb += self.o.payload.data.eq(
                        Mux(hdr, Cat(Const(s.words, HEADER_COUNT_BITS), src), word))
        m.d.comb += [self.o.valid.eq(self.busy), self.o.payload.last.eq(left == 1)]
        with m.If(take):
            m.d.sync += left.eq(left - 1)
            with m.If(hdr):
                m.d.sync += hdr.eq(0)
            with m.Else():
                m.d.sync += widx.eq(widx + 1)
        with m.If(self.clear):
            m.d.sync += left.eq(0)
        return m
