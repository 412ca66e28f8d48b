"""Deliberately broken designs for the negative (must-FAIL) proofs: each breaks exactly one rule
that a harness of :mod:`sparseforge.formal.harnesses` checks, so the flow can be seen to catch
it (a proof that cannot fail proves nothing)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring

__all__ = ["TiesToHigherSelector", "BrokenStage"]


class TiesToHigherSelector(wiring.Component):
    """A deliberately wrong N:M selector (for the negative proof): an
    :class:`~sparseforge.hdl.nm_selector.NMSelector` fed with each group in reverse element
    order, its outputs mapped back (mask reversed, indices ``m-1-i``, the ``N`` used slots put
    back into ascending index order). Everything is right except that ties now go to the
    **higher** index — a one-rule bug that only the tie invariant catches."""

    def __init__(self, *, m: int, n_max: int, width: int):
        from sparseforge.hdl.nm_selector import NMSelector
        self._inner = NMSelector(m=m, n_max=n_max, width=width)
        self.m, self.n_max, self.width = m, n_max, width
        self.latency = self._inner.latency
        super().__init__(wiring.Signature(dict(self._inner.signature.members.items())))

    def elaborate(self, platform):
        mod = Module()
        mod.submodules.inner = inner = self._inner
        mm, n_max = self.m, self.n_max
        mod.d.comb += [
            inner.i.valid.eq(self.i.valid), self.i.ready.eq(inner.i.ready), inner.n.eq(self.n),
            self.o.valid.eq(inner.o.valid), inner.o.ready.eq(self.o.ready),
        ]
        mod.d.comb += [inner.i.payload[k].eq(self.i.payload[mm - 1 - k]) for k in range(mm)]
        mod.d.comb += [self.o.payload.mask[k].eq(inner.o.payload.mask[mm - 1 - k])
                       for k in range(mm)]
        # n travels beside the group (the inner pipeline advances exactly when i.ready).
        n_chain = [Signal(range(n_max + 1), name=f"n_d{k}") for k in range(self.latency)]
        with mod.If(inner.i.ready):
            mod.d.sync += n_chain[0].eq(Mux(self.n > n_max, n_max, self.n))
            mod.d.sync += [n_chain[k].eq(n_chain[k - 1]) for k in range(1, self.latency)]
        with mod.Switch(n_chain[-1]):
            for nn in range(n_max + 1):
                with mod.Case(nn):
                    for k in range(nn):
                        src = nn - 1 - k
                        mod.d.comb += [
                            self.o.payload.values[k].eq(inner.o.payload.values[src]),
                            self.o.payload.indices[k].eq(mm - 1 - inner.o.payload.indices[src]),
                        ]
        return mod


class BrokenStage(wiring.Component):
    """A deliberately wrong one-register stream stage (for the negative proofs).

    ``bug="payload"``: the output register reloads whenever ``i.valid``, even while
    ``o.valid & ~o.ready``, so a stalled beat's payload changes (breaks the stream rule).
    ``bug="comb_valid"``: an empty stage forwards ``i`` combinationally when ``o.ready`` is
    high, so ``o.valid`` depends on ``o.ready`` within the cycle (breaks the structural rule).
    """

    BUGS = ("payload", "comb_valid")

    def __init__(self, width: int = 4, *, bug: str = "payload"):
        if bug not in self.BUGS:
            raise ValueError(f"bug must be one of {self.BUGS}, not {bug!r}")
        self.bug = bug
        super().__init__({
            "i": wiring.In(stream.Signature(unsigned(width))),
            "o": wiring.Out(stream.Signature(unsigned(width))),
        })

    def elaborate(self, platform):
        m = Module()
        if self.bug == "payload":
            m.d.comb += self.i.ready.eq(self.o.ready | ~self.o.valid)
            with m.If(self.i.ready):
                m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):                  # BUG: should be `i.valid & i.ready`
                m.d.sync += self.o.payload.eq(self.i.payload)
        else:
            full = Signal()
            data = Signal.like(self.i.payload)
            m.d.comb += [
                self.i.ready.eq(~full),
                self.o.valid.eq(full | (self.i.valid & self.o.ready)),   # BUG: valid <- ready
                self.o.payload.eq(Mux(full, data, self.i.payload)),
            ]
            with m.If(self.i.valid & ~full & ~self.o.ready):
                m.d.sync += [full.eq(1), data.eq(self.i.payload)]
            with m.If(full & self.o.ready):
                m.d.sync += full.eq(0)
        return m
