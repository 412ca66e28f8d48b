"""Wire formats: the facts hardware, host driver, compiler and reports must agree on.

One home for each encoding that crosses a boundary (``docs/architecture.md``, "Wire formats").
The hardware imports it directly; the compiler (``gen/``), the driver (``sim/host``) and the
report writers import it from here, never by instantiating hardware.

Pure Python (``amaranth.lib.enum``, ``amaranth.lib.data`` layouts and integers): no numpy,
nothing instantiated or elaborated.
"""

from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Shape, unsigned
from amaranth.lib import data, enum

__all__ = ["Phase",
           # host packets (the Accelerator's AXI4-Stream framing)
           "DEST_CTRL", "DEST_END", "ERR_BAD_DEST", "ERR_EARLY_TLAST", "ERR_MISSING_TLAST",
           "HEADER_COUNT_BITS", "Frame", "frame_check",
           "packet_words", "header", "split_header", "axis_word_layout", "ctrl_layout",
           "pgctl_layout", "PHASE_CONTROLS", "pe_layouts", "Packet", "destinations", "sources"]


# -- layer phases ---------------------------------------------------------------------------------

class Phase(enum.Enum, shape=2):
    """The PE array's layer phase (the PE's ``mode`` input). ``Phase.from_name("fp")`` maps the
    lower-case names the mapper and the drivers use."""
    FP = 0      # forward: sparse activation rows x W_fwd kernel rows
    BP = 1      # backward input: sparse dY rows x flipped W_bwd kernel rows
    WG = 2      # weight gradient: sparse dY rows x dense activation rows

    @classmethod
    def from_name(cls, name: str) -> "Phase":
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"phase must be one of {[p.name.lower() for p in cls]}, "
                             f"not {name!r}") from None


# =================================================================================================
# Host packets: the framing of the Accelerator's AXI4-Stream ports (s_axis in, m_axis out).
# Used by the hardware (hdl/router.py, hdl/merger.py, hdl/accelerator.py) and the host
# (sim/host/driver.py) alike; pure functions of the configuration, nothing is instantiated.
# =================================================================================================

#: Destination ids with a fixed meaning (the others follow :func:`destinations`).
DEST_CTRL, DEST_END = 0, 1
#: A header word is ``id[31:24] | count[23:0]`` (in: destination id and beats; out: source id
#: and words).
HEADER_COUNT_BITS = 24

# -- framing of the s_axis packets (*ours*, strict; issue 19) -----------------------------------
# The rules any receiver of the ``s_axis`` word stream obeys (hdl/router.py today, whatever
# replaces it in the data plane tomorrow); :func:`frame_check` is their executable reference.
#
# 1. A packet is a header word ``dest | count`` and then ``count * words`` payload words, where
#    ``words`` is the destination's words per beat (:attr:`Packet.words`; 0 for ``end``).
# 2. ``tlast`` is set on the packet's last word and on no other: on the header itself when the
#    packet has no payload words (a *zero-word* packet: ``count == 0``, or ``end`` whatever its
#    count), else on the last payload word.
# 3. A header naming no destination -> ERR_BAD_DEST; the packet ends at the header if it carries
#    ``tlast``, else every word up to and including the next ``tlast`` is discarded.
# 4. ``tlast`` on a word before the packet's last (the header of a packet with payload, or a
#    payload word but the last) -> ERR_EARLY_TLAST; the packet ends at that word, the beat
#    that word belongs to is not delivered (even when the word completes it), and the next
#    word is a header.
# 5. No ``tlast`` on the packet's last word (a zero-word header without it, or the last payload
#    word without it) -> ERR_MISSING_TLAST; the packet's last beat is *not* delivered (an END is
#    not executed) and every following word up to and including the next ``tlast`` is
#    discarded: they are never parsed as a header.
# 6. Beats completed before an error are delivered (a receiver streams them on; it cannot take
#    them back). After any error the receiver waits for a header again: it never hangs.

#: ERROR_CODE values of the packet router (*ours*; the schedule controller's are 0x10 and up):
#: a header naming an unknown destination (rule 3); ``tlast`` before the packet's last word
#: (rule 4); no ``tlast`` on the packet's last word (rule 5: missing or late ``tlast``).
ERR_BAD_DEST, ERR_EARLY_TLAST, ERR_MISSING_TLAST = 1, 2, 3


