"""Number formats shared by the offline mapper (``gen/``) and the reference model (``sim/``).

One home for the facts both sides must agree on bit for bit:

* the write-back rule (:func:`writeback`): arithmetic shift right by ``frac_bits``, round half to
  even, saturate to ``data_width`` bits (the numeric contract, ``docs/golden-model.md``);
* the compressed-row format (:func:`compress_row`, :func:`compress_rows`): the Compressor's
  ``(value, column, last)`` stream, the final column always emitted with ``last``;
* the pruning threshold's integer constants (:func:`prune_threshold_params`):
  ``tau = (sum|g| * k_p) >> s``, computed by the schedule compiler per layer;
* the array validators every numeric entry point uses.

:mod:`sparseforge.sim.reference.golden` re-exports these under its stable API; the tests check
them against independent implementations (``tests/sim/test_golden_*.py``).
"""

from __future__ import annotations

import math
from numbers import Real
from statistics import NormalDist

import numpy as np

from sparseforge.hdl._validate import check_int

__all__ = ["NotNumericError", "MASK32", "writeback", "compress_row", "compress_rows",
           "prune_threshold_params"]

MASK32 = 0xFFFFFFFF
_INT64_MAX = (1 << 63) - 1
_COMPRESS_MODES = ("none", "relu", "mask")


def _check_int(name, value, lo=None, hi=None):
    """The package's integer check in the numeric API's message style."""
    return check_int(name, value, lo, hi, numeric_api=True)


class NotNumericError(TypeError, ValueError):
    """An array argument is not numeric (integer or real float).

    Both a ``TypeError`` and a ``ValueError`` (like numpy's ``AxisError``), so callers catching
    either see it.
    """


def _check_real(name, value, lo, hi, *, hi_open=False):
    """Return ``value`` as a finite float in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``)."""
    if not isinstance(value, Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)):
        allowed = f" in [{lo}, {hi}{')' if hi_open else ']'}" if math.isfinite(lo + hi) else ""
        raise ValueError(f"{name} must be a finite number{allowed}, got {value}")
    return value


