"""Reference model of the AXI4-Lite register file (``hdl/axil.py``, ``docs/register-map.md``).

Transaction-level and sequential: :meth:`AxilRegModel.write` / :meth:`AxilRegModel.read` apply
one access and return what the bus must answer; :meth:`AxilRegModel.event` applies the core's
``done_pulse`` / ``error_pulse``. The amaranth-sim and cocotb tests use it as their scoreboard.
"""

from __future__ import annotations

from sparseforge.hdl.axil import (COUNTERS, CTRL_IRQ_ENABLE, ID_VALUE, IRQ_DONE, IRQ_ERROR, REGS,
                                  RESP_OKAY, RESP_SLVERR, STATUS_BUSY, STATUS_DONE, STATUS_ERROR)

__all__ = ["AxilRegModel", "RW_REGS", "RO_REGS"]

#: Registers a write may change (the rest answer SLVERR to writes).
RW_REGS = ("CTRL", "STATUS", "IRQ_STATUS", "SCHED_LEN", "SCHED_BASE")
RO_REGS = tuple(n for n in REGS if n not in RW_REGS)


def _merge(old: int, data: int, strb: int) -> int:
    out = old
    for i in range(4):
        if strb >> i & 1:
            out = (out & ~(0xFF << 8 * i)) | (data & (0xFF << 8 * i))
    return out & 0xFFFFFFFF


class AxilRegModel:
    def __init__(self, *, version: int, config: list[int], counter_width: int = 48,
                 addr_width: int = 12):
        self.version = version
        self.config = list(config)
        self.counter_width = counter_width
        self.addr_width = addr_width
        self.by_word = {off >> 2: name for name, off in REGS.items()}
        self.counters = {name: 0 for name in COUNTERS}
        self.busy = 0
        self.sched_status = 0       # an input of the register file, read live
        self.prune_tau = 0          # likewise
        self.reset()

    def reset(self):
        """Hardware reset: every register back to its reset value; pulse counts kept."""
        self.irq_enable = 0
        self.done = self.error = 0
        self.irq_done = self.irq_error = 0
        self.error_code = 0
        self.sched_len = self.sched_base = 0
        self.hi_latch = {name: 0 for name in COUNTERS}
        if not hasattr(self, "starts"):
            self.starts = self.soft_resets = 0

    # -- the core's side ------------------------------------------------------------------------
    def event(self, *, done: bool = False, error: bool = False, code: int = 0):
        if error:
            if not self.error:
                self.error_code = code
            self.error = self.irq_error = 1
        if done:
            self.done = self.irq_done = 1

    @property
    def irq(self) -> int:
        return int(bool(self.irq_enable and (self.irq_done or self.irq_error)))

    # -- the bus side ---------------------------------------------------------------------------
    def name_of(self, addr: int) -> str | None:
        return self.by_word.get((addr % (1 << self.addr_width)) >> 2)

    def write(self, addr: int, data: int, strb: int = 0xF) -> int:
        """Apply a write; return BRESP."""
        name = self.name_of(addr)
        if name not in RW_REGS:
            return RESP_SLVERR
        if name == "CTRL":
            if strb & 1:
                if data & 1:
                    self.starts += 1
                if data & 2:
                    self.soft_resets += 1
                    self.done = self.error = self.irq_done = self.irq_error = 0
                    self.error_code = 0
            if strb & 2:
                self.irq_enable = int(bool(data & CTRL_IRQ_ENABLE))
        elif name == "STATUS":
            if strb & 1:
                if data & STATUS_DONE:
                    self.done = 0
                if data & STATUS_ERROR:
                    self.error = 0
        elif name == "IRQ_STATUS":
            if strb & 1:
                if data & IRQ_DONE:
                    self.irq_done = 0
                if data & IRQ_ERROR:
                    self.irq_error = 0
        elif name == "SCHED_LEN":
            self.sched_len = _merge(self.sched_len, data, strb)
        elif name == "SCHED_BASE":
            self.sched_base = _merge(self.sched_base, data, strb)
        return RESP_OKAY

    def read(self, addr: int) -> tuple[int, int]:
        """Apply a read; return ``(RDATA, RRESP)``."""
        name = self.name_of(addr)
        if name is None:
            return 0, RESP_SLVERR
        if name == "ID":
            return ID_VALUE, RESP_OKAY
        if name == "VERSION":
            return self.version, RESP_OKAY
        if name.startswith("CONFIG"):
            return self.config[int(name[6:])], RESP_OKAY
        if name == "CTRL":
            return self.irq_enable * CTRL_IRQ_ENABLE, RESP_OKAY
        if name == "STATUS":
            return (self.busy * STATUS_BUSY | self.done * STATUS_DONE
                    | self.error * STATUS_ERROR), RESP_OKAY
        if name == "ERROR_CODE":
            return self.error_code, RESP_OKAY
        if name == "IRQ_STATUS":
            return self.irq_done * IRQ_DONE | self.irq_error * IRQ_ERROR, RESP_OKAY
        if name == "SCHED_LEN":
            return self.sched_len, RESP_OKAY
        if name == "SCHED_BASE":
            return self.sched_base, RESP_OKAY
        if name == "SCHED_STATUS":
            return self.sched_status, RESP_OKAY
        if name == "PRUNE_TAU":
            return self.prune_tau, RESP_OKAY
        counter, half = name.rsplit("_", 1)
        counter = counter.lower()
        if half == "LO":
            value = self.counters[counter]
            self.hi_latch[counter] = value >> 32
            return value & 0xFFFFFFFF, RESP_OKAY
        return self.hi_latch[counter], RESP_OKAY
