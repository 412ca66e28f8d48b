"""Two-entry register slice ("skid buffer") for an ``amaranth.lib.stream``.

Cuts every combinational path through a stream handshake at full rate: ``o.valid`` and
``i.ready`` are registers and ``o.payload`` is a register chosen by a registered pointer, so
neither the producer's payload nor the consumer's ready crosses the slice in the same cycle.

Parameters
----------
shape : shape-castable
    The payload shape.

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

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    shape = property(lambda self: self._shape)

    def elaborate(self, platform):
        m = Module()
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
