"""cocotb: one full training step (FP, pruning, BP, WG, update, pre-generation) of a CNN on the
``accelerator`` RTL through the host driver, bit for bit against the golden model's step. The
test lives in the package (:mod:`sparseforge.sim.host.e2e_cocotb`) so that ``make e2e`` runs
the same code outside pytest; cocotb collects it from this module too."""

import logging

import cocotb

from sparseforge.sim.host.e2e_cocotb import e2e_training_step  # noqa: F401

from sparseforge.gen.config import AcceleratorConfig  # noqa: E402
from sparseforge.gen.schedule import build_schedule  # noqa: E402
from sparseforge.sim.host import e2e  # noqa: E402
from sparseforge.sim.host.driver import Driver  # noqa: E402
from sparseforge.sim.testkit.cocotb_streams import env_params  # noqa: E402


async def _start(dut):
    """The bad-step tests' set-up: the driver on ``dut``, the network, its initial state, a
    batch, the step's arguments and the encoded schedule (parameters from ``SF_PARAMS``)."""
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    drv = await Driver.start(dut, cfg)
    for bus in (drv.axil.write_if, drv.axil.read_if):
        bus.log.setLevel(logging.WARNING)
    net = e2e.load_net(p["network"], cfg, batch=p["batch"])
    state = e2e.init_state(net, cfg, seed=p["seed"])
    x, labels = e2e.make_batch(net, cfg, seed=p["seed"])
    kw = dict(lr_shift=p["lr_shift"], base_seed=p["prune_seed"])
    dut._log.info(f"seed={p['seed']} prune_seed={p['prune_seed']} config={cfg.name} "
                  f"network={net.name} batch={net.batch}")
    return p, cfg, drv, net, state, x, labels, kw, build_schedule(net, cfg).encode()


@cocotb.test()
async def e2e_reset_mid_step_rerun(dut):
    """A step interrupted (the host stops after three phases with the schedule half run),
    then a soft reset while a data-plane phase's DMA and job are under way,
    ``Driver.recover()``, the schedule loaded again: the rerun of the whole step equals the
    golden step (issue 17, bad input: "a reset in the middle of a step followed by a rerun";
    the fast engine's twin is ``tests/sim/test_fastsim.py::test_reset_mid_step_then_exact_rerun``)."""
    import numpy as np
    from cocotb.triggers import ClockCycles

    from sparseforge.sim.host.driver import STATUS_ERROR, pack_mask

    p, cfg, drv, net, state, x, labels, kw, sched = await _start(dut)
    gold = await e2e.train_step(net, cfg, state, x, labels, e2e.GoldenBackend(cfg), **kw)

    class HostGone(Exception):
        pass

    be = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched)
    real = be._run_rtl

    async def stop_after_three(mode, **k):
        if len(be.log) >= 3:
            raise HostGone
        return await real(mode, **k)

    be._run_rtl = stop_after_three
    try:
        await e2e.train_step(net, cfg, state, x, labels, be, **kw)
        raise AssertionError("the interrupted step ran to its end")
    except HostGone:
        pass
    # a phase in flight: its tensors in card memory, its dp packet sent, 20 cycles run
    rng = np.random.default_rng(p["seed"])
    xt = rng.integers(-200, 200, (1, 2, 8, 8))
    wt = rng.integers(-200, 200, (8, 2, 3, 3))
    mask = pack_mask(np.ones(wt.shape, np.int64), cfg.data_width)
    addrs = drv.card_layout({"x": xt.size, "w": wt.size, "mask": mask.size, "out": 8 * 8 * 8})
    for name, t in (("x", xt), ("w", wt), ("mask", mask)):
        drv.card_write(addrs[name], t)
    cmds = drv.phase_commands("fp", {"x": xt.shape, "w": wt.shape, "out": (1, 8, 8, 8)},
                              stride=1, padding=1, addrs=addrs)
    await drv.send([drv.codec.dp_packet(cmds), drv.codec.end_packet()])
    await ClockCycles(dut.clk, 20)
    assert await drv.read("STATUS") & 1, "the phase should still be running (busy)"
    await drv.recover()
    # the rerun: a fresh backend loads the schedule again and runs the whole step
    be2 = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched)
    rtl = await e2e.train_step(net, cfg, state, x, labels, be2, **kw)
    diffs = e2e.compare(rtl, gold)
    assert diffs == [], diffs[:5]
    assert not await drv.read("STATUS") & STATUS_ERROR
    dut._log.info(f"reset mid-phase after an interrupted step; the rerun equals the golden "
                  f"step ({len(be2.log)} phases)")


@cocotb.test()
async def e2e_step_before_network_loaded(dut):
    """A training step whose network (the schedule) was never loaded: the first phase's step
    is refused with ERROR_CODE 0x20 (``docs/register-map.md``), the driver raises instead of
    hanging, and after ``Driver.recover()`` the same step with the schedule loaded equals the
    golden step (issue 17, bad input)."""
    p, cfg, drv, net, state, x, labels, kw, sched = await _start(dut)
    be = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched)
    be._started = True                 # as if loaded: the step packets go to an empty controller
    t0 = drv.now_cycles()
    try:
        await e2e.train_step(net, cfg, state, x, labels, be, **kw)
        raise AssertionError("a step without a loaded schedule ran")
    except RuntimeError as e:
        msg = str(e)
    code = await drv.read("ERROR_CODE")
    dut._log.info(f"refused after {drv.now_cycles() - t0} cycles: {msg}")
    assert code == 0x20, f"ERROR_CODE {code:#x}, expected 0x20 (no schedule)"
    assert "0x20" in msg, msg
    await drv.recover()
    gold = await e2e.train_step(net, cfg, state, x, labels, e2e.GoldenBackend(cfg), **kw)
    be2 = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched)
    rtl = await e2e.train_step(net, cfg, state, x, labels, be2, **kw)
    diffs = e2e.compare(rtl, gold)
    assert diffs == [], diffs[:5]
