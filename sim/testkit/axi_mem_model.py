"""A Python AXI4 slave memory for amaranth-sim testbenches of AXI4 masters (``m_axi_*`` ports).

:class:`AxiMemModel` serves INCR bursts from a ``bytearray`` with random ready/valid gaps (a
named pattern from :mod:`sim.testkit.patterns` per channel, fixed seeds), and checks the master:
bursts INCR, full width, at most ``max_burst`` beats, never crossing 4 KiB, ``wlast`` on the
last beat only, every valid held (with its payload) until ready. Error injection:
``r_err`` / ``b_err`` map a burst's start address to a response code (2 SLVERR, 3 DECERR);
a burst with a B error writes nothing. ``hang`` ("ar", "aw", "r", "w", "b") makes that channel
never answer (timeout tests).

Counters for the scoreboard: ``ar_bursts``, ``aw_bursts``, ``r_beats``, ``w_beats``,
``b_resps`` and ``r_beats_issued`` (beats the slave owes), so a test can check that every burst
was finished.

Latency (deterministic, independent of the order in which the simulator wakes the channel
processes at an edge): every answer comes at the earliest one cycle after the handshake that
caused it -- the first R beat of a burst one cycle after its AR handshake is seen (``rvalid``
from the cycle after the AR edge), ``wready`` from the cycle after the AW edge, ``bvalid`` from
the cycle after the last W edge. Bursts queue (any number outstanding) and are answered in
order, back to back. With ``pattern="always"`` the DMA engine (run-ahead) thus takes
``B + 5`` cycles for a load of ``B`` beats and ``B + 7`` for a store, whatever the bursts
(``DMA_READ_LATENCY`` = 1 / ``DMA_WRITE_LATENCY`` = 2 of :mod:`sparseforge.sim.perf.model`).
"""

from __future__ import annotations

from collections import deque

from sparseforge.sim.testkit.patterns import make_pattern

__all__ = ["AxiMemModel"]


