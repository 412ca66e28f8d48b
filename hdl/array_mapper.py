"""Array mapper: the PE array's FP / BP / WG input streams generated on chip from plain tensors.

The RTL twin of :func:`sparseforge.gen.mapper.array.map_array` (the offline reference, which
stays the specification): given one layer phase (a *job*) and read ports into on-chip
memories that hold the operands in plain C order, it produces, beat for beat, the streams
the reference mapping sends to :class:`~sparseforge.hdl.pe_array.PEArray`:

* ``x[i]``: the operand rows of PE row ``i`` (interleaved dealing: row ``(b, a, r)`` goes to
  PE row ``((b*Rn + r)*A + a) % rows``; taken in ``(b, a, r)`` order), compressed on the fly
  (the non-zeros and always the final column with ``last``, :func:`numfmt.compress_row`);
* ``taps[i][j]``: per operand row the tap bundles of PE ``(i, j)`` (taps in ``(o_local, kr,
  kw)`` order, stride-2 FP grouped by column parity, cut into ``lanes`` slots, the last one
  padded; ``last`` on a row's final bundle, ``eot`` on the tile's final one), a 1-cycle skip
  bundle for a PE without taps for a row another PE of its row needs;
* ``drain[j]``: one drain command per tile (``raw = 1``: the PEs drain raw, the column writes
  back);
* ``dense[i][j]`` (WG): the scratchpad image of column ``j``, ``x[:, c % cols == j]`` in
  ``(b, c_local, h, w)`` order (channels past ``Cin`` as zeros), once per job.

Per tile (the y-major row bands of :mod:`sparseforge.gen.tiling`, ``psum_buf_depth //
out_row_len`` output rows each) a PE row streams only the operand rows at least one of its PEs
has a tap for (``_align``); a tile in which none is needed streams the PE row's first operand
row (``(0, 0, 0)`` when the PE row has none at all) as a skip row.

Naming (one loop nest for both phases): the streamed operand ``a[b, a, r, :]`` has ``A``
channels, ``Rn`` rows of ``Lin`` columns; the outputs ``(b, o, y, :)`` ``O`` channels, ``Ro``
rows of ``Lout`` columns; column ``j`` holds ``o = ol * cols + j`` for ``ol < Ocl = ceil(O /
cols)`` (padded channels ``o >= O`` have no taps).

====  ===========  ================  =============  ===========================================
mode  operand       A, Rn, Lin        O, Ro, Lout    weight index of tap (o, a, kr, kw)
====  ===========  ================  =============  ===========================================
FP    x  (act)     Cin, H, W         Cout, Ho, Wo   ``((o*Cin + a)*Kh + kr)*Kw + kw``
BP    dy (grad)    Cout, Ho, Wo      Cin, H, W      ``((a*Cin + o)*Kh + kr)*Kw + kw``
WG    dy (grad)    Cout, Ho, Wo      Cin, H, 1      none (every tap; psum address
                                                    ``((a*Ocl + ol)*Kh + kr)*Kw + kw``)
====  ===========  ================  =============  ===========================================

WG deals rows by ``((b*Cout + n)*Ho + y) % rows`` (``y`` fastest), its taps carry the
scratchpad row base ``((b*Ocl + ol)*H + h)*W`` and its tiles are bands of ``psum_buf_depth``
weight-gradient addresses.

FP: output row ``y = (r + pad - kr) / S`` (valid when non-negative, divisible, ``< Ho``); BP:
``y = r*S + kr - pad`` (valid in ``[0, H)``). The tap's psum address is ``(q - lo) * Lout``
with ``q = y*(B*Ocl) + b*Ocl + ol`` the output row's y-major index and ``lo`` the tile's first.

Parameters
----------
rows, cols, macs_per_pe, data_width, k_max, max_row_len, psum_buf_depth, act_buf_depth :
    As the PE array's (:meth:`from_config`); they fix the stream layouts.
addr_width : int, [4, 32]
    Word-address width of the memory read ports.

Ports
-----
job : In(job_layout(addr_width))
    ``mode`` (Phase: FP 0, BP 1, WG 2), ``batch``, ``cin``, ``cout``, ``h``, ``w``, ``kh``, ``kw``,
    ``stride2``, ``pad``, ``raw``, ``act_base`` (x), ``grad_base`` (dy), ``w_base`` (weights),
    ``m_base`` (the mask: FP the forward mask, BP the backward mask, in the weights' layout).
    Sampled when ``start`` is high while idle.
start : In(1);  busy : Out(1)
    Start a job; ``busy`` is high from the cycle after ``start`` until every stream is done.
mode, stride2, pad, out_len, in_len, skip_zero, raw : Out
    The PE array's control inputs of the job (registered; valid from the cycle after
    ``start``, at least 3 cycles before the first beat).
act_rd[i] : Out(read_signature(addr_width, signed(data_width))).array(rows)
    Operand reads of PE row ``i``: ``addr``, ``en``; ``data`` is expected one cycle after an
    ``en`` cycle and must hold while ``en`` is low (an ``amaranth.lib.memory`` read port,
    not transparent). One element per word.
w_rd[i][j], m_rd[i][j] : Out(read_signature(...)).array(rows, cols)
    Weight (``signed(data_width)``) and mask (1 bit) reads of PE ``(i, j)``'s tap generator;
    the two ports always carry the same address offset from ``w_base`` / ``m_base`` and the
    same ``en`` (one memory holding weight and mask bit side by side serves both).
dense_rd[j] : Out(read_signature(addr_width, signed(data_width))).array(cols)
    WG: reads of ``x`` (from ``act_base``) for column ``j``'s scratchpad image.
x[i], taps[i][j], dense[i][j], drain[j] : Out(stream.Signature(pe_layouts(cfg)[...]))
    The PE array's input streams. ``valid``/``payload`` are registers; every stream honours
    back-pressure. ``dense[.][j]`` of a column carry the same words, each stream at its own
    pace (a fork; the next word waits until all took the current one).

Structure, latency, throughput
------------------------------
One *row unit* per PE row walks the tiles and, per tile, the operand rows of its PE row
(dropping rows that cannot reach an output row of the tile without a scan); per operand row
its ``cols`` *tap generators* (one per PE, in parallel) scan their candidate taps (one per
cycle, twice in stride-2 FP, once per parity; kernel rows that cannot hold a tap are skipped
in no cycle) and emit a bundle each time ``lanes`` taps are found, into a 4-bundle FIFO per
generator; as soon as one of them found a tap the *x emitter* reads the row's ``Lin``
elements (one per cycle) and emits the compressed beats. A generator holds its latest bundle
back until the next one exists or the row / tile ends (that is how ``last`` and ``eot`` are
known without look-ahead). Rows are pipelined: a generator that has a tap for the row takes
the next row's start while it issues the row's last candidate, the verdict (stream, skip,
drop) and the next start come in the cycle the generators end. One *drain unit* per column emits the tile's drain
commands; one *dense unit* per column (WG) reads its scratchpad image, one word per cycle.
Each stream is an output register: at most one beat per cycle. The x emitter runs
at one beat per stored element (plus the zero columns it reads and drops); a tap generator at
one bundle per ``lanes`` kept candidates (one candidate per cycle), so taps are the limit
when the mask is sparse or the kernel small -- see ``docs/array_mapper.md`` for measured
rates and the cycle bounds against the reference (:data:`MAPPER_OVERHEAD`,
:data:`MAPPER_READ_SLACK`). First beats leave about 8 cycles after ``start``.
"""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.arith import small_mul
from sparseforge.hdl.pe import pe_dense_layout, pe_drain_layout, pe_taps_layout
from sparseforge.hdl.layouts import sparse_elem_layout
from sparseforge.hdl.wire import Phase

