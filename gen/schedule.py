"""Offline schedule: network + configuration -> the entry list the controller runs, and its
binary form (``docs/schedule.md``).

:func:`build_schedule` orders the phases of one training iteration (every layer's FP; then,
layer by layer backwards, PRUNE of its output gradient, BP (not for the first layer), WG and the
pre-generation PREGEN of next iteration's W_fwd / W_bwd; END), tiles each phase so that one
tile's partial sums fit a PE's partial-sum bank (``cfg.psum_buf_depth`` words, two banks
ping-pong) and its operands fit the weight / activation scratchpads, and allocates scratchpad
offsets. :func:`encode` / :func:`decode` convert to and from the documented little-endian binary;
:func:`validate` rejects a malformed binary with the :class:`ScheduleError` code the hardware
controller raises on the same condition.

Mapping (the PE-array mapping of ``hdl/pe_array.py``, summarised): columns
partition the outputs, rows the reduction. FP: output channel n -> column, input channel c ->
row; BP: input-gradient channel c -> column, output-gradient channel n -> row; WG: (n, c) ->
column by c, operand rows dy[b, n, y] -> row by (b*Ho + y). ``interleaved``: channel k -> k % C
(SAT's interleaved mapping, balances non-zero work); ``in-order``: contiguous blocks of
ceil(channels / C). Every column runs the same tile in lockstep on its *local* channels
0 .. ceil(channels / C) - 1; a column without a channel at some local index idles there.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, fields

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.numfmt import prune_threshold_params
from sparseforge.gen.network import ComputeLayer, Network, NetworkError
from sparseforge.gen import tiling
from sparseforge.hdl.wire import (ENTRY_LAYOUT, ENTRY_RESERVED, SCHED_ENTRY_WORDS,
                                  SCHED_HEADER_WORDS, SCHED_MAGIC, SCHED_VERSION, SchedErr,
                                  SchedFlag, SchedOp)

__all__ = ["Op", "Flag", "Entry", "Schedule", "ScheduleError", "build_schedule", "encode",
           "decode", "validate", "check_fits", "check_tensors", "buffer_demand", "BUFFERS", "TENSOR_BUFFER", "config_hash", "config_tag", "MAGIC", "VERSION", "HEADER_WORDS",
           "ENTRY_WORDS", "ERR"]

#: The binary format's constants, opcodes, flags, entry layout and error codes have one home,
#: :mod:`sparseforge.hdl.wire` (the controller reads the same definitions); re-exported here.
MAGIC = SCHED_MAGIC
VERSION = SCHED_VERSION
HEADER_WORDS = SCHED_HEADER_WORDS
ENTRY_WORDS = SCHED_ENTRY_WORDS
Op = SchedOp
Flag = SchedFlag

#: Error kind -> code (the controller's ERROR_CODE holds ``ERR_SCHED | code``).
ERR = {e.name.lower(): int(e) for e in SchedErr}


class ScheduleError(ValueError):
    """A malformed schedule binary; ``code`` is the controller's error code (:data:`ERR`)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"schedule {kind} error (code {ERR[kind]}): {message}")
        self.kind = kind
        self.code = ERR[kind]


