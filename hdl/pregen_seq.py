"""Weight buffer and on-chip pre-generation sequencer (*ours*).

Groups loaded into the weight buffer are fed to the
:class:`~sparseforge.hdl.weight_pregen.WeightPregen` one per cycle, independent of the input
stream, so a run overlaps whatever the PE array does (the WG phase). Outside a run, groups the
host sends (``host``) pass straight through to the pre-generation.

Parameters
----------
shape : shape-castable
    A group beat (:func:`~sparseforge.hdl.weight_pregen.pregen_in_layout`).
depth : int
    Weight buffer depth in groups (``cfg.weight_buf_depth``).

Ports
-----
wbuf : In(stream.Signature(shape))
    Groups written into the buffer one after the other (a write past ``depth`` is dropped);
    ``ready`` is low during a run (the run reads the buffer: no group is lost).
wbuf_begin : In(1)
    The next ``wbuf`` beat goes to address 0.
start : In(1), count : In(24)
    Start a run over the first ``count`` groups of the buffer (ignored while a run is
    active; ``count == 0`` starts nothing).
host : In(stream.Signature(shape))
    Groups from the host, passed to ``o`` outside a run. ``host.ready`` follows ``o.ready``
    even during a run (nothing offers a host group then: the router holds it back).
o : Out(stream.Signature(shape))
    To the pre-generation's input.
active : Out(1)
    A run is in progress (from the cycle after ``start`` to the cycle after its last group
    is taken).

Latency / throughput: the buffer read is registered, so a run's first group is offered two
cycles after ``start``; then one group per cycle while ``o.ready`` (the read advances when
the output register is empty or moving).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int

__all__ = ["PregenSequencer"]


class PregenSequencer(wiring.Component):
    __doc__ = __doc__

    def __init__(self, shape, *, depth: int):
        self._shape = shape
        self._depth = check_int("depth", depth, 1, 1 << 24)
        super().__init__({
            "wbuf": In(stream.Signature(shape)), "wbuf_begin": In(1),
            "start": In(1), "count": In(24),
            "host": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.mem = mem = Memory(shape=self._shape, depth=depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()

        wptr = Signal(range(depth + 1))
        with m.If(self.wbuf_begin):
            m.d.sync += wptr.eq(0)
        m.d.comb += self.wbuf.ready.eq(~self.active)
        with m.If(self.wbuf.valid & self.wbuf.ready):
            m.d.comb += [wr.en.eq(wptr < depth), wr.addr.eq(wptr), wr.data.eq(self.wbuf.payload)]
            m.d.sync += wptr.eq(wptr + 1)

        left = Signal(24)
        rptr = Signal(range(depth))
        ov = Signal()                    # the read data register holds a group
        with m.If(self.start & ~self.active):
            m.d.sync += [left.eq(self.count), rptr.eq(0), self.active.eq(self.count != 0)]

        # outside a run the host's groups pass; a run drives o itself
        m.d.comb += [self.o.valid.eq(self.host.valid), self.o.payload.eq(self.host.payload),
                     self.host.ready.eq(self.o.ready)]
        adv = Signal()
        m.d.comb += [adv.eq(~ov | self.o.ready), rd.addr.eq(rptr), rd.en.eq(adv)]
        with m.If(self.active):
            m.d.comb += [self.o.valid.eq(ov), self.o.payload.eq(rd.data)]
            with m.If(adv):
                m.d.sync += ov.eq(left != 0)
                with m.If(left != 0):
                    m.d.sync += [rptr.eq(rptr + 1), left.eq(left - 1)]
                with m.Elif(~ov | self.o.ready):
                    m.d.sync += self.active.eq(0)
        return m
