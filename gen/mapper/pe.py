"""Mapping of a convolution layer onto one dual-sparse PE, and the PE's exact cycle model.

:func:`map_conv_fp`, :func:`map_conv_bp`, :func:`map_conv_wg` turn a whole (small) layer into a
:class:`PEJob` for ONE :class:`~sparseforge.hdl.pe.PE` whose partial-sum banks hold the whole
output: the operand rows (the ``x`` stream), their tap bundles (the ``taps`` stream), the dense
X rows (WG, the ``dense`` stream), the drain commands, and the control inputs. ``dense=True``
gives the *dense mode* baseline: the same hardware fed uncompressed rows (every column a beat,
zeros stored: ``skip_zero = 0``) and every kernel tap.

:func:`execute` runs a job functionally (per lane, per bank, exactly the RTL's arithmetic) and
:func:`cycles` predicts the RTL's performance counters (``cycles``, ``stall_in``, ``busy_mac``,
``nnz``) exactly, for never-idle input streams and a never back-pressured output; with idle
gaps or back-pressure ``cycles - stall_in - stall_out`` is still predicted exactly
(:attr:`PEStats.work`).

Schedule rules (*ours*):

* Tap bundles depend on the weights and the geometry only, never on the operand values (an
  offline schedule cannot know the activations): a row's bundles are sent whether or not its
  operand row has non-zeros. Rows with no tap at all (e.g. FP rows a stride-2 kernel never
  reads, or whose kernel rows are all pruned) are omitted from both streams
  (``empty_rows="omit"``), or sent with a single 1-cycle skip bundle (``empty_rows="skip"``,
  for a PE that must consume a row broadcast to several PEs).
* Taps are ordered (n, kr, kw) in FP, (c, kr, kw) in BP/WG, and in stride-2 FP grouped by the
  column parity they need (``(pad + kw) % 2``), parity 0 first; each group is cut into bundles
  of ``lanes`` slots, the last one padded with disabled slots.
* Psum layout: FP ``((b*Cout + n)*Ho + y)*Wo + x``; BP ``((b*Cin + c)*H + h)*W + x``; WG
  ``((n*Cin + c)*Kh + kr)*Kw + kw``. Dense scratchpad (WG): ``((b*Cin + c)*H + h)*W + x``,
  minus the chunk's first word when the input is chunked.
* WG inputs larger than ``act_buf_depth`` (*ours*): chunks of whole ``(b, c)`` planes
  (:func:`wg_chunks`), rows taken chunk by chunk, ``eoc`` on each run's last bundle; per tile
  each run's chunk is loaded (all but the first tile's first during the job), costing
  ``RELOAD_GAP`` + its words before the run's first row (:func:`cycles_grid`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sparseforge.gen import numfmt, tiling
from sparseforge.gen.config import AcceleratorConfig
from sparseforge.hdl.wire import Phase

__all__ = ["PEJob", "OperandRow", "PEStats", "map_conv_fp", "map_conv_bp", "map_conv_wg",
           "wg_chunks", "RELOAD_GAP",
           "execute", "cycles", "cycles_tiles", "cycles_grid", "split_tiles", "assemble_tiles",
           "tile_expected", "row_cost", "MODES",
           "PIPE_FLUSH", "DRAIN_LATENCY", "RELEASE", "DRAIN_ACCEPT"]

MODES = {p.name.lower(): p.value for p in Phase}     # the PE's ``mode`` input per phase name
#: Engine pipeline cycles after a tile's last bundle before the first drain read.
PIPE_FLUSH = 5
#: Drain pipeline cycles after the last drain read until its beat leaves on ``o``.
DRAIN_LATENCY = 4
#: Cycles from a tile's last drain read until its psum half is free again (cleared in D1).
RELEASE = 2
#: WG chunked: cycles from the end of a scratchpad image's last bundle (its ``eoc``/``eot``
#: bundle's last processing cycle + 1) to the first beat of the next image's load (the PE
#: accepts the load once that bundle's last scratchpad reads are issued).
RELOAD_GAP = 2
#: Cycles from accepting a drain command to its first read (the command is registered
#: first; a command is accepted after the previous one's last read).
DRAIN_ACCEPT = 1


@dataclass
class OperandRow:
    """One operand row: its ``x`` beats and its taps (one entry per kept tap).

    ``values``/``cols``: the beats in stream order (the final one carries ``last``);
    ``t_value``, ``t_kw``, ``t_base``, ``t_rowbase``, ``t_parity``: the taps, in bundle order.
    """
    values: np.ndarray
    cols: np.ndarray
    t_value: np.ndarray
    t_kw: np.ndarray
    t_base: np.ndarray
    t_rowbase: np.ndarray
    t_parity: np.ndarray
    label: tuple = ()
    #: WG: the scratchpad chunk (index into :attr:`PEJob.chunks`) whose image the taps read
    chunk: int = 0

    @property
    def n_taps(self) -> int:
        return int(self.t_kw.size)


@dataclass
class PEJob:
    """Everything one PE needs for one tile (here: a whole small layer)."""
    mode: str
    stride: int
    pad: int
    out_len: int
    in_len: int
    skip_zero: bool
    macs_per_pe: int
    cfg: AcceleratorConfig
    rows: list
    dense: np.ndarray
    drains: list                      # (base, count, raw, last)
    out_shape: tuple
    dense_mode: bool
    raw: bool
    empty_rows: str = "omit"
    #: WG: the scratchpad images (chunks of ``x``, each at most ``act_buf_depth`` words); one
    #: image (``[dense]``) when the whole input fits. Rows name theirs (:attr:`OperandRow.chunk`)
    chunks: list = None
    #: for a tile of :func:`split_tiles`: the whole layer's output rows it holds, in order
    out_rows: object = field(default=None, repr=False)
    _bundles: list = field(default=None, repr=False)

    def __post_init__(self):
        if self.chunks is None:
            self.chunks = [self.dense]

    # -- WG scratchpad chunks ----------------------------------------------------------------
    @property
    def chunked(self) -> bool:
        """WG with more than one scratchpad image: the PE reloads its scratchpad per chunk."""
        return len(self.chunks) > 1

    def runs(self) -> list:
        """``[(chunk, first row, stop row)]``: the maximal runs of consecutive operand rows that
        read the same scratchpad chunk, in stream order (one run when not :attr:`chunked`)."""
        out = []
        for r, row in enumerate(self.rows):
            c = row.chunk if self.chunked else 0
            if out and out[-1][0] == c:
                out[-1][2] = r + 1
            else:
                out.append([c, r, r + 1])
        return [tuple(x) for x in out]

    def loads(self, first: bool) -> list:
        """The scratchpad images (chunk indices) this tile loads, in order; ``first``: the tile
        is the first of its PE's tile sequence. Not chunked: the one image, loaded once before
        the first tile. Chunked: every run's image, each tile again (the first tile's first one
        before the job, the others in the job, each after the run before it: see
        :func:`cycles_grid`)."""
        if not self.chunked:
            return [0] if first else []
        return [c for c, _, _ in self.runs()]

    def image(self, row) -> np.ndarray:
        """The scratchpad image ``row``'s taps read."""
        return self.chunks[row.chunk] if self.chunked else self.dense

    # -- control inputs --------------------------------------------------------------------
    def control(self) -> dict:
        return {"mode": MODES[self.mode], "stride2": int(self.stride == 2), "pad": self.pad,
                "out_len": self.out_len, "in_len": self.in_len, "skip_zero": int(self.skip_zero)}

    @property
    def split(self) -> bool:
        """Stride-2 FP: the operand buffer is split by column parity."""
        return self.mode == "fp" and self.stride == 2

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape))

    # -- streams ---------------------------------------------------------------------------
    def x_beats(self) -> list:
        """``x`` beats as field dicts ``{value, col, last}``."""
        out = []
        for row in self.rows:
            k = row.values.size
            out += [{"value": int(v), "col": int(c), "last": int(j == k - 1)}
                    for j, (v, c) in enumerate(zip(row.values, row.cols))]
        return out

    def bundles(self) -> list:
        """Per row, its bundles: ``(slots, parity, last, eot, eoc)``, ``slots`` a list of
        ``lanes`` tuples ``(value, kw, base, rowbase, en)``; ``eoc`` (chunked WG only) on the
        last bundle of each run of rows that read one scratchpad image (:meth:`runs`)."""
        if self._bundles is None:
            L = self.macs_per_pe
            per_row = []
            for r, row in enumerate(self.rows):
                bl = []
                for p in (0, 1):
                    idx = np.flatnonzero(row.t_parity == p)
                    for s in range(0, idx.size, L):
                        chunk = idx[s:s + L]
                        slots = [(int(row.t_value[k]), int(row.t_kw[k]), int(row.t_base[k]),
                                  int(row.t_rowbase[k]), 1) for k in chunk]
                        slots += [(0, 0, 0, 0, 0)] * (L - len(slots))
                        bl.append([slots, p, 0, 0, 0])
                if not bl:                                   # a skip beat releases the row
                    bl.append([[(0, 0, 0, 0, 0)] * L, 0, 0, 0, 0])
                bl[-1][2] = 1
                per_row.append(bl)
            per_row[-1][-1][3] = 1                           # end of tile
            if self.chunked:                                 # end of each chunk's run
                for _, _, stop in self.runs():
                    per_row[stop - 1][-1][4] = 1
            self._bundles = per_row
        return self._bundles

    def tap_beats(self) -> list:
        """``taps`` beats as field dicts (for ``layout.const``)."""
        out = []
        for bl in self.bundles():
            for slots, p, last, eot, eoc in bl:
                out.append({"slots": [{"value": v, "kw": kw, "base": b, "rowbase": rb, "en": en}
                                      for v, kw, b, rb, en in slots],
                            "parity": p, "last": last, "eot": eot, "eoc": eoc})
        return out

    @staticmethod
    def image_beats(img) -> list:
        """``dense`` beats of one scratchpad image (``last`` on its final word)."""
        k = img.size
        return [{"value": int(v), "last": int(j == k - 1)} for j, v in enumerate(img)]

    def dense_beats(self) -> list:
        """``dense`` beats of the image loaded before the job (the first tile's first one)."""
        return self.image_beats(self.chunks[self.runs()[0][0]] if self.chunked else self.dense)

    def reload_beats(self, first: bool) -> list:
        """``dense`` beats of the images this tile loads *during* the job (chunked WG), one
        list per load, in order; ``first``: the tile is its PE's first (whose first image is
        :meth:`dense_beats`, loaded before the job)."""
        loads = self.loads(first)
        if not self.chunked:
            return []
        return [self.image_beats(self.chunks[c]) for c in (loads[1:] if first else loads)]

    def drain_beats(self) -> list:
        return [{"base": b, "count": c, "raw": int(r), "last": int(last)}
                for b, c, r, last in self.drains]

    def n_outputs(self) -> int:
        return sum(c for _, c, _, _ in self.drains)

    def assemble(self, values) -> np.ndarray:
        """The drained values (in drain order) as the output tensor."""
        values = np.asarray(values, dtype=np.int64)
        if values.size != self.out_size:
            raise ValueError(f"expected {self.out_size} drained values, got {values.size}")
        return values.reshape(self.out_shape)

    def stored(self, row: OperandRow):
        """The entries the PE stores for ``row``: (values, cols) per sub-list ``p`` in (0, 1)."""
        keep = (row.values != 0) if self.skip_zero else np.ones(row.values.size, dtype=bool)
        v, c = row.values[keep], row.cols[keep]
        if self.split:
            return [(v[c % 2 == 0], c[c % 2 == 0]), (v[c % 2 == 1], c[c % 2 == 1])]
        return [(v, c), (v[:0], c[:0])]


