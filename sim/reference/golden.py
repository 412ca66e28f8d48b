"""Bit-exact numpy golden model of sparseforge (architecture brief, sections 3-5).

Conventions (every function below follows them):

* Tensors: activations ``(B, C, H, W)``, conv weights ``(Cout, Cin, Kh, Kw)``, FC activations
  ``(B, Cin)``, FC weights ``(Cout, Cin)``.  Inputs are never modified.
* Integer arithmetic is exact: integer inputs (any signed/unsigned numpy integer dtype) are
  computed in ``int64``; a conv or row primitive whose worst-case sum, ``max|a| * max|b| *
  terms``, could pass ``2**63 - 1`` is rejected with ``ValueError`` (a conservative bound) rather
  than wrapping.  Float inputs, and mixed int/float inputs, are computed in ``float64`` (the
  path of the float training harness).  Convolutions return raw sums, *not* written back;
  :func:`writeback` applies the hardware rule (shift right, round half to even, saturate).
* Validation happens before any arithmetic.  Bad integers (``n``, ``m``, ``stride``, widths,
  ...) raise ``TypeError`` when not an integer (``bool`` is not one) and ``ValueError`` when out
  of range; bad shapes raise ``ValueError``.  Messages name the argument and its value.
  Array arguments must be numeric (signed/unsigned integer or real float dtype); anything else
  (strings, objects, ``bool`` arrays, complex, ragged lists) raises :class:`NotNumericError`,
  which is both a ``TypeError`` and a ``ValueError``.
* Magnitudes ``|x|`` of integers are taken in ``uint64``, so the most negative value of any
  integer dtype (``int64`` included) counts as its true magnitude.
* N:M groups are M consecutive elements along an axis; within a group the N largest ``|x|``
  are kept and ties go to the lower index, so exactly N elements are kept in every group.
* The stochastic pruner's random numbers come from :mod:`sparseforge.sim.reference.prng` (xorshift32).
"""

import math
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# The number formats the offline mapper shares live one layer down; re-exported here.
from sparseforge.gen.numfmt import (_INT64_MAX, MASK32, NotNumericError, _as_array,
                                    _as_bool_mask, _as_int64, _check_int, _check_ndim,
                                    _check_real, _prune_coefficient, compress_row, compress_rows,
                                    prune_threshold_params, writeback)
from sparseforge.sim.reference.prng import xorshift32_stream

__all__ = [
    "NotNumericError",
    # N:M weight sparsity (SAT / BDWP)
    "nm_mask", "bdwp_masks", "nm_compress", "nm_decompress", "nm_select_group",
    # gradient pruning (SparseTrain)
    "prune_threshold", "prune_threshold_params", "prune_threshold_int",
    "stochastic_prune", "stochastic_prune_int",
    # convolution / FC in the three phases, write-back
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
    "fc_forward", "fc_backward_input", "fc_backward_weight", "writeback",
    # batch norm and global average pooling in integer arithmetic (the BN network's step)
    "batchnorm_forward_int", "batchnorm_backward_int", "avgpool_global_int",
    "avgpool_global_backward_int",
    # 1-D row primitives and the 2-D convolutions built from them
    "row_fp", "row_bp", "row_wg",
    "conv2d_forward_rows", "conv2d_backward_input_rows", "conv2d_backward_weight_rows",
    # row compression (the Compressor's contract)
    "compress_row", "decompress_row", "compress_rows", "decompress_rows",
]



# --------------------------------------------------------------------------------------------
# Validation helpers (shared by every public function)
# --------------------------------------------------------------------------------------------

