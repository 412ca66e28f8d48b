"""One validated configuration drives the RTL, the golden model, the performance model and the
host driver.

:class:`AcceleratorConfig` is a frozen dataclass. Every field is checked in ``__post_init__``;
a bad value raises :class:`TypeError` (wrong type) or :class:`ValueError` (out of range) with a
message that names the field and the allowed range -- never ``assert``.

Presets by name: ``tiny`` (tests), ``ecp5`` (open ECP5 flow), ``vcu1525`` (Xilinx xcvu9p card).
A configuration also loads from a TOML or YAML file (a flat table of fields, optionally with
``preset = "name"`` as the base) and from ``--set field=value`` command-line overrides.

Overflow policy (*ours*, numeric contract section 3): accumulation is exact in ``acc_width``
bits; the configuration rejects shapes whose worst-case sum could overflow the accumulator
(see :meth:`AcceleratorConfig.check_reduction`), so the hardware never needs to saturate an
accumulator. Only the write-back to ``data_width`` saturates.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sparseforge.hdl.pe import K_MAX_LIMIT

__all__ = ["AcceleratorConfig", "ConfigError", "PRESETS", "preset", "load_config", "parse_table_file",
           "NAME_RE", "SUPPORTED_M", "SUPPORTED_STRIDES"]

#: N:M group sizes the N:M selector supports (powers of two so indices pack densely).
SUPPORTED_M = (2, 4, 8, 16)
#: Convolution strides the PE supports.
SUPPORTED_STRIDES = (1, 2)
#: Values of ``AcceleratorConfig.data_plane``.
DATA_PLANES = ("dma", "host-stream")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Names that may become file names (configurations, networks).
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class AcceleratorConfig:
    """Parameters of one accelerator instance.

    Fields (allowed range in brackets):

    * ``name`` -- label stamped into emitted files.
    * ``pe_rows``, ``pe_cols`` [1, 64] -- PE array shape.
    * ``macs_per_pe`` [1, 16] -- multipliers per PE.
    * ``k_max`` [1, 11] -- longest kernel row a PE accepts (``hdl.pe.K_MAX_LIMIT``).
    * ``max_row_len`` [2, 4096] -- longest activation/gradient row (row-buffer depth).
    * ``nm_m`` {2, 4, 8, 16} -- N:M group size M.
    * ``nm_n_max`` [1, nm_m] -- largest runtime N.
    * ``data_width`` [2, 32] -- operand width, signed two's complement.
    * ``frac_bits`` [0, data_width - 1] -- fractional bits of the fixed-point operands.
    * ``acc_width`` [2 * data_width, 64] -- exact accumulator width.
    * ``weight_buf_depth``, ``act_buf_depth``, ``psum_buf_depth`` [16, 1 << 20] -- scratchpad
      depths in words.
    * ``sched_depth`` [16, 1 << 20] -- the on-chip schedule memory in 32-bit words (the
      controller refuses a longer binary; ``gen.schedule.validate(data, cfg)`` too).
    * ``prng_width`` {32} -- width of the xorshift PRNG state of the stochastic pruner.
    * ``strides`` -- subset of (1, 2): strides the PE supports.
    * ``dma_width`` {32, 64, 128, 256, 512} -- data width in bits of the DMA engine's AXI4
      memory-mapped master (one beat carries ``dma_width // data_width`` elements; docs/dma.md).
    * ``dma_addr_width`` [12, 64] -- byte-address width of that master (32 on the small parts;
      34 on ``vcu1525``: one 16 GiB DDR4 channel of the card per DMA master).
    * ``dma_max_burst`` {1, 2, 4, ..., 256} -- most beats of one INCR burst.
    * ``dma_timeout`` [16, 1 << 24] -- cycles without any handshake on the bus before a
      transfer is abandoned with ``DmaErr.TIMEOUT``.
    * ``act_mem_elems``, ``grad_mem_elems``, ``wgt_mem_elems``, ``out_mem_elems``
      [64, 1 << 24] -- on-chip tensor buffers (``hdl.tensor_mem.TensorMemory``: buffer ids 0..3
      in this order), in ``data_width`` elements; each a multiple of 64 so it is a whole
      number of words at every ``dma_width``.
    * ``pregen_lanes`` [0, 16] -- read lanes of the data plane's on-chip pre-generation
      (``CMD_PREGEN``, ``hdl.dp_pregen``; at most ``nm_m`` are used): a group of M weights
      takes ``ceil(nm_m / lanes)`` cycles. 0: ``min(pe_rows * pe_cols, nm_m)``, the mapper's
      weight read ports
      (one WGT copy each); more than ``pe_rows * pe_cols`` adds WGT copies read only by the
      pre-generation (*ours*: so it hides under a WG job; block RAM for the copies).
    * ``keep_mem_elems`` [16, 1 << 24] -- entries of the data plane's KEEP memory
      (``hdl.dp_stage``, *ours*): one per pooled value of a ``CMD_STAGE`` forward stage (the
      max-pool winner and the ReLU bit, 5 bits), kept for its backward stage; the pooled
      outputs of every layer of a step at once.
    * ``cmd_table_depth`` [0, 4096] -- entries of the command table (``hdl.cmd_table``,
      *ours*): data-plane commands and schedule steps stored once and replayed by a one-word
      ``dpcall`` beat, so a training step's commands cross the host stream only the first
      time. 0: no table (no ``dpcall`` / ``dptab`` destinations). Only with
      ``data_plane == "dma"``.
    * ``data_plane`` {"dma", "host-stream"} -- how the PE array is fed. ``"dma"`` (*ours*,
      issue 16): the accelerator has the on-chip data plane (``hdl.dataplane.DataPlane``: the
      DMA engine's AXI4 master ``m_axi_*``, the tensor buffers above, the hardware mapper and
      the result store), driven by ``dp`` command packets; the host-fed streams stay
      available. ``"host-stream"``: only the host-fed streams (no ``m_axi_*`` port; the
      ``vcu1525`` preset until its block design connects the master).
    """

    name: str = "custom"
    pe_rows: int = 2
    pe_cols: int = 2
    macs_per_pe: int = 2
    k_max: int = 7
    max_row_len: int = 64
    nm_m: int = 8
    nm_n_max: int = 4
    data_width: int = 16
    frac_bits: int = 8
    acc_width: int = 48
    weight_buf_depth: int = 1024
    act_buf_depth: int = 1024
    psum_buf_depth: int = 1024
    sched_depth: int = 4096
    prng_width: int = 32
    strides: tuple = (1, 2)
    dma_width: int = 32
    dma_addr_width: int = 32
    dma_max_burst: int = 16
    dma_timeout: int = 4096
    act_mem_elems: int = 4096
    grad_mem_elems: int = 4096
    wgt_mem_elems: int = 4096
    out_mem_elems: int = 4096
    pregen_lanes: int = 0
    keep_mem_elems: int = 4096
    cmd_table_depth: int = 128
    data_plane: str = "dma"

    # -- validation -------------------------------------------------------------------------
    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, not {self.name!r}")
        # the name reaches file names (build folders, baselines, manifests): no separators,
        # no "." / "..", nothing a shell or a path would interpret
        if not NAME_RE.fullmatch(self.name) or self.name in (".", ".."):
            raise ValueError(f"name must match [A-Za-z0-9_.-]+ (and not be '.' or '..'), not "
                             f"{self.name!r}")
        if isinstance(self.strides, list):
            object.__setattr__(self, "strides", tuple(self.strides))
        for f in fields(self):
            if f.type in ("int", int):
                v = getattr(self, f.name)
                if not _is_int(v):
                    raise TypeError(f"{f.name} must be an integer, not {v!r}")

        def rng(field_name, lo, hi):
            v = getattr(self, field_name)
            if not lo <= v <= hi:
                raise ValueError(f"{field_name} must be in [{lo}, {hi}], not {v}")

        rng("pe_rows", 1, 64)
        rng("pe_cols", 1, 64)
        rng("macs_per_pe", 1, 16)
        rng("k_max", 1, K_MAX_LIMIT)
        rng("max_row_len", 2, 4096)
        if self.nm_m not in SUPPORTED_M:
            raise ValueError(f"nm_m must be one of {SUPPORTED_M}, not {self.nm_m}")
        rng("nm_n_max", 1, self.nm_m)
        rng("data_width", 2, 32)
        rng("frac_bits", 0, self.data_width - 1)
        rng("acc_width", 2 * self.data_width, 64)
        for depth in ("weight_buf_depth", "act_buf_depth", "psum_buf_depth", "sched_depth"):
            rng(depth, 16, 1 << 20)
        if self.prng_width != 32:
            raise ValueError(f"prng_width must be 32 (xorshift32), not {self.prng_width}")
        if not isinstance(self.strides, tuple) or not self.strides or \
                any(not _is_int(s) for s in self.strides):
            raise TypeError(f"strides must be a non-empty tuple of integers, not {self.strides!r}")
        bad = [s for s in self.strides if s not in SUPPORTED_STRIDES]
        if bad:
            raise ValueError(f"strides must be a subset of {SUPPORTED_STRIDES}, not {self.strides}")
        if self.dma_width not in (32, 64, 128, 256, 512):
            raise ValueError(f"dma_width must be one of (32, 64, 128, 256, 512), not {self.dma_width}")
        rng("dma_addr_width", 12, 64)
        if not 1 <= self.dma_max_burst <= 256 or self.dma_max_burst & (self.dma_max_burst - 1):
            raise ValueError(f"dma_max_burst must be a power of 2 in [1, 256], not {self.dma_max_burst}")
        rng("dma_timeout", 16, 1 << 24)
        rng("pregen_lanes", 0, 16)
        rng("keep_mem_elems", 16, 1 << 24)
        rng("cmd_table_depth", 0, 4096)
        if self.data_plane not in DATA_PLANES:
            raise ValueError(f"data_plane must be one of {DATA_PLANES}, not {self.data_plane!r}")
        for mem in self.tensor_mem_fields:
            rng(mem, 64, 1 << 24)
            if getattr(self, mem) % 64:
                raise ValueError(f"{mem} must be a multiple of 64, not {getattr(self, mem)}")
        if self.max_row_len < self.k_max:
            raise ValueError(f"max_row_len must be >= k_max ({self.k_max}), not {self.max_row_len}")

    # -- derived quantities -----------------------------------------------------------------
    #: The tensor-buffer size fields, in buffer-id order (``hdl.tensor_mem``).
    tensor_mem_fields = ("act_mem_elems", "grad_mem_elems", "wgt_mem_elems", "out_mem_elems")

    @property
    def tensor_mem_elems(self) -> tuple:
        """Sizes of the tensor buffers in elements, by buffer id."""
        return tuple(getattr(self, f) for f in self.tensor_mem_fields)

    @property
    def col_width(self) -> int:
        """Bits of a column index within a row (0 .. max_row_len - 1)."""
        return max(1, (self.max_row_len - 1).bit_length())

    @property
    def nm_index_width(self) -> int:
        """Bits of an index within an N:M group (clog2(M))."""
        return max(1, (self.nm_m - 1).bit_length())

    @property
    def num_pes(self) -> int:
        return self.pe_rows * self.pe_cols

    @property
    def pregen_lanes_eff(self) -> int:
        """The on-chip pre-generation's read lanes: ``pregen_lanes`` (0: the mapper's weight
        ports, ``pe_rows * pe_cols``), at most ``nm_m``."""
        return min(self.pregen_lanes or self.pe_rows * self.pe_cols, self.nm_m)

    def max_reduction(self) -> int:
        """Largest number of products one accumulator may sum without any chance of overflow.

        Worst case product magnitude is 2**(2*data_width - 2) (most negative squared), so
        ``terms * 2**(2*dw-2) <= 2**(acc_width-1) - 1`` must hold.
        """
        return (2 ** (self.acc_width - 1) - 1) // (2 ** (2 * self.data_width - 2))

    def check_reduction(self, terms: int, what: str = "reduction") -> None:
        """Raise ``ValueError`` when ``terms`` worst-case products could overflow ``acc_width``."""
        if not _is_int(terms) or terms < 0:
            raise TypeError(f"{what}: number of terms must be a non-negative integer, not {terms!r}")
        if terms > self.max_reduction():
            raise ValueError(
                f"{what}: {terms} products could overflow the {self.acc_width}-bit accumulator "
                f"(at most {self.max_reduction()} for data_width={self.data_width})")

    # -- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["strides"] = list(self.strides)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """A short, filesystem-safe identifier unique to this configuration."""
        import hashlib
        return f"{self.name}-{hashlib.sha1(self.to_json().encode()).hexdigest()[:8]}"

    def replace(self, **changes) -> "AcceleratorConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AcceleratorConfig":
        """Build from a mapping; ``preset`` picks the base, other keys override fields."""
        data = dict(data)
        base = data.pop("preset", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration field(s) {unknown}; known fields: {sorted(known)}")
        start = preset(base) if base is not None else cls()
        return dataclasses.replace(start, **data)


def _parse_scalar(field_name: str, text: str):
    ftype = {f.name: f.type for f in fields(AcceleratorConfig)}.get(field_name)
    if ftype is None:
        raise ValueError(f"unknown configuration field {field_name!r}; known fields: "
                         f"{sorted(f.name for f in fields(AcceleratorConfig))}")
    if ftype in ("int", int):
        try:
            return int(text, 0)
        except ValueError:
            raise TypeError(f"{field_name} must be an integer, not {text!r}") from None
    if ftype in ("tuple", tuple):
        try:
            return tuple(int(t, 0) for t in text.split(",") if t.strip())
        except ValueError:
            raise TypeError(f"{field_name} must be a comma-separated list of integers, not {text!r}") from None
    return text


PRESETS: dict[str, AcceleratorConfig] = {
    # Small enough for Icarus: 2x2 PEs, short rows, narrow buffers. psum_buf_depth 512 (per
    # ping-pong half): a 32-wide layer's tile then holds two output rows of 8 channels, enough
    # taps per operand row that padding the last 2-lane bundle costs < 5% (at 256 the
    # "90% zero + 2:8" speedup was 88.8% of ideal, at 512 it is 94.7%: docs/pe.md).
    "tiny": AcceleratorConfig(name="tiny", pe_rows=2, pe_cols=2, macs_per_pe=2, k_max=7,
                              max_row_len=64, nm_m=8, nm_n_max=4, data_width=16, frac_bits=8,
                              acc_width=48, weight_buf_depth=256, act_buf_depth=256,
                              psum_buf_depth=512, dma_width=32, dma_addr_width=32,
                              # the digits CNN at batch 1 (schedule.buffer_demand): x 512,
                              # dy 2048, results 8192 (fc1 dW); w 16384: all four layers'
                              # weights (9,736) stay resident with the update on chip; dy and
                              # results doubled so every backward stage of the e2e step runs
                              # beside the next layer's WG job (the previous layer's gradient
                              # next to the WG's, the BP result next to dW; docs/e2e.md)
                              act_mem_elems=2048, grad_mem_elems=4096, wgt_mem_elems=16384,
                              out_mem_elems=16384,
                              # a group per cycle: fc1's pre-generation (2,048 groups) hides
                              # under conv2's WG job (4 lanes: 4,133 cycles, 1,171 exposed)
                              pregen_lanes=8),
    # ECPIX-5 85F / ULX3S 85F: 156 MULT18X18D, 208 DP16KD, 83.6k LUT4. Sized by synthesis so
    # the whole accelerator fits with room: one PE (4 lanes, 128-word ping-pong psum halves,
    # 512-word X scratchpad) is 2.0k LUT4 + 21 DP16KD (docs/fpga.md), so 2x2 PEs.
    "ecp5": AcceleratorConfig(name="ecp5", pe_rows=2, pe_cols=2, macs_per_pe=4, k_max=7,
                              max_row_len=256, nm_m=8, nm_n_max=4, data_width=16, frac_bits=8,
                              acc_width=48, weight_buf_depth=512, act_buf_depth=512,
                              psum_buf_depth=128,
                              # Tensor buffers sized for the digits CNN at batch 4 (x 2048, dy
                              # 8192, w 8192, results 8192); with one copy per reader (act 4,
                              # grad 2, wgt 4 + 2x4 one-bit masks, out 1) 72 DP16KD next to the
                              # accelerator's 96: 168 of 208 (docs/fpga.md "Tensor buffers").
                              dma_width=32, dma_addr_width=32, act_mem_elems=2048,
                              grad_mem_elems=8192, wgt_mem_elems=8192, out_mem_elems=8192),
    # VCU1525 (xcvu9p): 6840 DSP48E2, 2160 BRAM36, 960 URAM, 1.18M LUT. Memory, not DSPs,
    # bounds the array (every lane owns two psum memories and a scratchpad read port): one PE
    # (8 lanes, 512-word halves, 1024-word X scratchpad) is 4.4k LUT + 8 RAMB18 + 17 RAMB36,
    # so 8x8 PEs use ~62% of the block RAM and 7.5% of the DSPs (docs/fpga.md).
    "vcu1525": AcceleratorConfig(name="vcu1525", pe_rows=8, pe_cols=8, macs_per_pe=8, k_max=11,
                                 max_row_len=512, nm_m=8, nm_n_max=4, data_width=16, frac_bits=8,
                                 acc_width=48, weight_buf_depth=4096, act_buf_depth=1024,
                                 psum_buf_depth=512,
                                 # 512-bit DMA (one DDR4 channel: 34-bit bytes addresses, 16 GiB).
                                 # Tensor buffers in URAM288 (16 K elements each) with one copy
                                 # per reader: act 256 K x 16 copies = 256, grad 256 K x 8 = 128,
                                 # wgt 64 K x 64 = 256 (+ 2 x 64 one-bit masks = 128), out 256 K
                                 # x 1 = 16: 784 of 960 URAM (docs/fpga.md "Tensor buffers").
                                 dma_width=512, dma_addr_width=34, dma_max_burst=64,
                                 act_mem_elems=1 << 18, grad_mem_elems=1 << 18,
                                 wgt_mem_elems=1 << 16, out_mem_elems=1 << 18,
                                 # not yet "dma": the data plane of an 8x8 array (64 weight
                                 # replicas, the mapper's 64 tap generators) has not been
                                 # synthesized or run, and the block design's card memory
                                 # has not met Vivado (docs/dataplane.md)
                                 data_plane="host-stream"),
}

#: The preset `make verilog` uses.
DEFAULT_PRESET = "tiny"


def preset(name: str) -> AcceleratorConfig:
    """Return the named preset; ``ValueError`` lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a string, not {name!r}")
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}") from None