class PEStats(NamedTuple):
    """Predicted counters. ``work = cycles - stall_in`` (= RTL ``cycles - stall_in -
    stall_out`` under any idle / back-pressure pattern)."""
    cycles: int
    stall_in: int
    proc: int
    busy_mac: int
    nnz: int
    drained: int

    @property
    def work(self) -> int:
        return self.cycles - self.stall_in

    def utilisation(self, macs_per_pe: int) -> float:
        return self.busy_mac / (macs_per_pe * self.cycles) if self.cycles else 0.0


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

def _check_cfg(cfg):
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    return cfg


def _check_common(cfg, stride, padding, kh, kw, row_lens):
    if not isinstance(stride, int) or isinstance(stride, bool):
        raise TypeError(f"stride must be an integer, not {stride!r}")
    if stride not in cfg.strides:
        raise ValueError(f"unsupported stride {stride}: the PE supports strides {cfg.strides}")
    if not isinstance(padding, int) or isinstance(padding, bool):
        raise TypeError(f"padding must be an integer, not {padding!r}")
    if not 0 <= padding <= cfg.k_max:
        raise ValueError(f"padding must be in [0, k_max={cfg.k_max}], not {padding}")
    if kw > cfg.k_max:
        raise ValueError(f"kernel row length {kw} exceeds k_max={cfg.k_max}")
    for what, n in row_lens:
        if n > cfg.max_row_len:
            raise ValueError(f"{what} row length {n} exceeds max_row_len={cfg.max_row_len}")


