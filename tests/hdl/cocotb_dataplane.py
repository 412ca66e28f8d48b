"""cocotb tests of the emitted ``dataplane`` block with its PE array (``with_array=True``:
:class:`DataPlaneSystem`), cocotbext-axi's ``AxiRam`` as card memory (random pauses on all
five channels).

Each scenario (built by ``scenario`` in tests/hdl/test_dataplane.py from the seed: operands in
memory, commands, the expected ``err`` codes and result) runs after a soft reset; the *whole*
RAM must then equal the expected image (the result where it belongs, every other byte
unchanged). SLVERR is injected by raising in ``AxiRam``'s read hook inside a byte window (the
fault is cleared at the next ``abort``).
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly
from cocotbext.axi import AxiBus, AxiRam

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.sim.testkit.cocotb_streams import env_params, reset
from test_dataplane import MEM_BYTES, pack_cmd, scenario


def pause_gen(rng):
    while True:
        yield rng.random() < 0.3


class Tb:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEM_BYTES)
        for ch in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                   self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                   self.ram.read_if.r_channel):
            ch.set_pause_generator(pause_gen(random.Random(self.rng.random())))
        self.bad = None
        rd = self.ram.read_if._read

        async def bad_read(address, length):
            if self.bad and self.bad[0] <= address < self.bad[1]:
                raise IOError("injected read error")
            return await rd(address, length)
        self.ram.read_if._read = bad_read
        self.errs = []

    async def monitor(self):
        d = self.dut
        while True:
            await FallingEdge(d.clk)
            await ReadOnly()
            if int(d.err.value):
                self.errs.append(int(d.err_code.value))

    async def abort(self):
        d = self.dut
        await self.wait_idle()
        self.bad = None
        await FallingEdge(d.clk)
        d.abort.value = 1
        await ClockCycles(d.clk, 2)
        await FallingEdge(d.clk)
        d.abort.value = 0

    async def wait_idle(self, budget=100_000):
        d = self.dut
        idle = 0
        for _ in range(budget):
            await FallingEdge(d.clk)
            idle = 0 if int(d.busy.value) else idle + 1
            if idle >= 8:
                return
        raise AssertionError(f"hang: busy for {budget} cycles")

    async def send(self, value, budget=100_000):
        d = self.dut
        await FallingEdge(d.clk)
        d.cmd__payload.value = value
        d.cmd__valid.value = 1
        for _ in range(budget):
            await ReadOnly()
            rdy = int(d.cmd__ready.value)
            await FallingEdge(d.clk)
            if rdy:
                d.cmd__valid.value = 0
                return
        raise AssertionError("hang: command not taken")

    async def aborter(self, after):
        d = self.dut
        while not int(d.busy.value):
            await FallingEdge(d.clk)
        await ClockCycles(d.clk, after)
        await FallingEdge(d.clk)
        d.abort.value = 1
        await ClockCycles(d.clk, 2)
        await FallingEdge(d.clk)
        d.abort.value = 0


@cocotb.test()
async def dataplane_scenarios(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    tb = Tb(dut, p["seed"])
    Clock(dut.clk, 10, unit="ns").start()
    dut.cmd__valid.value = 0
    dut.abort.value = 0
    await reset(dut)
    cocotb.start_soon(tb.monitor())
    for name in p["scenarios"]:
        sc = scenario(name, cfg, p["seed"])
        dut._log.info(f"scenario {name}: expecting errors {[hex(c) for c in sc['errs']]}")
        await tb.abort()
        tb.ram.write(0, bytes(sc["mem"]))
        tb.bad = sc.get("bad")
        tb.errs.clear()
        if sc.get("abort_at") is not None:
            cocotb.start_soon(tb.aborter(sc["abort_at"]))
        for c in sc["cmds"]:
            if c == "abort":
                await tb.abort()
            else:
                await tb.send(pack_cmd(cfg, c))
        await tb.wait_idle()
        assert tb.errs == sc["errs"], (name, [hex(c) for c in tb.errs])
        got = tb.ram.read(0, MEM_BYTES)
        want = bytes(sc["want"])
        if got != want:
            first = next(i for i in range(MEM_BYTES) if got[i] != want[i])
            raise AssertionError(f"{name}: RAM differs from the expected image at {first:#x}")
