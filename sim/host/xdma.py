"""The driver's transport to a real VCU1525 card through the Xilinx XDMA Linux driver
(``dma_ip_drivers/XDMA/linux-kernel``), and the device model the tests run it against.

The block design (``boards/vivado_bd``, ``docs/fpga.md``) puts XDMA in AXI-Stream mode with
the accelerator's registers on the AXI4-Lite user BAR and the card memory (DDR4) on the
DMA-bypass BAR. The XDMA driver exposes them as character devices; :class:`XdmaDevice` opens
them (``N`` = the card index, ``/dev`` by default):

==================================  ===========================================================
``/dev/xdmaN_user``                 AXI4-Lite BAR, ``mmap``-ed: the register map (32-bit words)
``/dev/xdmaN_h2c_0``                host-to-card stream: one ``write`` = one packet (``tlast``
                                    on its last beat) into ``s_axis``
``/dev/xdmaN_c2h_0``                card-to-host stream: one ``read`` returns one ``m_axis``
                                    packet (up to ``tlast``)
``/dev/xdmaN_bypass``               DMA-bypass BAR, ``mmap``-ed: the card memory the data
                                    plane's ``m_axi`` reads and writes (tensors go here)
``/dev/xdmaN_events_0``             user interrupt 0 (the core's ``irq``): a ``read`` of 4 bytes
                                    blocks until the interrupt fires (:meth:`wait_irq`)
==================================  ===========================================================

:class:`XdmaTransport` gives :class:`~sparseforge.sim.host.driver.Driver` the bus objects it
uses (``axil``, ``src``, ``sink``, ``ram``) over any object with the device calls of
:class:`XdmaDevice` (``reg_read``, ``reg_write``, ``h2c_write``, ``c2h_read``, ``mem_read``,
``mem_write``): ``Driver(None, cfg, transport=XdmaTransport(XdmaDevice(0)))``. A thread
reads the C2H stream continuously into a queue, so output packets are taken while the host is
still writing input (the card never back-pressures its output onto its input).
:class:`SimXdmaDevice` is the same device calls over the fast simulation
(:class:`sparseforge.sim.fastsim.sim.FastSim`): the transport's tests run the driver through
it. ``now_cycles`` on a card is the host's clock times the core clock (an estimate: the
accelerator's own counters, CYCLES / JOB_CYCLES, are exact).
"""

from __future__ import annotations

import mmap
import os
import queue
import select
import struct
import threading
import time
from pathlib import Path

__all__ = ["XdmaDevice", "XdmaTransport", "SimXdmaDevice", "device_paths", "C2H_MAX_BYTES"]

#: Largest C2H packet the reader takes in one ``read`` (bytes).
C2H_MAX_BYTES = 1 << 20


def device_paths(index: int = 0, root="/dev") -> dict:
    """The character devices of card ``index``."""
    root = Path(root)
    return {k: root / f"xdma{index}_{k}" for k in ("user", "h2c_0", "c2h_0", "bypass",
                                                     "events_0")}


class _Bar:
    """A memory-mapped BAR (or a file standing in for one)."""

    def __init__(self, path, size: int):
        self.fd = os.open(path, os.O_RDWR | os.O_SYNC)
        try:
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except Exception:
            os.close(self.fd)
            raise
        self.size = size

    def check(self, off, n, what):
        if off < 0 or n < 0 or off + n > self.size:
            raise ValueError(f"{what} access [{off:#x}, {off + n:#x}) outside its {self.size} "
                             f"bytes")

    def close(self):
        self.mm.close()
        os.close(self.fd)


class XdmaDevice:
    """Card ``index``'s XDMA character devices (module docstring). ``user_bytes``: the
    register BAR's mapped size; ``card_bytes``: the card memory mapped through the bypass BAR
    (the block design maps 16 GiB; map what the tensors need)."""

    def __init__(self, index: int = 0, *, root="/dev", user_bytes: int = 4096,
                 card_bytes: int = 1 << 22):
        p = device_paths(index, root)
        missing = [str(v) for k, v in p.items() if k != "events_0" and not Path(v).exists()]
        if missing:
            raise FileNotFoundError(f"XDMA device(s) missing: {', '.join(missing)} (is the "
                                    f"xdma driver loaded and the card's bitstream "
                                    f"programmed?)")
        self.paths = p
        self.user = _Bar(p["user"], user_bytes)
        self.bypass = _Bar(p["bypass"], card_bytes)
        self.h2c = os.open(p["h2c_0"], os.O_WRONLY)
        self.c2h = os.open(p["c2h_0"], os.O_RDONLY)
        self.events = os.open(p["events_0"], os.O_RDONLY) if Path(p["events_0"]).exists() \
            else None

    # registers
    def reg_read(self, off: int) -> int:
        self.user.check(off, 4, "register")
        return struct.unpack_from("<I", self.user.mm, off)[0]

    def reg_write(self, off: int, value: int):
        self.user.check(off, 4, "register")
        struct.pack_into("<I", self.user.mm, off, value & 0xFFFFFFFF)

    # streams
    def h2c_write(self, data: bytes):
        view = memoryview(bytes(data))
        while view:
            n = os.write(self.h2c, view)
            if n <= 0:
                raise OSError(f"H2C write returned {n}")
            view = view[n:]

    def c2h_read(self, max_bytes: int = C2H_MAX_BYTES) -> bytes:
        """One packet (b"" at end of file: a stand-in file, not a card)."""
        return os.read(self.c2h, max_bytes)

    # card memory
    def mem_read(self, addr: int, n: int) -> bytes:
        self.bypass.check(addr, n, "card memory")
        return bytes(self.bypass.mm[addr:addr + n])

    def mem_write(self, addr: int, data: bytes):
        self.bypass.check(addr, len(data), "card memory")
        self.bypass.mm[addr:addr + len(data)] = bytes(data)

    # interrupt
    def wait_irq(self, timeout_s: float | None = None) -> int:
        """Block until user interrupt 0 (at most ``timeout_s`` seconds, None: no limit);
        returns the driver's event count. ``TimeoutError`` when it did not fire in time."""
        if self.events is None:
            raise FileNotFoundError(f"{self.paths['events_0']} missing")
        if timeout_s is not None:
            ready, _, _ = select.select([self.events], [], [], timeout_s)
            if not ready:
                raise TimeoutError(f"user interrupt 0 did not fire in {timeout_s} s")
        return struct.unpack("<I", os.read(self.events, 4))[0]

    def close(self):
        for bar in (self.user, self.bypass):
            bar.close()
        for fd in (self.h2c, self.c2h, self.events):
            if fd is not None:
                os.close(fd)