def _check_range(name, arr, width):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} has values outside the {width}-bit signed range [{lo}, {hi}]")


def _as_int(name, a, ndim):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a.astype(np.int64)


def _taps_of(name, w, mask, dense):
    """(tap set, tap values): the kept taps (``mask``, or the non-zero weights) with their
    values, or in dense mode every tap with the masked values (pruned taps sent as zeros)."""
    if mask is None:
        mask = w != 0
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"{name} must be a bool array, not dtype {mask.dtype}")
        if mask.shape != w.shape:
            raise ValueError(f"{name} shape {mask.shape} does not match the weight shape "
                             f"{w.shape}")
    values = np.where(mask, w, 0)
    return (np.ones(w.shape, dtype=bool) if dense else mask), values


def _psum_check(cfg, words):
    if words > cfg.psum_buf_depth:
        raise ValueError(f"psum out of range: the output needs {words} words but "
                         f"psum_buf_depth={cfg.psum_buf_depth}")


def _operand_row(vals, dense):
    vals = np.asarray(vals, dtype=np.int64)
    if dense:
        return vals, np.arange(vals.size, dtype=np.int64)
    v, c, _ = numfmt.compress_row(vals)
    return v, c


def _drains(cfg, out_size, raw, drain_chunk):
    chunk = cfg.psum_buf_depth if drain_chunk is None else int(drain_chunk)
    if chunk < 1:
        raise ValueError(f"drain_chunk must be >= 1, not {drain_chunk}")
    out = [(b, min(chunk, out_size - b), bool(raw), False) for b in range(0, out_size, chunk)]
    b, c, r, _ = out[-1]
    out[-1] = (b, c, r, True)
    return out


