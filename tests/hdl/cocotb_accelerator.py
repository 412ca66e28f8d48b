"""cocotb tests of the emitted ``accelerator`` top level through the host driver
(cocotbext-axi AxiLiteMaster + AxiStreamSource/Sink): layer phases on the PE array, the
stochastic pruner and the N:M pre-generation through the packet router, bit-exact against the
golden model; ID/config/counter registers; a malformed packet; a soft reset mid-job."""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from sparseforge.sim.testkit.layers import random_array_layer
from sparseforge.gen.config import AcceleratorConfig
from sparseforge.hdl.wire import (DEST_END, ERR_BAD_DEST, ERR_EARLY_TLAST, ERR_MISSING_TLAST,
                                  header)
from sparseforge.hdl.axil import CTRL_SOFT_RESET, ID_VALUE, STATUS_DONE, STATUS_ERROR, config_words
from sparseforge.gen.mapper import array as am
from sparseforge.sim.reference import golden
from sparseforge.sim.host.driver import Driver
from sparseforge.sim.testkit.cocotb_streams import env_params


async def setup(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    return p, cfg, await Driver.start(dut, cfg)


def layers(p, cfg):
    for k, (mode, nm, raw) in enumerate(p["layers"]):
        job, ref = random_array_layer(mode, cfg=cfg, kernel=3, stride=1, padding=1,
                                         zero_frac=0.5, nm=tuple(nm) if nm else None,
                                         seed=p["seed"] + k, cin=p["cin"], cout=p["cout"],
                                         height=p["hw"], width=p["hw"], raw=raw)
        yield mode, job, ref


@cocotb.test()
async def accelerator_layers(dut):
    p, cfg, drv = await setup(dut)
    dut._log.info(f"seed={p['seed']} config={cfg.name} {cfg.pe_rows}x{cfg.pe_cols}")
    assert await drv.read("ID") == ID_VALUE
    for k, w in enumerate(config_words(cfg)):
        assert await drv.read(f"CONFIG{k}") == w
    for mode, job, ref in layers(p, cfg):
        await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)      # W1C
        out, status, cols = await drv.run_array_job(job)
        bad = np.argwhere(out != ref)
        assert not bad.size, f"{mode}: {bad.shape[0]} outputs differ; first {bad[0]}"
        assert status & STATUS_DONE and not status & STATUS_ERROR, hex(status)
        st = am.cycles(job)
        busy = await drv.counter("busy_mac")
        nnz = await drv.counter("nnz")
        cycles = await drv.counter("cycles")
        dut._log.info(f"{mode}: {ref.size} outputs equal; array cycles {cycles} (model with "
                      f"ideal streams {st.cycles}); PE0 busy_mac {busy} nnz {nnz}")
        # counters accumulate over jobs: PE 0's increments must match the model
        assert busy - drv.prev.get("busy", 0) == st.pe[0][0].busy_mac
        assert nnz - drv.prev.get("nnz", 0) == st.pe[0][0].nnz
        assert cycles > drv.prev.get("cycles", 0)
        drv.prev = {"busy": busy, "nnz": nnz, "cycles": cycles}


@cocotb.test()
async def accelerator_prune_and_pregen(dut):
    p, cfg, drv = await setup(dut)
    rng = np.random.default_rng(p["seed"])
    g = rng.integers(-3000, 3000, 200)
    g[rng.random(200) < 0.5] = 0
    tau, seed = 900, 0x9E3779B9
    want, _ = golden.stochastic_prune_int(g, tau, seed, cfg.data_width)
    got = [int(v) for v in await drv.prune(g, tau, seed)]
    exp = [int(v) for v in want]
    bad = [k for k in range(min(len(got), len(exp))) if got[k] != exp[k]]
    assert got == exp, (f"pruned gradients differ from the golden model: {len(got)} of "
                        f"{len(exp)} received, first differences at {bad[:5]}: "
                        f"{[(got[k], exp[k], int(g[k])) for k in bad[:5]]}")
    dut._log.info(f"pruner: {g.size} elements equal to golden stochastic_prune_int")

    # pre-generation: W (Cout, Cin) groups along Cin (fwd) then along Cout (bwd)
    m, n = cfg.nm_m, min(2, cfg.nm_n_max)
    w = rng.integers(-2000, 2000, (m, m))
    fwd, bwd = golden.bdwp_masks(w, n, m)
    got_f, got_b = await drv.pregen(w, n)
    assert np.array_equal(got_f, fwd) and np.array_equal(got_b, bwd), "pre-generated masks"
    dut._log.info(f"pre-generation: {2 * m} groups, masks equal to golden bdwp_masks")


