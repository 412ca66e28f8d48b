"""Statistical performance model of the PE array: cycles per layer and training phase from
operand / weight densities, per-iteration totals, ideal bounds, and a check against the exact
per-PE cycle model (:mod:`sparseforge.sim.pe_model`).

Method (*ours*; ``docs/benchmarks.md`` has the derivation). The array (``pe_rows`` R x
``pe_cols`` C PEs, ``macs_per_pe`` L lanes, ``psum_buf_depth`` D words per bank) is mapped as the lead's array mapping fixes it
(docs/benchmarks.md, "Mapping"):

* FP: output channel n -> PE column n % C, input channel c -> PE row c % R, operand rows
  ``x[b, c, h]`` broadcast along the PE row;
* BP: input-gradient channel c -> column c % C, output-gradient channel n -> PE row n % R,
  operand rows ``dy[b, n, y]``;
* WG: weight-gradient pairs (n, c) -> column c % C, operand rows ``dy[b, n, y]`` -> PE row
  ``(b*Ho + y) % R``; taps dense (the result is dense).

The formula structure is the exact PE model's (``docs/pe.md``), evaluated in expectation:

* per operand row and PE: ``P = sum over sub-lists q of bundles_q * max(nnz_q, 1)``,
  ``bundles_q = ceil(kept taps_q / L)`` (FP stride S > 1: S sub-lists by column residue, as the
  PE's stride-2 parity split; the PE supports S <= 2, larger strides assume the compiler's
  polyphase split), nnz ~ Binomial(sub-list length, operand density), kept taps ~
  Binomial(dense taps, weight density) (N:M: each tap of a row is in a different N:M group);
* broadcast coupling: the row time is the max over the C PEs of the PE row (the operand row is
  shared, so ``max_j P_j = max_j bundles_j * max(nnz, 1)``; the max of the bundle counts is
  exact through the product of the C binomial CDFs; with S > 1 sub-lists the max is taken per
  sub-list, an upper bound); rows no PE has a tap for are omitted, a PE without taps consumes
  the row with a 1-cycle skip beat (never the max);
* double buffering: row loads ``L_r = nnz_r + 1`` (the compressor's last beat; = the row
  length in dense mode) overlap processing; a tile of rows costs ``L_0 + sum_r max(P_r,
  L_{r+1})`` (an upper bound of the exact recurrence, tight), evaluated as ``E[max(X, Y)]``
  with the exact distributions of X = P and Y = the next row's load;
* the R PE rows of a column are reduced at drain time, so a tile ends when its slowest PE row
  does: ``E[max_i S_i]`` over the R per-PE-row sums, Gaussian approximation of each sum (mean
  and variance from the per-row distribution);
* tiles of at most D output words per PE; per tile ``L_0 + max(processing, drain of the
  previous tile) + PIPE_FLUSH``; the last drain and ``DRAIN_LATENCY`` at the end (ping-pong
  banks overlap a tile's drain with the next tile's processing).

The exact backend (the lead's array model, later) plugs in through :func:`register_backend`: a
function ``fn(layer, phase, cfg, *, operand_density, weight_density, dense, batch) ->
PhaseResult``; :func:`iteration` takes ``backend=``. Pre-generation of the next iteration's
W_fwd / W_bwd (the N:M selector) is assumed hidden under WG, as the controller overlaps it; it
adds no cycles here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..gen.config import AcceleratorConfig
from .pe_model import DRAIN_LATENCY, PIPE_FLUSH

__all__ = ["PhaseResult", "LayerResult", "IterationResult", "PHASES", "phase_cycles",
           "iteration", "register_backend", "BACKENDS", "ideal_speedup", "bdwp_work_fraction",
           "bdwp_applies", "exact_phase_cycles", "validate_against_exact"]

PHASES = ("fp", "bp", "wg")


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------

_LOGF = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, 200001, dtype=np.float64)))])


@lru_cache(maxsize=None)
def _binom_pmf(n: int, p: float) -> np.ndarray:
    """PMF of Binomial(n, p) on 0..n."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    out = np.zeros(n + 1)
    if p <= 0.0:
        out[0] = 1.0
        return out
    if p >= 1.0:
        out[n] = 1.0
        return out
    k = np.arange(n + 1)
    logc = _LOGF[n] - _LOGF[k] - _LOGF[n - k]
    out = np.exp(logc + k * math.log(p) + (n - k) * math.log1p(-p))
    return out / out.sum()


