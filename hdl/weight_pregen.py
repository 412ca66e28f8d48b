"""Weight pre-generation (SAT): both N:M-compressed weight forms, W_fwd and W_bwd, from the dense
weights, through one :class:`~sparseforge.hdl.nm_selector.NMSelector`.

The hardware path is the selector plus a 2-bit tag (``dir``, ``last``) that travels beside every
group. *Which* weights form a group -- the read order of the weight buffer -- is the pure-Python
:func:`pregen_schedule`; the controller's address generator walks the same order.
:func:`pregen_reassemble` turns the output stream back into the golden model's tensors
(``bdwp_masks`` + ``nm_compress``), which is how the tests check the whole path bit for bit.
"""

from typing import Iterator, NamedTuple

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.nm_selector import (_LATENCY, SUPPORTED_M, NMSelector, _check_params,
                                         _index_width, nm_group_layout, pack_group, unpack_select)

__all__ = ["WeightPregen", "pregen_in_layout", "pregen_out_layout", "PregenGroup",
           "pregen_schedule", "pregen_group_count", "pregen_beats", "unpack_pregen_out",
           "pregen_reassemble", "PregenResult", "DIR_FWD", "DIR_BWD"]

#: ``dir`` tag values.
DIR_FWD, DIR_BWD = 0, 1


def pregen_in_layout(m: int, width: int) -> data.StructLayout:
    """Input beat: ``group`` (``m`` signed values, element 0 at the LSBs), ``dir``, ``last``."""
    return data.StructLayout({
        "group": nm_group_layout(m, width),
        "dir": unsigned(1),
        "last": unsigned(1),
    })