def packet_words(width: int) -> int:
    """32-bit words that carry a beat of ``width`` bits (bit 0 of the beat in bit 0 of the
    first, little-endian word); 0 for an empty beat."""
    return -(-width // 32)


def header(ident: int, count: int) -> int:
    """The header word ``ident[31:24] | count[23:0]``."""
    if not 0 <= count < 1 << HEADER_COUNT_BITS:
        raise ValueError(f"packet count {count} does not fit {HEADER_COUNT_BITS} bits")
    return (ident << HEADER_COUNT_BITS) | count


def split_header(word: int) -> tuple[int, int]:
    """``(ident, count)`` of a header word."""
    return word >> HEADER_COUNT_BITS, word & ((1 << HEADER_COUNT_BITS) - 1)


def axis_word_layout() -> data.StructLayout:
    """One AXI4-Stream word as a stream payload: ``data`` (tdata), ``last`` (tlast)."""
    return data.StructLayout({"data": unsigned(32), "last": unsigned(1)})


#: The phase controls (the PE array's inputs of the same names), in CTRL packets and in
#: schedule entries alike.
PHASE_CONTROLS = ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero")


def ctrl_layout(cfg) -> data.StructLayout:
    """The CTRL packet's single beat: the job's control inputs (array mode, stride, padding,
    row lengths, skip_zero, raw; pruner tau/k_p/shift, seed + seed_load, clear; N of the
    pre-generation; ``pe_sel`` of the counter registers)."""
    R, C = cfg.pe_rows, cfg.pe_cols
    return data.StructLayout({
        "mode": unsigned(2), "stride2": unsigned(1), "pad": unsigned(8),
        "out_len": unsigned(16), "in_len": unsigned(16), "skip_zero": unsigned(1),
        "raw": unsigned(1), "pe_sel": unsigned(max(1, (R * C - 1).bit_length())),
        "tau": unsigned(cfg.data_width - 1), "k_p": unsigned(32), "shift": unsigned(6),
        "seed": unsigned(32), "seed_load": unsigned(1), "clear": unsigned(1),
        "nm_n": unsigned(8),
    })


def pgctl_layout(cfg) -> data.StructLayout:
    """The PGCTL packet's single beat: start an on-chip pre-generation run over the first
    ``count`` groups of the weight buffer with ``n`` kept per group."""
    return data.StructLayout({"n": unsigned(8), "count": unsigned(24), "go": unsigned(1)})


def pe_layouts(cfg) -> dict:
    """The payload layouts of the PE array's streams: ``x``, ``taps``, ``dense``, ``drain``
    (inputs) and ``out`` (a column output), from :mod:`sparseforge.hdl.pe`'s functions."""
    # imported here, not at the top: the hardware modules may import this one (no cycle)
    from sparseforge.hdl.layouts import sparse_elem_layout
    from sparseforge.hdl.pe import (pe_dense_layout, pe_drain_layout, pe_out_layout,
                                    pe_taps_layout)
    return {
        # the PE's column index is clog2(max_row_len) bits, cfg.col_width
        "x": sparse_elem_layout(cfg.data_width, cfg.col_width),
        "taps": pe_taps_layout(cfg.macs_per_pe, cfg.data_width, cfg.k_max, cfg.psum_buf_depth,
                               cfg.act_buf_depth),
        "dense": pe_dense_layout(cfg.data_width),
        "drain": pe_drain_layout(cfg.psum_buf_depth),
        "out": pe_out_layout(cfg.acc_width),
    }


_WIDTHS: dict = {}


class Packet(NamedTuple):
    """One destination (or source) of the packet streams.

    ``id`` is the header's id; ``name`` the host's name (``x_r0``, ``taps_r0_c1``, ``o_c0``,
    ...); ``kind`` the router's (merger's) port and ``index`` the position in that port's
    array (``()``, ``(i,)`` or ``(i, j)``); ``shape`` the beat's payload shape."""
    id: int
    name: str
    kind: str
    index: tuple
    shape: object

    @property
    def width(self) -> int:
        # cached by the shape object (layouts are not hashable): the host codec asks for
        # it once per beat
        hit = _WIDTHS.get(id(self.shape))
        if hit is None or hit[0] is not self.shape:
            hit = _WIDTHS[id(self.shape)] = (self.shape, Shape.cast(self.shape).width)
        return hit[1]

    @property
    def words(self) -> int:
        return packet_words(self.width)


def _numbered(entries):
    return [Packet(k, *e) for k, e in enumerate(entries)]


def destinations(cfg) -> list[Packet]:
    """The ``s_axis`` destinations in id order: ``ctrl`` (0, one :func:`ctrl_layout` beat),
    ``end`` (1, no beats: the end of a job), the PE array's ``x_r{i}``, ``taps_r{i}_c{j}``,
    ``dense_r{i}_c{j}``, ``drain_c{j}``, the pruner's ``prune``, the pre-generation's
    ``pregen`` (groups sent by the host), ``wbuf`` (groups into the weight buffer),
    ``pgctl`` (one :func:`pgctl_layout` beat), the schedule controller's ``sched`` (32-bit
    words of a schedule binary) and ``step`` (an 8-bit opcode), and with
    ``cfg.data_plane == "dma"`` the data plane's ``dp`` (one
    :func:`sparseforge.hdl.dataplane.cmd_layout` command per beat), then with
    ``cfg.cmd_table_depth`` the command table's ``dpcall`` (32-bit
    :func:`sparseforge.hdl.cmd_table.call_layout` beats) and ``dptab`` (its entries)."""
    from sparseforge.hdl.pruner import grad_elem_layout
    from sparseforge.hdl.weight_pregen import pregen_in_layout
    R, C = cfg.pe_rows, cfg.pe_cols
    pe = pe_layouts(cfg)
    group = pregen_in_layout(cfg.nm_m, cfg.data_width)
    out = [("ctrl", "ctrl", (), ctrl_layout(cfg)), ("end", "end", (), unsigned(0))]
    out += [(f"x_r{i}", "x", (i,), pe["x"]) for i in range(R)]
    out += [(f"taps_r{i}_c{j}", "taps", (i, j), pe["taps"]) for i in range(R) for j in range(C)]
    out += [(f"dense_r{i}_c{j}", "dense", (i, j), pe["dense"])
            for i in range(R) for j in range(C)]
    out += [(f"drain_c{j}", "drain", (j,), pe["drain"]) for j in range(C)]
    out += [("prune", "prune", (), grad_elem_layout(cfg.data_width)),
            ("pregen", "pregen", (), group), ("wbuf", "wbuf", (), group),
            ("pgctl", "pgctl", (), pgctl_layout(cfg)), ("sched", "sched", (), unsigned(32)),
            ("step", "step", (), unsigned(8))]
    if getattr(cfg, "data_plane", "host-stream") == "dma":
        # the on-chip data plane's commands (DMA descriptors and jobs, executed in order)
        from sparseforge.hdl.dataplane import cmd_layout
        out.append(("dp", "dp", (), cmd_layout(cfg)))
        if getattr(cfg, "cmd_table_depth", 0):
            # the command table (hdl/cmd_table.py): one-word calls that replay stored
            # entries, and the entries' writes
            from sparseforge.hdl.cmd_table import call_layout, entry_layout
            out += [("dpcall", "dpcall", (), call_layout()),
                    ("dptab", "dptab", (), entry_layout(cfg))]
    if len(out) > 1 << (32 - HEADER_COUNT_BITS):
        raise ValueError(f"a {R}x{C} PE array needs {len(out)} packet destinations; the "
                         f"{32 - HEADER_COUNT_BITS}-bit header id holds "
                         f"{1 << (32 - HEADER_COUNT_BITS)}")
    return _numbered(out)


class Frame(NamedTuple):
    """One packet as :func:`frame_check` reads it: ``start`` the index of its header word,
    ``dest`` and ``count`` the header's fields, ``beats`` the beats delivered (ints, the words
    of each little-endian), ``error`` 0 or the ERR_* code, ``end`` the index one past its last
    word (the discarded words included)."""
    start: int
    dest: int
    count: int
    beats: tuple
    error: int
    end: int

    @property
    def executed(self) -> bool:
        """Delivered as a whole: no error (an ``end`` packet: STATUS.done may rise)."""
        return self.error == 0


def frame_check(words, table) -> list[Frame]:
    """The framing rules above, as a reference: ``words`` an iterable of ``(data, tlast)``;
    ``table`` the destinations (:func:`destinations`' list, or a mapping id -> words per beat).
    Returns the :class:`Frame` s in stream order. An error counts where it is found (a receiver
    reports it there), even when the stream stops before the discard's ``tlast`` (``end`` is
    then ``len(words)``); a packet the stream stops inside without an error has ``error == -1``
    (incomplete: its completed beats are delivered, nothing is reported)."""
    if isinstance(table, dict):
        per_beat = dict(table)
    else:
        per_beat = {d.id: d.words for d in table}
    words = [(int(w), bool(t)) for w, t in words]
    out = []
    k, n = 0, len(words)
    while k < n:
        start = k
        ident, count = split_header(words[k][0])
        tlast = words[k][1]
        k += 1

        def discard(k):
            """Index past the next word with tlast from ``k`` on (``n`` if none comes)."""
            while k < n:
                k += 1
                if words[k - 1][1]:
                    return k
            return n

        if ident not in per_beat:
            k = k if tlast else discard(k)
            out.append(Frame(start, ident, count, (), ERR_BAD_DEST, k))
            continue
        wpb = per_beat[ident]
        total = count * wpb
        if total == 0:                                   # zero-word packet: tlast on the header
            if tlast:
                out.append(Frame(start, ident, count, (), 0, k))
            else:
                k = discard(k)
                out.append(Frame(start, ident, count, (), ERR_MISSING_TLAST, k))
            continue
        if tlast:                                        # header of a packet with payload
            out.append(Frame(start, ident, count, (), ERR_EARLY_TLAST, k))
            continue
        beats, value, j, error = [], 0, 0, -1
        while k < n:
            w, t = words[k]
            k += 1
            value |= w << (32 * j)
            j += 1
            final = len(beats) == count - 1 and j == wpb
            if t and not final:
                error = ERR_EARLY_TLAST          # the incomplete beat is not delivered
                break
            if final and not t:
                error = ERR_MISSING_TLAST        # nor is the last beat without its tlast
                break
            if j == wpb:
                beats.append(value)
                value, j = 0, 0
                if final:
                    error = 0
                    break
        if error == ERR_MISSING_TLAST:
            k = discard(k)
        out.append(Frame(start, ident, count, tuple(beats), error, k))
    return out


def sources(cfg) -> list[Packet]:
    """The ``m_axis`` sources in id order (which is also the output merger's priority): the
    column outputs ``o_c{j}`` (kind ``col``), the pruner's ``prune``, the pre-generation's
    ``pregen`` (selected groups)."""
    from sparseforge.hdl.pruner import grad_elem_layout
    from sparseforge.hdl.weight_pregen import pregen_out_layout
    out = [(f"o_c{j}", "col", (j,), pe_layouts(cfg)["out"]) for j in range(cfg.pe_cols)]
    out += [("prune", "prune", (), grad_elem_layout(cfg.data_width)),
            ("pregen", "pregen", (), pregen_out_layout(cfg.nm_m, cfg.nm_n_max, cfg.data_width))]
    return _numbered(out)


# -- schedule binary (docs/schedule.md) -----------------------------------------------------------
# One definition for the offline compiler (gen/schedule.py: encode / decode / validate) and the
# on-chip controller (hdl/controller.py), which checks a binary word by word in validate()'s order.

SCHED_MAGIC = 0x43534653        # bytes 'S' 'F' 'S' 'C' as a little-endian word (header word 0)
SCHED_VERSION = 1               # header word 1
SCHED_HEADER_WORDS = 8          # magic, version, entries, entry words, total words, tag, hash, 0
SCHED_ENTRY_WORDS = 20


class SchedOp(enum.IntEnum, shape=8):
    """Entry opcodes (entry word 0, bits 7:0). 0 is invalid so a zero-filled memory is rejected.

    An ``IntEnum``: the decoded :class:`~sparseforge.gen.schedule.Entry` holds plain integers and
    compares them with these members; the controller compares its 8-bit slice with them."""
    FP = 1
    BP = 2
    WG = 3
    PREGEN = 4
    PRUNE = 5
    END = 15

    @classmethod
    def name_of(cls, code: int) -> str:
        """``"FP"`` for 1, ..., ``"op<code>"`` for a code that is no opcode."""
        try:
            return cls(code).name
        except ValueError:
            return f"op{code}"

    @classmethod
    def known(cls, code: int) -> bool:
        """Whether ``code`` is an opcode (the check behind error code ``opcode``)."""
        try:
            cls(code)
        except ValueError:
            return False
        return True


class SchedFlag:
    """Entry flag bits (entry word 0, bits 31:16).

    Plain integer constants, not an enum: an entry's flags are a free bit set (any combination,
    undefined bits checked as raw bits against :attr:`ALL`)."""
    RELU = 1 << 0          # the layer has a fused ReLU (FP: applied on the way out; BP/WG: mask)
    POOL = 1 << 1          # the layer has a fused max-pool (pool_k, pool_s)
    BDWP = 1 << 2          # N:M weights: FP uses W_fwd (along Cin), BP W_bwd (along Cout)
    SKIP_ZERO = 1 << 3     # sparse mode: zero operands skipped (0: the dense baseline)
    PRUNE = 1 << 4         # the layer's output gradient is stochastically pruned
    INTERLEAVED = 1 << 5   # channel k -> PE column/row k % C (else in-order blocks)
    FIRST = 1 << 6         # clear the psum bank before this tile
    LAST = 1 << 7          # drain the psum bank after this tile
    OVERLAP = 1 << 8       # PREGEN runs alongside the preceding WG
    FC = 1 << 9            # FC layer run as a 1x1 convolution with the batch as the row axis
    WLOAD = 1 << 10        # load this tile's weights into weight_base first
    ALOAD = 1 << 11        # load this tile's dense X chunk into act_base first (WG)
    ALL = (1 << 12) - 1
    NAMES = ("RELU", "POOL", "BDWP", "SKIP_ZERO", "PRUNE", "INTERLEAVED", "FIRST", "LAST",
             "OVERLAP", "FC", "WLOAD", "ALOAD")


#: ``(field, word, low bit, width)``: the packing of one entry, in word order.
ENTRY_LAYOUT = (
    ("opcode", 0, 0, 8), ("layer", 0, 8, 8), ("flags", 0, 16, 16),
    ("tile", 1, 0, 16), ("n_tiles", 1, 16, 16),
    ("ch0", 2, 0, 16), ("nch", 2, 16, 16),
    ("r0", 3, 0, 32),
    ("nr", 4, 0, 32),
    ("b0", 5, 0, 16), ("nb", 5, 16, 16),
    ("cin", 6, 0, 16), ("cout", 6, 16, 16),
    ("h", 7, 0, 16), ("w", 7, 16, 16),
    ("ho", 8, 0, 16), ("wo", 8, 16, 16),
    ("kh", 9, 0, 8), ("kw", 9, 8, 8), ("stride", 9, 16, 8), ("padding", 9, 24, 8),
    ("batch", 10, 0, 16), ("pool_k", 10, 16, 8), ("pool_s", 10, 24, 8),
    ("nm_n", 11, 0, 8), ("nm_m", 11, 8, 8), ("prune_shift", 11, 16, 8),
    ("prune_kp", 12, 0, 32),
    ("act_base", 13, 0, 32),
    ("weight_base", 14, 0, 32),
    ("psum_base", 15, 0, 32),
    ("act_words", 16, 0, 32),
    ("weight_words", 17, 0, 32),
    ("psum_words", 18, 0, 32),
)

#: Field name -> ``(word, low bit, width)`` (the controller slices fetched words with it).
ENTRY_FIELD = {name: (word, lo, width) for name, word, lo, width in ENTRY_LAYOUT}

#: Bits of each entry word that carry no field and must be zero (word 11 bits 31:24, word 19).
ENTRY_RESERVED = {11: 0xFF000000, 19: 0xFFFFFFFF}


class SchedErr(enum.IntEnum, shape=4):
    """Why a schedule binary is refused: :class:`~sparseforge.gen.schedule.ScheduleError`'s
    ``code``; the controller reports ``ERR_SCHED | code`` in ERROR_CODE."""
    LENGTH = 1      # too short, not whole words, or header length fields disagree
    MAGIC = 2
    VERSION = 3
    CHECKSUM = 4
    CONFIG = 5      # compiled for a different accelerator configuration
    OPCODE = 6      # unknown opcode
    ENTRY = 7       # reserved bits set, END missing / not last, field out of range


#: ERROR_CODE values of the schedule controller (the router's own are 1 to 3).
#: Phase codes of the accelerator's work as reports name it (``build/e2e/report.json``): the
#: array phases (:class:`Phase`, the PE's ``mode``), then the other phases: stochastic
#: pruning, N:M pre-generation, the SGD update and the between-layer stages (ReLU, pooling,
#: loss). ``update`` and ``stage`` are host work in this version.
PHASE_CODES = tuple(p.name.lower() for p in Phase) + ("prune", "pregen", "update", "stage")

ERR_SCHED = 0x10                # | SchedErr: the loaded binary was refused
ERR_NO_SCHEDULE = 0x20          # CTRL.start or a step without a loaded / running schedule
ERR_SCHED_END = 0x21            # a step after the schedule's last phase
ERR_SCHED_MISMATCH = 0x22       # the step's opcode is not the next entry's
#: Bit 7 of a ``step`` beat: the data plane runs this phase (``CMD_PRUNE`` / ``CMD_PREGEN``), so
#: the controller only advances past its entry -- a PREGEN step then starts no run of the
#: stream pre-generation over the weight buffer. Bits 6:0 are the opcode.
STEP_DATA_PLANE = 0x80

__all__ += ["SCHED_MAGIC", "SCHED_VERSION", "SCHED_HEADER_WORDS", "SCHED_ENTRY_WORDS", "SchedOp",
            "PHASE_CODES", "SchedFlag", "ENTRY_LAYOUT", "ENTRY_FIELD", "ENTRY_RESERVED", "SchedErr", "ERR_SCHED",
            "ERR_NO_SCHEDULE", "ERR_SCHED_END", "ERR_SCHED_MISMATCH", "STEP_DATA_PLANE"]
