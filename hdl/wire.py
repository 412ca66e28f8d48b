"""Wire formats: the facts hardware, host driver, compiler and reports must agree on.

One home for each encoding that crosses a boundary (``docs/architecture.md``, "Wire formats").
The hardware imports it directly; the compiler (``gen/``), the driver (``sim/host``) and the
report writers import it from here, never by instantiating hardware.

Pure Python (``amaranth.lib.enum`` and integers): no numpy, nothing elaborated.
"""

from __future__ import annotations

from amaranth.lib import enum

__all__ = ["Phase"]


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


#: ERROR_CODE values of the schedule controller (the router's own are 1 and 2).
ERR_SCHED = 0x10                # | SchedErr: the loaded binary was refused
ERR_NO_SCHEDULE = 0x20          # CTRL.start or a step without a loaded / running schedule
ERR_SCHED_END = 0x21            # a step after the schedule's last phase
ERR_SCHED_MISMATCH = 0x22       # the step's opcode is not the next entry's

__all__ += ["SCHED_MAGIC", "SCHED_VERSION", "SCHED_HEADER_WORDS", "SCHED_ENTRY_WORDS", "SchedOp",
            "SchedFlag", "ENTRY_LAYOUT", "ENTRY_FIELD", "ENTRY_RESERVED", "SchedErr", "ERR_SCHED",
            "ERR_NO_SCHEDULE", "ERR_SCHED_END", "ERR_SCHED_MISMATCH"]