class ConfigError(ValueError):
    """A configuration file that cannot be used (parse error, duplicate key, empty, wrong
    type); the message names the file and, where known, the line."""


@functools.cache
def _unique_key_loader():
    """(Built once.) A ``yaml.SafeLoader`` that refuses duplicate mapping keys (YAML's default keeps the
    last one silently; TOML refuses them) and, being safe, any ``!!python/...`` tag."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"unhashable key {key!r}", key_node.start_mark) from None
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def parse_table_file(path: Path, what: str, error=ConfigError):
    """Parse a ``.toml``, ``.yaml`` or ``.yml`` file (configurations, networks) into a dict.

    Every problem raises ``error`` (a ``ValueError`` subclass) with one line naming the file
    and, for syntax errors, the line: another suffix, a parse error, a duplicate key, a YAML
    tag the safe loader refuses (``!!python/object``), an empty file, a top level that is not
    a table."""
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise error(f"{what} file must end in .toml, .yaml or .yml, not {path.suffix!r}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file ({exc.reason})") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise error(f"{path}: invalid TOML: {exc}") from None
    else:
        import yaml
        try:
            data = yaml.load(text, Loader=_unique_key_loader())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            ctx = getattr(exc, "context", None)
            raise error(f"{where}: invalid YAML: {problem}" + (f" ({ctx})" if ctx else "")) \
                from None
    if data is None or data == {}:
        raise error(f"{path}: the {what} file is empty")
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} file must hold a table of keys, not a "
                    f"{type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, *, base: str | None = None,
                preset: str | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> AcceleratorConfig:
    """Load a configuration.

    ``path``: a ``.toml`` or ``.yaml``/``.yml`` file holding a flat table of fields (and
    optionally ``preset``); ``base``: a preset name used when the file names none;
    ``preset``: a preset asked for explicitly (CLI ``--preset``): it is the base, and a file
    naming another preset is a ``ConfigError``, not a silent choice; ``overrides``:
    ``["field=value", ...]`` strings (CLI ``--set``) or a dict, applied last.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"configuration file {str(path)!r} does not exist")
        data = parse_table_file(path, "configuration")
        if "accelerator" in data and isinstance(data["accelerator"], dict):
            data = data["accelerator"]
        if not data:
            raise ConfigError(f"{path}: the configuration file is empty")
        if preset is not None and data.get("preset", preset) != preset:
            raise ConfigError(f"--preset {preset} contradicts preset = {data['preset']!r} "
                              f"in {path}")
    if preset is not None:
        base = preset
    if base is not None and "preset" not in data:
        data["preset"] = base
    if overrides:
        if isinstance(overrides, dict):
            data.update(overrides)
        else:
            for item in overrides:
                if "=" not in item:
                    raise ValueError(f"override must look like field=value, not {item!r}")
                k, v = item.split("=", 1)
                data[k.strip()] = _parse_scalar(k.strip(), v.strip())
    return AcceleratorConfig.from_dict(data)