__all__ = ["ArrayMapper", "job_layout", "read_signature", "MAPPER_OVERHEAD",
           "MAPPER_READ_SLACK"]

_DIM = 16        # bits of a tensor dimension in the job
_WIDE = 32       # bits of the internal row / word counts
_TAP_FIFO = 4    # tap bundles buffered per tap generator

#: Cycles: mapper-fed ``PEArray`` cycles <= 1.10 * ``gen.mapper.array.cycles(job).cycles`` +
#: the WG scratchpad words (the reference starts with them loaded) + ``MAPPER_OVERHEAD``;
#: measured on the layers of ``test_array_mapper_feeds_pe_array`` (worst 80.2 cycles, FP
#: stride 2). Not a bound for every layer: see :data:`MAPPER_READ_SLACK`, docs/array_mapper.md.
MAPPER_OVERHEAD = 81
#: Cycles: mapper-fed cycles <= max(1.10 * reference, read floor) + WG scratchpad words +
#: ``MAPPER_READ_SLACK``, the read floor being the most reads any one read port makes (one
#: element per cycle: ``act_rd[i]`` reads every element of every streamed row, ``m_rd[i][j]``
#: every candidate tap); measured over 60 random small layers (worst 87.5 cycles), empirical.
MAPPER_READ_SLACK = 88


def job_layout(addr_width: int) -> data.StructLayout:
    """The job: one layer phase's geometry and the base addresses of its operands."""
    a = unsigned(addr_width)
    return data.StructLayout({
        "mode": unsigned(2), "batch": unsigned(_DIM), "cin": unsigned(_DIM),
        "cout": unsigned(_DIM), "h": unsigned(_DIM), "w": unsigned(_DIM),
        "kh": unsigned(8), "kw": unsigned(8), "stride2": unsigned(1), "pad": unsigned(8),
        "raw": unsigned(1),
        "act_base": a, "grad_base": a, "w_base": a, "m_base": a,
    })


def read_signature(addr_width: int, shape) -> wiring.Signature:
    """A synchronous memory read port seen from the reader: ``addr``, ``en`` out, ``data`` in
    (valid the cycle after an ``en`` cycle, held while ``en`` is low)."""
    return wiring.Signature({"addr": Out(addr_width), "en": Out(1), "data": In(shape)})


class _Geometry:
    """The job's derived quantities, registered once per job (shared by every unit)."""

    def __init__(self, addr_width):
        self.fp = Signal()
        self.stride2 = Signal()
        self.pad = Signal(8)
        self.kh = Signal(8)
        self.kw = Signal(8)
        self.batch = Signal(_DIM)
        self.a_n = Signal(_DIM)          # operand channels A
        self.rn = Signal(_DIM)           # operand rows Rn
        self.lin = Signal(_DIM)          # operand row length
        self.o_n = Signal(_DIM)          # output channels O (unpadded)
        self.ro = Signal(_DIM)           # output rows Ro
        self.lout = Signal(_DIM)         # output row length
        self.ocl = Signal(_DIM)          # output channels per column
        self.planes = Signal(_WIDE)      # B * Ocl
        self.per = Signal(_WIDE)         # output rows per tile
        self.total = Signal(_WIDE)       # output rows of a column: Ro * B * Ocl
        self.okk = Signal(_WIDE)         # Ocl * Kh * Kw (WG: psum addresses per channel)
        self.so = Signal(_WIDE)          # weight stride of o
        self.sa = Signal(_WIDE)          # weight stride of a
        self.op_base = Signal(addr_width)
        self.w_base = Signal(addr_width)
        self.m_base = Signal(addr_width)
        self.wg = Signal()
        self.win = Signal(_DIM)          # WG: the x row length W (scratchpad row base)
        self.x_base = Signal(addr_width) # WG: x, the scratchpad's source


class _XEmitter(wiring.Component):
    """Reads one operand row (``lin`` words from ``base``) and emits its compressed beats.
    ``start`` (one cycle, while ``free``) begins a row; ``busy`` until its last beat left
    the scan (the output register may still hold it); ``free``: a new row may start (``start``
    while ``free``: its reads follow the previous row's last one without a gap)."""

    def __init__(self, addr_width, data_width, col_width):
        self._aw, self._dw = addr_width, data_width
        super().__init__({
            "start": In(1), "base": In(addr_width), "lin": In(_DIM), "busy": Out(1),
            "free": Out(1),
            "rd": Out(read_signature(addr_width, signed(data_width))),
            "o": Out(stream.Signature(sparse_elem_layout(data_width, col_width))),
        })

    def elaborate(self, platform):
        m = Module()
        col = Signal(_DIM)
        run = Signal()
        s1_valid = Signal()
        s1_col = Signal(_DIM)
        s1_last = Signal()
        out_free = ~self.o.valid | self.o.ready
        emit = s1_valid & ((self.rd.data != 0) | s1_last)
        adv = ~(emit & ~out_free)                    # stage 1 can retire its element
        base = Signal(self._aw)          # latched: the row unit moves on to the next row
        # ``free``: a new row may start (its first read follows the previous row's last
        # element, which stage 1 still holds)
        m.d.comb += [self.busy.eq(run | s1_valid), self.free.eq(~run),
                     self.rd.addr.eq(base + col), self.rd.en.eq(run & adv)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(adv):
            m.d.sync += [s1_valid.eq(run), s1_col.eq(col), s1_last.eq(col == self.lin - 1)]
            with m.If(run):
                m.d.sync += col.eq(col + 1)
                with m.If(col == self.lin - 1):
                    m.d.sync += run.eq(0)
            with m.If(emit):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.value.eq(self.rd.data),
                             self.o.payload.col.eq(s1_col), self.o.payload.last.eq(s1_last)]
        with m.If(self.start):
            m.d.sync += [run.eq(1), col.eq(0), base.eq(self.base)]
        return m