# -- entries ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One schedule entry (one tile of one phase, or a whole PRUNE / PREGEN / END step).

    Tile fields (column-local, see the module doc): ``ch0``/``nch`` the local output channels
    (FP: Cout, BP: Cin, WG: Cin); ``r0``/``nr`` FP/BP: the band of output rows in the tile
    order (y major, then batch, then local channel), WG: the range of output channels n;
    ``b0``/``nb`` the batch chunk (WG; FP/BP carry 0/batch). Buffers: word offsets and sizes
    per PE in the act / weight / psum scratchpads."""
    opcode: int
    layer: int = 0
    flags: int = 0
    tile: int = 0
    n_tiles: int = 1
    ch0: int = 0
    nch: int = 0
    r0: int = 0
    nr: int = 0
    b0: int = 0
    nb: int = 0
    cin: int = 0
    cout: int = 0
    h: int = 0
    w: int = 0
    ho: int = 0
    wo: int = 0
    kh: int = 0
    kw: int = 0
    stride: int = 0
    padding: int = 0
    batch: int = 0
    pool_k: int = 0
    pool_s: int = 0
    nm_n: int = 0
    nm_m: int = 0
    prune_shift: int = 0
    prune_kp: int = 0
    act_base: int = 0
    weight_base: int = 0
    psum_base: int = 0
    act_words: int = 0
    weight_words: int = 0
    psum_words: int = 0

    @property
    def op_name(self) -> str:
        return Op.name_of(self.opcode)

    def flag_names(self) -> list[str]:
        return [n for k, n in enumerate(Flag.NAMES) if self.flags >> k & 1]

    def words(self) -> list[int]:
        out = [0] * ENTRY_WORDS
        for name, word, lo, width in ENTRY_LAYOUT:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << width):
                raise ValueError(f"entry field {name} must be an integer in [0, {(1 << width) - 1}],"
                                 f" not {v!r} ({self.op_name} layer {self.layer} tile {self.tile})")
            out[word] |= v << lo
        return out

    @classmethod
    def from_words(cls, words) -> "Entry":
        kw = {name: (words[word] >> lo) & ((1 << width) - 1)
              for name, word, lo, width in ENTRY_LAYOUT}
        return cls(**kw)


@dataclass(frozen=True)
class Schedule:
    """A schedule: the entries (ending in END) and the configuration it was compiled for."""
    entries: tuple
    config_tag: int = 0          # CONFIG0 word of the register map (array shape, k_max)
    config_hash: int = 0         # :func:`config_hash` of the configuration

    def encode(self) -> bytes:
        return encode(self)

    def describe(self) -> str:
        lines = []
        for k, e in enumerate(self.entries):
            lines.append(f"{k:4d} {e.op_name:<6} L{e.layer} tile {e.tile}/{e.n_tiles} "
                         f"ch {e.ch0}+{e.nch} r {e.r0}+{e.nr} b {e.b0}+{e.nb} "
                         f"act {e.act_base}+{e.act_words} w {e.weight_base}+{e.weight_words} "
                         f"psum {e.psum_base}+{e.psum_words} [{' '.join(e.flag_names())}]")
        return "\n".join(lines)

    def phases(self) -> list[tuple[str, int, int]]:
        """``(op name, layer, number of entries)`` for each run of entries, in order."""
        out: list[list] = []
        for e in self.entries:
            if out and out[-1][0] == e.op_name and out[-1][1] == e.layer:
                out[-1][2] += 1
            else:
                out.append([e.op_name, e.layer, 1])
        return [tuple(p) for p in out]


def config_hash(cfg: AcceleratorConfig) -> int:
    """CRC-32 of the configuration without its name (the hardware holds it as a constant)."""
    d = cfg.to_dict()
    d.pop("name", None)
    return zlib.crc32(json.dumps(d, sort_keys=True).encode())


def config_tag(cfg: AcceleratorConfig) -> int:
    """Header word 5: ``pe_rows | pe_cols << 8 | macs_per_pe << 16 | k_max << 24`` (= CONFIG0)."""
    return cfg.pe_rows | cfg.pe_cols << 8 | cfg.macs_per_pe << 16 | cfg.k_max << 24


# -- binary -------------------------------------------------------------------------------------

def encode(schedule: Schedule) -> bytes:
    """The binary: header (8 words), entries (20 words each), CRC-32 word; little endian."""
    n = len(schedule.entries)
    total = HEADER_WORDS + n * ENTRY_WORDS + 1
    words = [MAGIC, VERSION, n, ENTRY_WORDS, total, schedule.config_tag, schedule.config_hash, 0]
    for e in schedule.entries:
        words += e.words()
    body = struct.pack(f"<{len(words)}I", *words)
    return body + struct.pack("<I", zlib.crc32(body))


def validate(data, cfg: AcceleratorConfig | None = None) -> list[int]:
    """Check a binary in the controller's order; return its words or raise :class:`ScheduleError`.

    Order: whole words and at least header + END + CRC (length); with ``cfg``: no longer than
    ``cfg.sched_depth`` (length; the controller's memory); magic; version; header length
    fields against the actual length (length); CRC-32 over everything before the last word
    (checksum); configuration tag and hash against ``cfg`` when given (config); every entry's
    opcode (opcode); reserved bits zero, END exactly once and last (entry)."""
    if isinstance(data, (list, tuple)):
        data = struct.pack(f"<{len(data)}I", *data)
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"schedule must be bytes or a list of words, not {type(data).__name__}")
    if len(data) % 4:
        raise ScheduleError("length", f"{len(data)} bytes is not a whole number of 32-bit words")
    nwords = len(data) // 4
    if nwords < 1 + 1:
        raise ScheduleError("length", f"{nwords} words is shorter than a header")
    words = list(struct.unpack(f"<{nwords}I", data))
    if cfg is not None and nwords > cfg.sched_depth:
        # the controller's hardware-only rule, checked first as it is (hdl/controller.py)
        raise ScheduleError("length", f"{nwords} words do not fit the schedule memory "
                                      f"(sched_depth={cfg.sched_depth} words of {cfg.name})")
    if words[0] != MAGIC:
        raise ScheduleError("magic", f"magic {words[0]:#010x}, expected {MAGIC:#010x} ('SFSC')")
    if words[1] != VERSION:
        raise ScheduleError("version", f"version {words[1]}, this controller runs {VERSION}")
    min_words = HEADER_WORDS + ENTRY_WORDS + 1
    if nwords < min_words:
        raise ScheduleError("length", f"{nwords} words; the smallest schedule (header, END, CRC) "
                                      f"has {min_words}")
    n, ew, total = words[2], words[3], words[4]
    if ew != ENTRY_WORDS:
        raise ScheduleError("length", f"entry size {ew} words, expected {ENTRY_WORDS}")
    if total != nwords or HEADER_WORDS + n * ENTRY_WORDS + 1 != nwords:
        raise ScheduleError("length", f"header says {n} entries / {total} words, the binary has "
                                      f"{nwords} words")
    crc = zlib.crc32(bytes(data[:-4]))
    if crc != words[-1]:
        raise ScheduleError("checksum", f"CRC-32 {words[-1]:#010x}, computed {crc:#010x}")
    if cfg is not None:
        if words[5] != config_tag(cfg) or words[6] != config_hash(cfg):
            raise ScheduleError("config", f"compiled for configuration tag {words[5]:#010x} / hash "
                                          f"{words[6]:#010x}, this accelerator is "
                                          f"{config_tag(cfg):#010x} / {config_hash(cfg):#010x}")
    if words[7] != 0:
        raise ScheduleError("entry", f"header word 7 is reserved (0), not {words[7]:#x}")
    for k in range(n):
        ew_ = words[HEADER_WORDS + k * ENTRY_WORDS:HEADER_WORDS + (k + 1) * ENTRY_WORDS]
        op = ew_[0] & 0xFF
        if not Op.known(op):
            raise ScheduleError("opcode", f"entry {k}: unknown opcode {op}")
        for wi, mask in ENTRY_RESERVED.items():
            if ew_[wi] & mask:
                raise ScheduleError("entry", f"entry {k}: reserved bits {ew_[wi] & mask:#x} of "
                                             f"word {wi} are set")
        if ew_[0] >> 16 & ~Flag.ALL:
            raise ScheduleError("entry", f"entry {k}: undefined flag bits "
                                         f"{(ew_[0] >> 16) & ~Flag.ALL & 0xFFFF:#x}")
        if (op == Op.END) != (k == n - 1):
            raise ScheduleError("entry", f"entry {k}: END must be the last entry and only there")
    return words


def decode(data, cfg: AcceleratorConfig | None = None) -> Schedule:
    """Validate (see :func:`validate`) and decode a binary into a :class:`Schedule`."""
    words = validate(data, cfg)
    n = words[2]
    entries = tuple(Entry.from_words(words[HEADER_WORDS + k * ENTRY_WORDS:
                                           HEADER_WORDS + (k + 1) * ENTRY_WORDS])
                    for k in range(n))
    return Schedule(entries=entries, config_tag=words[5], config_hash=words[6])


# -- compiler -----------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _prune_params(numel: int, p: float) -> tuple[int, int]:
    """``(k_p, shift)`` of the hardware threshold, most precise shift that fits 32 bits."""
    for shift in range(48, -1, -1):
        try:
            k_p, s = prune_threshold_params(p, numel, shift=shift)
        except ValueError:
            continue
        return k_p, s
    raise ValueError(f"no shift represents the pruning threshold of p={p} over {numel} elements")


class _Builder:
    def __init__(self, net: Network, cfg: AcceleratorConfig, mapping: str, sparse: bool):
        self.net, self.cfg, self.sparse = net, cfg, sparse
        self.mapping_flag = Flag.INTERLEAVED if mapping == "interleaved" else 0
        self.entries: list[Entry] = []
        self.psum_seq = 0

    def common(self, lay: ComputeLayer) -> dict:
        net, cfg = self.net, self.cfg
        flags = self.mapping_flag
        if self.sparse:
            flags |= Flag.SKIP_ZERO
        if lay.relu:
            flags |= Flag.RELU
        if lay.pool:
            flags |= Flag.POOL
        if lay.kind == "fc":
            flags |= Flag.FC
        d = dict(layer=lay.id, cin=lay.cin, cout=lay.cout, h=lay.h, w=lay.w, ho=lay.ho,
                 wo=lay.wo, kh=lay.kh, kw=lay.kw, stride=lay.stride, padding=lay.padding,
                 batch=lay.batch, pool_k=lay.pool[0] if lay.pool else 0,
                 pool_s=lay.pool[1] if lay.pool else 0)
        if self.bdwp(lay):
            flags |= Flag.BDWP
            d.update(nm_n=net.nm[0], nm_m=net.nm[1])
        if self.prune(lay):
            flags |= Flag.PRUNE
            k_p, s = _prune_params(lay.batch * lay.cout * lay.ho * lay.wo, net.prune_p)
            d.update(prune_kp=k_p, prune_shift=s)
        d["flags"] = flags
        return d

    def bdwp(self, lay) -> bool:
        return self.sparse and lay.bdwp and self.net.nm is not None

    def prune(self, lay) -> bool:
        return self.sparse and lay.prune and self.net.prune_p > 0

    def psum_bank(self) -> int:
        base = (self.psum_seq % 2) * self.cfg.psum_buf_depth
        self.psum_seq += 1
        return base

    def conv_phase(self, op: int, lay: ComputeLayer):
        """FP or BP: tiles = (local output-channel group) x (band of output rows; the one tiler,
        :mod:`sparseforge.gen.tiling`)."""
        cfg = self.cfg
        if op == Op.FP:
            n_out, n_red, rows_per_ch, row_len, what = lay.cout, lay.cin, lay.ho, lay.wo, "FP"
        else:
            n_out, n_red, rows_per_ch, row_len, what = lay.cin, lay.cout, lay.h, lay.w, "BP"
        ncol = _cdiv(n_out, cfg.pe_cols)
        nred = _cdiv(n_red, cfg.pe_rows)
        taps = nred * lay.kh * lay.kw                  # weight words per local output channel
        if taps > cfg.weight_buf_depth:
            raise NetworkError(f"{lay.label}: {what}: one output channel's kernel taps per PE "
                               f"({nred} channels x {lay.kh}x{lay.kw} = {taps} words) exceed "
                               f"weight_buf_depth={cfg.weight_buf_depth}")
        if row_len > cfg.psum_buf_depth:
            raise NetworkError(f"{lay.label}: {what}: an output row of {row_len} words does not "
                               f"fit psum_buf_depth={cfg.psum_buf_depth}")
        g = min(ncol, cfg.weight_buf_depth // taps)
        groups = [(c0, c1 - c0) for c0, c1 in tiling.bands(ncol, g)]
        # Ping-pong halves of the weight buffer when two groups fit, so the next group's taps
        # load while this one runs; otherwise one region (the load waits).
        half = cfg.weight_buf_depth // 2
        pingpong = len(groups) > 1 and g * taps <= half
        rpt = tiling.rows_per_tile(cfg.psum_buf_depth, row_len)     # output rows per tile
        base = self.common(lay)
        tiles = []
        for gi, (c0, gn) in enumerate(groups):
            rows = lay.batch * gn * rows_per_ch
            for t, (r0, r1) in enumerate(tiling.bands(rows, rpt)):
                nr = r1 - r0
                flags = base["flags"] | Flag.FIRST | Flag.LAST | (Flag.WLOAD if t == 0 else 0)
                tiles.append(dict(base, flags=flags, ch0=c0, nch=gn, r0=r0, nr=nr, b0=0,
                                  nb=lay.batch, weight_base=(gi % 2) * half if pingpong else 0,
                                  weight_words=gn * taps))
        self._emit(op, tiles)

    def wg_phase(self, lay: ComputeLayer):
        """WG: tiles = (local input-channel group) x (range of output channels n) x (batch
        chunk); the psum bank accumulates over the batch chunks (FIRST clears, LAST drains).
        Bands from :mod:`sparseforge.gen.tiling`; the sizes come from the scratchpads (the
        mapper's and the model's WG tiles are plain address bands: see that module)."""
        cfg = self.cfg
        ncol = _cdiv(lay.cin, cfg.pe_cols)
        k2 = lay.kh * lay.kw
        plane = lay.h * lay.w                           # dense X words per (b, c)
        if k2 > cfg.psum_buf_depth:
            raise NetworkError(f"{lay.label}: WG: one kernel ({lay.kh}x{lay.kw}) does not fit "
                               f"psum_buf_depth={cfg.psum_buf_depth}")
        if plane > cfg.act_buf_depth:
            raise NetworkError(f"{lay.label}: WG: one input plane ({lay.h}x{lay.w} = {plane} "
                               f"words) does not fit act_buf_depth={cfg.act_buf_depth}")
        if lay.cout * k2 <= cfg.psum_buf_depth:
            g_n = lay.cout
            g_c = min(ncol, cfg.psum_buf_depth // (lay.cout * k2))
        else:
            g_n = cfg.psum_buf_depth // k2
            g_c = 1
        g_c = max(1, min(g_c, cfg.act_buf_depth // plane))
        nb = max(1, min(lay.batch, cfg.act_buf_depth // (g_c * plane)))
        half = cfg.act_buf_depth // 2
        # Ping-pong halves of the act buffer when a chunk fits half: the next chunk's X loads
        # while this one runs.
        pingpong = nb * g_c * plane <= half
        base = self.common(lay)
        tiles = []
        prev_x = None
        loads = 0
        act_base = 0
        for c0, c1 in tiling.bands(ncol, g_c):
            gc = c1 - c0
            for n0, n1 in tiling.bands(lay.cout, g_n):
                gn = n1 - n0
                bank = self.psum_bank()
                b_chunks = tiling.bands(lay.batch, nb)
                for bi, (b0, b1) in enumerate(b_chunks):
                    bn = b1 - b0
                    flags = base["flags"]
                    flags |= Flag.FIRST if bi == 0 else 0
                    flags |= Flag.LAST if bi == len(b_chunks) - 1 else 0
                    if (c0, b0) != prev_x:
                        # A new X chunk (channel group, batch chunk); the same one is reused
                        # across the n ranges when a single batch chunk holds the whole batch.
                        flags |= Flag.ALOAD
                        act_base = (loads % 2) * half if pingpong else 0
                        loads += 1
                    prev_x = (c0, b0)
                    tiles.append(dict(base, flags=flags, ch0=c0, nch=gc, r0=n0, nr=gn, b0=b0,
                                      nb=bn, act_base=act_base, act_words=bn * gc * plane,
                                      psum_base=bank, psum_words=gc * gn * k2))
        self._emit(Op.WG, tiles, psum_set=False)

    def _emit(self, op, tiles, psum_set=True):
        for t, d in enumerate(tiles):
            d = dict(d)
            if psum_set:
                row_len = d["wo"] if op == Op.FP else d["w"]
                d["psum_base"] = self.psum_bank()
                d["psum_words"] = d["nr"] * row_len
            self.entries.append(Entry(opcode=op, tile=t, n_tiles=len(tiles), **d))

    def single(self, op, lay, extra_flags=0, **kw):
        d = self.common(lay)
        d["flags"] |= extra_flags
        d.update(kw)
        self.entries.append(Entry(opcode=op, tile=0, n_tiles=1, **d))

    def pregen(self, lay, extra_flags=0):
        """PREGEN of ``lay``: ``2 * weights / M`` groups (fwd pass, then bwd pass, in
        ``hdl.weight_pregen.pregen_schedule`` order) in chunks that fit the weight buffer; one
        entry per chunk (``r0`` = first group, ``nr`` = groups; the host loads the chunk into
        the weight buffer at 0 before the controller runs it)."""
        groups = 2 * lay.weight_words // self.cfg.nm_m
        depth = self.cfg.weight_buf_depth
        n = _cdiv(groups, depth)
        for t in range(n):
            g0 = t * depth
            ng = min(depth, groups - g0)
            d = self.common(lay)
            d["flags"] |= extra_flags
            d.update(r0=g0, nr=ng, weight_base=0, weight_words=ng)
            self.entries.append(Entry(opcode=Op.PREGEN, tile=t, n_tiles=n, **d))

    def check_entry_fit(self):
        cfg = self.cfg
        for e in self.entries:
            label = f"layer {e.layer}"
            for lay in self.net.compute:
                if lay.id == e.layer:
                    label = lay.label
            if e.psum_words > cfg.psum_buf_depth:
                raise NetworkError(f"{label}: {e.op_name} tile {e.tile} needs {e.psum_words} psum "
                                   f"words > psum_buf_depth={cfg.psum_buf_depth}")
            if e.weight_base + e.weight_words > cfg.weight_buf_depth:
                raise NetworkError(f"{label}: {e.op_name} tile {e.tile} weights end at "
                                   f"{e.weight_base + e.weight_words} > weight_buf_depth="
                                   f"{cfg.weight_buf_depth}")
            if e.act_base + e.act_words > cfg.act_buf_depth:
                raise NetworkError(f"{label}: {e.op_name} tile {e.tile} activations end at "
                                   f"{e.act_base + e.act_words} > act_buf_depth="
                                   f"{cfg.act_buf_depth}")


def build_schedule(net: Network, cfg: AcceleratorConfig, *, mapping: str = "interleaved",
                   sparse: bool = True, initial_pregen: bool = False) -> Schedule:
    """Compile one training iteration of ``net`` for ``cfg``.

    ``mapping``: ``interleaved`` (default) or ``in-order``. ``sparse=False``: the dense
    baseline (no zero skipping, no BDWP, no pruning; same tiling). ``initial_pregen``: start with
    a PREGEN of every BDWP layer (the first iteration; later ones get their W_fwd/W_bwd from the
    previous iteration's PREGEN entries). Raises ``NetworkError`` (a ``ValueError``) naming the
    layer when a tile cannot fit the scratchpads.
    """
    if not isinstance(net, Network):
        raise TypeError(f"net must be a Network (gen.network.load_network), not {type(net).__name__}")
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    if mapping not in ("interleaved", "in-order"):
        raise ValueError(f"mapping must be 'interleaved' or 'in-order', not {mapping!r}")
    if len(net.compute) > 255:
        raise ValueError(f"at most 255 conv/fc layers fit the 8-bit layer field, not {len(net.compute)}")
    b = _Builder(net, cfg, mapping, sparse)
    if initial_pregen:
        for lay in net.compute:
            if b.bdwp(lay):
                b.pregen(lay)
    for lay in net.compute:
        b.conv_phase(Op.FP, lay)
    for lay in reversed(net.compute):
        if b.prune(lay):
            b.single(Op.PRUNE, lay, nr=lay.batch * lay.cout * lay.ho * lay.wo)
        if lay.id > 0:
            b.conv_phase(Op.BP, lay)
        b.wg_phase(lay)
        if b.bdwp(lay):
            b.pregen(lay, Flag.OVERLAP)
    b.entries.append(Entry(opcode=Op.END))
    b.check_entry_fit()
    return Schedule(entries=tuple(b.entries), config_tag=config_tag(cfg),
                    config_hash=config_hash(cfg))


# -- the tensor buffers (issue 16) ----------------------------------------------------------------

#: Buffer field -> what it holds (docs/dma.md): the DMA moves whole tensors into these.
BUFFERS = {"act_mem_elems": "activation buffer (x)",
           "grad_mem_elems": "output-gradient buffer (dy)",
           "wgt_mem_elems": "weight buffer (w; the N:M mask's buffer holds as many bits, packed "
                            "data_width per element)",
           "out_mem_elems": "result buffer (y, dx, dW)"}


#: The tensor buffer field that holds each tensor of a layer phase (the results share one).
TENSOR_BUFFER = {"x": "act_mem_elems", "dy": "grad_mem_elems", "w": "wgt_mem_elems",
                 "y": "out_mem_elems", "dx": "out_mem_elems", "dW": "out_mem_elems"}


def _layer_tensors(lay: ComputeLayer) -> list[tuple[str, str, str, int]]:
    """``[(phase, tensor, buffer field, elements)]`` of one layer at its network's batch:
    FP x, w, y; BP (not the first layer) dy, w, dx; WG x, dy, dW. A layer's masks are one
    bit per weight, packed ``data_width`` bits per element in a MASK buffer of
    ``ceil(wgt_mem_elems / data_width)`` elements (``hdl/dataplane.py``), so they fit when w
    does and are not listed."""
    x = lay.batch * lay.cin * lay.h * lay.w
    y = lay.batch * lay.cout * lay.ho * lay.wo
    w = lay.cout * lay.cin * lay.kh * lay.kw
    sizes = {"FP": {"x": x, "w": w, "y": y}, "BP": {"dy": y, "w": w, "dx": x},
             "WG": {"x": x, "dy": y, "dW": w}}
    return [(ph, name, TENSOR_BUFFER[name], n) for ph in ("FP", "BP", "WG")
            if ph != "BP" or lay.id > 0 for name, n in sizes[ph].items()]


def check_tensors(cfg: AcceleratorConfig, sizes: dict, where: str, *, batch=None) -> None:
    """Refuse (``NetworkError``, one line) the tensors ``sizes`` (``TENSOR_BUFFER`` name ->
    elements) of one layer phase when one exceeds its buffer of ``cfg``; ``where`` names the
    phase in the message (e.g. ``"conv1: FP"``). The first offending tensor in ``sizes``'
    order is named, with its size, the buffer and its size (and ``batch`` when given)."""
    for name, n in sizes.items():
        buf = TENSOR_BUFFER[name]
        size = getattr(cfg, buf)
        if n > size:
            b = "" if batch is None else f"batch {batch}, "
            raise NetworkError(f"{where} tensor {name} has {n} elements > {buf}={size} "
                               f"(the {BUFFERS[buf].split(' (')[0]}; {b}configuration "
                               f"{cfg.name})")


def buffer_demand(net: Network) -> dict:
    """Per buffer field, the largest tensor of any layer phase of ``net`` (at its batch):
    ``{field: (elements, layer label, phase, tensor)}`` -- the buffer sizes the network needs."""
    best = {}
    for lay in net.compute:
        for ph, name, buf, n in _layer_tensors(lay):
            if n > best.get(buf, (0,))[0]:
                best[buf] = (n, lay.label, ph, name)
    return best


def check_fits(net: Network, cfg: AcceleratorConfig) -> None:
    """Refuse (``NetworkError``, one line) a network whose tensors of some layer phase exceed
    the on-chip tensor buffers of ``cfg`` (``act_mem_elems`` x, ``grad_mem_elems`` dy,
    ``wgt_mem_elems`` w and its masks, ``out_mem_elems`` y / dx / dW; elements of
    ``data_width`` bits). The batch is the network's (``load_network(..., batch=B)``). The
    first offending tensor (layer by layer; FP, BP, WG; inputs before the result) is named: layer, phase, tensor, its size, the
    buffer and its size."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a Network (gen.network.load_network), not {type(net).__name__}")
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    for lay in net.compute:
        for ph in ("FP", "BP", "WG"):
            sizes = {name: n for p, name, _, n in _layer_tensors(lay) if p == ph}
            check_tensors(cfg, sizes, f"{lay.label}: {ph}", batch=net.batch)


def entry_fields() -> list[str]:
    return [f.name for f in fields(Entry)]


def to_json(schedule: Schedule) -> str:
    return json.dumps({"config_tag": schedule.config_tag, "config_hash": schedule.config_hash,
                       "entries": [asdict(e) for e in schedule.entries]}, indent=1)