class SimXdmaDevice:
    """The device calls of :class:`XdmaDevice` over the fast simulation: registers through
    its AXI4-Lite master, H2C/C2H through its stream models, the card memory directly. The
    test double of a card (``tests/sim/test_xdma.py``, ``tests/sim/test_fastsim.py``).
    Not thread-safe (one simulation): the transport reads C2H in the caller."""

    thread_safe = False

    def __init__(self, sim):
        self.sim = sim

    def reg_read(self, off):
        return self.sim.axil_read(off)

    def reg_write(self, off, value):
        self.sim.axil_write(off, value)

    def h2c_write(self, data):
        words = [int.from_bytes(data[k:k + 4], "little") for k in range(0, len(data), 4)]
        self.sim.push(words)
        self.sim.drain_input()

    def c2h_read(self, max_bytes=C2H_MAX_BYTES):
        words = self.sim.recv_frame()
        return b"".join(w.to_bytes(4, "little") for w in words)[:max_bytes]

    def mem_read(self, addr, n):
        return self.sim.mem_read(addr, n)

    def wait_irq(self, timeout_s=None):
        """Simulate until the core's ``irq`` is high (bounded in cycles, not seconds:
        :class:`~sparseforge.sim.fastsim.sim.SimTimeout`); returns the cycles it took."""
        return self.sim.wait_irq()

    def mem_write(self, addr, data):
        self.sim.mem_write(addr, data)


# ---- the driver's bus objects ---------------------------------------------------------------
class _Axil:
    def __init__(self, dev):
        self.dev = dev

    async def read_dword(self, addr):
        return self.dev.reg_read(addr)

    async def write_dword(self, addr, value):
        self.dev.reg_write(addr, value)


class _Source:
    def __init__(self, dev):
        self.dev = dev

    async def send(self, data: bytes):
        self.dev.h2c_write(data)

    async def wait(self):
        pass                                 # h2c_write returns when the card took it


class _Frame:
    def __init__(self, data):
        self.tdata = data


class _Sink:
    """C2H packets, read by a thread (started on the first use) into a queue."""

    def __init__(self, dev, timeout_s):
        self.dev, self.timeout_s = dev, timeout_s
        self.q: queue.Queue = queue.Queue()
        self.thread = None
        self.error = None

    def _reader(self):
        try:
            while True:
                data = self.dev.c2h_read()
                if not data:                 # end of a stand-in file
                    break
                self.q.put(data)
        except Exception as exc:             # reported by the next recv
            self.error = exc

    def start(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self._reader, name="c2h", daemon=True)
            self.thread.start()

    async def recv(self):
        if getattr(self.dev, "thread_safe", True):
            self.start()
        if not getattr(self.dev, "thread_safe", True):
            # a simulated card simulates in the caller's thread
            return _Frame(self.dev.c2h_read())
        try:
            return _Frame(self.q.get(timeout=self.timeout_s))
        except queue.Empty:
            raise TimeoutError(f"no C2H packet in {self.timeout_s} s"
                               + (f" (reader: {self.error})" if self.error else "")) from None


class _Ram:
    def __init__(self, dev):
        self.dev = dev

    def write(self, addr, data):
        self.dev.mem_write(addr, data)

    def read(self, addr, n):
        return self.dev.mem_read(addr, n)


class _Deferred:
    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()


class XdmaTransport:
    """The driver's bus objects over an XDMA device (module docstring). ``clock_hz``: the
    core clock, for :meth:`now_cycles` on a card; ``recv_timeout_s``: how long a receive waits
    for a C2H packet."""

    def __init__(self, dev, *, clock_hz: float = 250e6, recv_timeout_s: float = 10.0):
        self.dev = dev
        self.axil = _Axil(dev)
        self.src = _Source(dev)
        self.sink = _Sink(dev, recv_timeout_s)
        self.ram = _Ram(dev)
        self.clock_hz = clock_hz
        if getattr(dev, "thread_safe", True):
            self.sink.start()                # take output while input is being written

    def spawn(self, coro):
        return _Deferred(coro)

    @property
    def has_irq(self) -> bool:
        """Whether :meth:`wait_irq` can wait for the core's interrupt (a card with its
        events device, or the simulated card)."""
        return hasattr(self.dev, "wait_irq") and getattr(self.dev, "events", True) is not None

    async def wait_irq(self, timeout_s: float = 10.0):
        """Wait for user interrupt 0 (the core's ``irq``: ``CTRL.irq_enable`` and an
        ``IRQ_STATUS`` bit). ``TimeoutError`` (or the simulation's ``SimTimeout``) when it
        does not come."""
        return self.dev.wait_irq(timeout_s)

    def now_cycles(self) -> int:
        sim = getattr(self.dev, "sim", None)
        if sim is not None:
            return sim.cycles
        return int(time.perf_counter() * self.clock_hz)