# tap generator operations
_EMIT, _SKIP, _FLUSH = range(3)


def _kernel_rows(m, g, r):
    """The kernel rows operand row ``r`` reaches: ``kr = kr_lo, kr_lo + S', ... <= kr_hi``
    (``S'`` = 2 in stride-2 FP, else 1; FP: ``0 <= r + pad - kr <= (Ro - 1) * S``, divisible
    by ``S``; BP/WG: ``0 <= r*S + kr - pad < Ro``) and ``y0``, the output row of ``kr_lo``;
    along the visited kernel rows ``y`` moves by one per step (FP down, BP/WG up)."""
    rp = Signal(signed(_DIM + 10))
    kr_lo = Signal(signed(_DIM + 12))
    kr_hi = Signal(signed(_DIM + 12))
    lo_raw = Signal(signed(_DIM + 12))
    m.d.comb += rp.eq(r + g.pad)
    with m.If(g.fp):
        m.d.comb += lo_raw.eq(rp - ((g.ro - 1) << g.stride2))
        m.d.comb += kr_hi.eq(Mux(rp < g.kh - 1, rp, g.kh - 1))
    with m.Else():
        rs = Mux(g.stride2, r << 1, r)
        m.d.comb += lo_raw.eq(g.pad - rs)
        hi_raw = g.ro - 1 + g.pad - rs
        m.d.comb += kr_hi.eq(Mux(hi_raw < g.kh - 1, hi_raw, g.kh - 1))
    lo0 = Mux(lo_raw < 0, 0, lo_raw)
    # stride-2 FP: kr has the parity of r + pad (lo_raw has it; clamping to 0 may not)
    m.d.comb += kr_lo.eq(lo0 + (g.fp & g.stride2 & (lo0[0] ^ rp[0])))
    y0 = Signal(signed(_WIDE + 2))
    with m.If(g.fp):
        t0 = r + g.pad - kr_lo
        m.d.comb += y0.eq(Mux(g.stride2, t0 >> 1, t0))
    with m.Else():
        m.d.comb += y0.eq(Mux(g.stride2, r << 1, r) + kr_lo - g.pad)
    return kr_lo, kr_hi, y0


def _row_reach(m, g, b, a, r, lo, k_max):
    """Whether operand row ``(b, a, r)`` may hold a tap in the tile starting at ``lo`` for
    some column (conservative: padded channels and per-column gaps are not excluded; a
    ``False`` row has no tap in any PE of its row and is dropped without a scan)."""
    kr_lo, kr_hi, y0 = _kernel_rows(m, g, r)
    s2fp = g.fp & g.stride2
    q0 = Signal(signed(_WIDE + 4))
    m.d.comb += q0.eq(y0 * g.planes + b * g.ocl)
    hits = []
    for k in range(k_max):
        kr_k = kr_lo + Mux(s2fp, 2 * k, k)
        q_k = Mux(g.fp, q0 - k * g.planes, q0 + k * g.planes)
        hits.append((kr_k <= kr_hi) & (q_k + g.ocl > lo) & (q_k < lo + g.per))
    blk = Signal(_WIDE + 8)              # WG: the psum addresses of channel a
    m.d.comb += blk.eq(a * g.okk)
    reach = Signal()
    m.d.comb += reach.eq(Mux(g.wg, (kr_lo <= kr_hi) & (blk + g.okk > lo) &
                             (blk < lo + g.per), _any(hits)))
    return reach


