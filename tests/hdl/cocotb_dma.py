"""cocotb tests of the emitted ``dma`` block (DmaEngine + TensorMemory) with cocotbext-axi's
``AxiRam`` as the card memory (random pause generators on all five channels).

Scoreboard: after every run the *whole* RAM and *every* buffer (read back through the compute
ports) equal a Python model; each descriptor's completion status equals the expected code.
Error injection: ``AxiRam``'s ``_read``/``_write`` raise inside a bad window, which cocotbext-axi
answers with SLVERR (DECERR is covered by the amaranth-sim tests' slave model).
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly
from cocotbext.axi import AxiBus, AxiRam

from sparseforge.sim.testkit.cocotb_streams import env_params, reset

MEM_BYTES = 1 << 16
OK, LEN_ZERO, BEYOND_BUFFER, MISALIGNED, BUS_ERROR, TIMEOUT, ABORTED, BAD_BUFFER = range(8)


def pause_gen(rng):
    while True:
        yield rng.random() < 0.3


class Tb:
    def __init__(self, dut, p):
        self.dut, self.p = dut, p
        self.dw, self.ew, self.lw = p["width"], 16, 24
        self.epw, self.bpb = self.dw // self.ew, self.dw // 8
        self.sizes = p["sizes"]
        self.aw = p["addr_width"]
        self.rng = random.Random(p["seed"])
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM_BYTES)
        if p.get("pause", True):
            for ch in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                       self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                       self.ram.read_if.r_channel):
                ch.set_pause_generator(pause_gen(random.Random(self.rng.random())))
        self.bad = None                         # (lo, hi) byte window answered with SLVERR
        rd, wr = self.ram.read_if._read, self.ram.write_if._write

        async def bad_read(address, length):
            if self.bad and self.bad[0] <= address < self.bad[1]:
                raise IOError("injected read error")
            return await rd(address, length)

        async def bad_write(address, data):
            if self.bad and self.bad[0] <= address < self.bad[1]:
                raise IOError("injected write error")
            return await wr(address, data)
        self.ram.read_if._read, self.ram.write_if._write = bad_read, bad_write

    async def init(self):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        d.desc__valid.value = 0
        d.done__ready.value = 1
        d.abort.value = 0
        for k in range(len(self.sizes)):
            getattr(d, f"compute__{k}__we").value = 0
            getattr(d, f"compute__{k}__addr").value = 0
            getattr(d, f"compute__{k}__wdata").value = 0
        await reset(self.dut)

    async def write_buf(self, k, elems):
        d = self.dut
        addr, wdata, we = (getattr(d, f"compute__{k}__{n}") for n in ("addr", "wdata", "we"))
        we.value = 1
        for w in range(len(elems) // self.epw):
            addr.value = w
            wdata.value = sum(elems[w * self.epw + j] << (j * self.ew) for j in range(self.epw))
            await FallingEdge(d.clk)
        we.value = 0

    async def read_buf(self, k):
        d = self.dut
        addr, rdata = getattr(d, f"compute__{k}__addr"), getattr(d, f"compute__{k}__rdata")
        out = []
        for w in range(self.sizes[k] // self.epw):
            addr.value = w
            await FallingEdge(d.clk)
            await ReadOnly()
            word = int(rdata.value)
            out += [(word >> (j * self.ew)) & 0xFFFF for j in range(self.epw)]
            await FallingEdge(d.clk)
        return out

    def pack(self, buf, base, length, direction, addr):
        lw = self.lw
        return buf | base << 4 | length << (4 + lw) | direction << (4 + 2 * lw) | addr << (5 + 2 * lw)

    async def run(self, desc, abort_after=None, budget=100_000):
        """Send one descriptor, wait for its completion; returns the status."""
        d = self.dut
        d.desc__payload.value = self.pack(*desc)
        d.desc__valid.value = 1
        while True:
            await ReadOnly()
            rdy = int(d.desc__ready.value)
            await FallingEdge(d.clk)
            if rdy:
                break
        d.desc__valid.value = 0
        if abort_after is not None:
            await ClockCycles(d.clk, abort_after)
            await FallingEdge(d.clk)
            d.abort.value = 1
            await ClockCycles(d.clk, 2)
            await FallingEdge(d.clk)
            d.abort.value = 0
        for _ in range(budget):
            await ReadOnly()
            if int(d.done__valid.value):
                status = int(d.done__payload.value) & 0xF
                await FallingEdge(d.clk)
                return status
            await FallingEdge(d.clk)
        raise AssertionError(f"hang: no completion for {desc} in {budget} cycles")

    def model(self, mem, bufs, desc):
        buf, base, length, direction, addr = desc
        if direction == 0:
            for i in range(length):
                bufs[buf][base + i] = mem[addr + 2 * i] | mem[addr + 2 * i + 1] << 8
        else:
            for i in range(length):
                v = bufs[buf][base + i]
                mem[addr + 2 * i], mem[addr + 2 * i + 1] = v & 0xFF, v >> 8

    def random_desc(self):
        rng, epw, bpb = self.rng, self.epw, self.bpb
        buf = rng.randrange(len(self.sizes))
        base = rng.randrange(self.sizes[buf] // epw) * epw
        length = rng.randint(1, min(self.sizes[buf] - base, 300))
        nbytes = -(-length // epw) * bpb
        if rng.random() < 0.4:
            addr = rng.randrange(1, MEM_BYTES // 4096 - 1) * 4096 - bpb * rng.randint(1, 6)
        else:
            addr = rng.randrange((MEM_BYTES - nbytes) // bpb) * bpb
        return (buf, base, length, rng.randrange(2), addr)

    async def setup_state(self):
        mem = bytearray(self.rng.randbytes(MEM_BYTES))
        self.ram.write(0, bytes(mem))
        bufs = []
        for k, s in enumerate(self.sizes):
            b = [self.rng.randrange(1 << 16) for _ in range(s)]
            await self.write_buf(k, b)
            bufs.append(b)
        return mem, bufs

    async def check(self, mem, bufs):
        got = self.ram.read(0, MEM_BYTES)
        assert got == bytes(mem), \
            f"RAM differs at {next(i for i in range(MEM_BYTES) if got[i] != mem[i]):#x}"
        for k in range(len(self.sizes)):
            b = await self.read_buf(k)
            bad = [i for i in range(len(b)) if b[i] != bufs[k][i]]
            assert not bad, f"buffer {k} differs at elements {bad[:8]}"


@cocotb.test()
async def dma_scoreboard(dut):
    p = env_params()
    tb = Tb(dut, p)
    await tb.init()
    mem, bufs = await tb.setup_state()
    for _ in range(p["count"]):
        desc = tb.random_desc()
        status = await tb.run(desc)
        assert status == OK, (desc, status)
        tb.model(mem, bufs, desc)
    await tb.check(mem, bufs)


@cocotb.test()
async def dma_errors(dut):
    """Each error code; after each, memory and buffers equal the model (no change outside the
    transferred bursts) and the engine serves the next descriptor."""
    p = env_params()
    tb = Tb(dut, p)
    await tb.init()
    mem, bufs = await tb.setup_state()
    epw, bpb = tb.epw, tb.bpb
    good = (1, 0, 40, 0, 0x2000)
    cases = [
        ((0, 0, 0, 1, 0x100), LEN_ZERO),
        ((2, tb.sizes[2] - epw, epw + 1, 0, 0x100), BEYOND_BUFFER),
        ((0, 0, 8, 1, 0x100 + bpb // 2), MISALIGNED),
        ((0, 1, 8, 0, 0x100), MISALIGNED),
        ((9, 0, 8, 0, 0x100), BAD_BUFFER),
    ]
    for desc, code in cases:
        dut._log.info(f"case {desc} -> {code}")
        assert await tb.run(desc) == code
        assert await tb.run(good) == OK
        tb.model(mem, bufs, good)
    # SLVERR in the second burst (16 beats each): the first burst lands, the second does not,
    # then BUS_ERROR. The third burst may already be raised (run-ahead): a load drops its
    # beats, a store writes a prefix of it (wstrb = 0 from the beat after the error).
    for direction in (0, 1):
        addr = 0x4000
        tb.bad = (addr + 16 * bpb, addr + 32 * bpb)
        desc = (1, 0, 48 * epw, direction, addr)
        full_mem = bytearray(mem)
        tb.model(full_mem, [list(b) for b in bufs], desc)
        assert await tb.run(desc) == BUS_ERROR
        tb.bad = None
        tb.model(mem, bufs, (1, 0, 16 * epw, direction, addr))
        if direction == 1:
            lo, hi = addr + 32 * bpb, addr + 48 * bpb
            got = tb.ram.read(lo, hi - lo)
            moved = [i for i in range(hi - lo) if got[i] != mem[lo + i]]
            for i in moved:
                assert got[i] == full_mem[lo + i], f"RAM byte {lo + i:#x} neither old nor new"
            # a prefix: nothing left unwritten (and different) before the last written byte
            if moved:
                assert all(got[i] == full_mem[lo + i] for i in range(moved[-1] + 1)), \
                    "third burst: not a prefix"
            mem[lo:hi] = got
        await tb.check(mem, bufs)
        assert await tb.run(good) == OK
        tb.model(mem, bufs, good)
    # Abort (soft reset) during a long store and load: ABORTED; whole bursts only, then idle.
    for direction in (1, 0):
        desc = (0, 0, 64 * epw, direction, 0x6000)
        before_mem, before_bufs = bytearray(mem), [list(b) for b in bufs]
        after_mem, after_bufs = bytearray(mem), [list(b) for b in bufs]
        tb.model(after_mem, after_bufs, desc)
        assert await tb.run(desc, abort_after=20) == ABORTED
        got = tb.ram.read(0, MEM_BYTES)
        for i in range(MEM_BYTES):
            assert got[i] in (before_mem[i], after_mem[i]), f"RAM byte {i:#x} neither old nor new"
        mem[:] = got
        b0 = await tb.read_buf(0)
        for i, v in enumerate(b0):
            assert v in (before_bufs[0][i], after_bufs[0][i]), f"buffer element {i}"
        bufs[0] = b0
        assert await tb.run(good) == OK
        tb.model(mem, bufs, good)
    await tb.check(mem, bufs)
