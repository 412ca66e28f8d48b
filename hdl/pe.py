"""Dual-sparse 1-D convolution PE: skips operand zeros *and* N:M-pruned weight taps.

The PE computes sums of 1-D row primitives (architecture brief, section 5) in the three
training phases. One *operand row* (an activation row in FP, an output-gradient row in BP and
WG) arrives compressed as ``(value, col, last)`` beats and is buffered; ``lanes`` multipliers
then walk that buffered row in lockstep, each lane applying a different kernel tap ("tap
bundle" of up to ``lanes`` taps, sent by the offline mapper :mod:`sparseforge.gen.mapper.pe`),
and each lane accumulates into its **own** partial-sum bank, so lanes never conflict; the banks
are summed when the results are drained. Only non-zero operand entries are visited and only
kept (N:M) taps are sent, so the busy cycles follow ``nnz(row) x kept taps / lanes``.

Design choice (*ours*, see ``docs/pe.md``): this is an input-stationary *scatter* engine in the
spirit of SCNN (every non-zero operand x every kept tap, products scattered to per-lane
accumulator banks), restricted to 1-D rows so the scatter address is a simple affine function
of the column and no crossbar or bank arbitration is needed: a lane owns its bank. SparTen's
output-stationary bitmap matching would need a prefix-sum/priority encoder per output and does
not serve the WG phase's dense reduction; SparseTrain's PE skips only operand zeros.

Parameters
----------
data_width : int, [2, 32]
    Operand width (signed two's complement fixed point).
acc_width : int, [2 * data_width, 64]
    Exact accumulator width of the partial-sum banks.
macs_per_pe : int, [1, 16]
    Multiplier lanes (taps per bundle); the configuration field of the same name.
k_max : int, [1, K_MAX_LIMIT = 11]
    Longest kernel row; tap indices ``kw < k_max``; padding ``pad <= k_max``.
max_row_len : int, [2, 4096]
    Longest operand (and output) row; column indices are ``clog2(max_row_len)`` bits.
psum_buf_depth : int, [2, 1 << 20]
    Words per partial-sum bank (there are ``lanes`` banks of ``acc_width`` bits).
act_buf_depth : int, [2, 1 << 20]
    Words of the dense activation scratchpad (WG operand ``X``).
frac_bits : int, [0, data_width - 1]
    Fractional bits of the write-back rule.

Ports
-----
x : In(stream.Signature(sparse_elem_layout(data_width, col_width)))
    Operand rows, compressed ``(value, col, last)``; ``last`` ends a row. Columns strictly
    increase within a row. With ``skip_zero = 1`` zero values are not stored (the compressor's
    always-emitted zero last beat costs one load cycle and nothing else).
taps : In(stream.Signature(taps_layout))
    One beat = one tap bundle for the operand row being processed: ``slots[lanes]`` of
    ``{value (weight; unused in WG), kw, base (psum address of the destination row; the
    accumulator address in WG), rowbase (WG: dense-scratchpad address of the X row), en}``
    and ``parity`` (stride-2 FP: which column-parity sub-list the bundle walks), ``last``
    (last bundle of this operand row: the row's buffer is released), ``eot`` (end of tile:
    last bundle of the tile, implies ``last``; the engine then waits for drain commands) and
    ``eoc`` (chunked WG, on a row's last bundle: the last bundle that reads the current
    scratchpad image; the engine then holds WG bundles until the next load has ended). A
    bundle with no enabled slot is a 1-cycle *skip* beat (used to release a row with no taps).
dense : In(stream.Signature(dense_layout))
    ``{value, last}``: X values written to the dense scratchpad at consecutive addresses from
    0; ``last`` ends the load (the next load starts at address 0 again). Load it before the WG
    job: the engine does not start a WG bundle while a load is in progress. ``dense.ready``
    (a register) is 0 from a load's ``last`` beat until the image is released, 3 cycles after
    the last processing cycle of an ``eoc`` or ``eot`` bundle (its last scratchpad read is
    then issued): a reload offered early waits, and never overwrites a word still to be read
    (chunked WG: ``docs/pe.md``, "Chunked WG scratchpad").
drain : In(stream.Signature(drain_layout))
    ``{base, count, raw, last}``: after an ``eot``, read ``count`` (``0`` counts as 1)
    addresses from ``base`` in all banks, sum them, emit them on ``o`` and clear them to 0;
    ``raw`` selects the raw ``acc_width`` sum (for cross-PE reduction) or the write-back value
    (shift right by ``frac_bits``, round half to even, saturate to ``data_width``, sign-extended);
    ``last`` marks the tile's final drain command, after which the engine resumes.
o : Out(stream.Signature(out_layout))
    ``{value (signed acc_width), last (last beat of a drain command), end (last beat of the
    job)}``. Honours back-pressure.
mode : In(2)
    The layer phase, a :class:`~sparseforge.hdl.wire.Phase` value: ``FP`` (0), ``BP`` (1),
    ``WG`` (2). ``stride2`` (In(1): stride 2, else 1), ``pad`` (In(clog2(k_max + 1))),
    ``out_len`` (FP: output row length; BP: input-gradient row length), ``in_len`` (WG: X row
    length), ``skip_zero`` (In(1)): control inputs, registered inside the PE (it sees them one
    cycle later): set them at least one cycle before a job's first beat and hold them stable
    during the job.
cycles, busy_mac, stall_in, stall_out, nnz : Out(48)
    Performance counters, cleared by reset only, updated one cycle after the cycle they
    count (read them at least one cycle after a job). ``cycles``: cycles of a job (from the first
    cycle any of ``x``/``taps``/``drain`` is valid to the transfer of the job's ``end`` beat,
    inclusive). ``busy_mac``: valid products (summed over lanes). ``stall_in``: job cycles
    waiting for an input (no operand row buffered, no tap bundle, a WG dense load in progress,
    no drain command). ``stall_out``: job cycles with ``o`` back-pressured. ``nnz``: operand
    entries stored. Always ``cycles = proc + stall_in + stall_out + 10 + drained`` for one tile,
    with ``proc`` the engine's processing cycles (see the cycle formula below).
active : Out(1)
    A job is in progress.
error : Out(1)
    Sticky: an operand row overflowed its buffer (more than ``max_row_len`` stored entries, or
    more than ``ceil(max_row_len / 2)`` of one column parity in stride-2 FP), or a dense load
    ran past ``act_buf_depth`` without ``last``. Cleared by reset.

Arithmetic per product (lane ``l``, operand entry ``(a, col)``, slot ``(w, kw, base, rowbase)``,
``S`` the stride)::

    FP: t = col + pad - kw; valid iff t >= 0, S | t, t/S < out_len; bank[base + t/S] += a*w
    BP: t = col*S + kw - pad; valid iff 0 <= t < out_len;           bank[base + t]   += a*w
    WG: t = col*S + kw - pad; valid iff 0 <= t < in_len;            bank[base] += a*X[rowbase + t]

Invalid products are squashed (no write, not counted). Accumulation is exact in
``acc_width`` bits; the mapper rejects layers whose worst case could overflow.

Cycle formula (exact; implemented by :func:`sparseforge.gen.mapper.pe.cycles`)
--------------------------------------------------------------------------------
Per operand row ``r``: ``L_r`` = its beats (load cycles, one beat per cycle);
``n_r[p]`` = stored entries of sub-list ``p`` (``p`` = column parity in stride-2 FP, else 0);
``P_r = sum over its bundles b of (max(n_r[p_b], 1) if b has an enabled slot else 1)``.
The buffer is double-buffered: with ``E_{-1} = E_{-2} = 0`` and ``F_{-1} = 0``::

    A_r = max(F_{r-1}, E_{r-2})   # load start: previous load done and this half released
    F_r = A_r + L_r               # row r fully buffered
    S_r = max(F_r, E_{r-1})       # processing start
    E_r = S_r + P_r               # processing end

(chunked WG: a row that starts another image's run waits for its reload, ``S_r >= E_{r-1} +
2 + |image|``, :data:`sparseforge.gen.mapper.pe.RELOAD_GAP`), and the job takes ``cycles =
E_last + 5 + 1 + C + 4`` (``C`` = drained addresses): 5 cycles
of engine pipeline flush, 1 cycle to register each drain command, one cycle per drained
address, 4 cycles of drain pipeline (one command per tile: ``E_last + 5 + 1 + C + 4``).
``stall_in = cycles - sum P_r - C - 10`` with ideal (never idle, never back-pressured)
streams. Several tiles back to back (ping-pong psum halves): :func:`sparseforge.gen.mapper.pe.
cycles_tiles`.

Timing
------
Engine pipeline: S0 operand-buffer read, S1r read-data register (plus the column-only and
slot-only parts of the address arithmetic), S1 address/validity (one compare or one add per
result), S2 dense-scratchpad read, S3 multiplier operands registered + bank read, S4 multiply
+ old value registered (forwarded from S5 when S5 writes the same address), S5 add + bank
write (the bank read port is transparent for the write port, so back-to-back accumulations
into one address need no stall). Operand-buffer writes are registered (one cycle after the
beat; the read port is transparent for them). Drain: a command is registered when accepted,
reads start the next cycle, 1 read per cycle, first output 4 cycles after the first read
(read data registered, lane sum registered, write-back registered). Throughput: ``lanes``
products per cycle. ``x.ready`` is registered state (a buffer half is free); ``taps.ready`` is
a register too (2-entry skid buffers, :class:`~sparseforge.hdl.skid.SkidBuffer`, hold the next
bundles and, in lockstep, their accept flags; a bundle reaches the engine one cycle after its
transfer); ``drain.ready`` is registered state too; ``o.valid`` is a register and never
depends on ``o.ready``; ``o.payload`` is held while ``o.valid & ~o.ready``.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.arith import tree, writeback
from sparseforge.hdl.layouts import sparse_elem_layout
from sparseforge.hdl.skid import SkidBuffer
from sparseforge.hdl.wire import Phase

__all__ = ["PE", "pe_slot_layout", "pe_taps_layout", "pe_dense_layout", "pe_drain_layout",
           "pe_out_layout", "pe_params", "PE_PARAMS", "COUNTER_WIDTH",
           "K_MAX_LIMIT"]

COUNTER_WIDTH = 48
#: The longest kernel row a PE (and so a configuration) accepts: AlexNet's 11x11 first layer is
#: the longest of the target networks. One limit for the PE and ``AcceleratorConfig.k_max``.
K_MAX_LIMIT = 11


def _index_bits(n: int) -> int:
    """Bits of an index 0 .. n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def pe_slot_layout(data_width, k_max, psum_buf_depth, act_buf_depth) -> data.StructLayout:
    """One lane's slot of a tap bundle."""
    return data.StructLayout({
        "value": signed(data_width),
        "kw": unsigned(_index_bits(k_max)),
        "base": unsigned(_index_bits(psum_buf_depth)),
        "rowbase": unsigned(_index_bits(act_buf_depth)),
        "en": unsigned(1),
    })


