"""Top level: AXI4-Lite control/status, an AXI4-Stream packet router into the PE array, the
stochastic pruner and the N:M weight pre-generation, and an AXI4-Stream merger of their
outputs.

The host (``sparseforge.sim.host.driver.Driver``) runs a layer phase by streaming *packets*: a
header word ``dest[31:24] | beats[23:0]`` followed by ``beats`` target beats, each sent as
``ceil(width / 32)`` little-endian 32-bit words (bit 0 of the beat in bit 0 of the first
word). Destinations (:func:`destinations` gives the table the driver uses):

* ``DEST_CTRL`` (0): one beat of :func:`ctrl_layout` -- the job's control inputs (array mode,
  stride, padding, row lengths, skip_zero, raw; pruner tau/k_p/shift, seed + seed_load, clear;
  N of the pre-generation; ``pe_sel`` of the counter registers);
* ``DEST_END`` (1): 0 beats; marks the end of a job: STATUS.done rises (and the IRQ, when
  enabled) once the array is idle and every output word has left;
* then ``x_r{i}``, ``taps_r{i}_c{j}``, ``dense_r{i}_c{j}``, ``drain_c{j}`` of the
  :class:`~sparseforge.hdl.pe_array.PEArray`, ``prune`` (the pruner's gradient stream) and
  ``pregen`` (the weight pre-generation's group stream).

Outputs leave on ``m_axis`` as packets too: a header ``src[31:24] | words[23:0]``, then the
beat (``o_c{j}``: a column output ``{value, last, end}``; ``prune``: a pruned gradient;
``pregen``: a selected group), ``tlast`` on its last word. Sources are served in a fixed
priority (lowest id first); every source is finite, so none starves for ever.

Errors (*ours*): a header naming an unknown destination or a packet whose words end with
``tlast`` early raises STATUS.error with ERROR_CODE ``ERR_BAD_DEST`` (1) or ``ERR_SHORT`` (2);
the router then discards words up to and including the next ``tlast`` and returns to waiting
for a header: a malformed stream never hangs the core. CTRL.soft_reset resets the whole
datapath (array, pruner, pre-generation, router, merger).

AXI4-Lite: :class:`~sparseforge.hdl.axil.AxiLiteRegs` (``docs/register-map.md``); counters:
CYCLES is the array's job time, BUSY_MAC / STALL_IN / STALL_OUT / NNZ those of PE
``pe_sel`` (CTRL packet).

Throughput: the router moves one 32-bit word per cycle; a target beat of ``w`` bits costs
``ceil(w / 32) + 1`` cycles (the PRESENT cycle holds ``s_axis_tready`` low, which keeps the
targets' ready off the router's next-state logic) plus one header per packet; array, pruner
and pre-generation beats then pass an output register per destination (one cycle of latency,
no rate). An output beat costs its words + 2 cycles. This is the host-fed form of the
controller (*ours*, see docs/accelerator.md): the driver does the offline schedule's
mapping and sends each tile's streams in a deadlock-free order (rows of a tile before its
drains, a row before its bundles).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.axil import AxiLiteRegs, config_words
from sparseforge.hdl.controller import ScheduleController
from sparseforge.hdl.pe_array import PEArray
from sparseforge.hdl.pe import pe_params
from sparseforge.hdl.pruner import StochasticPruner
from sparseforge.hdl.skid import SkidBuffer
from sparseforge.hdl.weight_pregen import WeightPregen

__all__ = ["Accelerator", "ctrl_layout", "pgctl_layout", "destinations", "sources", "DEST_CTRL",
           "DEST_END",
           "ERR_BAD_DEST", "ERR_SHORT"]

DEST_CTRL, DEST_END = 0, 1
ERR_BAD_DEST, ERR_SHORT = 1, 2


def ctrl_layout(cfg) -> data.StructLayout:
    """The CTRL packet's single beat."""
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


def _any(values):
    out = 0
    for v in values:
        out = out | v
    return out


