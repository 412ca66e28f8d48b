"""The fast simulation of the ``accelerator`` (``libsfsim.so``, :mod:`.build`) from Python.

:class:`FastSim` wraps the C harness calls (ctypes); every loop over clock cycles runs in C++.
:class:`FastTransport` gives :class:`sparseforge.sim.host.driver.Driver` the same bus objects
it uses under cocotb (``axil``, ``src``, ``sink``, ``ram``; the XDMA card transport's, over the
simulation), so the driver, the e2e step and every check run unchanged on either: ``Driver.fast(cfg, lib)`` instead of
``await Driver.start(dut, cfg)``. The driver's coroutines never wait on a simulator event
here (each bus call simulates until its transfer is done), so ``asyncio.run`` runs them.

Bounded waits: every call that simulates until something happens gives up after
``max_cycles`` (default :data:`MAX_WAIT_CYCLES`) and raises :class:`SimTimeout` naming what it
waited for, so a design that stops answering never hangs the host.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from sparseforge.sim.host.xdma import SimXdmaDevice, XdmaTransport

__all__ = ["FastSim", "FastTransport", "SimTimeout", "MAX_WAIT_CYCLES"]

#: The longest a single bus call simulates before it raises :class:`SimTimeout`.
MAX_WAIT_CYCLES = 5_000_000


class SimTimeout(TimeoutError):
    """A bus transfer did not complete within its cycle budget."""


_SIGS = {
    "sf_new": (ctypes.c_void_p, [ctypes.c_uint64, ctypes.c_char_p]),
    "sf_free": (None, [ctypes.c_void_p]),
    "sf_has_waves": (ctypes.c_int, []),
    "sf_reset": (None, [ctypes.c_void_p, ctypes.c_uint32]),
    "sf_cycles": (ctypes.c_uint64, [ctypes.c_void_p]),
    "sf_mem_errors": (ctypes.c_uint64, [ctypes.c_void_p]),
    "sf_mem": (ctypes.POINTER(ctypes.c_uint8), [ctypes.c_void_p]),
    "sf_mem_size": (ctypes.c_uint64, [ctypes.c_void_p]),
    "sf_irq": (ctypes.c_int, [ctypes.c_void_p]),
    "sf_run": (None, [ctypes.c_void_p, ctypes.c_uint64]),
    "sf_wait_irq": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_uint64]),
    "sf_axil_write": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                     ctypes.c_uint64]),
    "sf_axil_read": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64]),
    "sf_push": (None, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_uint64]),
    "sf_in_pending": (ctypes.c_uint64, [ctypes.c_void_p]),
    "sf_drain_input": (ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_uint64]),
    "sf_wait_frame": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_uint64]),
    "sf_pop_frame": (ctypes.c_uint64, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]),
}

_LIBS: dict = {}


def _load(lib_path) -> ctypes.CDLL:
    key = str(Path(lib_path).resolve())
    if key not in _LIBS:
        lib = ctypes.CDLL(key)
        for name, (res, args) in _SIGS.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _LIBS[key] = lib
    return _LIBS[key]


class FastSim:
    """One simulated accelerator with ``mem_bytes`` of card memory on its ``m_axi`` port.

    ``waves``: a VCD path (the library must be built with ``waves=True``). The design is held
    in reset for 3 cycles, then runs 2 idle cycles (as ``Driver.start`` does under cocotb)."""

    def __init__(self, lib_path, *, mem_bytes: int = 1 << 22, waves=None):
        self.lib = _load(lib_path)
        if waves and not self.lib.sf_has_waves():
            raise ValueError("waves requested from a library built without them "
                             "(build_fast(..., waves=True))")
        self.h = self.lib.sf_new(int(mem_bytes), str(waves).encode() if waves else None)
        if not self.h:
            raise RuntimeError("sf_new failed")
        self.lib.sf_reset(self.h, 3)
        self.lib.sf_run(self.h, 2)

    def close(self):
        if self.h:
            self.lib.sf_free(self.h)     # flushes and closes the VCD
            self.h = None

    def __del__(self):
        try:
            self.close()
        except Exception:                # interpreter shutdown
            pass

    # -- time
    @property
    def cycles(self) -> int:
        return int(self.lib.sf_cycles(self.h))

    def run(self, cycles: int):
        self.lib.sf_run(self.h, int(cycles))

    @property
    def irq(self) -> int:
        return int(self.lib.sf_irq(self.h))

    def wait_irq(self, *, max_cycles=MAX_WAIT_CYCLES) -> int:
        """Simulate until the core's ``irq`` is high; returns the cycles that took (0: it
        already was). :class:`SimTimeout` when it stayed low for ``max_cycles``."""
        r = self.lib.sf_wait_irq(self.h, max_cycles)
        if r < 0:
            raise SimTimeout(f"irq stayed low for {max_cycles} cycles")
        return r

    @property
    def mem_errors(self) -> int:
        """Card-memory beats outside the memory (answered DECERR) so far."""
        return int(self.lib.sf_mem_errors(self.h))

    # -- AXI4-Lite
    def axil_write(self, addr: int, value: int, *, max_cycles=MAX_WAIT_CYCLES) -> int:
        r = self.lib.sf_axil_write(self.h, addr, value & 0xFFFFFFFF, max_cycles)
        if r < 0:
            raise SimTimeout(f"AXI4-Lite write of {addr:#x} not answered in {max_cycles} cycles")
        return r

    def axil_read(self, addr: int, *, max_cycles=MAX_WAIT_CYCLES) -> int:
        r = self.lib.sf_axil_read(self.h, addr, max_cycles)
        if r < 0:
            raise SimTimeout(f"AXI4-Lite read of {addr:#x} not answered in {max_cycles} cycles")
        if r >> 32:
            raise IOError(f"AXI4-Lite read of {addr:#x}: RRESP {r >> 32}")
        return r & 0xFFFFFFFF

    # -- AXI4-Stream
    def push(self, words):
        """Queue one packet of 32-bit words (tlast on the last) for ``s_axis``."""
        words = [int(w) & 0xFFFFFFFF for w in words]
        if not words:
            return
        buf = (ctypes.c_uint32 * len(words))(*words)
        self.lib.sf_push(self.h, buf, len(words))

    def drain_input(self, *, max_cycles=MAX_WAIT_CYCLES):
        left = self.lib.sf_drain_input(self.h, max_cycles)
        if left:
            raise SimTimeout(f"s_axis took no word for {max_cycles} cycles ({left} left)")

    def recv_frame(self, *, max_cycles=MAX_WAIT_CYCLES) -> list[int]:
        """The next ``m_axis`` packet (simulating until one has arrived)."""
        n = self.lib.sf_wait_frame(self.h, max_cycles)
        if n < 0:
            raise SimTimeout(f"no m_axis packet in {max_cycles} cycles")
        buf = (ctypes.c_uint32 * max(1, n))()
        got = self.lib.sf_pop_frame(self.h, buf)
        return list(buf[:got])

    # -- card memory (host access does not take simulated time, as XDMA's does not here)
    def _view(self, addr, n):
        size = int(self.lib.sf_mem_size(self.h))
        if addr < 0 or n < 0 or addr + n > size:
            raise ValueError(f"card memory access [{addr:#x}, {addr + n:#x}) outside its "
                             f"{size} bytes")
        base = ctypes.addressof(self.lib.sf_mem(self.h).contents)
        return base + addr

    def mem_write(self, addr: int, data: bytes):
        ctypes.memmove(self._view(addr, len(data)), bytes(data), len(data))

    def mem_read(self, addr: int, n: int) -> bytes:
        return ctypes.string_at(self._view(addr, n), n)


# ---- the driver's bus objects over a FastSim -------------------------------------------------
class FastTransport(XdmaTransport):
    """The bus objects :class:`~sparseforge.sim.host.driver.Driver` uses, over a
    :class:`FastSim`: the XDMA transport's (the path to a real card) over the simulated card
    (:class:`~sparseforge.sim.host.xdma.SimXdmaDevice`), so the fast engine also exercises
    the card transport. ``ram`` is None without card memory."""

    def __init__(self, sim: FastSim, *, card_memory: bool = True):
        super().__init__(SimXdmaDevice(sim))
        self.sim = sim
        if not card_memory:
            self.ram = None
