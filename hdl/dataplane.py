"""Data plane: the accelerator feeds itself -- DMA engine, tensor buffers, array mapper and a
result store, so one layer phase runs from card memory to card memory (issue 16).

:class:`DataPlane` executes a stream of commands **in order** (``cmd``, :func:`cmd_layout`):

* ``kind = CMD_DESC``: a :class:`~sparseforge.hdl.dma.DmaEngine` descriptor. A **load**
  (memory -> buffer) is issued as soon as the engine is idle, also while a job runs (double
  buffering: load the next job's operands into another region). A **store** (buffer -> memory)
  additionally waits until no job is running.
* ``kind = CMD_JOB``: one layer phase (:func:`dp_job_layout`: the
  :func:`~sparseforge.hdl.array_mapper.job_layout` fields plus ``out_base``). It waits until
  every earlier descriptor has completed and no job runs, is checked (:class:`JobErr`) in 5
  cycles, then starts the :class:`~sparseforge.hdl.array_mapper.ArrayMapper`; the result
  store writes the PE array's column outputs ``o[j]`` into ``BUF_OUT`` at ``out_base`` in C
  order (FP ``y (B, Cout, Ho, Wo)``, BP ``dx (B, Cin, H, W)``, WG ``dW (Cout, Cin, Kh, Kw)``).
  **SGD update, fused** (issue 17 item 3): a WG job with ``update = 1`` also writes ``W' =
  sat(W - (dW >> lr_shift))`` over the weight at ``w_base`` in ``BUF_WGT``, word by word as
  the result store writes ``dW`` (each ``BUF_OUT`` word write reads the weight word at the
  same offset from ``w_base`` through WGT replica 0's DMA read port, and writes the updated
  lanes into every WGT replica two cycles later; lanes are written once each, so a word
  written in parts needs no forwarding). No cycle of its own: the job ends
  :data:`UPDATE_OVERHEAD` cycles later than without it. Checks: a WG job, ``w_base`` and
  ``out_base`` on a ``dma_width`` word (``SHAPE``), the weight inside WGT (``BEYOND``) and
  loaded (``NOT_LOADED``), not overlapping the weight a running pre-generation reads
  (``BUSY``). While it runs, DMA loads into WGT wait (they share its write port).

* ``kind = CMD_PRUNE``: stochastic pruning of a gradient tensor **in place** in ``BUF_GRAD``
  with the threshold computed on chip (:class:`~sparseforge.hdl.dp_prune.PruneUnit`; the
  fields of :func:`prune_layout` travel in the bits of ``job``): ``n`` elements from element
  ``base`` (a whole ``dma_width`` word: ``base % epw == 0``), ``k_p`` and ``shift`` of the
  threshold rule, the PRNG ``seed``. It waits like a job (every earlier descriptor done, no
  job running), is checked (``n >= 1``, ``seed != 0``, ``base`` word-aligned: ``SHAPE``; inside
  the buffer: ``BEYOND``; loaded: ``NOT_LOADED``), then runs at a word per cycle in each of its
  two passes -- one pass when its range is exactly that of the last DMA load into GRAD (the
  data plane sums ``|g|`` as that load writes the buffer, so the threshold needs no read
  pass); the threshold it used is ``prune_tau``. While it runs, later commands wait (it
  owns the GRAD buffer's DMA port).

* ``kind = CMD_STAGE``: a between-layer stage of the training step
  (:class:`~sparseforge.hdl.dp_stage.StageUnit`; the fields of :func:`stage_layout` in the
  bits of ``job``): ReLU and max-pool forward from ``BUF_OUT`` into the next layer's input in
  ``BUF_ACT`` (the pool winners and ReLU bits kept in the unit's KEEP memory), pool and ReLU
  backward from the next layer's BP result in ``BUF_OUT`` into ``BUF_GRAD``, or the loss
  gradient from the logits in ``BUF_OUT`` and labels in ``BUF_ACT`` into ``BUF_GRAD``; one
  element per cycle. It waits for the DMA engine, a job, the pruner and an earlier stage, is
  checked in 10 cycles (``SHAPE``, ``BEYOND``, ``NOT_LOADED``: LOSS labels not loaded, BWD
  without the KEEP entries of a FWD stage), and what it writes counts as loaded. A BWD / LOSS
  stage sums ``|g|`` as it writes, so a ``CMD_PRUNE`` of its range runs one pass. A label
  outside ``[0, classes)``: ``LABEL`` when the stage ends. Later commands except
  ``CMD_PREGEN`` wait for it.

**Beside a running job** (*ours*): a BWD or LOSS stage and a ``CMD_PRUNE`` are also taken
while a job runs (not a FWD stage: it writes ACT, which FP / WG jobs read). They use ports
the job does not (GRAD's DMA-side write port and replica 0's DMA read port, OUT's read port,
KEEP), so only the data can clash: a stage whose ``src`` range in OUT overlaps the results
the job writes (``out_base`` on), or whose ``dst`` range in GRAD overlaps the gradient a BP /
WG job reads (``grad_base``, ``dy`` elements), and a prune whose range overlaps that
gradient, wait in their last check state until the job has ended (a stage right after the BP
job whose result it reads thus runs after it, as before). So the backward stage of layer
``l - 1`` and its pruning run under layer ``l``'s WG job; STAGE_EXPOSED / PRUNE_EXPOSED
count their cycles outside a job.

``cmd.ready`` is high only when the head command can be issued (or is being discarded).

Buffers (element offsets, ``data_width`` elements; sizes from the config): ``BUF_ACT`` (x),
``BUF_GRAD`` (dy), ``BUF_WGT`` (weights), ``BUF_MASK`` (the N:M mask in the weights' layout,
**packed**: mask bit ``k`` is bit ``k % data_width`` of element ``k // data_width``, so a mask of
``n`` weights is ``ceil(n / data_width)`` elements, loaded and stored like any tensor; see
:func:`buf_sizes`), ``BUF_OUT`` (results). Each buffer is ``dma_width``-bit words (``epw``
elements, per-element write enables) replicated once per mapper read port (every DMA load
writes all replicas of its buffer): ACT ``rows + cols`` (operand rows in FP, the WG scratchpad
images), GRAD ``rows``, WGT and MASK ``rows * cols``, OUT one (written only by the result
store: a DMA load into OUT is refused, 0x37). A DMA store reads replica 0.

The job's ``m_base`` counts mask **bits** (the mapper's ``m_rd`` address is ``m_base`` plus the
weight offset; bit ``a`` of the MASK buffer is bit ``a % data_width`` of element ``a //
data_width``): a mask loaded at element ``e`` has ``m_base = e * data_width``. The job's MASK
range checks use the elements ``[m_base // data_width, ceil((m_base + n_weights) /
data_width))``.

Errors: ``err`` pulses one cycle with ``err_code`` = ``0x30 | DmaErr`` (a DMA completion
with a non-OK status) or ``0x40 | JobErr`` (a refused job: nothing reaches the array). After an
error every following command is discarded (taken and dropped) until ``abort``.
``abort`` (level) is the soft reset: the DMA engine drains its burst (``ABORTED``), the
mapper, the result store, the job state and the loaded ranges reset, the discard state
clears, and commands offered while ``abort`` is high are discarded. An ``ABORTED`` completion
is an error like the others: held until ``busy`` falls, ``abort`` also clears the discard
state it causes; after a shorter pulse the data plane discards until the next ``abort``.

Loaded ranges: per buffer one interval of elements written by successful DMA loads (and, in
MASK, by ``CMD_PREGEN``) since the last reset/abort; a range that overlaps or touches it
extends it, another replaces it. A job
whose operands are not inside their buffer's interval is refused with ``NOT_LOADED``.

Ports
-----
cmd : In(stream.Signature(cmd_layout(cfg)))
abort : In(1)
err : Out(1), err_code : Out(8)
busy : Out(1)
    A command in progress: a DMA transfer, a job being checked or running.
job_active : Out(1)
    From the job's start until its last result is stored (the array belongs to the data plane).
x[i], taps[i][j], dense[i][j], drain[j] : Out(stream), o[j] : In(stream)
    The PE array's streams (connect straight to :class:`~sparseforge.hdl.pe_array.PEArray`).
mode, stride2, pad, out_len, in_len, skip_zero, raw : Out
    The PE array's controls (the mapper's).
m_axi_* : the DMA engine's AXI4 master.
dma_busy_cycles, dma_beats, dma_stall_cycles, job_cycles, dma_exposed_cycles,
prune_cycles, pregen_cycles, pregen_exposed_cycles, stage_cycles, stage_exposed_cycles,
prune_exposed_cycles : Out(32)
    Free-running counters: the engine's busy / beat / stall counts, cycles with
    ``job_active``, cycles with the engine busy and no job active (DMA time not hidden),
    cycles with a prune job running, with a pre-generation running, with a
    pre-generation running under neither a job, a DMA transfer nor a stage (its time not
    hidden), with a stage running, with a stage running and no job active, and with a prune
    job running and no job active (their time not hidden under a job).
prune_tau : Out(data_width - 1)
    The threshold of the most recent ``CMD_PRUNE`` (0 after reset / abort).

Latency/throughput: a job starts 5 cycles after its command is taken (5 check stages; the
mapper's 3 cycles of geometry follow, docs/array_mapper.md); the result store takes one
element per column per cycle and writes at most one element per cycle into ``BUF_OUT``
(round-robin over the columns), so with ``cols`` columns draining at once each gets
``1 / cols`` elements per cycle (padded output channels are dropped without a write slot).
The job ends 1 cycle after its last result is written. DMA timing: docs/dma.md.
"""

