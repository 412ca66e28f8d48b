"""AXI4-Lite slave register file: control, status, configuration and performance counters.

The register map (word offsets, 32-bit registers) lives in :data:`REGS` and is documented in
``docs/register-map.md``; the host driver and the tests import the same table.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int, read_only

__all__ = ["AxiLiteRegs", "REGS", "COUNTERS", "ID_VALUE", "RESP_OKAY", "RESP_SLVERR",
           "CTRL_START", "CTRL_SOFT_RESET", "CTRL_IRQ_ENABLE", "STATUS_BUSY", "STATUS_DONE",
           "STATUS_ERROR", "IRQ_DONE", "IRQ_ERROR", "SCHED_LOADED", "SCHED_RUNNING", "SCHED_AT_END",
           "config_words", "version_word"]

#: Value of the read-only ID register: ASCII 'SFRG'.
ID_VALUE = 0x53465247
RESP_OKAY = 0b00
RESP_SLVERR = 0b10

#: Performance counters, in register order; each is a LO/HI pair: the array's five from
#: 0x040, the data plane's (``hdl/dataplane.py``; 0 without one) from 0x090.
COUNTERS = ("cycles", "busy_mac", "stall_in", "stall_out", "nnz",
            "job_cycles", "dma_busy", "dma_exposed", "dma_beats", "prune_cycles",
            "pregen_cycles", "pregen_exposed", "stage_cycles", "stage_exposed",
            "prune_exposed")
_COUNTER_BASE = 0x040
_DP_COUNTER_BASE = 0x090
_N_ARRAY_COUNTERS = 5

#: Register name -> byte offset.
REGS = {
    "ID": 0x000,
    "VERSION": 0x004,
    "CONFIG0": 0x008,
    "CONFIG1": 0x00C,
    "CONFIG2": 0x010,
    "CONFIG3": 0x014,
    "CONFIG4": 0x018,
    "CONFIG5": 0x01C,
    "CTRL": 0x020,
    "STATUS": 0x024,
    "ERROR_CODE": 0x028,
    "IRQ_STATUS": 0x02C,
    "SCHED_LEN": 0x030,
    "SCHED_BASE": 0x034,
}
for _k, _name in enumerate(COUNTERS):
    _base = _COUNTER_BASE + 8 * _k if _k < _N_ARRAY_COUNTERS else \
        _DP_COUNTER_BASE + 8 * (_k - _N_ARRAY_COUNTERS)
    REGS[f"{_name.upper()}_LO"] = _base
    REGS[f"{_name.upper()}_HI"] = _base + 4
#: Read-only state of the on-chip schedule controller (hdl/controller.py).
REGS["SCHED_STATUS"] = 0x080
#: Read-only: the threshold the data plane's most recent CMD_PRUNE computed (hdl/dp_prune.py).
REGS["PRUNE_TAU"] = 0x084

#: Bits of SCHED_STATUS ([31:16] is the index of the next schedule entry).
SCHED_LOADED = 1 << 0
SCHED_RUNNING = 1 << 1
SCHED_AT_END = 1 << 2

#: Bits of CTRL, STATUS and IRQ_STATUS.
CTRL_START = 1 << 0
CTRL_SOFT_RESET = 1 << 1
CTRL_IRQ_ENABLE = 1 << 8
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
IRQ_DONE = 1 << 0
IRQ_ERROR = 1 << 1

_N_CONFIG = 6


def version_word(version) -> int:
    """``(major, minor, patch)`` -> ``major << 16 | minor << 8 | patch`` (each 0..255)."""
    if isinstance(version, str):
        try:
            version = tuple(int(p) for p in version.split(".")[:3])
        except ValueError:
            raise ValueError(f"version must look like 'major.minor.patch', not {version!r}") from None
    if not isinstance(version, (tuple, list)) or len(version) != 3:
        raise TypeError(f"version must be (major, minor, patch), not {version!r}")
    for part, v in zip(("major", "minor", "patch"), version):
        check_int(f"version {part}", v, 0, 255)
    return version[0] << 16 | version[1] << 8 | version[2]


def config_words(cfg) -> list[int]:
    """The six read-only configuration words CONFIG0..CONFIG5 of an ``AcceleratorConfig``.

    CONFIG0 = pe_rows[7:0] | pe_cols[15:8] | macs_per_pe[23:16] | k_max[31:24];
    CONFIG1 = data_width[7:0] | frac_bits[15:8] | acc_width[23:16] | nm_m[31:24];
    CONFIG2 = max_row_len[15:0] | nm_n_max[23:16] | strides bit mask[31:24] (bit s-1 set when
    stride s is supported); CONFIG3/4/5 = weight / act / psum buffer depths in words.
    """
    strides = 0
    for s in cfg.strides:
        strides |= 1 << (s - 1)
    return [
        cfg.pe_rows | cfg.pe_cols << 8 | cfg.macs_per_pe << 16 | cfg.k_max << 24,
        cfg.data_width | cfg.frac_bits << 8 | cfg.acc_width << 16 | cfg.nm_m << 24,
        cfg.max_row_len | cfg.nm_n_max << 16 | strides << 24,
        cfg.weight_buf_depth,
        cfg.act_buf_depth,
        cfg.psum_buf_depth,
    ]


class AxiLiteRegs(wiring.Component):
    """AXI4-Lite slave with the accelerator's control/status registers (``docs/register-map.md``).

    Parameters
    ----------
    addr_width : int, [7, 32]
        Width of ``s_axil_awaddr`` / ``s_axil_araddr`` (default 12: a 4 KiB window). Bits
        [1:0] are ignored (every register is a 32-bit word); addresses past the map answer
        SLVERR.
    version : (major, minor, patch), each [0, 255]
        Value of VERSION.
    config : sequence of 6 ints, each [0, 2**32 - 1]
        CONFIG0..CONFIG5 (see :func:`config_words`).
    counter_width : int, [33, 64]
        Width of each performance-counter input (default 48); HI reads return the bits above 32,
        zero extended.
    error_code_width : int, [1, 32]
        Width of the ``error_code`` input (default 8).

    Ports
    -----
    s_axil_* : the five AXI4-Lite channels, flat, with the standard AMBA names (so
        ``cocotbext.axi.AxiLiteBus.from_prefix(dut, "s_axil")`` and Vivado's interface
        inference find them). 32-bit data, 4-bit ``wstrb``; ``awprot``/``arprot`` are accepted
        and ignored.
    start : Out(1)
        One-cycle pulse when CTRL is written with bit 0 set (and ``wstrb[0]``).
    soft_reset : Out(1)
        One-cycle pulse when CTRL is written with bit 1 set. It also clears STATUS.done/error,
        IRQ_STATUS and ERROR_CODE; the RW registers keep their values.
    irq : Out(1)
        Level: ``CTRL.irq_enable & (IRQ_STATUS.done | IRQ_STATUS.error)``.
    sched_len, sched_base : Out(32)
        The SCHED_LEN / SCHED_BASE registers.
    busy : In(1)
        The core is running (read live as STATUS.busy).
    done_pulse, error_pulse : In(1)
        Set the sticky STATUS.done / STATUS.error and IRQ_STATUS bits. A pulse in the same
        cycle as a write-1-to-clear of the same bit wins (the event is never lost).
    error_code : In(error_code_width)
        Captured into ERROR_CODE on an ``error_pulse`` while STATUS.error is clear (the first
        error is kept until software clears STATUS.error).
    sched_status : In(32)
        Read live as SCHED_STATUS (read-only): the schedule controller's loaded / running /
        at_end bits and, in [31:16], the index of its next entry.
    prune_tau : In(32)
        Read live as PRUNE_TAU (read-only): the data plane's last on-chip pruning threshold.
    cycles, busy_mac, stall_in, stall_out, nnz, job_cycles, dma_busy, dma_exposed, dma_beats, prune_cycles, pregen_cycles, pregen_exposed, stage_cycles, stage_exposed, prune_exposed : In(counter_width)
        Performance counters kept by the core (:data:`COUNTERS`). Reading a LO register latches the HI half of the
        same counter at the same instant, so a LO-then-HI read pair is an atomic 64-bit read.

    Timing
    ------
    Every output is a register or a function of registers only: no combinational path from any
    input to any output, so in particular no valid depends on a ready. Write: AW and W are accepted independently, in
    either order (each channel holds one beat: ``awready = ~aw_full``, ``wready = ~w_full``);
    the write takes effect in the cycle after both are held and no response is pending, and
    BVALID rises then. Latency AW&W -> BVALID 1 cycle; throughput one write per 3 cycles with
    BREADY high. Read: ``arready = ~rvalid``; RDATA/RRESP/RVALID are registered in the cycle of
    the AR handshake (latency 1, one read per 2 cycles with RREADY high). One outstanding
    transaction per channel; a held response waits for its ready indefinitely without blocking
    the other direction.
    """

    def __init__(self, *, addr_width: int = 12, version=(0, 1, 0), config=(0,) * _N_CONFIG,
                 counter_width: int = 48, error_code_width: int = 8):
        self._addr_width = check_int("addr_width", addr_width, 7, 32)
        self._version = version_word(version)
        if not isinstance(config, (tuple, list)) or len(config) != _N_CONFIG:
            raise TypeError(f"config must be a sequence of {_N_CONFIG} integers, not {config!r}")
        self._config = [check_int(f"config[{k}]", v, 0, (1 << 32) - 1) for k, v in enumerate(config)]
        self._counter_width = check_int("counter_width", counter_width, 33, 64)
        self._error_code_width = check_int("error_code_width", error_code_width, 1, 32)
        aw = addr_width
        members = {
            "s_axil_awaddr": In(aw), "s_axil_awprot": In(3), "s_axil_awvalid": In(1),
            "s_axil_awready": Out(1),
            "s_axil_wdata": In(32), "s_axil_wstrb": In(4), "s_axil_wvalid": In(1),
            "s_axil_wready": Out(1),
            "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
            "s_axil_araddr": In(aw), "s_axil_arprot": In(3), "s_axil_arvalid": In(1),
            "s_axil_arready": Out(1),
            "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rvalid": Out(1),
            "s_axil_rready": In(1),
            "start": Out(1), "soft_reset": Out(1), "irq": Out(1),
            "sched_len": Out(32), "sched_base": Out(32),
            "busy": In(1), "done_pulse": In(1), "error_pulse": In(1),
            "error_code": In(error_code_width), "sched_status": In(32), "prune_tau": In(32),
        }
        members.update({name: In(counter_width) for name in COUNTERS})
        super().__init__(members)

    addr_width = read_only("_addr_width")
    version = read_only("_version")
    counter_width = read_only("_counter_width")

    def elaborate(self, platform):
        m = Module()
        # The counter inputs, by name (the members named in COUNTERS, in register order).
        counters = {path[0]: port for path, _, port in self.signature.flatten(self)
                    if path[0] in COUNTERS}

        # -- architectural state --------------------------------------------------------------
        irq_enable = Signal()
        st_done = Signal()
        st_error = Signal()
        irq_done = Signal()
        irq_error = Signal()
        error_code = Signal(32)
        hi_latch = {name: Signal(32, name=f"{name}_hi_latch") for name in COUNTERS}

        # -- write path: AW and W held independently ------------------------------------------
        aw_full = Signal()
        aw_addr = Signal(self._addr_width)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        m.d.comb += [
            self.s_axil_awready.eq(~aw_full),
            self.s_axil_wready.eq(~w_full),
        ]
        with m.If(self.s_axil_awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(self.s_axil_awaddr)]
        with m.If(self.s_axil_wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(self.s_axil_wdata), w_strb.eq(self.s_axil_wstrb)]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)

        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~self.s_axil_bvalid)

        def merged(old):
            # WSTRB: byte lane i of the register takes wdata only when wstrb[i].
            return Cat(*[Mux(w_strb[i], w_data[8 * i:8 * i + 8], old[8 * i:8 * i + 8])
                         for i in range(4)])

        # W1C requests and pulses, computed combinationally and applied after the set events.
        clr_done = Signal()
        clr_error = Signal()
        clr_irq_done = Signal()
        clr_irq_error = Signal()
        m.d.sync += [self.start.eq(0), self.soft_reset.eq(0)]
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), self.s_axil_bvalid.eq(1),
                         self.s_axil_bresp.eq(RESP_OKAY)]
            waddr = aw_addr[2:]
            with m.Switch(waddr):
                with m.Case(REGS["CTRL"] >> 2):
                    with m.If(w_strb[0]):
                        m.d.sync += [self.start.eq(w_data[0]), self.soft_reset.eq(w_data[1])]
                    with m.If(w_strb[1]):
                        m.d.sync += irq_enable.eq(w_data[8])
                with m.Case(REGS["STATUS"] >> 2):
                    with m.If(w_strb[0]):
                        m.d.comb += [clr_done.eq(w_data[1]), clr_error.eq(w_data[2])]
                with m.Case(REGS["IRQ_STATUS"] >> 2):
                    with m.If(w_strb[0]):
                        m.d.comb += [clr_irq_done.eq(w_data[0]), clr_irq_error.eq(w_data[1])]
                with m.Case(REGS["SCHED_LEN"] >> 2):
                    m.d.sync += self.sched_len.eq(merged(self.sched_len))
                with m.Case(REGS["SCHED_BASE"] >> 2):
                    m.d.sync += self.sched_base.eq(merged(self.sched_base))
                with m.Default():
                    # Read-only registers and unmapped addresses: dropped, SLVERR.
                    m.d.sync += self.s_axil_bresp.eq(RESP_SLVERR)

        # -- status / interrupt bits (the set event wins over a same-cycle clear) -------------
        with m.If(clr_done):
            m.d.sync += st_done.eq(0)
        with m.If(clr_error):
            m.d.sync += st_error.eq(0)
        with m.If(clr_irq_done):
            m.d.sync += irq_done.eq(0)
        with m.If(clr_irq_error):
            m.d.sync += irq_error.eq(0)
        with m.If(self.soft_reset):
            # The soft reset pulse (registered above) clears the status it would otherwise leave.
            m.d.sync += [st_done.eq(0), st_error.eq(0), irq_done.eq(0), irq_error.eq(0),
                         error_code.eq(0)]
        with m.If(self.done_pulse):
            m.d.sync += [st_done.eq(1), irq_done.eq(1)]
        with m.If(self.error_pulse):
            m.d.sync += [st_error.eq(1), irq_error.eq(1)]
            with m.If(~st_error | self.soft_reset):
                m.d.sync += error_code.eq(self.error_code)
        # A function of registers only (no input reaches it combinationally).
        m.d.comb += self.irq.eq(irq_enable & (irq_done | irq_error))

        # -- read path ------------------------------------------------------------------------
        m.d.comb += self.s_axil_arready.eq(~self.s_axil_rvalid)
        with m.If(self.s_axil_rvalid & self.s_axil_rready):
            m.d.sync += self.s_axil_rvalid.eq(0)
        rdata = Signal(32)
        rresp = Signal(2)
        raddr = self.s_axil_araddr[2:]
        fixed = {"ID": ID_VALUE, "VERSION": self._version}
        for k in range(_N_CONFIG):
            fixed[f"CONFIG{k}"] = self._config[k]
        with m.Switch(raddr):
            for name, value in fixed.items():
                with m.Case(REGS[name] >> 2):
                    m.d.comb += rdata.eq(Const(value, 32))
            with m.Case(REGS["CTRL"] >> 2):
                m.d.comb += rdata.eq(irq_enable << 8)
            with m.Case(REGS["STATUS"] >> 2):
                m.d.comb += rdata.eq(Cat(self.busy, st_done, st_error))
            with m.Case(REGS["ERROR_CODE"] >> 2):
                m.d.comb += rdata.eq(error_code)
            with m.Case(REGS["IRQ_STATUS"] >> 2):
                m.d.comb += rdata.eq(Cat(irq_done, irq_error))
            with m.Case(REGS["SCHED_LEN"] >> 2):
                m.d.comb += rdata.eq(self.sched_len)
            with m.Case(REGS["SCHED_BASE"] >> 2):
                m.d.comb += rdata.eq(self.sched_base)
            with m.Case(REGS["SCHED_STATUS"] >> 2):
                m.d.comb += rdata.eq(self.sched_status)
            with m.Case(REGS["PRUNE_TAU"] >> 2):
                m.d.comb += rdata.eq(self.prune_tau)
            for name, counter in counters.items():
                with m.Case(REGS[f"{name.upper()}_LO"] >> 2):
                    m.d.comb += rdata.eq(counter[:32])
                with m.Case(REGS[f"{name.upper()}_HI"] >> 2):
                    m.d.comb += rdata.eq(hi_latch[name])
            with m.Default():
                m.d.comb += rresp.eq(RESP_SLVERR)
        with m.If(self.s_axil_arvalid & ~self.s_axil_rvalid):
            m.d.sync += [self.s_axil_rvalid.eq(1), self.s_axil_rdata.eq(rdata),
                         self.s_axil_rresp.eq(rresp)]
            # Reading LO snapshots HI of the same counter: a LO/HI pair reads one instant.
            for name, counter in counters.items():
                with m.If(raddr == REGS[f"{name.upper()}_LO"] >> 2):
                    m.d.sync += hi_latch[name].eq(counter[32:])

        return m
