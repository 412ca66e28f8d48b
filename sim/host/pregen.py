"""Host side of weight pre-generation (:class:`~sparseforge.hdl.weight_pregen.WeightPregen`):
the order in which the weight buffer feeds groups, the packing of the input beats and the
reassembly of the output beats into the golden model's tensors (``bdwp_masks`` +
``nm_compress``), which is how the tests and the driver check the whole path bit for bit.

Pure Python; numpy only inside :func:`pregen_reassemble` (and for the arrays it is given).
"""

from typing import Iterator, NamedTuple

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.nm_selector import check_group_size, pack_group, unpack_select
from sparseforge.hdl.weight_pregen import DIR_BWD, DIR_FWD, pregen_in_layout, pregen_out_layout

__all__ = ["PregenGroup", "pregen_schedule", "pregen_group_count", "pregen_beats",
           "unpack_pregen_out", "pregen_reassemble", "PregenResult"]


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
    check_group_size(m)
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
    """The order in which the weight buffer feeds groups to
    :class:`~sparseforge.hdl.weight_pregen.WeightPregen`.

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
    base = pregen_in_layout(m, width)["dir"].offset
    return [pack_group([flat[a] for a in grp.addrs], width) | (grp.dir << base)
            | (int(grp.last) << (base + 1))
            for grp in pregen_schedule(w.shape, m)]


def unpack_pregen_out(payload: int, *, m: int, n_max: int, width: int):
    """``(mask, values, indices, dir, last)`` of one ``o`` payload."""
    mask, values, indices = unpack_select(payload, m=m, n_max=n_max, width=width)
    base = pregen_out_layout(m, n_max, width)["dir"].offset
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
