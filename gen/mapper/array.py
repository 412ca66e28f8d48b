"""Mapping of a whole convolution layer onto the PE array, its functional model and its exact
cycle model (:class:`sparseforge.hdl.pe_array.PEArray`).

*ours*: **columns partition the outputs, rows partition the reduction**:

====== ============================================ ==============================================
phase  PE column ``j`` holds the outputs of          PE row ``i`` takes the operand rows (interleaved)
====== ============================================ ==============================================
FP     output channels ``n`` with ``n % cols == j``   ``x[b, c, h]`` with ``((b*H + h)*Cin + c) % rows == i``
BP     input-gradient channels ``c % cols == j``      ``dy[b, n, y]`` with ``((b*Ho + y)*Cout + n) % rows == i``
WG     weight gradients of inputs ``c % cols == j``   ``dy[b, n, y]`` with ``((b*Cout + n)*Ho + y) % rows == i``
====== ============================================ ==============================================

Every operand row's products belong to the reduction of some output, so any split of the
operand rows over the PE rows is exact once the column adds the PE rows' partial sums.
Interleaved (*ours*, after SAT's interleaved mapping) deals the operand rows round-robin,
channel index fastest for FP/BP (``y`` fastest for WG, whose channel-major tiles hold few
channels ``n``: ``n`` fastest would put all of one channel's rows on one PE row), so rows
of uneven density (ReLU-dead channels, pruned gradients) and
layers with few channels spread evenly over the PE rows, and so does every row-band tile (a
tile touches only a narrow band of ``h``/``y``: dealing ``h`` fastest would leave most PE rows
idle in each tile, e.g. 6 of 16 for ``H = 56``). ``in_order`` deals contiguous blocks of
channels (the naive mapping the scheduling-quality comparison uses). A PE row that gets no
operand row at all (fewer operand rows than PE rows, e.g. a fully connected layer's BP at
batch 1) is fed one skip row (the job's first row without its taps), which adds nothing.

Each PE's share is mapped with :mod:`sparseforge.gen.mapper.pe` and cut into row-band tiles of
at most ``psum_buf_depth`` outputs (:func:`pe_model.split_tiles`); the PEs of a PE row get the
same operand rows in the same order (the union of the rows any of them needs; a PE without a
tap for a row consumes it with a 1-cycle skip bundle), the PEs of a column the same drain
commands. Output channels are zero-padded to a multiple of ``cols`` (padded outputs are
dropped). The column sums of the raw PE partials, written back unless ``raw``, are the layer's
output; :func:`cycles` predicts every PE's counters and the array's ``cycles`` exactly (never
idle inputs, never back-pressured outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen import numfmt
from sparseforge.gen.mapper import pe as pm

__all__ = ["ArrayJob", "ArrayStats", "map_array", "execute", "cycles",
           "COLUMN_LATENCY", "MAPPINGS"]

#: Cycles from a column's PE drain beats to its output (per-PE output skid buffer, adder-tree
#: and write-back registers).
COLUMN_LATENCY = 3
MAPPINGS = ("interleaved", "in_order")


@dataclass
class ArrayJob:
    """A layer on the array: ``grid[i][j]`` the tiles of PE ``(i, j)``; ``col_out[j]`` the
    whole-layer output indices of column ``j`` (the golden result's channel axis)."""
    mode: str
    cfg: AcceleratorConfig
    grid: list
    col_jobs: list               # per column: the PE (0, j) whole-layer job (output layout)
    col_channels: list           # per column: the layer channels it holds (-1: padding)
    out_shape: tuple
    raw: bool

    @property
    def rows(self):
        return len(self.grid)

    @property
    def cols(self):
        return len(self.grid[0])

    def control(self) -> dict:
        c = self.grid[0][0][0].control()
        c["raw"] = int(self.raw)
        return c

    def n_outputs(self, j) -> int:
        return sum(t.n_outputs() for t in self.grid[0][j])

    def assemble(self, col_values) -> np.ndarray:
        """Per-column drained values (in drain order) -> the layer's output tensor."""
        out = np.zeros(self.out_shape, np.int64)
        for j, vals in enumerate(col_values):
            full = pm.assemble_tiles(self.col_jobs[j], self.grid[0][j], vals)
            ch = np.asarray(self.col_channels[j])
            keep = ch >= 0
            out[:, ch[keep]] = full[:, keep]          # the channel axis is 1 in every phase
        return out


class ArrayStats(dict):
    """``cycles`` (the array's), ``pe`` (``PEStats`` per PE), ``busy_mac``/``nnz``/``proc``
    totals, ``utilisation``."""

    def __getattr__(self, k):
        return self[k]


def _deal(count, parts, mapping):
    if mapping == "interleaved":
        return [list(range(k, count, parts)) for k in range(parts)]
    per = -(-count // parts)
    return [list(range(k * per, min(count, (k + 1) * per))) for k in range(parts)]


def _pad_to(a, axis, mult):
    extra = (-a.shape[axis]) % mult
    if not extra:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, extra)
    return np.pad(a, pad)


def _align(tiles_row):
    """Give the PEs of one PE row the same operand rows per tile (the union of the rows any
    of them has a tap for, in stream order); a PE without a tap for a row gets a skip."""
    C = len(tiles_row)
    for t in range(len(tiles_row[0])):
        tl = [tiles_row[j][t] for j in range(C)]
        need = [any(tl[j].rows[r].n_taps for j in range(C)) for r in range(len(tl[0].rows))]
        if not any(need):
            need[0] = True                       # one skip row ends the tile
        for j in range(C):
            tl[j].rows = [row for row, k in zip(tl[j].rows, need) if k]
            tl[j]._bundles = None


def map_array(mode, *, cfg, x=None, w=None, dy=None, x_shape=None, w_shape=None, mask=None,
              stride=1, padding=0, dense=False, raw=True, mapping="interleaved",
              tile_words=None) -> ArrayJob:
    """Map a layer phase onto ``cfg``'s ``pe_rows x pe_cols`` array.

    FP: ``x``, ``w``, ``mask`` (forward N:M mask); BP: ``dy``, ``w``, ``x_shape``, ``mask``
    (backward mask); WG: ``x``, ``dy``, ``w_shape``."""
    if mode not in pm.MODES:
        raise ValueError(f"mode must be one of {tuple(pm.MODES)}, not {mode!r}")
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, not {mapping!r}")
    R, C = cfg.pe_rows, cfg.pe_cols
    big = cfg.replace(psum_buf_depth=1 << 20)
    common = dict(stride=stride, padding=padding, cfg=big, dense=dense, raw=True,
                  empty_rows="skip")
    grid = [[None] * C for _ in range(R)]
    col_jobs, col_channels = [None] * C, [None] * C
    def deal(job, key, count, i):
        """Keep the operand rows of PE row ``i``: ``key(label)`` is the row's index in
        [0, count) (interleaved: round-robin; in order: contiguous blocks)."""
        if mapping == "interleaved":
            mine = lambda k: k % R == i                                  # noqa: E731
        else:
            per = -(-count // R)
            mine = lambda k: k // per == i                               # noqa: E731
        kept = [r for r in job.rows if mine(key(r.label))]
        if not kept:
            # fewer operand rows than PE rows: this PE row computes nothing, but it must
            # still stream a row so its PEs end their tiles; a tapless copy is a skip row
            r0 = job.rows[0]
            kept = [pm.OperandRow(r0.values, r0.cols, r0.t_value[:0], r0.t_kw[:0],
                                  r0.t_base[:0], r0.t_rowbase[:0], r0.t_parity[:0], r0.label,
                                  r0.chunk)]
        job.rows = kept
        job._bundles = None
        return job

    # per mode: the channels dealt to the columns (padded to a multiple of C; -1 marks a
    # padded one), the operand-row index key(label) in [0, count) the rows are dealt by, and
    # make(channels): the PE job of one column
    if mode == "fp":
        x, w = np.asarray(x), np.asarray(w)
        m_ = np.ones(w.shape, bool) if mask is None else np.asarray(mask, bool)
        Cout, Cin = w.shape[:2]
        B, _, H, _ = x.shape
        wp, mp = _pad_to(w, 0, C), _pad_to(m_, 0, C)
        n_real, n_padded = Cout, wp.shape[0]
        # interleaved: operand rows (b, h, c) round-robin, channel fastest (every row-band
        # tile spreads over all PE rows); in order: blocks of channels
        key = (lambda lb: (lb[1] * H + lb[3]) * Cin + lb[2]) if mapping == "interleaved" \
            else (lambda lb: lb[1] * Cin + lb[2])
        count = B * H * Cin if mapping == "interleaved" else B * Cin
        make = lambda ch: pm.map_conv_fp(x, wp[ch], mask=mp[ch], **common)          # noqa: E731
    elif mode == "bp":
        dy, w = np.asarray(dy), np.asarray(w)
        m_ = np.ones(w.shape, bool) if mask is None else np.asarray(mask, bool)
        Cout, Cin = w.shape[:2]
        B, _, H, W = x_shape
        Ho = dy.shape[2]
        wp, mp = _pad_to(w, 1, C), _pad_to(m_, 1, C)
        n_real, n_padded = Cin, wp.shape[1]
        key = (lambda lb: (lb[1] * Ho + lb[3]) * Cout + lb[2]) if mapping == "interleaved" \
            else (lambda lb: lb[1] * Cout + lb[2])
        count = B * Cout * Ho if mapping == "interleaved" else B * Cout
        make = lambda ch: pm.map_conv_bp(dy, wp[:, ch], (B, len(ch), H, W),          # noqa: E731
                                         mask=mp[:, ch], **common)
        out_shape = tuple(x_shape)
    else:
        x, dy = np.asarray(x), np.asarray(dy)
        Cout, Cin, Kh, Kw = w_shape
        B, _, Ho, Wo = dy.shape
        xp = _pad_to(x, 1, C)
        n_real, n_padded = Cin, xp.shape[1]
        # WG tiles are channel-major: y fastest spreads one channel's rows over the PE rows
        key = (lambda lb: (lb[1] * Cout + lb[2]) * Ho + lb[3]) if mapping == "interleaved" \
            else (lambda lb: lb[1] * Cout + lb[2])
        count = B * Cout * Ho if mapping == "interleaved" else B * Cout
        make = lambda ch: pm.map_conv_wg(xp[:, ch], dy, (Cout, len(ch), Kh, Kw),      # noqa: E731
                                         **common)
        out_shape = tuple(w_shape)
    for j, chans in enumerate(_deal(n_padded, C, mapping)):
        col_channels[j] = [c if c < n_real else -1 for c in chans]
        col_jobs[j] = make(chans)
        for i in range(R):      # deal() keeps PE row i's rows of a fresh job
            grid[i][j] = pm.split_tiles(deal(make(chans), key, count, i), tile_words, cfg=cfg)
    if mode == "fp":
        out_shape = (x.shape[0], Cout) + col_jobs[0].out_shape[2:]
    n_tiles = {len(grid[i][j]) for i in range(R) for j in range(C)}
    if len(n_tiles) != 1:
        raise ValueError(f"internal: columns got different tile counts {sorted(n_tiles)}")
    for i in range(R):
        _align(grid[i])
    return ArrayJob(mode=mode, cfg=cfg, grid=grid, col_jobs=col_jobs, col_channels=col_channels,
                    out_shape=out_shape, raw=raw)


def execute(job: ArrayJob) -> list:
    """Per column, the drained values (in drain order), as the RTL computes them."""
    cfg = job.cfg
    cols = []
    for j in range(job.cols):
        vals = []
        for t in range(len(job.grid[0][j])):
            s = sum(pm.execute(job.grid[i][j][t])[0] for i in range(job.rows))
            vals.append(s if job.raw else numfmt.writeback(s, cfg.frac_bits, cfg.data_width))
        cols.append(np.concatenate(vals))
    return cols


def cycles(job: ArrayJob) -> ArrayStats:
    """Exact counters: every PE's (``pe[i][j]``) and the array's ``cycles``."""
    stats, last = pm.cycles_grid(job.grid)
    total = max(last) + 1 + pm.DRAIN_LATENCY + COLUMN_LATENCY
    flat = [s for row in stats for s in row]
    busy = sum(s.busy_mac for s in flat)
    lanes = job.cfg.macs_per_pe * job.rows * job.cols
    return ArrayStats(cycles=total, pe=stats, busy_mac=busy, nnz=sum(s.nnz for s in flat),
                      proc=sum(s.proc for s in flat), utilisation=busy / (lanes * total))
