"""cocotb test module of the end-to-end run (``make e2e``, :mod:`sparseforge.e2e`, and
``tests/sim/cocotb_e2e.py``): ``steps`` consecutive training steps of a network on the
``accelerator`` RTL through the host driver, each bit for bit against the golden model's step
(:mod:`sparseforge.sim.host.e2e`), under the on-chip schedule controller (the network's
compiled schedule is loaded once and restarted for every step).

Parameters (JSON in ``SF_PARAMS``, :func:`sparseforge.sim.testkit.cocotb_streams.env_params`):
``config`` (a config dict), ``network``, ``batch``, ``steps`` (default 1), ``seed``,
``prune_seed``, ``lr_shift``, ``log_path`` (where the run's log is written as JSON: per step
the backend's phase records, the number of tensors compared and the mismatches; the simulated
cycles and the wall time of the steps). The log is written before the checks, so a failing
run still leaves its figures.
"""

import json
import logging
import time

import cocotb
import numpy as np
from cocotb.utils import get_sim_time

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.schedule import build_schedule
from sparseforge.hdl.axil import ID_VALUE, SCHED_AT_END, SCHED_RUNNING, STATUS_ERROR
from sparseforge.sim.host import e2e
from sparseforge.sim.host.driver import Driver
from sparseforge.sim.testkit.cocotb_streams import env_params

CLOCK_NS = 10


@cocotb.test()
async def e2e_training_step(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    steps = int(p.get("steps", 1))
    drv = await Driver.start(dut, cfg, period_ns=CLOCK_NS)
    assert await drv.read("ID") == ID_VALUE
    # cocotbext-axi logs every AXI4-Lite access at INFO: hundreds of counter reads per step
    for bus in (drv.axil.write_if, drv.axil.read_if):
        bus.log.setLevel(logging.WARNING)

    net = e2e.load_net(p["network"], cfg, batch=p["batch"])
    state = e2e.init_state(net, cfg, seed=p["seed"])
    kw = dict(lr_shift=p["lr_shift"], base_seed=p["prune_seed"])
    dut._log.info(f"seed={p['seed']} prune_seed={p['prune_seed']} config={cfg.name} "
                  f"({cfg.pe_rows}x{cfg.pe_cols} PEs) network={net.name} batch={net.batch} "
                  f"steps={steps}")
    sched = build_schedule(net, cfg)
    dut._log.info(f"schedule: {len(sched.entries)} entries, {len(sched.encode()) // 4} words")
    backend = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched.encode(),
                             clock_ns=CLOCK_NS)

    runs, wall, t_sim0 = [], 0.0, get_sim_time("ns")
    first_state = state
    for k in range(steps):
        # a different batch per step (the step's seed), the weights carried over
        x, labels = e2e.make_batch(net, cfg, seed=p["seed"] + k)
        gold = await e2e.train_step(net, cfg, state, x, labels, e2e.GoldenBackend(cfg), **kw)
        backend.log = []
        await backend.restart()
        t0 = time.perf_counter()
        rtl = await e2e.train_step(net, cfg, state, x, labels, backend, **kw)
        wall += time.perf_counter() - t0
        bad = e2e.compare(rtl, gold)
        runs.append({"log": backend.log, "tensors_compared": len(gold.tensors()),
                     "mismatched": bad, "sched_status": await drv.read("SCHED_STATUS")})
        dut._log.info(f"step {k}: per-phase counters (cycles: CYCLES over AXI; "
                      f"busy_mac0/nnz0: PE 0 over AXI; model_*: array_model.cycles; "
                      f"io_cycles: simulated clock cycles of the phase, packets in to "
                      f"STATUS.done):\n{e2e.cycle_table(backend.log)}")
        state = gold.state
    sim_cycles = int(get_sim_time("ns") - t_sim0) // CLOCK_NS
    if p.get("log_path"):
        with open(p["log_path"], "w") as fh:
            json.dump({"steps": runs, "wall_s": wall, "sim_cycles": sim_cycles,
                       "schedule_words": len(sched.encode()) // 4}, fh, indent=1)

    for k, run in enumerate(runs):
        bad = run["mismatched"]
        assert not bad, f"step {k}: RTL step differs from the golden step:\n" + "\n".join(bad)
        sst = run["sched_status"]
        assert sst & SCHED_RUNNING and sst & SCHED_AT_END, f"step {k}: SCHED_STATUS {sst:#x}"
        assert sst >> 16 == len(sched.entries) - 1      # every phase ran, END is next
        log = run["log"]
        # counters: PE 0's MAC-busy cycles and non-zero operands of every array phase, read
        # over AXI4-Lite, equal the exact array model's
        arr = [r for r in log if r["phase"] in ("fp", "bp", "wg")]
        assert len(arr) == 3 * len(net.compute) - 1
        for r in arr:
            assert (r["busy_mac0"], r["nnz0"]) == (r["model_busy_mac0"], r["model_nnz0"]), r
            assert r["cycles"] > 0, r
        assert len([r for r in log if r["phase"] == "prune"]) == \
            sum(lay.prune for lay in net.compute)
        assert len([r for r in log if r["phase"] == "pregen"]) == \
            sum(lay.bdwp for lay in net.compute)
    assert not await drv.read("STATUS") & STATUS_ERROR
    dut._log.info(f"{steps} step(s): {runs[0]['tensors_compared']} tensors per step equal bit "
                  f"for bit (RTL vs golden); {wall:.1f} s wall, {sim_cycles} simulated cycles")
    # the steps did something: weights moved and the masks were re-generated from them
    for lay in net.compute:
        assert not np.array_equal(state.weights[lay.name], first_state.weights[lay.name]), \
            lay.name