def pe_taps_layout(macs_per_pe, data_width, k_max, psum_buf_depth,
                   act_buf_depth) -> data.StructLayout:
    """A tap bundle: ``slots[macs_per_pe]`` (slot 0 in the least significant bits), then flags
    (``eoc`` last: it was added after the others, so their bit positions did not move)."""
    return data.StructLayout({
        "slots": data.ArrayLayout(pe_slot_layout(data_width, k_max, psum_buf_depth, act_buf_depth),
                                  macs_per_pe),
        "parity": unsigned(1),
        "last": unsigned(1),
        "eot": unsigned(1),
        "eoc": unsigned(1),
    })


def pe_dense_layout(data_width) -> data.StructLayout:
    return data.StructLayout({"value": signed(data_width), "last": unsigned(1)})


def pe_drain_layout(psum_buf_depth) -> data.StructLayout:
    return data.StructLayout({
        "base": unsigned(_index_bits(psum_buf_depth)),
        "count": unsigned(psum_buf_depth.bit_length()),
        "raw": unsigned(1),
        "last": unsigned(1),
    })


def pe_out_layout(acc_width) -> data.StructLayout:
    return data.StructLayout({"value": signed(acc_width), "last": unsigned(1), "end": unsigned(1)})


#: The PE's parameters: each is the ``AcceleratorConfig`` field of the same name.
PE_PARAMS = ("data_width", "acc_width", "macs_per_pe", "k_max", "max_row_len", "psum_buf_depth",
             "act_buf_depth", "frac_bits")


def pe_params(cfg) -> dict:
    """The :class:`PE` constructor arguments of an ``AcceleratorConfig`` (same names)."""
    return {name: getattr(cfg, name) for name in PE_PARAMS}