import enum
import math

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.arith import abs_lanes, masked_sum, small_mul
from sparseforge.hdl import dma
from sparseforge.hdl.array_mapper import ArrayMapper, job_layout
from sparseforge.hdl.dp_pregen import PregenUnit, kk_values
from sparseforge.hdl.dp_prune import SHIFT_WIDTH, SUM_EXTRA, PruneUnit
from sparseforge.hdl.dp_stage import LGK_MAX, STAGE_BWD, STAGE_FWD, STAGE_LOSS, StageUnit
from sparseforge.hdl.pe import pe_out_layout
from sparseforge.hdl.wire import Phase

__all__ = ["DataPlane", "DataPlaneSystem", "JobErr", "dp_job_layout", "cmd_layout", "addr_width_of",
           "buf_sizes", "mask_elems", "prune_layout", "pregen_layout", "stage_layout",
           "pack_cmd",
           "plan_weight_homes", "bwd_stage_fits",
           "BUF_ACT", "BUF_GRAD", "BUF_WGT", "BUF_MASK", "BUF_OUT", "CMD_DESC", "CMD_JOB",
           "CMD_PRUNE", "CMD_PREGEN", "CMD_STAGE", "LEN_WIDTH", "LR_WIDTH",
           "UPDATE_OVERHEAD"]

BUF_ACT, BUF_GRAD, BUF_WGT, BUF_MASK, BUF_OUT = range(5)
CMD_DESC, CMD_JOB, CMD_PRUNE, CMD_PREGEN, CMD_STAGE = 0, 1, 2, 3, 4
#: bits of a descriptor's ``base`` / ``length`` (the DmaEngine default)
LEN_WIDTH = 24
#: Cycles a WG job with the fused SGD update (``update = 1``) runs longer than without: the
#: read-modify-write of the last weight word (WGT read, W' register, write).
UPDATE_OVERHEAD = 2


class JobErr(enum.IntEnum):
    """Why a job was refused (``err_code = 0x40 | code``); checked in this order."""
    RAW = 1           # raw = 1: results are stored as data_width elements
    SHAPE = 4         # geometry the array cannot take
    BEYOND = 2        # an operand or the result extends past its buffer
    NOT_LOADED = 3    # an operand range not loaded by a successful DMA load since reset/abort
    BUSY = 5          # an update's weight range overlaps the running pre-generation's weight
    LABEL = 6         # a CMD_STAGE loss stage met a label outside [0, classes)