@lru_cache(maxsize=None)
def _binom_cdf(n: int, p: float) -> np.ndarray:
    return np.minimum(np.cumsum(_binom_pmf(n, p)), 1.0)


def _bundle_max_cdf(taps: tuple, wd: float, lanes: int) -> np.ndarray:
    """CDF of ``max_j ceil(Binomial(T_j, wd) / lanes)`` on 0..bmax; ``taps`` = ((T, count), ...)."""
    tmax = max((t for t, _ in taps), default=0)
    bmax = -(-tmax // lanes)
    cdf = np.ones(bmax + 1)
    for t, cnt in taps:
        if t == 0:
            continue
        c = _binom_cdf(t, wd)
        idx = np.minimum(np.arange(bmax + 1) * lanes, t)
        cdf *= c[idx] ** cnt
    cdf[-1] = 1.0
    return cdf


@lru_cache(maxsize=200000)
def _row_stats(sub_lens: tuple, d: float, taps: tuple, wd: float, lanes: int, dense: bool):
    """Statistics of one operand-row class.

    ``sub_lens``: the row's sub-list lengths (one entry, or S for strided FP); ``taps``: per
    sub-list, ``((dense taps T_j, number of PEs with that T_j), ...)`` over the C PEs of the PE
    row. Returns ``(present, E[Z], E[Z^2], E[load])`` with ``present`` the probability that
    some PE has a kept tap for the row, ``Z = max(P, next row's load)`` given present.
    """
    W = sum(sub_lens)
    if dense:
        d, wd = 1.0, 1.0
    pmf_x = np.array([1.0])
    for wq, tq in zip(sub_lens, taps):
        cdf_b = _bundle_max_cdf(tq, wd, lanes)
        pmf_b = np.diff(np.concatenate([[0.0], cdf_b]))
        pn = _binom_pmf(wq, d)
        pm = pn.copy()
        if wq:
            pm[1] += pm[0]
            pm[0] = 0.0
        else:                                     # empty sub-list: a bundle still costs 1
            pm = np.array([0.0, 1.0])
        prod = np.zeros((len(pmf_b) - 1) * (len(pm) - 1) + 1)
        for b, pb in enumerate(pmf_b):
            if pb <= 0:
                continue
            if b == 0:
                prod[0] += pb
            else:
                prod[b * np.arange(len(pm))] += pb * pm
        pmf_x = np.convolve(pmf_x, prod)
    present = 1.0 - pmf_x[0]
    if present <= 1e-15:
        return 0.0, 0.0, 0.0, 0.0
    px = pmf_x.copy()
    px[0] = 0.0
    px /= present
    if dense:
        py = np.zeros(W + 1)
        py[W] = 1.0
    else:                                         # L = 1 + Binomial(W - 1, d)
        py = np.concatenate([[0.0], _binom_pmf(max(W - 1, 0), d)])
    n = max(len(px), len(py))
    cx = np.cumsum(np.pad(px, (0, n - len(px))))
    cy = np.cumsum(np.pad(py, (0, n - len(py))))
    surv = 1.0 - np.minimum(cx * cy, 1.0)         # P(Z > k), k = 0..n-1
    ez = surv.sum()
    ez2 = ((2 * np.arange(n) + 1) * surv).sum()
    eload = float((np.arange(len(py)) * py).sum())
    return float(present), float(ez), float(ez2), eload


_GRID = np.linspace(-8.0, 8.0, 321)
_PHI = 0.5 * (1.0 + np.vectorize(math.erf)(_GRID / math.sqrt(2.0)))


def _expected_max(groups) -> float:
    """E[max] of independent Gaussians; ``groups`` = ((mean, var, count), ...)."""
    groups = [(m, v, c) for m, v, c in groups if c > 0]
    if not groups:
        return 0.0
    sds = [math.sqrt(max(v, 0.0)) for _, v, _ in groups]
    mmax = max(m for m, _, _ in groups)
    if max(sds) < 1e-9 or sum(c for *_, c in groups) == 1:
        return mmax if sum(c for *_, c in groups) > 1 else groups[0][0]
    lo = min(m - 8 * s for (m, _, _), s in zip(groups, sds))
    hi = max(m + 8 * s for (m, _, _), s in zip(groups, sds))
    t = np.linspace(lo, hi, 801)
    F = np.ones_like(t)
    for (m, _, c), s in zip(groups, sds):
        if s < 1e-9:
            F *= (t >= m)
        else:
            F *= np.interp((t - m) / s, _GRID, _PHI, left=0.0, right=1.0) ** c
    return float(hi - np.trapezoid(F, t))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class PhaseResult:
    """One layer, one phase. ``cycles``: predicted; ``valid_macs``: products a dense-mode PE
    does (padding squashed); ``useful_macs``: expected products with both factors non-zero
    (the work of an ideal zero-skipping engine); ``tiles``; ``proc``: processing cycles summed
    over tiles (max over PE rows); ``drain``: drained words (addresses) summed over tiles."""
    cycles: float
    valid_macs: float
    useful_macs: float
    tiles: int = 0
    proc: float = 0.0
    drain: float = 0.0
    skipped: bool = False

    def utilisation(self, cfg: AcceleratorConfig, macs=None) -> float:
        macs = self.valid_macs if macs is None else macs
        return macs / (cfg.num_pes * cfg.macs_per_pe * self.cycles) if self.cycles else 0.0


@dataclass
class LayerResult:
    name: str
    phases: dict = field(default_factory=dict)      # phase -> PhaseResult

    @property
    def cycles(self) -> float:
        return sum(p.cycles for p in self.phases.values() if not p.skipped)


@dataclass
class IterationResult:
    network: str
    layers: list
    cfg: AcceleratorConfig

    def total(self, phase=None) -> float:
        return sum(p.cycles for lay in self.layers for ph, p in lay.phases.items()
                   if not p.skipped and (phase is None or ph == phase))

    def macs(self, kind="valid_macs", phase=None) -> float:
        return sum(getattr(p, kind) for lay in self.layers for ph, p in lay.phases.items()
                   if not p.skipped and (phase is None or ph == phase))

    def utilisation(self, kind="valid_macs") -> float:
        c = self.total()
        return self.macs(kind) / (self.cfg.num_pes * self.cfg.macs_per_pe * c) if c else 0.0


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------

def _split(total: int, parts: int) -> list:
    """Interleaved assignment i % parts: the count per part."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _grouped(values) -> tuple:
    """Multiset as ((value, count), ...) sorted."""
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return tuple(sorted(out.items()))


def _chunk_counts(per_col: list, k0: int, k1: int) -> list:
    """Channels of chunk [k0, k1) (local index within a column) per column."""
    return [max(0, min(c, k1) - k0) for c in per_col]


def _tile_cost(pe_rows, sub_lens, d, wd, lanes, dense):
    """Processing cycles of one tile, and its first-row load.

    ``pe_rows``: one entry per PE row: ((row key, count), ...), row key = (taps per sub-list)
    as accepted by :func:`_row_stats`. Returns (E[max_i S_i], E[first load])."""
    groups, first_load = {}, 0.0
    for rows in pe_rows:
        mean = var = 0.0
        for taps, cnt in rows:
            pr, ez, ez2, eload = _row_stats(sub_lens, d, taps, wd, lanes, dense)
            m1 = pr * ez
            mean += cnt * m1
            var += cnt * (pr * ez2 - m1 * m1)
            if pr > 0 and not first_load:
                first_load = eload
        key = (round(mean, 9), round(var, 9))
        groups[key] = groups.get(key, 0) + 1
    emax = _expected_max([(m, v, c) for (m, v), c in groups.items()])
    return emax, first_load


def _sum_tiles(tiles):
    """``tiles``: ((proc, first load, drain words, count), ...) in order -> (cycles, proc, drain)."""
    total = proc_sum = drain_sum = 0.0
    prev_drain = 0.0
    n = 0
    for proc, load, drain, cnt in tiles:
        for _ in range(cnt):
            total += load + max(proc, prev_drain) + PIPE_FLUSH
            prev_drain = max(drain, 1)
            proc_sum += proc
            drain_sum += drain
            n += 1
    total += prev_drain + DRAIN_LATENCY
    return total, proc_sum, drain_sum, n


def _kept_rows(n_out_band: range, n_in: int, k: int, stride: int, pad: int, fp: bool):
    """Per operand row index, the number of kernel rows that connect it with an output row in
    ``n_out_band``. FP: operand row h feeds y = (h + pad - kr)/S; BP/WG: operand row y feeds
    h = y*S + kr - pad (in ``n_out_band`` for BP; in [0, n_in) for WG)."""
    out = []
    if fp:
        for h in range(n_in):
            out.append(sum(1 for kr in range(k) if (h + pad - kr) >= 0
                           and (h + pad - kr) % stride == 0
                           and (h + pad - kr) // stride in n_out_band))
    else:
        for y in range(n_in):
            out.append(sum(1 for kr in range(k) if y * stride + kr - pad in n_out_band))
    return out


# --------------------------------------------------------------------------------------------
# The statistical backend
# --------------------------------------------------------------------------------------------

def _check_density(name, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], not {v!r}")
    return float(v)


def phase_cycles(layer, phase: str, cfg: AcceleratorConfig, *, operand_density: float = 1.0,
                 weight_density: float = 1.0, dense: bool = False, batch: int = 1) -> PhaseResult:
    """Expected cycles of ``phase`` ('fp', 'bp', 'wg') of ``layer`` on ``cfg``'s array.

    ``operand_density``: non-zero fraction of the streamed operand (x in FP, dY in BP/WG);
    ``weight_density``: kept fraction of the phase's weights (N/M, or 1; ignored in WG, whose
    taps are dense); ``dense``: dense mode (no skipping; every tap; the baseline).
    ``layer``: a :class:`~sparseforge.sim.workloads.Layer` (or anything with its fields).
    """
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    d = _check_density("operand_density", operand_density)
    wd = 1.0 if phase == "wg" else _check_density("weight_density", weight_density)
    R, C, L, D = cfg.pe_rows, cfg.pe_cols, cfg.macs_per_pe, cfg.psum_buf_depth
    S, p, Kh, Kw = layer.stride, layer.padding, layer.kh, layer.kw
    H, W, Ho, Wo = layer.h, layer.w, layer.ho, layer.wo
    valid = layer.valid_macs(batch)
    useful = valid * d * (wd if phase != "wg" else 1.0)
    tiles = []
    if phase == "fp":
        per_col, per_row = _split(layer.cout, C), _split(layer.cin, R)
        nc = per_col[0]
        cc = max(1, min(nc, D // Wo))
        yt = max(1, min(Ho, D // (cc * Wo)))
        if S == 1:
            sub_lens, kw_q = (W,), (Kw,)
        else:                                    # column residue classes (stride-2 parity)
            sub_lens = tuple(len(range(q, W, S)) for q in range(S))
            kw_q = tuple(sum(1 for kw in range(Kw) if (kw - p) % S == q) for q in range(S))
        for k0 in range(0, nc, cc):
            cnt = _chunk_counts(per_col, k0, k0 + cc)
            for y0 in range(0, Ho, yt):
                band = range(y0, min(Ho, y0 + yt))
                v = _kept_rows(band, H, Kh, S, p, True)
                rows = []
                for vv, n_h in _grouped(x for x in v if x):
                    taps = tuple(_grouped(c * vv * kq for c in cnt if c * vv * kq)
                                 for kq in kw_q)
                    rows.append((taps, n_h))
                pe_rows = [tuple((t, n * ci) for t, n in rows) for ci in per_row if ci]
                proc, load = _tile_cost(pe_rows, sub_lens, d, wd, L, dense)
                tiles.append((proc, load, max(cnt) * len(band) * Wo, batch))
    elif phase == "bp":
        per_col, per_row = _split(layer.cin, C), _split(layer.cout, R)
        nc = per_col[0]
        cc = max(1, min(nc, D // W))
        ht = max(1, min(H, D // (cc * W)))
        for k0 in range(0, nc, cc):
            cnt = _chunk_counts(per_col, k0, k0 + cc)
            for h0 in range(0, H, ht):
                band = range(h0, min(H, h0 + ht))
                v = _kept_rows(band, Ho, Kh, S, p, False)
                rows = [(( _grouped(c * vv * Kw for c in cnt if c), ), n_y)
                        for vv, n_y in _grouped(x for x in v if x)]
                pe_rows = [tuple((t, n * ci) for t, n in rows) for ci in per_row if ci]
                proc, load = _tile_cost(pe_rows, (Wo,), d, wd, L, dense)
                tiles.append((proc, load, max(cnt) * len(band) * W, batch))
    else:                                         # wg
        per_col = _split(layer.cin, C)
        nc = per_col[0]
        if nc * Kh * Kw <= D:
            cc, nt = nc, max(1, min(layer.cout, D // (nc * Kh * Kw)))
        else:
            cc, nt = max(1, D // (Kh * Kw)), 1
        v = _kept_rows(range(H), Ho, Kh, S, p, False)      # kernel rows valid per dy row y
        # dy rows (b, n, y) -> PE row (b*Ho + y) % R
        y_of_row = [[] for _ in range(R)]
        for b in range(batch):
            for y in range(Ho):
                y_of_row[(b * Ho + y) % R].append(v[y])
        for k0 in range(0, nc, cc):
            cnt = _chunk_counts(per_col, k0, k0 + cc)
            for n0 in range(0, layer.cout, nt):
                nn = min(nt, layer.cout - n0)
                pe_rows = []
                for ys in y_of_row:
                    rows = tuple(((_grouped(c * vv * Kw for c in cnt if c),), n_y * nn)
                                 for vv, n_y in _grouped(x for x in ys if x))
                    if rows:
                        pe_rows.append(rows)
                proc, load = _tile_cost(pe_rows, (Wo,), d, 1.0, L, dense)
                tiles.append((proc, load, nn * max(cnt) * Kh * Kw, 1))
    cyc, proc, drain, n = _sum_tiles(tiles)
    return PhaseResult(cycles=cyc, valid_macs=valid, useful_macs=useful, tiles=n, proc=proc,
                       drain=drain)


BACKENDS = {"statistical": phase_cycles}


def register_backend(name: str, fn) -> None:
    """Register a per-layer/phase backend ``fn(layer, phase, cfg, *, operand_density,
    weight_density, dense, batch) -> PhaseResult`` (e.g. the exact array model)."""
    if not callable(fn):
        raise TypeError(f"backend {name!r} must be callable")
    BACKENDS[name] = fn


# --------------------------------------------------------------------------------------------
# Whole iterations, ideal bounds
# --------------------------------------------------------------------------------------------

def bdwp_applies(layer, m: int) -> bool:
    """BDWP prunes a layer iff both N:M axes (Cin for W_fwd, Cout for W_bwd) are multiples of M
    (*ours*, the digits-CNN rule): otherwise the layer stays dense (e.g. a first layer with
    Cin = 3, a 10-class classifier)."""
    return layer.cin % m == 0 and layer.cout % m == 0


def bdwp_work_fraction(n: int, m: int) -> float:
    """Ideal BDWP work per iteration relative to dense: FP and BP at N/M, WG dense."""
    return (2 * n / m + 1) / 3


def iteration(net, cfg: AcceleratorConfig, *, fp_density=None, dy_density=None, nm=None,
              dense=False, batch=1, backend="statistical", progress=None) -> IterationResult:
    """One training iteration: FP of every layer, then BP (not for the first layer: the input
    needs no gradient) and WG of every layer.

    ``fp_density`` / ``dy_density``: ``{layer name: density}`` (missing: 1.0); ``nm``: ``(n, m)``
    BDWP (applied to the layers :func:`bdwp_applies` accepts) or None; ``dense``: dense-mode
    baseline (densities ignored). Pre-generation is hidden under WG (no cycles)."""
    fn = BACKENDS[backend]
    fp_density, dy_density = fp_density or {}, dy_density or {}
    out = []
    for i, lay in enumerate(net.layers):
        wd = nm[0] / nm[1] if (nm and bdwp_applies(lay, nm[1])) else 1.0
        lr = LayerResult(lay.name)
        for ph in PHASES:
            od = fp_density.get(lay.name, 1.0) if ph == "fp" else dy_density.get(lay.name, 1.0)
            r = fn(lay, ph, cfg, operand_density=od, weight_density=wd, dense=dense, batch=batch)
            if ph == "bp" and i == 0:
                r = PhaseResult(0.0, 0.0, 0.0, skipped=True)
            lr.phases[ph] = r
        out.append(lr)
        if progress is not None:
            progress(1)
    return IterationResult(net.name, out, cfg)


def ideal_speedup(result: IterationResult, dense_result: IterationResult) -> float:
    """Dense valid products / expected useful products of the same iteration (an engine with
    zero overhead that skips every zero it is allowed to)."""
    u = result.macs("useful_macs")
    return dense_result.macs("valid_macs") / u if u else float("inf")


# --------------------------------------------------------------------------------------------
# Validation against the exact per-PE model
# --------------------------------------------------------------------------------------------

def exact_phase_cycles(layer, phase, cfg, *, operand_density, nm=None, dense=False, seed=0,
                       batch=1):
    """Exact per-PE cycles (``pe_model.cycles``) of ``layer`` on ONE PE (``cfg`` should be a 1x1
    array with a psum bank holding the whole output) with random operands of the given
    density. Returns ``(cycles, useful products counted by the model)``."""
    from . import golden
    from . import pe_model as pm
    rng = np.random.default_rng(seed)
    S, p = layer.stride, layer.padding
    x = rng.integers(1, 100, (batch, layer.cin, layer.h, layer.w))
    w = rng.integers(1, 100, (layer.cout, layer.cin, layer.kh, layer.kw))
    w *= rng.choice((-1, 1), w.shape)
    dy = rng.integers(1, 100, (batch, layer.cout, layer.ho, layer.wo))
    common = dict(stride=S, padding=p, cfg=cfg, dense=dense)
    if phase == "fp":
        x[rng.random(x.shape) >= operand_density] = 0
        mask = golden.bdwp_masks(w, *nm)[0] if nm else None
        job = pm.map_conv_fp(x, w, mask=mask, **common)
    elif phase == "bp":
        dy[rng.random(dy.shape) >= operand_density] = 0
        mask = golden.bdwp_masks(w, *nm)[1] if nm else None
        job = pm.map_conv_bp(dy, w, x.shape, mask=mask, **common)
    else:
        dy[rng.random(dy.shape) >= operand_density] = 0
        job = pm.map_conv_wg(x, dy, w.shape, **common)
    st = pm.cycles(job)
    return st.cycles, st.busy_mac


def validate_against_exact(layer, phase, cfg, *, operand_density, nm=None, dense=False,
                           seeds=(0, 1, 2)):
    """Compare :func:`phase_cycles` with the exact per-PE model averaged over ``seeds``.

    ``cfg`` must be a 1x1 array (``pe_rows = pe_cols = 1``) whose ``psum_buf_depth`` holds the
    whole output (one tile, as the exact per-PE mapping requires). Returns a dict with
    ``model``, ``exact`` (mean), ``exact_sd``, ``rel_err`` (model / exact - 1)."""
    if cfg.pe_rows != 1 or cfg.pe_cols != 1:
        raise ValueError(f"validate_against_exact needs a 1x1 array, not "
                         f"{cfg.pe_rows}x{cfg.pe_cols}")
    wd = nm[0] / nm[1] if nm else 1.0
    model = phase_cycles(layer, phase, cfg, operand_density=operand_density, weight_density=wd,
                         dense=dense)
    if model.tiles != 1:
        raise ValueError(f"the layer needs {model.tiles} tiles; raise psum_buf_depth so the "
                         f"whole output fits one PE bank")
    ex = [exact_phase_cycles(layer, phase, cfg, operand_density=operand_density, nm=nm,
                             dense=dense, seed=s)[0] for s in seeds]
    mean = float(np.mean(ex))
    return {"model": model.cycles, "exact": mean, "exact_sd": float(np.std(ex)),
            "rel_err": model.cycles / mean - 1.0}
