"""Stochastic gradient pruner (SparseTrain): gradient stream in, pruned gradient stream out."""

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int, read_only
from sparseforge.hdl.arith import pipelined_umul, umul_latency

__all__ = ["StochasticPruner", "grad_elem_layout", "xorshift32_step", "RESET_SEED"]

#: PRNG state after reset (a non-zero xorshift32 state; 0 is the generator's fixed point).
RESET_SEED = 1

_MASK32 = 0xFFFF_FFFF


def grad_elem_layout(data_width: int) -> data.StructLayout:
    """One gradient element: ``value`` (signed), ``last`` (final element of the tensor / job).

    ``value`` occupies the least significant ``data_width`` bits of the flattened payload,
    ``last`` the bit above.
    """
    return data.StructLayout({
        "value": signed(data_width),
        "last": unsigned(1),
    })


def xorshift32_step(x):
    """One xorshift32 (13, 17, 5) step: on a Python int, or as Amaranth logic on a 32-bit value.

    ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` (logical shifts, truncated to 32 bits), the same
    generator as :func:`sparseforge.sim.reference.prng.xorshift32_step`.
    """
    if isinstance(x, int):
        x ^= (x << 13) & _MASK32
        x ^= x >> 17
        return x ^ ((x << 5) & _MASK32)
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:32]