def _finish(job_kwargs, rows, empty_rows):
    if empty_rows not in ("omit", "skip"):
        raise ValueError(f"empty_rows must be 'omit' or 'skip', not {empty_rows!r}")
    kept = [r for r in rows if r.n_taps] if empty_rows == "omit" else rows
    if not kept:                                 # nothing to compute: one skip row ends the tile
        kept = rows[:1]
    return PEJob(rows=kept, empty_rows=empty_rows, **job_kwargs)


def _order_taps(values, kws, bases, rowbases, parity, label):
    order = np.argsort(parity, kind="stable")
    return lambda v, c: OperandRow(v, c, values[order], kws[order], bases[order],
                                   rowbases[order], parity[order], label)


# --------------------------------------------------------------------------------------------
# Mappings
# --------------------------------------------------------------------------------------------

def _geometry(x_shape, w_shape, stride, padding, x_name, w_name):
    """``(B, Cin, H, W, Cout, Kh, Kw, Ho, Wo)`` of a conv layer; the channel counts must agree."""
    B, Cin, H, W = (int(v) for v in x_shape)
    Cout, wc, Kh, Kw = (int(v) for v in w_shape)
    if wc != Cin:
        raise ValueError(f"channel mismatch: {x_name} has Cin={Cin}, {w_name} has Cin={wc}")
    Ho, Wo = (H + 2 * padding - Kh) // stride + 1, (W + 2 * padding - Kw) // stride + 1
    return B, Cin, H, W, Cout, Kh, Kw, Ho, Wo


def _check_dy_shape(dy, B, Cout, Ho, Wo):
    if dy.shape != (B, Cout, Ho, Wo):
        raise ValueError(f"dy shape {dy.shape} does not match the forward output shape "
                         f"{(B, Cout, Ho, Wo)}")


def _prepare_fp_bp(mode, cfg, a, w, x_shape, stride, padding, mask, dense):
    """The checks FP and BP share: ``a`` is the streamed operand (``x`` in FP, ``dy`` in BP;
    ``x_shape`` None in FP), ``w`` the weights and ``mask`` their N:M mask. Returns ``(cfg, a,
    w, keep, geometry)`` with ``keep`` the taps (``_taps_of``)."""
    cfg = _check_cfg(cfg)
    fp = mode == "fp"
    name = "x" if fp else "dy"
    a, w = _as_int(name, a, 4), _as_int("w", w, 4)
    g = _geometry(a.shape if fp else x_shape, w.shape, stride, padding,
                  "x" if fp else "x_shape", "w")
    B, Cin, H, W, Cout, Kh, Kw, Ho, Wo = g
    if fp:
        _check_common(cfg, stride, padding, Kh, Kw, [("input", W), ("output", max(Wo, 0))])
        if Ho < 1 or Wo < 1:
            raise ValueError(f"kernel {Kh}x{Kw} is larger than the padded input")
    else:
        _check_common(cfg, stride, padding, Kh, Kw,
                      [("output-gradient", Wo), ("input-gradient", W)])
        _check_dy_shape(a, B, Cout, Ho, Wo)
    _check_range(name, a, cfg.data_width)
    _check_range("w", w, cfg.data_width)
    keep, w = _taps_of("mask", w, mask, dense)
    _psum_check(cfg, B * Cout * Ho * Wo if fp else B * Cin * H * W)
    if fp:
        cfg.check_reduction(Cin * Kh * Kw, "FP output")
    else:
        cfg.check_reduction(Cout * Kh * Kw, "BP input gradient")
    return cfg, a, w, keep, g