@cocotb.test()
async def accelerator_errors_and_soft_reset(dut):
    p, cfg, drv = await setup(dut)
    codec = drv.codec
    # a header naming no destination: error code, then the router discards to tlast
    await drv.send([[0xEE000003, 1, 2, 3]])
    st = await drv.wait_done()
    assert st & STATUS_ERROR and await drv.read("ERROR_CODE") == ERR_BAD_DEST
    await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
    mode, job, ref = next(layers(p, cfg))
    # half a job (rows, no drains), then a soft reset mid-step, then a fresh full job
    pk = codec.array_job_packets(job)
    half = [q for q in pk[:len(pk) // 2] if (q[0] >> 24) not in
            [codec.dest_id[f"drain_c{j}"] for j in range(job.cols)]]
    await drv.send(half)
    await ClockCycles(dut.clk, 20)
    await drv.write("CTRL", CTRL_SOFT_RESET)
    assert drv.sink.empty(), "no output expected from a job without drains"
    await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
    # block RAM is not reset: the interrupted job's partial sums are scrubbed by drains
    await drv.scrub()
    out, status, _ = await drv.run_array_job(job)
    assert np.array_equal(out, ref), "wrong result after a soft reset mid-job"
    assert status & STATUS_DONE and not status & STATUS_ERROR
    dut._log.info("bad destination -> ERROR_CODE 1; soft reset mid-job + scrub -> next job "
                  "exact")


@cocotb.test()
async def accelerator_strict_framing(dut):
    """Strict s_axis framing (issue 19; the rules in hdl/wire.py): an extra word (an END header)
    after a CTRL packet's last word, in the same frame -> ERROR_CODE 3, STATUS.done does not
    rise, a following job is exact; a short CTRL packet without tlast followed by a good one in
    one frame -> ERROR_CODE 3, then an END raises done without error (recovery); tlast inside a
    CTRL packet -> ERROR_CODE 2, then recovery; an END header without tlast is not taken; then
    a last job is exact."""
    p, cfg, drv = await setup(dut)
    codec = drv.codec
    clear = STATUS_DONE | STATUS_ERROR
    ctrl = codec.ctrl_packet()
    end = codec.end_packet()
    assert len(ctrl) >= 4, "the cases below need a CTRL packet of >= 3 payload words"

    async def error_without_done(frame, code, what):
        await drv.send([frame])           # one frame: tlast on its last word only
        st = await drv.wait_done()
        await ClockCycles(dut.clk, 50)    # an END taken by mistake would raise done by now
        st = await drv.read("STATUS")
        got = await drv.read("ERROR_CODE")
        assert st & STATUS_ERROR and not st & STATUS_DONE and got == code, \
            (what, hex(st), got, code)
        await drv.write("STATUS", clear)

    async def recovers(what):
        await drv.send([end])
        st = await drv.wait_done()
        assert st & STATUS_DONE and not st & STATUS_ERROR, (what, hex(st))
        await drv.write("STATUS", clear)

    mode, job, ref = next(layers(p, cfg))
    await error_without_done(ctrl + [header(DEST_END, 0)], ERR_MISSING_TLAST,
                             "extra word after CTRL")
    out, status, _ = await drv.run_array_job(job)
    assert np.array_equal(out, ref), "the job after the extra word differs"
    assert status & STATUS_DONE and not status & STATUS_ERROR, hex(status)
    await drv.write("STATUS", clear)

    await error_without_done(ctrl[:3] + ctrl, ERR_MISSING_TLAST, "short CTRL without tlast")
    await recovers("after a short packet")
    await error_without_done(ctrl[:3], ERR_EARLY_TLAST, "early tlast")
    await recovers("after an early tlast")
    await error_without_done(end + [0], ERR_MISSING_TLAST, "END without tlast")
    await recovers("after an END without tlast")
    out, status, _ = await drv.run_array_job(job)
    assert np.array_equal(out, ref), "the job after the framing errors differs"
    assert status & STATUS_DONE and not status & STATUS_ERROR, hex(status)
    dut._log.info("strict framing: extra word -> ERROR_CODE 3 and no done, short packet -> 3, "
                  "early tlast -> 2, END without tlast -> 3; recovery after each; jobs exact")


@cocotb.test()
async def accelerator_pregen_overlaps_wg(dut):
    """A WG job alone, then the same job with an on-chip pre-generation run started just
    before it: the array's job cycles differ by less than 2%, and the pre-generated masks
    equal golden.bdwp_masks."""
    p, cfg, drv = await setup(dut)
    job, ref = random_array_layer("wg", cfg=cfg, kernel=3, stride=1, padding=1,
                                     zero_frac=0.0, seed=p["seed"], cin=p["cin"],
                                     cout=p["cout"], height=p["hw"], width=p["hw"])
    c0 = await drv.counter("cycles")
    out, status, _ = await drv.run_array_job(job)
    assert np.array_equal(out, ref)
    c1 = await drv.counter("cycles")
    await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
    rng = np.random.default_rng(p["seed"] + 1)
    m = cfg.nm_m
    w = rng.integers(-2000, 2000, (m, m, 3, 3))
    n = min(2, cfg.nm_n_max)
    groups = await drv.start_pregen_run(w, n)
    drv.side = []
    out2, status, _ = await drv.run_array_job(job)
    assert np.array_equal(out2, ref)
    c2 = await drv.counter("cycles")
    while sum(1 for name, _ in drv.side if name == "pregen") < groups:
        drv.side += [x for x in await drv._collect(1)]
    res = drv.pregen_result([b for name, b in drv.side if name == "pregen"], w, n)
    fwd, bwd = golden.bdwp_masks(w, n, m)
    assert np.array_equal(res.fwd_mask, fwd) and np.array_equal(res.bwd_mask, bwd)
    alone, both = c1 - c0, c2 - c1
    dut._log.info(f"WG job alone: {alone} cycles; with a {groups}-group on-chip "
                  f"pre-generation run: {both} cycles ({(both - alone) / alone:+.2%})")
    assert abs(both - alone) < 0.02 * alone


@cocotb.test()
async def accelerator_schedule(dut):
    """The on-chip schedule controller through AXI: a corrupted binary is refused with
    ERROR_CODE ``0x10 | validate code``; a valid one loads and CTRL.start runs it; two FP
    phases run as schedule steps whose CTRL packet carries no phase controls (the controller
    supplies mode, padding, row lengths) and equal the golden model; a step with the wrong
    opcode raises ERR_SCHED_MISMATCH and does not move; the PRUNE step runs the pruner; a
    soft reset unloads the schedule and a step then raises ERR_NO_SCHEDULE."""
    from sparseforge.gen import schedule as gs
    from sparseforge.gen.network import load_network
    from sparseforge.hdl.axil import SCHED_LOADED, SCHED_RUNNING
    from sparseforge.hdl.controller import ERR_NO_SCHEDULE, ERR_SCHED, ERR_SCHED_MISMATCH
    p, cfg, drv = await setup(dut)
    hw, ch = p["hw"], p["cin"]
    net = load_network({"name": "two-conv", "input": [ch, hw, hw], "batch": 1, "prune_p": 0.9,
                        "layers": [{"kind": "conv", "name": f"c{k}", "cout": ch, "kernel": 3,
                                    "padding": 1} for k in (1, 2)]}, cfg)
    sched = gs.build_schedule(net, cfg)
    binary = sched.encode()
    dut._log.info(f"schedule: {len(binary) // 4} words, phases {sched.phases()}")
    clear = STATUS_DONE | STATUS_ERROR

    rng = np.random.default_rng(p["seed"])
    for _ in range(3):                       # corrupted binaries: the validate() verdict
        bad = bytearray(binary)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            gs.validate(bytes(bad), cfg)
            want = 0
        except gs.ScheduleError as e:
            want = e.code
        sst, st, code = await drv.load_schedule(bytes(bad))
        assert want and st & STATUS_ERROR and code == ERR_SCHED | want, (want, hex(st), code)
        assert not sst & SCHED_LOADED
        await drv.write("STATUS", clear)
    sst, st, code = await drv.load_schedule(binary)
    assert sst & SCHED_LOADED and not st & STATUS_ERROR, (hex(sst), hex(st), code)
    sst = await drv.start_schedule()
    assert sst & SCHED_RUNNING and sst >> 16 == 0

    for k in range(2):                      # FP c1, FP c2: controls from the schedule
        job, ref = random_array_layer("fp", cfg=cfg, kernel=3, stride=1, padding=1,
                                         zero_frac=0.5, seed=p["seed"] + 10 + k, cin=ch,
                                         cout=ch, height=hw, width=hw)
        await drv.write("STATUS", clear)
        out, status, _ = await drv.run_array_job(job, step=gs.Op.FP)
        assert np.array_equal(out, ref), f"FP step {k}: outputs differ"
        assert status & STATUS_DONE and not status & STATUS_ERROR, hex(status)
        assert await drv.read("SCHED_STATUS") >> 16 == k + 1

    await drv.write("STATUS", clear)         # next is PRUNE: a WG step is refused
    await drv.send([drv.codec.step_packet(gs.Op.WG)])
    st = await drv.wait_done()
    assert st & STATUS_ERROR and await drv.read("ERROR_CODE") == ERR_SCHED_MISMATCH
    assert await drv.read("SCHED_STATUS") >> 16 == 2
    await drv.write("STATUS", clear)
    g = rng.integers(-3000, 3000, ch * hw * hw)
    g[rng.random(g.size) < 0.5] = 0
    want, _ = golden.stochastic_prune_int(g, 700, 12345, cfg.data_width)
    got = await drv.prune(g, 700, 12345, step=gs.Op.PRUNE)
    assert np.array_equal(got, want), "pruned gradients differ (PRUNE step)"
    assert await drv.read("SCHED_STATUS") >> 16 == 3
    assert not await drv.read("STATUS") & STATUS_ERROR

    await drv.write("CTRL", CTRL_SOFT_RESET)
    assert not await drv.read("SCHED_STATUS") & (SCHED_LOADED | SCHED_RUNNING)
    await drv.send([drv.codec.step_packet(gs.Op.BP)])
    st = await drv.wait_done()
    assert st & STATUS_ERROR and await drv.read("ERROR_CODE") == ERR_NO_SCHEDULE
    dut._log.info("schedule: 3 corrupted binaries refused with validate()'s codes; 2 FP steps "
                  "exact with controls from the schedule; mismatch and no-schedule steps "
                  "raise their codes; PRUNE step exact")
