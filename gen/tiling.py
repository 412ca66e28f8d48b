"""The one tiler: how a layer phase's output is cut into tiles that fit a PE's partial-sum bank.

Three consumers, one rule. A column's FP/BP output rows ``(b, c_local, y)`` of ``row_len``
words are taken **y-major** (every channel's row ``y``, then ``y + 1``, ...: :func:`y_major`)
and cut into consecutive bands of :func:`rows_per_tile` = ``psum_words // row_len`` rows
(:func:`bands`); a WG phase cuts its weight-gradient addresses into bands of ``psum_words``.

* :func:`sparseforge.gen.mapper.pe.split_tiles` (the exact offline mapper, equal to the RTL)
  applies it to one PE job's rows and taps;
* :mod:`sparseforge.sim.perf.model` (the statistical model) enumerates the same bands of the
  array mapping without building the jobs;
* :mod:`sparseforge.gen.schedule` (the schedule compiler) applies it per group of local output
  channels whose taps fit ``weight_buf_depth`` (FP/BP), and tiles WG differently: groups of
  local input channels x ranges of output channels x batch chunks sized by the psum bank and
  the activation scratchpad (``act_buf_depth``), accumulating over the batch chunks -- the
  controller's scratchpads, which the mapper and the model do not model.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bands", "rows_per_tile", "y_major"]


def bands(total: int, size: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges of at most ``size`` covering ``range(total)``."""
    if size < 1:
        raise ValueError(f"band size must be >= 1, not {size}")
    return [(s, min(total, s + size)) for s in range(0, total, size)]


def rows_per_tile(psum_words: int, row_len: int) -> int:
    """Output rows of ``row_len`` words one psum bank of ``psum_words`` holds (0: none fits)."""
    return psum_words // row_len


def y_major(n_rows: int, rows_per_plane: int) -> np.ndarray:
    """The order output rows ``(plane, y)`` (index ``plane * rows_per_plane + y``, planes =
    ``(b, c)``) are tiled in: ``y`` major, then the planes."""
    idx = np.arange(n_rows)
    return np.lexsort((idx // rows_per_plane, idx % rows_per_plane))