def map_conv_fp(x, w, *, stride=1, padding=0, cfg, mask=None, dense=False, raw=True,
                empty_rows="omit", drain_chunk=None) -> PEJob:
    """FP: operand rows ``x[b, c, h]``, taps ``w[n, c, kr, kw]`` kept by ``mask`` (the N:M forward
    mask; ``None`` keeps the non-zero weights), output ``conv2d_forward(x, w * mask)``.

    ``dense=True``: uncompressed rows, ``skip_zero = 0`` and every tap (pruned ones as zero
    weights): the same result, the dense baseline's cycles."""
    cfg, x, w, keep, g = _prepare_fp_bp("fp", cfg, x, w, None, stride, padding, mask, dense)
    B, Cin, H, W, Cout, Kh, Kw, Ho, Wo = g
    rows = []
    for c in range(Cin):
        n_i, kr_i, kw_i = np.nonzero(keep[:, c])
        wv = w[n_i, c, kr_i, kw_i]
        for b in range(B):
            for h in range(H):
                t = h + padding - kr_i
                ok = (t >= 0) & (t % stride == 0) & (t // stride < Ho)
                y = t // stride
                base = ((b * Cout + n_i) * Ho + y) * Wo
                par = ((padding + kw_i) % 2) if stride == 2 else np.zeros_like(kw_i)
                mk = _order_taps(wv[ok], kw_i[ok], base[ok], np.zeros(int(ok.sum()), np.int64),
                                 par[ok], ("x", b, c, h))
                rows.append(mk(*_operand_row(x[b, c, h], dense)))
    rows.sort(key=lambda r: r.label)
    job = dict(mode="fp", stride=stride, pad=padding, out_len=Wo, in_len=W,
               skip_zero=not dense, macs_per_pe=cfg.macs_per_pe, cfg=cfg,
               dense=np.zeros(0, np.int64),
               drains=_drains(cfg, B * Cout * Ho * Wo, raw, drain_chunk),
               out_shape=(B, Cout, Ho, Wo), dense_mode=dense, raw=raw)
    return _finish(job, rows, empty_rows)


def map_conv_bp(dy, w, x_shape, *, stride=1, padding=0, cfg, mask=None, dense=False, raw=True,
                empty_rows="omit", drain_chunk=None) -> PEJob:
    """BP: operand rows ``dy[b, n, y]``, taps ``w[n, c, kr, kw]`` kept by ``mask`` (the N:M
    backward mask), output ``conv2d_backward_input(dy, w * mask, x_shape)``."""
    cfg, dy, w, keep, g = _prepare_fp_bp("bp", cfg, dy, w, x_shape, stride, padding, mask,
                                         dense)
    B, Cin, H, W, Cout, Kh, Kw, Ho, Wo = g
    rows = []
    for n in range(Cout):
        c_i, kr_i, kw_i = np.nonzero(keep[n])
        wv = w[n, c_i, kr_i, kw_i]
        for b in range(B):
            for y in range(Ho):
                h = y * stride + kr_i - padding
                ok = (h >= 0) & (h < H)
                base = ((b * Cin + c_i) * H + h) * W
                mk = _order_taps(wv[ok], kw_i[ok], base[ok], np.zeros(int(ok.sum()), np.int64),
                                 np.zeros(int(ok.sum()), np.int64), ("dy", b, n, y))
                rows.append(mk(*_operand_row(dy[b, n, y], dense)))
    rows.sort(key=lambda r: r.label)
    job = dict(mode="bp", stride=stride, pad=padding, out_len=W, in_len=W,
               skip_zero=not dense, macs_per_pe=cfg.macs_per_pe, cfg=cfg,
               dense=np.zeros(0, np.int64), drains=_drains(cfg, B * Cin * H * W, raw, drain_chunk),
               out_shape=(B, Cin, H, W), dense_mode=dense, raw=raw)
    return _finish(job, rows, empty_rows)


def wg_chunks(x_shape, act_buf_depth: int) -> list:
    """The scratchpad chunks of a WG input ``x`` of shape ``x_shape = (B, C, H, W)`` (one PE's
    image, ``(b, c, h, w)`` order): ``[(first plane, stop plane)]`` over the ``B*C`` planes
    ``(b, c)`` of ``H*W`` words. The whole image when it fits ``act_buf_depth`` (one chunk);
    else consecutive groups of ``act_buf_depth // (H*W)`` whole planes (*ours*), so chunk ``k``
    is the image's words ``[p0*H*W, p1*H*W)`` -- a contiguous slice, loaded from address 0.
    A plane larger than the scratchpad raises ``ValueError``."""
    B, C, H, W = (int(v) for v in x_shape)
    plane, n = H * W, B * C
    if n * plane <= act_buf_depth:
        return [(0, n)]
    if plane > act_buf_depth:
        raise ValueError(f"dense scratchpad out of range: one input plane ({H}x{W} = {plane} "
                         f"words) does not fit act_buf_depth={act_buf_depth} (WG chunks hold "
                         f"whole planes)")
    return tiling.bands(n, act_buf_depth // plane)


def map_conv_wg(x, dy, w_shape, *, stride=1, padding=0, cfg, dense=False, raw=True,
                empty_rows="omit", drain_chunk=None) -> PEJob:
    """WG: operand rows ``dy[b, n, y]``, the dense X in the scratchpad, every tap ``(c, kr,
    kw)`` (the weight gradient is dense), output ``conv2d_backward_weight(x, dy, w_shape)``.

    An ``x`` larger than ``act_buf_depth`` is cut into chunks of whole planes
    (:func:`wg_chunks`): the rows are then taken chunk by chunk, each ``dy[b, n, y]`` once per
    chunk holding planes of sample ``b``, with the taps that read that chunk (``rowbase``
    relative to the chunk); the partial sums accumulate over the chunks."""
    cfg = _check_cfg(cfg)
    x, dy = _as_int("x", x, 4), _as_int("dy", dy, 4)
    B, Cin, H, W, Cout, Kh, Kw, Ho, Wo = _geometry(x.shape, w_shape, stride, padding,
                                                   "x", "w_shape")
    _check_common(cfg, stride, padding, Kh, Kw, [("output-gradient", Wo), ("input", W)])
    _check_dy_shape(dy, B, Cout, Ho, Wo)
    _check_range("x", x, cfg.data_width)
    _check_range("dy", dy, cfg.data_width)
    bands = wg_chunks(x.shape, cfg.act_buf_depth)
    _psum_check(cfg, Cout * Cin * Kh * Kw)
    cfg.check_reduction(B * Ho * Wo, "WG weight gradient")
    c_i, kr_i, kw_i = (a.ravel() for a in np.meshgrid(np.arange(Cin), np.arange(Kh),
                                                      np.arange(Kw), indexing="ij"))
    plane = H * W
    flat = x.ravel()
    chunked = len(bands) > 1
    rows = []
    for k, (p0, p1) in enumerate(bands):
        for b in range(B):
            pl = b * Cin + c_i                           # each tap's plane
            mine = (pl >= p0) & (pl < p1)
            if not mine.any():
                continue                                 # no plane of sample b in this chunk
            for n in range(Cout):
                for y in range(Ho):
                    h = y * stride + kr_i - padding
                    ok = (h >= 0) & (h < H) & mine
                    base = ((n * Cin + c_i) * Kh + kr_i) * Kw + kw_i
                    rowbase = (pl * H + h) * W - p0 * plane
                    kk = int(ok.sum())
                    mk = _order_taps(np.zeros(kk, np.int64), kw_i[ok], base[ok], rowbase[ok],
                                     np.zeros(kk, np.int64), ("dy", b, n, y))
                    row = mk(*_operand_row(dy[b, n, y], dense))
                    row.chunk = k
                    rows.append(row)
    job = dict(mode="wg", stride=stride, pad=padding, out_len=Wo, in_len=W,
               skip_zero=not dense, macs_per_pe=cfg.macs_per_pe, cfg=cfg,
               dense=flat.copy() if not chunked else flat[:bands[0][1] * plane].copy(),
               chunks=[flat[p0 * plane:p1 * plane].copy() for p0, p1 in bands],
               drains=_drains(cfg, Cout * Cin * Kh * Kw, raw, drain_chunk),
               out_shape=(Cout, Cin, Kh, Kw), dense_mode=dense, raw=raw)
    return _finish(job, rows, empty_rows)


# --------------------------------------------------------------------------------------------
# Functional execution and the cycle model
# --------------------------------------------------------------------------------------------

def _products(job, row, entries):
    """For one row: ``[(lanes, addresses)]`` and ``[products]`` of the valid products, as the
    RTL forms them (vectorized over taps x stored entries)."""
    S, p = job.stride, job.pad
    addrs, prods = [], []
    L = job.macs_per_pe
    for par in (0, 1):
        sel = np.flatnonzero(row.t_parity == par)
        if not sel.size:
            continue
        av, ac = entries[par] if job.split else entries[0]
        if not av.size:
            continue
        kw = row.t_kw[sel][:, None]
        base = row.t_base[sel][:, None]
        lane = (np.arange(sel.size) % L)[:, None]
        a = av[None, :]
        col = ac[None, :]
        if job.mode == "fp":
            t = col + p - kw
            ok = (t >= 0) & (t % S == 0) & (t // S < job.out_len)
            addr = base + t // S
            prod = a * row.t_value[sel][:, None]
        else:
            t = col * S + kw - p
            if job.mode == "bp":
                ok = (t >= 0) & (t < job.out_len)
                addr = base + t
                prod = a * row.t_value[sel][:, None]
            else:
                ok = (t >= 0) & (t < job.in_len)
                addr = np.broadcast_to(base, t.shape)
                img = job.image(row)
                xi = np.clip(row.t_rowbase[sel][:, None] + t, 0, max(img.size - 1, 0))
                prod = a * np.where(ok, img[xi] if img.size else 0, 0)
        ok = ok & np.ones(t.shape, dtype=bool)
        addrs.append((np.broadcast_to(lane, t.shape)[ok], addr[ok]))
        prods.append(prod[ok])
    return addrs, prods


def execute(job: PEJob):
    """Run ``job`` functionally, as the RTL does: returns ``(drained values, busy_mac)``.

    Per-lane banks, sums checked against ``acc_width`` (``OverflowError``; cannot happen for a
    mapped job), the drain sums the banks and applies ``writeback`` unless ``raw``.
    """
    cfg = job.cfg
    banks = np.zeros((job.macs_per_pe, cfg.psum_buf_depth), dtype=np.int64)   # the mapper's
    busy = 0                                          # check_reduction keeps int64 exact
    for row in job.rows:
        addrs, prods = _products(job, row, job.stored(row))
        for (lane, addr), prod in zip(addrs, prods):
            np.add.at(banks, (lane, addr), prod)
            busy += prod.size
    lim = 1 << (cfg.acc_width - 1)
    if banks.size and (banks.min() < -lim or banks.max() >= lim):
        raise OverflowError("a partial sum left the acc_width range")
    out = []
    for base, count, raw, _ in job.drains:
        s = banks[:, base:base + count].sum(axis=0)
        out.append(s if raw else numfmt.writeback(s, cfg.frac_bits, cfg.data_width))
        banks[:, base:base + count] = 0
    return np.concatenate(out), busy


def row_cost(job: PEJob, row: OperandRow):
    """``(load cycles, processing cycles, stored entries)`` of one operand row."""
    entries = job.stored(row)
    n = [e[0].size for e in entries] if job.split else [entries[0][0].size, entries[0][0].size]
    L = job.macs_per_pe
    proc = 0
    for par in (0, 1):
        k = int(np.count_nonzero(row.t_parity == par))
        proc += -(-k // L) * max(n[par], 1)
    if not row.n_taps:
        proc = 1                                          # the skip beat
    stored = sum(e[0].size for e in entries)
    return int(row.values.size), proc, stored


def cycles(job: PEJob) -> PEStats:
    """Predicted performance counters of ``job`` (see the module docstring; exact)."""
    return cycles_tiles([job])


def _merged_length(intervals) -> int:
    """Cycles covered by the union of half-open intervals ``[a, b)``."""
    total, cur_a, cur_b = 0, None, None
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def cycles_tiles(tiles: list) -> PEStats:
    """Predicted counters of a sequence of tiles run back to back on one PE (exact for
    never-idle inputs and a never back-pressured output).

    Operand rows are double-buffered across tile boundaries; tile ``t`` accumulates into psum
    half ``t % 2`` and may start only when the drain of tile ``t - 2`` has released that half;
    the drain of tile ``t`` starts ``PIPE_FLUSH`` cycles after its last bundle and after the
    previous drain released its half (``RELEASE`` cycles after its last read)::

        S_first(t) = max(F_r, E_{r-1}, Rel_{t-2})
        S_r = max(F_r, E_{r-1}, E_{r-1} + RELOAD_GAP + |image|)   # chunked WG: a row that
                                      # starts a run (a tile's first row too, but tile 0's)
        D_t = max(E_t + PIPE_FLUSH, Rel_{t-1});  I_t = D_t + C_t - 1;  Rel_t = I_t + RELEASE
        cycles = I_last + 1 + DRAIN_LATENCY

    ``stall_in`` counts the cycles in which the PE neither processes, flushes, drains nor
    finishes a drain (the RTL's definition)."""
    if not tiles:
        raise ValueError("cycles_tiles needs at least one tile")
    stats, _ = cycles_grid([[list(tiles)]])
    return stats[0][0]


def cycles_grid(grid: list):
    """Exact counters of a ``rows x cols`` grid of PEs (``grid[i][j]``: the tile list of PE
    ``(i, j)``; every PE has the same number of tiles, the PEs of a row the same operand rows,
    the PEs of a column the same drain commands) wired as in
    :class:`~sparseforge.hdl.pe_array.PEArray`: a PE row's operand rows are broadcast (a row
    loads when every PE of the row has a free buffer half), a column's drain commands are
    broadcast (a command starts when every PE of the column is ready for it). Returns
    ``(stats[i][j], last_reads[j])`` with ``last_reads[j]`` the cycle of column ``j``'s last
    drain read. With one PE this is :func:`cycles_tiles`."""
    R, C = len(grid), len(grid[0])
    n_tiles = len(grid[0][0])
    if any(len(grid[i][j]) != n_tiles for i in range(R) for j in range(C)):
        raise ValueError("every PE of the grid needs the same number of tiles")
    f1 = [0] * R
    e1 = [[0] * C for _ in range(R)]
    e2 = [[0] * C for _ in range(R)]
    rel = [[0, 0] for _ in range(C)]
    drain_free = [0] * C
    last_i = [0] * C
    acc = [[dict(proc=0, nnz=0, busy=0, drained=0, iv=[], flush_from=None) for _ in range(C)]
           for _ in range(R)]
    for t in range(n_tiles):
        for i in range(R):
            rows = [grid[i][j][t].rows for j in range(C)]
            n_rows = len(rows[0])
            if any(len(r) != n_rows for r in rows):
                raise ValueError(f"tile {t}: the PEs of row {i} need the same operand rows")
            for r in range(n_rows):
                costs = [row_cost(grid[i][j][t], rows[j][r]) for j in range(C)]
                load = costs[0][0]
                f = max(f1[i], max(e2[i])) + load
                f1[i] = f
                for j in range(C):
                    _, proc, stored = costs[j]
                    a = acc[i][j]
                    s = max(f, e1[i][j])
                    job = grid[i][j][t]
                    if job.chunked and (r > 0 and rows[j][r].chunk != rows[j][r - 1].chunk
                                        or r == 0 and t > 0):
                        # a new scratchpad image: its load starts RELOAD_GAP cycles after the
                        # previous image's last bundle and takes one cycle per word
                        s = max(s, e1[i][j] + RELOAD_GAP + job.chunks[rows[j][r].chunk].size)
                    if r == 0:
                        s = max(s, rel[j][t % 2])
                        if a["flush_from"] is not None:
                            # the RTL counts the previous tile's flush until this tile opens
                            a["iv"].append((a["flush_from"],
                                            min(a["flush_from"] + PIPE_FLUSH, s + 1)))
                    e = s + proc
                    e2[i][j], e1[i][j] = e1[i][j], e
                    a["iv"].append((s, e))
                    a["proc"] += proc
                    a["nnz"] += stored
                    addrs, _ = _products(job, rows[j][r], job.stored(rows[j][r]))
                    a["busy"] += sum(x.size for _, x in addrs)
        for j in range(C):
            c = sum(max(k, 1) for _, k, _, _ in grid[0][j][t].drains)
            n_cmd = len(grid[0][j][t].drains)
            d = max(max(e1[i][j] for i in range(R)) + PIPE_FLUSH, drain_free[j])
            last_i[j] = d + n_cmd * DRAIN_ACCEPT + c - 1
            rel[j][t % 2] = drain_free[j] = last_i[j] + RELEASE
            for i in range(R):
                a = acc[i][j]
                a["flush_from"] = e1[i][j]
                a["iv"] += [(d, last_i[j] + 1), (last_i[j] + 1, last_i[j] + 1 + DRAIN_LATENCY)]
                a["drained"] += c
    stats = []
    for i in range(R):
        srow = []
        for j in range(C):
            a = acc[i][j]
            a["iv"].append((a["flush_from"], a["flush_from"] + PIPE_FLUSH))
            total = last_i[j] + 1 + DRAIN_LATENCY
            srow.append(PEStats(cycles=total, stall_in=total - _merged_length(a["iv"]),
                                proc=a["proc"], busy_mac=a["busy"], nnz=a["nnz"],
                                drained=a["drained"]))
        stats.append(srow)
    return stats, last_i


def split_tiles(job: PEJob, tile_words: int | None = None, *, cfg=None) -> list:
    """Cut a whole-layer job into tiles of at most ``tile_words`` output words each (default:
    the largest multiple of the output row length that fits ``cfg.psum_buf_depth``).

    FP/BP: the layer's output rows are taken row index first (every channel's row ``y = 0``,
    then ``y = 1``, ...), so a tile holds a band of output rows of *every* channel: each operand
    row then feeds as many taps per tile as possible (few bundles padded, few rows loaded
    twice: only the kernel's halo rows are sent to two tiles). WG: consecutive weight-gradient
    addresses (output-channel major), so each ``dy`` row goes to one tile. In a tile, output
    row ``j`` of ``out_rows`` sits at psum address ``j * row length``; every operand row keeps
    the taps that land in the tile (rows left with none are omitted, or sent as skip beats
    with ``empty_rows="skip"``). The tiles run back to back on one PE
    (:func:`cycles_tiles`); :func:`assemble_tiles` puts the drained values together."""
    cfg = _check_cfg(cfg or job.cfg)
    unit = 1 if job.mode == "wg" else job.out_len
    if tile_words is None:
        tile_words = tiling.rows_per_tile(cfg.psum_buf_depth, unit) * unit
    tile_words = int(tile_words)
    if tile_words < unit or tile_words % unit:
        raise ValueError(f"tile_words must be a positive multiple of the output row length "
                         f"{unit}, not {tile_words}")
    _psum_check(cfg, tile_words)
    n_rows = job.out_size // unit
    if job.mode == "wg":
        order = np.arange(n_rows)
    else:
        order = tiling.y_major(n_rows, job.out_shape[2])
    per = tile_words // unit
    tile_of = np.empty(n_rows, np.int64)
    pos_of = np.empty(n_rows, np.int64)
    tile_of[order] = np.arange(n_rows) // per
    pos_of[order] = np.arange(n_rows) % per
    chunk = max((c for _, c, _, _ in job.drains), default=tile_words)
    tiles = []
    for k, (start, stop) in enumerate(tiling.bands(n_rows, per)):
        mine = order[start:stop]
        n = mine.size * unit
        rows = []
        for row in job.rows:
            dest = row.t_base // unit
            sel = tile_of[dest] == k
            base = pos_of[dest[sel]] * unit + row.t_base[sel] % unit
            rows.append(OperandRow(row.values, row.cols, row.t_value[sel], row.t_kw[sel],
                                   base, row.t_rowbase[sel], row.t_parity[sel], row.label,
                                   row.chunk))
        drains = _drains(cfg, n, job.raw, min(chunk, n))
        kw = dict(mode=job.mode, stride=job.stride, pad=job.pad, out_len=job.out_len,
                  in_len=job.in_len, skip_zero=job.skip_zero, macs_per_pe=job.macs_per_pe, cfg=cfg,
                  dense=job.dense, chunks=job.chunks, drains=drains, out_shape=(n,),
                  dense_mode=job.dense_mode, raw=job.raw)
        tile = _finish(kw, rows, job.empty_rows)
        tile.out_rows = mine
        tiles.append(tile)
    return tiles


def tile_expected(job: PEJob, tile: PEJob, full: np.ndarray) -> np.ndarray:
    """The slice of the whole layer's output ``full`` that ``tile`` drains, in drain order."""
    unit = 1 if job.mode == "wg" else job.out_len
    return np.asarray(full).reshape(-1, unit)[tile.out_rows].reshape(-1)


def assemble_tiles(job: PEJob, tiles: list, values) -> np.ndarray:
    """The drained values of ``tiles = split_tiles(job)`` (in drain order) as ``job``'s output."""
    unit = 1 if job.mode == "wg" else job.out_len
    values = np.asarray(values, dtype=np.int64)
    out = np.zeros((job.out_size // unit, unit), np.int64)
    k = 0
    for t in tiles:
        out[t.out_rows] = values[k:k + t.out_size].reshape(-1, unit)
        k += t.out_size
    if k != values.size:
        raise ValueError(f"expected {k} drained values, got {values.size}")
    return out.reshape(job.out_shape)
