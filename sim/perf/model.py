"""Performance model of the PE array: cycles per layer and training phase from operand / weight
densities, per-iteration totals, ideal bounds; two backends: ``"statistical"`` (this module's
expectation model, any layer size) and ``"exact"`` (the exact array cycle model
:mod:`sparseforge.gen.mapper.array`, equal to the RTL, on random tensors: small layers only).

Mapping (the array's, :mod:`sparseforge.gen.mapper.array`; R = ``pe_rows``, C = ``pe_cols``, L =
``macs_per_pe`` lanes, D = ``psum_buf_depth``):

* FP: operand rows ``x[b, c, h]`` dealt to PE row ``((b*H + h)*Cin + c) % R``; output channel
  ``n`` -> column ``n % C``; a column's output rows ``(b, n, y)`` taken y-major (every
  channel's row y, then y + 1, ...) in tiles of ``D // Wo`` rows;
* BP: rows ``dy[b, n, y]`` -> PE row ``((b*Ho + y)*Cout + n) % R``; input-gradient channel
  ``c`` -> column ``c % C``; output rows ``(b, c, h)`` y-major in tiles of ``D // W`` rows;
* WG: rows ``dy[b, n, y]`` -> PE row ``((b*Cout + n)*Ho + y) % R`` (``y`` fastest: a WG tile
  holds few channels ``n``, so channel-fastest dealing would put all of one channel's rows on
  one PE row when ``Cout % R == 0``); input channel ``c`` -> column ``c % C``; weight-gradient
  addresses ``((n*nc + c)*Kh + kr)*Kw + kw`` in tiles of D words (dense taps, padded channels
  included).

Statistical model (*ours*; ``docs/benchmarks.md``): every tile of the mapping is enumerated
(repeating interior tiles computed once); per tile and PE row, the operand rows that have a
tap in the tile are grouped by their per-column dense tap counts; per row the exact PE cost
``P = sum_q ceil(kept taps_q / L) * max(nnz_q, 1)`` maximised over the C PEs of the PE row
(broadcast), in expectation with kept taps ~ Binomial(dense taps, N/M) and nnz ~ Binomial(row
length, density), and ``E[max(P_r, L_{r+1})]`` with the next row's load (double buffering);
rows no PE needs are omitted. Per PE row a tile's time is a Gaussian (sum of the rows' means
and variances); the tiles run through the exact model's recurrence (``pe_model.cycles_grid``:
tile t may start when the drain of tile t - 2 released its psum half, the drain of tile t waits
for the slowest PE row + ``PIPE_FLUSH`` and the previous drain; 1 word per cycle per column),
with max of Gaussians by Clark's moments. Dense mode is deterministic and equals the exact
model; sparse cases are checked against it in tests/test_perf.py. FP strides > 2 (not in the
PE) use S column-residue sub-lists (the parity split generalised); kernels wider than ``k_max``
and rows longer than ``max_row_len`` are not rejected here (the exact backend rejects them).

DMA (issue 16; ``docs/dma.md``, ``docs/benchmarks.md`` "DMA cost"): tensors live in card memory
and the DMA engine (``hdl/dma.py``) moves each whole tensor between memory and its on-chip buffer
by one descriptor per buffer-full. :func:`phase_dma` prices a layer phase's traffic at the
configured ``dma_width``: FP loads x, w and (BDWP) the forward mask and stores y; BP loads dy, w
and the backward mask and stores dx; WG loads x and dy and stores dW. Per descriptor
:data:`DMA_DESC_OVERHEAD` cycles plus, since the engine runs ahead across its INCR bursts
(``dma_max_burst`` beats, split at 4 KiB) and moves one beat per cycle, ``1 + read_latency +
beats`` for a load and ``2 + write_latency + beats`` for a store, the latencies paid once per
descriptor (:func:`dma_transfer_cycles`, equal to the engine's measured cycles with the
registered amaranth-sim slave). :func:`iteration` then applies the double-buffering rule
(:func:`expose_dma`): only the first phase's loads, the part of each later phase's loads plus
the previous phase's store that exceeds the previous phase's compute, and the last store are
exposed. ``PhaseResult.cycles`` stays the array's; ``IterationResult.total()`` adds the exposed
DMA (``total(dma=False)`` / :meth:`IterationResult.array_total` without).

WG scratchpad reloads (issue 18; :func:`wg_chunking`): a WG input whose per-PE image exceeds
``act_buf_depth`` is cut into chunks of whole planes and reloaded per tile and chunk, one word
per cycle, not hidden (``gen/mapper/pe.wg_chunks``); each run costs its PE row
``RELOAD_GAP + chunk words`` inside ``PhaseResult.cycles`` (``PhaseResult.reload``). Dense
chunked WG equals the exact model (``tests/sim/test_perf.py::test_statistical_vs_exact_chunked_wg``).
A plane larger than the scratchpad (which the RTL refuses) is priced as one plane per chunk.

Pruning and pre-generation (issue 18): exposed at the RTL's top-level rates
(:func:`prune_cycles`, :func:`pregen_cycles`) where they run: pruning before each pruned
layer's BP, pre-generation of the next iteration's W_fwd / W_bwd after each BDWP layer's WG.

Backends plug in through :func:`register_backend`: ``fn(layer, phase, cfg, *,
operand_density, weight_density, dense, batch, nm) -> PhaseResult``; :func:`iteration` takes
``backend=``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from sparseforge.gen import tiling
from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.mapper import array as am
from sparseforge.gen.mapper.array import COLUMN_LATENCY
from sparseforge.gen.mapper.pe import DRAIN_ACCEPT, DRAIN_LATENCY, PIPE_FLUSH, RELEASE, RELOAD_GAP
from sparseforge.sim.reference import golden

__all__ = ["PhaseResult", "LayerResult", "IterationResult", "PHASES", "phase_cycles",
           "DmaCost", "phase_dma", "phase_tensors", "dma_bursts", "dma_transfer_cycles", "expose_dma",
           "DMA_READ_LATENCY", "DMA_WRITE_LATENCY", "DMA_DESC_OVERHEAD",
           "iteration", "register_backend", "BACKENDS", "ideal_speedup", "bdwp_work_fraction",
           "bdwp_applies", "exact_phase_cycles", "validate_against_exact", "prune_cycles",
           "pregen_cycles", "PRUNE_CYCLES_PER_ELEM", "PRUNE_OVERHEAD", "PREGEN_CYCLES_PER_GROUP",
           "PREGEN_DP_OVERHEAD", "pregen_dp_split", "bwd_stages_beside",
           "PREGEN_OVERHEAD", "wg_chunking", "MemoryProfile", "ddr4_profile", "memory_profile",
           "MEMORY", "SIM_MEMORY"]

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
def _row_stats(sub_lens: tuple, d: float, taps: tuple, wd: float, lanes: int, dense: bool,
               floor: int = 0):
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
    if floor > 0:                                 # Z' = max(Z, floor): the mapper's read floor
        if floor + 1 > n:
            surv = np.pad(surv, (0, floor + 1 - n))
            n = floor + 1
        surv[:floor] = 1.0
    ez = surv.sum()
    ez2 = ((2 * np.arange(n) + 1) * surv).sum()
    eload = float((np.arange(len(py)) * py).sum())
    return float(present), float(ez), float(ez2), eload


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class PhaseResult:
    """One layer, one phase. ``cycles``: predicted; ``valid_macs``: products a dense-mode PE
    does (padding squashed); ``useful_macs``: expected products with both factors non-zero
    (the work of an ideal zero-skipping engine); ``tiles``; ``proc``: processing cycles summed
    over tiles (max over PE rows); ``drain``: drained words (addresses) summed over tiles.

    DMA (:func:`phase_dma`): ``dma_cycles`` the engine's cycles for all of the phase's
    transfers (loads + store), ``dma_load`` / ``dma_store`` their parts, ``dma_beats`` the data
    beats; ``dma_exposed`` the part not hidden under compute (a phase alone: all of it;
    inside :func:`iteration`: the double-buffering rule of :func:`expose_dma`). ``cycles``
    is the array's alone; :attr:`total_cycles` adds ``dma_exposed``."""
    cycles: float
    valid_macs: float
    useful_macs: float
    tiles: int = 0
    proc: float = 0.0
    drain: float = 0.0
    skipped: bool = False
    dma_cycles: float = 0.0
    dma_exposed: float = 0.0
    dma_load: float = 0.0
    dma_store: float = 0.0
    dma_beats: int = 0
    #: exposed cycles of the stochastic pruner on this layer's output gradient (attributed
    #: to BP, or to WG for the first layer) and of the N:M pre-generation of the next step's
    #: masks (attributed to WG): :func:`prune_cycles`, :func:`pregen_cycles`
    prune_exposed: float = 0.0
    pregen_exposed: float = 0.0
    #: exposed cycles of the between-layer stages on chip (``CMD_STAGE``, where the e2e step
    #: runs them: a data-plane core that holds the network): the layer's ReLU / pool forward
    #: (and the loss gradient) attributed to its FP, its pool / ReLU backward to its first
    #: backward phase (:func:`stage_costs`)
    stage_exposed: float = 0.0
    #: chunked WG: scratchpad reload cycles inside ``cycles`` (the largest total over the PE
    #: rows, which run their reloads in parallel; :func:`wg_chunking`)
    reload: float = 0.0

    @property
    def extra_exposed(self) -> float:
        """Exposed cycles beyond the array: DMA, pruning, pre-generation, stages."""
        return self.dma_exposed + self.prune_exposed + self.pregen_exposed + self.stage_exposed

    @property
    def total_cycles(self) -> float:
        return self.cycles + self.extra_exposed

    def utilisation(self, cfg: AcceleratorConfig, macs=None) -> float:
        macs = self.valid_macs if macs is None else macs
        return macs / (cfg.num_pes * cfg.macs_per_pe * self.cycles) if self.cycles else 0.0