def _check_shape(name, shape, ndim):
    """A shape tuple of ``ndim`` integers >= 1 (argument ``name``)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a shape tuple, not {shape!r}") from None
    if len(dims) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got {len(dims)}: {dims}")
    return tuple(_check_int(f"{name}[{i}]", d, 1) for i, d in enumerate(dims))


def _check_axis(axis, ndim):
    axis = _check_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D array")
    return axis % ndim


def _magnitude(arr):
    """``|arr|`` exactly: uint64 for integer arrays (most negative value included), else float64."""
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64)
    if arr.dtype.kind == "i":
        a = arr.astype(np.int64)
        # -(a + 1) never overflows; adding 1 back in uint64 gives |a| even for a = -2**63.
        return np.where(a < 0, (-(a + 1)).astype(np.uint64) + np.uint64(1), a.astype(np.uint64))
    return np.abs(arr.astype(np.float64))


def _max_magnitude(arr):
    return _magnitude(arr).max().item() if arr.size else 0


def _compute_pair(name_a, a, name_b, b, terms):
    """Cast two numeric arrays to the compute dtype: int64 (both integer) or float64.

    For int64, check that a sum of ``terms`` products cannot overflow.
    """
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        a, b = _as_int64(name_a, a), _as_int64(name_b, b)
        max_a, max_b = _max_magnitude(a), _max_magnitude(b)
        if max_a * max_b * terms > _INT64_MAX:
            raise ValueError(f"int64 accumulation could overflow: max|{name_a}| = {max_a}, "
                             f"max|{name_b}| = {max_b}, {terms} terms per sum")
        return a, b
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)


def _exact_abs_sum(g):
    """sum|g| of an int64 array as an exact Python int."""
    mags = _magnitude(g)
    if not mags.size:
        return 0
    if mags.max().item() * mags.size < (1 << 64):
        return int(mags.sum(dtype=np.uint64))
    return sum(mags.tolist())


def _check_signed_range(name, arr, width):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        raise ValueError(f"{name} has a value {int(bad)} outside the {width}-bit signed range "
                         f"[{lo}, {hi}]")
    return arr


# --------------------------------------------------------------------------------------------
# N:M weight sparsity (SAT / BDWP)
# --------------------------------------------------------------------------------------------

def _check_nm(n, m):
    n, m = _check_int("n", n), _check_int("m", m)
    _check_int("m", m, 1)
    _check_int("n", n, 1)
    if n > m:
        raise ValueError(f"n must be <= m, got n={n} > m={m}")
    return n, m


def _to_groups(arr, axis, m):
    """View ``arr`` as (..., G, m) groups of m consecutive elements along ``axis``."""
    moved = np.moveaxis(arr, axis, -1)
    return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))


def _from_groups(groups, axis):
    """Inverse of :func:`_to_groups`."""
    flat = groups.reshape(groups.shape[:-2] + (groups.shape[-2] * groups.shape[-1],))
    return np.moveaxis(flat, -1, axis)


def _nm_setup(w, n, m, axis):
    """Validate the N:M arguments; return (w array, n, m, normalized axis)."""
    n, m = _check_nm(n, m)
    w = _as_array("w", w)
    if w.ndim == 0:
        raise ValueError("w must have at least one dimension, got a 0-D array")
    ax = _check_axis(axis, w.ndim)
    if w.shape[ax] % m:
        raise ValueError(f"the length of w along axis={axis} (w.shape={w.shape}) is "
                         f"{w.shape[ax]}, not a multiple of m={m}")
    if w.dtype.kind == "f" and np.isnan(w).any():
        raise ValueError("w contains NaN; N:M selection needs ordered magnitudes")
    return w, n, m, ax


def _nm_order(groups):
    """Per group of the last axis, element indices by decreasing |x|, ties by increasing index."""
    mag = _magnitude(groups)
    key = np.invert(mag) if mag.dtype == np.uint64 else -mag   # both reverse the order exactly
    return np.argsort(key, axis=-1, kind="stable")


def _nm_kept_indices(groups, n):
    """Ascending in-group indices of the n kept elements of every group: (..., G, n)."""
    return np.sort(_nm_order(groups)[..., :n], axis=-1)


def nm_mask(w, n, m, axis=-1):
    """N:M mask of ``w``: keep the ``n`` largest ``|w|`` of every ``m`` consecutive elements.

    Groups are taken along ``axis``, whose length must be a multiple of ``m``.  Ties go to the
    lower index, so exactly ``n`` elements of every group are kept.  Integer magnitudes are exact
    (``|-32768|`` beats ``32767`` in int16 data; ``int64`` minimum included).  NaN is rejected.

    Returns a ``bool`` array of ``w``'s shape.
    """
    w, n, m, axis = _nm_setup(w, n, m, axis)
    groups = _to_groups(w, axis, m)
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, _nm_order(groups)[..., :n], True, axis=-1)
    return _from_groups(keep, axis)


def bdwp_masks(w, n, m):
    """Bidirectional N:M masks of a conv ``(Cout, Cin, Kh, Kw)`` or FC ``(Cout, Cin)`` weight.

    Returns ``(fwd, bwd)``: ``fwd = nm_mask(w, n, m, axis=1)`` groups along Cin (the forward
    pass's reduction axis), ``bwd = nm_mask(w, n, m, axis=0)`` groups along Cout (the backward
    pass's reduction axis, i.e. N:M on the transposed weights).  Both are taken independently from
    the dense weights (*ours*).
    """
    _check_nm(n, m)
    w = _check_ndim("w", _as_array("w", w), 2, 4)
    return nm_mask(w, n, m, axis=1), nm_mask(w, n, m, axis=0)


def nm_compress(w, n, m, axis=-1):
    """N:M-compress ``w`` along ``axis``: returns ``(values, indices, mask)``.

    With ``L = w.shape[axis]`` and ``G = L // m`` groups, ``values`` and ``indices`` have the shape
    of ``w`` with that axis replaced by the two axes ``(G, n)``:
    ``w.shape[:axis] + (G, n) + w.shape[axis+1:]``.  Slot ``k`` of group ``g`` holds the k-th kept
    element in ascending index order: ``values[..., g, k, ...]`` is its value (``w``'s dtype) and
    ``indices[..., g, k, ...]`` its in-group index ``0..m-1`` (int64).  ``mask`` is
    ``nm_mask(w, n, m, axis)``.  :func:`nm_mask` keeps exactly ``n`` per group, so every slot is
    used here; :func:`nm_decompress` also accepts groups with fewer kept elements, whose unused
    trailing slots are zero.
    """
    w, n, m, axis = _nm_setup(w, n, m, axis)
    groups = _to_groups(w, axis, m)
    kept = _nm_kept_indices(groups, n)
    values = np.take_along_axis(groups, kept, axis=-1)
    mask = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(mask, kept, True, axis=-1)
    return (np.moveaxis(values, (-2, -1), (axis, axis + 1)),
            np.moveaxis(kept.astype(np.int64), (-2, -1), (axis, axis + 1)),
            _from_groups(mask, axis))


def nm_decompress(values, indices, mask, m, axis=-1):
    """Inverse of :func:`nm_compress`: the dense masked tensor ``w * mask`` (``values``' dtype).

    ``mask`` has the dense shape; ``axis`` refers to it.  Every group must keep at most ``n``
    elements (``n = values.shape[axis + 1]``) and its used slots (the first ``popcount(group
    mask)``) must name exactly the mask's set bits in ascending order; ValueError otherwise.
    Unused slots are ignored.
    """
    m = _check_int("m", m, 1)
    values = _as_array("values", values)
    indices = _as_array("indices", indices, "iu")
    mask = _as_bool_mask("mask", mask)
    if mask.ndim == 0:
        raise ValueError("mask must have at least one dimension, got a 0-D array")
    axis_arg, axis = axis, _check_axis(axis, mask.ndim)
    if mask.shape[axis] % m:
        raise ValueError(f"the length of mask along axis={axis_arg} (mask.shape={mask.shape}) is "
                         f"{mask.shape[axis]}, not a multiple of m={m}")
    if values.ndim != mask.ndim + 1:
        raise ValueError(f"values must have mask.ndim + 1 = {mask.ndim + 1} dimensions, "
                         f"got shape {values.shape}")
    n = values.shape[axis + 1]
    expected = mask.shape[:axis] + (mask.shape[axis] // m, n) + mask.shape[axis + 1:]
    if values.shape != expected:
        raise ValueError(f"values shape {values.shape} does not match {expected} for "
                         f"mask.shape={mask.shape}, m={m}, axis={axis}")
    if indices.shape != values.shape:
        raise ValueError(f"indices shape {indices.shape} does not match values shape "
                         f"{values.shape}")
    if not 1 <= n <= m:
        raise ValueError(f"the slot count n = values.shape[axis + 1] = {n} must be in [1, m={m}]")
    vg = np.moveaxis(values, (axis, axis + 1), (-2, -1))
    ig = np.moveaxis(indices, (axis, axis + 1), (-2, -1))
    mg = _to_groups(mask, axis, m)
    count = mg.sum(axis=-1)
    if np.any(count > n):
        raise ValueError(f"mask keeps {int(count.max())} elements in a group, more than the "
                         f"{n} slots of values")
    used = np.arange(n) < count[..., None]
    set_bits = np.argsort(~mg, axis=-1, kind="stable")[..., :n]     # ascending True positions
    if not np.all(np.where(used, ig == set_bits, True)):
        raise ValueError("indices do not match the set bits of mask (ascending, per group)")
    dense = np.zeros(mg.shape, dtype=values.dtype)
    dense[mg] = vg[used]          # both enumerate groups row-major, kept elements ascending
    return _from_groups(dense, axis)


def nm_select_group(group, n, n_max):
    """Exactly what the hardware N:M selector outputs for one group of ``m = len(group)`` values.

    Returns ``(mask_bits, values, indices)``: ``mask_bits`` an int with bit ``i`` set iff element
    ``i`` is kept; ``values`` a list of ``n_max`` entries, the kept values in ascending index
    order then zeros in the unused slots ``n..n_max-1``; ``indices`` likewise (in-group indices,
    zero in unused slots).  Requires ``1 <= n <= n_max <= m``.
    """
    n, n_max = _check_int("n", n), _check_int("n_max", n_max)
    group = _check_ndim("group", _as_array("group", group), 1)
    m = group.shape[0]
    _check_int("n_max", n_max, 1, m)
    _check_int("n", n, 1, n_max)
    kept = np.flatnonzero(nm_mask(group, n, m))
    pad = [0] * (n_max - n)
    mask_bits = sum(1 << int(i) for i in kept)
    return mask_bits, group[kept].tolist() + pad, kept.tolist() + pad


# --------------------------------------------------------------------------------------------
# Stochastic gradient pruning (SparseTrain / Ye et al.)
# --------------------------------------------------------------------------------------------

def prune_threshold(g, p):
    """Pruning threshold ``tau = Phi^-1((1 + p)/2) * sqrt(pi/2) * mean|g|`` (float).

    For Gaussian ``g`` this prunes (sets below ``tau``) a fraction ``p`` of the elements.
    ``p`` in ``[0, 1)``; ``g`` non-empty.
    """
    c = _prune_coefficient(p)
    g = _as_array("g", g)
    if not g.size:
        raise ValueError("g must not be empty")
    return float(c * _magnitude(g).astype(np.float64).mean())


def prune_threshold_int(g_int, k_p, s, data_width=16):
    """Hardware threshold ``tau = (sum|g_int| * k_p) >> s``, exact (Python ints).

    ``data_width`` (default 16) checks ``g_int`` is in the signed ``data_width``-bit range and
    clamps ``tau`` to ``[0, 2**(data_width-1) - 1]`` (the largest threshold the pruner can hold);
    ``data_width=None`` skips both (any int64 data, unclamped result).
    """
    k_p = _check_int("k_p", k_p, 0, MASK32)
    s = _check_int("s", s, 0)
    if data_width is not None:
        data_width = _check_int("data_width", data_width, 2, 64)
    g = _as_int64("g_int", g_int)
    if data_width is not None:
        _check_signed_range("g_int", g, data_width)
    tau = (_exact_abs_sum(g) * k_p) >> s
    if data_width is not None:
        tau = min(tau, (1 << (data_width - 1)) - 1)
    return tau


def stochastic_prune(g, tau, rng):
    """Float stochastic pruning: unbiased, E[out] = g.

    ``|g| >= tau`` stays; otherwise ``tau * sign(g)`` with probability ``|g| / tau``, else 0,
    drawing ``u = rng.random(g.shape)`` and keeping iff ``u < |g| / tau``.  ``tau <= 0`` returns a
    copy of ``g`` and draws nothing.  Output dtype float64.
    """
    tau = _check_real("tau", tau, -math.inf, math.inf)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
    g = _as_array("g", g).astype(np.float64)
    if tau <= 0:
        return g
    mag = np.abs(g)
    keep = rng.random(g.shape) < mag / tau
    return np.where(mag >= tau, g, np.where(keep, tau * np.sign(g), 0.0))


def stochastic_prune_int(g_int, tau_int, seed, data_width=16):
    """Bit-exact hardware stochastic pruning; returns ``(pruned int64 array, final_state)``.

    Elements are processed in C (row-major) order with one xorshift32 step per element, pruned or
    not.  For element ``i``: ``state = xorshift32_step(state)``; ``u = state >> 16``;
    ``r = (u * tau) >> 16`` (in ``[0, tau)``); ``|g| >= tau`` -> ``g``; else ``r < |g|`` ->
    ``tau * sign(g)``; else 0.  ``final_state`` is the state after the last element (``seed``
    when ``g_int`` is empty).

    ``data_width`` in [2, 48]; ``tau_int`` in ``[0, 2**(data_width-1) - 1]``; ``g_int`` integers
    in the signed ``data_width``-bit range; ``seed`` in ``[1, 2**32 - 1]``.
    """
    data_width = _check_int("data_width", data_width, 2, 48)
    tau = _check_int("tau_int", tau_int, 0, (1 << (data_width - 1)) - 1)
    seed = _check_int("seed", seed, 1, MASK32)
    g = _check_signed_range("g_int", _as_int64("g_int", g_int), data_width)
    flat = g.ravel()
    states = xorshift32_stream(seed, flat.size)
    r = ((states >> 16).astype(np.int64) * tau) >> 16
    mag = np.abs(flat)
    out = np.where(mag >= tau, flat, np.where(r < mag, tau * np.sign(flat), 0))
    final_state = int(states[-1]) if flat.size else seed
    return out.astype(np.int64).reshape(g.shape), final_state


# --------------------------------------------------------------------------------------------
# Convolution and FC in the three training phases
# --------------------------------------------------------------------------------------------

class _ConvGeom(NamedTuple):
    b: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    ho: int
    wo: int
    stride: int
    padding: int


def _conv_geometry(x_name, x_shape, w_name, w_shape, stride, padding):
    """Validate a conv's shapes; return its geometry.  Shapes are 4-tuples of ints >= 1."""
    b, cin, h, w = _check_shape(f"{x_name} shape", x_shape, 4)
    cout, wcin, kh, kw = _check_shape(f"{w_name} shape", w_shape, 4)
    if cin != wcin:
        raise ValueError(f"channel mismatch: {x_name} has Cin={cin} (shape {tuple(x_shape)}) but "
                         f"{w_name} has Cin={wcin} (shape {tuple(w_shape)})")
    hp, wp = h + 2 * padding, w + 2 * padding
    if kh > hp or kw > wp:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
                         f"(H={h}, W={w}, padding={padding})")
    return _ConvGeom(b, cin, h, w, cout, kh, kw, (hp - kh) // stride + 1, (wp - kw) // stride + 1,
                     stride, padding)


def _check_stride_padding(stride, padding):
    return _check_int("stride", stride, 1), _check_int("padding", padding, 0)


def _check_dy(dy, g):
    expected = (g.b, g.cout, g.ho, g.wo)
    if dy.shape != expected:
        raise ValueError(f"dy shape {dy.shape} does not match the forward output shape {expected} "
                         f"for x shape {(g.b, g.cin, g.h, g.w)}, w shape "
                         f"{(g.cout, g.cin, g.kh, g.kw)}, stride={g.stride}, padding={g.padding}")


def _pad(x, padding):
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def _windows(x, g):
    """(B, C, Ho, Wo, Kh, Kw) view of the padded input's stride-spaced kernel windows."""
    view = sliding_window_view(_pad(x, g.padding), (g.kh, g.kw), axis=(2, 3))
    return view[:, :, ::g.stride, ::g.stride]


def _prepare_forward(x, w, stride, padding):
    stride, padding = _check_stride_padding(stride, padding)
    x, w = _as_array("x", x), _as_array("w", w)
    g = _conv_geometry("x", x.shape, "w", w.shape, stride, padding)
    x, w = _compute_pair("x", x, "w", w, g.cin * g.kh * g.kw)
    return x, w, g


def _prepare_backward(first, second, shape_name, shape, stride, padding, terms):
    """The checks BP and WG share. ``first``, ``second``: ``(name, array)`` of the two operands
    (``dy`` and ``w`` in BP, ``x`` and ``dy`` in WG); ``shape``: the shape of the tensor the
    pass produces (``x_shape`` / ``w_shape``); ``terms(g)``: products per output element.
    Returns ``(first, second, geometry)``."""
    stride, padding = _check_stride_padding(stride, padding)
    shape = _check_shape(shape_name, shape, 4)
    (n1, a1), (n2, a2) = ((n, _as_array(n, a)) for n, a in (first, second))
    ops = {n1: a1, n2: a2}
    if shape_name == "x_shape":
        g = _conv_geometry("x_shape", shape, "w", ops["w"].shape, stride, padding)
    else:
        g = _conv_geometry("x", ops["x"].shape, "w_shape", shape, stride, padding)
    _check_dy(ops["dy"], g)
    a1, a2 = _compute_pair(n1, a1, n2, a2, terms(g))
    return a1, a2, g


def _prepare_backward_input(dy, w, x_shape, stride, padding):
    return _prepare_backward(("dy", dy), ("w", w), "x_shape", x_shape, stride, padding,
                             lambda g: g.cout * g.kh * g.kw)


def _prepare_backward_weight(x, dy, w_shape, stride, padding):
    return _prepare_backward(("x", x), ("dy", dy), "w_shape", w_shape, stride, padding,
                             lambda g: g.b * g.ho * g.wo)


def conv2d_forward(x, w, stride=1, padding=0):
    """Forward conv (a correlation): x (B, Cin, H, W), w (Cout, Cin, Kh, Kw) -> (B, Cout, Ho, Wo).

    ``out[b, n, y, x] = sum_{c, i, j} xpad[b, c, y*S + i, x*S + j] * w[n, c, i, j]`` with ``xpad``
    zero-padded by ``padding`` on each side; ``Ho = (H + 2*padding - Kh) // stride + 1``.
    Exact int64 for integer inputs, float64 otherwise.
    """
    x, w, g = _prepare_forward(x, w, stride, padding)
    out = np.tensordot(_windows(x, g), w, axes=([1, 4, 5], [1, 2, 3]))     # (B, Ho, Wo, Cout)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    """Gradient of :func:`conv2d_forward` wrt ``x``: dy ``(B, Cout, Ho, Wo)`` -> ``x_shape``.

    The transposed conv: every ``dy[b, n, y, x] * w[n, c, i, j]`` is scattered to padded position
    ``(y*S + i, x*S + j)``; the padding border is then cropped.  Input positions covered by no
    window (when ``(H + 2p - Kh) % S != 0``) get 0.
    """
    dy, w, g = _prepare_backward_input(dy, w, x_shape, stride, padding)
    s, p = g.stride, g.padding
    dxp = np.zeros((g.b, g.cin, g.h + 2 * p, g.w + 2 * p), dtype=dy.dtype)
    taps = np.tensordot(dy, w, axes=([1], [0]))                   # (B, Ho, Wo, Cin, Kh, Kw)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[:, :, i:i + s * (g.ho - 1) + 1:s, j:j + s * (g.wo - 1) + 1:s] += \
                taps[..., i, j].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(dxp[:, :, p:p + g.h, p:p + g.w])


def conv2d_backward_weight(x, dy, w_shape, stride=1, padding=0):
    """Gradient of :func:`conv2d_forward` wrt ``w``: ``-> w_shape (Cout, Cin, Kh, Kw)``.

    ``dw[n, c, i, j] = sum_{b, y, x} dy[b, n, y, x] * xpad[b, c, y*S + i, x*S + j]``.
    """
    x, dy, g = _prepare_backward_weight(x, dy, w_shape, stride, padding)
    return np.tensordot(dy, _windows(x, g), axes=([0, 2, 3], [0, 2, 3]))  # (Cout, Cin, Kh, Kw)


def _fc_as_conv(x_name, x, w_name, w):
    """Validate FC operands (2-D, matching Cin) and view them as 1x1 conv operands."""
    x = _check_ndim(x_name, _as_array(x_name, x), 2)
    w = _check_ndim(w_name, _as_array(w_name, w), 2)
    return x[:, :, None, None], w[:, :, None, None]


def fc_forward(x, w):
    """FC forward ``x (B, Cin) @ w (Cout, Cin)^T -> (B, Cout)``: the 1x1 conv."""
    x4, w4 = _fc_as_conv("x", x, "w", w)
    return conv2d_forward(x4, w4)[:, :, 0, 0]


def fc_backward_input(dy, w):
    """FC input gradient ``dy (B, Cout) @ w (Cout, Cin) -> (B, Cin)``."""
    dy4, w4 = _fc_as_conv("dy", dy, "w", w)
    return conv2d_backward_input(dy4, w4, (dy4.shape[0], w4.shape[1], 1, 1))[:, :, 0, 0]


def fc_backward_weight(x, dy):
    """FC weight gradient ``dy (B, Cout)^T @ x (B, Cin) -> (Cout, Cin)``."""
    x4, dy4 = _fc_as_conv("x", x, "dy", dy)
    if x4.shape[0] != dy4.shape[0]:
        raise ValueError(f"batch mismatch: x has B={x4.shape[0]} but dy has B={dy4.shape[0]}")
    return conv2d_backward_weight(x4, dy4, (dy4.shape[1], x4.shape[1], 1, 1))[:, :, 0, 0]


# --------------------------------------------------------------------------------------------
# Batch norm and global average pooling in integer arithmetic (*ours*, issue 17 item 1)
# --------------------------------------------------------------------------------------------
#
# Fixed point with ``frac_bits`` fractional bits (``fb``), as every tensor of the training step.
# ``rdiv(a, n) = floor((2a + n) / 2n)`` (round half up) is the one integer division;
# ``writeback`` (shift by ``fb``, half to even) rescales products; ``sat`` clips to the signed
# ``data_width`` range. Statistics are per channel (axis 1) over every other axis, ``n``
# elements. Forward:
#
#   mu = rdiv(sum z, n)                  var = rdiv(sum (z - mu)^2, n)      (2 fb fraction)
#   std = isqrt((var + eps) * 2^(2 fb))  inv = rdiv(2^(4 fb), std)          (2 fb fraction)
#   xhat = sat(rdiv((z - mu) * inv, 2^(2 fb)))
#   y = sat(writeback(gamma * xhat) + beta)
#
# Backward (the batch statistics differentiated, as the float form):
#
#   dbeta = sum d                        dgamma = writeback(sum d * xhat)
#   dxhat = writeback(d * gamma)         s1 = sum dxhat     s2 = writeback(sum dxhat * xhat)
#   dz = sat(rdiv(inv * (n * dxhat - s1 - writeback(xhat * s2)), n * 2^(2 fb)))
#
# ``std`` and ``inv`` carry 2 fb fractional bits (with fb the normalisation erred by up to 10
# LSB on narrow channels). ``eps`` (default 1: 2^-(2 fb) in the variance's units, 1.5e-5 at
# fb = 8, the float study's 1e-5) keeps ``std >= 2^fb``. ``dgamma`` / ``dbeta`` are exact int64
# (the caller saturates them where it stores them). Every intermediate fits int64 for
# ``data_width <= 16``, ``frac_bits <= 8`` and ``n < 2^20``.

def _rdiv(a, n):
    """``floor((2a + n) / 2n)``: ``a / n`` rounded half up (``n > 0``, int64 arrays)."""
    return (2 * a + n) // (2 * n)


def _isqrt(v):
    """Exact ``floor(sqrt(v))`` of a non-negative int64 array."""
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r = np.where(r * r > v, r - 1, r)
    return np.where((r + 1) * (r + 1) <= v, r + 1, r)


def _bn_check(z, gamma, frac_bits, data_width):
    frac_bits = _check_int("frac_bits", frac_bits, 0, 8)
    data_width = _check_int("data_width", data_width, 2, 16)
    z = _as_int64("z", z)
    if z.ndim not in (2, 4):
        raise ValueError(f"z must be (B, C) or (B, C, H, W), not shape {z.shape}")
    gamma = _as_int64("gamma", gamma)
    if gamma.shape != (z.shape[1],):
        raise ValueError(f"gamma must have shape ({z.shape[1]},), not {gamma.shape}")
    axes = (0,) if z.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (z.ndim - 2)
    return z, gamma, frac_bits, data_width, axes, shape


def _sat(a, data_width):
    return np.clip(a, -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1).astype(np.int64)


def batchnorm_forward_int(z, gamma, beta, frac_bits, data_width, eps=1):
    """Training-mode batch norm of ``z`` (``(B, C)`` or ``(B, C, H, W)``, per channel) in
    integer arithmetic (the definition above). Returns ``(y, cache)``; ``cache = (xhat, inv,
    n)`` is what :func:`batchnorm_backward_int` needs."""
    z, gamma, fb, dw, axes, shape = _bn_check(z, gamma, frac_bits, data_width)
    beta = _as_int64("beta", beta)
    if beta.shape != gamma.shape:
        raise ValueError(f"beta must have shape {gamma.shape}, not {beta.shape}")
    eps = _check_int("eps", eps, 1)
    n = z.size // z.shape[1]
    mu = _rdiv(z.sum(axis=axes), n).reshape(shape)
    dev = z - mu
    var = _rdiv((dev * dev).sum(axis=axes), n)
    inv = _rdiv(np.int64(1) << (4 * fb), _isqrt((var + eps) << (2 * fb))).reshape(shape)
    xhat = _sat(_rdiv(dev * inv, np.int64(1) << (2 * fb)), dw)
    y = _sat(writeback(gamma.reshape(shape) * xhat, fb, 64) + beta.reshape(shape), dw)
    return y, (xhat, inv, n)


def batchnorm_backward_int(d, gamma, cache, frac_bits, data_width):
    """``(dz, dgamma, dbeta)`` of :func:`batchnorm_forward_int` for the output gradient ``d``
    (the definition above)."""
    d, gamma, fb, dw, axes, shape = _bn_check(d, gamma, frac_bits, data_width)
    xhat, inv, n = cache
    if np.shape(xhat) != d.shape:
        raise ValueError(f"d must have the forward's shape {np.shape(xhat)}, not {d.shape}")
    dbeta = d.sum(axis=axes)
    dgamma = writeback((d * xhat).sum(axis=axes), fb, 64)
    dxhat = writeback(d * gamma.reshape(shape), fb, 64)
    s1 = dxhat.sum(axis=axes).reshape(shape)
    s2 = writeback((dxhat * xhat).sum(axis=axes), fb, 64).reshape(shape)
    t = n * dxhat - s1 - writeback(xhat * s2, fb, 64)
    dz = _sat(_rdiv(inv * t, np.int64(n) << (2 * fb)), dw)
    return dz, dgamma, dbeta


def avgpool_global_int(r):
    """Global average pool ``(B, C, H, W) -> (B, C)``: ``rdiv(sum over H, W, H*W)``."""
    r = _check_ndim("r", _as_int64("r", r), 4)
    return _rdiv(r.sum(axis=(2, 3)), r.shape[2] * r.shape[3])


def avgpool_global_backward_int(d, shape):
    """The gradient of :func:`avgpool_global_int`: each of the ``H*W`` inputs of ``(b, c)``
    gets ``rdiv(d[b, c], H*W)``; ``shape`` the input's ``(B, C, H, W)``."""
    d = _check_ndim("d", _as_int64("d", d), 2)
    B, C, H, W = (int(v) for v in shape)
    if d.shape != (B, C):
        raise ValueError(f"d must have shape {(B, C)}, not {d.shape}")
    return np.broadcast_to(_rdiv(d, H * W)[:, :, None, None], (B, C, H, W)).copy()


# --------------------------------------------------------------------------------------------
# 1-D row primitives (section 5) and the 2-D convolutions built from them
# --------------------------------------------------------------------------------------------

def _row_pair(name_a, a, name_b, b, terms_of):
    """Validate two 1-D numeric rows; cast to the compute dtype (terms_of(len_a, len_b) terms)."""
    a = _check_ndim(name_a, _as_array(name_a, a), 1)
    b = _check_ndim(name_b, _as_array(name_b, b), 1)
    return _compute_pair(name_a, a, name_b, b, terms_of(a.size, b.size))


def row_fp(x_row, w_row, stride, out_len):
    """FP row primitive: ``out[j] = sum_r x_row[j*stride + r] * w_row[r]``, ``j < out_len``.

    ``x_row`` is an already padded input row; taps past its end count as 0.
    """
    stride, out_len = _check_int("stride", stride, 1), _check_int("out_len", out_len, 0)
    x, w = _row_pair("x_row", x_row, "w_row", w_row, lambda nx, nw: nw)
    span = stride * (out_len - 1) + 1 if out_len else 0
    xpad = np.zeros(max(x.size, span + w.size), dtype=x.dtype)
    xpad[:x.size] = x
    out = np.zeros(out_len, dtype=x.dtype)
    for r in range(w.size):
        out += w[r] * xpad[r:r + span:stride]
    return out


def row_bp(dy_row, w_row, stride, in_len):
    """BP row primitive (scatter form): ``out[j*stride + r] += dy_row[j] * w_row[r]``.

    Over all ``j, r`` with ``0 <= j*stride + r < in_len``; ``out`` has length ``in_len`` (the
    padded input row).  Equivalently ``out[t] = sum_r u[t - r] * w_row[r]``: a correlation of
    ``u`` (``dy_row`` upsampled by ``stride``, zero-padded by ``K - 1`` in front) with the
    *flipped* kernel row, which is how the BP phase streams ``dy`` against a flipped kernel.
    """
    stride, in_len = _check_int("stride", stride, 1), _check_int("in_len", in_len, 0)
    dy, w = _row_pair("dy_row", dy_row, "w_row", w_row, lambda nd, nw: nw)
    out = np.zeros(in_len, dtype=dy.dtype)
    for r in range(min(w.size, in_len)):
        dst = out[r::stride]                                   # view: positions r + j*stride
        count = min(dy.size, dst.size)
        dst[:count] += w[r] * dy[:count]
    return out


def row_wg(x_row, dy_row, stride, k):
    """WG row primitive: ``out[r] = sum_j x_row[j*stride + r] * dy_row[j]`` for ``r < k``.

    Taps past the end of ``x_row`` count as 0.
    """
    stride, k = _check_int("stride", stride, 1), _check_int("k", k, 1)
    x, dy = _row_pair("x_row", x_row, "dy_row", dy_row, lambda nx, nd: nd)
    out = np.zeros(k, dtype=x.dtype)
    for r in range(k):
        xs = x[r::stride][:dy.size]
        out[r] = xs @ dy[:xs.size]
    return out


def conv2d_forward_rows(x, w, stride=1, padding=0):
    """:func:`conv2d_forward` built from :func:`row_fp` only (same result, exactly).

    ``O[b][n][y] = sum_{c, r} row_fp(Xpad[b][c][y*S + r], W[n][c][r], S, Wo)``.
    """
    x, w, g = _prepare_forward(x, w, stride, padding)
    xp = _pad(x, g.padding)
    out = np.zeros((g.b, g.cout, g.ho, g.wo), dtype=x.dtype)
    for b, n, y, c, r in np.ndindex(g.b, g.cout, g.ho, g.cin, g.kh):
        out[b, n, y] += row_fp(xp[b, c, y * g.stride + r], w[n, c, r], g.stride, g.wo)
    return out


def conv2d_backward_input_rows(dy, w, x_shape, stride=1, padding=0):
    """:func:`conv2d_backward_input` built from :func:`row_bp` only.

    ``dXpad[b][c][y*S + r] += row_bp(dY[b][n][y], W[n][c][r], S, W + 2p)``, then cropped.
    """
    dy, w, g = _prepare_backward_input(dy, w, x_shape, stride, padding)
    p = g.padding
    dxp = np.zeros((g.b, g.cin, g.h + 2 * p, g.w + 2 * p), dtype=dy.dtype)
    for b, n, y, c, r in np.ndindex(g.b, g.cout, g.ho, g.cin, g.kh):
        dxp[b, c, y * g.stride + r] += row_bp(dy[b, n, y], w[n, c, r], g.stride, g.w + 2 * p)
    return np.ascontiguousarray(dxp[:, :, p:p + g.h, p:p + g.w])


def conv2d_backward_weight_rows(x, dy, w_shape, stride=1, padding=0):
    """:func:`conv2d_backward_weight` built from :func:`row_wg` only.

    ``dW[n][c][r] = sum_{b, y} row_wg(Xpad[b][c][y*S + r], dY[b][n][y], S, Kw)``.
    """
    x, dy, g = _prepare_backward_weight(x, dy, w_shape, stride, padding)
    xp = _pad(x, g.padding)
    dw = np.zeros((g.cout, g.cin, g.kh, g.kw), dtype=x.dtype)
    for b, n, y, c, r in np.ndindex(g.b, g.cout, g.ho, g.cin, g.kh):
        dw[n, c, r] += row_wg(xp[b, c, y * g.stride + r], dy[b, n, y], g.stride, g.kw)
    return dw


# --------------------------------------------------------------------------------------------
# Row compression: the hardware Compressor's (value, column, last) contract (*ours*)
# --------------------------------------------------------------------------------------------

def _scatter_rows(values, cols, row_ids, nrows, length):
    """Place a validated (value, col) stream with row ids into an int64 (nrows, length) matrix."""
    if np.any((cols < 0) | (cols >= length)):
        raise ValueError(f"cols must be in [0, {length - 1}], got {cols.min()}..{cols.max()}")
    same_row = row_ids[1:] == row_ids[:-1]
    if np.any(same_row & (cols[1:] <= cols[:-1])):
        raise ValueError("cols must be strictly increasing within a row")
    out = np.zeros((nrows, length), dtype=np.int64)
    out[row_ids, cols] = values
    return out


def _stream_arrays(values, cols):
    values = _check_ndim("values", _as_int64("values", values), 1)
    cols = _check_ndim("cols", _as_int64("cols", cols), 1)
    if values.shape != cols.shape:
        raise ValueError(f"values and cols lengths differ: {values.size} != {cols.size}")
    return values, cols


def decompress_row(values, cols, length):
    """Inverse of :func:`compress_row`: the int64 row of ``length`` with ``values`` at ``cols``.

    ``cols`` must be strictly increasing and in ``[0, length)``; other positions are 0.
    """
    length = _check_int("length", length, 1)
    values, cols = _stream_arrays(values, cols)
    return _scatter_rows(values, cols, np.zeros(cols.size, dtype=np.int64), 1, length)[0]


def decompress_rows(values, cols, last, length):
    """Inverse of :func:`compress_rows`: an int64 matrix (R, length), R = number of last beats.

    Rows are delimited by the ``last`` flags; the stream must end with a last beat and every last
    beat must sit at column ``length - 1`` (the compressor's contract).
    """
    length = _check_int("length", length, 1)
    values, cols = _stream_arrays(values, cols)
    last = _as_bool_mask("last", last, cols.shape)
    if last.size and not last[-1]:
        raise ValueError("the stream must end with a last beat")
    if np.any(last & (cols != length - 1)):
        raise ValueError(f"every last beat must be at column length - 1 = {length - 1}")
    row_ids = np.concatenate(([0], np.cumsum(last)[:-1])) if last.size else np.zeros(0, np.int64)
    return _scatter_rows(values, cols, row_ids.astype(np.int64), int(last.sum()), length)
