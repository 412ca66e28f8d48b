"""cocotb: bad input to the accelerator's on-chip data plane (``hdl/dataplane.py``) never hangs
and never writes outside the addressed range; each case raises STATUS.error with its documented
ERROR_CODE (``docs/register-map.md``: ``0x30 | DmaErr``, ``0x40 | JobErr``), and after a soft
reset the next phase is exact again. Then the command table: a phase replayed from it equals
the golden model, and a call it cannot run (past the written entries, an unknown op) is
refused with ``0x51`` / ``0x53``.

Card memory: cocotbext-axi ``AxiRam`` (random pauses on all five channels); a bus error is
injected by making its read/write callbacks raise inside a byte window (cocotbext-axi answers
SLVERR). Scoreboard per case: ERROR_CODE, STATUS.error, the card memory outside the store's
range unchanged (a guard pattern around every result), and a good FP phase afterwards equal
to the golden model.
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.hdl import dataplane as dpm
from sparseforge.hdl.axil import CTRL_SOFT_RESET, STATUS_DONE, STATUS_ERROR
from sparseforge.hdl.dma import DIR_LOAD, DIR_STORE, DmaErr
from sparseforge.sim.host.driver import Driver, pack_mask
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import env_params

GUARD = 0x5A


def _pauses(rng):
    while True:
        yield rng.random() < 0.25


class Tb:
    def __init__(self, drv, cfg, seed):
        self.drv, self.cfg = drv, cfg
        self.rng = np.random.default_rng(seed)
        r = random.Random(seed)
        ram = drv.ram
        for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                   ram.read_if.ar_channel, ram.read_if.r_channel):
            ch.set_pause_generator(_pauses(random.Random(r.random())))
        self.bad = None                 # (lo, hi): byte window answered with SLVERR
        rd, wr = ram.read_if._read, ram.write_if._write

        async def bad_read(address, length):
            if self.bad and self.bad[0] <= address < self.bad[1]:
                raise IOError("injected read error")
            return await rd(address, length)

        async def bad_write(address, data):
            if self.bad and self.bad[0] <= address < self.bad[1]:
                raise IOError("injected write error")
            return await wr(address, data)
        ram.read_if._read, ram.write_if._write = bad_read, bad_write

    def layer(self, cin=2, cout=2, hw=5):
        lim = 1 << (self.cfg.data_width - 4)
        x = self.rng.integers(-lim, lim, (1, cin, hw, hw))
        w = self.rng.integers(-lim, lim, (cout, cin, 3, 3))
        return x, w

    async def run(self, cmds):
        """Send ``cmds`` as one dp packet + END; STATUS once done or error."""
        drv = self.drv
        await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
        await drv.send([drv.codec.dp_packet(cmds), drv.codec.end_packet()])
        st = await drv.wait_done()
        await ClockCycles(drv.dut.clk, 20)         # anything still in flight would show now
        return await drv.read("STATUS"), await drv.read("ERROR_CODE")

    async def soft_reset(self):
        drv = self.drv
        await drv.write("CTRL", CTRL_SOFT_RESET)
        for _ in range(1000):
            if not await drv.read("STATUS") & 1:           # busy low: the abort has drained
                break
        await drv.write("CTRL", CTRL_SOFT_RESET)           # clears the abort's own report
        await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
        await drv.scrub()

    async def good_phase(self, tag):
        x, w = self.layer()
        y = await self.drv.run_phase("fp", x=x, w=w, stride=1, padding=1)
        ref = golden.writeback(golden.conv2d_forward(x, w, 1, 1), self.cfg.frac_bits,
                               self.cfg.data_width)
        assert np.array_equal(y, ref), f"{tag}: the phase after recovery differs"
        assert self.drv.last_phase["data_plane"] == "dma"


def fp_cmds(drv, x, w, *, addrs, shapes=None, **over):
    shapes = shapes or {"x": x.shape, "w": w.shape,
                        "out": (x.shape[0], w.shape[0], x.shape[2], x.shape[3])}
    cmds = drv.phase_commands("fp", shapes, stride=1, padding=1, addrs=addrs)
    for k, v in over.items():             # "i.field" -> value: change command i
        i, field = k.split(".")
        c = cmds[int(i)]
        c["desc" if c["kind"] == dpm.CMD_DESC else "job"][field] = v
    return cmds


@cocotb.test()
async def dataplane_errors(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    drv = await Driver.start(dut, cfg)
    tb = Tb(drv, cfg, p["seed"])
    dut._log.info(f"seed={p['seed']} config={cfg.name}")
    await tb.good_phase("first")
    x, w = tb.layer()
    n_out = x.shape[0] * w.shape[0] * x.shape[2] * x.shape[3]
    # the mask packed 16 bits per element (docs/dataplane.md): ceil(w.size / data_width)
    n_mask = -(-w.size // cfg.data_width)
    addrs = drv.card_layout({"x": x.size, "w": w.size, "mask": n_mask, "out": n_out})
    drv.card_write(addrs["x"], x)
    drv.card_write(addrs["w"], w)
    drv.card_write(addrs["mask"], pack_mask(np.ones(w.shape, np.int64), cfg.data_width))
    nb = cfg.data_width // 8
    out_lo, out_hi = addrs["out"], addrs["out"] + n_out * nb

    def guard():
        drv.ram.write(out_lo - 64, bytes([GUARD]) * 64)
        drv.ram.write(out_lo, bytes([GUARD]) * (out_hi - out_lo))
        drv.ram.write(out_hi, bytes([GUARD]) * 64)

    def guard_intact(whole):
        lo = out_lo - 64
        hi = out_hi + 64
        data = drv.ram.read(lo, hi - lo)
        outside = data[:64] + data[-64:]
        assert outside == bytes([GUARD]) * 128, "memory around the result was written"
        if whole:
            assert data == bytes([GUARD]) * (hi - lo), "the failed phase wrote its result"

    cases = [
        # (name, command overrides, expected ERROR_CODE, -)
        ("descriptor beyond its buffer", {"0.base": cfg.act_mem_elems - 8},
         0x30 | DmaErr.BEYOND_BUFFER, False),
        ("descriptor of length 0", {"1.length": 0}, 0x30 | DmaErr.LEN_ZERO, False),
        ("tensor shorter than its descriptor says (job reads unloaded words)",
         {"0.length": x.size - 4}, 0x40 | dpm.JobErr.NOT_LOADED, False),
        ("packed mask shorter than the job reads", {"2.length": n_mask - 1},
         0x40 | dpm.JobErr.NOT_LOADED, False),
        ("job result beyond the output buffer", {"3.out_base": cfg.out_mem_elems - 8},
         0x40 | dpm.JobErr.BEYOND, False),
        ("raw job (results wider than the buffer)", {"3.raw": 1}, 0x40 | dpm.JobErr.RAW, False),
    ]
    for name, over, code, _ in cases:
        await tb.soft_reset()           # nothing loaded: each case starts from a clean state
        guard()
        st, got = await tb.run(fp_cmds(drv, x, w, addrs=addrs, **over))
        dut._log.info(f"{name}: STATUS {st:#x} ERROR_CODE {got:#x}")
        assert st & STATUS_ERROR and got == code, f"{name}: ERROR_CODE {got:#x}, want {code:#x}"
        guard_intact(True)
        await tb.soft_reset()
        await tb.good_phase(name)

    # a job whose tensors were never loaded (fresh after the soft reset)
    await tb.soft_reset()
    guard()
    cmds = fp_cmds(drv, x, w, addrs=addrs)[3:]          # job + store only
    st, got = await tb.run(cmds)
    assert st & STATUS_ERROR and got == 0x40 | dpm.JobErr.NOT_LOADED, f"never loaded: {got:#x}"
    guard_intact(True)
    await tb.soft_reset()
    await tb.good_phase("never loaded")

    # a bus error (SLVERR) during a load, and during the store
    for which in ("x", "out"):
        await tb.soft_reset()
        guard()
        lo = addrs[which]
        tb.bad = (lo + 32, lo + 64)
        st, got = await tb.run(fp_cmds(drv, x, w, addrs=addrs))
        tb.bad = None
        dut._log.info(f"SLVERR in {which}: STATUS {st:#x} ERROR_CODE {got:#x}")
        assert st & STATUS_ERROR and got == 0x30 | DmaErr.BUS_ERROR, f"SLVERR {which}: {got:#x}"
        guard_intact(which == "x")
        await tb.soft_reset()
        await tb.good_phase(f"SLVERR in {which}")

    # a soft reset in the middle of a transfer: the burst is finished on the bus (no hang),
    # the phase is dropped, and the core is usable again
    big = min(cfg.act_mem_elems, 1024)
    drv.card_write(0x100000, np.arange(big) % 1000)
    await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
    await drv.send([drv.codec.dp_packet([{"kind": dpm.CMD_DESC, "desc": {
        "buf": dpm.BUF_ACT, "base": 0, "length": big, "dir": DIR_LOAD, "addr": 0x100000}}])])
    await ClockCycles(dut.clk, 60)
    assert await drv.read("STATUS") & 1, "the load should still be running"
    await drv.write("CTRL", CTRL_SOFT_RESET)
    for _ in range(2000):
        if not await drv.read("STATUS") & 1:
            break
    else:
        raise AssertionError("the data plane never became idle after the soft reset")
    code = await drv.read("ERROR_CODE")
    dut._log.info(f"soft reset mid-transfer: ERROR_CODE {code:#x}")
    assert code in (0, 0x30 | DmaErr.ABORTED), f"soft reset mid-transfer: {code:#x}"
    await tb.soft_reset()
    await tb.good_phase("soft reset mid-transfer")
    # the command table (hdl/cmd_table.py): a phase's commands replayed by a one-word call
    # give the same result; calls the table cannot run are refused with their code
    if drv.codec.has_table:
        from sparseforge.hdl.cmd_table import (CALL_RUN, ERR_CALL_OP, ERR_CALL_RANGE,
                                               MAX_DEPTH)
        await tb.soft_reset()
        # new operands each time (the same shapes, so the same commands; from the second run
        # on the all-ones mask is still resident and its load is skipped: another sequence)
        for k in range(3):
            xr, wr = tb.layer()
            calls, writes = drv.replay_calls, drv.table_writes
            y = await drv.run_phase("fp", x=xr, w=wr, stride=1, padding=1)
            ref = golden.writeback(golden.conv2d_forward(xr, wr, 1, 1), cfg.frac_bits,
                                   cfg.data_width)
            assert np.array_equal(y, ref), f"replayed phase {k} differs"
            lp = drv.last_phase
            assert drv.replay_calls == calls + 1
            if k == 2:   # the third run's commands came from the table: one call packet
                assert drv.table_writes == writes and lp["words_in"] == 2, lp
            dut._log.info(f"fp phase run {k}: {lp['words_in']} stream words in, equal")
        for name, call, code in (
                ("a call past the written entries", (CALL_RUN, MAX_DEPTH - 8, 8), ERR_CALL_RANGE),
                ("an unknown call op", (3, 0, 1), ERR_CALL_OP)):
            await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
            await drv.send([drv.codec.call_packet(*call, end=True)])
            st = await drv.wait_done()
            got = await drv.read("ERROR_CODE")
            dut._log.info(f"{name}: STATUS {st:#x} ERROR_CODE {got:#x}")
            assert st & STATUS_ERROR and got == code, f"{name}: {got:#x}, want {code:#x}"
            await tb.soft_reset()
            await tb.good_phase(name)
    dut._log.info("every bad input gave its ERROR_CODE; nothing hung; nothing outside the "
                  "addressed range was written")
