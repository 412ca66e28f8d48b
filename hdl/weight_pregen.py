"""Weight pre-generation (SAT): both N:M-compressed weight forms, W_fwd and W_bwd, from the dense
weights, through one :class:`~sparseforge.hdl.nm_selector.NMSelector`.

The hardware path is the selector plus a 2-bit tag (``dir``, ``last``) that travels beside every
group. *Which* weights form a group -- the read order of the weight buffer -- and the packing /
reassembly of the streams are host-side (:mod:`sparseforge.sim.host.pregen`:
``pregen_schedule``, ``pregen_beats``, ``unpack_pregen_out``, ``pregen_reassemble``); the
controller's address generator walks the same order.
"""

import functools

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.nm_selector import NMParams, NMSelector, nm_group_layout, nm_select_layout

__all__ = ["WeightPregen", "pregen_in_layout", "pregen_out_layout", "DIR_FWD", "DIR_BWD"]

#: ``dir`` tag values.
DIR_FWD, DIR_BWD = 0, 1


def pregen_in_layout(m: int, width: int) -> data.StructLayout:
    """Input beat: ``group`` (``m`` signed values, element 0 at the LSBs), ``dir``, ``last``."""
    return data.StructLayout({
        "group": nm_group_layout(m, width),
        "dir": unsigned(1),
        "last": unsigned(1),
    })


@functools.lru_cache(maxsize=None)      # the host unpacks every output beat with it
def pregen_out_layout(m: int, n_max: int, width: int) -> data.StructLayout:
    """Output beat: the selector's ``mask``, ``values``, ``indices``, then ``dir`` and ``last``."""
    return data.StructLayout({
        **nm_select_layout(m, n_max, width).members,
        "dir": unsigned(1),
        "last": unsigned(1),
    })


class _TaggedNMSelector(NMSelector):
    """An :class:`NMSelector` that also carries a ``tag_width``-bit side-band tag per group:
    ``tag_i`` is sampled with the group on ``i.valid & i.ready`` and comes out on ``tag_o``,
    valid exactly while ``o.valid`` offers that group's beat (same pipeline registers' enable)."""

    def __init__(self, *, m, n_max, width, tag_width):
        self._tag_width = tag_width
        super().__init__(m=m, n_max=n_max, width=width)

    def _ports(self):
        ports = super()._ports()
        ports.update({"tag_i": In(self._tag_width), "tag_o": Out(self._tag_width)})
        return ports

    def _tag_in(self):
        return self.tag_i

    def _tag_out(self):
        return self.tag_o


class WeightPregen(NMParams, wiring.Component):
    """Pre-generates W_fwd and W_bwd: N:M selection of weight groups read in both orders.

    Parameters (keyword-only; validated as for :class:`NMSelector`)
    ------------------------------------------------------------------
    m : int, one of 2, 4, 8, 16
    n_max : int, 1 <= n_max <= m
    width : int, >= 2

    Ports
    -----
    i : In(stream.Signature(pregen_in_layout(m, width)))
        ``group``: M weights; ``dir = 0`` (fwd): M consecutive Cin of one ``(cout, kh, kw)``;
        ``dir = 1`` (bwd): M consecutive Cout of one ``(cin, kh, kw)``. ``last``: the final group
        of a direction's pass. Group order: :func:`sparseforge.sim.host.pregen.pregen_schedule`.
    o : Out(stream.Signature(pregen_out_layout(m, n_max, width)))
        The selector's beat (``mask``, ``values``, ``indices``; unused slots zero) and the input
        group's ``dir`` and ``last`` tags, one beat per input group, in input order.
    n : In(range(n_max + 1))
        N, sampled with each group (see :class:`NMSelector`; ``n = 0`` keeps nothing).

    Timing
    ------
    That of the selector: latency :attr:`latency` (5) cycles, one group per cycle, the whole
    pipeline stalls while ``o.valid & ~o.ready``; ``i.ready`` depends combinationally on
    ``o.ready`` only, ``o.valid`` is a register. A ``(Cout, Cin, Kh, Kw)`` tensor takes
    ``2 * Cout * Cin * Kh * Kw / M`` groups (both directions) plus the latency.
    """

    def __init__(self, *, m: int, n_max: int, width: int):
        self._set_nm_params(m, n_max, width)
        super().__init__({
            "i": In(stream.Signature(pregen_in_layout(m, width))),
            "o": Out(stream.Signature(pregen_out_layout(m, n_max, width))),
            "n": In(range(n_max + 1)),
        })

    def elaborate(self, platform):
        mod = Module()
        sel = mod.submodules.selector = _TaggedNMSelector(
            m=self._m, n_max=self._n_max, width=self._width, tag_width=2)
        mod.d.comb += [
            sel.i.valid.eq(self.i.valid),
            sel.i.payload.eq(self.i.payload.group),
            sel.tag_i.eq(self.i.payload.dir | (self.i.payload.last << 1)),
            self.i.ready.eq(sel.i.ready),
            sel.n.eq(self.n),
            self.o.valid.eq(sel.o.valid),
            self.o.payload.mask.eq(sel.o.payload.mask),
            self.o.payload.values.eq(sel.o.payload.values),
            self.o.payload.indices.eq(sel.o.payload.indices),
            self.o.payload.dir.eq(sel.tag_o[0]),
            self.o.payload.last.eq(sel.tag_o[1]),
            sel.o.ready.eq(self.o.ready),
        ]
        return mod