def _as_array(name, x, kinds="iuf"):
    """``np.asarray(x)`` if its dtype kind is in ``kinds`` ('i', 'u', 'f'), else NotNumericError."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise NotNumericError(f"{name} must be a numeric array-like: {exc}") from None
    if kinds == "iu" and arr.size == 0 and arr.dtype == np.float64:
        arr = arr.astype(np.int64)      # an empty list: numpy's default float64 carries no values
    if arr.dtype.kind not in kinds:
        wanted = "an integer" if kinds == "iu" else "a numeric (integer or real float)"
        raise NotNumericError(f"{name} must have {wanted} dtype, got dtype {arr.dtype}")
    return arr


def _as_int64(name, x):
    """An integer array-like as ``int64``; ValueError if a uint64 value does not fit."""
    arr = _as_array(name, x, "iu")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
        raise ValueError(f"{name} has a value {int(arr.max())} that does not fit in int64")
    return arr.astype(np.int64, copy=False)


def _check_ndim(name, arr, *ndims):
    if arr.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {wanted}, got {arr.ndim}-D shape {arr.shape}")
    return arr


def _as_bool_mask(name, mask, shape=None):
    """A bool array (of ``shape`` unless None); integer arrays of 0/1 are accepted too."""
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a bool array-like: {exc}") from None
    if arr.dtype.kind in "iu" and np.all((arr == 0) | (arr == 1)):
        arr = arr.astype(bool)
    if arr.dtype != bool:
        raise TypeError(f"{name} must be a bool array (or 0/1 integers), got dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} shape {arr.shape} does not match the expected shape "
                         f"{tuple(shape)}")
    return arr


def _prune_coefficient(p):
    """``Phi^-1((1 + p) / 2) * sqrt(pi / 2)`` for a target pruning rate ``p`` in [0, 1)."""
    p = _check_real("p", p, 0.0, 1.0, hi_open=True)
    return NormalDist().inv_cdf((1.0 + p) / 2.0) * math.sqrt(math.pi / 2.0)


def prune_threshold_params(p, numel, shift=32):
    """Integer constants ``(k_p, s)`` of the hardware threshold ``tau = (sum|g| * k_p) >> s``.

    ``k_p = round(Phi^-1((1+p)/2) * sqrt(pi/2) / numel * 2**shift)`` (Python ``round``, half to
    even), ``s = shift``.  ``k_p`` must fit in 32 bits unsigned; if it rounds to 0 or exceeds
    ``2**32 - 1`` a ValueError names a shift that works.  ``p = 0`` gives ``k_p = 0`` exactly
    (threshold 0: nothing is pruned), which is returned, not rejected.
    """
    c = _prune_coefficient(p)
    numel = _check_int("numel", numel, 1)
    shift = _check_int("shift", shift, 0, 127)

    def k_of(s):
        return round(c / numel * 2.0 ** s)

    k_p = k_of(shift)
    if c and not 1 <= k_p <= MASK32:
        best = max(s for s in range(128) if k_of(s) <= MASK32)
        hint = "larger" if k_p == 0 else "smaller"
        raise ValueError(f"k_p = {k_p} for p={p}, numel={numel}, shift={shift} does not fit in "
                         f"[1, 2**32 - 1]; use a {hint} shift (shift={best} keeps the most "
                         f"precision)")
    return k_p, shift


def writeback(acc, frac_bits, data_width):
    """Hardware write-back of accumulator values to ``data_width``-bit integers (int64 array).

    Arithmetic shift right by ``frac_bits`` with round half to even (``acc / 2**frac_bits``
    rounded to the nearest integer, exact halves to the even one), then saturation to
    ``[-2**(data_width-1), 2**(data_width-1) - 1]``.  ``frac_bits = 0`` only saturates.
    ``acc``: integer array-like (int64 range); ``frac_bits`` in [0, 63]; ``data_width`` in [2, 64].
    """
    frac_bits = _check_int("frac_bits", frac_bits, 0, 63)
    data_width = _check_int("data_width", data_width, 2, 64)
    acc = _as_int64("acc", acc)
    q = acc >> frac_bits                                          # floor division
    if frac_bits:
        rem = acc & np.int64((1 << frac_bits) - 1)                # in [0, 2**frac_bits)
        half = np.int64(1 << (frac_bits - 1))
        q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    return np.clip(q, -(1 << (data_width - 1)), (1 << (data_width - 1)) - 1).astype(np.int64)


def compress_rows(x2d, mode="none", mask=None):
    """Compress every row of the integer matrix ``x2d`` (R, L); returns ``(values, cols, last)``.

    The per-row streams of :func:`compress_row`, concatenated in row order (int64, int64, bool
    arrays); each row's stream ends with its single ``last`` beat.
    """
    if mode not in _COMPRESS_MODES:
        raise ValueError(f"mode must be one of {_COMPRESS_MODES}, got {mode!r}")
    x = _check_ndim("x2d", _as_int64("x2d", x2d), 2)
    if x.shape[1] < 1:
        raise ValueError(f"rows must have length >= 1, got shape {x.shape}")
    if mode == "mask":
        if mask is None:
            raise ValueError("mode='mask' needs a mask (bool array of the row shape)")
        x = np.where(_as_bool_mask("mask", mask, x.shape), x, 0)
    elif mask is not None:
        raise ValueError(f"mask is only used with mode='mask', got mode={mode!r}")
    elif mode == "relu":
        x = np.maximum(x, 0)
    emit = x != 0
    emit[:, -1] = True                                   # the final column always: last beat
    _, cols = np.nonzero(emit)                           # row-major: rows in order, cols ascending
    return x[emit], cols.astype(np.int64), cols == x.shape[1] - 1


def compress_row(row, mode="none", mask=None):
    """Compress one integer row to the Compressor's ``(values, cols, last)`` stream (*ours*).

    Masking first: ``mode="none"`` as is; ``"relu"``: negatives -> 0; ``"mask"``: elements whose
    ``mask`` bit is False -> 0 (ReLU-derivative masking; ``mask`` required, same shape, and only
    allowed with this mode).  Then every non-zero element before the final column is emitted in
    column order with ``last=False``, and the final column (``len - 1``) is **always** emitted with
    ``last=True``, zero or not: every row, an all-zero one included, ends in exactly one last
    beat.  Row length >= 1.  Returns int64 values, int64 cols, bool last.
    """
    row = _check_ndim("row", _as_int64("row", row), 1)
    if mask is not None:
        mask = _as_bool_mask("mask", mask, row.shape)[None, :]
    return compress_rows(row[None, :], mode, mask)
