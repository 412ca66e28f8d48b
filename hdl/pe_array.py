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

Ports (``i`` a PE row, ``j`` a PE column; all streams are ``amaranth.lib.stream``; the arrays
flatten to Verilog ports such as ``x__0__valid``, ``taps__1__0__payload``, ``o__1__ready``)
-----------------------------------------------------------------------------------------------
x[i] : In(stream).array(rows)  PE layout ``x``
    Operand rows of PE row ``i``, **broadcast** to its ``cols`` PEs: a beat transfers when all
    of them are ready (``x.ready`` of a PE is registered state, so this adds no combinational
    path). A PE with no tap for a row consumes it with a 1-cycle skip bundle.
taps[i][j] : In(stream).array(rows, cols)  PE layout ``taps``
    Tap bundles of PE ``(i, j)``.
dense[i][j] : In(stream).array(rows, cols)  PE layout ``dense``
    WG: the X scratchpad of PE ``(i, j)``.
drain[j] : In(stream).array(cols)  PE layout ``drain``
    Drain commands of column ``j``, broadcast to its ``rows`` PEs (which always drain raw).
o[j] : Out(stream).array(cols)  ``{value: signed(acc_width), last, end}``
    The column's reduced outputs (write-back applied unless ``raw``); ``last``/``end`` as the
    PE's. Honours back-pressure; ``o.valid`` is a register.
mode, stride2, pad, out_len, in_len, skip_zero : In
    Registered once inside each PE (each PE sees them one cycle later): set them at least one
    cycle before a job's first beat and hold them stable during the job.
raw : In(1)
    1: emit the raw ``acc_width`` column sums; 0: write-back to ``data_width``.
cycles : Out(48)
    Cycles in which any PE is in a job (the array's job time).
pe_sel : In(range(rows * cols)); sel : Out(Signature) with members cycles, busy_mac,
stall_in, stall_out, nnz : Out(48) (Verilog ``sel__cycles``, ...)
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
from sparseforge.hdl.arith import tree, writeback
from sparseforge.hdl.pe import COUNTER_WIDTH, PE, pe_out_layout, pe_params
from sparseforge.hdl.skid import SkidBuffer

__all__ = ["PEArray", "COLUMN_LATENCY", "PE_COUNTERS"]

#: Extra cycles a column output takes after its PEs' drain beats (per-PE output skid buffer,
#: sum and write-back registers).
COLUMN_LATENCY = 3

#: The per-PE performance counters readable through ``pe_sel`` (members of the ``sel`` port,
#: named as the PE's counter outputs).
PE_COUNTERS = ("cycles", "busy_mac", "stall_in", "stall_out", "nnz")


class PEArray(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, rows: int = 2, cols: int = 2, **pe):
        self._rows = check_int("rows", rows, 1, 64)
        self._cols = check_int("cols", cols, 1, 64)
        self._pe_params = dict(pe)
        # The PEs are made here (validating their parameters) and elaborated as submodules.
        self._pes = [[PE(**pe) for _ in range(cols)] for _ in range(rows)]
        p = self._pes[0][0]
        super().__init__({
            "x": In(stream.Signature(p.x_layout)).array(rows),
            "taps": In(stream.Signature(p.taps_layout)).array(rows, cols),
            "dense": In(stream.Signature(p.dense_layout)).array(rows, cols),
            "drain": In(stream.Signature(p.drain_layout)).array(cols),
            "o": Out(stream.Signature(pe_out_layout(p.acc_width))).array(cols),
            "mode": In(2), "stride2": In(1), "pad": In(range(p.k_max + 1)),
            "out_len": In(range(p.max_row_len + 1)),
            "in_len": In(range(p.max_row_len + 1)),
            "skip_zero": In(1), "raw": In(1),
            "cycles": Out(COUNTER_WIDTH),
            "pe_sel": In(range(max(2, rows * cols))),
            "sel": Out(wiring.Signature({n: Out(COUNTER_WIDTH) for n in PE_COUNTERS})),
            "active": Out(1), "error": Out(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    pe_params = property(lambda self: dict(self._pe_params))

    @classmethod
    def from_config(cls, cfg, **overrides):
        p = pe_params(cfg)
        p.update(overrides)
        return cls(rows=cfg.pe_rows, cols=cfg.pe_cols, **p)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        pes = self._pes
        aw, dw, fb = pes[0][0].acc_width, pes[0][0].data_width, pes[0][0].frac_bits
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_r{i}_c{j}"] = pe = pes[i][j]
                # every PE registers its own copy of the controls (for Fmax; see the PE)
                m.d.comb += [pe.mode.eq(self.mode), pe.stride2.eq(self.stride2),
                             pe.pad.eq(self.pad), pe.out_len.eq(self.out_len),
                             pe.in_len.eq(self.in_len), pe.skip_zero.eq(self.skip_zero)]
                wiring.connect(m, wiring.flipped(self.taps[i][j]), pe.taps)
                wiring.connect(m, wiring.flipped(self.dense[i][j]), pe.dense)

        # operand broadcast along a PE row: one beat goes to all PEs at once
        for i in range(R):
            _broadcast(m, self.x[i], [pes[i][j].x for j in range(C)])

        col_v = []                        # column pipeline registers holding a beat
        for j in range(C):
            # drain broadcast down a column (PEs drain raw; the column writes back)
            _broadcast(m, self.drain[j], [pes[i][j].drain for i in range(R)])
            m.d.comb += [pes[i][j].drain.payload.raw.eq(1) for i in range(R)]

            # join + adder tree (stage 1) + write-back (stage 2), a 2-stage pipeline whose
            # stages advance when the next one is empty or moving
            o = self.o[j]
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
            v_all = tree([p.valid for p in outs], lambda a, b: a & b)
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
            total = tree([p.payload.value for p in outs], lambda a, b: (a + b)[:aw].as_signed())
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
        any_active = tree([p.active for p in flat], lambda a, b: a | b)
        # the array's job: from the first cycle any PE counts until no PE is active and the
        # column pipelines are empty
        col_busy = tree(col_v, lambda a, b: a | b)
        in_job = Signal()
        starting = tree([x.valid for x in self.x] + [d.valid for d in self.drain] +
                         [t.valid for row in self.taps for t in row], lambda a, b: a | b)
        m.d.comb += in_job.eq(any_active | col_busy | starting)
        with m.If(in_job):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += [self.active.eq(any_active | col_busy),
                     self.error.eq(tree([p.error for p in flat], lambda a, b: a | b))]
        with m.Switch(self.pe_sel):
            for k, p in enumerate(flat):
                with m.Case(k):
                    # the PE's counter outputs carry the names of the sel members
                    m.d.comb += [getattr(self.sel, n).eq(getattr(p, n))
                                 for n in self.sel.signature.members]
        return m


def _broadcast(m, src, dsts):
    """One stream to several consumers at once: a beat transfers when all of them are ready
    (so ``src.ready`` is the AND of their readies; no buffering, no latency)."""
    ready = tree([d.ready for d in dsts], lambda a, b: a & b)
    m.d.comb += src.ready.eq(ready)
    for d in dsts:
        m.d.comb += [d.valid.eq(src.valid & ready), d.payload.eq(src.payload)]
