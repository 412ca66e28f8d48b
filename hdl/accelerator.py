"""Top level: AXI4-Lite control/status, an AXI4-Stream packet router into the PE array, the
stochastic pruner and the N:M weight pre-generation, and an AXI4-Stream merger of their
outputs.

The host (``sparseforge.sim.host.driver.Driver``) runs a layer phase by streaming *packets*
(:class:`~sparseforge.hdl.router.PacketRouter`): a header word ``dest[31:24] | beats[23:0]``
followed by ``beats`` target beats, each sent as ``ceil(width / 32)`` little-endian 32-bit
words (bit 0 of the beat in bit 0 of the first word). Destinations
(:func:`sparseforge.hdl.wire.destinations` gives the table the driver uses):

* ``DEST_CTRL`` (0): one beat of :func:`~sparseforge.hdl.wire.ctrl_layout` -- the job's
  control inputs (array mode, stride, padding, row lengths, skip_zero, raw; pruner
  tau/k_p/shift, seed + seed_load, clear; N of the pre-generation; ``pe_sel`` of the counter
  registers);
* ``DEST_END`` (1): 0 beats; marks the end of a job: STATUS.done rises (and the IRQ, when
  enabled) once the array is idle and every output word has left;
* then ``x_r{i}``, ``taps_r{i}_c{j}``, ``dense_r{i}_c{j}``, ``drain_c{j}`` (the
  :class:`~sparseforge.hdl.pe_array.PEArray`'s ``x[i]``, ``taps[i][j]``, ``dense[i][j]``,
  ``drain[j]``), ``prune`` (the pruner's gradient stream), ``pregen`` (the weight
  pre-generation's group stream), ``wbuf`` and ``pgctl`` (the weight buffer and its on-chip
  run, :class:`~sparseforge.hdl.pregen_seq.PregenSequencer`), ``sched`` and ``step`` (the
  :class:`~sparseforge.hdl.controller.ScheduleController`); with the data plane ``dp`` (its
  commands) and, with a command table (``cmd_table_depth``,
  :class:`~sparseforge.hdl.cmd_table.CmdTable`), ``dpcall`` and ``dptab``: ``dp`` and ``step``
  beats pass through the table, a ``dpcall`` replays stored ones (docs/cmd_table.md).

Outputs leave on ``m_axis`` as packets too (:class:`~sparseforge.hdl.merger.OutputMerger`): a
header ``src[31:24] | words[23:0]``, then the beat (``o_c{j}``: a column output ``{value,
last, end}``; ``prune``: a pruned gradient; ``pregen``: a selected group), ``tlast`` on its
last word. Sources are served in a fixed priority (lowest id first); every source is finite,
so none starves for ever.

Errors (*ours*): the stream's framing is strict (``tlast`` exactly on each packet's last word:
the header of a zero-word packet such as END; rules and reference checker in
:mod:`sparseforge.hdl.wire`). A header naming an unknown destination, ``tlast`` before a
packet's last word, or none on it raise STATUS.error with ERROR_CODE ``ERR_BAD_DEST`` (1),
``ERR_EARLY_TLAST`` (2) or ``ERR_MISSING_TLAST`` (3); after an unknown destination (without
``tlast``) or a missing ``tlast`` the router discards words up to and including the next
``tlast`` (never parsing them as a header: an END among them is not taken), and it returns to
waiting for a header: a malformed stream never hangs the core. CTRL.soft_reset resets the whole
datapath (array, pruner, pre-generation, router, merger).

AXI4-Lite: :class:`~sparseforge.hdl.axil.AxiLiteRegs` (``docs/register-map.md``); counters:
CYCLES is the array's job time, BUSY_MAC / STALL_IN / STALL_OUT / NNZ those of PE
``pe_sel`` (CTRL packet).

Ports: ``s_axil_*`` (AXI4-Lite slave), ``s_axis_tdata/tvalid/tready/tlast`` (packets in),
``m_axis_tdata/tvalid/tready/tlast`` (packets out), ``irq``.

Throughput: the router moves one 32-bit word per cycle; a target beat of ``w`` bits costs
``ceil(w / 32) + 1`` cycles plus one header per packet; array, pruner and pre-generation beats
then pass an output register per destination (one cycle of latency, no rate). An output beat
costs its words + 2 cycles. This is the host-fed form of the controller (*ours*, see
docs/accelerator.md): the driver does the offline schedule's mapping and sends each tile's
streams in a deadlock-free order (rows of a tile before its drains, a row before its bundles).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.axil import AxiLiteRegs, config_words
from sparseforge.hdl.cmd_table import CmdTable
from sparseforge.hdl.controller import ScheduleController
from sparseforge.hdl.dataplane import DataPlane
from sparseforge.hdl.merger import OutputMerger
from sparseforge.hdl.pe_array import PEArray
from sparseforge.hdl.pregen_seq import PregenSequencer
from sparseforge.hdl.pruner import StochasticPruner
from sparseforge.hdl.router import PacketRouter
from sparseforge.hdl.weight_pregen import WeightPregen
from sparseforge.hdl.wire import PHASE_CONTROLS, ctrl_layout, sources

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    __doc__ = __doc__

    def __init__(self, cfg, *, config_tag: int, config_hash: int, version=(0, 1, 0),
                 sched_depth: int = 4096):
        # The schedule header's configuration tag and hash arrive as parameters (computed by
        # sparseforge.gen.schedule); the hardware layer imports nothing above it.
        self._cfg = cfg
        self._version = version
        self.array = PEArray.from_config(cfg)
        self.ctl = ScheduleController(depth=sched_depth, config_tag=config_tag,
                                      config_hash=config_hash)
        self.pruner = StochasticPruner(data_width=cfg.data_width)
        self.pregen = WeightPregen(m=cfg.nm_m, n_max=cfg.nm_n_max, width=cfg.data_width)
        self.regs = AxiLiteRegs(addr_width=12, version=version, config=config_words(cfg))
        self.router = PacketRouter(cfg)
        self.seq = PregenSequencer(self.pregen.i.payload.shape(), depth=cfg.weight_buf_depth)
        self.merger = OutputMerger(cfg)
        # the on-chip data plane (cfg.data_plane == "dma"): DMA + tensor buffers + hardware
        # mapper + result store, fed by `dp` command packets
        self.dp = DataPlane.from_config(cfg) if cfg.data_plane == "dma" else None
        # the command table (hdl/cmd_table.py): `dpcall` beats replay stored `dp` commands
        # and `step` beats
        self.tab = CmdTable.from_config(cfg) \
            if self.dp is not None and cfg.cmd_table_depth else None
        members = {n: (In if f.flow == wiring.In else Out)(f.shape)
                   for n, f in self.regs.signature.members.items() if n.startswith("s_axil_")}
        members.update({
            "s_axis_tdata": In(32), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(32), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "irq": Out(1),
        })
        if self.dp is not None:              # the DMA engine's AXI4 master, named as its own
            members.update({n: f for n, f in self.dp.signature.members.items()
                            if n.startswith("m_axi_")})
        super().__init__(members)

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        regs, array, pruner, pregen, sc = (self.regs, self.array, self.pruner, self.pregen,
                                           self.ctl)
        router, seq, merger = self.router, self.seq, self.merger
        soft = Signal()
        m.submodules.regs = regs
        # CTRL.soft_reset resets the datapath; the merger only drops the packet it sends
        # (merger.clear), its input slices keep their beats
        for name, sub in (("ctl", sc), ("array", array), ("pruner", pruner),
                          ("pregen", pregen), ("router", router), ("seq", seq)):
            m.submodules[name] = ResetInserter(soft)(sub)
        m.submodules.merger = merger
        m.d.comb += [soft.eq(regs.soft_reset), merger.clear.eq(soft)]
        for n, f in self.signature.members.items():  # the AXI4-Lite ports, as the register file's
            if n.startswith("s_axil_"):
                if f.flow == wiring.In:
                    m.d.comb += getattr(regs, n).eq(getattr(self, n))
                else:
                    m.d.comb += getattr(self, n).eq(getattr(regs, n))
        m.d.comb += self.irq.eq(regs.irq)

        # ------------------------------------------------------------------ AXI4-Stream ports
        m.d.comb += [router.i.payload.data.eq(self.s_axis_tdata),
                     router.i.payload.last.eq(self.s_axis_tlast),
                     router.i.valid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(router.i.ready),
                     self.m_axis_tdata.eq(merger.o.payload.data),
                     self.m_axis_tlast.eq(merger.o.payload.last),
                     self.m_axis_tvalid.eq(merger.o.valid), merger.o.ready.eq(self.m_axis_tready)]

        # ------------------------------------------------------------------ router -> targets
        dp = self.dp
        dp_sel = Signal()          # the PE array belongs to the data plane's job
        if dp is None:
            _connect(m, router.x, array.x)
            _connect(m, router.taps, array.taps)
            _connect(m, router.dense, array.dense)
            _connect(m, router.drain, array.drain)
            _connect(m, array.o, merger.col)
        else:
            # Not under the soft reset's ResetInserter: the DMA master must finish its burst
            # (AXI forbids dropping a valid); the soft reset aborts it instead, held until the
            # data plane is idle again (the pulse alone could fall between two checks).
            m.submodules.dp = dp
            aborting = Signal()
            with m.If(soft):
                m.d.sync += aborting.eq(1)
            with m.Elif(~dp.busy):
                m.d.sync += aborting.eq(0)
            m.d.comb += [dp.abort.eq(soft | aborting), dp_sel.eq(dp.job_active)]
            if self.tab is None:
                wiring.connect(m, router.dp, dp.cmd)
            for n in self.signature.members:
                if n.startswith("m_axi_"):
                    if self.signature.members[n].flow == wiring.In:
                        m.d.comb += getattr(dp, n).eq(getattr(self, n))
                    else:
                        m.d.comb += getattr(self, n).eq(getattr(dp, n))
            for kind in ("x", "taps", "dense", "drain"):
                _select(m, dp_sel, getattr(dp, kind), getattr(router, kind), getattr(array, kind))
            # the column outputs go to the result store during a data-plane job, else out
            for j in range(cfg.pe_cols):
                src, a, b = array.o[j], dp.o[j], merger.col[j]
                m.d.comb += [a.payload.eq(src.payload), b.payload.eq(src.payload),
                             a.valid.eq(src.valid & dp_sel), b.valid.eq(src.valid & ~dp_sel),
                             src.ready.eq(Mux(dp_sel, a.ready, b.ready))]
        wiring.connect(m, router.prune, pruner.i)
        wiring.connect(m, router.pregen, seq.host)
        wiring.connect(m, router.wbuf, seq.wbuf)
        wiring.connect(m, router.sched, sc.load)
        tab = self.tab
        if tab is None:
            wiring.connect(m, router.step, sc.step)
        else:
            # streamed `dp` / `step` beats pass through the table; a call replays stored ones
            m.submodules.tab = ResetInserter(soft)(tab)
            wiring.connect(m, router.dp, tab.cmd_in)
            wiring.connect(m, router.step, tab.step_in)
            wiring.connect(m, router.dpcall, tab.call)
            wiring.connect(m, router.dptab, tab.tab)
            wiring.connect(m, tab.cmd_out, dp.cmd)
            wiring.connect(m, tab.step_out, sc.step)
        wiring.connect(m, seq.o, pregen.i)
        m.d.comb += [seq.wbuf_begin.eq(router.wbuf_begin), sc.load_begin.eq(router.sched_begin),
                     sc.load_len.eq(router.sched_len),
                     # a host-sent group waits while an on-chip run drives the pre-generation
                     router.pregen_hold.eq(seq.active)]

        # ------------------------------------------------------------------ outputs -> merger
        wiring.connect(m, pruner.o, merger.prune)
        wiring.connect(m, pregen.o, merger.pregen)

        # ------------------------------------------------------------------ control registers
        ctl = Signal(ctrl_layout(cfg))
        new_ctl = router.ctrl.payload
        m.d.comb += router.ctrl.ready.eq(1)             # a CTRL beat is taken at once
        m.d.sync += [pruner.seed_load.eq(0), pruner.clear.eq(0)]
        with m.If(router.ctrl.valid):
            m.d.sync += [ctl.eq(new_ctl), pruner.seed_load.eq(new_ctl.seed_load),
                         pruner.clear.eq(new_ctl.clear)]
        # While a schedule runs, the phase controls come from it (the CTRL packet's copies of
        # them are ignored); raw, pe_sel, tau and the seed stay with the host.
        # The choice is registered (for Fmax: the PEs' mode-dependent logic starts at a
        # register); a control changes >= 2 cycles before the first beat that uses it.
        # A data-plane job's controls come from its mapper (valid >= 3 cycles before its
        # first beat, so this register still sets them >= 2 cycles early).
        for name in PHASE_CONTROLS:                     # named alike in ctl, sc and array
            host = Mux(sc.running, getattr(sc, name), getattr(ctl, name))
            m.d.sync += getattr(array, name).eq(
                host if dp is None else Mux(dp_sel, getattr(dp, name), host))
        m.d.comb += [array.raw.eq(ctl.raw if dp is None else Mux(dp_sel, dp.raw, ctl.raw)),
                     array.pe_sel.eq(ctl.pe_sel)]
        m.d.comb += [pruner.tau.eq(ctl.tau), pruner.seed.eq(ctl.seed)]
        m.d.sync += [pruner.k_p.eq(Mux(sc.running, sc.k_p, ctl.k_p)),
                     pruner.shift.eq(Mux(sc.running, sc.shift, ctl.shift))]

        # N of the pre-generation: set by CTRL.nm_n, or when a run starts (a PGCTL beat, or a
        # schedule PREGEN step; the controller waits while a run is busy, so the two never
        # collide); a CTRL beat arriving during an on-chip run (the WG job it overlaps) leaves
        # it alone. Kept out of the sequencer: a soft reset leaves N as it is.
        pg_n = Signal(8)
        m.d.comb += pregen.n.eq(pg_n)
        pg = router.pgctl.payload
        # PGCTL: after a host-sent group still in the router's output register (an on-chip
        # run, which drives pregen.i itself, must not start before it has gone)
        m.d.comb += router.pgctl.ready.eq(~router.pregen.valid)
        start_n = Signal(8)
        with m.If(sc.pg_go):
            m.d.comb += [seq.start.eq(1), seq.count.eq(sc.pg_count), start_n.eq(sc.nm_n)]
        with m.Elif(router.pgctl.valid & router.pgctl.ready & pg.go):
            m.d.comb += [seq.start.eq(1), seq.count.eq(pg.count), start_n.eq(pg.n)]
        with m.If(router.ctrl.valid & ~seq.active):
            m.d.sync += pg_n.eq(new_ctl.nm_n)
        with m.If(seq.start & ~seq.active):
            m.d.sync += pg_n.eq(start_n)

        # ------------------------------------------------------------------ status
        # output slices holding a beat, the pre-generation's apart: it does not hold up the
        # controller's next step
        held_data = Cat(merger.held[s.id] for s in sources(cfg) if s.kind != "pregen").any()
        end_seen = Signal()
        dp_busy = Const(0) if dp is None else dp.busy
        # a replay in progress (not in the controller's dp_idle below: a replayed step beat
        # waits for it, and the router holds the call beat until the replay ends anyway)
        tab_busy = Const(0) if self.tab is None else self.tab.busy
        idle = ~array.active & ~router.busy & ~router.held & ~merger.busy & ~pruner.o.valid & \
            ~pregen.o.valid & ~seq.active & ~merger.held.any() & ~dp_busy & ~tab_busy
        done = Signal()
        m.d.comb += done.eq(end_seen & idle)
        # the controller takes a step only once the previous phase has left the data path (an
        # overlapped pre-generation run may go on)
        m.d.comb += [
            sc.start.eq(regs.start),
            sc.dp_idle.eq(~array.active & ~router.held & ~merger.busy & ~pruner.o.valid &
                          ~held_data & ~dp_busy),
            sc.pg_busy.eq(seq.active | router.pregen.valid),
        ]
        tab_end = Const(0) if tab is None else tab.done
        with m.If(router.end | tab_end):
            m.d.sync += end_seen.eq(1)
        with m.If(done):
            m.d.sync += end_seen.eq(0)
        with m.If(soft):
            m.d.sync += end_seen.eq(0)
        # error reports registered once on their way to the register file (for Fmax: the router's
        # packet checks -> ERROR_CODE was the ECP5 critical path); STATUS.error rises a cycle later
        err_q = Signal()
        code_q = Signal(8)
        dp_err = Const(0) if dp is None else dp.err
        dp_code = Const(0, 8) if dp is None else dp.err_code
        if tab is not None:          # both at once: the table's code (STATUS.error either way)
            dp_err, dp_code = dp_err | tab.err, Mux(tab.err, tab.err_code, dp_code)
        m.d.sync += [err_q.eq(router.err | sc.err | dp_err),
                     code_q.eq(Mux(router.err, router.err_code,
                                   Mux(sc.err, sc.err_code, dp_code)))]
        m.d.comb += [
            regs.busy.eq(~idle | end_seen),
            regs.done_pulse.eq(done),
            regs.error_pulse.eq(err_q),
            regs.error_code.eq(code_q),
            regs.sched_status.eq(Cat(sc.loaded, sc.running, sc.at_end, Const(0, 13), sc.pc)),
            regs.cycles.eq(array.cycles),
            regs.busy_mac.eq(array.sel.busy_mac),
            regs.stall_in.eq(array.sel.stall_in),
            regs.stall_out.eq(array.sel.stall_out),
            regs.nnz.eq(array.sel.nnz),
        ]
        if dp is not None:
            m.d.comb += [regs.job_cycles.eq(dp.job_cycles), regs.dma_busy.eq(dp.dma_busy_cycles),
                         regs.dma_exposed.eq(dp.dma_exposed_cycles),
                         regs.dma_beats.eq(dp.dma_beats), regs.prune_cycles.eq(dp.prune_cycles),
                         regs.pregen_cycles.eq(dp.pregen_cycles),
                         regs.pregen_exposed.eq(dp.pregen_exposed_cycles),
                         regs.stage_cycles.eq(dp.stage_cycles),
                         regs.stage_exposed.eq(dp.stage_exposed_cycles),
                         regs.prune_exposed.eq(dp.prune_exposed_cycles),
                         regs.prune_tau.eq(dp.prune_tau)]
        return m


def _select(m, sel, a, b, dst):
    """Stream (array) ``dst`` fed by ``a`` while ``sel``, else by ``b``; the other waits."""
    if isinstance(dst, list):
        for x, y, z in zip(a, b, dst):
            _select(m, sel, x, y, z)
        return
    m.d.comb += [dst.valid.eq(Mux(sel, a.valid, b.valid)),
                 dst.payload.eq(Mux(sel, a.payload, b.payload)),
                 a.ready.eq(dst.ready & sel), b.ready.eq(dst.ready & ~sel)]


def _connect(m, a, b):
    """``wiring.connect`` of two interfaces, or element-wise of two equal port arrays."""
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _connect(m, x, y)
    else:
        wiring.connect(m, a, b)
