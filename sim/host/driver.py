"""Host driver of the :class:`~sparseforge.hdl.accelerator.Accelerator`.

Two layers:

* :class:`PacketCodec` -- pure Python: the destination/source tables of a configuration
  (:mod:`sparseforge.hdl.wire`, the tables the router and the merger are built from; no
  hardware is instantiated) and the packet encoding of the top level's AXI4-Stream ports (no
  simulator needed; the tests use it to build and parse streams);
* :class:`Driver` -- runs jobs on a live design through cocotbext-axi: ``AxiLiteMaster`` on
  ``s_axil``, ``AxiStreamSource`` on ``s_axis``, ``AxiStreamSink`` on ``m_axis``.

A PE-array layer phase (:class:`sparseforge.gen.mapper.array.ArrayJob`) is sent as: the CTRL
packet, the WG X scratchpads (the first image of each PE), then the tiles in a deadlock-free
order -- tile ``t``'s rows (per PE row: an operand row, then each PE's bundles for it) are
followed by tile ``t - 1``'s drain commands, so tile ``t`` is processed while tile ``t - 1``
drains -- and END. A chunked WG phase (an input larger than ``act_buf_depth``) adds, per PE
row and tile, before each run of rows that reads another scratchpad chunk, that chunk's image
for each PE of the row (``dense_r{i}_c{j}``). The router serves one packet at a time, so a
packet must never wait for one sent after it: a row's bundles need the row (sent before), a
row needs a free buffer half (the bundles of the row two back, sent before), a tile's first
bundle needs its psum half (tile ``t - 2`` drained, sent before), a drain needs its tile
finished (all its rows sent before), and a reload needs its PE to have finished the previous
chunk's last bundle (``eoc``: its rows and bundles, sent before; they need nothing sent
after the reload).
"""

from __future__ import annotations

import numpy as np

from sparseforge.gen.mapper.pe import PEJob
from sparseforge.hdl.axil import (CTRL_IRQ_ENABLE, CTRL_SOFT_RESET, CTRL_START, IRQ_DONE,
                                  IRQ_ERROR, REGS, SCHED_LOADED, STATUS_BUSY,
                                  STATUS_DONE, STATUS_ERROR)
from sparseforge.hdl.wire import (DEST_END, ctrl_layout, destinations, header, pe_layouts,
                                  pgctl_layout, sources, split_header)
from sparseforge.sim.host.pregen import pregen_beats, pregen_reassemble, unpack_pregen_out
from sparseforge.sim.testkit.amaranth_streams import pack_beats, unpack


def pm_image_beats(img) -> list[dict]:
    """``dense`` beats of one scratchpad image (``last`` on its final word)."""
    from sparseforge.gen.mapper.pe import PEJob
    return PEJob._image_beats(img)

__all__ = ["PacketCodec", "Driver", "pack_mask"]


