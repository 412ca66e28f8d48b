"""Between-layer stages on chip (issue 17 item 1): the data plane's ``CMD_STAGE`` command.

:class:`StageUnit` runs one of three element-wise stages of the training step
(docs/e2e.md, ``sim/host/e2e.py::train_step``) between the data plane's buffers, one element
per cycle, so a layer's output goes from ``BUF_OUT`` to the next layer's input in ``BUF_ACT``
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
    One element write per cycle (``wr_en`` one lane, the value in every lane) into ``BUF_ACT``
    (``STAGE_FWD``) or ``BUF_GRAD``.

Latency/throughput: one element read per cycle; a job takes ``B*C*H*W`` (FWD, BWD; ``B*C`` for
LOSS) cycles plus :data:`STAGE_OVERHEAD` (:func:`stage_cycles`).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["StageUnit", "STAGE_FWD", "STAGE_BWD", "STAGE_LOSS", "STAGE_OVERHEAD", "KEEP_WIDTH",
           "LGK_MAX", "stage_cycles", "stage_strides"]

STAGE_FWD, STAGE_BWD, STAGE_LOSS = 0, 1, 2
#: Largest ``lgk`` (pool window and stride ``2**lgk``): 4 x 4.
LGK_MAX = 2
#: Bits of a KEEP entry: the window position (``2 * LGK_MAX`` bits) and ``pos``.
KEEP_WIDTH = 2 * LGK_MAX + 1
#: Busy cycles of a stage beyond its element count: the address, read and compute stages of
#: the pipeline (the last element's write is presented 3 cycles after it is counted).
STAGE_OVERHEAD = 3


def stage_cycles(op: int, b: int, c: int, h: int, w: int) -> int:
    """Busy cycles (STAGE_CYCLES) of a stage over ``z`` of shape ``(b, c, h, w)``."""
    n = b * c * (1 if op == STAGE_LOSS else h * w)
    return n + STAGE_OVERHEAD


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
            "keep": In(self._kaw), "one": In(data_width),
            "busy": Out(1), "bad_label": Out(1),
            "out_raddr": Out(addr_width), "out_rdata": In(epw * data_width),
            "act_raddr": Out(addr_width), "act_rdata": In(epw * data_width),
            "wr_act": Out(1), "wr_grad": Out(1), "wr_addr": Out(addr_width),
            "wr_data": Out(epw * data_width), "wr_en": Out(epw),
        })

    keep_addr_width = property(lambda self: self._kaw)

    def elaborate(self, platform):
        m = Module()
        epw, dw, aw = self._epw, self._dw, self._aw
        lgepw = (epw - 1).bit_length()
        m.submodules.keep_mem = kmem = Memory(shape=KEEP_WIDTH, depth=self._keep, init=[])
        kwr, krd = kmem.write_port(), kmem.read_port()

        # -- latched parameters
        prm = {n: Signal.like(getattr(self, n), name=f"p_{n}")
               for n in ("op", "relu", "lgk", "b", "c", "ho", "wo", "w", "zs_b", "zs_c",
                         "ns_b", "ns_c", "ns_y", "ns_x", "ks_b", "ks_c", "src", "dst", "aux",
                         "keep", "one")}
        P = type("P", (), prm)
        fwd, bwd, loss = P.op == STAGE_FWD, P.op == STAGE_BWD, P.op == STAGE_LOSS
        kk = Signal(3)                           # the window side k = 2**lgk
        m.d.comb += kk.eq(Const(1, 3) << P.lgk)

        # -- the loop nest: counters and, per address stream, one term per level
        # (term = index * stride, advanced by adds: no multiplier)
        lvls = ("b", "c", "yo", "ry", "xo", "rx")
        cnt = {l: Signal(16, name=f"i_{l}") for l in lvls}
        lim = {"b": P.b, "c": P.c, "yo": P.ho, "xo": P.wo, "ry": kk, "rx": kk}
        tw = aw + 2
        strides = {   # stream -> level -> stride
            "z": {"b": P.zs_b, "c": P.zs_c, "yo": P.w << P.lgk, "ry": P.w, "xo": kk, "rx": 1},
            "n": {"b": P.ns_b, "c": P.ns_c, "yo": P.ns_y, "xo": P.ns_x},
            "k": {"b": P.ks_b, "c": P.ks_c, "yo": P.wo, "xo": 1},
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
        a_p, a_first, a_last, a_c = Signal(2 * LGK_MAX), Signal(), Signal(), Signal(16)
        m.d.sync += [va.eq(issue), a_z.eq(total("z")), a_n.eq(total("n")),
                     a_l.eq(P.aux + total("l")), a_k.eq(P.keep + total("k")),
                     a_p.eq((cnt["ry"] << P.lgk) | cnt["rx"]),
                     a_first.eq((cnt["ry"] == 0) & (cnt["rx"] == 0)),
                     a_last.eq((cnt["ry"] == kk - 1) & (cnt["rx"] == kk - 1)),
                     a_c.eq(cnt["c"])]
        # -- stage B: the reads (OUT: z, or d in BWD; ACT: the label; KEEP: the entry)
        src_e = P.src + Mux(bwd, a_n, a_z)
        lab_e = a_l
        m.d.comb += [self.out_raddr.eq(src_e >> lgepw), self.act_raddr.eq(lab_e >> lgepw),
                     krd.addr.eq(a_k), krd.en.eq(1)]
        vb, b_p, b_first, b_last, b_c = Signal(), Signal(2 * LGK_MAX), Signal(), Signal(), \
            Signal(16)
        b_sel, b_lsel = Signal(max(1, lgepw)), Signal(max(1, lgepw))
        b_w = Signal(tw)                         # the write's element address
        b_k = Signal(self._kaw + 1)
        m.d.sync += [vb.eq(va), b_p.eq(a_p), b_first.eq(a_first), b_last.eq(a_last),
                     b_c.eq(a_c), b_k.eq(a_k),
                     b_w.eq(P.dst + Mux(fwd, a_n, a_z))]
        if lgepw:
            m.d.sync += [b_sel.eq(src_e[:lgepw]), b_lsel.eq(lab_e[:lgepw])]
        v = Signal(signed(dw))
        lab = Signal(dw)
        m.d.comb += [v.eq(self.out_rdata.word_select(b_sel, dw) if lgepw
                          else self.out_rdata[:dw]),
                     lab.eq(self.act_rdata.word_select(b_lsel, dw) if lgepw
                            else self.act_rdata[:dw])]
        # -- stage C: compute, registered as the write (stage D)
        best, barg = Signal(signed(dw)), Signal(2 * LGK_MAX)
        r = Signal(signed(dw))
        m.d.comb += r.eq(Mux(P.relu & (v < 0), 0, v))
        cur, carg = Signal(signed(dw)), Signal(2 * LGK_MAX)
        with m.If(b_first | (r > best)):           # strictly greater: ties keep the first
            m.d.comb += [cur.eq(r), carg.eq(b_p)]
        with m.Else():
            m.d.comb += [cur.eq(best), carg.eq(barg)]
        with m.If(vb):
            m.d.sync += [best.eq(cur), barg.eq(carg)]
        ke = krd.data
        g_b = Signal(signed(dw))
        m.d.comb += g_b.eq(Mux(ke[2 * LGK_MAX] & (ke[:2 * LGK_MAX] == b_p), v, 0))
        smax, smin = (1 << (dw - 1)) - 1, -(1 << (dw - 1))
        diff = Signal(signed(dw + 2))
        hit = lab == b_c
        m.d.comb += diff.eq(v - Mux(hit, P.one, 0))
        g_l = Mux(diff > smax, smax, Mux(diff < smin, smin, diff))[:dw]
        val = Mux(fwd, cur, Mux(bwd, g_b, g_l))[:dw]
        wv = vb & (~fwd | b_last)
        lane = Signal(epw)
        m.d.comb += lane.eq(Const(1, epw) << (b_w[:lgepw] if lgepw else 0))
        m.d.sync += [self.wr_act.eq(wv & fwd), self.wr_grad.eq(wv & ~fwd),
                     self.wr_addr.eq(b_w >> lgepw), self.wr_data.eq(val.replicate(epw)),
                     self.wr_en.eq(Mux(wv, lane, 0))]
        # the KEEP entry of a pooled value (FWD)
        m.d.comb += [kwr.addr.eq(b_k), kwr.en.eq(vb & fwd & b_last),
                     kwr.data.eq(Cat(carg, Mux(P.relu, cur > 0, 1)))]
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
        return m
