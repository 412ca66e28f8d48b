"""On-chip stochastic pruning of a gradient tensor held in the data plane's GRAD buffer, with
the threshold computed on chip (issue 17 item 2): the data plane's ``CMD_PRUNE`` command.

:class:`PruneUnit` works **in place** on ``n`` elements of the GRAD buffer from word ``base``
(``epw`` elements per ``dma_width``-bit word; the tensor starts on a word boundary), a whole word
(``epw`` elements) per cycle, in two passes over the buffer:

1. **threshold**: ``tau = min((sum|g| * k_p) >> shift, 2**(data_width-1) - 1)`` over the
   ``n`` elements -- :func:`sparseforge.sim.reference.golden.prune_threshold_int` ``(g, k_p,
   shift, data_width)`` (``k_p``, ``shift``: :func:`sparseforge.gen.numfmt.
   prune_threshold_params` of the prune rate and ``n``, the constants the schedule holds);
2. **prune**: every element ``g`` (C order, element ``i`` of the tensor) becomes
   ``g`` when ``|g| >= tau``, else ``tau * sign(g)`` when ``r < |g|``, else 0, with ``r = ((s_i
   >> 16) * tau) >> 16`` and ``s_i`` the xorshift32 state after ``i + 1`` steps from ``seed``
   -- :func:`sparseforge.sim.reference.golden.stochastic_prune_int` ``(g, tau, seed,
   data_width)``. The ``epw`` lanes of a word take the states ``A^(l+1) S`` of the word's
   base state ``S`` (``A`` the xorshift32 step as a 32 x 32 matrix over GF(2), powers
   computed at elaboration), and ``S`` advances by ``A^epw`` per word: the same sequence the
   one-element :class:`~sparseforge.hdl.pruner.StochasticPruner` draws, ``epw`` at a time.

Ports
-----
start : In(1)
    Latches ``base``, ``n``, ``k_p``, ``shift``, ``seed`` and starts (ignored while ``busy``).
    The caller checks them (``n >= 1``, ``seed != 0``, the range inside the buffer).
pre_ok : In(1), pre_sum : In(data_width + SUM_EXTRA)
    Sampled with ``start``: ``sum|g|`` of exactly these ``n`` elements is already known (the
    data plane sums a gradient while its DMA load writes it): pass 1 is skipped, ``tau``
    comes from ``pre_sum``.
base : In(word address), n : In(len_width), k_p : In(32), shift : In(shift_width), seed : In(32)
busy : Out(1)
    From ``start`` until the last word is written back.
tau : Out(data_width - 1)
    The threshold of the most recent job (held; 0 after reset).
rd_addr : Out(word address), rd_data : In(epw * data_width)
    A synchronous read port of the buffer (data the cycle after the address), always enabled.
wr_addr : Out(word address), wr_data : Out(epw * data_width), wr_en : Out(epw)
    The write-back: one word per cycle, a lane enable per element (the tensor's last word
    writes only its elements).

Latency/throughput: one word read per cycle in each pass; a job takes ``2 * ceil(n / epw)``
cycles plus :attr:`PruneUnit.overhead` (the read latency of both passes, the threshold's
multiplier and the write-back pipeline); with ``pre_ok``, ``ceil(n / epw)`` plus
:func:`prune_overhead` ``(summed=True)``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.arith import abs_lanes, masked_sum, pipelined_umul, tree, umul_latency
from sparseforge.hdl.pruner import xorshift32_step

__all__ = ["PruneUnit", "xorshift32_power", "prune_overhead", "prune_job_cycles",
           "SHIFT_WIDTH", "SUM_EXTRA"]

#: Width of the threshold shift (``prune_threshold_params`` allows shifts up to 127).
SHIFT_WIDTH = 7
#: Extra bits of the ``sum|g|`` accumulator over ``data_width``: exact for any ``n`` below
#: ``2**24`` (the descriptors' length width), like the stream pruner's.
SUM_EXTRA = 24


def xorshift32_power(k: int) -> list:
    """The xorshift32 step applied ``k`` times, as the images of the 32 unit vectors (column
    ``b`` = ``A^k (1 << b)``): the step is linear over GF(2), so ``A^k s`` is the XOR of the
    columns of the set bits of ``s``."""
    cols = []
    for b in range(32):
        x = 1 << b
        for _ in range(k):
            x = xorshift32_step(x)
        cols.append(x)
    return cols


def _apply(cols, s):
    """``A^k s`` in logic (``cols`` from :func:`xorshift32_power`)."""
    bits = []
    for r in range(32):
        terms = [s[b] for b in range(32) if (cols[b] >> r) & 1]
        bits.append(tree(terms, lambda a, b: a ^ b) if terms else Const(0, 1))
    return Cat(*bits)


def prune_overhead(data_width: int, summed: bool = False) -> int:
    """Busy cycles of a :class:`PruneUnit` job beyond its passes' words (``2 * ceil(n / epw)``,
    ``summed``: ``ceil(n / epw)``): the end of the sum pass (the last word's read latency and
    the check, 2; ``summed``: one cycle for the given sum to settle), the threshold (the
    multiplier's latency and the clamp, ``latency + 1``) and the end of the prune pass (read,
    two lane stages, the write and the check, 5)."""
    return (1 if summed else 2) + umul_latency(data_width + SUM_EXTRA, 32) + 1 + 5


def prune_job_cycles(n: int, epw: int, data_width: int, summed: bool = False) -> int:
    """Busy cycles (PRUNE_CYCLES) of a ``CMD_PRUNE`` job of ``n`` elements (``summed``: its
    ``sum|g|`` came with the gradient's load, so only the prune pass reads)."""
    return (1 if summed else 2) * -(-n // epw) + prune_overhead(data_width, summed)


class PruneUnit(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, epw: int, data_width: int, word_addr_width: int, len_width: int = 24):
        if epw < 1 or epw & (epw - 1):
            raise ValueError(f"epw must be a power of 2, not {epw}")
        self._epw, self._dw, self._waw, self._lw = epw, data_width, word_addr_width, len_width
        super().__init__({
            "start": In(1), "base": In(word_addr_width), "n": In(len_width),
            "k_p": In(32), "shift": In(SHIFT_WIDTH), "seed": In(32),
            "pre_ok": In(1), "pre_sum": In(data_width + SUM_EXTRA),
            "busy": Out(1), "tau": Out(data_width - 1),
            "rd_addr": Out(word_addr_width), "rd_data": In(epw * data_width),
            "wr_addr": Out(word_addr_width), "wr_data": Out(epw * data_width),
            "wr_en": Out(epw),
        })

    @property
    def overhead(self) -> int:
        """Busy cycles of a job beyond ``2 * ceil(n / epw)`` (:func:`prune_overhead`)."""
        return prune_overhead(self._dw)

    def elaborate(self, platform):
        m = Module()
        epw, dw = self._epw, self._dw
        lg = (epw - 1).bit_length()
        tau_max = (1 << (dw - 1)) - 1

        base, n = Signal(self._waw), Signal(self._lw)
        k_p, shift = Signal(32), Signal(SHIFT_WIDTH)
        ra = Signal(self._lw)                      # words issued in this pass
        rem = Signal(self._lw + 1)                 # elements from the next word to issue on
        words = Signal(self._lw)
        s_issue = Signal(32)                       # RNG state before the next issued word
        step_epw = xorshift32_power(epw)
        lane_pow = [xorshift32_power(l + 1) for l in range(epw)]

        def lane_mask(r):
            return Cat(*[(r > l) for l in range(epw)])

        # -- the read issue: one word per cycle while a pass runs
        issue = Signal()
        pass2 = Signal()
        m.d.comb += self.rd_addr.eq(base + ra)
        # stage 1: the word read in the previous cycle
        v1, msk1, a1 = Signal(), Signal(epw), Signal(self._waw)
        s1 = Signal(32)
        m.d.sync += [v1.eq(issue), msk1.eq(lane_mask(rem)), a1.eq(self.rd_addr), s1.eq(s_issue)]
        with m.If(issue):
            m.d.sync += [ra.eq(ra + 1), rem.eq(Mux(rem > epw, rem - epw, 0))]
            with m.If(pass2):
                m.d.sync += s_issue.eq(_apply(step_epw, s_issue))
        lanes = [self.rd_data.word_select(l, dw).as_signed() for l in range(epw)]
        mags = abs_lanes(self.rd_data, epw, dw)

        # -- pass 1: sum|g| of the valid lanes
        sum_w = dw + SUM_EXTRA
        acc = Signal(sum_w)
        with m.If(v1 & ~pass2):
            m.d.sync += acc.eq(acc + masked_sum(mags, msk1))
        prod, lat = pipelined_umul(m, acc, k_p, name="dptau")
        shifted = Signal(len(prod))
        m.d.comb += shifted.eq(prod >> shift)

        # -- pass 2: stage 2 (lane states, |g|), stage 3 (r = u * tau), stage 4 (write)
        tau = self.tau
        v2, msk2, a2 = Signal(), Signal(epw), Signal(self._waw)
        g2 = [Signal(signed(dw), name=f"g2_{l}") for l in range(epw)]
        mag2 = [Signal(dw, name=f"mag2_{l}") for l in range(epw)]
        u2 = [Signal(16, name=f"u2_{l}") for l in range(epw)]
        m.d.sync += [v2.eq(v1 & pass2), msk2.eq(msk1), a2.eq(a1)]
        for l in range(epw):
            m.d.sync += [g2[l].eq(lanes[l]), mag2[l].eq(mags[l]),
                         u2[l].eq(_apply(lane_pow[l], s1)[16:])]
        v3, msk3, a3 = Signal(), Signal(epw), Signal(self._waw)
        g3 = [Signal(signed(dw), name=f"g3_{l}") for l in range(epw)]
        mag3 = [Signal(dw, name=f"mag3_{l}") for l in range(epw)]
        r3 = [Signal(dw, name=f"r3_{l}") for l in range(epw)]
        m.d.sync += [v3.eq(v2), msk3.eq(msk2), a3.eq(a2)]
        for l in range(epw):
            m.d.sync += [g3[l].eq(g2[l]), mag3[l].eq(mag2[l]),
                         r3[l].eq((u2[l] * tau) >> 16)]
        outs = []
        for l in range(epw):
            t = Cat(tau, Const(0, 1)).as_signed()          # tau as a positive dw-bit value
            outs.append(Mux(mag3[l] >= tau, g3[l],
                            Mux(r3[l] < mag3[l], Mux(g3[l] < 0, -t, t), 0))[:dw])
        m.d.sync += [self.wr_addr.eq(a3), self.wr_data.eq(Cat(*outs)),
                     self.wr_en.eq(Mux(v3, msk3, 0))]
        v4 = Signal()
        m.d.sync += v4.eq(v3)

        cnt = Signal(range(lat + 3))
        with m.FSM(name="prune_fsm"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [base.eq(self.base), n.eq(self.n), k_p.eq(self.k_p),
                                 shift.eq(self.shift), s_issue.eq(self.seed), ra.eq(0),
                                 rem.eq(self.n), acc.eq(0), pass2.eq(0),
                                 words.eq((self.n + (epw - 1)) >> lg)]
                    with m.If(self.pre_ok):
                        m.d.sync += acc.eq(self.pre_sum)
                        m.next = "PRE"
                    with m.Else():
                        m.next = "SUM"
            with m.State("PRE"):
                # the given sum settles one cycle (as after the sum pass) before the multiply
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(0)
                m.next = "TAU"
            with m.State("SUM"):
                m.d.comb += [self.busy.eq(1), issue.eq(ra < words)]
                with m.If((ra == words) & ~v1):
                    m.d.sync += cnt.eq(0)
                    m.next = "TAU"
            with m.State("TAU"):
                # acc is stable: the free-running multiplier has it after `lat` edges
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == lat):
                    m.d.sync += [tau.eq(Mux(shifted[dw - 1:].any(), tau_max, shifted[:dw - 1])),
                                 ra.eq(0), rem.eq(n), pass2.eq(1)]
                    m.next = "PRUNE"
            with m.State("PRUNE"):
                m.d.comb += [self.busy.eq(1), issue.eq(ra < words)]
                # v4: the cycle the last word's write is presented (wr_en): still busy, so
                # the buffer's write port stays with this unit until it is written
                with m.If((ra == words) & ~(v1 | v2 | v3 | v4)):
                    m.next = "IDLE"
        return m