def pregen_out_layout(m: int, n_max: int, width: int) -> data.StructLayout:
    """Output beat: the selector's ``mask``, ``values``, ``indices``, then ``dir`` and ``last``."""
    return data.StructLayout({
        "mask": unsigned(m),
        "values": data.ArrayLayout(signed(width), n_max),
        "indices": data.ArrayLayout(unsigned(_index_width(m)), n_max),
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


class WeightPregen(wiring.Component):
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
        of a direction's pass. Group order: :func:`pregen_schedule`.
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
        try:
            self._m, self._n_max, self._width = _check_params(m, n_max, width)
        except (TypeError, ValueError):
            self._MustUse__used = True       # a rejected instance is no "unused elaboratable"
            raise
        super().__init__({
            "i": In(stream.Signature(pregen_in_layout(m, width))),
            "o": Out(stream.Signature(pregen_out_layout(m, n_max, width))),
            "n": In(range(n_max + 1)),
        })

    @property
    def m(self) -> int:
        return self._m

    @property
    def n_max(self) -> int:
        return self._n_max

    @property
    def width(self) -> int:
        return self._width

    @property
    def latency(self) -> int:
        """Cycles from a group's input transfer to its output beat (the selector's, 5)."""
        return _LATENCY

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


# ------------------------------------------------------------------------------------------------
# Group order (the weight buffer's read schedule) and reassembly -- pure Python, no numpy at
# import or elaboration time.
# ------------------------------------------------------------------------------------------------

class PregenGroup(NamedTuple):
    """One group of the schedule.

    ``dir``: 0 fwd / 1 bwd; ``pos``: ``(a, g, kh, kw)`` -- fwd: ``a = cout`` and ``g`` the Cin
    group; bwd: ``a = cin`` and ``g`` the Cout group (``kh = kw = 0`` for 2-D weights);
    ``addrs``: the M row-major flat element indices of the dense tensor, in-group order;
    ``last``: the final group of its direction.
    """
    dir: int
    pos: tuple
    addrs: tuple
    last: bool


def _check_shape(w_shape, m):
    if not isinstance(m, int) or isinstance(m, bool):
        raise TypeError(f"m must be an integer, not {m!r}")
    if m not in SUPPORTED_M:
        raise ValueError(f"m must be one of {SUPPORTED_M}, not {m}")
    try:
        shape = tuple(w_shape)
    except TypeError:
        raise TypeError(f"w_shape must be a sequence of integers, not {w_shape!r}") from None
    if len(shape) not in (2, 4):
        raise ValueError(f"w_shape must be (Cout, Cin) or (Cout, Cin, Kh, Kw), not {shape}")
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"w_shape entries must be positive integers, not {shape}")
    cout, cin = shape[:2]
    kh, kw = shape[2:] if len(shape) == 4 else (1, 1)
    if cin % m or cout % m:
        raise ValueError(f"Cin and Cout must be multiples of m={m} for both N:M directions, "
                         f"not w_shape={shape}")
    return shape, cout, cin, kh, kw


def pregen_group_count(w_shape, m) -> int:
    """Groups in one pre-generation pass (both directions): ``2 * numel / m``."""
    _, cout, cin, kh, kw = _check_shape(w_shape, m)
    return 2 * cout * cin * kh * kw // m


def pregen_schedule(w_shape, m) -> Iterator[PregenGroup]:
    """The order in which the weight buffer feeds groups to :class:`WeightPregen`.

    First the whole fwd pass, ``for cout, for cin-group g, for kh, for kw``: addresses
    ``w[cout, g*m + j, kh, kw]``, ``j = 0..m-1``; then the whole bwd pass,
    ``for cin, for cout-group g, for kh, for kw``: addresses ``w[g*m + j, cin, kh, kw]``. Each
    pass's final group has ``last = True``. The output order is thus row-major over the
    compressed tensors ``W_fwd[cout][g][kh][kw]`` and ``W_bwd[cin][g][kh][kw]``.
    """
    _, cout, cin, kh, kw = _check_shape(w_shape, m)

    def flat(o, c, y, x):
        return ((o * cin + c) * kh + y) * kw + x

    # Forward groups run along Cin for each (cout, group, kh, kw); backward groups along Cout
    # for each (cin, group, kh, kw): the same loop with the two channel axes swapped.
    for d, outer, across, elem in ((DIR_FWD, cout, cin, lambda o, j, y, x: flat(o, j, y, x)),
                                   (DIR_BWD, cin, cout, lambda c, j, y, x: flat(j, c, y, x))):
        total = outer * (across // m) * kh * kw
        k = 0
        for o in range(outer):
            for g in range(across // m):
                for y in range(kh):
                    for x in range(kw):
                        k += 1
                        yield PregenGroup(d, (o, g, y, x),
                                          tuple(elem(o, g * m + j, y, x) for j in range(m)),
                                          k == total)


def pregen_beats(w, m, width) -> list:
    """Packed ``i`` payloads for a dense integer weight tensor ``w`` (numpy array or anything with
    ``shape`` and ``ravel()``), in :func:`pregen_schedule` order."""
    flat = [int(v) for v in w.ravel()]
    base = m * width
    return [pack_group([flat[a] for a in grp.addrs], width) | (grp.dir << base)
            | (int(grp.last) << (base + 1))
            for grp in pregen_schedule(w.shape, m)]


def unpack_pregen_out(payload: int, *, m: int, n_max: int, width: int):
    """``(mask, values, indices, dir, last)`` of one ``o`` payload."""
    mask, values, indices = unpack_select(payload, m=m, n_max=n_max, width=width)
    base = m + n_max * (width + _index_width(m))
    return mask, values, indices, (payload >> base) & 1, (payload >> (base + 1)) & 1


class PregenResult(NamedTuple):
    """Reassembled pre-generation output, in the golden model's layouts:
    ``fwd_*`` = ``nm_compress(w, n, m, axis=1)`` (values, indices, mask) and
    ``bwd_*`` = ``nm_compress(w, n, m, axis=0)``; ``fwd_mask, bwd_mask = bdwp_masks(w, n, m)``."""
    fwd_values: object
    fwd_indices: object
    fwd_mask: object
    bwd_values: object
    bwd_indices: object
    bwd_mask: object


def pregen_reassemble(beats, w_shape, m, n) -> PregenResult:
    """Rebuild W_fwd / W_bwd from the output beats ``(mask, values, indices, dir, last)``.

    The beats must follow :func:`pregen_schedule` (their ``dir``/``last`` tags are checked), and
    every beat's unused slots ``n..n_max-1`` must be zero; ``ValueError`` otherwise.
    """
    import numpy as np

    shape, cout, cin, kh, kw = _check_shape(w_shape, m)
    n = check_int("n", n, 1, m)
    beats = list(beats)
    sched = list(pregen_schedule(shape, m))
    if len(beats) != len(sched):
        raise ValueError(f"{len(beats)} beats for a schedule of {len(sched)} groups")
    fv = np.zeros((cout, cin // m, n, kh, kw), np.int64)
    fi = np.zeros_like(fv)
    fm = np.zeros((cout, cin, kh, kw), bool)
    bv = np.zeros((cout // m, n, cin, kh, kw), np.int64)
    bi = np.zeros_like(bv)
    bm = np.zeros((cout, cin, kh, kw), bool)
    for k, ((mask, values, indices, d, last), grp) in enumerate(zip(beats, sched)):
        if (d, bool(last)) != (grp.dir, grp.last):
            raise ValueError(f"beat {k}: tags dir={d} last={last}, schedule expects "
                             f"dir={grp.dir} last={int(grp.last)}")
        if any(values[n:]) or any(indices[n:]):
            raise ValueError(f"beat {k}: unused slots {n}.. are not zero: {values}, {indices}")
        a, g, y, x = grp.pos
        bits = [(mask >> j) & 1 for j in range(m)]
        if grp.dir == DIR_FWD:
            fv[a, g, :, y, x], fi[a, g, :, y, x] = values[:n], indices[:n]
            fm[a, g * m:(g + 1) * m, y, x] = bits
        else:
            bv[g, :, a, y, x], bi[g, :, a, y, x] = values[:n], indices[:n]
            bm[g * m:(g + 1) * m, a, y, x] = bits
    if len(shape) == 2:
        fv, fi, fm, bv, bi, bm = (t[..., 0, 0] for t in (fv, fi, fm, bv, bi, bm))
    return PregenResult(fv, fi, fm, bv, bi, bm)