class AxiMemModel:
    def __init__(self, dut, mem: bytearray, *, data_width: int, max_burst: int, seed: int = 0,
                 pattern: str = "random", r_err=None, b_err=None, hang=()):
        self.dut, self.mem, self.dw = dut, mem, data_width
        self.bpb = data_width // 8
        self.max_burst = max_burst
        self.seed, self.pattern = seed, pattern
        self.r_err, self.b_err = dict(r_err or {}), dict(b_err or {})
        self.hang = set(hang)
        self.rq: deque = deque()
        self.wq: deque = deque()
        self.bq: deque = deque()
        self.ar_bursts = self.aw_bursts = self.r_beats = self.w_beats = self.b_resps = 0
        self.r_owed = self.w_owed = 0
        self.errors: list[str] = []

    def _pat(self, k):
        return make_pattern(self.pattern, self.seed * 16 + k)

    def _check_burst(self, kind, addr, alen, size, burst):
        n = alen + 1
        if burst != 1 or size != (self.bpb - 1).bit_length():
            self.errors.append(f"{kind}: burst {burst} size {size}")
        if n > self.max_burst:
            self.errors.append(f"{kind}: {n} beats > max_burst {self.max_burst}")
        if addr % self.bpb:
            self.errors.append(f"{kind}: address {addr:#x} not beat-aligned")
        if (addr & ~0xFFF) != ((addr + n * self.bpb - 1) & ~0xFFF):
            self.errors.append(f"{kind}: burst {addr:#x}+{n} beats crosses 4 KiB")

    def processes(self):
        return [self.ar_chan, self.r_chan, self.aw_chan, self.w_chan, self.b_chan]

    async def _addr_chan(self, ctx, pre, q, k, kind):
        d = self.dut
        valid, ready = getattr(d, f"m_axi_{pre}valid"), getattr(d, f"m_axi_{pre}ready")
        sigs = [getattr(d, f"m_axi_{pre}{f}") for f in ("addr", "len", "size", "burst")]
        pat = self._pat(k)
        held = None
        t = 0                                   # edges seen by this process
        while True:
            rdy = next(pat) and kind not in self.hang
            ctx.set(ready, rdy)
            _, _, v, *vals = await ctx.tick().sample(valid, *sigs)
            t += 1
            vals = tuple(int(x) for x in vals)
            if held is not None and (not v or vals != held):
                self.errors.append(f"{pre}: valid/payload changed before ready {held} -> {v} {vals}")
            held = None
            if v and rdy:
                self._check_burst(pre, *vals)
                q.append((vals[0], vals[1] + 1, t))
                if pre == "ar":
                    self.ar_bursts += 1
                    self.r_owed += vals[1] + 1
                else:
                    self.aw_bursts += 1
                    self.w_owed += vals[1] + 1
            elif v:
                held = vals

    async def ar_chan(self, ctx):
        await self._addr_chan(ctx, "ar", self.rq, 0, "ar")

    async def aw_chan(self, ctx):
        await self._addr_chan(ctx, "aw", self.wq, 1, "aw")

    async def r_chan(self, ctx):
        d, pat = self.dut, self._pat(2)
        t = 0
        while True:
            # a burst whose AR handshake happened at this very edge waits one cycle
            if not self.rq or self.rq[0][2] >= t or "r" in self.hang:
                ctx.set(d.m_axi_rvalid, 0)
                await ctx.tick()
                t += 1
                continue
            addr, n, _ = self.rq.popleft()
            resp = self.r_err.get(addr, 0)
            for i in range(n):
                while not next(pat):
                    ctx.set(d.m_axi_rvalid, 0)
                    await ctx.tick()
                    t += 1
                a = addr + i * self.bpb
                ctx.set(d.m_axi_rdata, int.from_bytes(self.mem[a:a + self.bpb], "little"))
                ctx.set(d.m_axi_rresp, resp)
                ctx.set(d.m_axi_rlast, i == n - 1)
                ctx.set(d.m_axi_rvalid, 1)
                while True:
                    _, _, rdy = await ctx.tick().sample(d.m_axi_rready)
                    t += 1
                    if rdy:
                        break
                self.r_beats += 1
                self.r_owed -= 1
                ctx.set(d.m_axi_rvalid, 0)

    async def w_chan(self, ctx):
        d, pat = self.dut, self._pat(3)
        held = None
        cur = None          # (addr, beats, beat index, buffered writes)
        t = 0
        while True:
            # ready for a burst from the cycle after its AW edge
            rdy = (bool(cur or (self.wq and self.wq[0][2] < t)) and next(pat)
                   and "w" not in self.hang)
            ctx.set(d.m_axi_wready, rdy)
            _, _, v, data, strb, last = await ctx.tick().sample(
                d.m_axi_wvalid, d.m_axi_wdata, d.m_axi_wstrb, d.m_axi_wlast)
            t += 1
            vals = (int(data), int(strb), int(last))
            if held is not None and (not v or vals != held):
                self.errors.append(f"w: valid/payload changed before ready {held} -> {v} {vals}")
            held = None
            if v and rdy:
                if cur is None:
                    addr, n, _ = self.wq.popleft()
                    cur = [addr, n, 0, []]
                addr, n, i, writes = cur
                if bool(vals[2]) != (i == n - 1):
                    self.errors.append(f"w: wlast {vals[2]} on beat {i} of {n}")
                a = addr + i * self.bpb
                for b in range(self.bpb):
                    if (vals[1] >> b) & 1:
                        writes.append((a + b, (vals[0] >> (8 * b)) & 0xFF))
                cur[2] += 1
                self.w_beats += 1
                self.w_owed -= 1
                if cur[2] == n:
                    resp = self.b_err.get(addr, 0)
                    if resp == 0:
                        for a, byte in writes:
                            self.mem[a] = byte
                    self.bq.append((resp, t))
                    cur = None
            elif v:
                held = vals

    async def b_chan(self, ctx):
        d, pat = self.dut, self._pat(4)
        t = 0
        while True:
            # a response whose last W beat was taken at this very edge waits one cycle
            if not self.bq or self.bq[0][1] >= t or "b" in self.hang:
                ctx.set(d.m_axi_bvalid, 0)
                await ctx.tick()
                t += 1
                continue
            while not next(pat):
                ctx.set(d.m_axi_bvalid, 0)
                await ctx.tick()
                t += 1
            ctx.set(d.m_axi_bresp, self.bq[0][0])
            ctx.set(d.m_axi_bvalid, 1)
            while True:
                _, _, rdy = await ctx.tick().sample(d.m_axi_bready)
                t += 1
                if rdy:
                    break
            self.bq.popleft()
            self.b_resps += 1
            ctx.set(d.m_axi_bvalid, 0)