def _words(width):
    return -(-width // 32)


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
        members = {n: (In if f.flow == wiring.In else Out)(f.shape)
                   for n, f in self.regs.signature.members.items() if n.startswith("s_axil_")}
        members.update({
            "s_axis_tdata": In(32), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(32), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "irq": Out(1),
        })
        super().__init__(members)

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        regs, array, pruner, pregen, sc = (self.regs, self.array, self.pruner, self.pregen,
                                           self.ctl)
        soft = Signal()
        m.submodules.regs = regs
        m.submodules.ctl = ResetInserter(soft)(sc)
        m.submodules.array = ResetInserter(soft)(array)
        m.submodules.pruner = ResetInserter(soft)(pruner)
        m.submodules.pregen = ResetInserter(soft)(pregen)
        m.d.comb += soft.eq(regs.soft_reset)
        for n in self.signature.members:
            if n.startswith("s_axil_"):
                if self.signature.members[n].flow == wiring.In:
                    m.d.comb += getattr(regs, n).eq(getattr(self, n))
                else:
                    m.d.comb += getattr(self, n).eq(getattr(regs, n))
        m.d.comb += self.irq.eq(regs.irq)

        # ------------------------------------------------------------------ control registers
        ctl = Signal(ctrl_layout(cfg))
        # While a schedule runs, the phase controls come from it (the CTRL packet's copies of
        # them are ignored); raw, pe_sel, tau and the seed stay with the host.
        # The choice is registered (for Fmax: the PEs' mode-dependent logic starts at a
        # register); a control changes >= 2 cycles before the first beat that uses it.
        for name in ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero"):
            m.d.sync += getattr(array, name).eq(
                Mux(sc.running, getattr(sc, name), getattr(ctl, name)))
        for name in ("raw", "pe_sel"):
            m.d.comb += getattr(array, name).eq(getattr(ctl, name))
        m.d.comb += [pruner.tau.eq(ctl.tau), pruner.seed.eq(ctl.seed)]
        m.d.sync += [pruner.k_p.eq(Mux(sc.running, sc.k_p, ctl.k_p)),
                     pruner.shift.eq(Mux(sc.running, sc.shift, ctl.shift))]
        # N of the pre-generation: set by CTRL.nm_n, or by PGCTL.n when a run starts; a CTRL
        # beat arriving during an on-chip run (the WG job it overlaps) leaves it alone.
        pg_n = Signal(8)
        m.d.comb += pregen.n.eq(pg_n)

        # ------------------------------------------------------------------ weight buffer +
        # on-chip pre-generation sequencer (*ours*): groups loaded into the weight buffer are
        # fed to the pre-generation one per cycle, independent of the input stream, so a run
        # overlaps whatever the array does (the WG phase).
        glay = pregen.i.payload.shape()
        wbuf = Memory(shape=glay, depth=cfg.weight_buf_depth, init=[])
        m.submodules.wbuf = wbuf
        wb_wr = wbuf.write_port()
        wb_rd = wbuf.read_port()
        wptr = Signal(range(cfg.weight_buf_depth + 1))
        seq_active = Signal()
        seq_left = Signal(24)
        rptr = Signal(range(cfg.weight_buf_depth))
        seq_ov = Signal()

        def start_run(n, count):
            """Start a pre-generation run (PGCTL packet or a schedule PREGEN step)."""
            return [pg_n.eq(n), seq_left.eq(count), rptr.eq(0), seq_active.eq(count != 0)]

        # ------------------------------------------------------------------ input router
        dests = destinations(array, pruner, pregen, cfg, sc)
        dest_id = {name: k for k, (name, _, _) in enumerate(dests)}
        max_words = max(_words(w) for _, _, w in dests)
        # init 0xFF, not 0: the first header (usually CTRL, id 0) must *change* hdr_dest, or
        # Icarus never evaluates the combinational blocks decoding it (a declaration's initial
        # value raises no event there; found by the Icarus run of tests/test_accelerator.py)
        hdr_dest = Signal(8, init=0xFF)
        beats_left = Signal(24)
        widx = Signal(range(max_words + 1))
        buf = Signal(32 * max_words)
        IDLE, LOAD, PRESENT, DISCARD = range(4)
        state = Signal(2)
        err_pulse = Signal()
        err_code = Signal(8)
        end_seen = Signal()
        s_take = Signal()
        m.d.comb += s_take.eq(self.s_axis_tvalid & self.s_axis_tready)
        word = self.s_axis_tdata
        known = Signal()
        # the packet's words per beat, registered with the header (for Fmax: decoding it from
        # hdr_dest in the LOAD state's word count compare was on the ECP5 critical path)
        nwords = Signal(range(max_words + 1))
        nwords_in = Signal(range(max_words + 1))
        with m.Switch(self.s_axis_tdata[24:32]):
            for k, (_, _, w) in enumerate(dests):
                with m.Case(k):
                    m.d.comb += [known.eq(1), nwords_in.eq(_words(w))]
        new_ctl = Signal(ctrl_layout(cfg))
        m.d.comb += new_ctl.eq(buf[:len(new_ctl.as_value())])
        present_ready = Signal()
        # Array, pruner and pre-generation inputs leave through output registers (*ours*, for
        # Fmax), one per destination: a target sees a valid and a payload straight from its own
        # register (no shared, far-reaching register, no destination decode), and the router
        # hands a beat over when that register is empty (ready = ~valid register, so no target
        # ready reaches the router). Beats to one destination keep their order; a beat waiting
        # for its target does not hold up the next packet to another one. The router spends
        # >= 2 cycles per beat, so this costs no rate.
        arr_ports = [(k, port, w) for k, (name, port, w) in enumerate(dests)
                     if name.startswith(("x_r", "taps_r", "dense_r", "drain_c", "prune"))
                     or port is pregen.i]
        pv = [Signal(name=f"{dests[k][0]}_ov") for k, _, _ in arr_ports]
        pb = [Signal(w, name=f"{dests[k][0]}_ob") for k, _, w in arr_ports]
        for j, (k, port, w) in enumerate(arr_ports):
            m.d.comb += [port.valid.eq(pv[j]), port.payload.eq(pb[j])]
            with m.If(pv[j] & port.ready):
                m.d.sync += pv[j].eq(0)
        ovalid = Signal()
        m.d.comb += ovalid.eq(_any(pv))
        arr_ids = {k: j for j, (k, _, _) in enumerate(arr_ports)}
        # a host-sent pre-generation group still in the output register: an on-chip run (which
        # drives pregen.i itself) must not start before it has gone
        pg_held = Signal()
        m.d.comb += pg_held.eq(pv[arr_ids[dest_id["pregen"]]])
        with m.Switch(hdr_dest):
            for k, (name, port, w) in enumerate(dests):
                with m.Case(k):
                    if port == "pgctl":                  # PGCTL: after a held group
                        m.d.comb += present_ready.eq(~pg_held)
                    elif port is None:                   # CTRL / END: always ready
                        m.d.comb += present_ready.eq(1)
                    elif port == "wbuf":                 # weight buffer: one write per beat
                        # held while a pre-generation run reads the buffer (no group lost)
                        m.d.comb += present_ready.eq(~seq_active)
                        with m.If((state == PRESENT) & ~seq_active):
                            m.d.comb += [wb_wr.en.eq(wptr < cfg.weight_buf_depth),
                                         wb_wr.addr.eq(wptr), wb_wr.data.eq(buf[:w])]
                            m.d.sync += wptr.eq(wptr + 1)
                    elif k in arr_ids:                   # pregen: not during an on-chip run
                        j = arr_ids[k]
                        free = ~pv[j] & ~seq_active if port is pregen.i else ~pv[j]
                        m.d.comb += present_ready.eq(free)
                        with m.If((state == PRESENT) & free):
                            m.d.sync += [pv[j].eq(1), pb[j].eq(buf[:w])]
                    else:
                        m.d.comb += [port.valid.eq(state == PRESENT),
                                     port.payload.eq(buf[:w]),
                                     present_ready.eq(port.ready)]
        m.d.comb += self.s_axis_tready.eq((state == IDLE) | (state == LOAD) |
                                          (state == DISCARD))
        m.d.sync += [pruner.seed_load.eq(0), pruner.clear.eq(0)]
        with m.Switch(state):
            with m.Case(IDLE):
                with m.If(s_take):
                    m.d.sync += [hdr_dest.eq(word[24:32]), beats_left.eq(word[:24]),
                                 widx.eq(0), nwords.eq(nwords_in)]
                    with m.If(word[24:32] == dest_id["wbuf"]):    # a wbuf packet: from 0
                        m.d.sync += wptr.eq(0)
                    with m.If(word[24:32] == dest_id["sched"]):   # a schedule load
                        m.d.comb += [sc.load_begin.eq(1), sc.load_len.eq(word[:24])]
                    with m.If(~known):
                        m.d.comb += [err_pulse.eq(1), err_code.eq(ERR_BAD_DEST)]
                        with m.If(~self.s_axis_tlast):
                            m.d.sync += state.eq(DISCARD)
                    with m.Elif(word[24:32] == DEST_END):
                        m.d.sync += end_seen.eq(1)
                    with m.Elif(word[:24] != 0):
                        with m.If(self.s_axis_tlast):
                            m.d.comb += [err_pulse.eq(1), err_code.eq(ERR_SHORT)]
                        with m.Else():
                            m.d.sync += state.eq(LOAD)
            with m.Case(LOAD):
                with m.If(s_take):
                    with m.Switch(widx):
                        for k in range(max_words):
                            with m.Case(k):
                                m.d.sync += buf[32 * k:32 * (k + 1)].eq(word)
                    with m.If(widx + 1 == nwords):
                        m.d.sync += [state.eq(PRESENT), widx.eq(0)]
                        with m.If(self.s_axis_tlast & (beats_left != 1)):
                            m.d.comb += [err_pulse.eq(1), err_code.eq(ERR_SHORT)]
                            m.d.sync += state.eq(IDLE)
                    with m.Else():
                        m.d.sync += widx.eq(widx + 1)
                        with m.If(self.s_axis_tlast):
                            m.d.comb += [err_pulse.eq(1), err_code.eq(ERR_SHORT)]
                            m.d.sync += state.eq(IDLE)
            with m.Case(PRESENT):
                with m.If(present_ready):
                    with m.If(hdr_dest == DEST_CTRL):
                        m.d.sync += [ctl.eq(new_ctl), pruner.seed_load.eq(new_ctl.seed_load),
                                     pruner.clear.eq(new_ctl.clear)]
                        with m.If(~seq_active):
                            m.d.sync += pg_n.eq(new_ctl.nm_n)
                    with m.If(hdr_dest == dest_id["pgctl"]):
                        pg = Signal(pgctl_layout(cfg))
                        m.d.comb += pg.eq(buf[:len(pg.as_value())])
                        with m.If(pg.go & ~seq_active):
                            m.d.sync += start_run(pg.n, pg.count)
                    m.d.sync += beats_left.eq(beats_left - 1)
                    with m.If(beats_left == 1):
                        m.d.sync += state.eq(IDLE)
                    with m.Else():
                        m.d.sync += state.eq(LOAD)
            with m.Case(DISCARD):
                with m.If(s_take & self.s_axis_tlast):
                    m.d.sync += state.eq(IDLE)

        # the schedule's PREGEN steps start the same sequencer (the controller waits while a
        # run is busy, so the two never collide)
        with m.If(sc.pg_go & ~seq_active):
            m.d.sync += start_run(sc.nm_n, sc.pg_count)

        # sequencer: weight buffer -> pre-generation, one group per cycle (a registered read:
        # the read advances when the output register is empty or moving)
        seq_adv = Signal()
        m.d.comb += [seq_adv.eq(~seq_ov | pregen.i.ready), wb_rd.addr.eq(rptr),
                     wb_rd.en.eq(seq_adv)]
        with m.If(seq_active):
            m.d.comb += [pregen.i.valid.eq(seq_ov), pregen.i.payload.eq(wb_rd.data)]
            with m.If(seq_adv):
                m.d.sync += seq_ov.eq(seq_left != 0)
                with m.If(seq_left != 0):
                    m.d.sync += [rptr.eq(rptr + 1), seq_left.eq(seq_left - 1)]
                with m.Elif(~seq_ov | pregen.i.ready):
                    m.d.sync += seq_active.eq(0)

        # ------------------------------------------------------------------ output merger
        srcs = sources(array, pruner, pregen, cfg)
        # A 2-entry skid buffer on every output (columns, pruner, pre-generation): the merger's
        # pick (which depends on its own state) must not reach the column joins, the PEs' drain
        # pipelines or the pre-generation pipeline and its sequencer combinationally (the last
        # was the ECP5 critical path, 10.0 ns). The merger sends a beat's words straight from
        # the head entry and pops it with the last word, so the pick only sets the source
        # index and the word count (for Fmax: a pick that loaded a payload-wide output buffer
        # was the ECP5 critical path, 9.0 ns); the second entry takes the source's next beat
        # meanwhile, so no rate is lost.
        sliced = []
        for name, port, w in srcs:
            q = SkidBuffer(port.payload.shape())
            m.submodules[f"{name}_slice"] = q
            m.d.comb += [q.i.valid.eq(port.valid), port.ready.eq(q.i.ready),
                         q.i.payload.eq(port.payload)]
            sliced.append((name, q.o, w))
        srcs = sliced
        out_words = max(_words(w) for _, _, w in srcs)
        o_left = Signal(range(out_words + 2))
        o_src = Signal(8, init=0xFF)     # init 0xFF: see hdr_dest
        o_hdr = Signal()
        o_widx = Signal(range(out_words))
        busy_out = Signal()
        m.d.comb += busy_out.eq(o_left != 0)
        o_take = Signal()
        m.d.comb += o_take.eq(self.m_axis_tvalid & self.m_axis_tready)
        picked = Signal()
        for k, (name, port, w) in enumerate(srcs):
            prio = ~busy_out & ~picked
            sel = Signal(name=f"pick_{name}")
            m.d.comb += sel.eq(prio & port.valid)
            # popped with its last word
            m.d.comb += port.ready.eq(o_take & (o_src == k) & (o_left == 1))
            with m.If(sel):
                m.d.sync += [o_src.eq(k), o_left.eq(_words(w) + 1), o_hdr.eq(1),
                             o_widx.eq(0)]
            nxt = Signal(name=f"picked_{k}")
            m.d.comb += nxt.eq(picked | sel)
            picked = nxt
        with m.Switch(o_src):
            for k, (_, port, w) in enumerate(srcs):
                with m.Case(k):
                    bits = port.payload.as_value()
                    word = Signal(32, name=f"o_word_{k}")
                    with m.Switch(o_widx):
                        for j in range(_words(w)):
                            with m.Case(j):
                                m.d.comb += word.eq(bits[32 * j:32 * (j + 1)])
                    m.d.comb += self.m_axis_tdata.eq(
                        Mux(o_hdr, Cat(Const(_words(w), 24), o_src), word))
        m.d.comb += [self.m_axis_tvalid.eq(busy_out), self.m_axis_tlast.eq(o_left == 1)]
        with m.If(o_take):
            m.d.sync += o_left.eq(o_left - 1)
            with m.If(o_hdr):
                m.d.sync += o_hdr.eq(0)
            with m.Else():
                m.d.sync += o_widx.eq(o_widx + 1)

        # ------------------------------------------------------------------ status
        idle = ~array.active & (state == IDLE) & ~ovalid & ~busy_out & ~pruner.o.valid & \
            ~pregen.o.valid & ~seq_active & \
            ~_any([p.valid for n, p, _ in srcs])
        done = Signal()
        m.d.comb += done.eq(end_seen & idle)
        # the controller takes a step only once the previous phase has left the data path (an
        # overlapped pre-generation run may go on)
        m.d.comb += [
            sc.start.eq(regs.start),
            sc.dp_idle.eq(~array.active & ~ovalid & ~busy_out & ~pruner.o.valid &
                          ~_any([p.valid for n, p, _ in srcs if n != "pregen"])),
            sc.pg_busy.eq(seq_active | pg_held),
        ]
        with m.If(done):
            m.d.sync += end_seen.eq(0)
        # error reports registered once on their way to the register file (for Fmax: the router's
        # packet checks -> ERROR_CODE was the ECP5 critical path); STATUS.error rises a cycle later
        err_q = Signal()
        code_q = Signal(8)
        m.d.sync += [err_q.eq(err_pulse | sc.err),
                     code_q.eq(Mux(err_pulse, err_code, sc.err_code))]
        m.d.comb += [
            regs.busy.eq(~idle | end_seen),
            regs.done_pulse.eq(done),
            regs.error_pulse.eq(err_q),
            regs.error_code.eq(code_q),
            regs.sched_status.eq(Cat(sc.loaded, sc.running, sc.at_end, Const(0, 13), sc.pc)),
            regs.cycles.eq(array.cycles),
            regs.busy_mac.eq(array.sel_busy_mac),
            regs.stall_in.eq(array.sel_stall_in),
            regs.stall_out.eq(array.sel_stall_out),
            regs.nnz.eq(array.sel_nnz),
        ]
        with m.If(soft):
            m.d.sync += [state.eq(IDLE), o_left.eq(0), end_seen.eq(0), seq_active.eq(0),
                         seq_ov.eq(0)] + [v.eq(0) for v in pv]
        return m


def destinations(array, pruner, pregen, cfg, ctl):
    """``[(name, stream or None, payload width)]`` in destination-id order."""
    out = [("ctrl", None, len(Signal(ctrl_layout(cfg)).as_value())), ("end", None, 0)]
    R, C = array.rows, array.cols
    for i in range(R):
        s = getattr(array, f"x_r{i}")
        out.append((f"x_r{i}", s, len(s.payload.as_value())))
    for i in range(R):
        for j in range(C):
            s = getattr(array, f"taps_r{i}_c{j}")
            out.append((f"taps_r{i}_c{j}", s, len(s.payload.as_value())))
    for i in range(R):
        for j in range(C):
            s = getattr(array, f"dense_r{i}_c{j}")
            out.append((f"dense_r{i}_c{j}", s, len(s.payload.as_value())))
    for j in range(C):
        s = getattr(array, f"drain_c{j}")
        out.append((f"drain_c{j}", s, len(s.payload.as_value())))
    out.append(("prune", pruner.i, len(pruner.i.payload.as_value())))
    out.append(("pregen", pregen.i, len(pregen.i.payload.as_value())))
    out.append(("wbuf", "wbuf", len(pregen.i.payload.as_value())))
    out.append(("pgctl", "pgctl", len(Signal(pgctl_layout(cfg)).as_value())))
    out.append(("sched", ctl.load, 32))
    out.append(("step", ctl.step, 8))
    return out


def sources(array, pruner, pregen, cfg):
    """``[(name, stream, payload width)]`` in source-id order."""
    out = []
    for j in range(array.cols):
        s = getattr(array, f"o_c{j}")
        out.append((f"o_c{j}", s, len(s.payload.as_value())))
    out.append(("prune", pruner.o, len(pruner.o.payload.as_value())))
    out.append(("pregen", pregen.o, len(pregen.o.payload.as_value())))
    return out