class PE(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, data_width: int = 16, acc_width: int = 48, macs_per_pe: int = 2,
                 k_max: int = 7, max_row_len: int = 64, psum_buf_depth: int = 256,
                 act_buf_depth: int = 256, frac_bits: int = 8):
        self._dw = check_int("data_width", data_width, 2, 32)
        self._aw = check_int("acc_width", acc_width, 2 * data_width, 64)
        self._lanes = check_int("macs_per_pe", macs_per_pe, 1, 16)
        self._k_max = check_int("k_max", k_max, 1, K_MAX_LIMIT)
        self._max_row_len = check_int("max_row_len", max_row_len, 2, 4096)
        self._psum_depth = check_int("psum_buf_depth", psum_buf_depth, 2, 1 << 20)
        self._dense_depth = check_int("act_buf_depth", act_buf_depth, 2, 1 << 20)
        self._frac_bits = check_int("frac_bits", frac_bits, 0, data_width - 1)
        self._col_width = _index_bits(max_row_len)
        # derived geometry of the hardware
        self._rh = (max_row_len + 1) // 2     # capacity of one operand parity sub-list
        self._half = 2 * self._rh             # words per operand-buffer half (>= max_row_len)
        self._pa_w = _index_bits(psum_buf_depth)  # psum address bits
        self._da_w = _index_bits(act_buf_depth)  # dense-scratchpad address bits
        # signed width of t = col*2 + kw - pad (and col + pad - kw)
        self._t_w = (2 * max_row_len + 2 * k_max + 2).bit_length() + 1
        super().__init__({
            "x": In(stream.Signature(sparse_elem_layout(data_width, self._col_width))),
            "taps": In(stream.Signature(self.taps_layout)),
            "dense": In(stream.Signature(self.dense_layout)),
            "drain": In(stream.Signature(self.drain_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "mode": In(2),
            "stride2": In(1),
            "pad": In(range(k_max + 1)),
            "out_len": In(range(max_row_len + 1)),
            "in_len": In(range(max_row_len + 1)),
            "skip_zero": In(1),
            "cycles": Out(COUNTER_WIDTH),
            "busy_mac": Out(COUNTER_WIDTH),
            "stall_in": Out(COUNTER_WIDTH),
            "stall_out": Out(COUNTER_WIDTH),
            "nnz": Out(COUNTER_WIDTH),
            "active": Out(1),
            "error": Out(1),
        })

    # -- read-only parameters ----------------------------------------------------------------
    data_width = property(lambda self: self._dw)
    acc_width = property(lambda self: self._aw)
    macs_per_pe = property(lambda self: self._lanes)
    k_max = property(lambda self: self._k_max)
    max_row_len = property(lambda self: self._max_row_len)
    psum_buf_depth = property(lambda self: self._psum_depth)
    act_buf_depth = property(lambda self: self._dense_depth)
    frac_bits = property(lambda self: self._frac_bits)
    col_width = property(lambda self: self._col_width)

    @property
    def x_layout(self):
        return sparse_elem_layout(self._dw, self._col_width)

    @property
    def taps_layout(self):
        return pe_taps_layout(self._lanes, self._dw, self._k_max, self._psum_depth,
                              self._dense_depth)

    @property
    def dense_layout(self):
        return pe_dense_layout(self._dw)

    @property
    def drain_layout(self):
        return pe_drain_layout(self._psum_depth)

    @property
    def out_layout(self):
        return pe_out_layout(self._aw)

    @classmethod
    def from_config(cls, cfg, **overrides):
        """The PE of an :class:`~sparseforge.gen.config.AcceleratorConfig`."""
        p = pe_params(cfg)
        p.update(overrides)
        return cls(**p)

    # -- hardware ------------------------------------------------------------------------------
    def elaborate(self, platform):
        """The PE as its stages, in data-flow order. The order also sets priorities: several
        stages assign the same registers (``full``, ``fresh``, ``pend``, ``error``) and the
        later assignment wins, so the engine's release of an operand half comes after the load
        side and the drain's release of a psum half after the engine's claim."""
        m = Module()
        ctl = self._controls(m)
        ob = self._operand_buffer(m, ctl)
        dense = self._dense_scratchpad(m)
        banks = self._psum_banks(m)
        tq = self._tap_queue(m, ctl)
        seq = self._sequencer(m, ctl, ob, tq, dense)
        s2 = self._addresses(m, ctl, ob, seq)
        ln = self._lane_pipeline(m, ctl, s2, dense, banks)
        dc = self._drain_control(m, seq)
        self._bank_ports(m, banks, ln, dc)
        self._busy_counter(m, ln)
        ro = self._drain_readout(m, banks, dc)
        self._job_counters(m, tq, seq, dc, ro)
        return m

    def _controls(self, m):
        """The control inputs, registered: ``mode``, ``stride2``, ``pad``, ``out_len``,
        ``in_len``, ``skip_zero`` and the derived flags ``is_wg`` and ``split`` (stride-2 FP:
        the operand buffer is split by column parity). One cycle of latency."""
        # Registered once inside every PE (for Fmax): a control register shared by the PEs of
        # an array was the start of the ECP5 critical path, and the derived flags (``split``,
        # ``is_wg``) would otherwise add logic levels to the per-bundle accept loop. The
        # registers are reset-less (they follow the inputs through reset) and carry ``keep``:
        # the board flows keep every kept register as its own cell, so Yosys does not merge
        # the identical copies of the PEs back into one (see ``boards/ecp5.py``).
        def ctl(name, value, shape):
            r = Signal(shape, name=f"{name}_q", reset_less=True, attrs={"keep": 1})
            m.d.sync += r.eq(value)
            return r
        return SimpleNamespace(
            mode=ctl("mode", self.mode, 2),
            stride2=ctl("stride2", self.stride2, 1),
            pad=ctl("pad", self.pad, self.pad.shape()),
            out_len=ctl("out_len", self.out_len, self.out_len.shape()),
            in_len=ctl("in_len", self.in_len, self.in_len.shape()),
            skip_zero=ctl("skip_zero", self.skip_zero, 1),
            is_wg=ctl("is_wg", self.mode == Phase.WG, 1),
            split=ctl("split", (self.mode == Phase.FP) & self.stride2, 1),
        )

    def _operand_buffer(self, m, ctl):
        """The double-buffered operand row buffer and its load side (``x``, ``nnz``, the row
        overflow ``error``). Two halves of ``half`` words; with ``split`` each half holds two
        column-parity sub-lists of ``rh`` words. One beat per cycle. Returns the read port
        (address driven by the sequencer, data one cycle later), the half flags
        ``full``/``fresh``, the half being processed ``pr`` and, per (half, parity), the count
        registers ``cm1`` (count - 1) and ``cnz`` (count != 0)."""
        rh, half = self._rh, self._half
        skip_zero, split = ctl.skip_zero, ctl.split
        entry = data.StructLayout({"value": signed(self._dw), "col": unsigned(self._col_width)})
        opbuf = Memory(shape=entry, depth=2 * half, init=[])
        m.submodules.opbuf = opbuf
        op_wr = opbuf.write_port()
        # The write is registered (for Fmax: the load decision's LUTs sat beside the RAM, far
        # from the count registers they also drive). An entry is therefore written one cycle
        # after its beat; the only read that can meet it is the first read of a row whose last
        # stored entry came with its last beat, in the same cycle, which the transparent read
        # port serves with the new entry. No cycle count changes.
        op_rd = opbuf.read_port(transparent_for=(op_wr,))
        wr_en = Signal()
        wr_addr = Signal.like(op_wr.addr)
        wr_data = Signal(entry)
        m.d.comb += [op_wr.en.eq(wr_en), op_wr.addr.eq(wr_addr), op_wr.data.eq(wr_data)]

        full = Signal(2)
        ld = Signal()                     # half being loaded
        pr = Signal()                     # half being processed
        cnt_w = range(half + 1)
        cnt = [[Signal(cnt_w, name=f"cnt_h{h}_p{p}") for p in range(2)] for h in range(2)]
        # cnt - 1 and cnt != 0 kept as registers beside cnt (for Fmax: the engine's per-bundle
        # "last entry" test becomes an equality with a register, no adder in the loop)
        cnt_bits = Shape.cast(cnt_w).width
        cm1 = [[Signal(cnt_bits, init=(1 << cnt_bits) - 1, name=f"cm1_h{h}_p{p}")
                for p in range(2)] for h in range(2)]
        cnz = [[Signal(name=f"cnz_h{h}_p{p}") for p in range(2)] for h in range(2)]
        # cnt has reached the sub-list's capacity (a register, so the load path needs no
        # compare after the parity mux)
        cfl = [[Signal(name=f"cfl_h{h}_p{p}") for p in range(2)] for h in range(2)]

        # -- load side
        x = self.x
        ld_full = Mux(ld, full[1], full[0])
        m.d.comb += x.ready.eq(~ld_full)
        x_par = Signal()
        m.d.comb += x_par.eq(split & x.payload.col[0])
        # A released half is only marked ``fresh``; its counts are cleared by the load side
        # with the first beat of the next row (for Fmax: the engine's release decision then
        # drives 2 flip-flops instead of every count register of the half). The load side
        # reads a fresh half's counts as 0.
        fresh = Signal(2)
        ld_fresh = Mux(ld, fresh[1], fresh[0])
        ld_cnt = Signal(cnt_w)
        ld_full_p = Signal()
        with m.Switch(Cat(x_par, ld)):
            for h in range(2):
                for p in range(2):
                    with m.Case(p | (h << 1)):
                        m.d.comb += [ld_cnt.eq(Mux(ld_fresh, 0, cnt[h][p])),
                                     ld_full_p.eq(~ld_fresh & cfl[h][p])]
        cap = Mux(split, rh, half)
        x_take = x.valid & x.ready
        x_store = x_take & (~skip_zero | (x.payload.value != 0))
        m.d.sync += [
            wr_addr.eq(Mux(ld, half, 0) + Mux(x_par, rh, 0) + ld_cnt),
            wr_data.value.eq(x.payload.value),
            wr_data.col.eq(x.payload.col),
            wr_en.eq(0),
        ]
        with m.If(x_take & ld_fresh):      # the first beat of a row: the half starts empty
            for h in range(2):
                with m.If(ld == h):
                    m.d.sync += fresh[h].eq(0)
                    for p in range(2):
                        m.d.sync += [cnt[h][p].eq(0), cm1[h][p].eq(-1), cnz[h][p].eq(0),
                                     cfl[h][p].eq(0)]
        with m.If(x_store):
            with m.If(~ld_full_p):             # ld_cnt < cap
                m.d.sync += wr_en.eq(1)
                m.d.sync += self.nnz.eq(self.nnz + 1)
                with m.Switch(Cat(x_par, ld)):
                    for h in range(2):
                        for p in range(2):
                            with m.Case(p | (h << 1)):
                                m.d.sync += [cnt[h][p].eq(ld_cnt + 1),
                                             cm1[h][p].eq(ld_cnt), cnz[h][p].eq(1),
                                             cfl[h][p].eq(ld_cnt + 1 == cap)]
            with m.Else():
                m.d.sync += self.error.eq(1)
        with m.If(x_take & x.payload.last):
            m.d.sync += ld.eq(~ld)
            with m.If(ld):
                m.d.sync += full[1].eq(1)
            with m.Else():
                m.d.sync += full[0].eq(1)
        return SimpleNamespace(rd=op_rd, full=full, fresh=fresh, pr=pr, cm1=cm1, cnz=cnz,
                               cnt_w=cnt_w)

    def _dense_scratchpad(self, m):
        """The WG scratchpad ``X`` and its load side (``dense``, the overrun ``error``).
        Returns ``lanes`` read ports (address in S2, data in S3) and ``loading`` (a load is in
        progress: the engine holds WG bundles)."""
        dmem = Memory(shape=signed(self._dw), depth=self._dense_depth, init=[])
        m.submodules.dense_mem = dmem
        d_wr = dmem.write_port()
        d_rds = [dmem.read_port() for _ in range(self._lanes)]
        dptr = Signal(self._da_w)
        # ``own``: the scratchpad holds an image the engine may still read: set by a load's
        # last beat, cleared by the sequencer RELOAD_GAP cycles after an ``eoc``/``eot`` bundle
        # (``dense.ready`` is this register, inverted: a load never overwrites words a bundle
        # received before the load's chunk end still reads).
        own = Signal()
        take = Signal()
        m.d.comb += [
            self.dense.ready.eq(~own),
            take.eq(self.dense.valid & ~own),
            d_wr.addr.eq(dptr),
            d_wr.data.eq(self.dense.payload.value),
            d_wr.en.eq(take),
        ]
        # dense_loading: the engine holds WG bundles -- a load is in progress (dptr != 0), or an
        # ``eoc`` bundle consumed the image and the next load has not ended (the sequencer sets
        # it); a register (for Fmax: it gates the engine)
        dense_loading = Signal()
        with m.If(take & self.dense.payload.last):
            m.d.sync += own.eq(1)
        with m.If(take):
            with m.If(self.dense.payload.last):
                m.d.sync += [dptr.eq(0), dense_loading.eq(0)]
            with m.Elif(dptr == self._dense_depth - 1):
                m.d.sync += [dptr.eq(0), self.error.eq(1), dense_loading.eq(0)]
            with m.Else():
                m.d.sync += [dptr.eq(dptr + 1), dense_loading.eq(1)]
        return SimpleNamespace(rds=d_rds, loading=dense_loading, own=own)

    def _psum_banks(self, m):
        """``banks[lane][half] = (read port, write port)``, ``psum_buf_depth`` words of
        ``acc_width`` bits each; the read port is transparent for the write port."""
        # Ping-pong (*ours*): every lane has two banks (halves 0 and 1), each a simple 1R1W
        # memory. Tile t accumulates into half t % 2 while the drain reads and clears the other
        # half, so a tile's drain runs under the next tile's processing. Each half's ports are
        # muxed between the engine and the drain; they never want the same half at once (the
        # engine does not start a tile in a half that still holds an undrained tile).
        banks = []
        for l in range(self._lanes):
            pair = []
            for h in range(2):
                mem = Memory(shape=signed(self._aw), depth=self._psum_depth, init=[])
                m.submodules[f"bank{l}_{h}"] = mem
                wr = mem.write_port()
                rd = mem.read_port(transparent_for=(wr,))
                pair.append((rd, wr))
            banks.append(pair)
        return banks

    def _tap_queue(self, m, ctl):
        """The tap-bundle input queue. Returns ``head`` (the flags queue's output stream:
        ``valid``, ``ready`` and the head bundle's accept flags ``any_en``, ``par``,
        ``row_end``, ``eot``) and ``bundle`` (the head bundle, in lockstep). Latency 1 cycle,
        throughput 1 bundle per cycle."""
        # A skid buffer in front of the engine (*ours*, for Fmax): the engine's per-bundle
        # accept decision (row done? buffer released?) then starts from local registers, not
        # from a producer's register somewhere else on the die, and ``taps.ready`` is a
        # register, so the decision never reaches the producer. The flags the decision needs
        # are computed on the way in (``par`` uses the registered ``split``, stable during a
        # job). One cycle of latency, which the first operand row's load (>= 1 cycle) hides;
        # full rate.
        # The bundle goes into a ring-style queue (wide; its consumers are pipelined), its
        # accept flags into a shift-style queue in lockstep (narrow; the flags of the head are
        # plain registers feeding the accept decision, no read multiplexer in the loop).
        fl_layout = data.StructLayout({"any_en": 1, "par": 1, "row_end": 1, "eot": 1, "eoc": 1})
        m.submodules.taps_q = taps_q = SkidBuffer(self.taps_layout)
        m.submodules.flags_q = flags_q = SkidBuffer(fl_layout, shift=True)
        tin = self.taps.payload
        m.d.comb += [
            taps_q.i.valid.eq(self.taps.valid),
            flags_q.i.valid.eq(self.taps.valid),
            self.taps.ready.eq(taps_q.i.ready),          # == flags_q.i.ready (lockstep)
            taps_q.i.payload.eq(tin),
            flags_q.i.payload.any_en.eq(tree([tin.slots[l].en for l in range(self._lanes)],
                                              lambda a, b: a | b)),
            flags_q.i.payload.par.eq(ctl.split & tin.parity),
            flags_q.i.payload.row_end.eq(tin.last | tin.eot),
            flags_q.i.payload.eot.eq(tin.eot),
            flags_q.i.payload.eoc.eq(tin.eoc),
        ]
        m.d.comb += taps_q.o.ready.eq(flags_q.o.ready)
        return SimpleNamespace(head=flags_q.o, bundle=taps_q.o.payload)

    def _sequencer(self, m, ctl, ob, tq, dense):
        """Engine S0: accepts tap bundles and walks the buffered operand row, one entry per
        cycle (``i``), per bundle; releases operand halves and closes tiles. Returns ``proc``
        (a processing cycle), ``work`` (it has products), ``eb`` (psum half of the open tile),
        ``pend[h]`` (half h holds a tile to drain), ``tile_open`` and the head bundle's
        ``slots``."""
        rh, half = self._rh, self._half
        full, fresh, pr = ob.full, ob.fresh, ob.pr
        taps = tq.head                    # valid, ready and the accept flags of the head bundle
        tb = tq.bundle
        eb = Signal()                     # psum half the engine accumulates the open tile into
        pend = [Signal(name=f"pend{h}") for h in range(2)]  # half h holds a tile to drain
        tile_open = Signal()              # a bundle of a tile without its eot was processed
        eb_free = ~Mux(eb, pend[1], pend[0])
        slots = tb.slots
        i = Signal(ob.cnt_w)
        par = taps.payload.par
        # "i is the sub-list's last entry" for all four (half, parity) sub-lists at once, then
        # one 4:1 choice (for Fmax: the compare no longer waits for the choice)
        last_e = Signal()                 # i == entries - 1 of the chosen sub-list
        n_nz = Signal()                   # the chosen sub-list is not empty
        with m.Switch(Cat(par, pr)):
            for h in range(2):
                for p in range(2):
                    with m.Case(p | (h << 1)):
                        m.d.comb += [last_e.eq(i == ob.cm1[h][p]), n_nz.eq(ob.cnz[h][p])]
        any_en = taps.payload.any_en
        work = Signal()
        m.d.comb += work.eq(any_en & n_nz)
        done = Signal()
        m.d.comb += done.eq(~work | last_e)
        pr_full = Mux(pr, full[1], full[0])
        can = Signal()
        m.d.comb += can.eq(eb_free & pr_full & ~(ctl.is_wg & dense.loading))
        proc = Signal()
        m.d.comb += [
            taps.ready.eq(can & done),
            proc.eq(can & taps.valid),
            ob.rd.addr.eq(Mux(pr, half, 0) + Mux(par, rh, 0) + i),
        ]
        row_end = taps.payload.row_end
        # The tile's half is marked pending one cycle after its last bundle (for Fmax: the
        # accept decision no longer reaches the drain side's flags). Nothing looks sooner: the
        # drain waits PIPE_FLUSH cycles for the pipeline anyway, and the engine checks the other
        # half.
        tile_end_q = Signal()
        m.d.sync += tile_end_q.eq(0)
        with m.If(tile_end_q):
            for h in range(2):
                with m.If(eb != h):       # eb has moved on to the other half by now
                    m.d.sync += pend[h].eq(1)
        # Chunked WG (``eoc``): the bundle that ends an image's run holds the engine until the
        # next load has ended (``dense.loading``, set here, after the scratchpad's own update,
        # so this assignment wins) and, RELOAD_GAP + 1 = 3 cycles after its last processing
        # cycle -- when its last scratchpad read (S2) is issued; a write in that cycle does not
        # reach the read (not transparent) -- lets the load in (``own``). An ``eot`` lets the
        # next load in the same way (an unchunked job's next image may follow its last tile)
        # but does not hold the engine.
        rel = Signal(2)
        m.d.sync += rel.eq(Cat(proc & done & (taps.payload.eoc | taps.payload.eot), rel[0]))
        with m.If(rel[1]):
            m.d.sync += dense.own.eq(0)
        with m.If(proc & done & taps.payload.eoc):
            m.d.sync += dense.loading.eq(1)
        with m.If(proc):
            with m.If(done):
                m.d.sync += i.eq(0)
                with m.If(row_end):
                    m.d.sync += pr.eq(~pr)
                    for h in range(2):
                        with m.If(pr == h):
                            m.d.sync += [full[h].eq(0), fresh[h].eq(1)]
                with m.If(taps.payload.eot):
                    m.d.sync += [eb.eq(~eb), tile_open.eq(0), tile_end_q.eq(1)]
                with m.Else():
                    m.d.sync += tile_open.eq(1)
            with m.Else():
                m.d.sync += [i.eq(i + 1), tile_open.eq(1)]
        return SimpleNamespace(proc=proc, work=work, eb=eb, pend=pend, tile_open=tile_open,
                               tile_end_q=tile_end_q, slots=slots)

    def _addresses(self, m, ctl, ob, seq):
        """Engine S1r and S1: per lane, the product's validity and its psum and dense-scratchpad
        addresses. Registers the bundle's slots (S1), then the operand entry from the buffer
        read with the column-only and slot-only arithmetic (S1r), then the results (S2).
        Returns the S2 registers and the psum-half tags ``s2_b`` .. ``s4_b``."""
        L, dw = self._lanes, self._dw
        pa_w, da_w = self._pa_w, self._da_w
        stride2, pad, mode = ctl.stride2, ctl.pad, ctl.mode
        slots = seq.slots
        # S1 registers: the bundle's slots (the operand entry arrives from the buffer read)
        s1v = Signal()
        s1_w = [Signal(signed(dw), name=f"s1_w{l}") for l in range(L)]
        s1_kw = [Signal(_index_bits(self._k_max), name=f"s1_kw{l}") for l in range(L)]
        s1_base = [Signal(pa_w, name=f"s1_base{l}") for l in range(L)]
        s1_rb = [Signal(da_w, name=f"s1_rb{l}") for l in range(L)]
        s1_en = [Signal(name=f"s1_en{l}") for l in range(L)]
        s1_b, s2_b, s3_b, s4_b = (Signal(name=f"s{k}_b") for k in range(1, 5))  # psum half
        m.d.sync += [s1v.eq(seq.proc & seq.work), s1_b.eq(seq.eb), s3_b.eq(s2_b),
                     s4_b.eq(s3_b)]
        for l in range(L):
            m.d.sync += [s1_w[l].eq(slots[l].value), s1_kw[l].eq(slots[l].kw),
                         s1_base[l].eq(slots[l].base), s1_rb[l].eq(slots[l].rowbase),
                         s1_en[l].eq(slots[l].en)]

        # S1r: the operand-buffer read data and the bundle are registered once more before the
        # address arithmetic (block-RAM clock-to-out + the adders and compares of S1 were the
        # ECP5 critical path, 11 ns). S1r also does the parts of the arithmetic that need only
        # the column or only the slot (for Fmax: S1 was three chained carry chains, 8.6 ns), so
        # S1 is one compare or one add per result. With ``cp = col + pad``, ``cb = col*S - pad``
        # and ``t_fp = cp - kw``, ``t_bw = cb + kw``:
        #   FP: t_fp >= 0  <=>  cp >= kw;   t_fp/S < out_len  <=>  cp < kw + S*out_len;
        #       t_fp odd  <=>  cp[0] ^ kw[0];  base + t_fp/S = (base - kw/S) + cp/S when S | t_fp
        #       (equal parities: (cp - kw)/2 = (cp >> 1) - (kw >> 1));
        #   BP/WG: t_bw >= 0  <=>  cb >= -kw;  t_bw < len  <=>  cb < len - kw;
        #       base + t_bw = (base + kw) + cb;  rowbase + t_bw = (rowbase + kw) + cb.
        # Addresses wrap modulo the address width exactly as before.
        tsg = signed(self._t_w)
        a1 = Signal(signed(dw))
        cp = Signal(tsg)                  # col + pad
        cps = Signal(tsg)                 # cp / S
        cb = Signal(tsg)                  # col*S - pad
        s1rv = Signal()
        s1r_b = Signal()
        col_sg = Signal(tsg)
        pad_sg = Signal(tsg)
        m.d.comb += [col_sg.eq(ob.rd.data.col), pad_sg.eq(pad)]
        cp_now = col_sg + pad_sg
        m.d.sync += [a1.eq(ob.rd.data.value), cp.eq(cp_now),
                     cps.eq(Mux(stride2, cp_now >> 1, cp_now)),
                     cb.eq(Mux(stride2, col_sg << 1, col_sg) - pad_sg),
                     s1rv.eq(s1v), s1r_b.eq(s1_b), s2_b.eq(s1r_b)]
        lim_fp = Signal(tsg)              # S * out_len
        lim_bw = Signal(tsg)              # BP: out_len, WG: in_len
        m.d.comb += [lim_fp.eq(Mux(stride2, ctl.out_len << 1, ctl.out_len)),
                     lim_bw.eq(Mux(ctl.is_wg, ctl.in_len, ctl.out_len))]
        r_w = [Signal.like(x, name=f"s1r_w{l}") for l, x in enumerate(s1_w)]
        r_en = [Signal(name=f"s1r_en{l}") for l in range(L)]
        r_kw = [Signal(tsg, name=f"s1r_kw{l}") for l in range(L)]        # kw
        r_nkw = [Signal(tsg, name=f"s1r_nkw{l}") for l in range(L)]      # -kw
        r_klim = [Signal(tsg, name=f"s1r_klim{l}") for l in range(L)]    # kw + S*out_len
        r_lbw = [Signal(tsg, name=f"s1r_lbw{l}") for l in range(L)]      # len - kw
        r_bk = [Signal(pa_w, name=f"s1r_bk{l}") for l in range(L)]       # base - kw/S
        r_bpk = [Signal(pa_w, name=f"s1r_bpk{l}") for l in range(L)]     # base + kw
        r_base = [Signal(pa_w, name=f"s1r_base{l}") for l in range(L)]
        r_rbk = [Signal(da_w, name=f"s1r_rbk{l}") for l in range(L)]     # rowbase + kw
        for l in range(L):
            kw_sg = Signal(tsg, name=f"s1_kwsg{l}")
            m.d.comb += kw_sg.eq(s1_kw[l])
            m.d.sync += [r_w[l].eq(s1_w[l]), r_en[l].eq(s1_en[l]), r_kw[l].eq(kw_sg),
                         r_nkw[l].eq(-kw_sg), r_klim[l].eq(kw_sg + lim_fp),
                         r_lbw[l].eq(lim_bw - kw_sg),
                         r_bk[l].eq(s1_base[l] - Mux(stride2, s1_kw[l] >> 1, s1_kw[l])),
                         r_bpk[l].eq(s1_base[l] + s1_kw[l]), r_base[l].eq(s1_base[l]),
                         r_rbk[l].eq(s1_rb[l] + s1_kw[l])]

        # S1: one compare or one add per result
        s1v = s1rv
        s2v = Signal()
        s2_a = Signal(signed(dw))
        s2_w = [Signal(signed(dw), name=f"s2_w{l}") for l in range(L)]
        s2_ok = [Signal(name=f"s2_ok{l}") for l in range(L)]
        s2_pa = [Signal(pa_w, name=f"s2_pa{l}") for l in range(L)]
        s2_da = [Signal(da_w, name=f"s2_da{l}") for l in range(L)]
        m.d.sync += [s2v.eq(s1v), s2_a.eq(a1)]
        for l in range(L):
            ok = Signal(name=f"ok{l}")
            pa = Signal(pa_w, name=f"pa{l}")
            ok_bw = (cb >= r_nkw[l]) & (cb < r_lbw[l])
            with m.Switch(mode):
                with m.Case(Phase.BP):
                    m.d.comb += [ok.eq(ok_bw), pa.eq(r_bpk[l] + cb)]
                with m.Case(Phase.WG):
                    m.d.comb += [ok.eq(ok_bw), pa.eq(r_base[l])]
                with m.Default():
                    m.d.comb += [ok.eq((cp >= r_kw[l]) & ~(stride2 & (cp[0] ^ r_kw[l][0])) &
                                       (cp < r_klim[l])),
                                 pa.eq(r_bk[l] + cps)]
            m.d.sync += [s2_w[l].eq(r_w[l]), s2_ok[l].eq(s1v & r_en[l] & ok),
                         s2_pa[l].eq(pa), s2_da[l].eq(r_rbk[l] + cb)]
        return SimpleNamespace(v=s2v, a=s2_a, w=s2_w, ok=s2_ok, pa=s2_pa, da=s2_da,
                               b=s2_b, s3_b=s3_b, s4_b=s4_b)

    def _lane_pipeline(self, m, ctl, s2, dense, banks):
        """Engine S2 .. S5 per lane: dense-scratchpad read (S2), multiplier operands and bank
        read (S3), multiply and old value (S4), add (S5; the bank write is in
        :meth:`_bank_ports`). Returns the S3 bank-read request (``s3v``, ``s3_b``, ``s3_pa``),
        the S4 validity (``s4v``, ``s4_ok``: the products counted) and the S5 write
        (``s5v``, ``s5_b``, ``s5_ok``, ``s5_pa``, ``wdata``)."""
        L, dw, aw, pa_w = self._lanes, self._dw, self._aw, self._pa_w
        d_rds, s3_b, s4_b = dense.rds, s2.s3_b, s2.s4_b
        # ---------------------------------------------------------------- S2: dense read
        s3v = Signal()
        s3_a = Signal(signed(dw))
        s3_w = [Signal(signed(dw), name=f"s3_w{l}") for l in range(L)]
        s3_ok = [Signal(name=f"s3_ok{l}") for l in range(L)]
        s3_pa = [Signal(pa_w, name=f"s3_pa{l}") for l in range(L)]
        m.d.sync += [s3v.eq(s2.v), s3_a.eq(s2.a)]
        for l in range(L):
            m.d.comb += d_rds[l].addr.eq(s2.da[l])
            m.d.sync += [s3_w[l].eq(s2.w[l]), s3_ok[l].eq(s2.ok[l]), s3_pa[l].eq(s2.pa[l])]

        # ---------------------------------------------------------------- S3: operands, bank read
        # The multiplier's operands are registered here and the product is formed in S4 (the
        # dense-scratchpad RAM clock-to-out followed by the multiply was the ECP5 critical path,
        # 9.4 ns); the product still reaches S5 in the same cycle as before.
        s4v = Signal()
        s4_a = [Signal(signed(dw), name=f"s4_a{l}") for l in range(L)]
        s4_bop = [Signal(signed(dw), name=f"s4_bop{l}") for l in range(L)]
        s4_ok = [Signal(name=f"s4_ok{l}") for l in range(L)]
        s4_pa = [Signal(pa_w, name=f"s4_pa{l}") for l in range(L)]
        m.d.sync += s4v.eq(s3v)
        for l in range(L):
            b = Mux(ctl.is_wg, d_rds[l].data, s3_w[l])
            m.d.sync += [s4_a[l].eq(s3_a), s4_bop[l].eq(b), s4_ok[l].eq(s3_ok[l]),
                         s4_pa[l].eq(s3_pa[l])]

        # ---------------------------------------------------------------- S4: multiply, old value
        # The bank's old value is registered before the add (block-RAM clock-to-out + a 48-bit
        # add + RAM setup was the ECP5 critical path, 10.3 ns). A read in S3 sees a write in
        # the same cycle (transparent port); the write of the product just ahead (in S5 while
        # this one is in S4) is forwarded, so back-to-back accumulation into one address still
        # needs no stall.
        s5v, s5_b = Signal(), Signal()
        s5_old = [Signal(signed(aw), name=f"s5_old{l}") for l in range(L)]
        s5_prod = [Signal(signed(2 * dw), name=f"s5_prod{l}") for l in range(L)]
        s5_ok = [Signal(name=f"s5_ok{l}") for l in range(L)]
        s5_pa = [Signal(pa_w, name=f"s5_pa{l}") for l in range(L)]
        wdata = [Signal(signed(aw), name=f"wdata{l}") for l in range(L)]
        m.d.sync += [s5v.eq(s4v), s5_b.eq(s4_b)]
        for l in range(L):
            m.d.comb += wdata[l].eq((s5_old[l] + s5_prod[l])[:aw].as_signed())
            old_v = Mux(s4_b, banks[l][1][0].data, banks[l][0][0].data)
            fwd = s5v & s5_ok[l] & (s5_b == s4_b) & (s5_pa[l] == s4_pa[l])
            m.d.sync += [s5_old[l].eq(Mux(fwd, wdata[l], old_v)),
                         s5_prod[l].eq(s4_a[l] * s4_bop[l]),
                         s5_ok[l].eq(s4_ok[l]), s5_pa[l].eq(s4_pa[l])]
        return SimpleNamespace(s3v=s3v, s3_b=s3_b, s3_pa=s3_pa, s4v=s4v, s4_ok=s4_ok,
                               s5v=s5v, s5_b=s5_b, s5_ok=s5_ok, s5_pa=s5_pa, wdata=wdata)

    def _drain_control(self, m, seq):
        """The drain side's command handling and D1 (bank read issued): accepts ``drain``
        commands once the oldest undrained half ``db`` is flushed, walks their addresses one
        per cycle, and releases the half (clears ``pend``) with the tile's last address.
        Returns the read request (``raddr``; ``stall``: ``o`` is back-pressured), the D1
        registers and, for the counters, ``tok`` (engine tokens in flight), ``acc``, ``issue``
        and ``last_acc``."""
        pa_w, pend = self._pa_w, seq.pend
        o = self.o
        stall = Signal()
        m.d.comb += stall.eq(o.valid & ~o.ready)
        # A half is drained once no product of its tile is left in the engine pipeline. Tokens
        # (tagged with the half) follow every processing cycle (a 1-cycle bundle with no work
        # too), so the flush is always PIPE_FLUSH = 5 cycles after the tile's last bundle.
        tok = Signal(5)
        tok_b = Signal(5)
        m.d.sync += [tok.eq(Cat(seq.proc, tok[:4])), tok_b.eq(Cat(seq.eb, tok_b[:4]))]
        db = Signal()                     # half the drain reads (the oldest undrained tile)
        flushed = ~tree([tok[k] & (tok_b[k] == db) for k in range(5)], lambda a, b: a | b)
        d_addr = Signal(pa_w)
        d_left = Signal(range(self._psum_depth + 1))
        d_raw = Signal()
        d_last = Signal()
        last_acc = Signal()               # the tile's last drain command has been accepted
        dr = self.drain
        # A command is registered when accepted and its reads start the next cycle (the
        # accept handshake crosses PEs in an array -- the column's drain broadcast -- so it
        # must not reach the bank address). ``drain.ready`` is a function of registers only
        # (not of ``o.ready``): in the top level the output merger, the column joins, the PEs
        # and the router were one combinational chain. Cost: one accept cycle per command.
        m.d.comb += dr.ready.eq(Mux(db, pend[1], pend[0]) & flushed & (d_left == 0) & ~last_acc)
        acc = Signal()
        cont = Signal()
        issue = Signal()                  # a drain read this cycle
        m.d.comb += [
            acc.eq(dr.valid & dr.ready),
            cont.eq((d_left != 0) & ~stall),
            issue.eq(cont),
        ]
        count1 = Mux(dr.payload.count == 0, 1, dr.payload.count)
        raddr = Signal(pa_w)
        b_last = Signal()
        b_raw = Signal()
        b_end = Signal()
        m.d.comb += [raddr.eq(d_addr), b_last.eq(d_left == 1), b_raw.eq(d_raw),
                     b_end.eq((d_left == 1) & d_last)]
        with m.If(cont):
            m.d.sync += [d_addr.eq(d_addr + 1), d_left.eq(d_left - 1)]
        with m.If(acc):
            m.d.sync += [d_addr.eq(dr.payload.base), d_left.eq(count1),
                         d_raw.eq(dr.payload.raw), d_last.eq(dr.payload.last)]
            with m.If(dr.payload.last):
                m.d.sync += last_acc.eq(1)

        d1v, d1_last, d1_end, d1_raw, d1_b = Signal(), Signal(), Signal(), Signal(), Signal()
        d1_addr = Signal(pa_w)
        with m.If(~stall):
            m.d.sync += [d1v.eq(issue), d1_addr.eq(raddr), d1_last.eq(b_last),
                         d1_end.eq(b_end), d1_raw.eq(b_raw), d1_b.eq(db)]
        # The tile's last address is cleared in D1: its half is free for the engine from the
        # next cycle, and the drain moves on to the other half.
        release = d1v & d1_end & ~stall
        with m.If(release):
            m.d.sync += [db.eq(~db), last_acc.eq(0)]
            for h in range(2):
                with m.If(d1_b == h):
                    m.d.sync += pend[h].eq(0)
        return SimpleNamespace(stall=stall, tok=tok, acc=acc, issue=issue, raddr=raddr,
                               last_acc=last_acc, d1v=d1v, d1_b=d1_b, d1_addr=d1_addr,
                               d1_last=d1_last, d1_end=d1_end, d1_raw=d1_raw)

    def _bank_ports(self, m, banks, ln, dc):
        """Each psum half's ports, shared by the engine and the drain: the engine's S3 read
        has priority (the drain's reads advance only when not stalled); the engine's S5
        write, else the drain's clearing write in D1."""
        stall = dc.stall
        for l, pair in enumerate(banks):
            for h, (rd, wr) in enumerate(pair):
                eng_rd = ln.s3v & (ln.s3_b == h)
                m.d.comb += [
                    rd.en.eq(eng_rd | ~stall),
                    rd.addr.eq(Mux(eng_rd, ln.s3_pa[l], dc.raddr)),
                ]
                with m.If(ln.s5v & (ln.s5_b == h)):
                    m.d.comb += [wr.en.eq(ln.s5_ok[l]), wr.addr.eq(ln.s5_pa[l]),
                                 wr.data.eq(ln.wdata[l])]
                with m.Else():
                    m.d.comb += [wr.en.eq(dc.d1v & ~stall & (dc.d1_b == h)),
                                 wr.addr.eq(dc.d1_addr), wr.data.eq(0)]

    def _busy_counter(self, m, ln):
        """``busy_mac``: the valid products of the cycle (S4), a balanced popcount."""
        pop = tree([ln.s4_ok[l].as_unsigned() for l in range(self._lanes)], lambda a, b: a + b)
        m.d.sync += self.busy_mac.eq(self.busy_mac + Mux(ln.s4v, pop, 0))

    def _drain_readout(self, m, banks, dc):
        """Drain D1r .. D2 into ``o``: bank read data registered (D1r), lane sum (D2),
        write-back or raw value registered into ``o``. All stages hold while ``o`` is
        back-pressured. Returns the stage flags the job counters need and ``tile_end`` (the
        job's end beat is transferred)."""
        aw, dw, o, stall = self._aw, self._dw, self.o, dc.stall
        # ---------------------------------------------------------------- D1: bank read data
        # The banks' read data is registered before the lane sum (block-RAM clock-to-out, the
        # half mux and two 48-bit adders were the ECP5 critical path, 8.4 ns): one more drain
        # pipeline cycle (``pe_model.DRAIN_LATENCY``), no rate.
        d1rv, d1r_last, d1r_end, d1r_raw = Signal(), Signal(), Signal(), Signal()
        d1r_data = [Signal(signed(aw), name=f"d1r_data{l}") for l in range(self._lanes)]
        with m.If(~stall):
            m.d.sync += [d1rv.eq(dc.d1v), d1r_last.eq(dc.d1_last), d1r_end.eq(dc.d1_end),
                         d1r_raw.eq(dc.d1_raw)]
            m.d.sync += [d.eq(Mux(dc.d1_b, pair[1][0].data, pair[0][0].data))
                         for d, pair in zip(d1r_data, banks)]

        # ---------------------------------------------------------------- D1r: bank sum
        d2v, d2_last, d2_end, d2_raw = Signal(), Signal(), Signal(), Signal()
        d2_sum = Signal(signed(aw))
        total = tree(d1r_data, lambda a, b: (a + b)[:aw].as_signed())
        with m.If(~stall):
            m.d.sync += [d2v.eq(d1rv), d2_sum.eq(total), d2_last.eq(d1r_last),
                         d2_end.eq(d1r_end), d2_raw.eq(d1r_raw)]

        # ---------------------------------------------------------------- D2: write-back
        sat = writeback(m, d2_sum, acc_width=aw, frac_bits=self._frac_bits, data_width=dw)
        with m.If(~stall):
            m.d.sync += [
                o.valid.eq(d2v),
                o.payload.value.eq(Mux(d2_raw, d2_sum, sat)),
                o.payload.last.eq(d2_last),
                o.payload.end.eq(d2_end),
            ]
        tile_end = o.valid & o.ready & o.payload.end
        return SimpleNamespace(d1rv=d1rv, d1r_end=d1r_end, d2v=d2v, d2_end=d2_end,
                               tile_end=tile_end)

    def _job_counters(self, m, tq, seq, dc, ro):
        """``active`` and the ``cycles``, ``stall_in``, ``stall_out`` counters."""
        o, stall, proc, pend = self.o, dc.stall, seq.proc, seq.pend
        # A job runs from the first valid input until the end beat of a tile after which no
        # other tile is open or waiting to be drained.
        start = ~self.active & (self.x.valid | self.taps.valid | tq.head.valid |
                                self.drain.valid)
        in_job = Signal()
        m.d.comb += in_job.eq(self.active | start)
        with m.If(start):
            m.d.sync += self.active.eq(1)
        # (``tile_end_q``: a tile closed in the previous cycle and is marked pending only now;
        # without it the job ended for a few cycles when a tile's ``eot`` came one cycle before
        # the previous tile's last output beat -- chunked WG reloads made that common)
        with m.If(ro.tile_end & ~pend[0] & ~pend[1] & ~seq.tile_open & ~seq.tile_end_q):
            m.d.sync += self.active.eq(0)
        flush = (dc.tok != 0) & ~seq.tile_open
        tail = (dc.last_acc & ~dc.issue) | (ro.d1rv & ro.d1r_end) | (ro.d2v & ro.d2_end) | \
            (o.valid & o.payload.end)
        # The cycle's classification is registered and counted one cycle later: ``issue``
        # depends on the drain handshake, which in a PE array crosses PEs (the column's drain
        # broadcast), and the counter enables were the ECP5 critical path (10.5 ns).
        c_job, c_out, c_in = Signal(), Signal(), Signal()
        m.d.sync += [c_job.eq(in_job), c_out.eq(stall & ~proc & ~dc.acc),
                     c_in.eq(~stall & ~proc & ~flush & ~dc.issue & ~dc.acc & ~tail)]
        with m.If(c_job):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(c_out):
                m.d.sync += self.stall_out.eq(self.stall_out + 1)
            with m.Elif(c_in):
                m.d.sync += self.stall_in.eq(self.stall_in + 1)