def pack_mask(mask, data_width: int) -> np.ndarray:
    """A mask (any shape; an element counts as set when non-zero) packed as the data plane's
    MASK buffer holds it (``docs/dataplane.md``): bit ``k`` of the mask in C order is bit ``k %
    data_width`` of element ``k // data_width`` (little endian; the last element's unused bits
    0). Returns ``ceil(mask.size / data_width)`` signed ``data_width``-bit integers (int64)."""
    bits = (np.asarray(mask).reshape(-1) != 0).astype(np.int64)
    n = -(-bits.size // data_width)
    bits = np.concatenate([bits, np.zeros(n * data_width - bits.size, np.int64)])
    words = (bits.reshape(n, data_width) << np.arange(data_width, dtype=np.int64)).sum(axis=1)
    sign = 1 << (data_width - 1)
    return ((words ^ sign) - sign).astype(np.int64)


class PacketCodec:
    """Packet tables and encoding for configuration ``cfg``: pure functions of the
    configuration (:mod:`sparseforge.hdl.wire`), no hardware is instantiated.

    ``dests`` / ``srcs``: the :class:`~sparseforge.hdl.wire.Packet` tables (``.id``,
    ``.name``, ``.shape``, ``.width``, ``.words``) in id order; ``dest_id`` / ``src_id``: name
    -> id."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dests = destinations(cfg)
        self.dest_id = {d.name: d.id for d in self.dests}
        self.srcs = sources(cfg)
        self.src_id = {s.name: s.id for s in self.srcs}
        self.ctrl = ctrl_layout(cfg)
        self.pgctl_layout = pgctl_layout(cfg)
        pe = pe_layouts(cfg)
        self.layouts = {k: pe[k] for k in ("x", "taps", "dense", "drain")}
        self.out_layout = pe["out"]

    # -- input packets ------------------------------------------------------------------------
    def packet(self, dest: str, beats: list[int]) -> list[int]:
        """Header + words of ``beats`` (ints of the destination's payload width)."""
        d = self.dests[self.dest_id[dest]]
        try:
            words = [header(d.id, len(beats))]
        except ValueError:
            raise ValueError(f"packet for {dest} too long: {len(beats)} beats") from None
        for b in beats:
            if b < 0 or b >> d.width:
                raise ValueError(f"beat {b:#x} does not fit the {d.width}-bit payload of {dest}")
            words += [(b >> (32 * i)) & 0xFFFFFFFF for i in range(d.words)]
        return words

    def ctrl_packet(self, **fields) -> list[int]:
        full = {name: 0 for name in self.ctrl.members}
        unknown = set(fields) - set(full)
        if unknown:
            raise ValueError(f"unknown CTRL fields {sorted(unknown)}; known: {sorted(full)}")
        full.update(fields)
        return self.packet("ctrl", [int(self.ctrl.const(full).as_bits())])

    def dp_packet(self, cmds: list[dict]) -> list[int]:
        """A ``dp`` packet of data-plane commands (``hdl/dataplane.py``, executed in order):
        each a dict ``{"kind": CMD_DESC, "desc": {buf, base, length, dir, addr}}`` or
        ``{"kind": CMD_JOB, "job": {mode, batch, cin, cout, h, w, kh, kw, stride2, pad, raw,
        act_base, grad_base, w_base, m_base, out_base}}`` or ``{"kind": CMD_PRUNE, "prune":
        {base, n, k_p, shift, seed}}`` (missing fields are 0)."""
        if "dp" not in self.dest_id:
            raise ValueError(f"configuration {self.cfg.name!r} has no data plane "
                             f"(data_plane={self.cfg.data_plane!r})")
        from sparseforge.hdl.dataplane import pack_cmd
        layout = self.dests[self.dest_id["dp"]].shape
        return self.packet("dp", [pack_cmd(layout, c) for c in cmds])

    def end_packet(self) -> list[int]:
        return [header(DEST_END, 0)]

    # -- the command table (hdl/cmd_table.py) ---------------------------------------------
    @property
    def has_table(self) -> bool:
        """The core has a command table (``cmd_table_depth`` > 0 and the data plane)."""
        return "dpcall" in self.dest_id

    def call_packet(self, op: int, idx: int = 0, count: int = 0, *, end: bool = False) -> list:
        """A ``dpcall`` packet of one call beat: ``CALL_RUN`` replays entries ``[idx, idx +
        count)`` (``end``: then ends the job like an END packet), ``CALL_SETW`` points the
        next ``dptab`` beats at entry ``idx``."""
        from sparseforge.hdl.cmd_table import call_layout
        return self.packet("dpcall", pack_beats(call_layout(), [
            {"op": op, "end": int(end), "idx": idx, "count": count}]))

    def table_entries(self, head: list, cmds: list) -> list[int] | None:
        """The table entries of ``head`` packets (``step`` packets only) and ``cmds`` (data-
        plane commands) in stream order; None when ``head`` holds another kind of packet."""
        from sparseforge.hdl.dataplane import pack_cmd
        step_id, layout = self.dest_id["step"], self.dests[self.dest_id["dp"]].shape
        flag = 1 << layout.size                       # the entry's ``step`` bit
        out = []
        for p in head:
            ident, count = split_header(p[0])
            if ident != step_id or len(p) != 1 + count:
                return None
            out += [flag | (w & 0xFF) for w in p[1:]]
        return out + [pack_cmd(layout, c) for c in cmds]

    def sched_packet(self, binary) -> list[int]:
        """The schedule binary (bytes or 32-bit words) as one ``sched`` packet: the schedule
        controller stores and checks it (hdl/controller.py)."""
        if isinstance(binary, (bytes, bytearray)):
            if len(binary) % 4:
                raise ValueError(f"a schedule is whole 32-bit words, not {len(binary)} bytes")
            binary = [int.from_bytes(binary[k:k + 4], "little")
                      for k in range(0, len(binary), 4)]
        return self.packet("sched", [int(w) for w in binary])

    def step_packet(self, opcode: int, *, data_plane: bool = False) -> list[int]:
        """A ``step`` packet: the host is about to run the schedule's next phase, whose
        opcode it expects to be ``opcode`` (:class:`sparseforge.gen.schedule.Op`).
        ``data_plane``: the data plane runs it (``STEP_DATA_PLANE``: a PREGEN step starts no
        stream pre-generation run)."""
        from sparseforge.hdl.wire import STEP_DATA_PLANE
        return self.packet("step", [int(opcode) | (STEP_DATA_PLANE if data_plane else 0)])

    def _packed(self, kind, beats):
        return pack_beats(self.layouts[kind], beats)

    def array_job_packets(self, job, *, pe_sel=0, step=None) -> list[list[int]]:
        """Every packet of an ArrayJob, in the deadlock-free order of the module docstring.
        ``step`` (an opcode): schedule mode -- a ``step`` packet first, and a CTRL packet that
        carries only ``raw`` and ``pe_sel`` (the phase controls come from the schedule)."""
        R, C = job.rows, job.cols
        n_tiles = len(job.grid[0][0])
        ctl = job.control()
        if step is None:
            pk = [self.ctrl_packet(pe_sel=pe_sel, **ctl)]
        else:
            pk = [self.step_packet(step), self.ctrl_packet(pe_sel=pe_sel, raw=ctl["raw"])]
        for i in range(R):
            for j in range(C):
                d = job.grid[i][j][0].dense_beats()
                if d:
                    pk.append(self.packet(f"dense_r{i}_c{j}", self._packed("dense", d)))

        def drains(t):
            return [self.packet(f"drain_c{j}", self._packed("drain", job.grid[0][j][t]
                                                             .drain_beats()))
                    for j in range(C)]

        def rows_of(tiles, t):
            """Row indices of a PE row's tile in stream order, with the chunk reloads (per
            run of rows reading one scratchpad chunk, but the job's very first) before them."""
            for k, (c, r0, r1) in enumerate(tiles[0].runs()):
                if tiles[0].chunked and (t or k):
                    yield [(j, tiles[j].chunks[c]) for j in range(C)]
                yield from range(r0, r1)

        for t in range(n_tiles):
            for i in range(R):
                tiles = [job.grid[i][j][t] for j in range(C)]
                for r in rows_of(tiles, t):
                    if isinstance(r, list):                   # a chunk reload
                        for j, img in r:
                            pk.append(self.packet(f"dense_r{i}_c{j}", self._packed(
                                "dense", PEJob.image_beats(img))))
                        continue
                    row = tiles[0].rows[r]
                    k = row.values.size
                    xb = [{"value": int(v), "col": int(c), "last": int(q == k - 1)}
                          for q, (v, c) in enumerate(zip(row.values, row.cols))]
                    pk.append(self.packet(f"x_r{i}", self._packed("x", xb)))
                    for j in range(C):
                        bundles = tiles[j].bundles()[r]
                        tb = [{"slots": [{"value": v, "kw": kw, "base": b, "rowbase": rb,
                                          "en": en} for v, kw, b, rb, en in slots],
                               "parity": p, "last": last, "eot": eot, "eoc": eoc}
                              for slots, p, last, eot, eoc in bundles]
                        pk.append(self.packet(f"taps_r{i}_c{j}", self._packed("taps", tb)))
            if t >= 1:
                pk += drains(t - 1)
        pk += drains(n_tiles - 1)
        pk.append(self.end_packet())
        return pk

    def scrub_packets(self) -> tuple[list[list[int]], int]:
        """Packets that zero every PE's partial-sum memories (both halves): two empty tiles
        (one zero operand row, one skip bundle with ``eot``) each drained over the whole
        ``psum_buf_depth``. Needed after a reset in the middle of a job: a reset restarts the
        control logic, but block-RAM contents cannot be reset and the banks are cleared only
        by drains. Returns ``(packets, output beats to discard)``."""
        cfg = self.cfg
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.macs_per_pe
        pk = [self.ctrl_packet(mode=0, raw=1, skip_zero=0, out_len=1, in_len=1)]
        off = {"value": 0, "kw": 0, "base": 0, "rowbase": 0, "en": 0}
        for _ in range(2):
            for i in range(R):
                pk.append(self.packet(f"x_r{i}", self._packed("x", [
                    {"value": 0, "col": 0, "last": 1}])))
                for j in range(C):
                    pk.append(self.packet(f"taps_r{i}_c{j}", self._packed("taps", [
                        {"slots": [off] * L, "parity": 0, "last": 1, "eot": 1}])))
        for _ in range(2):
            for j in range(C):
                pk.append(self.packet(f"drain_c{j}", self._packed("drain", [
                    {"base": 0, "count": cfg.psum_buf_depth, "raw": 1, "last": 1}])))
        pk.append(self.end_packet())
        return pk, 2 * C * cfg.psum_buf_depth

    # -- output packets -----------------------------------------------------------------------
    def parse_output(self, words: list[int]) -> list[tuple[str, int]]:
        """Split ``m_axis`` words into ``(source name, beat int)``."""
        out, k = [], 0
        while k < len(words):
            hdr = words[k]
            src, n = split_header(hdr)
            if src >= len(self.srcs):
                raise ValueError(f"output header {hdr:#010x}: unknown source {src}")
            s = self.srcs[src]
            if n != s.words:
                raise ValueError(f"output header {hdr:#010x}: {n} words, expected {s.words}")
            beat = 0
            for i in range(n):
                beat |= words[k + 1 + i] << (32 * i)
            out.append((s.name, beat & ((1 << s.width) - 1)))
            k += 1 + n
        return out

    def column_values(self, parsed, cols) -> list[list[dict]]:
        """Per column, the unpacked ``{value, last, end}`` beats in arrival order."""
        res = [[] for _ in range(cols)]
        for name, beat in parsed:
            if name.startswith("o_c"):
                res[int(name[3:])].append(unpack(self.out_layout, beat))
        return res


class LazyArrayStats:
    """The array model's statistics of a phase (``am.cycles(am.map_array(...))``), computed
    on the first attribute access (``.cycles``, ``.pe``, ...). :attr:`Driver.defer_model`
    hands these out so that the reference model's Python runs after the timed simulation,
    not inside it. The operands are copied (a later in-place change cannot alter them)."""

    def __init__(self, phase: str, cfg, *, stride: int, padding: int, raw: bool, kw: dict):
        kw = {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        self._args = (phase, cfg, stride, padding, raw, kw)
        self._stats = None

    def resolve(self):
        """The :class:`~sparseforge.gen.mapper.array.ArrayStats` (computed once)."""
        if self._stats is None:
            from sparseforge.gen.mapper import array as am
            phase, cfg, stride, padding, raw, kw = self._args
            self._stats = am.cycles(am.map_array(phase, cfg=cfg, stride=stride,
                                                 padding=padding, raw=raw, **kw))
            self._args = None
        return self._stats

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)


def phase_out_shape(phase: str, kw: dict, stride: int, padding: int) -> tuple:
    """The result's shape of a layer phase (:meth:`Driver.run_phase`'s arguments ``kw``):
    FP ``(B, Cout, Ho, Wo)``, BP ``x_shape``, WG ``w_shape``."""
    if phase == "bp":
        return tuple(int(v) for v in kw["x_shape"])
    if phase == "wg":
        return tuple(int(v) for v in kw["w_shape"])
    (B, _, H, W), (Cout, _, Kh, Kw) = np.shape(kw["x"]), np.shape(kw["w"])
    return (B, Cout, (H + 2 * padding - Kh) // stride + 1, (W + 2 * padding - Kw) // stride + 1)


class Driver:
    """Runs jobs on a live ``accelerator`` design (cocotb coroutines)."""

    #: Bytes of the simulated card memory (an ``AxiRam`` on the data plane's ``m_axi``).
    CARD_BYTES = 1 << 22

    def __init__(self, dut, cfg, *, clk=None, rst=None, transport=None):
        self.dut = dut
        self.codec = PacketCodec(cfg)
        #: clock period (ns) of the cocotb clock, for :meth:`now_cycles`
        self.period_ns = 10
        self.transport = transport
        if transport is not None:
            # another simulation (sparseforge.sim.fastsim) or a device: the same bus objects
            self.axil, self.src, self.sink = transport.axil, transport.src, transport.sink
            self.ram = transport.ram if cfg.data_plane == "dma" else None
        else:
            from cocotbext.axi import (AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiStreamBus,
                                       AxiStreamSink, AxiStreamSource)
            clk = clk or dut.clk
            rst = rst or dut.rst
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), clk, rst)
            self.src = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), clk, rst)
            self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), clk, rst)
            #: the card memory the data plane's DMA master reads and writes (None without
            #: one): the host places tensors in it directly (as XDMA's AXI-MM port does)
            self.ram = None
            if cfg.data_plane == "dma":
                self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), clk, rst,
                                  size=self.CARD_BYTES)
                for ch in (self.ram.write_if, self.ram.read_if):
                    ch.log.setLevel("WARNING")
        #: 32-bit words the host wrote into / read from the card memory so far
        self.card_words_in = 0
        self.card_words_out = 0
        self.prev: dict = {}
        self.side: list = []              # output beats of other sources seen by _collect
        #: 32-bit AXI4-Stream words sent to ``s_axis`` / received from ``m_axis`` so far (the
        #: host traffic the e2e report counts per phase)
        self.words_in = 0
        self.words_out = 0
        #: the last :meth:`run_phase`'s figures (``cycles``, ``array_cycles``, words, status)
        self.last_phase: dict = {}
        #: what the data plane's tensor buffers hold for sure: ``(buffer id, element base)`` ->
        #: the tensor's values, from successful loads (and the results written in place: the
        #: pruned gradient, the updated weight and its masks, read back); a phase whose operand
        #: equals one skips that load (:meth:`_run_phase_dma`). A new entry drops the entries
        #: it overlaps. Emptied while a data-plane operation runs and by a soft reset, so after
        #: any error it is empty (fail-safe: the hardware's loaded-range check refuses the rest)
        self._resident: dict = {}
        #: the network's weights resident on chip (:meth:`load_network`): layer -> its home
        #: (:meth:`plan_homes`)
        self.homes: dict = {}
        self._x_sizes: dict = {}             # layer -> its input's elements (_act_home)
        #: 32-bit words read from the card memory only for checking (:meth:`debug_read`), not
        #: counted in ``card_words_out``
        self.debug_words = 0
        #: where the next data-plane phases find their gradient and put their results, for a
        #: caller that chains them on chip (the e2e step's between-layer stages): ``"dy"``,
        #: the GRAD element base of a BP / WG phase's ``dy`` and of :meth:`prune_onchip`'s
        #: gradient (default 0); ``"bp_out"``, the OUT base of a BP phase's result (default 0)
        self.dp_bases: dict = {}
        #: FP / BP results stay in OUT (no store; read for checking by :meth:`debug_read`):
        #: a :meth:`stage_onchip` reads them there
        self.keep_results = False
        #: the last :meth:`stage_onchip`'s figures
        self.last_stage: dict = {}
        #: the counters of the commands that ran beside the last data-plane job (``beside``)
        self.last_beside: dict = {}
        #: :meth:`wait_done` waits for the core's interrupt instead of polling STATUS (a
        #: transport that can wait for it: the XDMA card's events device, the fast
        #: simulation); set False to poll. CTRL.irq_enable is then kept set in every CTRL write.
        self.use_irq = bool(getattr(transport, "has_irq", False))
        #: replay repeated data-plane packets from the core's command table
        #: (``hdl/cmd_table.py``): a phase's step beats and commands are written into the
        #: table the first time and run by a one-word call from then on (the e2e step's
        #: commands are the same every step). False: every command crosses the stream.
        self.replay = self.codec.has_table
        #: the table as the host wrote it: entries (a tuple) -> their first index; emptied by
        #: a soft reset (the core forgets the table too) and when the table is full
        self._table: dict = {}
        self._table_next = 0
        #: packets run from the table (calls) and packets that wrote entries, so far
        self.replay_calls = 0
        self.table_writes = 0
        self._irq_on = False
        #: data-plane phases leave the array model's statistics to be computed when first
        #: used: :attr:`last_stats` is a :class:`LazyArrayStats` and ``last_phase``'s
        #: ``array_cycles`` is None (the e2e run times the simulation without the reference
        #: model's Python; it resolves them after the step). Off by default.
        self.defer_model = False

    @classmethod
    async def start(cls, dut, cfg, *, period_ns: int = 10):
        """Start ``dut.clk``, attach a driver (before reset, so cocotbext-axi sees it), hold
        ``dut.rst`` for 3 cycles and return the driver two cycles after its release."""
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles, FallingEdge
        Clock(dut.clk, period_ns, unit="ns").start()
        drv = cls(dut, cfg)
        drv.period_ns = period_ns
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        return drv

    @classmethod
    def fast(cls, cfg, lib, *, waves=None) -> "Driver":
        """A driver on the fast simulation (:mod:`sparseforge.sim.fastsim`): ``lib`` the
        ``libsfsim.so`` that :func:`~sparseforge.sim.fastsim.build.build_fast` built for
        ``cfg``; ``waves`` a VCD path (a library built with waves). The design comes out of
        reset as under :meth:`start`; the coroutines run under ``asyncio.run``."""
        from sparseforge.sim.fastsim.sim import FastSim, FastTransport
        sim = FastSim(lib, mem_bytes=cls.CARD_BYTES, waves=waves)
        return cls(None, cfg, transport=FastTransport(sim,
                                                      card_memory=cfg.data_plane == "dma"))

    def spawn(self, coro):
        """Run ``coro`` concurrently (cocotb), or when awaited (a transport whose sends never
        wait for the receiver: it buffers every output packet)."""
        if self.transport is not None:
            return self.transport.spawn(coro)
        import cocotb
        return cocotb.start_soon(coro)

    def now_cycles(self) -> int:
        """Simulated clock cycles so far."""
        if self.transport is not None:
            return self.transport.now_cycles()
        from cocotb.utils import get_sim_time
        return int(get_sim_time("ns")) // self.period_ns

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(REGS[name])

    async def write(self, name: str, value: int):
        if name == "CTRL" and value & CTRL_SOFT_RESET:
            self._resident = {}           # the soft reset forgets the loaded ranges
            self._forget_table()          # ... and the command table's entries
        if name == "CTRL" and self._irq_on:
            value |= CTRL_IRQ_ENABLE      # a CTRL write must not switch the interrupt off
        await self.axil.write_dword(REGS[name], value)

    async def counter(self, name: str) -> int:
        lo = await self.read(f"{name.upper()}_LO")
        hi = await self.read(f"{name.upper()}_HI")
        return hi << 32 | lo

    async def send(self, packets):
        for p in packets:
            data = b"".join(w.to_bytes(4, "little") for w in p)
            self.words_in += len(p)
            await self.src.send(data)
        await self.src.wait()

    async def _collect(self, n_beats, *, prefix=None):
        """Receive output packets until ``n_beats`` beats (of sources whose name starts with
        ``prefix``, when given) have arrived; beats of other sources go to :attr:`side`."""
        parsed = []
        while len(parsed) < n_beats:
            frame = await self.sink.recv()
            data = bytes(frame.tdata)
            words = [int.from_bytes(data[k:k + 4], "little") for k in range(0, len(data), 4)]
            self.words_out += len(words)
            for name, beat in self.codec.parse_output(words):
                if prefix is None or name.startswith(prefix):
                    parsed.append((name, beat))
                else:
                    self.side.append((name, beat))
        return parsed

    async def wait_done(self, max_polls=10000):
        """STATUS once ``done`` or ``error`` is set (both sticky). With :attr:`use_irq` it
        waits for the core's interrupt (``IRQ_STATUS`` cleared after each wait, then STATUS
        read again, so an interrupt left from earlier cannot end the wait early and one that
        fires during the clear is not lost); otherwise it polls STATUS. ``TimeoutError``
        after ``max_polls`` reads / waits."""
        if self.use_irq:
            if not self._irq_on:
                self._irq_on = True
                await self.write("CTRL", CTRL_IRQ_ENABLE)
            for _ in range(max_polls):
                st = await self.read("STATUS")
                if st & (STATUS_DONE | STATUS_ERROR):
                    await self.write("IRQ_STATUS", IRQ_DONE | IRQ_ERROR)
                    return st
                await self.transport.wait_irq()
                await self.write("IRQ_STATUS", IRQ_DONE | IRQ_ERROR)
            raise TimeoutError("STATUS.done never rose")
        for _ in range(max_polls):
            st = await self.read("STATUS")
            if st & (STATUS_DONE | STATUS_ERROR):
                return st
        raise TimeoutError("STATUS.done never rose")

    async def scrub(self):
        """Zero the partial-sum memories (see :meth:`PacketCodec.scrub_packets`); run it
        after a reset that may have interrupted a job. Costs about ``2 * psum_buf_depth``
        cycles plus the packets."""
        packets, n = self.codec.scrub_packets()
        recv = self.spawn(self._collect(n))
        await self.send(packets)
        await recv
        await self.wait_done()
        await self.write("STATUS", STATUS_DONE | STATUS_ERROR)

    async def recover(self, *, max_polls=1000):
        """Bring the accelerator back after an error (``docs/dataplane.md``, "After an
        error": the data plane discards every command until a soft reset): CTRL.soft_reset,
        wait until ``busy`` falls (an aborted transfer drains its burst), a second soft reset
        (clears the abort's own report), clear STATUS, and :meth:`scrub` the partial sums an
        interrupted job may have left. A loaded schedule must be loaded again."""
        await self.write("CTRL", CTRL_SOFT_RESET)
        for _ in range(max_polls):
            if not await self.read("STATUS") & STATUS_BUSY:
                break
        else:
            raise TimeoutError("STATUS.busy stayed high after a soft reset")
        await self.write("CTRL", CTRL_SOFT_RESET)
        await self.write("STATUS", STATUS_DONE | STATUS_ERROR)
        await self.scrub()

    async def load_schedule(self, binary, *, max_polls=100):
        """Send a schedule binary (``sched`` packet) and wait for the controller's verdict;
        returns ``(SCHED_STATUS, STATUS, ERROR_CODE)``. A rejected binary leaves STATUS.error
        and ERROR_CODE = ``0x10 | code`` (:data:`sparseforge.gen.schedule.ERR`)."""
        await self.send([self.codec.sched_packet(binary)])
        for _ in range(max_polls):
            sst, st = await self.read("SCHED_STATUS"), await self.read("STATUS")
            if sst & SCHED_LOADED or st & STATUS_ERROR:
                return sst, st, await self.read("ERROR_CODE")
        raise TimeoutError("the schedule controller gave no verdict")

    async def start_schedule(self):
        """CTRL.start: run the loaded schedule from its first entry; returns SCHED_STATUS."""
        await self.write("CTRL", CTRL_START | (await self.read("CTRL")))
        return await self.read("SCHED_STATUS")

    async def run_array_job(self, job, *, pe_sel=0, step=None):
        """Run an ArrayJob; returns ``(output tensor, STATUS, column values)``. ``step``:
        schedule mode (see :meth:`PacketCodec.array_job_packets`)."""
        packets = self.codec.array_job_packets(job, pe_sel=pe_sel, step=step)
        n = sum(job.n_outputs(j) for j in range(job.cols))
        recv = self.spawn(self._collect(n, prefix="o_c"))
        await self.send(packets)
        parsed = await recv
        status = await self.wait_done()
        cols = self.codec.column_values(parsed, job.cols)
        out = job.assemble([[v["value"] for v in c] for c in cols])
        return out, status, cols

    async def run_phase(self, phase: str, *, x=None, w=None, dy=None, mask=None, x_shape=None,
                        w_shape=None, stride: int = 1, padding: int = 0, raw: bool = False,
                        step=None, home: str | None = None) -> np.ndarray:
        """Run one layer phase on host tensors and return its result (the stable public call,
        ``docs/accelerator.md``, "Running one layer phase").

        ``phase``: ``"fp"`` (``x`` ``(B, Cin, H, W)``, ``w`` ``(Cout, Cin, Kh, Kw)``, ``mask``
        the forward N:M mask or None for dense) -> ``y`` ``(B, Cout, Ho, Wo)``; ``"bp"``
        (``dy``, ``w``, ``x_shape``, ``mask`` the backward mask) -> ``dx`` of ``x_shape``;
        ``"wg"`` (``x``, ``dy``, ``w_shape``) -> ``dW`` of ``w_shape``. Integer tensors in the
        signed ``data_width`` range. ``raw=False`` applies the write-back rule (round, shift
        by ``frac_bits``, saturate: :func:`sparseforge.sim.reference.golden.writeback`), so the
        result equals the golden model's phase; ``raw=True`` returns the raw column sums.
        ``step``: the schedule opcode when a schedule is running (else None). ``home``: a
        layer of :meth:`load_network` -- the weight and mask are read at that layer's home in
        the WGT / MASK buffers (loaded there only when they differ from what it holds).

        A WG input larger than ``act_buf_depth`` runs in scratchpad chunks of whole ``(b,
        c)`` planes, reloaded per tile (:func:`sparseforge.gen.mapper.pe.wg_chunks`).
        Raises ``ValueError`` for a phase the configuration cannot map (e.g. a WG input plane
        ``H*W`` larger than ``act_buf_depth``, a row longer than ``max_row_len``) and
        ``RuntimeError`` when the accelerator reports an error.
        After the call :attr:`last_phase` holds ``cycles`` (the CYCLES counter's increment),
        ``array_cycles`` (the exact array model's cycles for the same work; None on the data
        plane with :attr:`defer_model`, then :attr:`last_stats` computes them when read),
        ``words_in`` / ``words_out`` (stream words) and ``status``."""
        if phase not in ("fp", "bp", "wg"):
            raise ValueError(f"phase must be 'fp', 'bp' or 'wg', not {phase!r}")
        need = {"fp": ("x", "w"), "bp": ("dy", "w", "x_shape"), "wg": ("x", "dy", "w_shape")}
        given = {"x": x, "w": w, "dy": dy, "x_shape": x_shape, "w_shape": w_shape}
        missing = [k for k in need[phase] if given[k] is None]
        if missing:
            raise ValueError(f"run_phase({phase!r}) needs {', '.join(need[phase])}; missing: "
                             f"{', '.join(missing)}")
        kw = {k: given[k] for k in need[phase]}
        if phase != "wg":
            kw["mask"] = mask
        if home is not None and home not in self.homes:
            raise ValueError(f"run_phase: no home {home!r} (Driver.load_network)")
        dma = self.ram is not None and not raw and not self._chunked_wg(phase, kw)
        job = self._model_stats(phase, kw, stride, padding, raw=raw, lazy=dma)
        if dma:
            return await self._run_phase_dma(phase, kw, stride, padding, step, home=home)
        c0 = await self.counter("cycles")
        w0, o0 = self.words_in, self.words_out
        await self.write("STATUS", STATUS_DONE | STATUS_ERROR)
        out, status, _ = await self.run_array_job(job, step=step)
        if status & STATUS_ERROR or not status & STATUS_DONE:
            raise RuntimeError(f"{phase} phase: STATUS {status:#x}, ERROR_CODE "
                               f"{await self.read('ERROR_CODE'):#x}")
        self.last_phase = {"phase": phase, "cycles": await self.counter("cycles") - c0,
                           "array_cycles": self.last_stats.cycles,
                           "words_in": self.words_in - w0, "words_out": self.words_out - o0,
                           "status": status, "data_plane": "host-stream"}
        return out

    # -- the on-chip data plane (cfg.data_plane == "dma") -------------------------------------
    def card_write(self, addr: int, values, *, width=None):
        """Place ``values`` (signed integers, ``data_width`` bits each, little endian) in the
        card memory at byte ``addr``."""
        cfg = self.codec.cfg
        width = width or cfg.data_width
        nbytes = width // 8
        mask = (1 << width) - 1
        data = b"".join((int(v) & mask).to_bytes(nbytes, "little")
                        for v in np.asarray(values).reshape(-1))
        self.ram.write(addr, data)
        self.card_words_in += -(-len(data) // 4)

    def card_read(self, addr: int, count: int, *, debug: bool = False) -> np.ndarray:
        """``count`` signed ``data_width``-bit elements from the card memory at ``addr``;
        counted in ``card_words_out``, or with ``debug`` in :attr:`debug_words`."""
        cfg = self.codec.cfg
        nbytes = cfg.data_width // 8
        data = self.ram.read(addr, count * nbytes)
        words = -(-len(data) // 4)
        if debug:
            self.debug_words += words
        else:
            self.card_words_out += words
        if nbytes in (1, 2, 4, 8):
            return np.frombuffer(bytes(data), f"<i{nbytes}").astype(np.int64)
        raw = [int.from_bytes(data[k:k + nbytes], "little", signed=True)
               for k in range(0, len(data), nbytes)]
        return np.asarray(raw, dtype=np.int64)

    async def debug_read(self, buf: int, base: int, count: int) -> np.ndarray:
        """``count`` elements of on-chip buffer ``buf`` from element ``base``, for checking:
        one DMA store to the card memory, read back. Its words -- the command packet's stream
        words and the words read -- count as :attr:`debug_words` (not as phase traffic); run it between phases (its transfer is not in any phase's
        counters)."""
        from sparseforge.hdl.dma import DIR_STORE
        from sparseforge.hdl import dataplane as dpm
        had, self._resident = self._resident, {}
        w0 = self.words_in
        await self._dp_exec("debug read", [], [{"kind": dpm.CMD_DESC, "desc": {
            "buf": buf, "base": int(base), "length": int(count), "dir": DIR_STORE,
            "addr": 0}}], ("dma_beats",), replay=False)
        # its command packet is checking traffic too: counted with the words it reads
        self.debug_words += self.words_in - w0
        self.words_in = w0
        self._resident = had
        return self.card_read(0, count, debug=True)

    def _mark(self, buf: int, base: int, values):
        """Record that ``buf`` holds ``values`` from element ``base`` (dropping the entries of
        ``buf`` it overlaps)."""
        v = np.array(values, copy=True)
        self._forget(buf, base, v.size)
        self._resident[(buf, base)] = v

    def _forget(self, buf: int, base: int, n: int):
        """Drop what :attr:`_resident` says ``buf`` holds in elements ``[base, base + n)``
        (the hardware wrote there something the host does not know)."""
        for (b, b0) in [k for k in self._resident if k[0] == buf]:
            if b0 < base + n and base < b0 + self._resident[(b, b0)].size:
                del self._resident[(b, b0)]

    def _act_home(self, home: str, n: int) -> int:
        """The ACT element base of layer ``home``'s input (``n`` elements): right after the
        inputs of the layers before it (:meth:`plan_homes` order, their sizes recorded by their
        phases), so the forward pass loads them back to back (one loaded interval) and each
        stays for its layer's WG; 0 when a size is not whole ``dma_width`` words, an earlier
        input's size is unknown, or they do not fit ACT."""
        from sparseforge.hdl.dataplane import BUF_ACT, buf_sizes
        cfg = self.codec.cfg
        epw = max(1, cfg.dma_width // cfg.data_width)
        names = list(self.homes)
        self._x_sizes[home] = n
        base = 0
        for name in names[:names.index(home)]:
            m = self._x_sizes.get(name)
            if m is None or m % epw:
                return 0
            base += m
        if n % epw or base + n > buf_sizes(cfg)[BUF_ACT]:
            return 0
        return base

    def plan_homes(self, shapes: dict) -> dict | None:
        """On-chip homes for a network's weights (``shapes``: layer -> weight shape, the conv
        view ``(Cout, Cin, Kh, Kw)``), in order: each weight at a ``dma_width``-word-aligned
        element ``w`` of WGT, one after the other; its forward mask at element ``mf`` of MASK
        and the backward one at ``mb``, each in whole ``dma_width`` words (the layout
        ``CMD_PREGEN`` writes). ``None`` when they do not all fit the WGT / MASK buffers
        (:func:`sparseforge.hdl.dataplane.plan_weight_homes`)."""
        from sparseforge.hdl.dataplane import plan_weight_homes
        return plan_weight_homes(self.codec.cfg, shapes)

    async def load_network(self, weights: dict, masks: dict) -> dict:
        """Place a network's weights and their forward/backward masks in the data plane's
        WGT and MASK buffers at their homes (:meth:`plan_homes`; ``weights``: layer -> conv-view
        integer weight, ``masks``: layer -> ``(fwd, bwd)``), where they stay: phases given
        ``home=`` the layer read them there, a WG phase with ``update`` writes the updated
        weight there and the pre-generation its masks. Loads nothing when the buffers already
        hold exactly these tensors (the next training step). One ``dp`` packet: two images,
        one descriptor each. Returns ``{"loaded", "dma_cycles", "card_words_in"}``.
        ``ValueError`` when the weights do not fit (:meth:`plan_homes` is None) or the core
        has no data plane."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dma import DIR_LOAD
        if self.ram is None:
            raise ValueError("load_network needs a core with the data plane (data_plane='dma')")
        cfg, dw = self.codec.cfg, self.codec.cfg.data_width
        homes = self.plan_homes({k: np.shape(v) for k, v in weights.items()})
        if homes is None:
            raise ValueError("load_network: the weights or their masks do not fit the WGT / "
                             "MASK buffers (Driver.plan_homes)")
        packed = {k: tuple(pack_mask(np.asarray(m), dw) for m in masks[k]) for k in weights}
        if self.homes == homes and all(
                self._holds(self._resident, dpm.BUF_WGT, h["w"], weights[k]) and
                self._holds(self._resident, dpm.BUF_MASK, h["mf"], packed[k][0]) and
                self._holds(self._resident, dpm.BUF_MASK, h["mb"], packed[k][1])
                for k, h in homes.items()):
            return {"loaded": False, "dma_cycles": 0, "card_words_in": 0}
        last = list(homes.values())[-1]
        wimg = np.zeros(last["w"] + last["n"], np.int64)
        mimg = np.zeros(last["mb"] + (last["mb"] - last["mf"]), np.int64)
        for k, h in homes.items():
            wimg[h["w"]:h["w"] + h["n"]] = np.asarray(weights[k]).ravel()
            for base, p in zip((h["mf"], h["mb"]), packed[k]):
                mimg[base:base + p.size] = p
        addrs = self.card_layout({"w": wimg.size, "m": mimg.size})
        c0 = self.card_words_in
        self.card_write(addrs["w"], wimg)
        self.card_write(addrs["m"], mimg)
        self._resident = {}
        d = await self._dp_exec("load_network", [], [
            {"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_WGT, "base": 0, "length": wimg.size,
                                            "dir": DIR_LOAD, "addr": addrs["w"]}},
            {"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_MASK, "base": 0,
                                            "length": mimg.size, "dir": DIR_LOAD,
                                            "addr": addrs["m"]}}],
            ("dma_exposed", "dma_beats"), replay=False)
        self.homes = homes
        for k, h in homes.items():
            self._mark(dpm.BUF_WGT, h["w"], np.asarray(weights[k]))
            self._mark(dpm.BUF_MASK, h["mf"], packed[k][0])
            self._mark(dpm.BUF_MASK, h["mb"], packed[k][1])
        return {"loaded": True, "dma_cycles": d["dma_exposed"],
                "card_words_in": self.card_words_in - c0}

    def phase_commands(self, phase: str, shapes: dict, *, stride: int, padding: int,
                       addrs: dict, bases: dict | None = None, skip=(), update=None,
                       store: bool = True) -> list[dict]:
        """The data-plane commands of one layer phase: the loads of its operands (card
        memory byte addresses ``addrs[name]`` for ``x``, ``dy``, ``w``, ``mask``; on-chip
        element offsets ``bases``, 0 by default), the job, the store of its result to
        ``addrs["out"]``. ``shapes``: ``x`` (the input's ``(B, Cin, H, W)``), ``w`` (``(Cout,
        Cin, Kh, Kw)``), ``out`` (the result's). The mask is the packed one
        (:func:`pack_mask`: ``ceil(w.size / data_width)`` elements at ``addrs["mask"]``,
        loaded at element ``bases["mask"]``; the job's ``m_base`` counts bits:
        ``bases["mask"] * data_width``). ``skip``: operands already in their buffer at their
        base (no load). ``update`` (WG): the fused SGD update's ``lr_shift`` -- the weight
        ``w`` (loaded at ``bases["w"]`` unless skipped) becomes ``sat(W - (dW >> lr_shift))``
        there. ``store=False``: no store of the result (it stays in OUT)."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE
        bases = {"x": 0, "dy": 0, "w": 0, "mask": 0, "out": 0, **(bases or {})}
        B, Cin, H, W = shapes["x"]
        Cout, _, Kh, Kw = shapes["w"]
        size = {k: int(np.prod(v)) for k, v in shapes.items()}
        Ho = (H + 2 * padding - Kh) // stride + 1
        Wo = (W + 2 * padding - Kw) // stride + 1
        size["dy"] = B * Cout * Ho * Wo
        dw = self.codec.cfg.data_width
        size["mask"] = dpm.mask_elems(size["w"], dw)
        bufs = {"x": dpm.BUF_ACT, "dy": dpm.BUF_GRAD, "w": dpm.BUF_WGT, "mask": dpm.BUF_MASK}
        reads = {"fp": ("x", "w", "mask"), "bp": ("dy", "w", "mask"), "wg": ("x", "dy")}[phase]
        if update is not None:
            if phase != "wg":
                raise ValueError("the SGD update runs with a WG phase")
            reads = reads + ("w",)
        cmds = [{"kind": dpm.CMD_DESC, "desc": {"buf": bufs[t], "base": bases[t],
                                                "length": size[t], "dir": DIR_LOAD,
                                                "addr": addrs[t]}} for t in reads
                if t not in skip]
        cmds.append({"kind": dpm.CMD_JOB, "job": {
            "mode": {"fp": 0, "bp": 1, "wg": 2}[phase], "batch": B, "cin": Cin, "cout": Cout,
            "h": H, "w": W, "kh": Kh, "kw": Kw, "stride2": int(stride == 2), "pad": padding,
            "raw": 0, "act_base": bases["x"], "grad_base": bases["dy"], "w_base": bases["w"],
            "m_base": bases["mask"] * dw, "out_base": bases["out"],
            "update": int(update is not None), "lr_shift": int(update or 0)}})
        if store:
            cmds.append({"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_OUT,
                                                        "base": bases["out"],
                                                        "length": size["out"],
                                                        "dir": DIR_STORE, "addr": addrs["out"]}})
        return cmds

    def card_layout(self, tensors: dict) -> dict:
        """Byte addresses in the card memory for ``tensors`` (name -> element count), each
        aligned to a 4 KiB page."""
        addrs, a = {}, 0
        nbytes = self.codec.cfg.data_width // 8
        for name, n in tensors.items():
            addrs[name] = a
            a += -(-(n * nbytes) // 4096) * 4096
        if a > self.CARD_BYTES:
            raise ValueError(f"the tensors need {a} bytes of card memory, the simulated card "
                             f"has {self.CARD_BYTES}")
        return addrs

    def _model_stats(self, phase, kw, stride, padding, *, raw=False, lazy=True):
        """Set :attr:`last_stats`, the array model's statistics of the phase (the reference
        cycles of the report): deferred (:class:`LazyArrayStats`) when ``lazy`` and
        :attr:`defer_model`, returning None; otherwise mapped now, returning the mapping (the
        host-fed path streams it). The mapping also refuses what cannot be mapped
        (``ValueError``)."""
        from sparseforge.gen.mapper import array as am
        cfg = self.codec.cfg
        if lazy and self.defer_model:
            self.last_stats = LazyArrayStats(phase, cfg, stride=stride, padding=padding,
                                             raw=raw, kw=kw)
            return None
        job = am.map_array(phase, cfg=cfg, stride=stride, padding=padding, raw=raw, **kw)
        #: the last phase's array-model statistics (am.cycles of its mapping)
        self.last_stats = am.cycles(job)
        return job

    async def _run_phase_dma(self, phase, kw, stride, padding, step, *, side=None,
                             side_steps=(), home=None, update=None, beside=None):
        """:meth:`run_phase` through the data plane: the operands are placed in the card
        memory, one ``dp`` packet loads them into the tensor buffers, runs the job on the
        hardware mapper and stores the result, which is read back from the card memory.
        ``side``: a pre-generation (:meth:`_pregen_side`) in the same packet; then returns
        ``(result, (fwd, bwd))``. ``home``: the layer whose weight and masks are resident
        (:meth:`load_network`). ``update`` (WG with ``home``): the fused SGD update's
        ``lr_shift``, ``kw["w"]`` the weight it updates; the result stays on chip and is read
        for checking (:meth:`debug_read`), like the updated weight, and the call returns
        ``(dW, W')`` (``((dW, W'), (fwd, bwd))`` with ``side``)."""
        cfg = self.codec.cfg
        if phase == "fp":
            x, w = np.asarray(kw["x"]), np.asarray(kw["w"])
            shapes = {"x": x.shape, "w": w.shape}
        elif phase == "bp":
            w = np.asarray(kw["w"])
            shapes = {"x": tuple(kw["x_shape"]), "w": w.shape}
        else:
            x = np.asarray(kw["x"])
            shapes = {"x": x.shape, "w": tuple(kw["w_shape"])}
        shapes["out"] = phase_out_shape(phase, kw, stride, padding)
        tensors = {"fp": {"x": kw.get("x"), "w": kw.get("w")},
                   "bp": {"dy": kw.get("dy"), "w": kw.get("w")},
                   "wg": {"x": kw.get("x"), "dy": kw.get("dy")}}[phase]
        if phase != "wg":
            m = kw.get("mask")
            tensors["mask"] = pack_mask(np.ones(shapes["w"], np.int64) if m is None
                                        else np.asarray(m), cfg.data_width)
        h = self.homes[home] if home is not None else None
        if update is not None:
            if phase != "wg" or h is None:
                raise ValueError("the fused SGD update needs a WG phase and a home")
            tensors["w"] = np.asarray(kw["w"])
        bases = {} if h is None else {"w": h["w"], "mask": h["mf"] if phase == "fp" else h["mb"]}
        if phase != "fp":
            bases["dy"] = int(self.dp_bases.get("dy", 0))
        if phase == "bp":
            bases["out"] = int(self.dp_bases.get("bp_out", 0))
        if h is not None and "x" in tensors:
            bases["x"] = self._act_home(home, int(np.asarray(tensors["x"]).size))
        sizes = {k: int(np.asarray(v).size) for k, v in tensors.items()}
        sizes["out"] = int(np.prod(shapes["out"]))
        self.check_fits(phase, sizes)
        addrs = self.card_layout({**sizes, **(side["sizes"] if side else {})})
        c0, d0 = self.card_words_in, self.card_words_out
        # operands still in their buffer from an earlier load (e.g. the pruned gradient for BP
        # and WG, fc weights between FP and BP) are neither written nor loaded again
        from sparseforge.hdl import dataplane as dpm
        bufs = {"x": dpm.BUF_ACT, "dy": dpm.BUF_GRAD, "w": dpm.BUF_WGT, "mask": dpm.BUF_MASK}
        had, self._resident = self._resident, {}
        skip = {name for name, t in tensors.items()
                if self._holds(had, bufs[name], bases.get(name, 0), t)}
        for name, t in tensors.items():
            if name not in skip:
                self.card_write(addrs[name], t)
        # with the update the results stay on chip: dW (and the side's masks) are read for
        # checking after the phase, outside its counters
        keep = update is not None or (self.keep_results and phase != "wg")
        cmds = self.phase_commands(phase, shapes, stride=stride, padding=padding, addrs=addrs,
                                   bases=bases, skip=skip, update=update, store=not keep)
        if side:                  # a pre-generation beside the (WG) job: one packet
            pre, post = side["cmds"](addrs, had)
            cmds = pre + cmds + ([] if side.get("home") else post)
        if beside:                # commands that run beside the job (a BWD stage): last
            if cmds[-1]["kind"] != dpm.CMD_JOB:
                raise ValueError("beside: the job's result must stay on chip (no store "
                                 "after it: the commands would wait for the job)")
            cmds = cmds + list(beside)
        names = ("cycles", "job_cycles", "dma_exposed", "dma_busy", "dma_beats") + \
            (("pregen_cycles", "pregen_exposed") if side else ()) + \
            (("stage_cycles", "stage_exposed", "prune_cycles", "prune_exposed")
             if beside else ())
        w0, o0 = self.words_in, self.words_out
        pk = list(side_steps) + ([] if step is None else [self.codec.step_packet(step)])
        # a job always counts JOB_CYCLES: none means the plane dropped the packet (the card
        # memory holds no result)
        d = await self._dp_exec(f"{phase} phase", pk, cmds, names, moved="job_cycles")
        status = d["status"]
        self._resident = dict(had)
        #: the counters of the commands that ran beside the last phase's job
        self.last_beside = {k: d[k] for k in ("stage_cycles", "stage_exposed", "prune_cycles",
                                              "prune_exposed")} if beside else {}
        for name, t in tensors.items():
            if not (keep and name == "w"):
                self._mark(bufs[name], bases.get(name, 0), t)
        if keep:
            out = (await self.debug_read(dpm.BUF_OUT, bases.get("out", 0), sizes["out"])
                   ).reshape(shapes["out"])
            if update is not None:
                w_new = await self.debug_read(dpm.BUF_WGT, h["w"], h["n"])
                self._mark(dpm.BUF_WGT, h["w"], w_new)
                out = (out, w_new.reshape(np.shape(kw["w"])))
        else:
            out = self.card_read(addrs["out"], sizes["out"]).reshape(shapes["out"])
        if side:
            side_out = await side["finish"](addrs)
            self.last_pregen_dp = {"cycles": d["pregen_exposed"],
                                   "busy_cycles": d["pregen_cycles"], "dma_cycles": 0,
                                   "groups": side["groups"], "beside": phase,
                                   "card_words_in": 0, "card_words_out": 0}
        self.last_phase = {"phase": phase, "cycles": d["job_cycles"], "resident": sorted(skip),
                           "update": update is not None,
                           "array_cycles": None if isinstance(self.last_stats, LazyArrayStats)
                           else self.last_stats.cycles,
                           "array_counter_cycles": d["cycles"],
                           "dma_cycles": d["dma_exposed"], "dma_busy_cycles": d["dma_busy"],
                           "dma_beats": d["dma_beats"],
                           "words_in": self.words_in - w0, "words_out": self.words_out - o0,
                           "card_words_in": self.card_words_in - c0,
                           "card_words_out": self.card_words_out - d0,
                           "status": status, "data_plane": "dma"}
        return out if side is None else (out, side_out)

    @staticmethod
    def _holds(resident: dict, buf: int, base: int, t) -> bool:
        """Whether ``resident`` says buffer ``buf`` holds exactly ``t`` at ``base``."""
        got = resident.get((buf, base))
        if got is None:
            return False
        t = np.asarray(t)
        return got.size == t.size and np.array_equal(got.ravel(), t.ravel())

    def _chunked_wg(self, phase, kw) -> bool:
        """A WG phase whose per-column scratchpad image (``(B, ceil(Cin / pe_cols), H, W)``)
        needs more than one chunk (:func:`sparseforge.gen.mapper.pe.wg_chunks`), which the
        hardware mapper does not do yet: such a phase takes the host-fed path."""
        from sparseforge.gen.mapper.pe import wg_chunks
        if phase != "wg":
            return False
        cfg = self.codec.cfg
        B, Cin, H, W = np.asarray(kw["x"]).shape
        return len(wg_chunks((B, -(-Cin // cfg.pe_cols), H, W), cfg.act_buf_depth)) > 1

    def check_fits(self, phase: str, sizes: dict):
        """``ValueError`` (:class:`~sparseforge.gen.network.NetworkError`, before anything is
        sent) when a tensor of the phase (``sizes``: ``x``/``dy``/``w``/``out`` -> elements)
        is larger than its on-chip buffer: :func:`sparseforge.gen.schedule.check_tensors`, the
        rule ``sparseforge schedule`` applies to a whole network (the packed mask fits when
        ``w`` does)."""
        from sparseforge.gen.schedule import check_tensors
        out = {"fp": "y", "bp": "dx", "wg": "dW"}[phase]
        check_tensors(self.codec.cfg, {(out if k == "out" else k): n for k, n in sizes.items()
                                       if k != "mask"}, f"run_phase({phase!r}):")

    # -- pruner and pre-generation (used by sim/e2e.py and tests/cocotb_accelerator.py) -------
    async def prune(self, g, tau: int, seed: int, *, step=None):
        """Stochastic pruning of the gradient tensor ``g`` (ints in the signed ``data_width``
        range) on the :class:`~sparseforge.hdl.pruner.StochasticPruner`: a CTRL packet
        loads ``tau`` and ``seed`` (``seed_load``, ``clear``), then one ``prune`` packet holds
        every element in C order (``last`` on the final one). Returns the pruned ints in
        ``g``'s shape -- :func:`sparseforge.sim.reference.golden.stochastic_prune_int` ``(g, tau, seed,
        data_width)[0]`` when the RTL is right. Costs one 32-bit word per element (for
        ``data_width <= 31``) plus the pruner's latency; the array is not used."""
        codec, dw = self.codec, self.codec.cfg.data_width
        g = np.asarray(g)
        flat = [int(v) for v in g.ravel()]
        if not flat:
            raise ValueError("g must not be empty")
        lay = codec.dests[codec.dest_id["prune"]].shape
        beats = [int(lay.const({"value": v, "last": int(k == len(flat) - 1)}).as_bits())
                 for k, v in enumerate(flat)]
        recv = self.spawn(self._collect(len(flat)))
        head = [] if step is None else [codec.step_packet(step)]
        await self.send(head + [codec.ctrl_packet(tau=int(tau), seed=int(seed), seed_load=1,
                                                  clear=1),
                                codec.packet("prune", beats)])
        parsed = await recv
        mask, sign = (1 << dw) - 1, 1 << (dw - 1)
        got = [((b & mask) ^ sign) - sign for name, b in parsed if name == "prune"]
        if len(got) != len(flat):
            raise RuntimeError(f"pruner returned {len(got)} of {len(flat)} elements")
        return np.array(got, np.int64).reshape(g.shape)

    async def prune_onchip(self, g, k_p: int, shift: int, seed: int, *, step=None,
                           keep: bool = False):
        """Stochastic pruning of ``g`` in the data plane (``CMD_PRUNE``, ``hdl/dp_prune.py``),
        the threshold computed **on chip** from ``g`` by the golden rule ``tau = min((sum|g| *
        k_p) >> shift, 2**(data_width-1) - 1)`` (``k_p``, ``shift``:
        :func:`sparseforge.gen.numfmt.prune_threshold_params` of the prune rate and
        ``g.size``, the constants of the schedule's PRUNE entry). ``g`` is placed in the card
        memory, loaded into the GRAD buffer, pruned there in place (a word per cycle in each of
        two passes) and stored back. Returns ``(pruned, tau)`` -- ``golden.stochastic_prune_int(
        g, tau, seed)[0]`` and ``golden.prune_threshold_int(g, k_p, shift)`` when the RTL is
        right (tau read from PRUNE_TAU). :attr:`last_prune` holds ``cycles`` (PRUNE_CYCLES),
        ``dma_cycles`` (DMA_EXPOSED), ``card_words_in/out``, ``elements`` and ``summed`` (``g``
        was loaded right before, so the data plane summed ``|g|`` on the way in and the prune
        ran one pass; a ``g`` GRAD still held runs both). Needs a core with
        a data plane; ``step``: the schedule opcode when a schedule runs. ``keep``: the pruned
        tensor stays in GRAD for the BP / WG phases that read it, without the store: it is
        read back for checking after the packet (:meth:`debug_read`, :attr:`debug_words`)."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE
        if self.ram is None:
            raise ValueError("prune_onchip needs a core with the data plane (data_plane='dma')")
        cfg = self.codec.cfg
        g = np.asarray(g)
        n = int(g.size)
        if n == 0:
            raise ValueError("g must not be empty")
        from sparseforge.gen.schedule import check_tensors
        check_tensors(cfg, {"dy": n}, "prune:")
        addr = self.card_layout({"g": n})["g"]
        c0, d0 = self.card_words_in, self.card_words_out
        had, self._resident = self._resident, {}
        cmds = []
        gb = int(self.dp_bases.get("dy", 0))          # the gradient's GRAD base
        if not self._holds(had, dpm.BUF_GRAD, gb, g):
            self.card_write(addr, g)
            cmds.append({"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_GRAD, "base": gb,
                                                        "length": n, "dir": DIR_LOAD,
                                                        "addr": addr}})
        cmds.append({"kind": dpm.CMD_PRUNE, "prune": {"base": gb, "n": n, "k_p": int(k_p),
                                                      "shift": int(shift), "seed": int(seed)}})
        if not keep:
            cmds.append({"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_GRAD, "base": gb,
                                                        "length": n, "dir": DIR_STORE,
                                                        "addr": addr}})
        pk = [] if step is None else [self.codec.step_packet(step)]
        d = await self._dp_exec("prune", pk, cmds, ("prune_cycles", "dma_exposed", "dma_beats"),
                                moved="prune_cycles")
        tau = await self.read("PRUNE_TAU")
        if keep:
            out = (await self.debug_read(dpm.BUF_GRAD, gb, n)).reshape(g.shape)
        else:
            out = self.card_read(addr, n).reshape(g.shape)
        # GRAD now holds the pruned tensor: the BP and WG phases that take it load nothing
        self._resident = dict(had)
        self._mark(dpm.BUF_GRAD, gb, out)
        # loaded right before CMD_PRUNE, or written by a backward / loss stage right before:
        # the data plane summed |g| on the way in (one pass)
        from sparseforge.hdl.dp_prune import prune_job_cycles
        epw = max(1, cfg.dma_width // cfg.data_width)
        self.last_prune = {"cycles": d["prune_cycles"], "dma_cycles": d["dma_exposed"],
                           "summed": d["prune_cycles"] == prune_job_cycles(
                               n, epw, cfg.data_width, summed=True),
                           "dma_beats": d["dma_beats"], "elements": n, "tau": tau,
                           "card_words_in": self.card_words_in - c0,
                           "card_words_out": self.card_words_out - d0}
        return out, tau

    def prune_command(self, base: int, n: int, k_p: int, shift: int, seed: int) -> dict:
        """The ``CMD_PRUNE`` of ``n`` GRAD elements from ``base`` in place (threshold rule
        ``k_p``, ``shift``; PRNG ``seed``), for a packet of another operation (beside a WG job
        after the backward stage that writes them: one pass, the stage summed ``|g|``)."""
        from sparseforge.hdl import dataplane as dpm
        return {"kind": dpm.CMD_PRUNE, "prune": {"base": int(base), "n": int(n),
                                                 "k_p": int(k_p), "shift": int(shift),
                                                 "seed": int(seed)}}

    async def prune_result(self, base: int, shape) -> tuple:
        """After a packet that pruned ``shape``'s elements of GRAD from ``base``
        (:meth:`prune_command`): ``(pruned, tau)`` -- read back for checking
        (:attr:`debug_words`), the threshold from PRUNE_TAU; GRAD is recorded as holding it
        (a BP / WG phase that reads it loads nothing)."""
        from sparseforge.hdl import dataplane as dpm
        n = int(np.prod(shape))
        tau = await self.read("PRUNE_TAU")
        out = (await self.debug_read(dpm.BUF_GRAD, int(base), n)).reshape(shape)
        self._mark(dpm.BUF_GRAD, int(base), out)
        return out, tau

    async def step_only(self, step: int):
        """A schedule step the data plane already ran (``STEP_DATA_PLANE``: the controller
        only advances), as its own packet; ``RuntimeError`` on STATUS.error."""
        await self._run_packets(f"schedule step {step}", self._dp_packets(
            [self.codec.step_packet(step, data_plane=True)], []))

    async def _run_packets(self, what: str, packets: list) -> int:
        """Clear STATUS, send ``packets`` (ending a job), wait for done; STATUS, or
        ``RuntimeError`` with the ERROR_CODE on an error."""
        await self.write("STATUS", STATUS_DONE | STATUS_ERROR)
        await self.send(packets)
        status = await self.wait_done()
        if status & STATUS_ERROR or not status & STATUS_DONE:
            raise RuntimeError(f"{what}: STATUS {status:#x}, ERROR_CODE "
                               f"{await self.read('ERROR_CODE'):#x}")
        return status

    async def stage_onchip(self, op: str, *, shape, src: int = 0, dst: int = 0, keep: int = 0,
                           pool: int = 1, relu: bool = True, zfc: bool = False,
                           nfc: bool = False, labels=None, aux: int = 0, step=None,
                           read: bool = True):
        """One between-layer stage in the data plane (``CMD_STAGE``, ``hdl/dp_stage.py``),
        from the result a phase left in ``BUF_OUT`` (:attr:`keep_results`) to the buffer the
        next phase reads, with no tensor crossing the bus:

        * ``op="fwd"``: ReLU (``relu``) and ``pool x pool`` max-pool with stride ``pool`` (1, 2
          or 4) of ``z`` (``shape`` = ``(B, C, H, W)``; ``zfc``: ``z`` is an FC layer's output
          in the FC view ``(1, C, 1, B)``, ``shape`` then ``(B, C, 1, 1)``) at OUT element
          ``src``; the result goes to ACT element ``dst`` in the next layer's input layout
          (``nfc``: the FC view of the flattened features), the pool winners and ReLU bits
          to KEEP entries ``keep ..``. Returns the next layer's input as the buffer holds it
          (``(B, C, Ho, Wo)``, or ``(1, C*Ho*Wo, 1, B)`` with ``nfc``).
        * ``op="bwd"``: pool and ReLU backward of the gradient at OUT ``src`` (the next
          layer's BP result, in its input layout) with the KEEP entries of the forward stage
          of the same ``shape`` / ``keep``; the gradient of ``z`` goes to GRAD ``dst`` in
          ``z``'s layout (the sum of its magnitudes taken on the way: a
          :meth:`prune_onchip` of it runs one pass). Returns it (``(B, C, H, W)``, or ``(1, C,
          1, B)`` with ``zfc``).
        * ``op="loss"``: ``sat(z - one * onehot(labels))`` of the logits ``z`` (``shape`` =
          ``(B, classes, 1, 1)``, the FC view) at OUT ``src``; ``labels`` (``B`` class
          indices) are placed in the card memory and loaded into ACT at ``aux`` (a whole
          word) in the same packet. Returns the loss gradient in the FC view ``(1, classes,
          1, B)``.

        The result is read back for checking (:meth:`debug_read`, :attr:`debug_words`) unless
        ``read=False`` (then None), and recorded as what the buffer holds (a phase taking it
        loads nothing). :attr:`last_stage` holds ``cycles`` (STAGE_CYCLES), ``dma_cycles``,
        ``card_words_in``, ``elements`` (``z``'s: ``B*C*H*W``). ``RuntimeError`` with the ERROR_CODE when the data plane refuses
        it (0x46: a label outside ``[0, classes)``)."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dma import DIR_LOAD
        if self.ram is None:
            raise ValueError("stage_onchip needs a core with the data plane (data_plane='dma')")
        if op != "loss":            # (checks the op and the pool before anything is sent)
            self.stage_command(op, shape=shape, pool=pool)
        B, C, H, W = (int(v) for v in shape)
        cfg = self.codec.cfg
        epw = max(1, cfg.dma_width // cfg.data_width)
        cmds, c0 = [], self.card_words_in
        if op == "loss":
            if labels is None or np.shape(labels) != (B,):
                raise ValueError(f"the loss stage needs labels of shape ({B},)")
            lab = np.zeros(-(-B // epw) * epw, np.int64)
            lab[:B] = np.asarray(labels, np.int64)
            # a label outside the data width would wrap: the hardware compares the raw bits
            lab[:B] = np.where((lab[:B] < 0) | (lab[:B] >= 1 << (cfg.data_width - 1)),
                               -1, lab[:B])
            addr = self.card_layout({"lab": lab.size})["lab"]
            self.card_write(addr, lab)
            cmds.append({"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_ACT, "base": int(aux),
                                                        "length": int(lab.size),
                                                        "dir": DIR_LOAD, "addr": addr}})
            relu, zfc, nfc = False, True, True
        cmd, (buf, n, oshape) = self.stage_command(op, shape=shape, src=src, dst=dst,
                                                   keep=keep, pool=1 if op == "loss" else pool,
                                                   relu=relu, zfc=zfc, nfc=nfc, aux=aux)
        cmds.append(cmd)
        had, self._resident = self._resident, {}
        pk = [] if step is None else [self.codec.step_packet(step)]
        try:
            d = await self._dp_exec(f"{op} stage", pk, cmds,
                                    ("stage_cycles", "dma_exposed", "dma_beats"),
                                    moved="stage_cycles")
        except RuntimeError:
            self._resident = {}
            raise
        self._resident = dict(had)
        if op == "loss":
            self._mark(dpm.BUF_ACT, int(aux), lab)
        self.last_stage = {"op": op, "cycles": d["stage_cycles"],
                           "dma_cycles": d["dma_exposed"], "dma_beats": d["dma_beats"],
                           "card_words_in": self.card_words_in - c0, "card_words_out": 0,
                           "elements": B * C * H * W}          # z's: the stage's walk
        return await self.stage_result(buf, dst, n, oshape, read=read)

    def stage_command(self, op: str, *, shape, src: int = 0, dst: int = 0, keep: int = 0,
                      pool: int = 1, relu: bool = True, zfc: bool = False, nfc: bool = False,
                      aux: int = 0) -> tuple:
        """The ``CMD_STAGE`` command of :meth:`stage_onchip` (its arguments; ``op="loss"``
        with ``relu=False, zfc=nfc=True, pool=1``) and where its result lands: ``(cmd, (buf,
        elements, shape))``. For a stage sent in another packet: the BWD stage beside a WG
        job (:meth:`run_wg_update`'s ``beside``), then :meth:`stage_result`."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dp_stage import STAGE_BWD, STAGE_FWD, STAGE_LOSS
        ops = {"fwd": STAGE_FWD, "bwd": STAGE_BWD, "loss": STAGE_LOSS}
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, not {op!r}")
        if pool not in (1, 2, 4):
            raise ValueError(f"pool must be 1, 2 or 4 (window = stride), not {pool!r}")
        B, C, H, W = (int(v) for v in shape)
        lgk = pool.bit_length() - 1
        # the same walk in the conv layouts, where the unit takes a word per cycle
        # (dp_stage.stage_lanes): FC -> FC is one row of B*C elements in memory order, a
        # batch-1 conv -> FC stage writes the features in C order like a conv -> conv one
        g = {"b": B, "c": C, "h": H, "w": W, "zfc": int(bool(zfc)), "nfc": int(bool(nfc))}
        if op != "loss" and zfc and nfc and lgk == 0 and B * C < 1 << 16:
            g = {"b": 1, "c": 1, "h": 1, "w": B * C, "zfc": 0, "nfc": 0}
        elif op != "loss" and not zfc and nfc and B == 1:
            g["nfc"] = 0
        cmd = {"kind": dpm.CMD_STAGE, "stage": {
            "op": ops[op], "relu": int(bool(relu)), "lgk": lgk, **g, "src": int(src),
            "dst": int(dst), "aux": int(aux), "keep": int(keep)}}
        Ho, Wo = H >> lgk, W >> lgk
        if op == "fwd":
            return cmd, (dpm.BUF_ACT, B * C * Ho * Wo,
                         (1, C * Ho * Wo, 1, B) if nfc else (B, C, Ho, Wo))
        return cmd, (dpm.BUF_GRAD, B * C * H * W, (1, C, 1, B) if zfc else (B, C, H, W))

    async def stage_result(self, buf: int, dst: int, n: int, oshape, *, read: bool = True):
        """After a stage ran: its result read back for checking (:meth:`debug_read`) and
        recorded as what ``buf`` holds, or (``read=False``) the range forgotten; returns the
        result (None without ``read``)."""
        if not read:
            # what it wrote is unknown to the host: forget what the range held
            self._forget(buf, int(dst), n)
            return None
        out = (await self.debug_read(buf, int(dst), n)).reshape(oshape)
        self._mark(buf, int(dst), out)
        return out

    def _forget_table(self):
        self._table, self._table_next = {}, 0

    def _dp_packets(self, head: list, cmds: list, *, replay: bool = True) -> list:
        """The packets that run ``head`` (packets) and ``cmds`` (data-plane commands) and end
        the job: ``head``, a ``dp`` packet and END; or, with :attr:`replay` (and ``replay``)
        where ``head`` holds only ``step`` packets, one ``dpcall`` of the entries in the
        command table -- written there first (``CALL_SETW`` + a ``dptab`` packet) when the
        table does not hold them yet, from the next free entry (from entry 0 again, the
        host's record of the table emptied, when they do not fit)."""
        from sparseforge.hdl.cmd_table import CALL_RUN, CALL_SETW
        codec = self.codec
        entries = codec.table_entries(head, cmds) if self.replay and replay and \
            codec.has_table else None
        depth = codec.cfg.cmd_table_depth
        if not entries or len(entries) > depth:
            return list(head) + [codec.dp_packet(cmds), codec.end_packet()]
        key = tuple(entries)
        out = []
        idx = self._table.get(key)
        if idx is None:
            if self._table_next + len(entries) > depth:
                self._forget_table()
            idx = self._table_next
            out += [codec.call_packet(CALL_SETW, idx), codec.packet("dptab", entries)]
            self._table[key] = idx
            self._table_next = idx + len(entries)
            self.table_writes += 1
        self.replay_calls += 1
        return out + [codec.call_packet(CALL_RUN, idx, len(entries), end=True)]

    async def _dp_exec(self, what: str, head: list, cmds: list, counters: tuple,
                       moved: str = "dma_beats", *, replay: bool = True) -> dict:
        """Send ``head`` packets, one ``dp`` packet of ``cmds`` and END (or their call of the
        command table: :meth:`_dp_packets`; ``replay=False``: not from the table); wait for done; return
        the increments of ``counters`` (which must include ``moved``). ``RuntimeError`` on
        STATUS.error, and when ``moved`` did not move (no beat, no busy cycle: the data plane
        discarded the commands: an earlier error left it in its error state). The result also
        holds ``status``, the STATUS read at done."""
        before = {k: await self.counter(k) for k in counters}
        status = await self._run_packets(what, self._dp_packets(head, cmds, replay=replay))
        d = {k: await self.counter(k) - v for k, v in before.items()}
        if d[moved] == 0:
            # done without a single beat or busy cycle: the plane took the commands and dropped
            # them (it is still in the error state of an earlier error)
            raise RuntimeError(f"{what}: the data plane discarded its commands (an earlier "
                               f"error left it in its error state, ERROR_CODE "
                               f"{await self.read('ERROR_CODE'):#x}); call Driver.recover() "
                               f"first")
        d["status"] = status
        return d

    def pregen_onchip_refusal(self, w_shape, n: int) -> str | None:
        """Why :meth:`pregen_onchip` cannot pre-generate a weight of ``w_shape`` with ``n``
        (None when it can): the data plane's ``CMD_PREGEN`` rules (``docs/dataplane.md``)."""
        cfg = self.codec.cfg
        if self.ram is None:
            return "the core has no data plane (data_plane='dma')"
        shape = tuple(w_shape) + (1, 1) if len(w_shape) == 2 else tuple(w_shape)
        cout, cin, kh, kw = shape
        m = cfg.nm_m
        if cin % m or cout % m:
            return f"Cin and Cout must be multiples of nm_m={m}, not {shape}"
        if not (1 <= kh <= cfg.k_max and 1 <= kw <= cfg.k_max):
            return f"Kh, Kw must be in [1, k_max={cfg.k_max}], not {shape}"
        if cin * kh * kw < cfg.dma_width:
            return (f"Cin*Kh*Kw = {cin * kh * kw} is below dma_width={cfg.dma_width} (a "
                    f"backward mask row must fill a word)")
        if not 0 <= n <= cfg.nm_n_max:
            return f"n must be in [0, nm_n_max={cfg.nm_n_max}], not {n}"
        words = -(-cout * cin * kh * kw // cfg.dma_width)
        from sparseforge.hdl.dataplane import BUF_MASK, buf_sizes
        epw = cfg.dma_width // cfg.data_width
        if cout * cin * kh * kw > cfg.wgt_mem_elems or 2 * words * epw > buf_sizes(cfg)[BUF_MASK]:
            return f"the weight {shape} or its two masks do not fit the WGT / MASK buffers"
        return None

    async def pregen_onchip(self, w, n: int, *, step=None, home=None):
        """N:M pre-generation of the dense integer weight ``w`` (``(Cout, Cin)`` or ``(Cout, Cin,
        Kh, Kw)``) in the data plane (``CMD_PREGEN``, ``hdl/dp_pregen.py``): ``w`` is placed in
        the card memory and loaded into the WGT buffer (unless it is still there), the data
        plane writes both packed masks into the MASK buffer (the forward one at element 0, the
        backward one from the next ``dma_width`` word after it) and one store brings them to
        the card memory. Returns ``(fwd, bwd)`` (bool, ``w``'s shape) --
        ``golden.bdwp_masks(w, n, nm_m)`` when the RTL is right. ``step``: the schedule's
        PREGEN opcode when a schedule runs (one step beat per PREGEN entry of the layer, with
        ``STEP_DATA_PLANE``: the stream pre-generation does not run). :attr:`last_pregen_dp`
        holds ``cycles`` (PREGEN_CYCLES), ``dma_cycles``, ``card_words_in/out``, ``groups``.
        ``ValueError`` (before anything is sent) when :meth:`pregen_onchip_refusal` names a
        reason. ``home``: the layer of :meth:`load_network` whose weight it reads and whose
        mask homes it writes (the masks stay there; read back for checking)."""
        cfg = self.codec.cfg
        w = np.asarray(w)
        why = self.pregen_onchip_refusal(w.shape, n)
        if why:
            raise ValueError(f"pregen_onchip: {why}")
        side = self._pregen_side(w, n, home)
        addrs = self.card_layout(side["sizes"])
        c0, d0 = self.card_words_in, self.card_words_out
        had, self._resident = self._resident, {}
        pre, post = side["cmds"](addrs, had)
        pk = self._pregen_steps(side, step)
        d = await self._dp_exec("pregen", pk, pre + ([] if home is not None else post),
                                ("pregen_cycles", "pregen_exposed", "dma_exposed", "dma_beats"),
                                moved="pregen_cycles")
        self._resident = dict(had)
        fwd, bwd = await side["finish"](addrs)
        self.last_pregen_dp = {"cycles": d["pregen_exposed"], "busy_cycles": d["pregen_cycles"],
                               "dma_cycles": d["dma_exposed"], "dma_beats": d["dma_beats"],
                               "groups": side["groups"], "beside": None,
                               "card_words_in": self.card_words_in - c0,
                               "card_words_out": self.card_words_out - d0}
        return fwd, bwd

    def _pregen_steps(self, side, step) -> list:
        """The schedule's ``step`` packets of a pre-generation the data plane runs (one per
        PREGEN entry, i.e. per weight-buffer chunk of its groups, with STEP_DATA_PLANE)."""
        if step is None:
            return []
        chunks = -(-side["groups"] // self.codec.cfg.weight_buf_depth)
        return [self.codec.step_packet(step, data_plane=True) for _ in range(chunks)]

    def _pregen_side(self, w, n, home=None) -> dict:
        """An on-chip pre-generation of ``w`` (checked by the caller) as parts to run alone or
        beside a WG job: ``sizes`` (its card-memory tensors), ``cmds(addrs, had)`` -> ``(pre,
        post)`` (the weight's load -- skipped when ``had`` says WGT holds it -- and
        ``CMD_PREGEN``; the store of both masks), ``finish(addrs)`` -> ``(fwd, bwd)`` (async:
        reads the masks back and records what WGT and MASK now hold), ``groups``, ``home``.
        ``home``: the layer's home (:meth:`load_network`): the weight is read there and the
        masks are written to the layer's mask homes, where they stay; they are read back for
        checking (:meth:`debug_read`) instead of being stored in the packet (``post`` unused)."""
        from sparseforge.hdl import dataplane as dpm
        from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE
        cfg = self.codec.cfg
        w4 = w.reshape(w.shape + (1, 1)) if w.ndim == 2 else w
        cout, cin, kh, kw = w4.shape
        numel, wbits, dw = int(w.size), cfg.dma_width, cfg.data_width
        words = -(-numel // wbits)
        n_mask = 2 * words * (cfg.dma_width // dw)
        h = self.homes[home] if home is not None else {"w": 0, "mf": 0}

        def cmds(addrs, had):
            pre = []
            if not self._holds(had, dpm.BUF_WGT, h["w"], w4):
                self.card_write(addrs["pg_w"], w4)
                pre.append({"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_WGT, "base": h["w"],
                                                           "length": numel, "dir": DIR_LOAD,
                                                           "addr": addrs["pg_w"]}})
            pre.append({"kind": dpm.CMD_PREGEN, "pregen": {
                "w_base": h["w"], "m_base": h["mf"] * dw, "cout": cout, "cin": cin, "kh": kh,
                "kw": kw, "n": int(n)}})
            post = [{"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_MASK, "base": h["mf"],
                                                    "length": n_mask, "dir": DIR_STORE,
                                                    "addr": addrs["pg_masks"]}}]
            return pre, post

        async def finish(addrs):
            if home is not None:
                el = await self.debug_read(dpm.BUF_MASK, h["mf"], n_mask)
            else:
                el = self.card_read(addrs["pg_masks"], n_mask)
            bits = ((el.astype(np.int64)[:, None] >> np.arange(dw)) & 1).astype(bool).ravel()
            fwd = bits[:numel].reshape(w.shape)
            bwd = bits[words * wbits:words * wbits + numel].reshape(w.shape)
            self._mark(dpm.BUF_WGT, h["w"], w4)
            self._mark(dpm.BUF_MASK, h["mf"], pack_mask(fwd.reshape(w4.shape), dw))
            if home is not None:
                self._mark(dpm.BUF_MASK, h["mb"], pack_mask(bwd.reshape(w4.shape), dw))
            return fwd, bwd

        return {"sizes": {"pg_w": numel, "pg_masks": n_mask}, "cmds": cmds, "finish": finish,
                "groups": 2 * numel // cfg.nm_m, "home": home}

    async def run_wg_with_pregen(self, *, x, dy, w_shape, stride: int = 1, padding: int = 0,
                                 pregen_w, n: int, step=None, pregen_step=None, home=None,
                                 update=None, w=None, pregen_home=None, beside=None):
        """A WG phase (as :meth:`run_phase` ``("wg", ...)``) with an on-chip pre-generation of
        ``pregen_w`` (``n``:M, as :meth:`pregen_onchip`) **beside it** in one ``dp`` packet:
        the weight's load and ``CMD_PREGEN``, the WG phase's commands (a WG job reads neither
        WGT nor MASK, so it runs while the masks are generated), the masks' store. ``step`` /
        ``pregen_step``: schedule opcodes (the PREGEN steps go first, flagged). Returns ``(dW,
        (fwd, bwd))``; :attr:`last_phase` is the WG phase's (its ``dma_cycles``: every transfer
        of the packet, the pre-generation's too), :attr:`last_pregen_dp` the pre-generation's
        (``cycles``: PREGEN_EXPOSED, the time it ran under neither the job nor a transfer;
        ``dma_cycles`` 0). Needs a data-plane core and a phase that is not chunked; raises
        ``ValueError`` otherwise and when :meth:`pregen_onchip_refusal` refuses.
        ``home``, ``update`` (``lr_shift``), ``w``: the WG phase's fused SGD update of its
        resident weight ``w`` (as :meth:`run_wg_update`; then the result is ``((dW, W'),
        (fwd, bwd))``); ``pregen_home``: the pre-generated layer's home (as
        :meth:`pregen_onchip`)."""
        pregen_w = np.asarray(pregen_w)
        why = self.pregen_onchip_refusal(pregen_w.shape, n)
        if why:
            raise ValueError(f"run_wg_with_pregen: {why}")
        kw = {"x": x, "dy": dy, "w_shape": w_shape}
        if self._chunked_wg("wg", kw):
            raise ValueError("run_wg_with_pregen: a chunked WG phase runs host-fed")
        self._model_stats("wg", kw, stride, padding)
        side = self._pregen_side(pregen_w, n, pregen_home)
        if update is not None:
            kw["w"] = w
        return await self._run_phase_dma("wg", kw, stride, padding, step, side=side,
                                         side_steps=self._pregen_steps(side, pregen_step),
                                         home=home, update=update, beside=beside)

    async def run_wg_update(self, *, x, dy, w, lr_shift: int, home: str, stride: int = 1,
                            padding: int = 0, step=None, beside=None):
        """A WG phase with the SGD update fused (``hdl/dataplane.py``): ``dW`` of ``x``, ``dy``
        (as :meth:`run_phase` ``("wg", ...)``), and the weight ``w`` resident at ``home``
        (:meth:`load_network`; loaded there first if it differs) becomes ``sat(w - (dW >>
        lr_shift))`` in the WGT buffer, where it stays. Both stay on chip; they are read back
        for checking (:meth:`debug_read`, :attr:`debug_words`). Returns ``(dW, W')``.
        ``beside``: data-plane commands sent after the job in the same packet, to run beside
        it (a BWD stage, :meth:`stage_command`; the data plane makes a stage wait while its
        ranges touch the job's); their counters in :attr:`last_beside` (``stage_cycles``,
        ``stage_exposed``); read their results with :meth:`stage_result`.
        ``ValueError`` for a chunked WG phase (it runs host-fed) or an unknown home."""
        if home not in self.homes:
            raise ValueError(f"run_wg_update: no home {home!r} (Driver.load_network)")
        if not isinstance(lr_shift, int) or not 0 <= lr_shift < 64:
            raise ValueError(f"lr_shift must be an integer in [0, 63], not {lr_shift!r}")
        kw = {"x": x, "dy": dy, "w_shape": np.shape(w)}
        if self._chunked_wg("wg", kw):
            raise ValueError("run_wg_update: a chunked WG phase runs host-fed")
        self._model_stats("wg", kw, stride, padding)
        kw["w"] = np.asarray(w)
        return await self._run_phase_dma("wg", kw, stride, padding, step, home=home,
                                         update=lr_shift, beside=beside)

    async def pregen(self, w, n: int):
        """N:M pre-generation of the dense integer weight ``w`` (``(Cout, Cin)`` or ``(Cout,
        Cin, Kh, Kw)``, Cin and Cout multiples of ``nm_m``) on the
        :class:`~sparseforge.hdl.weight_pregen.WeightPregen`: a CTRL packet sets ``nm_n = n``,
        then one ``pregen`` packet holds every group in
        :func:`~sparseforge.hdl.weight_pregen.pregen_schedule` order (fwd pass, then bwd
        pass). The output beats are checked against the schedule's tags and reassembled
        (:func:`~sparseforge.hdl.weight_pregen.pregen_reassemble`). Returns ``(fwd mask, bwd
        mask)`` (bool, ``w``'s shape) -- :func:`sparseforge.sim.reference.golden.bdwp_masks` ``(w, n,
        m)`` when the RTL is right; the full result (compressed values and indices too) is
        kept in :attr:`last_pregen`."""
        cfg = self.codec.cfg
        w = np.asarray(w)
        beats = pregen_beats(w, cfg.nm_m, cfg.data_width)
        recv = self.spawn(self._collect(len(beats)))
        await self.send([self.codec.ctrl_packet(nm_n=int(n)), self.codec.packet("pregen", beats)])
        res = self.pregen_result([b for name, b in await recv if name == "pregen"], w, n)
        self.last_pregen = res
        return res.fwd_mask, res.bwd_mask

    async def pregen_scheduled(self, w, n: int, *, step):
        """Pre-generation as the schedule runs it: ``w``'s groups in chunks of at most
        ``weight_buf_depth`` (the PREGEN entries of :func:`sparseforge.gen.schedule.
        build_schedule`); per chunk a ``wbuf`` packet, a ``step`` packet (the controller starts
        the on-chip run with the entry's N and group count) and END. Returns ``(fwd, bwd)``
        like :meth:`pregen`; ``n`` is only used to reassemble (the hardware takes N from the
        schedule)."""
        cfg, codec = self.codec.cfg, self.codec
        w = np.asarray(w)
        beats = pregen_beats(w, cfg.nm_m, cfg.data_width)
        out = []
        for g0 in range(0, len(beats), cfg.weight_buf_depth):
            chunk = beats[g0:g0 + cfg.weight_buf_depth]
            recv = self.spawn(self._collect(len(chunk)))
            await self.send([codec.packet("wbuf", chunk), codec.step_packet(step),
                             codec.end_packet()])
            out += [b for name, b in await recv if name == "pregen"]
            st = await self.wait_done()
            if st & STATUS_ERROR:
                raise RuntimeError(f"pre-generation chunk at group {g0}: STATUS {st:#x}, "
                                   f"ERROR_CODE {await self.read('ERROR_CODE'):#x}")
            await self.write("STATUS", STATUS_DONE | STATUS_ERROR)
        res = self.pregen_result(out, w, n)
        self.last_pregen = res
        return res.fwd_mask, res.bwd_mask

    async def start_pregen_run(self, w, n: int):
        """Load ``w``'s groups (:func:`~sparseforge.hdl.weight_pregen.pregen_schedule` order)
        into the on-chip weight buffer and start an on-chip pre-generation run (PGCTL). The
        run feeds one group per cycle without the input stream, so the packets sent next (a
        WG job) overlap it; its output beats arrive on ``m_axis`` among the others
        (:attr:`side` when collected by :meth:`run_array_job`). Returns the number of groups."""
        cfg = self.codec.cfg
        beats = pregen_beats(np.asarray(w), cfg.nm_m, cfg.data_width)
        if len(beats) > cfg.weight_buf_depth:
            raise ValueError(f"{len(beats)} groups do not fit weight_buf_depth="
                             f"{cfg.weight_buf_depth}")
        pg = self.codec.pgctl_layout
        await self.send([self.codec.packet("wbuf", beats),
                         self.codec.packet("pgctl", [int(pg.const(
                             {"n": int(n), "count": len(beats), "go": 1}).as_bits())])])
        return len(beats)

    def pregen_result(self, beats, w, n: int):
        """Reassemble pre-generation output beats (ints, :func:`~sparseforge.hdl.weight_pregen.
        pregen_schedule` order) of :meth:`pregen`, :meth:`pregen_scheduled` or
        :meth:`start_pregen_run`."""
        cfg = self.codec.cfg
        out = [unpack_pregen_out(b, m=cfg.nm_m, n_max=cfg.nm_n_max, width=cfg.data_width)
               for b in beats]
        return pregen_reassemble(out, np.asarray(w).shape, cfg.nm_m, n)