class StochasticPruner(wiring.Component):
    """Stochastic pruning of a gradient stream (Ye et al.), with the next pass's threshold.

    Every element ``g`` of a job (a gradient tensor, ended by ``last``) is pruned against the
    threshold ``tau``: ``|g| >= tau`` passes unchanged; otherwise it becomes ``tau * sign(g)``
    when ``r < |g|`` and 0 when not, with ``r`` uniform in ``[0, tau)`` — an unbiased rounding
    of the small gradients to ``{0, +-tau}``. Meanwhile the block sums ``|g|`` of the *input*
    gradients and, at the end of the job, computes the integer threshold for the next pass,
    ``tau_next = (sum|g| * k_p) >> shift`` clamped to ``[0, 2**(data_width-1) - 1]``, exactly
    :func:`sparseforge.sim.reference.golden.prune_threshold_int` ``(g, k_p, shift, data_width)``.

    Parameters
    ----------
    data_width : int, in [2, 48]
        Width of the signed gradient values.
    sum_width : int or None, in [data_width, 128]
        Width of the ``sum|g|`` accumulator. ``None`` (default): ``data_width + 24``, exact for
        jobs of up to ``2**24`` elements of any value (``-2**(data_width-1)`` included). A sum
        that does not fit saturates at ``2**sum_width - 1`` and sets ``overflow``.
    kp_width : int, in [1, 64]
        Width of the ``k_p`` port (32 holds every ``k_p`` of
        :func:`~sparseforge.sim.reference.golden.prune_threshold_params`).
    shift_max : int, in [0, 255]
        Largest threshold shift to support; the ``shift`` port is ``shift_max.bit_length()``
        bits wide (at least 1). Every value of the port shifts exactly.

    Ports
    -----
    i : In(stream.Signature(grad_elem_layout(data_width)))
        Gradient elements ``(value, last)``; ``last`` marks the final element of a job.
    o : Out(stream.Signature(grad_elem_layout(data_width)))
        The pruned elements, one per input element, in order, ``last`` passed through.
    tau : In(data_width - 1)
        Pruning threshold (unsigned). Hold stable during a job. ``tau = 0`` keeps everything.
    seed : In(32), seed_load : In(1)
        ``seed_load`` (a strobe) loads ``seed`` into the PRNG state at the next clock edge.
        ``i.ready`` is low while ``seed_load`` is high, so a load never coincides with a
        transfer: the element after the load is the first one to use the new seed. Load a
        non-zero seed (0 is the xorshift fixed point: ``r`` would stay 0). After reset the state
        is :data:`RESET_SEED` (1).
    state : Out(32)
        The PRNG state after the last accepted element (the golden model's ``final_state``).
    k_p : In(kp_width), shift : In(shift_max.bit_length())
        Threshold constants (computed offline by
        :func:`~sparseforge.sim.reference.golden.prune_threshold_params`). Hold them stable from the
        job's last element until ``tau_next`` is updated (in practice: per layer).
    clear : In(1)
        Strobe: restarts the current job's ``abs_sum``/``overflow``, zeroes ``count``,
        ``nnz_out``, ``tau_next`` and ``tau_next_valid``, and discards a threshold still being
        computed. An element accepted in the same cycle counts as the first one after the clear.
        The PRNG state and the element pipeline are not affected.
    abs_sum : Out(sum_width)
        ``sum|g|`` of the current job's accepted input elements (``|-2**(data_width-1)|``
        counts as ``2**(data_width-1)``). A job starts with the first element accepted after
        reset, ``clear`` or a ``last`` element, so after a job's last element ``abs_sum`` holds
        that job's total until the next job's first element is accepted.
    overflow : Out(1)
        The current job's ``abs_sum`` saturated (same lifetime as ``abs_sum``).
    tau_next : Out(data_width - 1), tau_next_valid : Out(1)
        ``min((abs_sum * k_p) >> shift, 2**(data_width-1) - 1)`` of the most recent completed
        job. Both update on the ``TAU_LATENCY``-th clock edge after the edge that accepts a
        job's last element (1 edge to flag the job's end, then the pipelined multiplier of
        :func:`~sparseforge.hdl.arith.pipelined_umul`; 5 edges for the default 40 x 32 bits;
        shift and clamp happen as ``tau_next`` is written), and
        then hold until the next job's end. ``tau_next_valid`` is sticky: 1 once any job has
        completed since reset or ``clear``. Back-to-back jobs are fine: the threshold pipeline
        captures ``abs_sum`` before the next job's first element can change it.
    count : Out(32)
        Elements accepted on ``i`` since reset or ``clear`` (performance counter, wraps).
    nnz_out : Out(32)
        Non-zero elements transferred on ``o`` since reset or ``clear`` (wraps).

    Timing
    ------
    Latency ``LATENCY`` = 2 cycles: an element accepted at clock edge ``t`` is offered on ``o``
    right after edge ``t + 1`` (stage 1, at the accepting edge, registers ``r = (u * tau) >>
    16``, ``|g|`` and the value the element becomes if it survives, ``g`` when ``|g| >= tau``
    else ``tau * sign(g)``; stage 2 compares ``r < |g|`` and loads the output register with
    that value or 0). Throughput one element per cycle, sustained, when
    ``o`` is not back-pressured and ``seed_load`` is low. Both stages advance together:
    ``i.ready = (o.ready | ~o.valid) & ~seed_load``, and while ``o.valid & ~o.ready`` the whole
    pipeline (a bubble included) holds, so no element is lost or duplicated. Ready depends
    combinationally on ``o.ready`` and ``seed_load`` (allowed by the stream rules); ``o.valid``
    never depends on ``o.ready``. While ``o.valid & ~o.ready`` the output payload is held
    stable. Up to 2 accepted elements are in flight; ``count``, ``abs_sum``, ``state`` and the
    threshold pipeline count an element when it is *accepted*, ``nnz_out`` when it leaves.

    PRNG
    ----
    xorshift32 (Marsaglia 13/17/5), one step per *accepted* element, pruned or not: ``state =
    step(state); u = state >> 16; r = (u * tau) >> 16`` (in ``[0, tau)``). The block keeps the
    stepped state precomputed in a look-ahead register, so ``u`` comes from a flip-flop and
    ``u * tau`` is a register-to-register multiply; the element takes its ``r`` (from its own
    ``u``) and everything it needs from ``tau`` into stage 1, so the pipeline computes exactly
    what the golden model computes for that element, whatever happens to the ports later.
    """

    LATENCY = 2

    @property
    def TAU_LATENCY(self) -> int:
        """Clock edges from accepting a job's last element to ``tau_next`` updating."""
        return 1 + umul_latency(self._sum_width, self._kp_width)

    def __init__(self, *, data_width: int = 16, sum_width: int | None = None,
                 kp_width: int = 32, shift_max: int = 63):
        self._data_width = check_int("data_width", data_width, 2, 48)
        if sum_width is None:
            sum_width = data_width + 24
        self._sum_width = check_int("sum_width", sum_width, data_width, 128)
        self._kp_width = check_int("kp_width", kp_width, 1, 64)
        self._shift_max = check_int("shift_max", shift_max, 0, 255)
        self._shift_width = max(1, shift_max.bit_length())
        layout = grad_elem_layout(data_width)
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "tau": In(data_width - 1),
            "seed": In(32),
            "seed_load": In(1),
            "state": Out(32, init=RESET_SEED),
            "k_p": In(kp_width),
            "shift": In(self._shift_width),
            "clear": In(1),
            "abs_sum": Out(self._sum_width),
            "overflow": Out(1),
            "tau_next": Out(data_width - 1),
            "tau_next_valid": Out(1),
            "count": Out(32),
            "nnz_out": Out(32),
        })

    data_width = read_only("_data_width")
    sum_width = read_only("_sum_width")
    kp_width = read_only("_kp_width")
    shift_max = read_only("_shift_max")
    shift_width = read_only("_shift_width")

    @property
    def tau_max(self):
        """Largest threshold: ``2**(data_width-1) - 1``."""
        return (1 << (self._data_width - 1)) - 1

    def elaborate(self, platform):
        m = Module()
        dw, sw = self._data_width, self._sum_width

        g = self.i.payload.value
        last = self.i.payload.last

        # ---- handshake: a 2-stage element pipeline that advances as a whole ----
        # `adv`: the output register is empty or being drained, so every stage may move one
        # step (*why* stall-as-a-whole: no skid buffer, no beat can be lost or duplicated, and
        # ready stays a function of o.ready / o.valid only). Bubbles move along with the data.
        adv = Signal()
        accept = Signal()
        m.d.comb += [
            adv.eq(self.o.ready | ~self.o.valid),
            self.i.ready.eq(adv & ~self.seed_load),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # ---- PRNG: `lookahead` is always step(state), the state the next element uses ----
        lookahead = Signal(32, init=xorshift32_step(RESET_SEED))
        with m.If(self.seed_load):
            m.d.sync += [
                self.state.eq(self.seed),
                lookahead.eq(xorshift32_step(self.seed)),
            ]
        with m.Elif(accept):
            m.d.sync += [
                self.state.eq(lookahead),
                lookahead.eq(xorshift32_step(lookahead)),
            ]

        # |g| of the offered element: feeds stage 1 and sum|g| (exact for the most negative g).
        mag = Signal(dw)
        m.d.comb += mag.eq(Mux(g < 0, -g, g))

        # ---- element pipeline, 2 stages (*why*: u*tau, the compare r < |g| and the output
        # mux in one cycle limited the block to 115 MHz on ECP5; now the multiply has a cycle
        # of its own, register to register) ----
        # Stage 1 (the accepting edge): r = (u * tau) >> 16 from the look-ahead state and the
        # live tau, |g|, and the value the element becomes if it survives: itself when |g| >=
        # tau, else tau * sign(g). Stage 2 never looks at the ports (a seed load or a new tau
        # cannot reach an accepted element).
        s1_valid = Signal()
        s1_last = Signal()
        s1_r = Signal(dw - 1)                  # in [0, tau)
        s1_mag = Signal(dw)
        s1_sel = Signal(signed(dw))            # g if |g| >= tau else tau * sign(g)
        with m.If(adv):
            m.d.sync += [
                s1_valid.eq(accept),
                s1_last.eq(last),
                s1_r.eq((lookahead[16:] * self.tau)[16:]),
                s1_mag.eq(mag),
                s1_sel.eq(Mux(mag >= self.tau, g, Mux(g < 0, -self.tau, self.tau))),
            ]
        # Stage 2: one compare and the output register. The element survives iff r < |g|:
        # with r < tau this also holds for every |g| >= tau except g = 0 at tau = 0, where the
        # output 0 equals g anyway; so r < |g| alone picks between s1_sel and 0.
        with m.If(adv):
            m.d.sync += [
                self.o.valid.eq(s1_valid),
                self.o.payload.value.eq(Mux(s1_r < s1_mag, s1_sel, 0)),
                self.o.payload.last.eq(s1_last),
            ]

        # ---- sum|g| of the current job (restarts after `last`, reset or `clear`) ----
        fresh = Signal(init=1)                 # the next accepted element starts a job
        restart = fresh | self.clear
        sum_ext = Signal(sw + 1)
        m.d.comb += sum_ext.eq(Mux(restart, 0, self.abs_sum) + mag)
        with m.If(accept):
            m.d.sync += [
                self.abs_sum.eq(Mux(sum_ext[sw], Const((1 << sw) - 1, sw), sum_ext[:sw])),
                self.overflow.eq((self.overflow & ~restart) | sum_ext[sw]),
                fresh.eq(last),
            ]
        with m.Elif(self.clear):
            m.d.sync += [self.abs_sum.eq(0), self.overflow.eq(0), fresh.eq(1)]

        # ---- performance counters ----
        nz_out = self.o.valid & self.o.ready & (self.o.payload.value != 0)
        m.d.sync += [
            self.count.eq(Mux(self.clear, 0, self.count) + accept),
            self.nnz_out.eq(Mux(self.clear, 0, self.nnz_out) + nz_out),
        ]

        # ---- next threshold: abs_sum * k_p (pipelined), then shift and clamp ----
        # The multiplier runs freely on abs_sum; a valid bit follows the finished job's total
        # through it, and `clear` cancels it at any stage.
        job_end = Signal()                     # abs_sum holds a finished job's total
        m.d.sync += job_end.eq(accept & last)
        prod, mul_latency = pipelined_umul(m, self.abs_sum, self.k_p, name="taumul")
        valid = job_end
        for k in range(mul_latency):
            nxt = Signal(name=f"tau_pipe{k}")
            m.d.sync += nxt.eq(valid & ~self.clear)
            valid = nxt
        shifted = Signal(len(prod))
        m.d.comb += shifted.eq(prod >> self.shift)
        too_big = shifted[dw - 1:].any()
        with m.If(self.clear):
            m.d.sync += [self.tau_next.eq(0), self.tau_next_valid.eq(0)]
        with m.Elif(valid):
            m.d.sync += [
                self.tau_next.eq(Mux(too_big, Const(self.tau_max, dw - 1), shifted[:dw - 1])),
                self.tau_next_valid.eq(1),
            ]

        return m
