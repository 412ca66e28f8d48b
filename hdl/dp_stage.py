"""Between-layer stages on chip (issue 17 item 1): the data plane's ``CMD_STAGE`` command.

:class:`StageUnit` runs one of three element-wise stages of the training step
(docs/e2e.md, ``sim/host/e2e.py::train_step``) between the data plane's buffers (a word or one
element per cycle: below), so a layer's output goes from ``BUF_OUT`` to the next layer's input in ``BUF_ACT``
(and a gradient from ``BUF_OUT`` to ``BUF_GRAD``) without crossing the bus:

* ``STAGE_FWD``: ReLU (``relu = 1``) and max-pool with a ``k x k`` window and stride ``k``
  (``k = 2**lgk`` in {1, 2, 4}; ``lgk = 0``: no pooling). Reads the layer's output ``z``
  (``B, C, H, W``) from ``BUF_OUT`` at ``src``, window by window, writes each pooled value
  into ``BUF_ACT`` at ``dst`` in the **next layer's input layout**, and keeps one entry per
  pooled value in the unit's KEEP memory at ``keep + i`` (``i`` the pooled value's C-order
  index): the winning window position ``arg = dy * k + dx`` (the first maximum in row-major
  window order on ties, ``golden``'s ``maxpool_forward`` over the ReLU'd values) and ``pos``
  (the value at ``arg`` is kept by the ReLU: ``relu ? max > 0 : 1``).
* ``STAGE_BWD``: pool and ReLU backward. For every element of ``z``'s shape in C order it
  reads the KEEP entry of its window and the gradient ``d`` of the pooled value (from
  ``BUF_OUT`` at ``src``, in the next layer's input layout: the next layer's BP result) and
  writes ``g = (pos and arg == its window position) ? d : 0`` into ``BUF_GRAD`` at ``dst`` in
  ``z``'s layout: ``maxpool_backward`` (no overlap for ``k`` = stride: no sum, no
  saturation) times ``z > 0``.
* ``STAGE_LOSS``: ``dlogits = sat(z - one * onehot(label))`` for logits ``z`` (``B, C``, H = W
  = 1) in ``BUF_OUT`` at ``src``, the labels (``B`` elements, class indices) in ``BUF_ACT`` at
  ``aux``; written into ``BUF_GRAD`` at ``dst`` in ``z``'s layout. A label outside ``[0, C)``
  raises ``bad_label`` (the rest is still written).

Layouts (element offsets from the base): ``zfc = 0``, the conv layout ``(B, C, H, W)``:
``b*C*H*W + c*H*W + y*W + x``; ``zfc = 1``, the FC view ``(1, C, 1, B)`` of an FC layer's
output (``H = W = 1``): ``c*B + b``. The next layer's input: ``nfc = 0``, ``(B, C, Ho, Wo)``;
``nfc = 1``, the FC view of the flattened features ``f = c*Ho*Wo + yo*Wo + xo``: ``f*B + b``.
The data plane computes the strides from the shape (:func:`stage_strides`) and checks the
ranges; this unit only walks them.

Ports
-----
start : In(1)
    Latches every input below and starts (ignored while ``busy``).
op : In(2), relu : In(1), lgk : In(2), b, c, ho, wo, w : In(16)
    The stage, the pooled shape ``(B, C, Ho, Wo)`` and ``z``'s row length ``W`` (``H = Ho *
    k``, ``W = Wo * k``).
zs_b, zs_c, ns_b, ns_c, ns_y, ns_x, ks_b, ks_c : In(stride_width)
    Strides of ``z``'s layout (b, c), of the next layer's layout (b, c, yo, xo) and of the
    pooled C-order index (b: ``C*Ho*Wo``, c: ``Ho*Wo``).
src, dst, aux : In(addr_width), keep : In(keep_addr_width)
    Element bases (``aux``: the labels in ``BUF_ACT``) and the first KEEP entry.
conv_layouts : In(1)
    ``zfc = nfc = 0`` (the data plane's); with the rest of :func:`stage_lanes` it selects
    vector mode.
one : In(data_width)
    ``1 << frac_bits`` (the one-hot's value).
busy : Out(1)
    From ``start`` until the last write is presented.
bad_label : Out(1)
    A ``STAGE_LOSS`` label was outside ``[0, C)`` (held until the next ``start``).
out_raddr : Out(addr_width), out_rdata : In(epw * data_width)
    A synchronous read port of ``BUF_OUT`` (word address; data the next cycle).
act_raddr : Out(addr_width), act_rdata : In(epw * data_width)
    The same on ``BUF_ACT`` (the labels).
wr_act, wr_grad : Out(1), wr_addr : Out(addr_width), wr_data : Out(epw * data_width),
wr_en : Out(epw)
    One word write per cycle at most (``wr_en``: the lanes written -- one in scalar mode,
    ``epw / k`` pooled values of a FWD stage, ``epw`` of a BWD stage in vector mode) into
    ``BUF_ACT`` (``STAGE_FWD``) or ``BUF_GRAD``. The KEEP memory is the unit's own (words of
    ``epw`` 5-bit entries).

Throughput (*ours*): **a word of ``epw`` elements per cycle** (vector mode) when the stage
allows it (:func:`stage_lanes`): FWD / BWD, ``z`` and the next layer's input in the conv layout
(``zfc = nfc = 0``; an FC -> FC or a batch-1 conv -> FC stage is the same walk and the driver
sends it so), the window no wider than a word (``k <= epw``), ``W`` a multiple of ``epw`` and
``src``, ``dst``, ``keep`` on word boundaries. FWD then walks window rows a word at a time
(``epw / k`` windows side by side, each reduced over its ``k`` lanes, first maximum on ties,
then merged with the rows before it), BWD walks ``z``'s rows a word at a time (one KEEP word
and one ``d`` word give the ``epw / k`` windows of the chunk). Otherwise one element per
cycle (scalar mode). LOSS is always scalar.

Latency/throughput: a job takes ``B*C*H*W / lanes`` (FWD, BWD; ``B*C`` for LOSS) cycles plus
:data:`STAGE_OVERHEAD` (:func:`stage_cycles`); the last write is presented 3 cycles after the
last element is counted.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.arith import const_mul

__all__ = ["StageUnit", "STAGE_FWD", "STAGE_BWD", "STAGE_LOSS", "STAGE_OVERHEAD", "KEEP_WIDTH",
           "LGK_MAX", "stage_cycles", "stage_strides", "stage_lanes"]

STAGE_FWD, STAGE_BWD, STAGE_LOSS = 0, 1, 2
#: Largest ``lgk`` (pool window and stride ``2**lgk``): 4 x 4.
LGK_MAX = 2
#: Bits of a KEEP entry: the window position (``2 * LGK_MAX`` bits) and ``pos``.
KEEP_WIDTH = 2 * LGK_MAX + 1
#: Busy cycles of a stage beyond its element count: the address, read and compute stages of
#: the pipeline (the last element's write is presented 3 cycles after it is counted).
STAGE_OVERHEAD = 3


def stage_lanes(op: int, *, lgk: int, w: int, zfc: bool, nfc: bool, src: int, dst: int,
                keep: int, epw: int) -> int:
    """Elements per cycle of a stage (the unit's vector-mode rule): ``epw`` for a FWD / BWD
    stage in the conv layouts with ``2**lgk <= epw``, ``w % epw == 0`` and ``src``, ``dst``,
    ``keep`` multiples of ``epw``; else 1."""
    ok = op != STAGE_LOSS and not zfc and not nfc and (1 << lgk) <= epw and \
        w % epw == 0 and src % epw == 0 and dst % epw == 0 and keep % epw == 0
    return epw if ok else 1


def stage_cycles(op: int, b: int, c: int, h: int, w: int, lanes: int = 1) -> int:
    """Busy cycles (STAGE_CYCLES) of a stage over ``z`` of shape ``(b, c, h, w)`` at ``lanes``
    elements per cycle (:func:`stage_lanes`)."""
    n = b * c * (1 if op == STAGE_LOSS else h * w)
    return n // lanes + STAGE_OVERHEAD


def stage_strides(b: int, c: int, h: int, w: int, lgk: int, zfc: bool, nfc: bool) -> dict:
    """The unit's strides for ``z`` of shape ``(b, c, h, w)`` (the data plane computes the same
    in logic; a Python twin for tests and the driver)."""
    k = 1 << lgk
    ho, wo = h // k, w // k
    return {"zs_b": 1 if zfc else c * h * w, "zs_c": b if zfc else h * w,
            "ns_b": 1 if nfc else c * ho * wo, "ns_c": ho * wo * b if nfc else ho * wo,
            "ns_y": wo * b if nfc else wo, "ns_x": b if nfc else 1,
            "ks_b": c * ho * wo, "ks_c": ho * wo}


class StageUnit(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, epw: int, data_width: int, addr_width: int, keep_elems: int,
                 stride_width: int | None = None):
        if epw < 1 or epw & (epw - 1):
            raise ValueError(f"epw must be a power of 2, not {epw}")
        if keep_elems < 1:
            raise ValueError(f"keep_elems must be >= 1, not {keep_elems}")
        self._epw, self._dw, self._aw = epw, data_width, addr_width
        self._keep = keep_elems
        self._kaw = max(1, (keep_elems - 1).bit_length())
        sw = stride_width or addr_width + 1
        super().__init__({
            "start": In(1), "op": In(2), "relu": In(1), "lgk": In(2),
            "b": In(16), "c": In(16), "ho": In(16), "wo": In(16), "w": In(16),
            **{n: In(sw) for n in ("zs_b", "zs_c", "ns_b", "ns_c", "ns_y", "ns_x",
                                   "ks_b", "ks_c")},
            "src": In(addr_width), "dst": In(addr_width), "aux": In(addr_width),
            "keep": In(self._kaw), "one": In(data_width), "conv_layouts": In(1),
            "busy": Out(1), "bad_label": Out(1),
            "out_raddr": Out(addr_width), "out_rdata": In(epw * data_width),
            "act_raddr": Out(addr_width), "act_rdata": In(epw * data_width),
            "wr_act": Out(1), "wr_grad": Out(1), "wr_addr": Out(addr_width),
            "wr_data": Out(epw * data_width), "wr_en": Out(epw),
        })

    keep_addr_width = property(lambda self: self._kaw)

    def elaborate(self, platform):
        m = Module()
        E, dw, aw = self._epw, self._dw, self._aw
        lge = (E - 1).bit_length()
        KW = KEEP_WIDTH
        # KEEP: words of E entries (vector mode reads / writes E / k of them at once)
        m.submodules.keep_mem = kmem = Memory(shape=E * KW, depth=-(-self._keep // E),
                                              init=[])
        kwr, krd = kmem.write_port(granularity=KW), kmem.read_port()

        # -- latched parameters
        prm = {n: Signal.like(getattr(self, n), name=f"p_{n}")
               for n in ("op", "relu", "lgk", "b", "c", "ho", "wo", "w", "zs_b", "zs_c",
                         "ns_b", "ns_c", "ns_y", "ns_x", "ks_b", "ks_c", "src", "dst", "aux",
                         "keep", "one")}
        P = type("P", (), prm)
        fwd, bwd, loss = P.op == STAGE_FWD, P.op == STAGE_BWD, P.op == STAGE_LOSS
        kk = Signal(3)                           # the window side k = 2**lgk
        m.d.comb += kk.eq(Const(1, 3) << P.lgk)
        vec = Signal()                           # vector mode (stage_lanes)

        def low(v):
            return v[:lge] if lge else Const(0, 1)

        # -- the loop nest: counters and, per address stream, one term per level (term =
        # index * stride, advanced by adds: no multiplier). Vector mode: the "xo" level
        # counts word chunks of a row (W / E), "rx" has one value.
        lvls = ("b", "c", "yo", "ry", "xo", "rx")
        cnt = {l: Signal(16, name=f"i_{l}") for l in lvls}
        lim_xo, lim_rx = Signal(16), Signal(3)
        m.d.comb += [lim_xo.eq(Mux(vec, P.w >> lge, P.wo)), lim_rx.eq(Mux(vec, 1, kk))]
        lim = {"b": P.b, "c": P.c, "yo": P.ho, "xo": lim_xo, "ry": kk, "rx": lim_rx}
        tw = aw + 2
        qn = Signal(range(E + 1))                # pooled columns per chunk: E / k or 1
        m.d.comb += qn.eq(Mux(vec, Const(E, range(E + 1)) >> P.lgk, 1))
        strides = {   # stream -> level -> stride
            "z": {"b": P.zs_b, "c": P.zs_c, "yo": P.w << P.lgk, "ry": P.w,
                  "xo": Mux(vec, E, kk), "rx": 1},
            "n": {"b": P.ns_b, "c": P.ns_c, "yo": P.ns_y, "xo": Mux(vec, qn, P.ns_x)},
            "k": {"b": P.ks_b, "c": P.ks_c, "yo": P.wo, "xo": qn},
            "l": {"b": 1},
        }
        terms = {s: {l: Signal(tw, name=f"t_{s}_{l}") for l in d} for s, d in strides.items()}
        running = Signal()
        issue = Signal()
        m.d.comb += issue.eq(running)

        def walk(order):
            carry = issue
            for lv in reversed(order):
                at_end = cnt[lv] == lim[lv] - 1
                with m.If(carry):
                    with m.If(at_end):
                        m.d.sync += cnt[lv].eq(0)
                        for s in terms:
                            if lv in terms[s]:
                                m.d.sync += terms[s][lv].eq(0)
                    with m.Else():
                        m.d.sync += cnt[lv].eq(cnt[lv] + 1)
                        for s in terms:
                            if lv in terms[s]:
                                m.d.sync += terms[s][lv].eq(terms[s][lv] + strides[s][lv])
                carry = carry & at_end
            with m.If(carry):                    # the last element was counted
                m.d.sync += running.eq(0)

        with m.If(bwd):
            walk(("b", "c", "yo", "ry", "xo", "rx"))    # z's C order (the writes)
        with m.Else():
            walk(("b", "c", "yo", "xo", "ry", "rx"))    # window by window (the reads)

        def total(s):
            vals = list(terms[s].values())
            acc = vals[0]
            for v in vals[1:]:
                acc = acc + v
            return acc

        # -- stage A: absolute element addresses and the element's metadata, registered
        va = Signal()
        a_z, a_n, a_l = Signal(tw), Signal(tw), Signal(tw)
        a_k = Signal(self._kaw + 1)
        a_ry, a_rx, a_first, a_last, a_c = Signal(2), Signal(2), Signal(), Signal(), Signal(16)
        m.d.sync += [va.eq(issue), a_z.eq(total("z")), a_n.eq(total("n")),
                     a_l.eq(P.aux + total("l")), a_k.eq(P.keep + total("k")),
                     a_ry.eq(cnt["ry"]), a_rx.eq(cnt["rx"]),
                     a_first.eq((cnt["ry"] == 0) & (cnt["rx"] == 0)),
                     a_last.eq((cnt["ry"] == kk - 1) & (cnt["rx"] == lim_rx - 1)),
                     a_c.eq(cnt["c"])]
        # -- stage B: the reads (OUT: z, or d in BWD; ACT: the label; KEEP: the entries)
        src_e = P.src + Mux(bwd, a_n, a_z)
        lab_e = a_l
        m.d.comb += [self.out_raddr.eq(src_e >> lge), self.act_raddr.eq(lab_e >> lge),
                     krd.addr.eq(a_k >> lge), krd.en.eq(1)]
        vb, b_ry, b_rx, b_first, b_last, b_c = (Signal(), Signal(2), Signal(2), Signal(),
                                                 Signal(), Signal(16))
        b_sel, b_lsel, b_ksel = Signal(max(1, lge)), Signal(max(1, lge)), Signal(max(1, lge))
        b_w = Signal(tw)                         # the write's element address
        b_k = Signal(self._kaw + 1)
        m.d.sync += [vb.eq(va), b_ry.eq(a_ry), b_rx.eq(a_rx), b_first.eq(a_first),
                     b_last.eq(a_last), b_c.eq(a_c), b_k.eq(a_k),
                     b_w.eq(P.dst + Mux(fwd, a_n, a_z)),
                     b_sel.eq(low(src_e)), b_lsel.eq(low(lab_e)), b_ksel.eq(low(a_k))]

        # -- stage C: the lanes. ``dsh``: the OUT word shifted down to the element's lane --
        # scalar mode's element, or (vector) the chunk's z word (aligned: no shift) / its
        # d values (from lane (src + n) % E, a multiple of E / k)
        def lane(word, k, width):
            return word.word_select(k, width)

        def shr(word, sel, width):
            """``word`` shifted down by ``sel`` lanes of ``width`` bits (lane offsets times a
            constant as shifted adds: a ``$mul`` would take a DSP block on ECP5)."""
            return word >> const_mul(sel, width) if lge else word

        dsh = shr(self.out_rdata, b_sel, dw)
        v = [Signal(signed(dw), name=f"v{l}") for l in range(E)]
        for l in range(E):
            m.d.comb += v[l].eq(lane(dsh, l, dw))
        lab = Signal(dw)
        m.d.comb += lab.eq(lane(shr(self.act_rdata, b_lsel, dw), 0, dw))
        r = [Signal(signed(dw), name=f"r{l}") for l in range(E)]
        for l in range(E):
            m.d.comb += r[l].eq(Mux(P.relu & (v[l] < 0), 0, v[l]))
        lgv = Signal(2)                          # lgk in vector mode, else 0 (one lane)
        m.d.comb += lgv.eq(Mux(vec, P.lgk, 0))

        # FWD: each pooled column q's candidate over its lanes (first maximum on ties), then
        # merged with the rows before it (strictly greater replaces: earlier rows win ties)
        AW = 2 * LGK_MAX
        cand = [Signal(signed(dw), name=f"cand{q}") for q in range(E)]
        cpos = [Signal(AW, name=f"cpos{q}") for q in range(E)]
        for q in range(E):
            with m.Switch(lgv):
                for lg in range(min(LGK_MAX, lge) + 1):
                    k = 1 << lg
                    if q * k + k > E:
                        continue
                    with m.Case(lg):
                        bv, bx = r[q * k], Const(0, 2)
                        for dx in range(1, k):
                            better = r[q * k + dx] > bv
                            bv = Mux(better, r[q * k + dx], bv)
                            bx = Mux(better, dx, bx)
                        m.d.comb += [cand[q].eq(bv),
                                     cpos[q].eq((b_ry << P.lgk) | Mux(vec, bx, b_rx))]
        best = [Signal(signed(dw), name=f"best{q}") for q in range(E)]
        barg = [Signal(AW, name=f"barg{q}") for q in range(E)]
        cur = [Signal(signed(dw), name=f"cur{q}") for q in range(E)]
        carg = [Signal(AW, name=f"carg{q}") for q in range(E)]
        for q in range(E):
            with m.If(b_first | (cand[q] > best[q])):
                m.d.comb += [cur[q].eq(cand[q]), carg[q].eq(cpos[q])]
            with m.Else():
                m.d.comb += [cur[q].eq(best[q]), carg[q].eq(barg[q])]
            with m.If(vb):
                m.d.sync += [best[q].eq(cur[q]), barg[q].eq(carg[q])]

        # BWD: lane l's window is q = l >> lgk (scalar: q = 0), its position in the window
        # (ry, l % k) -- scalar (ry, rx); g = d[q] where the KEEP entry of q says it won
        kent = shr(krd.data, b_ksel, KW)
        g = [Signal(signed(dw), name=f"g{l}") for l in range(E)]
        for l in range(E):
            with m.Switch(lgv):
                for lg in range(min(LGK_MAX, lge) + 1):
                    q = l >> lg
                    e = lane(kent, q, KW)
                    pos = (b_ry << P.lgk) | Mux(vec, l & ((1 << lg) - 1), b_rx)
                    with m.Case(lg):
                        m.d.comb += g[l].eq(Mux(e[AW] & (e[:AW] == pos[:AW]),
                                                lane(dsh, q, dw), 0))

        # LOSS (scalar): sat(z - one * [label == c])
        smax, smin = (1 << (dw - 1)) - 1, -(1 << (dw - 1))
        diff = Signal(signed(dw + 2))
        m.d.comb += diff.eq(v[0] - Mux(lab == b_c, P.one, 0))
        g_l = Mux(diff > smax, smax, Mux(diff < smin, smin, diff))[:dw]

        # -- stage D: the write (FWD: qn pooled values from lane b_w % E; else E or 1 lanes)
        nval = Mux(fwd, qn, Mux(vec, E, 1))
        vals = Cat(*[Mux(fwd, cur[l], Mux(bwd, g[l], g_l if l == 0 else 0))[:dw]
                     for l in range(E)])
        wsel = low(b_w)
        wv = vb & (~fwd | b_last)
        ones = Signal(E + 1)
        m.d.comb += ones.eq((Const(1, E + 1) << nval) - 1)
        m.d.sync += [self.wr_act.eq(wv & fwd), self.wr_grad.eq(wv & ~fwd),
                     self.wr_addr.eq(b_w >> lge),
                     self.wr_data.eq(vals << const_mul(wsel, dw) if lge else vals),
                     self.wr_en.eq(Mux(wv, (ones[:E] << wsel)[:E] if lge else ones[:E], 0))]
        # the KEEP entries of the pooled values (FWD)
        kvals = Cat(*[Cat(carg[q], Mux(P.relu, cur[q] > 0, 1)) for q in range(E)])
        ksel = low(b_k)
        m.d.comb += [kwr.addr.eq(b_k >> lge),
                     kwr.data.eq(kvals << const_mul(ksel, KW) if lge else kvals),
                     kwr.en.eq(Mux(vb & fwd & b_last,
                                   (ones[:E] << ksel)[:E] if lge else ones[:E], 0))]
        with m.If(vb & loss & (lab >= P.c)):
            m.d.sync += self.bad_label.eq(1)
        vd = Signal()
        m.d.sync += vd.eq(vb)

        m.d.comb += self.busy.eq(running | va | vb | vd)
        with m.If(self.start & ~self.busy):
            m.d.sync += [v_.eq(getattr(self, n)) for n, v_ in prm.items()]
            m.d.sync += [running.eq(1), self.bad_label.eq(0)]
            m.d.sync += [c_.eq(0) for c_ in cnt.values()]
            m.d.sync += [t.eq(0) for d in terms.values() for t in d.values()]
            if lge:
                aligned = (self.w[:lge] == 0) & (self.src[:lge] == 0) & \
                    (self.dst[:lge] == 0) & (self.keep[:lge] == 0)
            else:
                aligned = Const(1)
            m.d.sync += vec.eq(self.conv_layouts & (self.op != STAGE_LOSS) &
                               (self.lgk <= lge) & aligned)
        return m