class _TapGen(wiring.Component):
    """The tap bundles of one PE for one operand row (``op`` = EMIT), a skip bundle (SKIP), or
    the tile's end (FLUSH: the held bundle leaves with ``eot``). ``start`` (one cycle, while
    not ``busy``, or while ``done`` (the operation ends this cycle) or ``tail`` (the row's last
    candidate is issued and the row has a tap)) begins an operation on the row ``(b, a, r)``
    of the tile starting at output row ``lo``. ``found_now``: a tap of this row was found
    (including this cycle's); ``pending``: bundles wait in the FIFO.

    EMIT: ``found`` rises with the first tap. A generator that found none does not know
    whether the row is streamed (another PE of its row may need it): it raises ``waiting``
    and, when the row unit raises ``resolve``, pushes a skip bundle if ``need`` else ends
    without a beat (the row is dropped from every stream of the PE row)."""

    def __init__(self, geo, j, cols, lanes, taps_layout, addr_width, data_width, k_max):
        self._geo, self._j, self._cols, self._lanes = geo, j, cols, lanes
        self._k_max = k_max
        self._tl = taps_layout
        super().__init__({
            "start": In(1), "op": In(2), "b": In(_DIM), "a": In(_DIM), "r": In(_DIM),
            "lo": In(_WIDE), "busy": Out(1), "done": Out(1), "ending": Out(1),
            "pending": Out(1), "found": Out(1), "found_now": Out(1), "tail": Out(1),
            "waiting": Out(1),
            "resolve": In(1), "need": In(1),
            "w_rd": Out(read_signature(addr_width, signed(data_width))),
            "m_rd": Out(read_signature(addr_width, unsigned(1))),
            "o": Out(stream.Signature(taps_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        g, L = self._geo, self._lanes
        op = Signal(2)
        ol, kri, kw = Signal(_DIM), Signal(8), Signal(8)
        par = Signal()                   # the parity pass (stride-2 FP emits two passes)
        split = Signal()                 # this operation walks two parity passes
        scanning = Signal()
        s1_valid, s1_ok, s1_kw, s1_base = Signal(), Signal(), Signal(8), Signal(_WIDE)
        s1_last, s1_par = Signal(), Signal()     # stage 1 holds the pass's last candidate
        # stage 1 holds the previous row's last candidate (the *tail*: the next row started
        # while it was issued); it belongs to a row that has a tap, so it ends that row with
        # ``last`` and counts for neither ``found`` nor ``pushed`` of the new row
        s1_tail = Signal()
        tail_ok = Signal()
        cnt = Signal(range(L + 1))       # slots filled in the bundle being built
        bld = Signal(self._tl)           # the bundle being built (unused slots all zero)
        held = Signal(self._tl)          # the latest complete bundle, not yet released
        held_valid = Signal()
        pushed = Signal()                # this row has pushed a bundle

        # -- stage 0: the candidate tap (ol, kr, kw) -> geometry, psum address, memory read.
        # In a parity pass only the kw of that parity are visited (kw0, kw0 + 2, ...).
        kw0 = Signal(8)
        m.d.comb += kw0.eq(Mux(split, (g.pad[0] ^ par), 0))
        kw_step = Mux(split, 2, 1)
        # only the kernel rows kr the operand row reaches are visited: kr = kr_lo + kri *
        # kr_step up to kr_hi (FP: 0 <= r + pad - kr <= (Ro - 1) * S, divisible by S; BP:
        # 0 <= r*S + kr - pad < Ro)
        kr_lo, kr_hi, y0 = _kernel_rows(m, g, self.r)
        kr_step = Mux(g.fp & g.stride2, 2, 1)
        kr = Signal(_DIM + 12)
        # Kernel rows that cannot hold a tap (out of the tile, a padded channel, past kr_hi)
        # cost no cycle: all k_max kernel rows of the current ol are tested at once and the
        # scan visits the first possible one at or after kri (kri_e). Along the visited kernel
        # rows y moves by one per step (FP: down, BP/WG: up), so q moves by B*Ocl.
        K = self._k_max
        s2fp = g.fp & g.stride2
        q0 = Signal(signed(_WIDE + 4))
        m.d.comb += q0.eq(y0 * g.planes + self.b * g.ocl + ol)
        wgb0 = Signal(signed(_WIDE + 4))    # WG: the first kernel row's first psum address
        kb = self._k_max.bit_length()    # kh, kw <= k_max: products in logic, not DSPs
        akh = Signal(_WIDE + 4)          # (a * Ocl + ol) * Kh: shared by wgb0 and wgq
        m.d.comb += akh.eq(small_mul(self.a * g.ocl + ol, g.kh, kb))
        m.d.comb += wgb0.eq(small_mul(akh + kr_lo, g.kw, kb))
        o_real = Signal()
        m.d.comb += o_real.eq((ol * self._cols + self._j) < g.o_n)
        krow_can = Signal(K)
        for k in range(K):
            kr_k = kr_lo + Mux(s2fp, 2 * k, k)
            q_k = Mux(g.fp, q0 - k * g.planes, q0 + k * g.planes)
            wb_k = wgb0 + k * g.kw
            tile_k = Mux(g.wg, (wb_k + g.kw > self.lo) & (wb_k < self.lo + g.per),
                         o_real & (q_k >= self.lo) & (q_k < self.lo + g.per))
            m.d.comb += krow_can[k].eq((kr_k <= kr_hi) & tile_k)
        kri_e = Signal(range(K))
        any_can = Signal()
        more_can = Signal()              # a possible kernel row after kri_e
        for k in reversed(range(K)):     # the lowest possible k >= kri wins
            with m.If(krow_can[k] & (kri <= k)):
                m.d.comb += [kri_e.eq(k), any_can.eq(1)]
        for k in range(K):
            with m.If(krow_can[k] & (kri_e < k)):
                m.d.comb += more_can.eq(1)
        m.d.comb += kr.eq(kr_lo + Mux(s2fp, kri_e << 1, kri_e))
        kr_last = ~any_can | ~more_can
        o = Signal(_WIDE)
        m.d.comb += o.eq(ol * self._cols + self._j)
        y = Signal(signed(_WIDE + 2))
        g_ok = Signal()
        t = Signal(signed(_WIDE + 2))
        with m.If(g.fp):
            m.d.comb += t.eq(self.r + g.pad - kr)
            m.d.comb += y.eq(Mux(g.stride2, t >> 1, t))
            m.d.comb += g_ok.eq((t >= 0) & ~(g.stride2 & t[0]) & (y < g.ro))
        with m.Else():
            m.d.comb += y.eq(Mux(g.stride2, self.r << 1, self.r) + kr - g.pad)
            m.d.comb += g_ok.eq((y >= 0) & (y < g.ro))
        q = Signal(_WIDE)
        m.d.comb += q.eq(y[:_WIDE] * g.planes + self.b * g.ocl + ol)
        in_tile = (q >= self.lo) & (q < self.lo + g.per)
        # whether kernel row (ol, kr) can hold a tap at all: else its kw run is skipped in
        # one cycle (tiles make most kernel rows of an operand row out of range)
        # WG: the tap's psum address is its weight-gradient index (every tap kept, padded
        # channels too: their scratchpad rows are zeros); tiles cut through the kernel
        wgq = Signal(_WIDE)
        m.d.comb += wgq.eq(small_mul(akh + kr, g.kw, kb) + kw)
        wg_in_tile = (wgq >= self.lo) & (wgq < self.lo + g.per)
        krow_ok = (any_can & g_ok & (g.wg | ((o < g.o_n) & in_tile)) & (kw < g.kw) &
                   (kr <= kr_hi))
        cand_ok = krow_ok & (~g.wg | wg_in_tile)
        kw_more = krow_ok & (kw + kw_step < g.kw)
        # FP/BP: padded channels (o >= O) come last and hold no tap: the scan ends before
        ol_last = (ol == g.ocl - 1) | (~g.wg & (o + self._cols >= g.o_n))
        last_cand = ~kw_more & kr_last & ol_last
        woff = Signal(_WIDE)
        m.d.comb += woff.eq(o * g.so + self.a * g.sa + small_mul(kr, g.kw, kb) + kw)

        # -- stage 1: the mask bit and the weight arrive; a kept tap joins the bundle
        # released bundles wait in a FIFO (its output register drives the stream): the scan
        # runs ahead of the PE by up to ``_TAP_FIFO`` bundles
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._tl.size, depth=_TAP_FIFO)
        wr_en = Signal()
        wr_data = Signal(self._tl)
        m.d.comb += [fifo.w_en.eq(wr_en), fifo.w_data.eq(wr_data),
                     self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.o.ready), self.pending.eq(fifo.level != 0)]
        out_free = fifo.w_rdy
        can_push = ~held_valid | out_free
        tap_ok = s1_valid & s1_ok & (g.wg | self.m_rd.data[0])
        full = tap_ok & (cnt == L - 1)
        # the pass ends in stage 1 (no drain cycle): its partial bundle leaves at once
        pass_end = s1_valid & s1_last
        s1_final = ~split | s1_par
        cnt_after = Signal(range(L + 2))
        m.d.comb += cnt_after.eq(cnt + tap_ok)
        end_push = pass_end & (cnt_after != 0)
        adv = ~((full | end_push) & ~can_push)       # stage 1 retires its candidate

        # only a candidate that can be a tap reads: a padded channel (o >= O) has no weights,
        # so its address would leave the tensor (stage 1 ignores the held data: s1_ok = 0)
        rd_en = scanning & adv & cand_ok & ~g.wg
        m.d.comb += [self.w_rd.addr.eq(g.w_base + woff), self.m_rd.addr.eq(g.m_base + woff),
                     self.w_rd.en.eq(rd_en), self.m_rd.en.eq(rd_en)]

        s1_rowbase = Signal(_WIDE)
        slot = {"value": Mux(g.wg, 0, self.w_rd.data), "kw": s1_kw, "base": s1_base,
                "rowbase": s1_rowbase, "en": 1}
        rowbase = Signal(_WIDE)          # WG: scratchpad address of x[b, ol, y, 0]
        m.d.comb += rowbase.eq(((self.b * g.ocl + ol) * g.ro + y[:_WIDE]) * g.win)
        nb = Signal(self._tl)                        # bld with the stage-1 tap added
        m.d.comb += nb.eq(bld)
        for k in range(L):
            with m.If(cnt == k):
                m.d.comb += [getattr(nb.slots[k], f).eq(v) for f, v in slot.items()]

        def push(bundle_value, last):
            """The held bundle leaves (if any), ``bundle_value`` becomes the held one."""
            with m.If(held_valid):
                m.d.comb += [wr_en.eq(1), wr_data.eq(held)]
            m.d.sync += [held.eq(bundle_value), held.parity.eq(s1_par), held.last.eq(last),
                         held.eot.eq(0), held_valid.eq(1), pushed.eq(1)]

        def push_skip():
            push(Const(0, self._tl.size), 1)
            m.d.sync += held.parity.eq(0)

        with m.If(adv):
            m.d.sync += [s1_valid.eq(scanning), s1_ok.eq(cand_ok), s1_kw.eq(kw),
                         s1_last.eq(last_cand), s1_par.eq(par),
                         s1_tail.eq(tail_ok & self.start),
                         s1_base.eq(Mux(g.wg, wgq - self.lo, (q - self.lo) * g.lout)),
                         s1_rowbase.eq(Mux(g.wg, rowbase, 0))]
            with m.If(scanning):
                with m.If(kw_more):
                    m.d.sync += kw.eq(kw + kw_step)
                with m.Else():
                    m.d.sync += [kw.eq(kw0), kri.eq(kri_e + 1)]
                    with m.If(kr_last):
                        m.d.sync += [kri.eq(0), ol.eq(ol + 1)]
                with m.If(last_cand):
                    with m.If(split & ~par):        # stride-2 FP: the second parity pass
                        m.d.sync += [par.eq(1), ol.eq(0), kri.eq(0), kw.eq(~g.pad[0])]
                    with m.Else():
                        m.d.sync += scanning.eq(0)
            with m.If(tap_ok & ~s1_tail):
                m.d.sync += self.found.eq(1)
            with m.If(pass_end):
                with m.If(cnt_after != 0):
                    push(Mux(tap_ok, nb, bld), s1_final)
                    m.d.sync += [bld.eq(0), cnt.eq(0)]
                with m.Elif(s1_final & (pushed | s1_tail)):
                    m.d.sync += held.last.eq(1)
                with m.If(s1_tail):
                    m.d.sync += pushed.eq(0)
            with m.Elif(tap_ok):
                with m.If(cnt == L - 1):
                    push(nb, 0)
                    m.d.sync += [bld.eq(0), cnt.eq(0)]
                with m.Else():
                    m.d.sync += [bld.eq(nb), cnt.eq(cnt + 1)]

        busy = Signal()
        done = Signal()                  # the operation ends this cycle (a start may follow)
        ending = Signal()                # done, not from the verdict (NOTAP)
        m.d.comb += [self.busy.eq(busy), self.done.eq(done), self.ending.eq(ending),
                     self.found_now.eq(self.found | (adv & tap_ok & ~s1_tail)),
                     self.tail.eq(tail_ok)]

        def finish(verdict=False):
            """The operation ends: ``busy`` falls, unless a new operation starts right away
            (the row unit starts the next one in the cycle ``done`` is high). ``ending``: it
            ends on its own (not on the row's verdict), so the verdict may come this cycle."""
            m.d.comb += done.eq(1)
            if not verdict:
                m.d.comb += ending.eq(1)
            m.d.sync += busy.eq(0)
            m.next = "IDLE"
            begin()

        def begin():
            with m.If(self.start):
                sp = (self.op == _EMIT) & g.fp & g.stride2
                # (cnt and bld are already empty, or emptied by the tail in stage 1)
                m.d.sync += [op.eq(self.op), busy.eq(1), pushed.eq(0), par.eq(0),
                             ol.eq(0), kri.eq(0), kw.eq(Mux(sp, g.pad[0], 0)),
                             self.found.eq(0), split.eq(sp)]
                with m.Switch(self.op):
                    with m.Case(_EMIT):
                        m.d.sync += scanning.eq(1)
                        m.next = "SCAN"
                    with m.Case(_SKIP):
                        m.next = "SKIP"
                    with m.Case(_FLUSH):
                        m.next = "FLUSH"

        with m.FSM():
            with m.State("IDLE"):
                begin()
            with m.State("SCAN"):
                # the final pass issues its last candidate and the row has a tap: the next
                # row may start now (its first candidate follows this one without a gap)
                m.d.comb += tail_ok.eq(scanning & last_cand & adv & (~split | par) &
                                       self.found_now)
                with m.If(tail_ok):
                    begin()
                with m.If(pass_end & adv & s1_final & ~s1_tail):
                    with m.If((cnt_after != 0) | pushed):
                        finish()
                    with m.Else():
                        m.next = "NOTAP"
            with m.State("NOTAP"):
                m.d.comb += self.waiting.eq(1)
                with m.If(self.resolve):
                    with m.If(self.need):
                        m.next = "SKIP"
                    with m.Else():
                        finish(verdict=True)
            with m.State("SKIP"):                   # no tap: a skip bundle releases the row
                with m.If(can_push):
                    push_skip()
                    finish()
            with m.State("FLUSH"):
                with m.If(~held_valid):
                    finish()
                with m.Elif(out_free):
                    m.d.comb += [wr_en.eq(1), wr_data.eq(held), wr_data.eot.eq(1)]
                    m.d.sync += held_valid.eq(0)
                    finish()
        return m


class _RowUnit(wiring.Component):
    """Walks the tiles and the operand rows of PE row ``i``; drives its x emitter and its tap
    generators."""

    def __init__(self, geo, i, rows, cols, k_max):
        self._geo, self._i, self._rows, self._cols = geo, i, rows, cols
        self._k_max = k_max
        super().__init__({
            "go": In(1), "busy": Out(1),
            "xe_start": Out(1), "xe_base": Out(len(geo.op_base)), "xe_busy": In(1),
            "xe_free": In(1),
            "tg_start": Out(1), "tg_op": Out(2), "b": Out(_DIM), "a": Out(_DIM),
            "r": Out(_DIM), "lo": Out(_WIDE), "resolve": Out(1), "need": Out(1),
            "tg_busy": In(cols), "tg_done": In(cols), "tg_ending": In(cols), "tg_tail": In(cols),
            "tg_found": In(cols),
            "tg_waiting": In(cols),
        })

    def elaborate(self, platform):
        m = Module()
        g, R, C = self._geo, self._rows, self._cols
        # The walker runs ahead of the row FSM: it steps (b, a, r) in C order, one row per
        # cycle, and parks on the next row of this PE row (``nxt``) until the FSM takes it,
        # so rows of other PE rows cost no cycle of the FSM.
        ib, ia, ir = Signal(_DIM), Signal(_DIM), Signal(_DIM)       # the walk position
        nb, na, nr, nxt = Signal(_DIM), Signal(_DIM), Signal(_DIM), Signal()
        fb, fa, fr = Signal(_DIM), Signal(_DIM), Signal(_DIM)       # first row of mine
        have_first, tile_any, x_started = Signal(), Signal(), Signal()
        walk_done = ib == g.batch
        key = Signal(_WIDE + _DIM)
        # interleaved dealing: FP/BP channel fastest, WG y fastest (gen/mapper/array.py)
        m.d.comb += key.eq(Mux(g.wg, (ib * g.a_n + ia) * g.rn + ir, (ib * g.rn + ir) * g.a_n + ia))
        mine = (key % R) == self._i if R > 1 else Const(1)
        # rows without a possible tap in the tile are dropped by the walker (no scan)
        reach = _row_reach(m, g, ib, ia, ir, self.lo, self._k_max)
        gens_idle = ~self.tg_busy.any()
        # every generator is idle or ends its operation this cycle (it takes a start then)
        gens_free = (~self.tg_busy | self.tg_done | self.tg_tail).all()
        # every generator has finished its scan (idle, or waiting for the row's verdict)
        # (or ends its scan this cycle: ``tg_found`` then includes its last candidate)
        # or issues the last candidate of a row it has a tap for (``tg_tail``)
        settled = (~self.tg_busy | self.tg_waiting | self.tg_ending | self.tg_tail).all()
        m.d.comb += self.xe_base.eq(g.op_base + ((self.b * g.a_n + self.a) * g.rn + self.r)
                                    * g.lin)
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        walking = Signal()

        with m.If(walking & ~nxt & ~walk_done):
            m.d.sync += ir.eq(ir + 1)
            with m.If(ir == g.rn - 1):
                m.d.sync += [ir.eq(0), ia.eq(ia + 1)]
                with m.If(ia == g.a_n - 1):
                    m.d.sync += [ia.eq(0), ib.eq(ib + 1)]
            with m.If(mine & reach):
                m.d.sync += [nb.eq(ib), na.eq(ia), nr.eq(ir), nxt.eq(1)]
            with m.If(mine):
                with m.If(~have_first):
                    m.d.sync += [fb.eq(ib), fa.eq(ia), fr.eq(ir), have_first.eq(1)]

        def reset_walk():
            m.d.sync += [ib.eq(0), ia.eq(0), ir.eq(0), nxt.eq(0), tile_any.eq(0)]

        def start_row():
            # the generators read (b, a, r) from the cycle after their start on
            m.d.comb += [self.tg_start.eq(1), self.tg_op.eq(_EMIT)]
            m.d.sync += [self.b.eq(nb), self.a.eq(na), self.r.eq(nr), nxt.eq(0),
                         x_started.eq(0)]
            m.next = "ROW_SCAN"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    reset_walk()
                    m.d.sync += [self.lo.eq(0), have_first.eq(0), busy.eq(1), walking.eq(1)]
                    m.next = "WALK"
            with m.State("WALK"):
                with m.If(nxt & gens_free):
                    start_row()
                with m.Elif(walk_done & ~nxt & gens_idle & ~self.xe_busy):
                    m.next = "TEND"
            with m.State("ROW_SCAN"):
                # the row is streamed as soon as one PE has a tap for it; its x beats start
                # then, alongside the bundles
                found = self.tg_found.any()
                with m.If(found & ~x_started & self.xe_free):
                    m.d.comb += self.xe_start.eq(1)
                    m.d.sync += [x_started.eq(1), tile_any.eq(1)]
                with m.If(settled & (x_started | self.xe_free | ~found)):
                    # the verdict: generators without a tap skip (found) or drop the row
                    m.d.comb += [self.resolve.eq(1), self.need.eq(found)]
                    with m.If(nxt & gens_free):
                        start_row()             # the next row's scan starts at once
                    with m.Else():
                        m.next = "WALK"
            with m.State("TEND"):
                with m.If(tile_any):
                    m.next = "FLUSH"
                with m.Else():
                    # no row needed in this tile: the first row of mine (or row (0, 0, 0)
                    # when this PE row has none) ends the tile as a skip row
                    m.d.sync += [self.b.eq(Mux(have_first, fb, 0)),
                                 self.a.eq(Mux(have_first, fa, 0)),
                                 self.r.eq(Mux(have_first, fr, 0))]
                    m.next = "SKIP"
            with m.State("SKIP"):
                m.d.comb += [self.tg_start.eq(1), self.tg_op.eq(_SKIP), self.xe_start.eq(1)]
                m.next = "SKIP_WAIT"
            with m.State("SKIP_WAIT"):
                with m.If(gens_idle & ~self.xe_busy):
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.comb += [self.tg_start.eq(1), self.tg_op.eq(_FLUSH)]
                m.next = "FLUSH_WAIT"
            with m.State("FLUSH_WAIT"):
                with m.If(gens_idle):
                    m.d.sync += self.lo.eq(self.lo + g.per)
                    reset_walk()
                    with m.If(self.lo + g.per >= g.total):
                        m.d.sync += [busy.eq(0), walking.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "WALK"
        return m


class _DrainUnit(wiring.Component):
    """Column ``j``'s drain commands: one per tile, ``{base 0, count, raw 1, last 1}``
    (``count`` = the tile's output rows x ``Lout``; WG: ``Lout = 1``, words)."""

    def __init__(self, geo, layout):
        self._geo = geo
        super().__init__({"go": In(1), "busy": Out(1), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        g = self._geo
        lo = Signal(_WIDE)
        run = Signal()
        rows = Mux(g.total - lo < g.per, g.total - lo, g.per)
        m.d.comb += self.busy.eq(run | self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(run & (~self.o.valid | self.o.ready)):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.base.eq(0),
                         self.o.payload.count.eq(rows * g.lout), self.o.payload.raw.eq(1),
                         self.o.payload.last.eq(1), lo.eq(lo + g.per)]
            with m.If(lo + g.per >= g.total):
                m.d.sync += run.eq(0)
        with m.If(self.go):
            m.d.sync += [run.eq(1), lo.eq(0)]
        return m


class _DenseUnit(wiring.Component):
    """WG: column ``j``'s scratchpad image ``x[:, c % cols == j]`` (``(b, cl, h, w)`` order,
    channels past ``Cin`` as zeros, ``last`` on the final word), sent to the ``rows`` PEs of
    the column at once (a fork: each stream takes the beat in its own cycle; the next beat
    waits for all)."""

    def __init__(self, geo, j, cols, rows, layout, addr_width, data_width):
        self._geo, self._j, self._cols, self._rows = geo, j, cols, rows
        self._aw = addr_width
        super().__init__({
            "go": In(1), "busy": Out(1),
            "rd": Out(read_signature(addr_width, signed(data_width))),
            "o": Out(stream.Signature(layout)).array(rows),
        })

    def elaborate(self, platform):
        m = Module()
        g, R = self._geo, self._rows
        b, cl, h, w = Signal(_DIM), Signal(_DIM), Signal(_DIM), Signal(_DIM)
        run = Signal()
        c = Signal(_WIDE)
        m.d.comb += c.eq(cl * self._cols + self._j)
        real = c < g.o_n
        final = (w == g.win - 1) & (h == g.ro - 1) & (cl == g.ocl - 1) & (b == g.batch - 1)
        s1_valid, s1_real, s1_last = Signal(), Signal(), Signal()
        valid = Signal()
        payload = Signal.like(self.o[0].payload)
        sent = Signal(R)
        taken = Signal(R)
        for k in range(R):
            m.d.comb += [self.o[k].valid.eq(valid & ~sent[k]), self.o[k].payload.eq(payload),
                         taken[k].eq(sent[k] | self.o[k].ready)]
        out_free = ~valid | taken.all()
        adv = ~(s1_valid & ~out_free)
        m.d.comb += [self.rd.addr.eq(g.x_base + ((b * g.o_n + c) * g.ro + h) * g.win + w),
                     self.rd.en.eq(run & adv & real),
                     self.busy.eq(run | s1_valid | valid)]
        with m.If(valid):
            with m.If(taken.all()):
                m.d.sync += [valid.eq(0), sent.eq(0)]
            with m.Else():
                m.d.sync += sent.eq(taken)
        with m.If(adv):
            m.d.sync += [s1_valid.eq(run), s1_real.eq(real), s1_last.eq(final)]
            with m.If(run):
                m.d.sync += w.eq(w + 1)
                with m.If(w == g.win - 1):
                    m.d.sync += [w.eq(0), h.eq(h + 1)]
                    with m.If(h == g.ro - 1):
                        m.d.sync += [h.eq(0), cl.eq(cl + 1)]
                        with m.If(cl == g.ocl - 1):
                            m.d.sync += [cl.eq(0), b.eq(b + 1)]
                with m.If(final):
                    m.d.sync += run.eq(0)
            with m.If(s1_valid):
                m.d.sync += [valid.eq(1), sent.eq(0),
                             payload.value.eq(Mux(s1_real, self.rd.data, 0)),
                             payload.last.eq(s1_last)]
        with m.If(self.go & g.wg):
            m.d.sync += [run.eq(1), b.eq(0), cl.eq(0), h.eq(0), w.eq(0)]
        return m


class ArrayMapper(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, rows=2, cols=2, macs_per_pe=2, data_width=16, k_max=7,
                 max_row_len=64, psum_buf_depth=1024, act_buf_depth=1024, addr_width=20):
        self._rows = check_int("rows", rows, 1, 64)
        self._cols = check_int("cols", cols, 1, 64)
        self._lanes = check_int("macs_per_pe", macs_per_pe, 1, 16)
        self._dw = check_int("data_width", data_width, 2, 32)
        self._k_max = check_int("k_max", k_max, 1, 11)
        self._max_row_len = check_int("max_row_len", max_row_len, 2, 4096)
        self._psum = check_int("psum_buf_depth", psum_buf_depth, 2, 1 << 20)
        self._act = check_int("act_buf_depth", act_buf_depth, 2, 1 << 20)
        self._aw = check_int("addr_width", addr_width, 4, 32)
        col_width = max(1, (max_row_len - 1).bit_length())
        self.layouts = {
            "x": sparse_elem_layout(data_width, col_width),
            "taps": pe_taps_layout(macs_per_pe, data_width, k_max, psum_buf_depth, act_buf_depth),
            "dense": pe_dense_layout(data_width),
            "drain": pe_drain_layout(psum_buf_depth),
        }
        R, C, aw = rows, cols, addr_width
        super().__init__({
            "job": In(job_layout(aw)), "start": In(1), "busy": Out(1),
            "mode": Out(2), "stride2": Out(1), "pad": Out(range(k_max + 1)),
            "out_len": Out(range(max_row_len + 1)), "in_len": Out(range(max_row_len + 1)),
            "skip_zero": Out(1), "raw": Out(1),
            "act_rd": Out(read_signature(aw, signed(data_width))).array(R),
            "w_rd": Out(read_signature(aw, signed(data_width))).array(R, C),
            "m_rd": Out(read_signature(aw, unsigned(1))).array(R, C),
            "x": Out(stream.Signature(self.layouts["x"])).array(R),
            "taps": Out(stream.Signature(self.layouts["taps"])).array(R, C),
            "drain": Out(stream.Signature(self.layouts["drain"])).array(C),
            "dense_rd": Out(read_signature(aw, signed(data_width))).array(C),
            "dense": Out(stream.Signature(self.layouts["dense"])).array(R, C),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)

    @property
    def params(self) -> dict:
        """The constructor parameters (stamped into the Verilog header)."""
        return {"macs_per_pe": self._lanes, "data_width": self._dw, "k_max": self._k_max,
                "max_row_len": self._max_row_len, "psum_buf_depth": self._psum,
                "act_buf_depth": self._act, "addr_width": self._aw}

    @classmethod
    def from_config(cls, cfg, **overrides):
        p = dict(rows=cfg.pe_rows, cols=cfg.pe_cols, macs_per_pe=cfg.macs_per_pe,
                 data_width=cfg.data_width, k_max=cfg.k_max, max_row_len=cfg.max_row_len,
                 psum_buf_depth=cfg.psum_buf_depth, act_buf_depth=cfg.act_buf_depth)
        p.update(overrides)
        return cls(**p)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        g = _Geometry(self._aw)
        job = Signal(job_layout(self._aw))
        units = []
        tap_units = []
        for i in range(R):
            ru = _RowUnit(g, i, R, C, self._k_max)
            xe = _XEmitter(self._aw, self._dw, len(self.x[i].payload.col))
            m.submodules[f"row{i}"], m.submodules[f"x{i}"] = ru, xe
            m.d.comb += [xe.start.eq(ru.xe_start), xe.base.eq(ru.xe_base), xe.lin.eq(g.lin),
                         ru.xe_busy.eq(xe.busy), ru.xe_free.eq(xe.free)]
            wiring.connect(m, xe.rd, wiring.flipped(self.act_rd[i]))
            wiring.connect(m, xe.o, wiring.flipped(self.x[i]))
            for j in range(C):
                tg = _TapGen(g, j, C, self._lanes, self.layouts["taps"], self._aw, self._dw,
                             self._k_max)
                m.submodules[f"taps{i}_{j}"] = tg
                tap_units.append(tg)
                m.d.comb += [tg.start.eq(ru.tg_start), tg.op.eq(ru.tg_op), tg.b.eq(ru.b),
                             tg.a.eq(ru.a), tg.r.eq(ru.r), tg.lo.eq(ru.lo),
                             ru.tg_busy[j].eq(tg.busy), ru.tg_done[j].eq(tg.done),
                             ru.tg_found[j].eq(tg.found_now), ru.tg_ending[j].eq(tg.ending),
                             ru.tg_tail[j].eq(tg.tail),
                             ru.tg_waiting[j].eq(tg.waiting), tg.resolve.eq(ru.resolve),
                             tg.need.eq(ru.need)]
                wiring.connect(m, tg.w_rd, wiring.flipped(self.w_rd[i][j]))
                wiring.connect(m, tg.m_rd, wiring.flipped(self.m_rd[i][j]))
                wiring.connect(m, tg.o, wiring.flipped(self.taps[i][j]))
            units.append(ru)
        for j in range(C):
            du = _DrainUnit(g, self.layouts["drain"])
            m.submodules[f"drain{j}"] = du
            wiring.connect(m, du.o, wiring.flipped(self.drain[j]))
            units.append(du)
            dn = _DenseUnit(g, j, C, R, self.layouts["dense"], self._aw, self._dw)
            m.submodules[f"dense{j}"] = dn
            wiring.connect(m, dn.rd, wiring.flipped(self.dense_rd[j]))
            for i in range(R):
                wiring.connect(m, dn.o[i], wiring.flipped(self.dense[i][j]))
            units.append(dn)

        go = Signal()
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        for u in units:
            m.d.comb += u.go.eq(go)
        fp = job.mode == Phase.FP
        wg = job.mode == Phase.WG
        ho = Signal(_DIM)
        wo = Signal(_DIM)
        # output geometry; S in {1, 2}: the division is a shift
        m.d.comb += [ho.eq(((job.h + 2 * job.pad - job.kh) >> job.stride2) + 1),
                     wo.eq(((job.w + 2 * job.pad - job.kw) >> job.stride2) + 1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [job.eq(self.job), busy.eq(1)]
                    m.next = "GEO1"
            with m.State("GEO1"):
                khkw = job.kh * job.kw
                m.d.sync += [
                    g.fp.eq(fp), g.stride2.eq(job.stride2), g.pad.eq(job.pad),
                    g.kh.eq(job.kh), g.kw.eq(job.kw), g.batch.eq(job.batch),
                    g.a_n.eq(Mux(fp, job.cin, job.cout)), g.rn.eq(Mux(fp, job.h, ho)),
                    g.lin.eq(Mux(fp, job.w, wo)), g.o_n.eq(Mux(fp, job.cout, job.cin)),
                    g.ro.eq(Mux(fp, ho, job.h)), g.lout.eq(Mux(fp, wo, Mux(wg, 1, job.w))),
                    g.wg.eq(wg), g.win.eq(job.w), g.x_base.eq(job.act_base),
                    g.so.eq(Mux(fp, job.cin * khkw, khkw)),
                    g.sa.eq(Mux(fp, khkw, job.cin * khkw)),
                    g.op_base.eq(Mux(fp, job.act_base, job.grad_base)),
                    g.w_base.eq(job.w_base), g.m_base.eq(job.m_base),
                    self.mode.eq(job.mode), self.stride2.eq(job.stride2), self.pad.eq(job.pad),
                    self.out_len.eq(Mux(fp | wg, wo, job.w)), self.in_len.eq(job.w),
                    self.skip_zero.eq(1), self.raw.eq(job.raw),
                ]
                m.next = "GEO2"
            with m.State("GEO2"):
                m.d.sync += [g.ocl.eq((g.o_n + C - 1) // C),
                             g.per.eq(self._psum // g.lout)]
                m.next = "GEO3"
            with m.State("GEO3"):
                kb = self._k_max.bit_length()    # kh, kw <= k_max: products in logic
                okk = small_mul(small_mul(g.ocl, g.kh, kb), g.kw, kb)
                m.d.sync += [g.planes.eq(g.batch * g.ocl),
                             g.okk.eq(okk),
                             g.total.eq(Mux(g.wg, g.a_n * okk, g.ro * g.batch * g.ocl))]
                m.next = "GO"
            with m.State("GO"):
                m.d.comb += go.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                # done when every unit is idle and every stream register is empty
                streams = [s.valid for s in [*self.x, *self.drain]]
                streams += [self.taps[i][j].valid for i in range(R) for j in range(C)]
                streams += [self.dense[i][j].valid for i in range(R) for j in range(C)]
                pend = [tg.pending for tg in tap_units]
                with m.If(~go & ~_any([u.busy for u in units] + streams + pend)):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
        return m


def _any(values):
    v = Const(0)
    for x in values:
        v = v | x
    return v
