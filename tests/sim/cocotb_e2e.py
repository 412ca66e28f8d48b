"""cocotb: one full training step (FP, pruning, BP, WG, update, pre-generation) of a CNN on the
``accelerator`` RTL through the host driver, bit for bit against the golden model's step
(:mod:`sparseforge.sim.host.e2e`), with the counters read over AXI4-Lite after every array phase.
The step runs under the on-chip schedule controller (the network's compiled schedule is loaded
and started; every phase is one of its steps)."""

import json
import logging
import time

import cocotb
import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.hdl.axil import ID_VALUE
from sparseforge.sim.host import e2e
from sparseforge.sim.host.driver import Driver
from sparseforge.sim.testkit.cocotb_streams import env_params


@cocotb.test()
async def e2e_training_step(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    drv = await Driver.start(dut, cfg)
    assert await drv.read("ID") == ID_VALUE
    # cocotbext-axi logs every AXI4-Lite access at INFO: hundreds of counter reads per step
    for bus in (drv.axil.write_if, drv.axil.read_if):
        bus.log.setLevel(logging.WARNING)

    net = e2e.load_net(p["network"], cfg, batch=p["batch"])
    state = e2e.init_state(net, cfg, seed=p["seed"])
    x, labels = e2e.make_batch(net, cfg, seed=p["seed"])
    kw = dict(lr_shift=p["lr_shift"], base_seed=p["prune_seed"])
    dut._log.info(f"seed={p['seed']} prune_seed={p['prune_seed']} config={cfg.name} "
                  f"({cfg.pe_rows}x{cfg.pe_cols} PEs) network={net.name} batch={net.batch}")

    gold = await e2e.train_step(net, cfg, state, x, labels, e2e.GoldenBackend(cfg), **kw)
    # the step runs under the on-chip schedule controller: the compiled schedule of the same
    # network is loaded and started, and every phase is one of its steps
    from sparseforge.gen.schedule import build_schedule
    from sparseforge.hdl.axil import SCHED_AT_END, SCHED_RUNNING, STATUS_ERROR
    sched = build_schedule(net, cfg)
    dut._log.info(f"schedule: {len(sched.entries)} entries, {len(sched.encode()) // 4} words")
    backend = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched.encode())
    t0 = time.perf_counter()
    rtl = await e2e.train_step(net, cfg, state, x, labels, backend, **kw)
    wall = time.perf_counter() - t0

    table = e2e.cycle_table(backend.log)
    dut._log.info(f"per-phase counters (cycles: CYCLES over AXI; busy_mac0/nnz0: PE 0 over "
                  f"AXI; model_*: array_model.cycles; io_cycles: simulated clock cycles of "
                  f"the phase, packets in to STATUS.done):\n{table}")
    if p.get("log_path"):
        with open(p["log_path"], "w") as fh:
            json.dump({"log": backend.log, "wall_s": wall,
                       "sim_cycles": sum(r["io_cycles"] for r in backend.log)}, fh, indent=1)

    sst = await drv.read("SCHED_STATUS")
    assert sst & SCHED_RUNNING and sst & SCHED_AT_END, f"SCHED_STATUS {sst:#x}"
    assert sst >> 16 == len(sched.entries) - 1          # every phase ran, END is next
    assert not await drv.read("STATUS") & STATUS_ERROR
    bad = e2e.compare(rtl, gold)
    assert not bad, "RTL step differs from the golden step:\n" + "\n".join(bad)
    n = len(gold.tensors())
    dut._log.info(f"{n} tensors of the step equal bit for bit (RTL vs golden); "
                  f"{wall:.1f} s wall for the RTL step")
    # counters: PE 0's MAC-busy cycles and non-zero operands of every array phase, read over
    # AXI4-Lite, equal the exact array model's
    arr = [r for r in backend.log if r["phase"] in ("fp", "bp", "wg")]
    assert len(arr) == 3 * len(net.compute) - 1
    for r in arr:
        assert (r["busy_mac0"], r["nnz0"]) == (r["model_busy_mac0"], r["model_nnz0"]), r
        assert r["cycles"] > 0, r
    pruned = [r for r in backend.log if r["phase"] == "prune"]
    assert len(pruned) == sum(lay.prune for lay in net.compute)
    pg = [r for r in backend.log if r["phase"] == "pregen"]
    assert len(pg) == sum(lay.bdwp for lay in net.compute)
    dut._log.info(f"SCHED_STATUS {sst:#x}: every step of the schedule ran on the controller")
    # the step did something: weights moved and the masks were re-generated from them
    for lay in net.compute:
        assert not np.array_equal(rtl.state.weights[lay.name], state.weights[lay.name]), lay.name
