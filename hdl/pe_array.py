"""PE array: ``rows x cols`` dual-sparse PEs with a partial-sum reduction per column.

Mapping (*ours*, implemented by :mod:`sparseforge.gen.mapper.array`): **columns partition the
outputs, rows partition the reduction**. PE ``(i, j)`` accumulates raw partial sums of its
share of the reduction (FP: operand rows ``x[b, c, h]`` with ``((b*H + h)*Cin + c) % rows ==
i``; BP: operand rows ``dy[b, n, y]`` with ``((b*Ho + y)*Cout + n) % rows == i``; WG: operand
rows ``dy[b, n, y]`` with ``((b*Cout + n)*Ho + y) % rows == i``) for
the outputs of column ``j`` (FP: output channels ``n % cols == j``; BP: input-gradient channels
``c % cols == j``; WG: weight gradients of input channels ``c % cols == j``). At drain time the
column adds the raw sums of its ``rows`` PEs with an adder tree and applies the write-back
(shift by ``frac_bits``, round half to even, saturate) unless ``raw`` is set. Operand rows are
dealt round-robin ("interleaved"; FP/BP channel index fastest, WG ``y`` fastest because a WG
tile holds few output-gradient channels), so rows of uneven density spread over the PE rows,
and so does every tile (a row-band tile touches only a few input rows); a PE row left without
operand rows streams one skip row.

Parameters
----------
rows, cols : int, [1, 64]
    Array shape (``pe_rows`` x ``pe_cols``).
pe : dict
    The :class:`~sparseforge.hdl.pe.PE` parameters (``pe_params(cfg)``), the same for all PEs.

Ports (``i`` a PE row, ``j`` a PE column; all streams are ``amaranth.lib.stream``)
-----------------------------------------------------------------------------------
x_r{i} : In(stream)  PE layout ``x``
    Operand rows of PE row ``i``, **broadcast** to its ``cols`` PEs: a beat transfers when all
    of them are ready (``x.ready`` of a PE is registered state, so this adds no combinational
    path). A PE with no tap for a row consumes it with a 1-cycle skip bundle.
taps_r{i}_c{j} : In(stream)  PE layout ``taps``
    Tap bundles of PE ``(i, j)``.
dense_r{i}_c{j} : In(stream)  PE layout ``dense``
    WG: the X scratchpad of PE ``(i, j)``.
drain_c{j} : In(stream)  PE layout ``drain``
    Drain commands of column ``j``, broadcast to its ``rows`` PEs (which always drain raw).
o_c{j} : Out(stream)  ``{value: signed(acc_width), last, end}``
    The column's reduced outputs (write-back applied unless ``raw``); ``last``/``end`` as the
    PE's. Honours back-pressure; ``o.valid`` is a register.
mode, stride2, pad, out_len, in_len, skip_zero : In
    Registered once inside each PE (each PE sees them one cycle later): set them at least one
    cycle before a job's first beat and hold them stable during the job.
raw : In(1)
    1: emit the raw ``acc_width`` column sums; 0: write-back to ``data_width``.
cycles : Out(48)
    Cycles in which any PE is in a job (the array's job time).
pe_sel : In(range(rows * cols)); sel_cycles, sel_busy_mac, sel_stall_in, sel_stall_out,
sel_nnz : Out(48)
    The performance counters of PE ``pe_sel = i * cols + j`` (a read mux: summing 48-bit
    counters of hundreds of PEs in hardware would cost more than it is worth; the driver adds
    them). ``active`` (any PE active), ``error`` (any PE's sticky error).

Latency / throughput: a column output leaves 3 cycles after all of its PEs present the beat
(each PE's output skid buffer, adder tree register, write-back register); one beat per cycle
per column. The PE's own latencies and cycle formula are in :mod:`sparseforge.hdl.pe`; the
array's exact cycle model
(broadcast coupling of a PE row, drain coupling of a column) is
:func:`sparseforge.gen.mapper.array.cycles`.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.arith import writeback
from sparseforge.hdl.pe import COUNTER_WIDTH, PE, _tree, pe_out_layout
from sparseforge.hdl.skid import SkidBuffer

__all__ = ["PEArray", "COLUMN_LATENCY"]

#: Extra cycles a column output takes after its PEs' drain beats (per-PE output skid buffer,
#: sum and write-back registers).
COLUMN_LATENCY = 3


class PEArray(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, rows: int = 2, cols: int = 2, **pe):
        self._rows = check_int("rows", rows, 1, 64)
        self._cols = check_int("cols", cols, 1, 64)
        self._pe_params = dict(pe)
        proto = PE(**pe)                  # validates the PE parameters, gives the layouts
        proto._MustUse__used = True       # only a prototype: never elaborated
        self._proto = proto
        sig = {}
        for i in range(rows):
            sig[f"x_r{i}"] = In(stream.Signature(proto.x_layout))
            for j in range(cols):
                sig[f"taps_r{i}_c{j}"] = In(stream.Signature(proto.taps_layout))
                sig[f"dense_r{i}_c{j}"] = In(stream.Signature(proto.dense_layout))
        for j in range(cols):
            sig[f"drain_c{j}"] = In(stream.Signature(proto.drain_layout))
            sig[f"o_c{j}"] = Out(stream.Signature(pe_out_layout(proto.acc_width)))
        sig.update({
            "mode": In(2), "stride2": In(1), "pad": In(range(proto.k_max + 1)),
            "out_len": In(range(proto.max_row_len + 1)),
            "in_len": In(range(proto.max_row_len + 1)),
            "skip_zero": In(1), "raw": In(1),
            "cycles": Out(COUNTER_WIDTH),
            "pe_sel": In(range(max(2, rows * cols))),
            "sel_cycles": Out(COUNTER_WIDTH), "sel_busy_mac": Out(COUNTER_WIDTH),
            "sel_stall_in": Out(COUNTER_WIDTH), "sel_stall_out": Out(COUNTER_WIDTH),
            "sel_nnz": Out(COUNTER_WIDTH),
            "active": Out(1), "error": Out(1),
        })
        super().__init__(sig)

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pe_params = property(lambda self: dict(self._pe_params))
    pe_proto = property(lambda self: self._proto)

    @classmethod
    def from_config(cls, cfg, **overrides):
        from sparseforge.hdl.pe import pe_params
        p = pe_params(cfg)
        p.update(overrides)
        return cls(rows=cfg.pe_rows, cols=cfg.pe_cols, **p)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        aw, dw, fb = self._proto.acc_width, self._proto.data_width, self._proto.frac_bits
        pes = [[PE(**self._pe_params) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_r{i}_c{j}"] = pe = pes[i][j]
                # every PE registers its own copy of the controls (for Fmax; see the PE)
                for name in ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero"):
                    m.d.comb += getattr(pe, name).eq(getattr(self, name))
                wiring.connect(m, wiring.flipped(getattr(self, f"taps_r{i}_c{j}")), pe.taps)
                wiring.connect(m, wiring.flipped(getattr(self, f"dense_r{i}_c{j}")), pe.dense)

        # operand broadcast along a PE row: one beat goes to all PEs at once
        for i in range(R):
            x = getattr(self, f"x_r{i}")
            all_ready = _tree([pes[i][j].x.ready for j in range(C)], lambda a, b: a & b)
            m.d.comb += x.ready.eq(all_ready)
            for j in range(C):
                m.d.comb += [pes[i][j].x.valid.eq(x.valid & all_ready),
                             pes[i][j].x.payload.eq(x.payload)]

        col_v = []                        # column pipeline registers holding a beat
        for j in range(C):
            # drain broadcast down a column (PEs drain raw; the column writes back)
            dr = getattr(self, f"drain_c{j}")
            d_ready = _tree([pes[i][j].drain.ready for i in range(R)], lambda a, b: a & b)
            m.d.comb += dr.ready.eq(d_ready)
            for i in range(R):
                m.d.comb += [pes[i][j].drain.valid.eq(dr.valid & d_ready),
                             pes[i][j].drain.payload.eq(dr.payload),
                             pes[i][j].drain.payload.raw.eq(1)]

            # join + adder tree (stage 1) + write-back (stage 2), a 2-stage pipeline whose
            # stages advance when the next one is empty or moving
            o = getattr(self, f"o_c{j}")
            # Every PE's output enters a 2-entry skid buffer beside it (for Fmax: the PE's drain
            # pipeline then stalls on a local register, not on the column's join of all its
            # PEs, which was the ECP5 critical path, 8.6 ns, nearly all routing). One cycle of
            # latency (COLUMN_LATENCY), full rate.
            outs = []
            for i in range(R):
                q = SkidBuffer(pe_out_layout(aw))
                m.submodules[f"o_q_r{i}_c{j}"] = q
                wiring.connect(m, pes[i][j].o, q.i)
                outs.append(q.o)
            v_all = _tree([p.valid for p in outs], lambda a, b: a & b)
            s1v, s1_last, s1_end = Signal(name=f"c{j}_s1v"), Signal(), Signal()
            s1_sum = Signal(signed(aw), name=f"c{j}_sum")
            col_v += [s1v, o.valid]
            s2_go = Signal()
            m.d.comb += s2_go.eq(~o.valid | o.ready)
            s1_go = Signal()
            m.d.comb += s1_go.eq(~s1v | s2_go)
            # A skid register in front of stage 1 (for Fmax): the PEs' ready is ~skv & (all
            # PEs valid), registers only, so the column's back-pressure (o.ready -> stage 2 -> stage 1) no longer
            # reaches the PEs' drain pipelines combinationally; with stage 1 free the rate stays
            # one beat per cycle. A beat taken while stage 1 is stalled waits in the skid.
            skv, sk_last, sk_end = Signal(name=f"c{j}_skv"), Signal(), Signal()
            sk_sum = Signal(signed(aw), name=f"c{j}_sksum")
            col_v.append(skv)
            take = v_all & ~skv
            for p in outs:                 # all of a column's PEs hand over together
                m.d.comb += p.ready.eq(take)
            total = _tree([p.payload.value for p in outs], lambda a, b: (a + b)[:aw].as_signed())
            with m.If(s1_go):
                with m.If(skv):
                    m.d.sync += [s1v.eq(1), s1_sum.eq(sk_sum), s1_last.eq(sk_last),
                                 s1_end.eq(sk_end), skv.eq(0)]
                with m.Else():
                    m.d.sync += [s1v.eq(take), s1_sum.eq(total),
                                 s1_last.eq(outs[0].payload.last),
                                 s1_end.eq(outs[0].payload.end)]
            with m.Elif(take):
                m.d.sync += [skv.eq(1), sk_sum.eq(total), sk_last.eq(outs[0].payload.last),
                             sk_end.eq(outs[0].payload.end)]
            sat = writeback(m, s1_sum, acc_width=aw, frac_bits=fb, data_width=dw,
                            name=f"c{j}_wb")
            with m.If(s2_go):
                m.d.sync += [o.valid.eq(s1v), o.payload.value.eq(Mux(self.raw, s1_sum, sat)),
                             o.payload.last.eq(s1_last), o.payload.end.eq(s1_end)]

        flat = [pes[i][j] for i in range(R) for j in range(C)]
        any_active = _tree([p.active for p in flat], lambda a, b: a | b)
        # the array's job: from the first cycle any PE counts until no PE is active and the
        # column pipelines are empty
        col_busy = _tree(col_v, lambda a, b: a | b)
        in_job = Signal()
        starting = _tree([getattr(self, f"x_r{i}").valid for i in range(R)] +
                         [getattr(self, f"drain_c{j}").valid for j in range(C)] +
                         [getattr(self, f"taps_r{i}_c{j}").valid
                          for i in range(R) for j in range(C)], lambda a, b: a | b)
        m.d.comb += in_job.eq(any_active | col_busy | starting)
        with m.If(in_job):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += [self.active.eq(any_active | col_busy),
                     self.error.eq(_tree([p.error for p in flat], lambda a, b: a | b))]
        for name in ("cycles", "busy_mac", "stall_in", "stall_out", "nnz"):
            out = getattr(self, f"sel_{name}")
            with m.Switch(self.pe_sel):
                for k, p in enumerate(flat):
                    with m.Case(k):
                        m.d.comb += out.eq(getattr(p, name))
        return m
