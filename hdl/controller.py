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
entry). The CRC-32 (zlib's, ``amaranth.lib.crc`` with a 32-bit data word) runs one word per
cycle; its result is a register, compared with the binary's last word when that arrives. The
format itself (constants, :class:`~sparseforge.hdl.wire.SchedOp`, flags, entry layout, error
codes) is defined once in :mod:`sparseforge.hdl.wire`. Hardware-only length rule: a binary longer than ``depth`` words is a length error.

Running: ``start`` (CTRL.start) with a loaded schedule sets ``running`` at entry 0 (else
``err_code = ERR_NO_SCHEDULE``). The host walks the schedule in *phases* -- a run of entries of
one layer and opcode (the tiles of a layer phase, or one PRUNE / PREGEN step). Before each
phase's data packets it sends a ``step`` beat carrying the opcode it is about to run; the block
accepts it only when the data path is idle (``dp_idle``: the previous job has finished), reads
the phase's first entry from the schedule memory (9 cycles; FSM WAIT -> FETCH -> DECIDE), and
then:

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
``step`` beat. Bit 7 of the beat (:data:`~sparseforge.hdl.wire.STEP_DATA_PLANE`) says the data
plane runs the phase (``CMD_PRUNE`` / ``CMD_PREGEN``): the opcode is bits 6:0, and a PREGEN
step then pulses no ``pg_go`` (the stream pre-generation does not run). A ``step`` whose
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

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import crc, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int, read_only
from sparseforge.hdl.wire import (ENTRY_FIELD, ENTRY_RESERVED, ERR_NO_SCHEDULE, ERR_SCHED,
                                  ERR_SCHED_END, ERR_SCHED_MISMATCH, SCHED_ENTRY_WORDS,
                                  SCHED_HEADER_WORDS, SCHED_MAGIC, SCHED_VERSION, SchedErr,
                                  SchedFlag, SchedOp)

__all__ = ["ScheduleController", "crc32_word", "ERR_SCHED", "ERR_NO_SCHEDULE", "ERR_SCHED_END",
           "ERR_SCHED_MISMATCH", "MAGIC", "VERSION", "HEADER_WORDS", "ENTRY_WORDS"]

# The binary format lives in hdl/wire.py (the compiler, gen/schedule.py, reads the same
# definitions); these short names are what the accelerator tests import from here.
MAGIC = SCHED_MAGIC
VERSION = SCHED_VERSION
HEADER_WORDS = SCHED_HEADER_WORDS
ENTRY_WORDS = SCHED_ENTRY_WORDS

_POLY = 0xEDB88320


def crc32_word(crc: int, word: int) -> int:
    """One 32-bit little-endian word into a reflected CRC-32 register (no init / final XOR):
    ``zlib.crc32(bytes) == crc32_word(... crc32_word(0xFFFFFFFF, w0) ..., wn) ^ 0xFFFFFFFF``.
    A pure-Python reference of what the on-chip CRC computes (the tests use it)."""
    for b in range(32):
        bit = (crc ^ (word >> b)) & 1
        crc = (crc >> 1) ^ (_POLY if bit else 0)
    return crc


#: The entry fields the executor uses; it fetches their words, in word order.
_USED = ("opcode", "flags", "n_tiles", "nr", "w", "wo", "stride", "padding", "nm_n",
         "prune_shift", "prune_kp")
_FETCH = tuple(sorted({ENTRY_FIELD[f][0] for f in _USED}))


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

    depth = read_only("_depth")

    def elaborate(self, platform):
        m = Module()
        D = self._depth
        mem = Memory(shape=32, depth=D, init=[])
        m.submodules.mem = mem
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=())

        m.d.sync += [self.err.eq(0), self.pg_go.eq(0)]
        # Stage order matters: the verdict's and the executor's error reports come after the
        # loader's resets, so the later assignment wins, as in one flat description.
        ld = self._loader(m, wr, D)
        self._verdict(m, ld, D)
        self._executor(m, rd, ld, D)
        return m

    def _loader(self, m, wr, D):
        """Load side: one schedule word per cycle (through one input register) into the
        memory, the header checks, the entry checks and the CRC-32; returns the load state the
        verdict and the executor read."""

        # ---------------------------------------------------------------- loader + checks
        nwords = Signal(24)
        idx = Signal(24)                  # words received so far
        loading = Signal()
        n = Signal(32)                    # header word 2
        ewi = Signal(range(ENTRY_WORDS))  # word within the current entry
        ent = Signal(32)                  # current entry index
        bad_magic, bad_version, bad_len, bad_crc, bad_cfg, bad_w7 = (
            Signal(name=f"bad_{k}") for k in ("magic", "version", "len", "crc", "cfg", "w7"))
        cur_op_bad, cur_other_bad = Signal(), Signal()
        ent_code = Signal(3)              # first failing entry's code (6 or 7), 0 = none
        ent_state = SimpleNamespace(ewi=ewi, ent=ent, n=n, cur_op_bad=cur_op_bad,
                                    cur_other_bad=cur_other_bad, ent_code=ent_code)
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
        last = idx + 1 == nwords

        # CRC-32 (zlib's) of every word but the last, one word a cycle; its registered result
        # is compared with the last word when that arrives.
        checksum = m.submodules.crc = crc.catalog.CRC32_ISO_HDLC(data_width=32).create()
        m.d.comb += [checksum.start.eq(lbegin), checksum.data.eq(w),
                     checksum.valid.eq(~lbegin & take & ~last)]

        verdict = Signal()                # the cycle after the last word (or an empty load)
        m.d.sync += verdict.eq(0)
        with m.If(lbegin):
            m.d.sync += [nwords.eq(llen), idx.eq(0), loading.eq(llen != 0),
                         ewi.eq(0), ent.eq(0), n.eq(0),
                         bad_magic.eq(0), bad_version.eq(0), bad_len.eq(0), bad_crc.eq(0),
                         bad_cfg.eq(0), bad_w7.eq(0), cur_op_bad.eq(0), cur_other_bad.eq(0),
                         ent_code.eq(0), self.loaded.eq(0), self.running.eq(0),
                         verdict.eq(llen == 0)]
        with m.Elif(take):
            m.d.sync += idx.eq(idx + 1)
            with m.If(last):
                m.d.sync += [loading.eq(0), verdict.eq(1), bad_crc.eq(w != checksum.crc)]
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
                        self._entry_word(m, w, ent_state)
        return SimpleNamespace(nwords=nwords, n=n, lbegin=lbegin, verdict=verdict,
                               bad_magic=bad_magic, bad_version=bad_version, bad_len=bad_len,
                               bad_crc=bad_crc, bad_cfg=bad_cfg, bad_w7=bad_w7,
                               ent_code=ent_code)

    def _entry_word(self, m, w, st):
        """The checks of one entry word ``w`` (word ``st.ewi`` of entry ``st.ent``): opcode
        known, undefined flag bits clear, END exactly last, reserved bits clear; the first
        failing entry's code is kept in ``st.ent_code``."""
        ewi, ent, n = st.ewi, st.ent, st.n
        cur_op_bad, cur_other_bad, ent_code = st.cur_op_bad, st.cur_other_bad, st.ent_code
        op_bad = Signal()
        op = _field({0: w}, "opcode")
        m.d.comb += op_bad.eq(~Cat(*(op == code for code in SchedOp)).any())
        other = Signal()
        with m.Switch(ewi):
            with m.Case(0):
                m.d.comb += other.eq(
                    (_field({0: w}, "flags") & (0xFFFF & ~SchedFlag.ALL)).any() |
                    ((op == SchedOp.END) != (ent + 1 == n)))
            for wi, mask in ENTRY_RESERVED.items():
                with m.Case(wi):
                    m.d.comb += other.eq((w & mask).any())
        op_now = Mux(ewi == 0, op_bad, cur_op_bad)
        other_now = cur_other_bad | other
        with m.If(ewi == ENTRY_WORDS - 1):
            m.d.sync += [ewi.eq(0), ent.eq(ent + 1), cur_op_bad.eq(0),
                         cur_other_bad.eq(0)]
            with m.If((ent_code == 0) & (op_now | other_now)):
                m.d.sync += ent_code.eq(
                    Mux(op_now, SchedErr.OPCODE, SchedErr.ENTRY))
        with m.Else():
            m.d.sync += [ewi.eq(ewi + 1), cur_op_bad.eq(op_now),
                         cur_other_bad.eq(other_now)]

    def _verdict(self, m, ld, D):
        """The load's verdict, in :func:`~sparseforge.gen.schedule.validate`'s order: LOADED or
        an error code, the cycle after the last word."""
        nwords, ent_code, verdict = ld.nwords, ld.ent_code, ld.verdict
        bad_magic, bad_version, bad_len = ld.bad_magic, ld.bad_version, ld.bad_len
        bad_crc, bad_cfg, bad_w7 = ld.bad_crc, ld.bad_cfg, ld.bad_w7
        code = Signal(4)
        too_long = nwords > D
        short = nwords < 2
        min_len = nwords < HEADER_WORDS + ENTRY_WORDS + 1
        verdicts = [(too_long | short, SchedErr.LENGTH), (bad_magic, SchedErr.MAGIC),
                    (bad_version, SchedErr.VERSION), (min_len | bad_len, SchedErr.LENGTH),
                    (bad_crc, SchedErr.CHECKSUM), (bad_cfg, SchedErr.CONFIG),
                    (bad_w7, SchedErr.ENTRY)]
        first = ent_code                   # the first failing check wins
        for cond, c in reversed(verdicts):
            first = Mux(cond, c, first)
        m.d.comb += code.eq(first)
        with m.If(verdict):
            with m.If(code == 0):
                m.d.sync += self.loaded.eq(1)
            with m.Else():
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED | code)]

    def _executor(self, m, rd, ld, D):
        """Executor: on a step from the data path, fetch the current entry's words (an FSM:
        WAIT, FETCH, DECIDE), check the step against it and drive the phase controls."""
        n, lbegin = ld.n, ld.lbegin
        base = Signal(range(D + ENTRY_WORDS * (1 << 16)))   # word address of entry pc
        k = Signal(range(len(_FETCH) + 1))                 # FETCH: the word addressed now
        got = {word: Signal(32, name=f"e_w{word}") for word in _FETCH}
        m.d.comb += [self.at_end.eq(self.running & (self.pc + 1 == n)),
                     rd.en.eq(1)]

        restart = Signal()
        m.d.comb += restart.eq(self.start & ~lbegin & self.loaded)
        with m.If(self.start & ~lbegin):
            with m.If(self.loaded):
                m.d.sync += [self.running.eq(1), self.pc.eq(0), base.eq(HEADER_WORDS)]
            with m.Else():
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_NO_SCHEDULE)]

        with m.If(~self.running):
            m.d.comb += self.step.ready.eq(self.step.valid)
            with m.If(self.step.valid):
                m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_NO_SCHEDULE)]

        op = _field(got, "opcode")
        n_tiles = _field(got, "n_tiles")
        ntiles = Mux(n_tiles == 0, 1, n_tiles)
        # While not running (a load aborted the schedule) the executor holds its state; CTRL.start
        # sends it back to WAIT, except mid-FETCH, where the fetch runs on (it then reads from the
        # new base) -- the timing the accelerator tests were written against.
        with m.FSM(name="exec"):
            with m.State("WAIT"):                             # for a step
                with m.If(self.running & self.step.valid & self.dp_idle & ~self.start):
                    m.d.sync += k.eq(0)
                    m.next = "FETCH"
            with m.State("FETCH"):
                # the phase's first entry, one word a cycle (the read port has one cycle latency)
                for j, word in enumerate(_FETCH):
                    with m.If(k == j):
                        m.d.comb += rd.addr.eq(base + word)
                    with m.If(k == j + 1):
                        m.d.sync += got[word].eq(rd.data)
                with m.If(self.running):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == len(_FETCH)):
                        m.next = "DECIDE"
                with m.Elif(restart):
                    m.next = "WAIT"
            with m.State("DECIDE"):
                # the last fetched word landed: run the step, refuse it, or wait (PREGEN)
                with m.If(restart):
                    m.next = "WAIT"
                with m.If(~self.running):
                    pass
                with m.Elif(op == SchedOp.END):
                    m.d.comb += self.step.ready.eq(1)
                    m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED_END)]
                    m.next = "WAIT"
                with m.Elif(op != Cat(self.step.payload[:7], Const(0, 1))):
                    m.d.comb += self.step.ready.eq(1)
                    m.d.sync += [self.err.eq(1), self.err_code.eq(ERR_SCHED_MISMATCH)]
                    m.next = "WAIT"
                with m.Elif((op == SchedOp.PREGEN) & (self.pg_busy | self.pg_go)):
                    pass                                      # wait for the previous run
                with m.Else():
                    m.d.comb += self.step.ready.eq(1)
                    adv = Mux(op == SchedOp.PREGEN, 1, ntiles)   # a PREGEN step: one chunk
                    m.d.sync += [self.pc.eq(self.pc + adv), base.eq(base + _times20(adv))]
                    m.next = "WAIT"
                    self._drive_controls(m, got, op)

    def _drive_controls(self, m, got, op):
        """The phase controls of the entry just accepted (``op``: its opcode)."""
        with m.Switch(op):
            with m.Case(SchedOp.FP, SchedOp.BP, SchedOp.WG):
                w, wo = _field(got, "w"), _field(got, "wo")
                m.d.sync += [
                    self.mode.eq(op - SchedOp.FP),            # the Phase code: FP 0, BP 1, WG 2
                    self.stride2.eq(_field(got, "stride") == 2),
                    self.pad.eq(_field(got, "padding")),
                    self.out_len.eq(Mux(op == SchedOp.BP, w, wo)),
                    self.in_len.eq(w),
                    self.skip_zero.eq((_field(got, "flags") & SchedFlag.SKIP_ZERO).any()),
                ]
            with m.Case(SchedOp.PRUNE):
                m.d.sync += [self.k_p.eq(_field(got, "prune_kp")),
                             self.shift.eq(_field(got, "prune_shift"))]
            with m.Case(SchedOp.PREGEN):
                # bit 7 of the step (STEP_DATA_PLANE): the data plane pre-generates, no run
                m.d.sync += [self.nm_n.eq(_field(got, "nm_n")),
                             self.pg_go.eq(~self.step.payload[7]),
                             self.pg_count.eq(_field(got, "nr"))]


def _field(words, name):
    """Entry field ``name`` (:data:`~sparseforge.hdl.wire.ENTRY_LAYOUT`) out of ``words``
    (entry word index -> signal)."""
    word, lo, width = ENTRY_FIELD[name]
    return words[word][lo:lo + width]


def _times20(x):
    """``x * ENTRY_WORDS`` as two shifted adds: a constant multiply would take a DSP slice."""
    assert ENTRY_WORDS == 20
    return (x << 4) + (x << 2)
