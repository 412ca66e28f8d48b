"""cocotb tests of the emitted ``axil`` register file, driven by cocotbext-axi's AxiLiteMaster,
with :class:`~sparseforge.sim.testkit.axil_model.AxilRegModel` as the scoreboard."""

import itertools
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from sparseforge.hdl.axil import COUNTERS, REGS
from sparseforge.sim.testkit.axil_model import AxilRegModel
from sparseforge.sim.testkit.cocotb_streams import env_params

_SCHED_RNG = random.Random(0x5C4ED)

UNMAPPED = (0x038, 0x03C, 0x068, 0x06C, 0x070, 0x100, 0x400, 0xFFC)


def _pauses(rng, p):
    """Per-cycle pause pattern: paused with probability ``p`` (independent coin flips)."""
    return (rng.random() < p for _ in itertools.count())


class Bench:
    def __init__(self, dut, p):
        self.dut = dut
        self.p = p
        self.model = AxilRegModel(version=p["version"], config=p["config"],
                                  counter_width=p["counter_width"], addr_width=p["addr_width"])
        self.axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.pulses = {"start": 0, "soft_reset": 0}
        self.order = {"aw_first": 0, "w_first": 0, "same_cycle": 0}
        for name in ("busy", "done_pulse", "error_pulse", "error_code", "sched_status", "prune_tau",
                     *COUNTERS):
            getattr(dut, name).value = 0

    @classmethod
    async def started(cls, dut, what=""):
        """A bench out of reset, with the seeded ``random.Random`` of ``SF_PARAMS``; the seed
        is logged (with ``what``)."""
        p = env_params()
        dut._log.info(f"seed={p['seed']}{what and ' ' + what.format(**p)}")
        b = cls(dut, p)
        await b.start()
        return b, p, random.Random(p["seed"])

    async def start(self):
        Clock(self.dut.clk, 10, unit="ns").start()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Count start/soft_reset pulses (each lasts one cycle) and the AW/W handshake order."""
        d = self.dut
        aw_seen = w_seen = 0
        while True:
            await FallingEdge(d.clk)
            self.pulses["start"] += int(d.start.value)
            self.pulses["soft_reset"] += int(d.soft_reset.value)
            await RisingEdge(d.clk)
            await ReadOnly()
            if int(d.rst.value):
                aw_seen = w_seen = 0
                continue
            aw = int(d.s_axil_awvalid.value) and int(d.s_axil_awready.value)
            w = int(d.s_axil_wvalid.value) and int(d.s_axil_wready.value)
            # (The sampled values are those that the *next* edge acts on; order is what counts.)
            if aw and w and not aw_seen and not w_seen:
                self.order["same_cycle"] += 1
            elif aw and not aw_seen and w_seen:
                self.order["w_first"] += 1
                w_seen = 0
                continue
            elif w and not w_seen and aw_seen:
                self.order["aw_first"] += 1
                aw_seen = 0
                continue
            else:
                aw_seen |= aw
                w_seen |= w

    def set_pauses(self, rng, p_src=0.3, p_sink=0.4):
        self.axi.write_if.aw_channel.set_pause_generator(_pauses(rng, p_src))
        self.axi.write_if.w_channel.set_pause_generator(_pauses(rng, p_src))
        self.axi.write_if.b_channel.set_pause_generator(_pauses(rng, p_sink))
        self.axi.read_if.ar_channel.set_pause_generator(_pauses(rng, p_src))
        self.axi.read_if.r_channel.set_pause_generator(_pauses(rng, p_sink))

    async def core_event(self, rng):
        d = self.dut
        await FallingEdge(d.clk)
        done, error, code = rng.random() < 0.5, rng.random() < 0.3, rng.randrange(256)
        d.done_pulse.value = int(done)
        d.error_pulse.value = int(error)
        d.error_code.value = code
        await FallingEdge(d.clk)
        d.done_pulse.value = 0
        d.error_pulse.value = 0
        self.model.event(done=done, error=error, code=code)

    def set_inputs(self, rng):
        self.model.busy = rng.randrange(2)
        self.dut.busy.value = self.model.busy
        # its own generator: the main sequence (and its coverage) stays as it was
        self.model.sched_status = _SCHED_RNG.getrandbits(32)
        self.dut.sched_status.value = self.model.sched_status
        self.model.prune_tau = _SCHED_RNG.getrandbits(32)
        self.dut.prune_tau.value = self.model.prune_tau
        for name in COUNTERS:
            v = rng.getrandbits(self.p["counter_width"])
            self.model.counters[name] = v
            getattr(self.dut, name).value = v

    async def write(self, addr, data, strb=0xF):
        """Write through the master; strobes other than 0xF become a narrow (1-3 byte) write at
        the matching byte address, which the master turns into those WSTRB lanes."""
        if strb == 0xF:
            payload = data.to_bytes(4, "little")
            resp = await self.axi.write(addr, payload)
        else:
            lanes = [i for i in range(4) if strb >> i & 1]
            lo, hi = lanes[0], lanes[-1]
            strb = ((1 << (hi - lo + 1)) - 1) << lo     # the master sends contiguous lanes only
            payload = data.to_bytes(4, "little")[lo:hi + 1]
            resp = await self.axi.write(addr + lo, payload)
        return int(resp.resp), strb

    async def read(self, addr):
        resp = await self.axi.read(addr, 4)
        return int.from_bytes(resp.data, "little"), int(resp.resp)

    async def random_ops(self, rng, n, addrs):
        m = self.model
        for k in range(n):
            if rng.random() < 0.08:
                await self.core_event(rng)
            if rng.random() < 0.08:
                self.set_inputs(rng)
            addr = rng.choice(addrs)
            kind = rng.random()
            if kind < 0.15:
                # A write and a read in flight together on the independent channels; the read
                # targets a register the write cannot change, so the sequential model holds.
                waddr = rng.choice([REGS["SCHED_LEN"], REGS["SCHED_BASE"], *UNMAPPED[:3],
                                    REGS["ID"]])
                raddr = rng.choice([REGS["ID"], REGS["VERSION"], REGS["CONFIG0"], REGS["CONFIG5"],
                                    *UNMAPPED[3:]])
                data = rng.getrandbits(32)
                wt = cocotb.start_soon(self.axi.write(waddr, data.to_bytes(4, "little")))
                rt = cocotb.start_soon(self.axi.read(raddr, 4))
                wr, rd = await wt, await rt
                assert int(wr.resp) == m.write(waddr, data), f"op {k}: write {waddr:#x} bresp {wr.resp}"
                got = (int.from_bytes(rd.data, "little"), int(rd.resp))
                assert got == m.read(raddr), f"op {k}: read {raddr:#x} {got} != {m.read(raddr)}"
            elif kind < 0.55:
                data = rng.getrandbits(32)
                if addr == REGS["CTRL"] and rng.random() < 0.6:
                    data &= ~0x2                    # soft resets rarer than starts
                strb = 0xF if rng.random() < 0.6 else rng.randrange(1, 16)
                bresp, strb = await self.write(addr, data, strb)
                exp = m.write(addr, data, strb)
                assert bresp == exp, f"op {k}: write {addr:#x} data {data:#x} strb {strb:#x}: " \
                                     f"bresp {bresp}, model {exp}"
            else:
                got = await self.read(addr)
                exp = m.read(addr)
                assert got == exp, f"op {k}: read {addr:#x}: {got[0]:#x}/{got[1]}, " \
                                   f"model {exp[0]:#x}/{exp[1]}"
            await FallingEdge(self.dut.clk)
            assert int(self.dut.irq.value) == m.irq, f"op {k}: irq {int(self.dut.irq.value)} != {m.irq}"
            assert int(self.dut.sched_len.value) == m.sched_len
            assert int(self.dut.sched_base.value) == m.sched_base

    async def check_all_registers(self, where):
        for name, off in REGS.items():
            got = await self.read(off)
            exp = self.model.read(off)
            assert got == exp, f"{where}: {name} reads {got}, model {exp}"


@cocotb.test()
async def axil_random_scoreboard(dut):
    b, p, rng = await Bench.started(dut, "ops={ops}")
    await b.check_all_registers("after reset")
    b.set_pauses(rng)
    addrs = list(REGS.values()) * 2 + list(UNMAPPED)
    half = p["ops"] // 2
    await b.random_ops(rng, half, addrs)
    # one soft reset (CTRL bit 1) for certain, mid-sequence, between the random ones
    data = rng.getrandbits(32) | 0x2
    bresp, strb = await b.write(REGS["CTRL"], data, 0xF)
    assert bresp == b.model.write(REGS["CTRL"], data, strb)
    await b.random_ops(rng, p["ops"] - half, addrs)
    await b.check_all_registers("at the end")
    assert b.pulses == {"start": b.model.starts, "soft_reset": b.model.soft_resets}, \
        f"pulses {b.pulses}, model starts={b.model.starts} soft_resets={b.model.soft_resets}"
    dut._log.info(f"AW/W order coverage: {b.order}; pulses {b.pulses}")
    assert all(v > 0 for v in b.order.values()), f"AW/W orders not all covered: {b.order}"
    assert b.pulses["start"] > 0 and b.pulses["soft_reset"] > 0, f"pulses not covered: {b.pulses}"


@cocotb.test()
async def axil_reset_mid_transaction(dut):
    """Reset while writes/reads are in flight (every phase: AW/W held, B or R pending), then
    the register file is at its reset values and works."""
    b, p, rng = await Bench.started(dut)
    b.set_pauses(rng)
    addrs = list(REGS.values()) + list(UNMAPPED)
    for delay in range(9):
        await b.random_ops(rng, 5, addrs)
        for k in range(3):
            b.axi.init_write(REGS["SCHED_LEN"], (0x1000 + k).to_bytes(4, "little"))
            b.axi.init_write(REGS["SCHED_BASE"], (0x2000 + k).to_bytes(4, "little"))
            b.axi.init_read(REGS["CONFIG1"], 4)
        await ClockCycles(dut.clk, delay)
        await FallingEdge(dut.clk)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        b.model.reset()
        assert int(dut.s_axil_bvalid.value) == 0 and int(dut.s_axil_rvalid.value) == 0
        await b.check_all_registers(f"after reset at delay {delay}")
        await b.random_ops(rng, p["ops"] // 10, addrs)
    assert b.pulses == {"start": b.model.starts, "soft_reset": b.model.soft_resets}


@cocotb.test()
async def axil_counter_atomic(dut):
    """Counters move every cycle across a 2**32 boundary; LO-then-HI reads (with R back-pressure)
    return one consistent 64-bit value between the times before and after the pair."""
    p = env_params()
    rng = random.Random(p["seed"] + 1)
    b = Bench(dut, p)
    await b.start()
    b.set_pauses(rng, 0.3, 0.6)
    bases = {name: (k + 1) * (1 << 32) - 200 - 50 * k for k, name in enumerate(COUNTERS)}
    now = {"t": 0}

    async def drive():
        while True:
            await FallingEdge(dut.clk)
            now["t"] += 1
            for name in COUNTERS:
                getattr(dut, name).value = bases[name] + now["t"]

    cocotb.start_soon(drive())
    wrapped = 0
    for _ in range(30):
        for name in COUNTERS:
            t0 = now["t"]
            lo, r1 = await b.read(REGS[f"{name.upper()}_LO"])
            hi, r2 = await b.read(REGS[f"{name.upper()}_HI"])
            t1 = now["t"]
            value = hi << 32 | lo
            assert r1 == r2 == 0
            assert bases[name] + t0 <= value <= bases[name] + t1, \
                f"{name}: {value:#x} not in [{bases[name] + t0:#x}, {bases[name] + t1:#x}]"
            wrapped += value >> 32 != (bases[name] >> 32)
    assert wrapped > 0, "no read crossed the 2**32 boundary"
