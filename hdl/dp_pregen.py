"""On-chip N:M pre-generation from the data plane's weight buffer into its mask buffer (issue 17
item 4): the data plane's ``CMD_PREGEN``.

:class:`PregenUnit` reads a dense weight tensor ``W (Cout, Cin, Kh, Kw)`` (C order, from element
``w_base`` of the WGT buffer), selects the ``n`` largest magnitudes of every group of ``m``
(:class:`~sparseforge.hdl.nm_selector.NMSelector`, ties to the lower index) in both BDWP
directions and writes the two masks, packed one bit per weight in the weights' layout
(``docs/dataplane.md``), into the MASK buffer: the forward mask (groups along Cin) from word
``mf_word``, the backward mask (groups along Cout) right after it, from word ``mf_word +
ceil(numel / word_bits)`` -- exactly :func:`sparseforge.sim.reference.golden.bdwp_masks` ``(W,
n, m)``.

Walk: both directions are **blocks of m rows x L columns**: in block ``b`` the group of
column ``j`` is the weights at C-order offsets ``(b*m + i)*L + j``, ``i < m``, and the mask bit
of weight ``a`` is bit ``a`` of its mask. Forward: ``L = Kh*Kw``, ``Cout*Cin/m`` blocks;
backward: ``L = Cin*Kh*Kw``, ``Cout/m`` blocks. A group's ``m`` weights are read through
``lanes`` element read ports (the WGT buffer's replicas), ``ceil(m / lanes)`` cycles per group.

Writing the bits (one ``word_bits``-bit MASK word per cycle, whole words only):

* forward: a block is ``m*L`` contiguous bits whose columns arrive one group at a time; the
  block is collected column-wise, turned row-major (one static wiring per possible ``Kh*Kw``,
  chosen by ``kk``) and appended to a bit packer that writes each word as it fills;
* backward: the ``m`` rows of a block are ``L`` contiguous bits each and all advance one bit
  per group: every row fills its own word and queues it; a row's first (partial) word is held
  back and merged with the previous row's last (partial) word at the end of the block (the
  last row's with the next block's first row), so no word is written twice. Needs ``L >=
  word_bits`` (the data plane refuses a smaller ``Cin*Kh*Kw``).

Every queued word has its own slot and one slot is written per cycle; with ``m <= word_bits``
and ``L >= word_bits`` a slot is always free again before it refills (``overflow`` reports the
contrary and stays 0 in every test).

Ports
-----
start : In(1)
    Latches the job (ignored while ``busy``); the caller has checked it (``cin`` and ``cout``
    multiples of ``m``; ``1 <= kk <= k_max**2``, a product ``kh*kw``; ``n <= n_max``;
    ``cin*kk >= word_bits``; the ranges inside the buffers).
w_base : In(addr_width), cout, cin : In(16), kk : In(range(k_max**2 + 1)), n : In(range(n_max + 1))
mf_word : In(mask_word_width)
busy : Out(1)
    From ``start`` until the last word is written.
overflow : Out(1)
    Sticky (cleared by ``start``): a word slot was refilled before it was written.
rd_addr[p], rd_en[p] : Out, rd_data[p] : In(signed(data_width))
    ``lanes`` element read ports of the WGT buffer (data the cycle after an ``en`` cycle).
wr_addr : Out(mask_word_width), wr_data : Out(word_bits), wr_en : Out(1)
    Whole-word writes into the MASK buffer (every replica).

Latency/throughput: a group every ``ceil(m / lanes)`` cycles in each pass; a job takes about
``2 * numel / m * ceil(m / lanes)`` cycles plus the set-up, the selector's latency and the
drain of each pass (:func:`pregen_job_cycles` bounds it; the tests measure it).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.arith import const_mul, small_mul
from sparseforge.hdl.nm_selector import NMSelector

__all__ = ["PregenUnit", "kk_values", "pregen_job_cycles"]


def kk_values(k_max: int) -> list:
    """The kernel sizes ``Kh*Kw`` a job can have (``1 <= Kh, Kw <= k_max``), sorted."""
    return sorted({a * b for a in range(1, k_max + 1) for b in range(1, k_max + 1)})


def pregen_job_cycles(numel: int, m: int, lanes: int) -> int:
    """A bound on the busy cycles of a ``CMD_PREGEN`` job over ``numel`` weights: two passes of
    ``numel / m`` groups at ``ceil(m / lanes)`` cycles each, plus a fixed 64 cycles (set-up, the
    selector's latency and the drain of each pass)."""
    cpg = -(-m // lanes)
    return 2 * (numel // m) * cpg + 64


class PregenUnit(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, m: int, n_max: int, data_width: int, lanes: int, addr_width: int,
                 mask_word_width: int, word_bits: int, k_max: int):
        if word_bits < m:
            raise ValueError(f"word_bits ({word_bits}) must be at least m ({m})")
        self._m, self._n_max, self._dw = m, n_max, data_width
        self._lanes = max(1, min(lanes, m))
        self._aw, self._maw, self._wb, self._k_max = addr_width, mask_word_width, word_bits, k_max
        self._kkmax = k_max * k_max
        self.selector = NMSelector(m=m, n_max=n_max, width=data_width)
        super().__init__({
            "start": In(1), "w_base": In(addr_width), "cout": In(16), "cin": In(16),
            "kk": In(range(self._kkmax + 1)), "n": In(range(n_max + 1)),
            "mf_word": In(mask_word_width),
            "busy": Out(1), "overflow": Out(1),
            "rd_addr": Out(addr_width).array(self._lanes),
            "rd_en": Out(1).array(self._lanes),
            "rd_data": In(signed(data_width)).array(self._lanes),
            "wr_addr": Out(mask_word_width), "wr_data": Out(word_bits), "wr_en": Out(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        M, P, WB = self._m, self._lanes, self._wb
        lgM, lgWB = (M - 1).bit_length(), (WB - 1).bit_length()
        cpg = -(-M // P)
        sel = m.submodules.selector = self.selector
        W = 40                                    # wide enough for any product here

        # -- the job, latched at start, and its derived sizes (set-up states)
        w_base, cout, cin = Signal(self._aw), Signal(16), Signal(16)
        kk, nsel, mf_word = Signal.like(self.kk), Signal.like(self.n), Signal(self._maw)
        cico, numel = Signal(32), Signal(W)
        L_f, L_b, nb_f, nb_b = Signal(W), Signal(W), Signal(W), Signal(W)
        mb_word = Signal(self._maw + 1)
        dirb = Signal()                           # 0: forward pass, 1: backward pass
        L = Signal(W)
        nb = Signal(W)
        m.d.comb += [L.eq(Mux(dirb, L_b, L_f)), nb.eq(Mux(dirb, nb_b, nb_f))]
        ovf = self.overflow

        # -- the walker: block wb, column wj, sub-cycle wc; lane p reads element c*P + p
        walking = Signal()
        wbk, wj, wc = Signal(W), Signal(W), Signal(range(cpg))
        blockbase = Signal(W)
        offL = [Signal(W, name=f"offL{i}") for i in range(M)]     # i * L of this pass
        for p in range(P):
            addr = Signal(W, name=f"lane_addr{p}")
            en = Signal(name=f"lane_en{p}")
            with m.Switch(wc):
                for c in range(cpg):
                    i = c * P + p
                    with m.Case(c):
                        if i < M:
                            m.d.comb += [addr.eq(blockbase + offL[i] + wj), en.eq(walking)]
            m.d.comb += [self.rd_addr[p].eq(addr), self.rd_en[p].eq(en)]
        with m.If(walking):
            m.d.sync += wc.eq(Mux(wc == cpg - 1, 0, wc + 1))
            with m.If(wc == cpg - 1):
                m.d.sync += wj.eq(wj + 1)
                with m.If(wj == L - 1):
                    m.d.sync += [wj.eq(0), wbk.eq(wbk + 1), blockbase.eq(blockbase + (L << lgM))]
                    with m.If(wbk == nb - 1):
                        m.d.sync += walking.eq(0)
        # read data -> the group register (asm) -> the selector
        v1, c1 = Signal(), Signal(range(cpg))
        m.d.sync += [v1.eq(walking), c1.eq(wc)]
        asm = Signal(data.ArrayLayout(signed(self._dw), M))
        gv = Signal()
        m.d.sync += gv.eq(v1 & (c1 == cpg - 1))
        with m.If(v1):
            with m.Switch(c1):
                for c in range(cpg):
                    with m.Case(c):
                        for p in range(P):
                            if c * P + p < M:
                                m.d.sync += asm[c * P + p].eq(self.rd_data[p])
        m.d.comb += [sel.i.valid.eq(gv), sel.i.payload.eq(asm), sel.n.eq(nsel),
                     sel.o.ready.eq(1)]
        mv = sel.o.valid
        msk = sel.o.payload.mask

        # -- the writer: block rb, column rj of the masks as they arrive
        rb, rj = Signal(W), Signal(W)
        last_col = mv & (rj == L - 1)
        last_blk = last_col & (rb == nb - 1)
        wdone = Signal()                          # every mask of this pass received
        with m.If(mv):
            m.d.sync += rj.eq(Mux(rj == L - 1, 0, rj + 1))
            with m.If(rj == L - 1):
                m.d.sync += rb.eq(rb + 1)
            with m.If(last_blk):
                m.d.sync += wdone.eq(1)

        wr_en, wr_addr, wr_data = Signal(), Signal(self._maw), Signal(WB)
        m.d.sync += [self.wr_en.eq(wr_en), self.wr_addr.eq(wr_addr), self.wr_data.eq(wr_data)]

        # forward: the block's columns, then row-major into the packer
        KKS = kk_values(self._k_max)
        KM = self._kkmax
        blk = [Signal(M, name=f"blk{k}") for k in range(KM)]
        bd = [Signal(M, name=f"bd{k}") for k in range(KM)]
        bdv = Signal()
        fwd_in = mv & ~dirb
        with m.If(fwd_in):
            with m.Switch(rj):
                for k in range(KM):
                    with m.Case(k):
                        m.d.sync += blk[k].eq(msk)
        m.d.sync += bdv.eq(fwd_in & (rj == L - 1))
        with m.If(fwd_in & (rj == L - 1)):
            for k in range(KM):
                m.d.sync += bd[k].eq(Mux(rj == k, msk, blk[k]))
        vec = Signal(M * KM)
        with m.Switch(kk):
            for v in KKS:
                with m.Case(v):
                    m.d.comb += vec.eq(Cat(*[bd[t % v][t // v] for t in range(M * v)]))
        pk = Signal(WB + M * KM)
        fill = Signal(range(WB + M * KM + 1))
        fptr = Signal(self._maw)
        emit = ~dirb & (fill >= WB)
        fill1 = Signal.like(fill)
        pk1 = Signal.like(pk)
        m.d.comb += [fill1.eq(Mux(emit, fill - WB, fill)), pk1.eq(Mux(emit, pk >> WB, pk))]
        flush = ~dirb & wdone & ~bdv & (fill1 != 0) & (fill1 < WB) & ~emit
        with m.If(emit | flush):
            m.d.comb += [wr_en.eq(1), wr_addr.eq(fptr), wr_data.eq(pk[:WB])]
            m.d.sync += fptr.eq(fptr + 1)
        with m.If(flush):
            m.d.sync += [fill.eq(0), pk.eq(0)]
        with m.Elif(bdv):
            # fill1 < WB here (else overflow): the shift needs only its low bits
            m.d.sync += [pk.eq(pk1 | (vec << fill1[:lgWB])[:len(pk)]),
                         fill.eq(fill1 + (kk << lgM))]
            with m.If(fill1 >= WB):
                m.d.sync += ovf.eq(1)
        with m.Else():
            m.d.sync += [pk.eq(pk1), fill.eq(fill1)]

        # backward: one bit stream per row; slots: a word per row, a merged word per row
        # boundary, the final carry
        sbit = [Signal(self._maw + lgWB + 1, name=f"sbit{i}") for i in range(M)]
        acc = [Signal(WB, name=f"acc{i}") for i in range(M)]
        pos = [Signal(range(WB), name=f"pos{i}") for i in range(M)]
        wa = [Signal(self._maw, name=f"wa{i}") for i in range(M)]
        hd = [Signal(name=f"hd{i}") for i in range(M)]
        head = [Signal(WB, name=f"head{i}") for i in range(M)]
        carry = Signal(WB)
        nslot = 2 * M
        s_v = [Signal(name=f"slot_v{k}") for k in range(nslot)]
        s_a = [Signal(self._maw, name=f"slot_a{k}") for k in range(nslot)]
        s_d = [Signal(WB, name=f"slot_d{k}") for k in range(nslot)]
        grant = Signal(range(nslot + 1))
        m.d.comb += grant.eq(nslot)
        for k in reversed(range(nslot)):
            with m.If(s_v[k]):
                m.d.comb += grant.eq(k)
        with m.If(dirb & (grant != nslot)):
            m.d.comb += wr_en.eq(1)
            with m.Switch(grant):
                for k in range(nslot):
                    with m.Case(k):
                        m.d.comb += [wr_addr.eq(s_a[k]), wr_data.eq(s_d[k])]
                        m.d.sync += s_v[k].eq(0)

        def put(k, addr, value):
            with m.If(s_v[k] & (grant != k)):
                m.d.sync += ovf.eq(1)
            m.d.sync += [s_v[k].eq(1), s_a[k].eq(addr), s_d[k].eq(value)]

        bwd_in = mv & dirb
        acc_n = [Signal(WB, name=f"acc_n{i}") for i in range(M)]
        full = [Signal(name=f"full{i}") for i in range(M)]
        head_n = [Signal(WB, name=f"head_n{i}") for i in range(M)]
        for i in range(M):
            m.d.comb += [acc_n[i].eq(acc[i] | (msk[i].as_unsigned() << pos[i])[:WB]),
                         full[i].eq(pos[i] == WB - 1),
                         head_n[i].eq(Mux(full[i] & hd[i], acc_n[i], head[i]))]
        ML_b = L_b << lgM
        with m.If(bwd_in):
            for i in range(M):
                with m.If(full[i]):
                    with m.If(hd[i]):
                        if i == 0:                  # merged with the previous block's tail
                            put(0, wa[0], acc_n[0] | carry)
                            m.d.sync += carry.eq(0)
                        else:                       # held until the end of the block
                            m.d.sync += head[i].eq(acc_n[i])
                    with m.Else():
                        put(i, wa[i], acc_n[i])
                    m.d.sync += [acc[i].eq(0), pos[i].eq(0), wa[i].eq(wa[i] + 1), hd[i].eq(0)]
                with m.Else():
                    m.d.sync += [acc[i].eq(acc_n[i]), pos[i].eq(pos[i] + 1)]
            with m.If(rj == L - 1):
                # the block ends: row i's partial last word + row i+1's held first word
                for i in range(M - 1):
                    tail = Mux(full[i], 0, acc_n[i])
                    put(M + i, sbit[i + 1] >> lgWB, tail | head_n[i + 1])
                last_tail = Mux(full[M - 1], 0, acc_n[M - 1])
                with m.If(rb == nb - 1):
                    with m.If(~full[M - 1]):        # the mask's final partial word
                        put(2 * M - 1, wa[M - 1], last_tail)
                with m.Else():
                    m.d.sync += carry.eq(last_tail)
                # the next block's rows
                for i in range(M):
                    nxt = sbit[i] + ML_b
                    m.d.sync += [sbit[i].eq(nxt), wa[i].eq(nxt >> lgWB), pos[i].eq(nxt[:lgWB]),
                                 acc[i].eq(0), hd[i].eq(1)]
        slots_busy = Cat(*s_v).any()

        # -- sequencing
        with m.FSM(name="pregen_fsm"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [w_base.eq(self.w_base), cout.eq(self.cout), cin.eq(self.cin),
                                 kk.eq(self.kk), nsel.eq(self.n), mf_word.eq(self.mf_word),
                                 ovf.eq(0)]
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.comb += self.busy.eq(1)
                # kk <= k_max**2: its products in logic (small_mul), not DSP slices
                m.d.sync += [cico.eq(cout * cin), L_b.eq(small_mul(cin, kk, len(kk))), L_f.eq(kk),
                             nb_b.eq(cout >> lgM)]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [numel.eq(small_mul(cico, kk, len(kk))), nb_f.eq(cico >> lgM)]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += mb_word.eq(mf_word + ((numel + (WB - 1)) >> lgWB))
                m.next = "FWD"
                m.d.sync += [dirb.eq(0), fptr.eq(mf_word), fill.eq(0), pk.eq(0)]
                self._pass_start(m, wbk, wj, wc, rb, rj, wdone, blockbase, w_base, walking,
                                 offL, L_f)
            with m.State("FWD"):
                m.d.comb += self.busy.eq(1)
                with m.If(wdone & ~bdv & (fill == 0)):
                    m.d.sync += dirb.eq(1)
                    self._pass_start(m, wbk, wj, wc, rb, rj, wdone, blockbase, w_base,
                                     walking, offL, L_b)
                    for i in range(M):
                        st = (mb_word << lgWB) + const_mul(L_b, i)
                        m.d.sync += [sbit[i].eq(st), wa[i].eq(st >> lgWB),
                                     pos[i].eq(st[:lgWB]), acc[i].eq(0), hd[i].eq(1)]
                    m.d.sync += carry.eq(0)
                    m.next = "BWD"
            with m.State("BWD"):
                m.d.comb += self.busy.eq(1)
                with m.If(wdone & ~slots_busy):
                    m.next = "LAST"
            with m.State("LAST"):
                # the last word's write is presented (wr_en is registered): still busy
                m.d.comb += self.busy.eq(1)
                m.next = "IDLE"
        return m

    def _pass_start(self, m, wbk, wj, wc, rb, rj, wdone, blockbase, w_base, walking, offL, Lp):
        m.d.sync += [wbk.eq(0), wj.eq(0), wc.eq(0), rb.eq(0), rj.eq(0), wdone.eq(0),
                     blockbase.eq(w_base), walking.eq(1)]
        m.d.sync += [offL[i].eq(const_mul(Lp, i)) for i in range(self._m)]
