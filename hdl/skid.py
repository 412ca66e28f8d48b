"""Two-entry register slice ("skid buffer") for an ``amaranth.lib.stream``.

Cuts every combinational path through a stream handshake at full rate: ``o.valid`` and
``i.ready`` are registers and ``o.payload`` is a register chosen by a registered pointer, so
neither the producer's payload nor the consumer's ready crosses the slice in the same cycle.

Parameters
----------
shape : shape-castable
    The payload shape.
shift : bool
    ``False`` (default): two entries written in turn, ``o.payload`` one of them chosen by a
    registered read pointer (``o.ready`` drives only the pointers and the fill level).
    ``True``: ``o.payload`` is a register of its own, reloaded from the input or the second
    entry when the output moves (no multiplexer after it, but ``o.ready`` drives the load of
    every payload bit). Both have the same handshake, cycle for cycle.

Ports
-----
i : In(stream.Signature(shape))
    Input beats; ``i.ready`` is a register (0 only while two beats are held).
o : Out(stream.Signature(shape))
    Output beats, in order; ``o.valid`` is a register, ``o.payload`` one of the two entry
    registers (selected by a registered read pointer), held while ``o.valid & ~o.ready``.

Latency: a beat accepted at cycle ``t`` is presented at ``t + 1``. Throughput: one beat per
cycle (the second entry takes the beat accepted in a cycle where ``o`` is stalled, so
``i.ready`` never has to depend on ``o.ready``). No beat is lost or duplicated. Cost: two
payload registers and a payload-wide 2:1 multiplexer.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    __doc__ = __doc__

    def __init__(self, shape, *, shift: bool = False):
        self._shape = shape
        self._shift = bool(shift)
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    shape = property(lambda self: self._shape)
    shift = property(lambda self: self._shift)

    def elaborate(self, platform):
        m = Module()
        if self._shift:
            return self._elaborate_shift(m)
        # Two entries written in turn (a 2-deep ring, like ``lib.fifo.SyncFIFO(depth=2)`` but
        # with a shaped payload and flip-flop storage): an entry is written only from the input
        # side, so ``o.ready`` (often a long decision in the consumer) drives only the read
        # pointer and the fill level -- a few flip-flops -- instead of the load enable of every
        # payload bit, as a shift-style skid register would.
        ent = [Signal(self._shape, name=f"ent{k}") for k in range(2)]
        wp = Signal()                                 # entry the next input beat goes to
        rp = Signal()                                 # entry presented on o
        full = Signal()                               # both entries hold a beat
        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.payload.eq(Mux(rp, ent[1], ent[0])),
        ]
        push = self.i.valid & ~full
        pop = self.o.valid & self.o.ready
        with m.If(push):
            m.d.sync += wp.eq(~wp)
            with m.If(wp):
                m.d.sync += ent[1].eq(self.i.payload)
            with m.Else():
                m.d.sync += ent[0].eq(self.i.payload)
        with m.If(pop):
            m.d.sync += rp.eq(~rp)
        # fill level 0 / 1 / 2 as (o.valid, full)
        with m.If(push & ~pop):
            m.d.sync += [self.o.valid.eq(1), full.eq(self.o.valid)]
        with m.Elif(pop & ~push):
            m.d.sync += [self.o.valid.eq(full), full.eq(0)]
        return m

    def _elaborate_shift(self, m):
        # ``shift=True``: ``o.payload`` is itself a register (no multiplexer after it), loaded
        # from the input or from the second entry whenever the output moves; for a narrow
        # payload whose consumer is timing-critical. Same handshake, cycle for cycle.
        sv = Signal()                                 # the second entry holds a beat
        sp = Signal(self._shape)
        m.d.comb += self.i.ready.eq(~sv)
        i_take = self.i.valid & ~sv
        with m.If(~self.o.valid | self.o.ready):      # the output register is free this cycle
            with m.If(sv):                            # (then i.ready is 0: nothing arrives)
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(sp), sv.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(i_take), self.o.payload.eq(self.i.payload)]
        with m.Elif(i_take):                          # output stalled: park the beat
            m.d.sync += [sv.eq(1), sp.eq(self.i.payload)]
        return m
