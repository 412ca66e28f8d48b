"""Schedule controller: loads, checks and runs the offline schedule binary on chip.

The offline compiler (:mod:`sparseforge.gen.schedule`) writes one training iteration as an
``SFSC`` binary: an 8-word header, 20-word entries (one per tile of a layer phase, or a whole
PRUNE / PREGEN step), END, and a CRC-32 word (``docs/schedule.md``). This block holds that binary
in an on-chip schedule memory and executes it (*ours*, see ``docs/accelerator.md``):

Loading (``load``): the words of the binary, one per beat, always accepted (never
back-pressures). ``load_begin`` (a pulse, with ``load_len`` = the number of words that follow)
starts a load; it aborts a running schedule. While the words stream in, the block checks them
exactly in the order of :func:`sparseforge.gen.schedule.validate` and, after the last word,
either sets ``loaded`` or pulses ``err`` with ``err_code = ERR_SCHED | code`` where ``code`` is
``validate``'s error code (1 length, 2 magic, 3 version, 4 checksum, 5 config, 6 opcode, 7
entry). The CRC-32 (IEEE, reflected, the unrolled 32-bit-per-cycle network) runs one word per
cycle. Hardware-only length rule: a binary longer than ``depth`` words is a length error.

Running: ``start`` (CTRL.start) with a loaded schedule sets ``running`` at entry 0 (else
``err_code = ERR_NO_SCHEDULE``). The host walks the schedule in *phases* -- a run of entries of
one layer and opcode (the tiles of a layer phase, or one PRUNE / PREGEN step). Before each
phase's data packets it sends a ``step`` beat carrying the opcode it is about to run; the block
accepts it only when the data path is idle (``dp_idle``: the previous job has finished), reads
the phase's first entry from the schedule memory (9 cycles), and then:

* FP / BP / WG: drives the array controls from the entry -- ``mode`` (FP 0, BP 1, WG 2),
  ``stride2`` (stride 2), ``pad``, ``out_len`` (FP/WG: the output row length ``wo``; BP: the
  input row length ``w``), ``in_len`` (``w``), ``skip_zero`` (flag SKIP_ZERO);
* PRUNE: ``k_p`` / ``shift`` of the pruner's next-threshold rule from the entry;
* PREGEN: ``nm_n`` from the entry and a ``pg_go`` pulse with ``pg_count`` = the entry's ``nr``
  groups (one chunk that the host has loaded into the weight buffer): the on-chip
  pre-generation sequencer runs over the weight buffer *alongside* the phases that follow (the
  next layer's PRUNE / BP / WG), so it adds no cycles to them. A PREGEN step waits while a
  previous run is still busy (``pg_busy``).

then skips the phase's ``n_tiles`` entries (a PREGEN step: its one chunk entry) and accepts the
``step`` beat. A ``step`` whose
opcode differs from the entry's (host and schedule out of step) raises ``ERR_SCHED_MISMATCH``
and leaves the position unchanged; a ``step`` at END raises ``ERR_SCHED_END``; a ``step``
without a running schedule raises ``ERR_NO_SCHEDULE``. Every error accepts the beat: a bad step
never hangs the input stream. ``at_end`` is set once every phase has run (the next entry is
END).

What stays with the host (documented gap): the data plane. The host still maps each phase
(operand rows dealt to PE rows, tap bundles, drain commands) and streams it; the controls,
the pruning rule and the pre-generation runs come from the schedule in this block.

Ports
-----
load : In(stream.Signature(32)), load_begin : In(1), load_len : In(24)
start : In(1)
step : In(stream.Signature(8)) -- the opcode the host runs next.
dp_idle, pg_busy : In(1)
loaded, running, at_end : Out(1); pc : Out(16) -- the index of the next entry to run.
err : Out(1) (pulse), err_code : Out(8)
mode : Out(2), stride2 : Out(1), pad : Out(8), out_len, in_len : Out(16), skip_zero : Out(1),
k_p : Out(32), shift : Out(6), nm_n : Out(8), pg_go : Out(1) (pulse), pg_count : Out(24)

Latency: a ``step`` is accepted 11 cycles after it is presented with the data path idle
; loading costs one cycle per word, the verdict follows the last
word by two cycles.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int

__all__ = ["ScheduleController", "crc32_word", "ERR_SCHED", "ERR_NO_SCHEDULE", "ERR_SCHED_END",
           "ERR_SCHED_MISMATCH", "MAGIC", "VERSION", "HEADER_WORDS", "ENTRY_WORDS", "OPCODES"]

# The binary format (docs/schedule.md; sparseforge.gen.schedule holds the same numbers and a
# test checks they agree -- hdl/ does not import gen/).
MAGIC = 0x43534653
VERSION = 1
HEADER_WORDS = 8
ENTRY_WORDS = 20
OP_FP, OP_BP, OP_WG, OP_PREGEN, OP_PRUNE, OP_END = 1, 2, 3, 4, 5, 15
OPCODES = (OP_FP, OP_BP, OP_WG, OP_PREGEN, OP_PRUNE, OP_END)
FLAG_SKIP_ZERO = 1 << 3
FLAGS_ALL = (1 << 12) - 1
RESERVED = {11: 0xFF000000, 19: 0xFFFFFFFF}

#: ERROR_CODE values (the router's own are 1 and 2): schedule load errors are ``ERR_SCHED | code``.
ERR_SCHED = 0x10
ERR_NO_SCHEDULE = 0x20
ERR_SCHED_END = 0x21
ERR_SCHED_MISMATCH = 0x22

_POLY = 0xEDB88320


def crc32_word(crc: int, word: int) -> int:
    """One 32-bit little-endian word into a reflected CRC-32 register (no init / final XOR):
    ``zlib.crc32(bytes) == crc32_word(... crc32_word(0xFFFFFFFF, w0) ..., wn) ^ 0xFFFFFFFF``."""
    for b in range(32):
        bit = (crc ^ (word >> b)) & 1
        crc = (crc >> 1) ^ (_POLY if bit else 0)
    return crc


def _crc_network(crc, word):
    """The unrolled (linear over GF(2)) form of :func:`crc32_word` as Amaranth logic."""
    cols_c = [crc32_word(1 << i, 0) for i in range(32)]
    cols_w = [crc32_word(0, 1 << i) for i in range(32)]
    out = []
    for j in range(32):
        terms = [crc[i] for i in range(32) if cols_c[i] >> j & 1] + \
                [word[i] for i in range(32) if cols_w[i] >> j & 1]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc ^ t
        out.append(acc)
    return out


# entry words the executor reads, in read order
_FETCH = (0, 1, 4, 7, 8, 9, 11, 12)


class ScheduleController(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, depth: int, config_tag: int, config_hash: int):
        check_int("depth", depth, HEADER_WORDS + ENTRY_WORDS + 1, 1 << 20)
        check_int("config_tag", config_tag, 0, (1 << 32) - 1)
        check_int("config_hash", config_hash, 0, (1 << 32) - 1)
        self._depth = depth
        self._tag = config_tag
        self._hash = config_hash
        super().__init__({
            "load": In(stream.Signature(32)), "load_begin": In(1), "load_len": In(24),
            "start": In(1), "step": In(stream.Signature(8)),
            "dp_idle": In(1), "pg_busy": In(1),
            "loaded": Out(1), "running": Out(1), "at_end": Out(1), "pc": Out(16),
            "err": Out(1), "err_code": Out(8),
            "mode": Out(2), "stride2": Out(1), "pad": Out(8), "out_len": Out(16),
            "in_len": Out(16), "skip_zero": Out(1), "k_p": Out(32), "shift": Out(6),
            "nm_n": Out(8), "pg_go": Out(1), "pg_count": Out(24),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        D = self._depth
        mem = Memory(shape=32, depth=D, init=[])
        m.submodules.mem = mem
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=())

        m.d.sync += [self.err.eq(0), self.pg_go.eq(0)]

        # ---------------------------------------------------------------- loader + checks
        nwords = Signal(24)
        idx = Signal(24)                  # words received so far
        loading = Signal()
        n = Signal(32)                    # header word 2
        crc = Signal(32, init=0xFFFFFFFF)
        ewi = Signal(range(ENTRY_WORDS))  # word within the current entry
        ent = Signal(32)                  # current entry index
        bad_magic, bad_version, bad_len, bad_crc, bad_cfg, bad_w7 = (
            Signal(name=f"bad_{k}") for k in ("magic", "version", "len", "crc", "cfg", "w7"))
        cur_op_bad, cur_other_bad = Signal(), Signal()
        ent_code = Signal(3)              # first failing entry's code (6 or 7), 0 = none
        # The load inputs pass one register first (for Fmax: the router's destination decode
        # must not reach the checks); begin and words are delayed alike, so their order holds.
        w = Signal(32)
        lvalid, lbegin = Signal(), Signal()
        llen = Signal(24)
        m.d.sync += [lvalid.eq(self.load.valid), w.eq(self.load.payload),
                     lbegin.eq(self.load_begin), llen.eq(self.load_len)]
        take = Signal()
        m.d.comb += [self.load.ready.eq(1), take.eq(lvalid & loading)]
        m.d.comb += [wr.addr.eq(idx), wr.data.eq(w), wr.en.eq(take & (idx < D))]

        verdict = Signal()                # the cycle after the last word (or an empty load)
        m.d.sync += verdict.eq(0)
        with m.If(lbegin):
            m.d.sync += [nwords.eq(llen), idx.eq(0), loading.eq(llen != 0),
                         crc.eq(0xFFFFFFFF), ewi.eq(0), ent.eq(0), n.eq(0),
                         bad_magic.eq(0), bad_version.eq(0), bad_len.eq(0), bad_crc.eq(0),
                         bad_cfg.eq(0), bad_w7.eq(0), cur_op_bad.eq(0), cur_other_bad.eq(0),
                         ent_code.eq(0), self.loaded.eq(0), self.running.eq(0),
                         verdict.eq(llen == 0)]
        with m.Elif(take):
            m.d.sync += idx.eq(idx + 1)
            last = idx + 1 == nwords
            with m.If(last):
                m.d.sync += [loading.eq(0), verdict.eq(1)]
            with m.If(~last):
                m.d.sync += crc.eq(Cat(*_crc_network(crc, w)))
            with m.Else():
                m.d.sync += bad_crc.eq(w != (crc ^ 0xFFFFFFFF))
            with m.Switch(idx):
                with m.Case(0):
                    m.d.sync += bad_magic.eq(w != MAGIC)
                with m.Case(1):
                    m.d.sync += bad_version.eq(w != VERSION)
                with m.Case(2):
                    m.d.sync += n.eq(w)
                    with m.If(_times20(w) + HEADER_WORDS + 1 != nwords):
                        m.d.sync += bad_len.eq(1)
                with m.Case(3):
                    with m.If(w != ENTRY_WORDS):
                        m.d.sync += bad_len.eq(1)
                with m.Case(4):
                    with m.If(w != nwords):
                        m.d.sync += bad_len.eq(1)
                with m.Case(5):
                    with m.If(w != self._tag):
                        m.d.sync += bad_cfg.eq(1)
                with m.Case(6):
                    with m.If(w != self._hash):
                        m.d.sync += bad_cfg.eq(1)
                with m.Case(7):
                    m.d.sync += bad_w7.eq(w != 0)
                with m.Default():
                    with m.If(~last):          # an entry word
                        op_bad = Signal()
                        op = w[:8]
                        m.d.comb += op_bad.eq(1)
                        for code in OPCODES:
                            with m.If(op == code):
                                m.d.comb += op_bad.eq(0)
                        other = Signal()
                        with m.Switch(ewi):
                            with m.Case(0):
                                m.d.comb += other.eq(
                                    (w[16:32] & (0xFFFF & ~FLAGS_ALL)).any() |
                                    ((op == OP_END) != (ent + 1 == n)))
                            for wi, mask in RESERVED.items():
                                with m.Case(wi):
                                    m.d.comb += other.eq((w & mask).any())
                        op_now = Mux(ewi == 0, op_bad, cur_op_bad)
                        other_now = cur_other_bad | other
                        with m.If(ewi == ENTRY_WORDS - 1):
                            m.d.sync += [ewi.eq(0), ent.eq(ent + 1), cur_op_bad.eq(0),
                                         cur_other_bad.eq(0)]
                            with m.If((ent_code == 0) & (op_now | other_now)):
                                m.d.sync += ent_code.eq(Mux(op_now, 6, 7))
                        with m.Else():
                            m.d.sync += [ewi.eq(ewi + 1), cur_op_bad.eq(op_now),
                                         cur_other_bad.eq(other_now)]

        # the verdict, in validate()'s order
        code = Signal(4)
        too_long = nwords > D
        short = nwords < 2
        min_len = nwords < HEADER_WORDS + ENTRY_WORDS + 1
        verdicts = [(too_long | short, 1), (bad_magic, 2), (bad_version, 3),
                    (min_len | bad_len, 1), (bad_crc, 4), (bad_cfg, 5), (bad_w7, 7)]
        first = ent_code                   # the first failing check wins
        for cond, c in reversed(verdicts):
            first = Mux(cond, c, first)
        m.d.comb += code.eq(first)
        with m.If(verdict):
            with m.If(code == 0):
                m.d.sync += self.loaded.eq(1)
            with m.Else():
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED | code)]

        # ---------------------------------------------------------------- executor
        base = Signal(range(D + ENTRY_WORDS * (1 << 16)))   # word address of entry pc
        fetch = Signal(range(len(_FETCH) + 3))             # 0: waiting for a step
        got = {k: Signal(32, name=f"e_w{k}") for k in _FETCH}
        m.d.comb += [self.at_end.eq(self.running & (self.pc + 1 == n)),
                     rd.en.eq(1)]
        with m.Switch(fetch):
            for j, off in enumerate(_FETCH):
                with m.Case(j + 1):
                    m.d.comb += rd.addr.eq(base + off)
        for j, off in enumerate(_FETCH):
            with m.If(fetch == j + 2):
                m.d.sync += got[off].eq(rd.data)

        with m.If(self.start & ~lbegin):
            with m.If(self.loaded):
                m.d.sync += [self.running.eq(1), self.pc.eq(0), base.eq(HEADER_WORDS),
                             fetch.eq(0)]
            with m.Else():
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_NO_SCHEDULE)]

        e0, e1, e4, e7, e8, e9, e11, e12 = (got[k] for k in _FETCH)
        op = e0[:8]
        ntiles = Mux(e1[16:32] == 0, 1, e1[16:32])
        decide = fetch == len(_FETCH) + 2
        with m.If(~self.running):
            m.d.comb += self.step.ready.eq(self.step.valid)
            with m.If(self.step.valid):
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_NO_SCHEDULE)]
        with m.Elif(fetch == 0):
            with m.If(self.step.valid & self.dp_idle & ~self.start):
                m.d.sync += fetch.eq(1)
        with m.Elif(~decide):
            m.d.sync += fetch.eq(fetch + 1)
        with m.Else():
            # the last fetched word lands this cycle: decide on the next one
            with m.If(op == OP_END):
                m.d.comb += self.step.ready.eq(1)
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED_END), fetch.eq(0)]
            with m.Elif(op != self.step.payload):
                m.d.comb += self.step.ready.eq(1)
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED_MISMATCH), fetch.eq(0)]
            with m.Elif((op == OP_PREGEN) & (self.pg_busy | self.pg_go)):
                pass                                          # wait for the previous run
            with m.Else():
                m.d.comb += self.step.ready.eq(1)
                adv = Mux(op == OP_PREGEN, 1, ntiles)         # a PREGEN step: one chunk
                m.d.sync += [fetch.eq(0), self.pc.eq(self.pc + adv),
                             base.eq(base + _times20(adv))]
                with m.Switch(op):
                    with m.Case(OP_FP, OP_BP, OP_WG):
                        m.d.sync += [
                            self.mode.eq(op - 1),
                            self.stride2.eq(e9[16:24] == 2),
                            self.pad.eq(e9[24:32]),
                            self.out_len.eq(Mux(op == OP_BP, e7[16:32], e8[16:32])),
                            self.in_len.eq(e7[16:32]),
                            self.skip_zero.eq((e0[16:32] & (FLAG_SKIP_ZERO)).any()),
                        ]
                    with m.Case(OP_PRUNE):
                        m.d.sync += [self.k_p.eq(e12), self.shift.eq(e11[16:22])]
                    with m.Case(OP_PREGEN):
                        m.d.sync += [self.nm_n.eq(e11[:8]), self.pg_go.eq(1),
                                     self.pg_count.eq(e4)]
        return m


def _times20(x):
    """``x * ENTRY_WORDS`` as two shifted adds: a constant multiply would take a DSP slice."""
    assert ENTRY_WORDS == 20
    return (x << 4) + (x << 2)