def mask_elems(n_bits: int, data_width: int) -> int:
    """Elements of a packed mask of ``n_bits`` bits (``ceil(n_bits / data_width)``)."""
    return -(-n_bits // data_width)


def buf_sizes(cfg) -> tuple:
    """Elements per buffer id. The mask buffer holds one bit per weight packed into
    ``data_width``-bit elements, room for **two** masks of the largest weight (the forward and
    the backward one that ``CMD_PREGEN`` writes): ``2 * ceil(wgt_mem_elems / data_width)``
    elements, each half rounded up to a whole ``dma_width`` word."""
    epw = max(1, cfg.dma_width // cfg.data_width)
    m = mask_elems(cfg.wgt_mem_elems, cfg.data_width)
    return (cfg.act_mem_elems, cfg.grad_mem_elems, cfg.wgt_mem_elems, 2 * (-(-m // epw) * epw),
            cfg.out_mem_elems)


def plan_weight_homes(cfg, shapes: dict) -> dict | None:
    """On-chip homes for a network's weights (``shapes``: layer -> weight shape, the conv view
    ``(Cout, Cin, Kh, Kw)``), in order: each weight at a ``dma_width``-word-aligned element
    ``w`` of ``BUF_WGT``, one after the other; its forward mask at element ``mf`` of
    ``BUF_MASK`` and the backward one at ``mb``, each in whole ``dma_width`` words (the layout
    ``CMD_PREGEN`` writes). ``n``: the weight's elements. ``None`` when they do not all fit
    (``Driver.plan_homes``; the performance model's ``weights_on_chip``)."""
    epw = max(1, cfg.dma_width // cfg.data_width)
    homes, wb, mb = {}, 0, 0
    for name, shp in shapes.items():
        n = math.prod(int(d) for d in shp)
        me = -(-n // cfg.dma_width) * epw               # elements of one mask region
        homes[name] = {"w": wb, "mf": mb, "mb": mb + me, "shape": tuple(shp), "n": n}
        wb += -(-n // epw) * epw
        mb += 2 * me
    sizes = buf_sizes(cfg)
    if wb > sizes[BUF_WGT] or mb > sizes[BUF_MASK]:
        return None
    return homes


def bwd_stage_fits(cfg, gb: int, n_prev: int, n_w: int, n_dx: int | None) -> tuple:
    """Where the e2e step can put the previous layer's backward stage around layer ``l``'s BP
    and WG (``RTLBackend.plan_backward``; the performance model's ``bwd_stages_beside``):
    ``(g_fits, o_fits)`` -- its ``n_prev``-element gradient fits in GRAD at element ``gb``
    (word-aligned; right after layer ``l``'s gradient, which the WG still reads), and layer
    ``l``'s ``n_dx``-element BP result fits in OUT after the WG's ``dW`` (``n_w`` elements,
    from 0, rounded to a word; ``n_dx`` None: unknown, it does not)."""
    sizes = buf_sizes(cfg)
    epw = max(1, cfg.dma_width // cfg.data_width)
    g_fits = gb % epw == 0 and gb + n_prev <= sizes[BUF_GRAD]
    o_fits = n_dx is not None and -(-n_w // epw) * epw + n_dx <= sizes[BUF_OUT]
    return g_fits, o_fits


def _addr_width(sizes, data_width) -> int:
    """Bits of an element address of the largest buffer, and of a bit address of the mask
    buffer (``m_base`` and the mapper's ``m_rd`` count mask bits), at least 4."""
    top = max(*(s for k, s in enumerate(sizes) if k != BUF_MASK), sizes[BUF_MASK] * data_width)
    return max(4, (top - 1).bit_length())


def addr_width_of(cfg) -> int:
    """Address width of the buffers and of the mapper's read ports (element addresses; bit
    addresses in the mask buffer)."""
    return _addr_width(buf_sizes(cfg), cfg.data_width)


#: Bits of a job's ``lr_shift`` (the SGD update's shift; ``golden`` allows 0..62).
LR_WIDTH = 6


def dp_job_layout(addr_width: int) -> data.StructLayout:
    """A data-plane job: the :func:`~sparseforge.hdl.array_mapper.job_layout` fields, ``out_base``
    (element offset of the result in ``BUF_OUT``), and the fused SGD update of a WG job:
    ``update`` (1: also write ``W' = sat(W - (dW >> lr_shift))`` over the weight at
    ``w_base`` in ``BUF_WGT``), ``lr_shift``."""
    fields = {name: f.shape for name, f in job_layout(addr_width)}
    fields["out_base"] = unsigned(addr_width)
    fields["update"] = unsigned(1)
    fields["lr_shift"] = unsigned(LR_WIDTH)
    return data.StructLayout(fields)


def prune_layout(addr_width: int) -> data.StructLayout:
    """The fields of a ``CMD_PRUNE`` command, carried in the low bits of the command's ``job``
    field (a union: a command is one kind): ``base`` (element offset in ``BUF_GRAD``, a
    multiple of the elements per ``dma_width`` word), ``n`` (elements), ``k_p``, ``shift``
    (the threshold ``min((sum|g| * k_p) >> shift, 2**(data_width-1) - 1)``), ``seed`` (the
    xorshift32 seed, non-zero)."""
    return data.StructLayout({"base": unsigned(addr_width), "n": unsigned(LEN_WIDTH),
                              "k_p": unsigned(32), "shift": unsigned(SHIFT_WIDTH),
                              "seed": unsigned(32)})


def pregen_layout(addr_width: int) -> data.StructLayout:
    """The fields of a ``CMD_PREGEN`` command, carried in the low bits of ``job`` like
    :func:`prune_layout`: ``w_base`` (element offset of the dense weight ``(Cout, Cin, Kh, Kw)``
    in ``BUF_WGT``), ``m_base`` (a **bit** offset in ``BUF_MASK``, like a job's, on a
    ``dma_width`` word boundary: the forward mask starts there, the backward mask at the next
    word boundary after it), ``cout``, ``cin``, ``kh``, ``kw``, ``n`` (the N of N:M; M is the
    configuration's ``nm_m``)."""
    return data.StructLayout({"w_base": unsigned(addr_width), "m_base": unsigned(addr_width),
                              "cout": unsigned(16), "cin": unsigned(16), "kh": unsigned(8),
                              "kw": unsigned(8), "n": unsigned(8)})


def stage_layout(addr_width: int) -> data.StructLayout:
    """The fields of a ``CMD_STAGE`` command (:class:`~sparseforge.hdl.dp_stage.StageUnit`),
    carried in the low bits of ``job`` like :func:`prune_layout`: ``op`` (``STAGE_FWD``,
    ``STAGE_BWD``, ``STAGE_LOSS``), ``relu``, ``lgk`` (pool window and stride ``2**lgk``; 0: no
    pooling), ``zfc`` (``z`` in the FC view ``(1, C, 1, B)``, else ``(B, C, H, W)``), ``nfc``
    (the next layer's input in the FC view), ``b``, ``c``, ``h``, ``w`` (``z``'s shape),
    ``src`` (``BUF_OUT``: ``z``, or ``d`` for BWD), ``dst`` (``BUF_ACT`` for FWD, ``BUF_GRAD``
    otherwise), ``aux`` (``BUF_ACT``: the labels of LOSS), ``keep`` (the first KEEP entry)."""
    return data.StructLayout({"op": unsigned(2), "relu": unsigned(1), "lgk": unsigned(2),
                              "zfc": unsigned(1), "nfc": unsigned(1), "b": unsigned(16),
                              "c": unsigned(16), "h": unsigned(16), "w": unsigned(16),
                              "src": unsigned(addr_width), "dst": unsigned(addr_width),
                              "aux": unsigned(addr_width), "keep": unsigned(LEN_WIDTH)})


def _cmd_fields(addr_width, dma_addr_width) -> dict:
    job = dp_job_layout(addr_width)
    if max(prune_layout(addr_width).size, pregen_layout(addr_width).size,
           stage_layout(addr_width).size) > job.size:
        raise ValueError("the prune / pregen / stage fields do not fit in the job field")
    return {"kind": 3, "desc": dma.desc_layout(5, LEN_WIDTH, dma_addr_width), "job": job}


def cmd_layout(cfg) -> data.StructLayout:
    """One data-plane command: ``kind`` (``CMD_DESC``, ``CMD_JOB``, ``CMD_PRUNE``,
    ``CMD_PREGEN``, ``CMD_STAGE``), the descriptor, the job; a ``CMD_PRUNE`` / ``CMD_PREGEN`` /
    ``CMD_STAGE`` command's :func:`prune_layout` / :func:`pregen_layout` /
    :func:`stage_layout` fields are the low bits of ``job`` (:func:`pack_cmd` packs any
    kind)."""
    return data.StructLayout(_cmd_fields(addr_width_of(cfg), cfg.dma_addr_width))


def pack_cmd(layout: data.StructLayout, cmd: dict) -> int:
    """The bits of one command (a dict ``{"kind", "desc": {...}}``, ``{"kind", "job": {...}}``,
    ``{"kind": CMD_PRUNE, "prune": {...}}``, ``{"kind": CMD_PREGEN, "pregen": {...}}`` or
    ``{"kind": CMD_STAGE, "stage": {...}}``;
    missing fields are 0) in ``layout`` (a :func:`cmd_layout`)."""
    fields = dict(iter(layout))
    aw = fields["job"].shape["act_base"].shape.width
    full = {"kind": cmd["kind"], "desc": dict(cmd.get("desc", {})),
            "job": dict(cmd.get("job", {}))}
    bits = int(layout.const(full).as_bits())
    for name, lay in (("prune", prune_layout), ("pregen", pregen_layout),
                      ("stage", stage_layout)):
        if name in cmd:
            pv = int(lay(aw).const(dict(cmd[name])).as_bits())
            bits |= pv << fields["job"].offset
    return bits


class _ResultStore(wiring.Component):
    """One column's result unit: takes ``o`` beats, computes each value's C-order address in
    ``BUF_OUT`` (loops outer1, outer2, ol, inner; see :class:`DataPlane`), holds one pending
    value, and gathers values into a **word** of ``epw`` elements (a column's values come in
    runs of consecutive addresses: an output row, a kernel) that it offers as one write
    (``req``, ``waddr``, ``wdata`` with only its elements set, ``wen``) until ``grant``: when the
    word is full, when the next value belongs to another word, or when the column is done.
    ``start`` loads the counters (``first`` = the column's first address, ``total`` = its output
    count); ``done`` when all were taken and written. Throughput: a value per cycle (a value
    that opens a new word while the old one is granted is taken in the same cycle)."""

    def __init__(self, aw, dw, acc_width, epw=1):
        self._aw, self._dw, self._epw = aw, dw, epw
        self._sel = (epw - 1).bit_length()
        super().__init__({
            "start": In(1), "first": In(aw + 2), "total": In(40), "ch0": In(16),
            "n1": In(16), "s1": In(40), "n2": In(16), "s2": In(40),
            "nol": In(16), "sol": In(40), "ninner": In(32), "o_n": In(16), "cols": In(16),
            "o": In(stream.Signature(pe_out_layout(acc_width))),
            "req": Out(1), "waddr": Out(aw + 2 - self._sel), "wdata": Out(epw * dw),
            "wen": Out(epw), "grant": In(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # the loop parameters, latched at start
        prm = {n: Signal.like(getattr(self, n), name=f"p_{n}")
               for n in ("ch0", "n2", "s1", "s2", "nol", "sol", "ninner", "o_n", "cols")}
        with m.If(self.start):
            m.d.sync += [v.eq(getattr(self, n)) for n, v in prm.items()]
        P = type("P", (), prm)
        c1, c2, col, inner = Signal(16), Signal(16), Signal(16), Signal(32)
        b1, b2, bol, addr = Signal(42), Signal(42), Signal(42), Signal(42)
        ch = Signal(17)                       # the output channel of the current value
        left = Signal(40)
        pend, keep = Signal(), Signal()
        p_addr, p_data = Signal(self._aw + 2), Signal(self._dw)
        # the word being gathered
        sel, dw, epw = self._sel, self._dw, self._epw
        acc_v = Signal()
        acc_w, acc_d, acc_e = Signal(len(self.waddr)), Signal(epw * dw), Signal(epw)
        p_word = p_addr[sel:]
        p_lane = Signal(epw)
        m.d.comb += p_lane.eq(Const(1, epw) << (p_addr[:sel] if sel else 0))
        live = pend & keep
        same = acc_v & (acc_w == p_word) & ~self.grant
        take = live & (same | ~acc_v | self.grant)
        finished = (left == 0) & ~pend
        m.d.comb += [self.waddr.eq(acc_w), self.wdata.eq(acc_d), self.wen.eq(acc_e),
                     self.req.eq(acc_v & (acc_e.all() | (live & (acc_w != p_word)) | finished)),
                     self.done.eq(finished & ~acc_v)]
        with m.If(self.grant):
            m.d.sync += acc_v.eq(0)
        with m.If(take):
            lane_data = (p_data.replicate(epw) & Cat(*[p_lane[k].replicate(dw)
                                                         for k in range(epw)]))
            with m.If(same):
                m.d.sync += [acc_d.eq(acc_d | lane_data), acc_e.eq(acc_e | p_lane)]
            with m.Else():
                m.d.sync += [acc_v.eq(1), acc_w.eq(p_word), acc_d.eq(lane_data),
                             acc_e.eq(p_lane)]
        free = ~pend | ~keep | take
        m.d.comb += self.o.ready.eq(free & (left != 0))
        with m.If(pend & (~keep | take)):
            m.d.sync += pend.eq(0)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [pend.eq(1), keep.eq(ch < P.o_n), p_addr.eq(addr),
                         p_data.eq(self.o.payload.value[:self._dw]), left.eq(left - 1)]
            with m.If(inner == P.ninner - 1):
                m.d.sync += inner.eq(0)
                with m.If(col == P.nol - 1):
                    m.d.sync += col.eq(0)
                    with m.If(c2 == P.n2 - 1):
                        m.d.sync += [c2.eq(0), c1.eq(c1 + 1), b1.eq(b1 + P.s1),
                                     b2.eq(b1 + P.s1), bol.eq(b1 + P.s1),
                                     addr.eq(b1 + P.s1), ch.eq(P.ch0)]
                    with m.Else():
                        m.d.sync += [c2.eq(c2 + 1), b2.eq(b2 + P.s2), bol.eq(b2 + P.s2),
                                     addr.eq(b2 + P.s2), ch.eq(P.ch0)]
                with m.Else():
                    m.d.sync += [col.eq(col + 1), bol.eq(bol + P.sol),
                                 addr.eq(bol + P.sol), ch.eq(ch + P.cols)]
            with m.Else():
                m.d.sync += [inner.eq(inner + 1), addr.eq(addr + 1)]
        with m.If(self.start):
            m.d.sync += [c1.eq(0), c2.eq(0), col.eq(0), inner.eq(0), b1.eq(self.first),
                         b2.eq(self.first), bol.eq(self.first), addr.eq(self.first),
                         ch.eq(self.ch0), left.eq(self.total), pend.eq(0), acc_v.eq(0)]
        return m


class DataPlane(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, rows=2, cols=2, macs_per_pe=2, data_width=16, acc_width=48, k_max=7,
                 max_row_len=64, psum_buf_depth=1024, act_buf_depth=1024, dma_width=32,
                 dma_addr_width=32, dma_max_burst=16, dma_timeout=4096,
                 sizes=(4096, 4096, 4096, 256, 4096), counter_width=32, nm_m=8, nm_n_max=4,
                 pregen_lanes=0, keep_elems=4096, frac_bits=8):
        self._rows, self._cols = rows, cols
        self._nm_m, self._nm_n_max = nm_m, nm_n_max
        self._dw, self._acc = data_width, acc_width
        self._k_max, self._max_row_len = k_max, max_row_len
        self._psum, self._act = psum_buf_depth, act_buf_depth
        self._sizes = tuple(sizes)
        if len(self._sizes) != 5:
            raise ValueError(f"sizes must name the 5 buffers, not {len(self._sizes)}")
        if data_width & (data_width - 1):
            raise ValueError(f"data_width must be a power of 2 (the packed mask's bit select), "
                             f"not {data_width}")
        self._aw = _addr_width(self._sizes, data_width)
        self.engine = dma.DmaEngine(sizes=self._sizes, data_width=dma_width,
                                    elem_width=data_width, addr_width=dma_addr_width,
                                    max_burst=dma_max_burst, timeout=dma_timeout,
                                    len_width=LEN_WIDTH, counter_width=counter_width)
        self.mapper = ArrayMapper(rows=rows, cols=cols, macs_per_pe=macs_per_pe,
                                  data_width=data_width, k_max=k_max, max_row_len=max_row_len,
                                  psum_buf_depth=psum_buf_depth, act_buf_depth=act_buf_depth,
                                  addr_width=self._aw)
        self._epw = self.engine.epw
        # the GRAD buffer's words: the prune unit addresses them like the DMA engine does
        self._grad_waw = max(1, (self._sizes[BUF_GRAD] // self._epw - 1).bit_length())
        self.pruner = PruneUnit(epw=self._epw, data_width=data_width,
                                word_addr_width=self._grad_waw, len_width=LEN_WIDTH)
        # pre-generation: reads W through the first min(rows*cols, M) WGT replicas (the
        # mapper's weight ports, idle in a WG job) -- or ``pregen_lanes`` of them, the copies
        # past rows*cols its own -- and writes whole MASK words
        self._mask_waw = max(1, (self._sizes[BUF_MASK] // self._epw - 1).bit_length())
        self.pregen = PregenUnit(m=nm_m, n_max=nm_n_max, data_width=data_width,
                                 lanes=min(pregen_lanes or rows * cols, nm_m),
                                 addr_width=self._aw,
                                 mask_word_width=self._mask_waw, word_bits=dma_width,
                                 k_max=k_max)
        # between-layer stages (CMD_STAGE): one element per cycle, its own KEEP memory
        if not 0 <= frac_bits < data_width:
            raise ValueError(f"frac_bits must be in [0, {data_width - 1}], not {frac_bits}")
        self._frac = frac_bits
        self.stage = StageUnit(epw=self._epw, data_width=data_width, addr_width=self._aw,
                               keep_elems=keep_elems)
        self._keep = keep_elems
        lay = self.mapper.layouts
        R, C = rows, cols
        mp = self.mapper.signature.members
        members = {
            "cmd": In(stream.Signature(data.StructLayout(_cmd_fields(self._aw,
                                                                     dma_addr_width)))),
            "abort": In(1), "err": Out(1), "err_code": Out(8),
            "busy": Out(1), "job_active": Out(1),
            "x": Out(stream.Signature(lay["x"])).array(R),
            "taps": Out(stream.Signature(lay["taps"])).array(R, C),
            "dense": Out(stream.Signature(lay["dense"])).array(R, C),
            "drain": Out(stream.Signature(lay["drain"])).array(C),
            "o": In(stream.Signature(pe_out_layout(acc_width))).array(C),
        }
        for n in ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero", "raw"):
            members[n] = mp[n]
        for name, member in self.engine.signature.members.items():
            if name.startswith("m_axi_"):
                members[name] = member
        for n in ("dma_busy_cycles", "dma_beats", "dma_stall_cycles", "job_cycles",
                  "dma_exposed_cycles", "prune_cycles", "pregen_cycles",
                  "pregen_exposed_cycles", "stage_cycles", "stage_exposed_cycles",
                  "prune_exposed_cycles"):
            members[n] = Out(counter_width)
        members["prune_tau"] = Out(data_width - 1)
        self._cw = counter_width
        super().__init__(members)

    @classmethod
    def from_config(cls, cfg, **overrides):
        p = dict(rows=cfg.pe_rows, cols=cfg.pe_cols, macs_per_pe=cfg.macs_per_pe,
                 data_width=cfg.data_width, acc_width=cfg.acc_width, k_max=cfg.k_max,
                 max_row_len=cfg.max_row_len, psum_buf_depth=cfg.psum_buf_depth,
                 act_buf_depth=cfg.act_buf_depth, dma_width=cfg.dma_width,
                 dma_addr_width=cfg.dma_addr_width, dma_max_burst=cfg.dma_max_burst,
                 dma_timeout=cfg.dma_timeout, sizes=buf_sizes(cfg), nm_m=cfg.nm_m,
                 nm_n_max=cfg.nm_n_max, pregen_lanes=cfg.pregen_lanes,
                 keep_elems=cfg.keep_mem_elems, frac_bits=cfg.frac_bits)
        p.update(overrides)
        return cls(**p)

    sizes = property(lambda self: self._sizes)
    epw = property(lambda self: self._epw)
    addr_width = property(lambda self: self._aw)

    @property
    def params(self) -> dict:
        return {"addr_width": self._aw, "epw": self._epw, "sizes": list(self._sizes),
                "keep_elems": self._keep}

    # -- buffers -------------------------------------------------------------------------
    def _buffers(self, m, eng, mp, mode_fp, store_wr, pr, pg, upd, st):
        R, C, epw, dw = self._rows, self._cols, self._epw, self._dw
        sel_w = (epw - 1).bit_length()
        mem_port = eng.mem
        rdata = {}
        buf_q = Signal.like(mem_port.buf)
        m.d.sync += buf_q.eq(mem_port.buf)

        def elem_reader(mem, rd, width, addr=None, en=None):
            """An element read port (the mapper's contract) on a word memory (``addr`` /
            ``en``: other than ``rd``'s, when the port is shared)."""
            addr = rd.addr if addr is None else addr
            en = rd.en if en is None else en
            p = mem.read_port()
            m.d.comb += [p.addr.eq(addr >> sel_w), p.en.eq(en)]
            if sel_w == 0:
                return p.data[:width]
            sel = Signal(sel_w)
            with m.If(en):
                m.d.sync += sel.eq(addr[:sel_w])
            return p.data.word_select(sel, width)

        def bit_reader(mem, rd):
            """A one-bit read port (the mapper's contract) on a packed word memory: bit
            ``rd.addr`` of the buffer, i.e. bit ``addr % (epw dw)`` of word ``addr >> log2(epw
            dw)``; the bit index registered on ``en`` like the element select."""
            lw = (epw * dw - 1).bit_length()
            p = mem.read_port()
            m.d.comb += [p.addr.eq(rd.addr >> lw), p.en.eq(rd.en)]
            bsel = Signal(lw)
            with m.If(rd.en):
                m.d.sync += bsel.eq(rd.addr[:lw])
            return p.data.bit_select(bsel, 1)

        pr_on, st_on = pr.busy, st.busy

        def replicas(k, n, name, dma_load=True):
            mems = []
            for r in range(n):
                mem = m.submodules[f"{name}{r}"] = Memory(shape=epw * dw,
                                                         depth=self._sizes[k] // epw, init=[])
                if dma_load:
                    wr = mem.write_port(granularity=dw)
                    en = mem_port.we & (mem_port.buf == k).replicate(epw)
                    if k == BUF_GRAD:
                        # a prune job writes its words back, a stage its gradient (the DMA
                        # is idle while either runs; they never run together)
                        m.d.comb += [wr.addr.eq(Mux(pr_on, pr.wr_addr,
                                                    Mux(st_on, st.wr_addr, mem_port.addr))),
                                     wr.data.eq(Mux(pr_on, pr.wr_data,
                                                    Mux(st_on, st.wr_data, mem_port.wdata))),
                                     wr.en.eq(Mux(pr_on, pr.wr_en,
                                                  Mux(st_on, Mux(st.wr_grad, st.wr_en, 0),
                                                      en)))]
                    elif k == BUF_ACT:
                        # a forward stage writes the next layer's input (the DMA is idle)
                        m.d.comb += [wr.addr.eq(Mux(st_on, st.wr_addr, mem_port.addr)),
                                     wr.data.eq(Mux(st_on, st.wr_data, mem_port.wdata)),
                                     wr.en.eq(Mux(st_on, Mux(st.wr_act, st.wr_en, 0), en))]
                    elif k == BUF_WGT:
                        # the fused SGD update writes W' words (no WGT load meanwhile)
                        m.d.comb += [wr.addr.eq(Mux(upd["wv"], upd["waddr"], mem_port.addr)),
                                     wr.data.eq(Mux(upd["wv"], upd["wdata"], mem_port.wdata)),
                                     wr.en.eq(Mux(upd["wv"], upd["wen"], en))]
                    elif k == BUF_MASK:
                        # pre-generation writes whole mask words (no MASK load meanwhile)
                        m.d.comb += [wr.addr.eq(Mux(pg.busy, pg.wr_addr, mem_port.addr)),
                                     wr.data.eq(Mux(pg.busy, pg.wr_data, mem_port.wdata)),
                                     wr.en.eq(Mux(pg.busy, pg.wr_en.replicate(epw), en))]
                    else:
                        m.d.comb += [wr.addr.eq(mem_port.addr), wr.data.eq(mem_port.wdata),
                                     wr.en.eq(en)]
                mems.append(mem)
            # the DMA's read port (stores) on replica 0; a prune job reads through it
            p = mems[0].read_port()
            if k == BUF_GRAD:
                m.d.comb += [p.addr.eq(Mux(pr_on, pr.rd_addr, mem_port.addr)),
                             pr.rd_data.eq(p.data)]
            elif k == BUF_WGT:
                # an update job reads W through it (no WGT store runs beside a job)
                m.d.comb += [p.addr.eq(Mux(upd["on"], upd["raddr"], mem_port.addr)),
                             upd["rdata"].eq(p.data)]
            elif k == BUF_ACT:
                # a loss stage reads the labels through it (no DMA runs beside a stage)
                m.d.comb += [p.addr.eq(Mux(st_on, st.act_raddr, mem_port.addr)),
                             st.act_rdata.eq(p.data)]
            elif k == BUF_OUT:
                # a stage reads z / d through it
                m.d.comb += [p.addr.eq(Mux(st_on, st.out_raddr, mem_port.addr)),
                             st.out_rdata.eq(p.data)]
            else:
                m.d.comb += p.addr.eq(mem_port.addr)
            rdata[k] = p.data
            return mems

        act = replicas(BUF_ACT, R + C, "act")
        grad = replicas(BUF_GRAD, R, "grad")
        # one WGT copy per mapper weight port, and more when the pre-generation has more lanes
        wgt = replicas(BUF_WGT, max(R * C, pg.lanes), "wgt")
        msk = replicas(BUF_MASK, R * C, "mask")
        # OUT: the result store writes it, the DMA only stores from it (a load into OUT is
        # refused): one write port, so it maps to block RAM (two write ports made the 8,192
        # elements of the ecp5 preset 131,072 flip-flops)
        out = replicas(BUF_OUT, 1, "out", dma_load=False)
        swr = out[0].write_port(granularity=dw)
        m.d.comb += [swr.addr.eq(store_wr["word"]), swr.data.eq(store_wr["data"]),
                     swr.en.eq(store_wr["en"])]
        for k, v in rdata.items():
            with m.If(buf_q == k):
                m.d.comb += mem_port.rdata.eq(v)
        for i in range(R):
            rd = mp.act_rd[i]
            a = elem_reader(act[i], rd, dw)
            g = elem_reader(grad[i], rd, dw)
            m.d.comb += rd.data.eq(Mux(mode_fp, a, g))
            for j in range(C):
                r, rd = i * C + j, mp.w_rd[i][j]
                if r < pg.lanes:
                    # a pre-generation lane (the mapper reads no weights in a WG job, the only
                    # job that may run beside it)
                    v = elem_reader(wgt[r], rd, dw, addr=Mux(pg.busy, pg.rd_addr[r], rd.addr),
                                    en=Mux(pg.busy, pg.rd_en[r], rd.en))
                    m.d.comb += [rd.data.eq(v), pg.rd_data[r].eq(v)]
                else:
                    m.d.comb += rd.data.eq(elem_reader(wgt[r], rd, dw))
                m.d.comb += mp.m_rd[i][j].data.eq(bit_reader(msk[i * C + j], mp.m_rd[i][j]))
        for r in range(R * C, pg.lanes):         # copies read only by the pre-generation
            m.d.comb += pg.rd_data[r].eq(elem_reader(wgt[r], None, dw, addr=pg.rd_addr[r],
                                                     en=pg.rd_en[r]))
        for j in range(C):
            m.d.comb += mp.dense_rd[j].data.eq(elem_reader(act[R + j], mp.dense_rd[j], dw))

    def elaborate(self, platform):
        m = Module()
        R, C, aw = self._rows, self._cols, self._aw
        dw, sizes = self._dw, self._sizes
        eng = m.submodules.engine = self.engine
        # the mapper and the result stores have no reset input: abort resets them
        m.submodules.mapper = ResetInserter({"sync": self.abort})(self.mapper)
        mp = self.mapper
        stores = [_ResultStore(aw, dw, self._acc, self._epw) for _ in range(C)]
        for j, st in enumerate(stores):
            m.submodules[f"store{j}"] = ResetInserter({"sync": self.abort})(st)

        job = Signal(dp_job_layout(aw))          # the job being checked / run
        mode_fp = Signal()
        m.d.comb += mode_fp.eq(job.mode == Phase.FP)

        # -- result store arbitration: one BUF_OUT word write per cycle, round robin; the
        # columns whose word is the winner's are granted with it (their elements merged:
        # e.g. a WG 1x1 layer's columns fill alternate elements of one word)
        win = Signal(C)
        rr = Signal(range(C))
        with m.Switch(rr):
            for r in range(C):
                with m.Case(r):
                    for off in range(C):
                        idx = (r + off) % C
                        cond = stores[idx].req
                        with (m.If if off == 0 else m.Elif)(cond):
                            m.d.comb += win[idx].eq(1)
                            m.d.sync += rr.eq((idx + 1) % C)
        st_word = Signal(len(stores[0].waddr))
        for j, st in enumerate(stores):
            with m.If(win[j]):
                m.d.comb += st_word.eq(st.waddr)
        grant = Signal(C)
        st_data, st_en = Signal(self._epw * dw), Signal(self._epw)
        merged_d, merged_e = Const(0, self._epw * dw), Const(0, self._epw)
        for j, st in enumerate(stores):
            m.d.comb += grant[j].eq(st.req & win.any() & (st.waddr == st_word))
            m.d.comb += st.grant.eq(grant[j])
            merged_d = merged_d | Mux(grant[j], st.wdata, 0)
            merged_e = merged_e | Mux(grant[j], st.wen, 0)
            wiring.connect(m, wiring.flipped(self.o[j]), st.o)
        m.d.comb += [st_data.eq(merged_d), st_en.eq(merged_e)]
        pr, pg = self.pruner, self.pregen
        m.submodules.pruner = ResetInserter({"sync": self.abort})(pr)
        m.submodules.pregen = ResetInserter({"sync": self.abort})(pg)

        # -- the fused SGD update (a WG job with update = 1): every BUF_OUT word write of dW
        # reads the weight word at the same offset (u0), W' is computed into a register (u1)
        # and written into every WGT replica (u2). Lanes are independent (per-element write
        # enables) and each lane is written once, so a word written in two parts needs no
        # forwarding: the second read may see the old word, it writes only its own lanes.
        epw, lgepw = self._epw, (self._epw - 1).bit_length()
        job_running = Signal()
        upd_on = Signal()
        m.d.comb += upd_on.eq(job_running & job.update)
        w_waw = max(1, (sizes[BUF_WGT] // epw - 1).bit_length())
        upd = {"on": upd_on, "raddr": Signal(w_waw), "rdata": Signal(epw * dw),
               "wv": Signal(), "waddr": Signal(w_waw), "wdata": Signal(epw * dw),
               "wen": Signal(epw)}
        st_go = Signal()
        m.d.comb += st_go.eq(win.any() & st_en.any())
        m.d.comb += upd["raddr"].eq((job.w_base >> lgepw) + st_word - (job.out_base >> lgepw))
        u1_v, u1_a, u1_d, u1_e = Signal(), Signal(w_waw), Signal(epw * dw), Signal(epw)
        m.d.sync += [u1_v.eq(upd_on & st_go), u1_a.eq(upd["raddr"]), u1_d.eq(st_data),
                     u1_e.eq(st_en)]
        smax, smin = (1 << (dw - 1)) - 1, -(1 << (dw - 1))
        lanes_new = []
        for k in range(epw):
            wv = upd["rdata"].word_select(k, dw).as_signed()
            gv = u1_d.word_select(k, dw).as_signed()
            diff = Signal(signed(dw + 2), name=f"upd_diff{k}")
            m.d.comb += diff.eq(wv - (gv >> job.lr_shift))
            lanes_new.append(Mux(diff > smax, smax, Mux(diff < smin, smin, diff))[:dw])
        m.d.sync += [upd["wv"].eq(u1_v), upd["waddr"].eq(u1_a), upd["wdata"].eq(Cat(*lanes_new)),
                     upd["wen"].eq(Mux(u1_v, u1_e, 0))]
        with m.If(self.abort):                 # a soft reset drops the words in flight
            m.d.sync += [u1_v.eq(0), upd["wv"].eq(0)]
        sg = self.stage
        m.submodules.stage = ResetInserter({"sync": self.abort})(sg)
        self._buffers(m, eng, mp, mode_fp, {"word": st_word, "data": st_data,
                                            "en": st_en}, pr, pg, upd, sg)

        # -- the mapper's streams and controls go straight out ---------------------------
        for i in range(R):
            wiring.connect(m, mp.x[i], wiring.flipped(self.x[i]))
            for j in range(C):
                wiring.connect(m, mp.taps[i][j], wiring.flipped(self.taps[i][j]))
                wiring.connect(m, mp.dense[i][j], wiring.flipped(self.dense[i][j]))
        for j in range(C):
            wiring.connect(m, mp.drain[j], wiring.flipped(self.drain[j]))
        for n in ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero", "raw"):
            m.d.comb += getattr(self, n).eq(getattr(mp, n))
        for name, _ in job_layout(aw):
            m.d.comb += getattr(mp.job, name).eq(getattr(job, name))

        # -- the DMA engine's AXI master and counters -------------------------------------
        for name, member in eng.signature.members.items():
            if name.startswith("m_axi_"):
                if member.flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(eng, name))
                else:
                    m.d.comb += getattr(eng, name).eq(getattr(self, name))
        m.d.comb += [eng.abort.eq(self.abort), eng.done.ready.eq(1),
                     eng.desc.payload.eq(self.cmd.payload.desc),
                     self.dma_busy_cycles.eq(eng.busy_cycles), self.dma_beats.eq(eng.beat_count),
                     self.dma_stall_cycles.eq(eng.stall_cycles)]

        # -- loaded ranges ---------------------------------------------------------------
        # slots 0..3: the buffers ACT..MASK; slot KEEP_SLOT: the stage unit's KEEP entries
        # written by forward stages (a backward stage reads only those)
        lv = [Signal(name=f"loaded{k}") for k in range(5)]
        llo = [Signal(max(aw, LEN_WIDTH) + 1, name=f"loaded_lo{k}") for k in range(5)]
        lhi = [Signal(max(aw, LEN_WIDTH) + 1, name=f"loaded_hi{k}") for k in range(5)]
        KEEP_SLOT = 4
        cur = Signal(dma.desc_layout(5, LEN_WIDTH, self.engine.addr_width))
        discard = Signal()

        def inside_loaded(k, lo_, end_):
            """``[lo_, end_)`` lies inside buffer ``k``'s loaded interval."""
            return lv[k] & (lo_ >= llo[k]) & (end_ <= lhi[k])

        def refuse(code_):
            """Report ``0x40 | code_`` and discard until abort."""
            m.d.sync += [self.err.eq(1), self.err_code.eq(0x40 | code_), discard.eq(1)]

        def extend(k, nlo, nhi):
            """Buffer ``k`` now also holds ``[nlo, nhi)``: a range that overlaps or touches
            the loaded one extends it, another replaces it."""
            with m.If(lv[k] & (nlo <= lhi[k]) & (nhi >= llo[k])):
                m.d.sync += [llo[k].eq(Mux(nlo < llo[k], nlo, llo[k])),
                             lhi[k].eq(Mux(nhi > lhi[k], nhi, lhi[k]))]
            with m.Else():
                m.d.sync += [lv[k].eq(1), llo[k].eq(nlo), lhi[k].eq(nhi)]
        m.d.sync += self.err.eq(0)
        with m.If(eng.done.valid):
            st = eng.done.payload.status
            with m.If(st != dma.DmaErr.OK):
                m.d.sync += [self.err.eq(1), self.err_code.eq(0x30 | st), discard.eq(1)]
            with m.Elif(cur.dir == dma.DIR_LOAD):
                nlo, nhi = cur.base, cur.base + cur.length
                for k in range(4):
                    with m.If(cur.buf == k):
                        extend(k, nlo, nhi)

        # -- sum|g| of a gradient while its DMA load writes GRAD: a CMD_PRUNE over exactly the
        # range of the last GRAD load skips its sum pass (PruneUnit.pre_ok). Reset when a GRAD
        # load is taken, valid when it completes OK, dropped when GRAD is written otherwise
        # (a prune) and by abort.
        gs_w = dw + SUM_EXTRA
        gs_acc, gs_ok = Signal(gs_w), Signal()
        gs_lo, gs_hi = Signal(aw + 1), Signal(aw + 1)
        mport = eng.mem
        with m.If(mport.we.any() & (mport.buf == BUF_GRAD)):
            # the same sum as the prune unit's pass 1, of the lanes the load writes
            m.d.sync += gs_acc.eq(gs_acc + masked_sum(abs_lanes(mport.wdata, self._epw, dw),
                                                      mport.we))
        d_in = self.cmd.payload.desc
        with m.If(eng.desc.valid & eng.desc.ready & (d_in.buf == BUF_GRAD) &
                  (d_in.dir == dma.DIR_LOAD)):
            m.d.sync += [gs_acc.eq(0), gs_ok.eq(0)]
        with m.If(eng.done.valid & (cur.buf == BUF_GRAD) & (cur.dir == dma.DIR_LOAD)):
            m.d.sync += [gs_ok.eq(eng.done.payload.status == dma.DmaErr.OK),
                         gs_lo.eq(cur.base), gs_hi.eq(cur.base + cur.length)]
        # a backward / loss stage writes a whole gradient range: its sum comes with it
        st_gs, st_was = Signal(), Signal()
        m.d.sync += st_was.eq(sg.busy)
        with m.If(sg.wr_grad):
            m.d.sync += gs_acc.eq(gs_acc + masked_sum(abs_lanes(sg.wr_data, self._epw, dw),
                                                      sg.wr_en))
        with m.If(sg.start):
            m.d.sync += [gs_acc.eq(0), gs_ok.eq(0)]
        with m.If(st_was & ~sg.busy):
            m.d.sync += [st_gs.eq(0), gs_ok.eq(st_gs & ~sg.bad_label)]
        with m.If(pr.busy | self.abort):
            m.d.sync += gs_ok.eq(0)
        with m.If(self.abort):
            m.d.sync += st_gs.eq(0)

        # -- job checks (5 registered stages) --------------------------------------------
        W = 64
        ho, wo, khkw = Signal(17), Signal(17), Signal(16)
        bcin, bcout, hw, cico = Signal(32), Signal(32), Signal(32), Signal(32)
        shape_bad = Signal()
        howo, x_n, w_n, ocl, o_n = Signal(34), Signal(W), Signal(W), Signal(16), Signal(16)
        dy_n, bocl, x_tot = Signal(W), Signal(32), Signal(W)
        # the packed mask: elements from m_base // dw to ceil((m_base + w_n) / dw)
        ldw = (dw - 1).bit_length()
        m_n = Signal(W)
        wg_img = Signal(W)
        fp, bp, wg = job.mode == Phase.FP, job.mode == Phase.BP, job.mode == Phase.WG
        hp, wp = job.h + 2 * job.pad, job.w + 2 * job.pad
        kb = self._k_max.bit_length()
        code = Signal(4)
        # per data buffer: needed by the job, first element, count
        need = [Signal(name=f"need{k}") for k in range(5)]
        lo = [Signal(aw, name=f"lo{k}") for k in range(5)]
        cnt = [Signal(W, name=f"cnt{k}") for k in range(5)]
        m.d.comb += [
            need[BUF_ACT].eq(fp | wg), lo[BUF_ACT].eq(job.act_base), cnt[BUF_ACT].eq(x_n),
            need[BUF_GRAD].eq(bp | wg), lo[BUF_GRAD].eq(job.grad_base), cnt[BUF_GRAD].eq(dy_n),
            need[BUF_WGT].eq(fp | bp | (wg & job.update)), lo[BUF_WGT].eq(job.w_base),
            cnt[BUF_WGT].eq(w_n),
            need[BUF_MASK].eq(fp | bp), lo[BUF_MASK].eq(job.m_base >> ldw),
            cnt[BUF_MASK].eq(m_n),
            need[BUF_OUT].eq(1), lo[BUF_OUT].eq(job.out_base),
            cnt[BUF_OUT].eq(Mux(fp, dy_n, Mux(bp, x_n, w_n))),
        ]
        beyond = Const(0)
        unloaded = Const(0)
        for k in range(5):
            end = lo[k] + cnt[k]
            beyond = beyond | (need[k] & (end > sizes[k]))
            if k < 4:
                unloaded = unloaded | (need[k] & ~inside_loaded(k, lo[k], end))
        # store loop parameters (see _ResultStore)
        X = Signal(W)
        lout = Signal(17)
        for j, st in enumerate(stores):
            m.d.comb += [st.ch0.eq(j), st.cols.eq(C), st.o_n.eq(o_n), st.nol.eq(ocl)]

        prc = Signal(prune_layout(aw))        # the prune command being checked
        stc = Signal(stage_layout(aw))        # the stage command being checked
        # the stage's counts and strides: products of 16-bit fields, saturated at 2**SW - 1
        # (past every buffer, so a saturated count still fails BEYOND), computed one per
        # cycle by one shared 16 x SW multiplier (*why*: ECP5's 156 MULT18X18D are nearly
        # all taken by the mapper; nine parallel products took about 18 more)
        SW = max(LEN_WIDTH, aw) + 2
        s_ho, s_wo = Signal(16), Signal(16)
        s_hw, s_howo, s_chw, s_nz, s_cho, s_np, s_bhowo, s_bwo = (
            Signal(SW, name=f"s_{n}") for n in ("hw", "howo", "chw", "nz", "cho", "np",
                                                 "bhowo", "bwo"))
        s_bad = Signal()
        mul_a, mul_b = Signal(16), Signal(SW)
        mul_p = Signal(16 + SW)
        m.d.comb += mul_p.eq(mul_a * mul_b)
        mul_sat = Mux(mul_p[SW:].any(), (1 << SW) - 1, mul_p[:SW])
        pgc = Signal(pregen_layout(aw))       # the pre-generation command being checked
        pg_kk, pg_cico, pg_n, pg_lb = Signal(16), Signal(32), Signal(W), Signal(W)
        pg_bad = Signal()
        lgm = (self._nm_m - 1).bit_length()
        wbits = self._epw * dw
        # the fused update: a WG job, both bases on a word; its weight range must not overlap
        # the one a running pre-generation reads (pgc / pg_n hold the latest CMD_PREGEN's)
        upd_bad = Signal()
        algn = ((job.w_base[:lgepw] != 0) | (job.out_base[:lgepw] != 0)) if lgepw else Const(0)
        m.d.comb += upd_bad.eq(job.update & (~wg | algn))
        upd_clash = Signal()
        m.d.comb += upd_clash.eq(job.update & pg.busy & (job.w_base < pgc.w_base + pg_n) &
                                 (pgc.w_base < job.w_base + w_n))
        lgwb = (wbits - 1).bit_length()

        cmd_stage = data.View(stage_layout(aw),
                              self.cmd.payload.job.as_value()[:stage_layout(aw).size])
        # the running job's ranges a stage or a prune beside it must not touch: the gradient
        # it reads (BP / WG) and the results it writes into OUT
        job_grad_hit = (lambda a, b: job_running & (bp | wg) &
                        (a < job.grad_base + dy_n) & (job.grad_base < b))
        job_out_hit = (lambda a, b: job_running &
                       (a < job.out_base + cnt[BUF_OUT]) & (job.out_base < b))

        def take(can, reg, state):
            """Issue the head command when ``can``: its ``job`` bits (the command's fields)
            into ``reg``, then ``state`` (its checks)."""
            m.d.comb += self.cmd.ready.eq(can)
            with m.If(self.cmd.valid & can):
                m.d.sync += reg.eq(self.cmd.payload.job.as_value()[:len(reg.as_value())])
                m.next = state

        with m.FSM(name="dp_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.abort | discard):
                    m.d.comb += self.cmd.ready.eq(1)
                with m.Elif((self.cmd.payload.kind == CMD_DESC) &
                            (self.cmd.payload.desc.buf == BUF_OUT) &
                            (self.cmd.payload.desc.dir == dma.DIR_LOAD)):
                    # OUT takes no loads (results only): refused as BAD_BUFFER, no bus traffic
                    m.d.comb += self.cmd.ready.eq(1)
                    with m.If(self.cmd.valid):
                        m.d.sync += [self.err.eq(1), discard.eq(1),
                                     self.err_code.eq(0x30 | dma.DmaErr.BAD_BUFFER)]
                with m.Elif(self.cmd.payload.kind == CMD_DESC):
                    d = self.cmd.payload.desc
                    can = eng.desc.ready & ~pr.busy & ~sg.busy & \
                        ((d.dir == dma.DIR_LOAD) | ~job_running) & \
                        ~(pg.busy & ((d.buf == BUF_WGT) | (d.buf == BUF_MASK))) & \
                        ~(upd_on & (d.buf == BUF_WGT))
                    m.d.comb += [self.cmd.ready.eq(can), eng.desc.valid.eq(self.cmd.valid & can)]
                    with m.If(self.cmd.valid & can):
                        m.d.sync += cur.eq(self.cmd.payload.desc)
                with m.Elif(self.cmd.payload.kind == CMD_PRUNE):
                    # beside a running job too: the check waits while its range overlaps
                    # the job's gradient (PCK)
                    take(eng.desc.ready & ~pr.busy & ~sg.busy, prc, "PCK")
                with m.Elif(self.cmd.payload.kind == CMD_JOB):
                    # an FP / BP job reads WGT and MASK: not while pre-generation runs (a WG
                    # job may run beside it)
                    take(eng.desc.ready & ~job_running & ~pr.busy & ~sg.busy &
                         ~(pg.busy & (self.cmd.payload.job.mode != Phase.WG)), job, "CK1")
                with m.Elif(self.cmd.payload.kind == CMD_PREGEN):
                    take(eng.desc.ready & ~job_running & ~pg.busy, pgc, "PG1")
                with m.Elif(self.cmd.payload.kind == CMD_STAGE):
                    # a stage owns OUT's and ACT's DMA read ports and the ACT / GRAD write
                    # ports: it waits for the DMA, the job, the pruner and the last stage (the
                    # pre-generation, on WGT and MASK, may run beside it)
                    # a BWD / LOSS stage also beside a running job (it writes GRAD, reads
                    # OUT, KEEP and the labels through ports the job does not use; SC4 waits
                    # while its ranges overlap the job's); a FWD stage writes ACT: not then
                    take(eng.desc.ready & ~pr.busy & ~sg.busy &
                         (~job_running | (cmd_stage.op != STAGE_FWD)), stc, "SC1")
                with m.Else():                   # kinds 5..7: no such command
                    m.d.comb += self.cmd.ready.eq(1)
                    with m.If(self.cmd.valid):
                        refuse(JobErr.SHAPE)
            with m.State("SC1"):
                # the stage command's checks and strides: the shape (one registered stage),
                # then one product per cycle (SM0..), then the ranges (SC4)
                kmask = (Const(1, 4) << stc.lgk) - 1
                m.d.sync += [
                    s_ho.eq(stc.h >> stc.lgk), s_wo.eq(stc.w >> stc.lgk),
                    s_bad.eq((stc.op == 3) | (stc.b == 0) | (stc.c == 0) | (stc.h == 0) |
                             (stc.w == 0) | (stc.lgk > LGK_MAX) | ((stc.h & kmask) != 0) |
                             ((stc.w & kmask) != 0) |
                             ((stc.zfc | (stc.op == STAGE_LOSS)) &
                              ((stc.h != 1) | (stc.w != 1))))]
                m.next = "SM0"
                with m.If(self.abort):
                    m.next = "IDLE"
            products = [(s_hw, stc.h, stc.w), (s_howo, s_ho, s_wo), (s_chw, stc.c, s_hw),
                        (s_nz, stc.b, s_chw), (s_cho, stc.c, s_howo), (s_np, stc.b, s_cho),
                        (s_bhowo, stc.b, s_howo), (s_bwo, stc.b, s_wo)]
            for k, (dest, fa, fb) in enumerate(products):
                with m.State(f"SM{k}"):
                    m.d.comb += [mul_a.eq(fa), mul_b.eq(fb)]
                    m.d.sync += dest.eq(mul_sat)
                    m.next = f"SM{k + 1}" if k + 1 < len(products) else "SC4"
                    with m.If(self.abort):
                        m.next = "IDLE"
            with m.State("SC4"):
                s_fwd, s_bwd = stc.op == STAGE_FWD, stc.op == STAGE_BWD
                s_loss = stc.op == STAGE_LOSS
                src_end = stc.src + Mux(s_bwd, s_np, s_nz)
                dst_end = stc.dst + Mux(s_fwd, s_np, s_nz)
                keep_end = stc.keep + s_np
                lab_end = stc.aux + stc.b
                with m.If(s_bad):
                    m.d.comb += code.eq(JobErr.SHAPE)
                with m.Elif((src_end > sizes[BUF_OUT]) |
                            (dst_end > Mux(s_fwd, sizes[BUF_ACT], sizes[BUF_GRAD])) |
                            (~s_loss & (keep_end > self._keep)) |
                            (s_loss & (lab_end > sizes[BUF_ACT]))):
                    m.d.comb += code.eq(JobErr.BEYOND)
                with m.Elif((s_loss & ~inside_loaded(BUF_ACT, stc.aux, lab_end)) |
                            (s_bwd & ~inside_loaded(KEEP_SLOT, stc.keep, keep_end))):
                    m.d.comb += code.eq(JobErr.NOT_LOADED)
                s_wait = Signal()
                m.d.comb += s_wait.eq(job_out_hit(stc.src, src_end) |
                                      job_grad_hit(stc.dst, dst_end))
                with m.If(code != 0):
                    refuse(code)
                with m.Elif(~s_wait & ~self.abort):
                    m.d.comb += [sg.start.eq(1), sg.op.eq(stc.op), sg.relu.eq(stc.relu),
                                 sg.lgk.eq(stc.lgk), sg.b.eq(stc.b), sg.c.eq(stc.c),
                                 sg.ho.eq(s_ho), sg.wo.eq(s_wo), sg.w.eq(stc.w),
                                 sg.zs_b.eq(Mux(stc.zfc, 1, s_chw)),
                                 sg.zs_c.eq(Mux(stc.zfc, stc.b, s_hw)),
                                 sg.ns_b.eq(Mux(stc.nfc, 1, s_cho)),
                                 sg.ns_c.eq(Mux(stc.nfc, s_bhowo, s_howo)),
                                 sg.ns_y.eq(Mux(stc.nfc, s_bwo, s_wo)),
                                 sg.ns_x.eq(Mux(stc.nfc, stc.b, 1)),
                                 sg.ks_b.eq(s_cho), sg.ks_c.eq(s_howo),
                                 sg.src.eq(stc.src), sg.dst.eq(stc.dst), sg.aux.eq(stc.aux),
                                 sg.keep.eq(stc.keep), sg.one.eq(1 << self._frac),
                                 sg.conv_layouts.eq(~stc.zfc & ~stc.nfc)]
                    # what it writes counts as loaded: the next layer's input (FWD) and the
                    # KEEP entries, or the gradient (BWD / LOSS), whose sum|g| it takes on
                    # the way (a CMD_PRUNE of exactly that range is then one pass)
                    with m.If(s_fwd):
                        extend(BUF_ACT, stc.dst, dst_end)
                        extend(KEEP_SLOT, stc.keep, keep_end)
                    with m.Else():
                        extend(BUF_GRAD, stc.dst, dst_end)
                        m.d.sync += [st_gs.eq(1), gs_lo.eq(stc.dst), gs_hi.eq(dst_end)]
                m.next = "IDLE"
                with m.If((code == 0) & s_wait & ~self.abort):
                    # beside a job whose results it reads or whose gradient it overwrites:
                    # it waits here until the job has ended
                    m.next = "SC4"
            with m.State("PG1"):
                # the pre-generation command's checks (three registered stages)
                m.d.sync += [
                    pg_kk.eq(small_mul(pgc.kh, pgc.kw, kb)), pg_cico.eq(pgc.cout * pgc.cin),
                    pg_bad.eq((pgc.cin == 0) | (pgc.cout == 0) | (pgc.kh == 0) |
                              (pgc.kw == 0) | (pgc.kh > self._k_max) | (pgc.kw > self._k_max) |
                              (pgc.n > self._nm_n_max) |
                              (pgc.cin[:lgm] != 0 if lgm else Const(0)) |
                              (pgc.cout[:lgm] != 0 if lgm else Const(0)) |
                              (pgc.m_base[:lgwb] != 0))]
                m.next = "PG2"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("PG2"):
                kkb = (self._k_max * self._k_max).bit_length()
                m.d.sync += [pg_n.eq(small_mul(pg_cico, pg_kk, kkb)),
                             pg_lb.eq(small_mul(pgc.cin, pg_kk, kkb))]
                m.next = "PG3"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("PG3"):
                mw_lo = pgc.m_base >> lgwb                              # first mask word
                mw_n = (pg_n + (wbits - 1)) >> lgwb                     # words per mask
                m_lo = mw_lo << lgepw                                   # elements
                m_hi = (mw_lo + 2 * mw_n) << lgepw
                w_end = pgc.w_base + pg_n
                with m.If(pg_bad | (pg_lb < wbits)):
                    m.d.comb += code.eq(JobErr.SHAPE)
                with m.Elif((w_end > sizes[BUF_WGT]) | (m_hi > sizes[BUF_MASK])):
                    m.d.comb += code.eq(JobErr.BEYOND)
                with m.Elif(~inside_loaded(BUF_WGT, pgc.w_base, w_end)):
                    m.d.comb += code.eq(JobErr.NOT_LOADED)
                with m.If(code != 0):
                    refuse(code)
                with m.Elif(~self.abort):
                    m.d.comb += [pg.start.eq(1), pg.w_base.eq(pgc.w_base), pg.cout.eq(pgc.cout),
                                 pg.cin.eq(pgc.cin), pg.kk.eq(pg_kk), pg.n.eq(pgc.n),
                                 pg.mf_word.eq(mw_lo)]
                    # the masks it writes count as loaded (a job checks its mask range), like
                    # a load: masks of other layers resident beside them stay loaded
                    extend(BUF_MASK, m_lo, m_hi)
                m.next = "IDLE"
            with m.State("PCK"):
                # the prune command's checks (one registered stage), then the unit starts
                p_end = prc.base + prc.n
                lgw = (self._epw - 1).bit_length()
                p_shape = (prc.n == 0) | (prc.seed == 0)
                if lgw:
                    p_shape = p_shape | (prc.base[:lgw] != 0)
                with m.If(p_shape):
                    m.d.comb += code.eq(JobErr.SHAPE)
                with m.Elif(p_end > sizes[BUF_GRAD]):
                    m.d.comb += code.eq(JobErr.BEYOND)
                with m.Elif(~inside_loaded(BUF_GRAD, prc.base, p_end)):
                    m.d.comb += code.eq(JobErr.NOT_LOADED)
                p_wait = Signal()
                m.d.comb += p_wait.eq(job_grad_hit(prc.base, p_end))
                with m.If(code != 0):
                    refuse(code)
                with m.Elif(~p_wait & ~self.abort):
                    m.d.comb += [pr.start.eq(1), pr.base.eq(prc.base >> lgw), pr.n.eq(prc.n),
                                 pr.k_p.eq(prc.k_p), pr.shift.eq(prc.shift),
                                 pr.seed.eq(prc.seed), pr.pre_sum.eq(gs_acc),
                                 pr.pre_ok.eq(gs_ok & (gs_lo == prc.base) & (gs_hi == p_end))]
                m.next = "IDLE"
                with m.If((code == 0) & p_wait & ~self.abort):
                    # beside a job that reads this gradient: it waits for the job's end
                    m.next = "PCK"
            with m.State("CK1"):
                m.d.sync += [
                    ho.eq(((hp - job.kh) >> job.stride2) + 1),
                    wo.eq(((wp - job.kw) >> job.stride2) + 1),
                    # kh, kw <= k_max for any job that runs (else SHAPE, checked before
                    # anything uses khkw): the products in logic, not DSP blocks
                    khkw.eq(small_mul(job.kh, job.kw, kb)),
                    bcin.eq(job.batch * job.cin),
                    bcout.eq(job.batch * job.cout), hw.eq(job.h * job.w),
                    cico.eq(job.cin * job.cout), o_n.eq(Mux(fp, job.cout, job.cin)),
                    shape_bad.eq((job.mode == 3) | (job.batch == 0) | (job.cin == 0) |
                                 (job.cout == 0) | (job.h == 0) | (job.w == 0) |
                                 (job.kh == 0) | (job.kw == 0) | (job.kh > self._k_max) |
                                 (job.kw > self._k_max) | (job.pad > self._k_max) |
                                 (hp < job.kh) | (wp < job.kw) |
                                 (job.w > self._max_row_len)),
                ]
                m.next = "CK2"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("CK2"):
                m.d.sync += [howo.eq(ho * wo), x_n.eq(bcin * hw), w_n.eq(small_mul(cico, khkw, 2 * kb)),
                             ocl.eq((o_n + C - 1) // C),
                             lout.eq(Mux(fp, wo, Mux(wg, 1, job.w))),
                             shape_bad.eq(shape_bad | (wo > self._max_row_len))]
                m.next = "CK3"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("CK3"):
                m.d.sync += [dy_n.eq(bcout * howo), bocl.eq(job.batch * ocl),
                             m_n.eq((job.m_base[:ldw] + w_n + (dw - 1)) >> ldw),
                             X.eq(Mux(fp, howo, Mux(bp, hw, khkw))),
                             shape_bad.eq(shape_bad | (lout > self._psum))]
                m.next = "CK4"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("CK4"):
                m.d.sync += [wg_img.eq(bocl * hw),
                             x_tot.eq(Mux(wg, job.cout * ocl, bocl * Mux(fp, ho, job.h)))]
                m.next = "CK5"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("CK5"):
                with m.If(job.raw):
                    m.d.comb += code.eq(JobErr.RAW)
                with m.Elif(shape_bad | (wg & (wg_img > self._act)) | upd_bad):
                    m.d.comb += code.eq(JobErr.SHAPE)
                with m.Elif(beyond):
                    m.d.comb += code.eq(JobErr.BEYOND)
                with m.Elif(unloaded):
                    m.d.comb += code.eq(JobErr.NOT_LOADED)
                with m.Elif(upd_clash):
                    m.d.comb += code.eq(JobErr.BUSY)
                with m.If(code != 0):
                    refuse(code)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += mp.start.eq(1)
                    m.d.sync += job_running.eq(1)
                    for j, st in enumerate(stores):
                        m.d.comb += [
                            st.start.eq(1), st.first.eq(job.out_base + j * X),
                            st.total.eq(x_tot * Mux(wg, khkw, lout)),
                            st.n1.eq(Mux(wg, job.cout, Mux(fp, ho, job.h))),
                            st.s1.eq(Mux(wg, small_mul(job.cin, khkw, 2 * kb), lout)),
                            st.n2.eq(Mux(wg, 1, job.batch)),
                            st.s2.eq(Mux(wg, 0, o_n * X)),
                            st.sol.eq(C * X), st.ninner.eq(Mux(wg, khkw, lout)),
                        ]
                    m.next = "RUN"
                with m.If(self.abort):
                    m.next = "IDLE"
            with m.State("RUN"):
                m.next = "IDLE"

        done_all = Const(1)
        for st in stores:
            done_all = done_all & st.done
        # (not in RUN, the cycle after the start, before the mapper is busy; a stage or a
        # prune beside the job may be in its checks when the job ends)
        with m.If(job_running & ~fsm.ongoing("RUN") & ~mp.busy & done_all & ~u1_v &
                  ~upd["wv"]):
            m.d.sync += job_running.eq(0)
        with m.If(self.abort):
            m.d.sync += [discard.eq(0), job_running.eq(0)] + [v.eq(0) for v in lv]

        cw = self._cw
        jc, ex, pc, gc, gx, sc, sx, px = (Signal(cw) for _ in range(8))
        m.d.sync += [jc.eq(jc + job_running), ex.eq(ex + (~eng.desc.ready & ~job_running)),
                     pc.eq(pc + pr.busy), gc.eq(gc + pg.busy), sc.eq(sc + sg.busy),
                     # stage / prune time not under a job (they may run beside one)
                     sx.eq(sx + (sg.busy & ~job_running)), px.eq(px + (pr.busy & ~job_running)),
                     # pre-generation time under neither a job, a DMA transfer nor a stage
                     gx.eq(gx + (pg.busy & ~job_running & eng.desc.ready & ~sg.busy))]
        # a loss stage that met a bad label: reported when it ends (its writes are done)
        with m.If(st_was & ~sg.busy & sg.bad_label & ~self.abort):
            refuse(JobErr.LABEL)
        m.d.comb += [self.job_cycles.eq(jc), self.dma_exposed_cycles.eq(ex),
                     self.prune_cycles.eq(pc), self.pregen_cycles.eq(gc),
                     self.pregen_exposed_cycles.eq(gx), self.stage_cycles.eq(sc),
                     self.stage_exposed_cycles.eq(sx), self.prune_exposed_cycles.eq(px),
                     self.prune_tau.eq(pr.tau),
                     self.job_active.eq(job_running),
                     self.busy.eq(~eng.desc.ready | ~fsm.ongoing("IDLE") | job_running |
                                  pr.busy | pg.busy | sg.busy)]
        return m


class DataPlaneSystem(wiring.Component):
    """A :class:`DataPlane` wired to its :class:`~sparseforge.hdl.pe_array.PEArray` (the
    ``dataplane`` block with ``with_array=True``: a self-contained datapath for Verilog tests).

    Ports: the data plane's ``cmd``, ``abort``, ``err``, ``err_code``, ``busy``, ``job_active``,
    ``m_axi_*`` and counters, plus the array's ``cycles``. Latency and throughput: the data
    plane's and the array's."""

    _CONTROLS = ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero", "raw")

    def __init__(self, cfg, **overrides):
        from sparseforge.hdl.pe_array import PEArray
        self.dp = DataPlane.from_config(cfg, **overrides)
        self.array = PEArray.from_config(cfg)
        keep = {"cmd", "abort", "err", "err_code", "busy", "job_active", "dma_busy_cycles",
                "dma_beats", "dma_stall_cycles", "job_cycles", "dma_exposed_cycles",
                "prune_cycles", "prune_tau", "pregen_cycles", "pregen_exposed_cycles",
                "stage_cycles", "stage_exposed_cycles", "prune_exposed_cycles"}
        members = {n: mb for n, mb in self.dp.signature.members.items()
                   if n in keep or n.startswith("m_axi_")}
        members["array_cycles"] = Out(len(self.array.cycles))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        dp, a = self.dp, self.array
        m.submodules.dp, m.submodules.array = dp, a
        for n in self._CONTROLS:
            m.d.comb += getattr(a, n).eq(getattr(dp, n))
        for i in range(a.rows):
            wiring.connect(m, dp.x[i], a.x[i])
            for j in range(a.cols):
                wiring.connect(m, dp.taps[i][j], a.taps[i][j])
                wiring.connect(m, dp.dense[i][j], a.dense[i][j])
        for j in range(a.cols):
            wiring.connect(m, dp.drain[j], a.drain[j])
            wiring.connect(m, a.o[j], dp.o[j])
        wiring.connect(m, wiring.flipped(self.cmd), dp.cmd)
        for name, member in self.signature.members.items():
            if name == "cmd":
                continue
            if name == "array_cycles":
                m.d.comb += self.array_cycles.eq(a.cycles)
            elif member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(dp, name))
            else:
                m.d.comb += getattr(dp, name).eq(getattr(self, name))
        return m