@dataclass
class LayerResult:
    name: str
    phases: dict = field(default_factory=dict)      # phase -> PhaseResult

    @property
    def cycles(self) -> float:
        """Array cycles of the layer's phases (no DMA)."""
        return sum(p.cycles for p in self.phases.values() if not p.skipped)

    @property
    def dma_exposed(self) -> float:
        return sum(p.dma_exposed for p in self.phases.values() if not p.skipped)


@dataclass
class IterationResult:
    """``total()``: array cycles + exposed DMA, pruning, pre-generation and stage cycles;
    ``prune_total()`` / ``pregen_total()`` / ``stage_total()``: those parts; ``array_total()`` / ``total(dma=False)``:
    the array alone; ``dma_total(exposed=)``: the DMA's (exposed or all) cycles;
    ``utilisation()``: of the array alone (``dma=True``: over the total)."""
    network: str
    layers: list
    cfg: AcceleratorConfig

    def _phases(self, phase):
        return [p for lay in self.layers for ph, p in lay.phases.items()
                if not p.skipped and (phase is None or ph == phase)]

    def total(self, phase=None, dma=True) -> float:
        """Array cycles plus (``dma=True``) every exposed cost: DMA, pruning, pre-generation,
        stages."""
        return sum(p.cycles + (p.extra_exposed if dma else 0.0) for p in self._phases(phase))

    def prune_total(self, phase=None) -> float:
        return sum(p.prune_exposed for p in self._phases(phase))

    def pregen_total(self, phase=None) -> float:
        return sum(p.pregen_exposed for p in self._phases(phase))

    def stage_total(self, phase=None) -> float:
        """The between-layer stages on chip (``stage_exposed``; 0 where the host runs them)."""
        return sum(p.stage_exposed for p in self._phases(phase))

    def reload_total(self, phase=None) -> float:
        """Chunked-WG scratchpad reload cycles (inside the array's cycles)."""
        return sum(p.reload for p in self._phases(phase))

    def array_total(self, phase=None) -> float:
        return self.total(phase, dma=False)

    def dma_total(self, phase=None, exposed=True) -> float:
        return sum(p.dma_exposed if exposed else p.dma_cycles for p in self._phases(phase))

    def macs(self, kind="valid_macs", phase=None) -> float:
        return sum(getattr(p, kind) for lay in self.layers for ph, p in lay.phases.items()
                   if not p.skipped and (phase is None or ph == phase))

    def utilisation(self, kind="valid_macs", dma=False) -> float:
        c = self.total(dma=dma)
        return self.macs(kind) / (self.cfg.num_pes * self.cfg.macs_per_pe * c) if c else 0.0


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------

def _grouped(values) -> tuple:
    """Multiset as ((value, count), ...) sorted."""
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return tuple(sorted(out.items()))


def _ceil_div(a, b):
    return -(-a // b)


def _row_counts(batch, chans, n_rows, R):
    """``out[b, r, i]``: operand rows ``(b, ch, r)`` (``ch`` in [0, chans)) dealt to PE row ``i``
    by ``((b*n_rows + r)*chans + ch) % R`` (the array's interleaved dealing, channel fastest)."""
    b = np.arange(batch)[:, None, None]
    ch = np.arange(chans)[None, :, None]
    r = np.arange(n_rows)[None, None, :]
    k = ((b * n_rows + r) * chans + ch) % R
    out = np.zeros((batch, n_rows, R), np.int64)
    np.add.at(out, (np.broadcast_to(b, k.shape), np.broadcast_to(r, k.shape), k), 1)
    return out


def _col_counts(a, e, nv):
    """Per column: local channels of the half-open range [a, e) that the column holds
    (``nv[j]``: how many local channels column j has taps for)."""
    return tuple(max(0, min(e, v) - a) for v in nv)


def _band_rows(p0, p1, B, nc, nv, C, sources):
    """The operand rows a band ``[p0, p1)`` of y-major output rows ``(y, b, c_local)`` needs:
    ``{(b, r): [output rows fed, per column]}`` with ``sources(y)`` the operand rows ``r`` that
    output row ``y`` reads (in kernel-row order)."""
    acc = {}
    for y in range(p0 // (B * nc), (p1 - 1) // (B * nc) + 1):
        for b in range(B):
            base = (y * B + b) * nc
            a, e = max(p0 - base, 0), min(p1 - base, nc)
            if e <= a:
                continue
            cnt = _col_counts(a, e, nv)
            for r in sources(y):
                v = acc.setdefault((b, r), [0] * C)
                for j in range(C):
                    v[j] += cnt[j]
    return acc


# -- Gaussian recurrence ----------------------------------------------------------------------

_SQ2 = math.sqrt(2.0)


def _gmax2(a, b):
    """Clark's moments of max(A, B) for independent Gaussians ``a = (mean, var)``, ``b``."""
    (m1, v1), (m2, v2) = a, b
    s2 = v1 + v2
    if s2 < 1e-12:
        return (m1, v1) if m1 >= m2 else (m2, v2)
    s = math.sqrt(s2)
    al = (m1 - m2) / s
    if al > 8:
        return a
    if al < -8:
        return b
    cdf = 0.5 * (1 + math.erf(al / _SQ2))
    pdf = math.exp(-0.5 * al * al) / math.sqrt(2 * math.pi)
    mean = m1 * cdf + m2 * (1 - cdf) + s * pdf
    sec = (m1 * m1 + v1) * cdf + (m2 * m2 + v2) * (1 - cdf) + (m1 + m2) * s * pdf
    return mean, max(sec - mean * mean, 0.0)


def _gmax(items):
    it = iter(items)
    acc = next(it)
    for x in it:
        acc = _gmax2(acc, x)
    return acc


def _run_tiles(tiles, R, first_load):
    """The exact array model's tile recurrence (``pe_model.cycles_grid``) on Gaussian states.

    ``tiles``: ``[(mean[R], var[R], drain words)]``, per tile the processing time of each PE
    row (its rows' ``max(P_r, L_{r+1})`` summed; a PE row's C PEs share the operand rows, so
    the row's time is its slowest PE's). Per PE row ``E_i = max(E_i, Rel_{t-2}) + P_{t,i}``;
    the drain ``D_t = max(max_i E_i + PIPE_FLUSH, Rel_{t-1})``; ``Rel_t = D_t + DRAIN_ACCEPT +
    c_t - 1 + RELEASE``; total ``D_last + DRAIN_ACCEPT + c_last + DRAIN_LATENCY +
    COLUMN_LATENCY``. Max of Gaussians by
    Clark's moments. Returns (cycles, processing sum of the slowest PE row per tile, drain sum).
    """
    E = [(float(first_load), 0.0)] * R
    rel = [(-1e18, 0.0), (-1e18, 0.0)]
    proc_sum = drain_sum = 0.0
    D = c = None
    for t, (mean, var, words) in enumerate(tiles):
        r2 = rel[t % 2]
        E = [(m + float(mi), v + float(vi)) for (m, v), mi, vi in
             ((_gmax2(e, r2), mi, vi) for e, mi, vi in zip(E, mean, var))]
        M = _gmax(E)
        c = max(int(words), 1)
        D = _gmax2((M[0] + PIPE_FLUSH, M[1]), rel[(t - 1) % 2])
        rel[t % 2] = (D[0] + DRAIN_ACCEPT + c - 1 + RELEASE, D[1])
        proc_sum += float(np.max(mean))
        drain_sum += words
    total = D[0] + DRAIN_ACCEPT + c - 1 + 1 + DRAIN_LATENCY + COLUMN_LATENCY
    return total, proc_sum, drain_sum


def _mapper_floor(sub_lens, key) -> int:
    """The hardware mapper's cycles for one operand row at the least (``hdl/array_mapper.py``,
    docs/array_mapper.md): its tap generators test one dense candidate per cycle and the PEs of
    a PE row wait for each other per row (the slowest PE's candidates, summed over the parity
    passes), and its x emitter reads every element of the row."""
    scan = sum(max(t for t, _ in tq) for tq in key if tq)
    return max(scan, sum(sub_lens))


def _pe_row_moments(rows, R, sub_lens, d, wd, lanes, dense, top=False):
    """``rows``: {taps key: counts[R]} for one tile -> (mean[R], var[R], first row's load).
    ``top``: the rows as the hardware mapper feeds them (:func:`_mapper_floor`; a row without
    a kept tap is still scanned)."""
    mean = np.zeros(R)
    var = np.zeros(R)
    first = 0.0
    for key, cnt in rows.items():
        fl = _mapper_floor(sub_lens, key) if top else 0
        pr, ez, ez2, eload = _row_stats(sub_lens, d, key, wd, lanes, dense, fl)
        m1 = pr * ez + (1.0 - pr) * fl
        mean += cnt * m1
        var += cnt * max(pr * ez2 + (1.0 - pr) * fl * fl - m1 * m1, 0.0)
        if pr > 0 and not first:
            first = eload
    # a PE row with no row in the tile still ends it with one skip row (load + skip beat)
    mean[mean == 0] = 2.0
    return mean, var, first


# --------------------------------------------------------------------------------------------
# DMA cost (issue 16)
# --------------------------------------------------------------------------------------------

#: Cycles from an AR handshake to the first R beat beyond the address cycle (the registered
#: amaranth-sim slave of ``sim/testkit/axi_mem_model.py``: 1; docs/dma.md "Timing"). A real
#: DDR4 controller answers after tens of cycles: pass ``read_latency=``.
DMA_READ_LATENCY = 1
#: A store's slave delays: AW handshake -> ``wready`` plus last W beat -> ``bvalid``
#: (that slave: 1 + 1; paid once per descriptor, the engine runs ahead).
DMA_WRITE_LATENCY = 2


@dataclass(frozen=True)
class MemoryProfile:
    """The card memory behind the DMA engine's AXI4 master, in core cycles: ``read_latency``
    (AR handshake -> first R beat), ``write_latency`` (AW -> ``wready`` plus last W -> B),
    ``beats_per_cycle`` (sustained ``dma_width`` beats per core cycle the memory delivers,
    <= 1: the engine moves at most one), ``source`` (where the figures come from)."""
    name: str
    read_latency: int = DMA_READ_LATENCY
    write_latency: int = DMA_WRITE_LATENCY
    beats_per_cycle: float = 1.0
    source: str = ""

    def __post_init__(self):
        if not 0.0 < self.beats_per_cycle <= 1.0:
            raise ValueError(f"beats_per_cycle must be in (0, 1], not {self.beats_per_cycle!r}")
        if self.read_latency < 0 or self.write_latency < 0:
            raise ValueError("latencies must be >= 0")


def ddr4_profile(*, mt_s: int = 2400, bus_bits: int = 64, efficiency: float = 0.7,
                 latency_ns: float = 150.0, core_mhz: float = 125.0,
                 dma_bits: int = 512) -> MemoryProfile:
    """A DDR4 channel seen from a ``core_mhz`` core with a ``dma_bits`` master:
    ``beats_per_cycle = min(1, mt_s * bus_bits/8 * efficiency / (dma_bits/8 * core_mhz))``,
    latencies ``ceil(latency_ns * core_mhz / 1000)``. Datasheet-derived assumptions (no card
    was measured): DDR4-2400 x64 peaks at 19.2 GB/s; 70 % sustained on mixed long bursts;
    ~150 ns from AR to data through the DDR4 controller (its ~100 ns read path) plus the AXI
    interconnect and clock crossing."""
    bpc = min(1.0, mt_s * 1e6 * bus_bits / 8 * efficiency / (dma_bits / 8 * core_mhz * 1e6))
    lat = math.ceil(latency_ns * core_mhz / 1000.0)
    return MemoryProfile(
        f"DDR4-{mt_s} x{bus_bits}, {dma_bits}-bit DMA at {core_mhz:g} MHz", lat, lat,
        round(bpc, 4),
        f"DDR4-{mt_s} x{bus_bits}: {mt_s * bus_bits / 8 / 1000:.1f} GB/s peak x {efficiency:g} "
        f"sustained (assumed); {latency_ns:g} ns read/write latency (assumed); not measured")


#: The simulation's card memory (``sim/testkit/axi_mem_model.py``, the fast engine's memory).
SIM_MEMORY = MemoryProfile("simulated card memory (registered slave)",
                           source="the registered amaranth-sim slave, docs/dma.md")
#: Per preset: the memory its board puts behind the DMA. ``vcu1525``: the card's DDR4 C0 at
#: the block design's default 125 MHz core clock (docs/fpga.md); others: the simulation's.
MEMORY = {"vcu1525": ddr4_profile()}


def memory_profile(cfg: AcceleratorConfig) -> MemoryProfile:
    """The :class:`MemoryProfile` of ``cfg``'s preset (:data:`MEMORY`), else :data:`SIM_MEMORY`."""
    return MEMORY.get(cfg.name, SIM_MEMORY)
#: Per descriptor: the cycle that accepts it, the check cycle, the completion cycle.
DMA_DESC_OVERHEAD = 3


def dma_bursts(n_elems: int, cfg: AcceleratorConfig, addr: int = 0) -> tuple:
    """``(beats, bursts)`` of one descriptor of ``n_elems`` elements at byte address ``addr``
    (beat-aligned): ``beats = ceil(n / epw)`` with ``epw = dma_width // data_width``; bursts
    of at most ``dma_max_burst`` beats that never cross a 4 KiB boundary, issued as the engine
    does (``min(max_burst, beats left, beats to the boundary)``)."""
    bpb = cfg.dma_width // 8
    epw = cfg.dma_width // cfg.data_width
    if addr % bpb:
        raise ValueError(f"addr {addr:#x} is not a multiple of the beat ({bpb} bytes)")
    beats = _ceil_div(int(n_elems), epw)
    if beats <= 0:
        return 0, 0
    mb, page = cfg.dma_max_burst, 4096 // bpb
    first = min(beats, page - (addr % 4096) // bpb)       # beats up to the first boundary
    rest = beats - first
    full, tail = divmod(rest, page)
    bursts = _ceil_div(first, mb) + full * _ceil_div(page, mb) + _ceil_div(tail, mb)
    return beats, bursts


def dma_transfer_cycles(n_elems: int, store: bool, cfg: AcceleratorConfig, *, addr: int = 0,
                        read_latency: int = DMA_READ_LATENCY,
                        write_latency: int = DMA_WRITE_LATENCY,
                        beats_per_cycle: float = 1.0) -> int:
    """Engine cycles of one descriptor with an always-ready slave of the given latencies,
    from the cycle ``desc`` is offered to the completion's handshake. The engine runs ahead
    (the next AR/AW is raised as soon as the previous one is accepted; docs/dma.md "Timing"),
    so data beats move one per cycle across bursts and 4 KiB boundaries and the latencies are
    paid once per descriptor: ``DMA_DESC_OVERHEAD + 1 + read_latency + beats`` for a load (the
    first AR cycle), ``DMA_DESC_OVERHEAD + 2 + write_latency + beats`` for a store (the first
    AW cycle and the last B handshake). The burst split (:func:`dma_bursts`) no longer changes
    the cycles. ``beats_per_cycle`` < 1: a memory slower than the engine
    (:class:`MemoryProfile`) stretches the data beats to ``ceil(beats / beats_per_cycle)``.
    ``n_elems == 0``: 0 (no descriptor is sent)."""
    beats, _ = dma_bursts(n_elems, cfg, addr)
    if beats == 0:
        return 0
    per = (2 + write_latency) if store else (1 + read_latency)
    return DMA_DESC_OVERHEAD + math.ceil(beats / beats_per_cycle - 1e-9) + per


def _tensor_cycles(n: int, buf_elems: int, store: bool, cfg, read_latency, write_latency,
                   beats_per_cycle=1.0):
    """A tensor of ``n`` elements stored contiguously from a 4 KiB-aligned address and moved
    in descriptors of at most ``buf_elems`` elements (one per buffer-full; a tensor that fits
    is one descriptor). Returns ``(cycles, beats, descriptors)``. Chunk addresses repeat
    modulo 4 KiB, so equal chunks are priced once per residue."""
    if n <= 0:
        return 0, 0, 0
    eb = cfg.data_width // 8
    chunk = max(buf_elems, 1)
    nfull, rem = divmod(n, chunk)
    cb = chunk * eb
    period = 4096 // math.gcd(cb, 4096)
    cyc = beats = 0
    kw = dict(read_latency=read_latency, write_latency=write_latency,
              beats_per_cycle=beats_per_cycle)
    for k in range(min(nfull, period)):
        cnt = (nfull - k + period - 1) // period
        cyc += cnt * dma_transfer_cycles(chunk, store, cfg, addr=(k * cb) % 4096, **kw)
        beats += cnt * dma_bursts(chunk, cfg)[0]
    if rem:
        cyc += dma_transfer_cycles(rem, store, cfg, addr=(nfull * cb) % 4096, **kw)
        beats += dma_bursts(rem, cfg)[0]
    return cyc, beats, nfull + (1 if rem else 0)


@dataclass
class DmaCost:
    """One layer phase's transfers: ``tensors`` = ``[(name, buffer, elements, beats,
    descriptors, cycles, store)]``; ``load`` / ``store`` / ``cycles`` the engine cycles."""
    tensors: list
    load: int
    store: int

    @property
    def cycles(self) -> int:
        return self.load + self.store

    @property
    def beats(self) -> int:
        return sum(t[3] for t in self.tensors)


def phase_tensors(layer, phase: str, *, batch: int = 1, masked: bool = False,
                  data_width: int = 16) -> list:
    """``[(name, buffer field, elements, store)]`` a layer phase moves: FP x, w, (mask_fwd),
    store y; BP dy, w, (mask_bwd), store dx; WG x, dy, store dW. ``batch`` multiplies the
    per-image geometry (a network parsed with batch B has ``layer.batch`` = B, FC layers 1
    with the batch in ``w``: pass ``batch=layer.batch``). The mask is moved as the data
    plane moves it (``Driver.phase_commands``, ``hdl/dataplane.py``): packed, one bit per
    weight, ``ceil(w / data_width)`` elements, and an FP / BP job always reads one (all ones
    for a dense layer) -- ``masked`` is kept for the callers but does not change the
    transfer. The mask's buffer field is ``wgt_mem_elems`` (its MASK buffer holds
    ``ceil(wgt_mem_elems / data_width)`` elements: :func:`phase_dma` sizes its descriptors
    so)."""
    x = batch * layer.cin * layer.h * layer.w
    y = batch * layer.cout * layer.ho * layer.wo
    w = layer.cout * layer.cin * layer.kh * layer.kw
    return _phase_tensor_list(phase, x, y, w, masked, data_width)


def _phase_tensor_list(phase, x, y, w, masked, data_width):
    mask = [("mask", "wgt_mem_elems", -(-w // data_width), False)]
    if phase == "fp":
        return ([("x", "act_mem_elems", x, False), ("w", "wgt_mem_elems", w, False)] + mask
                + [("y", "out_mem_elems", y, True)])
    if phase == "bp":
        return ([("dy", "grad_mem_elems", y, False), ("w", "wgt_mem_elems", w, False)] + mask
                + [("dx", "out_mem_elems", x, True)])
    if phase == "wg":
        return [("x", "act_mem_elems", x, False), ("dy", "grad_mem_elems", y, False),
                ("dW", "out_mem_elems", w, True)]
    raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")


def phase_dma(layer, phase: str, cfg: AcceleratorConfig, *, batch: int = 1, masked: bool = False,
              read_latency: int = DMA_READ_LATENCY,
              write_latency: int = DMA_WRITE_LATENCY,
              beats_per_cycle: float = 1.0, weights_on_chip: bool = False,
              stages_on_chip: bool = False, first: bool = False,
              last: bool = False) -> DmaCost:
    """The DMA engine's cycles for one layer phase (:func:`phase_tensors`), each tensor in
    descriptors of at most its buffer's size (``cfg.*_mem_elems``), one after the other (one
    descriptor at a time), against a memory of the given latencies and ``beats_per_cycle``.
    ``weights_on_chip``: the network's weights and masks stay in the data plane
    (:func:`sparseforge.hdl.dataplane.plan_weight_homes`; the WG job updates the weight in
    place): no ``w`` / ``mask`` load, no ``dW`` store. ``stages_on_chip``: the between-layer
    stages run on chip (``CMD_STAGE``; the e2e step on such a core): activations and gradients
    stay in the buffers -- only the first layer's input (``first``) is loaded and the last
    layer's output (``last``, the logits) stored."""
    out, load, store = [], 0, 0
    for name, buf, n, st in phase_tensors(layer, phase, batch=batch, masked=masked,
                                          data_width=cfg.data_width):
        if weights_on_chip and name in ("w", "mask", "dW"):
            continue
        if stages_on_chip and name in ("x", "y", "dy", "dx") and not (
                (name == "x" and phase == "fp" and first) or (name == "y" and last)):
            continue
        room = getattr(cfg, buf)
        if name == "mask":                   # the packed MASK buffer (hdl/dataplane.py)
            room = -(-room // cfg.data_width)
        cyc, beats, nd = _tensor_cycles(n, room, st, cfg, read_latency, write_latency,
                                        beats_per_cycle)
        out.append((name, buf, n, beats, nd, cyc, st))
        if st:
            store += cyc
        else:
            load += cyc
    return DmaCost(out, load, store)


def _attach_dma(r: PhaseResult, cost: DmaCost) -> PhaseResult:
    r.dma_load, r.dma_store = float(cost.load), float(cost.store)
    r.dma_cycles = float(cost.cycles)
    r.dma_exposed = float(cost.cycles)          # alone: nothing to hide under
    r.dma_beats = cost.beats
    return r


def expose_dma(seq) -> float:
    """Apply the double-buffering rule to phases in execution order (``seq``: PhaseResults
    with ``cycles``, ``dma_load``, ``dma_store``); sets each ``dma_exposed``; returns the sum.

    While phase k computes, the engine (one descriptor at a time) stores phase k-1's result
    and loads phase k+1's inputs into the other half of each buffer. So phase 1 exposes its
    loads; phase k >= 2 exposes ``max(0, load_k + store_{k-1} - compute_{k-1})``; the last
    phase also exposes its own store. (Until ReLU/pooling move on chip, the next layer's x
    is computed by the host from this layer's y, which this rule does not charge: it is the
    target data plane's cost, not today's host round trip.)"""
    seq = list(seq)
    total = 0.0
    for k, p in enumerate(seq):
        if k == 0:
            e = p.dma_load
        else:
            q = seq[k - 1]
            e = max(0.0, p.dma_load + q.dma_store - q.cycles)
        if k == len(seq) - 1:
            e += p.dma_store
        p.dma_exposed = e
        total += e
    return total


# --------------------------------------------------------------------------------------------
# The statistical backend
# --------------------------------------------------------------------------------------------

def _check_density(name, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], not {v!r}")
    return float(v)


def _check_args(cfg, phase, batch, operand_density, weight_density, nm):
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    d = _check_density("operand_density", operand_density)
    wd = _check_density("weight_density", weight_density)
    if nm is not None:
        n, m = nm
        if not 1 <= n <= m or not math.isclose(n / m, wd):
            raise ValueError(f"nm={nm!r} must be (n, m) with 1 <= n <= m and n/m equal to "
                             f"weight_density={wd}")
    return d, (1.0 if phase == "wg" else wd)


def _fp_tiles(layer, cfg, batch, dense):
    """FP tiles of the array mapping: yields ``(rows, drain words)`` per tile, ``rows`` =
    {taps key: operand rows per PE row}. Operand rows ``x[b, c, h]`` -> PE row
    ``((b*H + h)*Cin + c) % R``; output channel ``n`` -> column ``n % C``; a column's output
    rows ``(b, n_local, y)`` taken y-major in tiles of ``psum_buf_depth // Wo`` rows."""
    seen = set()
    R, C, D = cfg.pe_rows, cfg.pe_cols, cfg.psum_buf_depth
    S, p, Kh, Kw = layer.stride, layer.padding, layer.kh, layer.kw
    H, W, Ho, Wo = layer.h, layer.w, layer.ho, layer.wo
    B, nc = batch, _ceil_div(layer.cout, C)
    nv = [nc] * C if dense else [_ceil_div(max(layer.cout - j, 0), C) for j in range(C)]
    if S == 1:
        kw_q = (Kw,)
    else:
        kw_q = tuple(sum(1 for kw in range(Kw) if (kw - p) % S == q) for q in range(S))
    rc = _row_counts(B, layer.cin, H, R)
    per = max(1, tiling.rows_per_tile(D, Wo))
    n_out = B * nc * Ho
    for p0, p1 in tiling.bands(n_out, per):
        y0, y1 = p0 // (B * nc), (p1 - 1) // (B * nc)
        # interior tiles (every kernel row inside the input) repeat: same offset, same dealing
        # (moving the band by one input row moves every row's PE row by Cin)
        tkey = (("mid", p0 % (B * nc), p1 - p0, (y0 * S * layer.cin) % R)
                if y0 * S - p >= 0 and y1 * S + Kh - 1 - p < H else p0)
        if tkey in seen:
            yield tkey, None, (p1 - p0) * Wo
            continue
        seen.add(tkey)
        acc = _band_rows(p0, p1, B, nc, nv, C,
                         lambda y: [y * S + kr - p for kr in range(Kh) if 0 <= y * S + kr - p < H])
        rows = {}
        for (b, h), v in acc.items():
            key = tuple(_grouped(kq * x for x in v if kq * x) for kq in kw_q)
            rows[key] = rows.get(key, 0) + rc[b, h]
        yield tkey, rows, (p1 - p0) * Wo


def _bp_tiles(layer, cfg, batch, dense):
    """BP tiles: operand rows ``dy[b, n, y]`` -> PE row ``((b*Ho + y)*Cout + n) % R``;
    input-gradient channel ``c`` -> column ``c % C``; output rows ``(b, c_local, h)`` y-major
    in tiles of ``psum_buf_depth // W`` rows."""
    seen = set()
    R, C, D = cfg.pe_rows, cfg.pe_cols, cfg.psum_buf_depth
    S, p, Kh, Kw = layer.stride, layer.padding, layer.kh, layer.kw
    H, W, Ho = layer.h, layer.w, layer.ho
    B, nc = batch, _ceil_div(layer.cin, C)
    nv = [nc] * C if dense else [_ceil_div(max(layer.cin - j, 0), C) for j in range(C)]
    rc = _row_counts(B, layer.cout, Ho, R)
    per = max(1, tiling.rows_per_tile(D, W))
    n_out = B * nc * H
    for p0, p1 in tiling.bands(n_out, per):
        h0, h1 = p0 // (B * nc), (p1 - 1) // (B * nc)
        # same stride phase and same dealing (one dy row further moves PE rows by Cout)
        tkey = (("mid", p0 % (B * nc), p1 - p0, h0 % S, (h0 // S * layer.cout) % R)
                if h0 + p - (Kh - 1) >= 0 and h1 + p < Ho * S - (S - 1) else p0)
        if tkey in seen:
            yield tkey, None, (p1 - p0) * W
            continue
        seen.add(tkey)
        acc = _band_rows(p0, p1, B, nc, nv, C,
                         lambda h: [(h + p - kr) // S for kr in range(Kh)
                                    if h + p - kr >= 0 and (h + p - kr) % S == 0
                                    and (h + p - kr) // S < Ho])
        rows = {}
        for (b, y), v in acc.items():
            key = (_grouped(Kw * x for x in v if x),)
            rows[key] = rows.get(key, 0) + rc[b, y]
        yield tkey, rows, (p1 - p0) * W


def wg_chunking(layer, cfg, batch) -> dict | None:
    """The WG scratchpad chunks of one PE's image ``x[:, c % C == j]`` (``B * nc`` planes of
    ``H*W`` words, ``nc = ceil(Cin / C)``), as ``gen/mapper/pe.wg_chunks`` cuts it: None when
    the image fits ``act_buf_depth`` (one image, loaded before the job); else ``{"ppc": planes
    per chunk, "planes": B*nc, "plane_words": H*W, "plane_split": bool}``. ``plane_split``:
    one plane is larger than the scratchpad -- the RTL refuses that layer (chunks hold whole
    planes); the model prices it as one plane per chunk (each plane streamed once per tile;
    the row bands with halo a plane split would need are not built, so their extra overlap is
    not counted: a lower bound)."""
    C, abd = cfg.pe_cols, cfg.act_buf_depth
    plane = layer.h * layer.w
    n = batch * _ceil_div(layer.cin, C)
    if n * plane <= abd:
        return None
    split = plane > abd
    return {"ppc": 1 if split else abd // plane, "planes": n, "plane_words": plane,
            "plane_split": split}


def _wg_tiles(layer, cfg, batch, load_words=1):
    """WG tiles: operand rows ``dy[b, n, y]`` -> PE row ``((b*Cout + n)*Ho + y) % R``; input
    channel ``c`` -> column ``c % C`` (padded channels included: WG taps are dense); a
    column's weight-gradient addresses ``((n*nc + c_local)*Kh + kr)*Kw + kw`` in tiles of
    ``psum_buf_depth`` words.

    Chunked scratchpad (:func:`wg_chunking`; ``gen/mapper/pe.map_conv_wg``): a row is taken
    once per chunk holding planes ``(b, c)`` it has taps for in the tile, with those taps
    only, and every run of one chunk in a tile costs its PE row ``RELOAD_GAP + chunk words``
    (the image load, not hidden: one scratchpad image), except the job's first run (loaded
    before the job). ``load_words`` > 1: a what-if scratchpad that takes that many words per
    cycle (``ceil(chunk words / load_words)``; the RTL takes one). Yields ``(tkey, rows,
    words, (reload[R], first_run[R]) or None)``."""
    seen = set()
    R, C, D = cfg.pe_rows, cfg.pe_cols, cfg.psum_buf_depth
    S, p, Kh, Kw = layer.stride, layer.padding, layer.kh, layer.kw
    H, Ho = layer.h, layer.ho
    B, nc, Cout = batch, _ceil_div(layer.cin, C), layer.cout
    KK = Kh * Kw
    per_n = nc * KK
    chunking = wg_chunking(layer, cfg, batch)
    # valid[y, kr]: dy row y reaches input row y*S + kr - p
    valid = np.array([[0 <= y * S + kr - p < H for kr in range(Kh)] for y in range(Ho)], bool)
    bb, yy = np.meshgrid(np.arange(B), np.arange(Ho), indexing="ij")
    starts = np.arange(nc) * KK
    total = Cout * per_n
    if chunking:
        ppc, pw = chunking["ppc"], chunking["plane_words"]
        n_planes = chunking["planes"]
        chunk_words = {g: _ceil_div((min(n_planes, (g + 1) * ppc) - g * ppc) * pw, load_words)
                       for g in range(_ceil_div(n_planes, ppc))}
        cid = (np.arange(B)[:, None] * nc + np.arange(nc)[None, :]) // ppc   # [b, c_local]
    for a0, a1 in tiling.bands(total, D):
        # a tile's rows depend on its offset in the per-channel block, on the first channel
        # modulo R (the dealing) and on its length
        tkey = (a0 % per_n, (a0 // per_n) % R, a1 - a0)
        if tkey in seen:
            yield tkey, None, a1 - a0, None
            continue
        seen.add(tkey)
        rows = {}
        runs = [set() for _ in range(R)] if chunking else None
        for n in range(a0 // per_n, (a1 - 1) // per_n + 1):
            lo, hi = a0 - n * per_n, a1 - n * per_n
            # cnt_c[c, kr]: the tile's tap addresses of (n, c_local, kr, .)
            cnt_c = np.stack([np.clip(np.minimum(starts + kr * Kw + Kw, hi)
                                      - np.maximum(starts + kr * Kw, lo), 0, None)
                              for kr in range(Kh)], axis=1)
            if not chunking:
                t_y = valid @ cnt_c.sum(axis=0)                 # taps per dy row y
                k = ((bb * Cout + n) * Ho + yy) % R
                for tv in np.unique(t_y):
                    if tv == 0:
                        continue
                    sel = np.broadcast_to(t_y == tv, k.shape)
                    key = (((int(tv), C),),)
                    rows[key] = rows.get(key, 0) + np.bincount(k[sel], minlength=R)
                continue
            used = cnt_c.sum(axis=1) > 0
            for b in range(B):
                ky = ((b * Cout + n) * Ho + np.arange(Ho)) % R
                for g in np.unique(cid[b][used]):
                    t_y = valid @ cnt_c[cid[b] == g].sum(axis=0)
                    for tv in np.unique(t_y):
                        if tv == 0:
                            continue
                        key = (((int(tv), C),),)
                        cnt = np.bincount(ky[t_y == tv], minlength=R)
                        rows[key] = rows.get(key, 0) + cnt
                        for i in np.nonzero(cnt)[0]:
                            runs[i].add(int(g))
        extra = None
        if chunking:
            extra = (np.array([sum(RELOAD_GAP + chunk_words[g] for g in r) for r in runs],
                              float),
                     np.array([RELOAD_GAP + chunk_words[min(r)] if r else 0.0 for r in runs],
                              float))
        yield tkey, rows, a1 - a0, extra


def phase_cycles(layer, phase: str, cfg: AcceleratorConfig, *, operand_density: float = 1.0,
                 weight_density: float = 1.0, dense: bool = False, batch: int = 1,
                 nm=None, wg_load_words: int = 1, top_level: bool = False) -> PhaseResult:
    """Expected cycles of ``phase`` ('fp', 'bp', 'wg') of ``layer`` on ``cfg``'s array.

    ``operand_density``: non-zero fraction of the streamed operand (x in FP, dY in BP/WG);
    ``weight_density``: kept fraction of the phase's weights (N/M, or 1; ignored in WG, whose
    taps are dense); ``nm``: optional ``(n, m)`` (must match ``weight_density``; the exact
    backend needs it, this model only uses the fraction); ``dense``: dense mode (no skipping;
    every tap; the baseline). ``layer``: a :class:`~sparseforge.gen.network.ComputeLayer` (per
    image: FC layers at ``h = w = 1``, as a network parsed with batch 1 has them).
    ``wg_load_words``: what-if (issue 18 item 2) -- a WG scratchpad reload of that many words
    per cycle (the RTL: 1). ``top_level``: the phase as the on-chip hardware mapper feeds it
    (``data_plane = "dma"``): every row costs at least :func:`_mapper_floor` (one dense
    candidate tap per cycle, the slowest PE of the PE row; every element of the row read) --
    a **lower bound** of the RTL's job cycles (0.51-0.98 of them on the digits step,
    docs/benchmarks.md "Top-level lower bound").
    """
    if isinstance(wg_load_words, bool) or not isinstance(wg_load_words, int) or wg_load_words < 1:
        raise ValueError(f"wg_load_words must be an integer >= 1, not {wg_load_words!r}")
    d, wd = _check_args(cfg, phase, batch, operand_density, weight_density, nm)
    R, L = cfg.pe_rows, cfg.macs_per_pe
    S, p, W, Wo = layer.stride, layer.padding, layer.w, layer.wo
    valid = layer.valid_macs(batch)
    useful = valid * d * wd
    if phase == "fp":
        gen = _fp_tiles(layer, cfg, batch, dense)
        sub_lens = (W,) if S == 1 else tuple(len(range(q, W, S)) for q in range(S))
    elif phase == "bp":
        gen, sub_lens = _bp_tiles(layer, cfg, batch, dense), (Wo,)
    else:
        gen, sub_lens = _wg_tiles(layer, cfg, batch, wg_load_words), (Wo,)
    tiles, first, memo = [], None, {}
    reload = 0.0
    for tile in gen:
        tkey, rows, words = tile[:3]
        if rows is not None:
            memo[tkey] = (_pe_row_moments(rows, R, sub_lens, d, wd, L, dense, top_level),
                          tile[3] if len(tile) > 3 else None)
        (mean, var, load), extra = memo[tkey]
        if extra is not None:               # chunked WG: the scratchpad reloads of the tile
            rl = extra[0] - (extra[1] if not tiles else 0.0)   # the job's first image: preloaded
            mean = mean + rl
            reload = reload + rl            # per PE row; reported: the largest row total
        if first is None:
            first = load
        tiles.append((mean, var, words))
    cyc, proc, drain = _run_tiles(tiles, R, first or 0.0)
    res = PhaseResult(cycles=cyc, valid_macs=valid, useful_macs=useful, tiles=len(tiles),
                      proc=proc, drain=drain, reload=float(np.max(reload)))
    return _attach_dma(res, phase_dma(layer, phase, cfg, batch=batch,
                                      masked=(phase != "wg" and wd < 1.0)))


BACKENDS = {"statistical": phase_cycles}


def register_backend(name: str, fn) -> None:
    """Register a per-layer/phase backend ``fn(layer, phase, cfg, *, operand_density,
    weight_density, dense, batch, nm) -> PhaseResult`` (``"exact"`` is registered below)."""
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


#: The stochastic pruner and the N:M pre-generation as built (issue 18: no cost assumed away):
#: on a core without the data plane both run at the top level through the 32-bit host
#: stream, between the array phases (the e2e step: ``prune`` and ``pregen`` phases, nothing
#: overlaps them); with the data plane, pruning is ``CMD_PRUNE`` (:func:`prune_cycles`) and
#: pre-generation ``CMD_PREGEN`` (:func:`pregen_cycles`). Measured on the RTL
#: (`tiny`, the digits step, fast engine): pruning 3,100 / 6,172 cycles for 1,024 / 2,048
#: gradient elements, pre-generation 3,226 / 22,760 cycles for 288 / 2,048 groups (M = 8, both
#: directions). ``tests/sim/test_fastsim.py::test_prune_pregen_model_matches_rtl`` re-measures
#: them. The per-element / per-group rates are the stream's, whatever the array size.
PRUNE_CYCLES_PER_ELEM = 3.0
PRUNE_OVERHEAD = 28
PREGEN_CYCLES_PER_GROUP = 11.1
PREGEN_OVERHEAD = 30


def prune_cycles(n_elems: int, cfg: AcceleratorConfig | None = None, *,
                 memory: "MemoryProfile | None" = None, loaded: bool = True) -> float:
    """Top-level cycles to prune a gradient of ``n_elems`` elements (exposed: nothing runs
    beside it). Without ``cfg``, or on a core without the data plane (``data_plane =
    "host-stream"``): the stream pruner, ``PRUNE_CYCLES_PER_ELEM`` per element. On a core with
    the data plane: the DMA load of the gradient (the host computes it: the ReLU / pool
    backward are host stages), which sums ``|g|`` as it writes GRAD, then ``CMD_PRUNE``
    (``hdl/dp_prune.py``; the threshold on chip) in one pass at a word per cycle
    (:func:`sparseforge.hdl.dp_prune.prune_job_cycles` ``summed=True``); the pruned tensor
    stays in GRAD for the BP and WG phases (no store), as the e2e step runs it; at ``memory``
    (default :func:`memory_profile` of ``cfg``). ``loaded=False``: a backward stage wrote the
    gradient on chip (``CMD_STAGE``, summing ``|g|`` the same way): no load."""
    if not n_elems:
        return 0.0
    if cfg is None or cfg.data_plane != "dma":
        return PRUNE_CYCLES_PER_ELEM * n_elems + PRUNE_OVERHEAD
    from sparseforge.hdl.dp_prune import prune_job_cycles
    mem = memory or memory_profile(cfg)
    kw = dict(read_latency=mem.read_latency, write_latency=mem.write_latency,
              beats_per_cycle=mem.beats_per_cycle)
    return float(prune_job_cycles(n_elems, cfg.dma_width // cfg.data_width, cfg.data_width,
                                  summed=True)
                 + (dma_transfer_cycles(n_elems, False, cfg, **kw) if loaded else 0))


def stage_costs(lay, nxt, cfg: AcceleratorConfig, *, batch: int = 1) -> tuple:
    """``(forward, backward)`` busy cycles of layer ``lay``'s between-layer stages on chip
    (``hdl/dp_stage.py``, ``dp_stage.stage_cycles``) when ``nxt`` is the next compute layer
    (None: the last layer -- its forward stage is the loss gradient, ``B * classes``
    elements, and it has no backward stage). A word of ``dma_width`` per cycle where
    ``dp_stage.stage_lanes`` allows it, as ``Driver.stage_onchip`` sends the stage (buffer
    bases on word boundaries, as the driver places them); one element per cycle otherwise (a
    pool the unit cannot take runs on the host in the e2e step: modelled as one element per
    cycle)."""
    from sparseforge.hdl.dp_stage import STAGE_LOSS, STAGE_OVERHEAD, stage_lanes
    n = batch * lay.cout * lay.ho * lay.wo
    if nxt is None:
        return float(n + STAGE_OVERHEAD), 0.0
    epw = max(1, cfg.dma_width // cfg.data_width)
    k = lay.pool[0] if lay.pool else 1
    lgk = {1: 0, 2: 1, 4: 2}.get(k)
    if lgk is None or (lay.pool and lay.pool[0] != lay.pool[1]):
        lanes = 1
    elif lay.kind == "fc":                     # FC -> FC: one row of B*C in memory order
        lanes = stage_lanes(0, lgk=0, w=n, zfc=False, nfc=False, src=0, dst=0, keep=0,
                            epw=epw) if nxt.kind == "fc" else 1
    else:                                      # a batch-1 conv -> FC stage walks like conv
        nfc = nxt.kind == "fc" and batch * lay.batch > 1
        lanes = stage_lanes(0, lgk=lgk, w=lay.wo, zfc=False, nfc=nfc, src=0, dst=0, keep=0,
                            epw=epw)
    c = float(n // lanes + STAGE_OVERHEAD)
    return c, c


def bwd_stages_beside(net, cfg: AcceleratorConfig, *, batch: int = 1) -> set:
    """The layers ``i - 1`` whose backward stage runs beside layer ``i``'s WG job in the e2e
    step (``RTLBackend.plan_backward``, placement ``"beside"``): the previous layer's gradient
    fits in GRAD right after layer ``i``'s (which the WG reads; word-aligned), and layer
    ``i``'s BP result fits in OUT after its ``dW``. The GRAD bases follow the step's
    placements from the loss gradient (at 0) down, as the backend chains them."""
    from sparseforge.hdl.dataplane import bwd_stage_fits
    comp = list(net.compute)
    n_out = [batch * lay.cout * lay.ho * lay.wo for lay in comp]
    dy_base, out = {len(comp) - 1: 0}, set()
    for i in range(len(comp) - 1, 0, -1):
        lay = comp[i]
        gb = dy_base.get(i, 0) + n_out[i]
        g_fits, o_fits = bwd_stage_fits(cfg, gb, n_out[i - 1],
                                        lay.cout * lay.cin * lay.kh * lay.kw,
                                        batch * lay.cin * lay.h * lay.w)
        dy_base[i - 1] = gb if g_fits else 0
        if g_fits and o_fits:
            out.add(i - 1)
    return out


#: Busy cycles of a ``CMD_PREGEN`` job beyond its groups (set-up, the selector's latency, the
#: drain of each pass; 33-37 measured, ``tests/hdl/test_dp_pregen.py``).
PREGEN_DP_OVERHEAD = 36


def pregen_cycles(n_weights: int, m: int, cfg: AcceleratorConfig | None = None, *,
                  cin_kk: int | None = None, memory: "MemoryProfile | None" = None) -> float:
    """Top-level cycles to pre-generate both N:M masks of ``n_weights`` weights (``2 *
    n_weights / m`` groups; exposed). Without ``cfg``, on a core without the data plane, or for
    a layer ``CMD_PREGEN`` does not take (``cin_kk = Cin*Kh*Kw`` below ``dma_width``): the
    stream pre-generation, ``PREGEN_CYCLES_PER_GROUP`` per group. Otherwise ``CMD_PREGEN``
    (``hdl/dp_pregen.py``): a group every ``ceil(m / min(rows*cols, m))`` cycles in each pass
    plus :data:`PREGEN_DP_OVERHEAD`, the load of the updated weight and the store of both
    masks (``2 * ceil(n_weights / dma_width)`` words) at ``memory``."""
    groups = 2 * n_weights // m
    if not groups:
        return 0.0
    split = pregen_dp_split(n_weights, m, cfg, cin_kk=cin_kk, memory=memory)
    if split is None:
        return PREGEN_CYCLES_PER_GROUP * groups + PREGEN_OVERHEAD
    return float(sum(split))


def pregen_dp_split(n_weights: int, m: int, cfg: AcceleratorConfig | None, *,
                    cin_kk: int | None = None, memory: "MemoryProfile | None" = None,
                    weights_on_chip: bool = False):
    """``(busy, dma)`` of an on-chip pre-generation (``CMD_PREGEN``): its busy cycles and its
    transfers' (the weight in, both masks out; none with ``weights_on_chip``: it reads the
    updated weight where the WG job left it and writes the masks where FP / BP read them);
    None where the stream path runs it (see :func:`pregen_cycles`)."""
    if cfg is None or cfg.data_plane != "dma" or (cin_kk is not None and
                                                  cin_kk < cfg.dma_width):
        return None
    mem = memory or memory_profile(cfg)
    kw = dict(read_latency=mem.read_latency, write_latency=mem.write_latency,
              beats_per_cycle=mem.beats_per_cycle)
    cpg = _ceil_div(m, min(cfg.pregen_lanes_eff, m))
    masks = 2 * _ceil_div(n_weights, cfg.dma_width) * (cfg.dma_width // cfg.data_width)
    busy = (2 * n_weights // m) * cpg + PREGEN_DP_OVERHEAD
    if weights_on_chip:
        return float(busy), 0.0
    return float(busy), float(dma_transfer_cycles(n_weights, False, cfg, **kw)
                              + dma_transfer_cycles(masks, True, cfg, **kw))


def iteration(net, cfg: AcceleratorConfig, *, fp_density=None, dy_density=None, nm=None,
              dense=False, batch=1, backend="statistical", progress=None, prune=None,
              hide_prune_pregen: bool = False,
              read_latency: int | None = None,
              write_latency: int | None = None,
              memory: MemoryProfile | None = None,
              wg_load_words: int = 1, top_level: bool = False) -> IterationResult:
    """One training iteration of ``net`` (a :class:`sparseforge.gen.network.Network`, batch 1:
    ``load_network(name)``): FP of every conv/fc layer, then BP (not for the first layer: the
    input needs no gradient) and WG of every layer.

    ``fp_density`` / ``dy_density``: ``{layer name: density}`` (missing: 1.0); ``nm``: ``(n, m)``
    BDWP (applied to the layers :func:`bdwp_applies` accepts) or None; ``dense``: dense-mode
    baseline (densities ignored).

    Pruning and pre-generation are counted where they run (:func:`prune_cycles`,
    :func:`pregen_cycles`; exposed: the RTL runs them between the phases): ``prune`` (default:
    when ``dy_density`` is given, i.e. a scenario with stochastic pruning) prunes the output
    gradient of every layer with ``prune`` set, before its BP (the first layer: its WG);
    pre-generation of both masks follows the WG of every layer BDWP applies to.
    ``hide_prune_pregen``: a what-if that assumes both hidden (0 cycles), as the model did
    before issue 18.

    DMA: every phase gets :func:`phase_dma` (masks read where BDWP applies) against
    ``memory`` (default :func:`memory_profile` of ``cfg``: the card's DDR4 on ``vcu1525``);
    ``read_latency`` / ``write_latency`` override its latencies. The exposed part follows
    :func:`expose_dma` over the execution order (every layer's FP, then per layer backwards
    its BP and WG). A data-plane core whose WGT / MASK buffers hold every weight and both
    masks (:func:`sparseforge.hdl.dataplane.plan_weight_homes`: ``tiny`` with the digits CNN)
    keeps them on chip as the e2e step does: no weight / mask / ``dW`` transfers, none for the
    pre-generation. ``wg_load_words``, ``top_level``: the options of :func:`phase_cycles`
    (statistical backend only; the exact one models the array as built)."""
    fn = BACKENDS[backend]
    what_if = {}
    if wg_load_words != 1 or top_level:
        if fn is not phase_cycles:
            raise ValueError("wg_load_words and top_level are options of the statistical "
                             "backend")
        what_if.update(wg_load_words=wg_load_words, top_level=bool(top_level))
    mem = memory or memory_profile(cfg)
    dma_kw = dict(read_latency=mem.read_latency if read_latency is None else read_latency,
                  write_latency=mem.write_latency if write_latency is None else write_latency,
                  beats_per_cycle=mem.beats_per_cycle)
    if prune is None:
        prune = dy_density is not None
    fp_density, dy_density = fp_density or {}, dy_density or {}
    out = []
    beside = []          # on-chip pre-generations that run beside the next layer's WG job
    # a data-plane core whose WGT / MASK buffers hold every weight and both masks keeps them
    # there (the e2e step: Driver.load_network, the update fused into the WG job)
    from sparseforge.hdl.dataplane import plan_weight_homes
    on_chip = cfg.data_plane == "dma" and plan_weight_homes(
        cfg, {lay.name: (lay.cout, lay.cin, lay.kh, lay.kw) for lay in net.compute}) is not None
    # there the step also runs the between-layer stages on chip (CMD_STAGE): their busy
    # cycles are exposed, the activations and gradients no longer cross the memory
    stages = on_chip and not dense and not hide_prune_pregen
    last_i = len(net.compute) - 1
    for i, lay in enumerate(net.compute):
        wd = nm[0] / nm[1] if (nm and bdwp_applies(lay, nm[1])) else 1.0
        lr = LayerResult(lay.name)
        for ph in PHASES:
            od = fp_density.get(lay.name, 1.0) if ph == "fp" else dy_density.get(lay.name, 1.0)
            r = fn(lay, ph, cfg, operand_density=od, weight_density=wd, dense=dense, batch=batch,
                   nm=nm if wd < 1.0 else None, **what_if)
            if ph == "bp" and i == 0:
                r = PhaseResult(0.0, 0.0, 0.0, skipped=True)
            else:
                if not hide_prune_pregen and not dense:
                    first_bwd = "bp" if i > 0 else "wg"
                    if prune and lay.prune and ph == first_bwd:
                        r.prune_exposed = prune_cycles(batch * lay.cout * lay.ho * lay.wo, cfg,
                                                       memory=mem, loaded=not stages)
                    if stages and ph in ("fp", first_bwd):
                        fs, bs = stage_costs(lay, net.compute[i + 1] if i < last_i else None,
                                             cfg, batch=batch)
                        r.stage_exposed = fs if ph == "fp" else bs
                    if ph == "wg" and wd < 1.0:
                        nw, ckk = lay.cout * lay.cin * lay.kh * lay.kw, lay.cin * lay.kh * lay.kw
                        split = pregen_dp_split(nw, nm[1], cfg, cin_kk=ckk, memory=mem,
                                                weights_on_chip=on_chip)
                        if split is None:                  # the stream path
                            r.pregen_exposed = pregen_cycles(nw, nm[1], cfg, cin_kk=ckk,
                                                             memory=mem)
                        else:                              # = pregen_cycles(...), once
                            r.pregen_exposed = float(sum(split))
                            if i > 0:
                                beside.append((i, split))
                _attach_dma(r, phase_dma(lay, ph, cfg, batch=batch, weights_on_chip=on_chip,
                                         masked=(ph != "wg" and wd < 1.0),
                                         stages_on_chip=stages, first=i == 0,
                                         last=i == last_i, **dma_kw))
            lr.phases[ph] = r
        out.append(lr)
        if progress is not None:
            progress(1)
    # the e2e step runs layer i's CMD_PREGEN in one packet with layer i-1's WG job (it reads
    # neither WGT nor MASK): only the part longer than that job is exposed, its transfers are
    for i, (busy, dma) in beside:
        r = out[i].phases["wg"]
        r.pregen_exposed = dma + max(0.0, busy - out[i - 1].phases["wg"].cycles)
    # a backward stage beside the next layer's WG job (the data plane runs it under the job),
    # its layer's pruning right after it in the same packet: only what outlasts the job is
    # exposed, the stage's part first
    if stages:
        for i in sorted(bwd_stages_beside(net, cfg, batch=batch)):
            r = out[i].phases["bp" if i > 0 else "wg"]
            wg = out[i + 1].phases["wg"].cycles
            both = max(0.0, r.stage_exposed + r.prune_exposed - wg)
            r.stage_exposed = max(0.0, r.stage_exposed - wg)
            r.prune_exposed = both - r.stage_exposed
    order = [lr.phases["fp"] for lr in out]
    for lr in reversed(out):
        order += [lr.phases[ph] for ph in ("bp", "wg") if not lr.phases[ph].skipped]
    expose_dma(order)
    return IterationResult(net.name, out, cfg)


def ideal_speedup(result: IterationResult, dense_result: IterationResult) -> float:
    """Dense valid products / expected useful products of the same iteration (an engine with
    zero overhead that skips every zero it is allowed to)."""
    u = result.macs("useful_macs")
    return dense_result.macs("valid_macs") / u if u else float("inf")


# --------------------------------------------------------------------------------------------
# The exact backend: the array model on random tensors
# --------------------------------------------------------------------------------------------

def exact_tensors_cycles(phase, cfg, *, x=None, w=None, dy=None, mask=None, stride=1,
                         padding=0, dense=False, mapping="interleaved"):
    """Exact array cycles of one layer phase on given tensors: ``array_model.map_array`` then
    ``array_model.cycles`` (equal to the RTL's ``cycles`` counter, tests/test_pe_array.py).
    FP: ``x``, ``w``, ``mask`` (forward); BP: ``dy``, ``w``, ``x`` (its shape), ``mask``
    (backward); WG: ``x``, ``dy``, ``w`` (its shape). Returns the ``ArrayStats``."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    kw = dict(cfg=cfg, stride=stride, padding=padding, dense=dense, raw=True, mapping=mapping)
    if phase == "fp":
        job = am.map_array("fp", x=x, w=w, mask=mask, **kw)
    elif phase == "bp":
        job = am.map_array("bp", dy=dy, w=w, x_shape=np.shape(x), mask=mask, **kw)
    else:
        job = am.map_array("wg", x=x, dy=dy, w_shape=np.shape(w), **kw)
    return am.cycles(job)


def random_tensors(layer, phase, *, operand_density, nm=None, batch=1, seed=0):
    """Random operands of ``layer`` (values in +-[1, 99], never zero unless sparsified): the
    streamed operand (x in FP, dY in BP/WG) with each element kept with probability
    ``operand_density``; ``nm``: BDWP masks of the weights (FP: the forward mask, BP: the
    backward one). Returns ``dict(x=, w=, dy=, mask=)``."""
    rng = np.random.default_rng(seed)
    sign = lambda shape: rng.choice((-1, 1), shape)                        # noqa: E731
    x = rng.integers(1, 100, (batch, layer.cin, layer.h, layer.w))
    w = rng.integers(1, 100, (layer.cout, layer.cin, layer.kh, layer.kw)) * sign(
        (layer.cout, layer.cin, layer.kh, layer.kw))
    dy = rng.integers(1, 100, (batch, layer.cout, layer.ho, layer.wo))
    sparse = x if phase == "fp" else dy
    sparse[rng.random(sparse.shape) >= operand_density] = 0
    mask = None
    if nm and phase != "wg":
        mask = golden.bdwp_masks(w, *nm)[0 if phase == "fp" else 1]
    return dict(x=x, w=w, dy=dy, mask=mask)


def exact_phase_cycles(layer, phase, cfg: AcceleratorConfig, *, operand_density: float = 1.0,
                       weight_density: float = 1.0, dense: bool = False, batch: int = 1,
                       nm=None, seeds=(0,), mapping="interleaved") -> PhaseResult:
    """The ``"exact"`` backend: the exact array cycle model (:mod:`sparseforge.gen.mapper.array`,
    equal to the RTL) on random tensors of the requested densities (:func:`random_tensors`),
    averaged over ``seeds``. ``weight_density < 1`` needs ``nm`` (the N:M pattern). Feasible
    only for layers the array model maps (row lengths <= ``max_row_len``, kernels <= ``k_max``,
    strides 1/2, WG X planes within ``act_buf_depth`` (larger inputs
    are chunked, reloads counted), every PE row fed) and small enough for numpy
    (ValueError otherwise, from the mapper). ``PhaseResult.useful_macs`` is the measured
    ``busy_mac`` of the first seed minus padding (products with a zero factor are counted by
    the PE only in dense mode)."""
    d, wd = _check_args(cfg, phase, batch, operand_density, weight_density, nm)
    if wd < 1.0 and nm is None:
        raise ValueError("the exact backend needs nm=(n, m) when weight_density < 1")
    cyc = []
    for s in seeds:
        t = random_tensors(layer, phase, operand_density=d, nm=nm if wd < 1 else None,
                           batch=batch, seed=s)
        st = exact_tensors_cycles(phase, cfg, stride=layer.stride, padding=layer.padding,
                                  dense=dense, mapping=mapping, **t)
        cyc.append(st.cycles)
    valid = layer.valid_macs(batch)
    return PhaseResult(cycles=float(np.mean(cyc)), valid_macs=valid, useful_macs=valid * d * wd,
                       tiles=0)


register_backend("exact", exact_phase_cycles)


def validate_against_exact(layer, phase, cfg, *, operand_density, nm=None, dense=False,
                           seeds=(0, 1, 2), batch=1):
    """Compare :func:`phase_cycles` with the exact array model (:func:`exact_phase_cycles`)
    per seed. Returns ``model``, ``exact`` (mean over seeds), ``exact_sd``, ``rel_err`` (model /
    exact - 1), ``tiles``."""
    wd = nm[0] / nm[1] if nm else 1.0
    model = phase_cycles(layer, phase, cfg, operand_density=operand_density, weight_density=wd,
                         dense=dense, batch=batch, nm=nm)
    ex = [exact_phase_cycles(layer, phase, cfg, operand_density=operand_density,
                             weight_density=wd, nm=nm, dense=dense, batch=batch,
                             seeds=(s,)).cycles for s in seeds]
    mean = float(np.mean(ex))
    return {"model": model.cycles, "exact": mean, "exact_sd": float(np.std(ex)),
            "rel_err": model.cycles / mean - 1.0, "tiles": model.tiles}
