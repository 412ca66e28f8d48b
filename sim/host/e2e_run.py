"""The e2e run on a live driver, whatever simulates the design: ``steps`` consecutive training
steps of a network on the ``accelerator`` RTL, each bit for bit against the golden model's
step (:mod:`sparseforge.sim.host.e2e`), under the on-chip schedule controller (the network's
compiled schedule is loaded once and restarted for every step).

:func:`run_steps` runs them and returns the run's log; :func:`check_steps` asserts what a
passing run must show. The cocotb test (:mod:`sparseforge.sim.host.e2e_cocotb`, Icarus or
Verilator through VPI) and the fast engine (``sparseforge e2e --engine cpp``,
:mod:`sparseforge.sim.fastsim`) both call them, so the two engines run the same step.

A network with batch norm, residual adds or an average pool (``digits-resnet``) runs the graph
step (:mod:`sparseforge.sim.host.e2e_graph`: BN, adds and pools on the host) without a
schedule.

Parameters ``p``: ``config`` (a config dict), ``network``, ``batch``, ``steps`` (default 1),
``seed``, ``prune_seed``, ``lr_shift``, ``check`` (``golden``, the default: every step's
tensors compared with an independent golden training from the same initial state; ``none``:
the RTL trains alone).
"""

from __future__ import annotations

import time

import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.schedule import build_schedule
from sparseforge.hdl.axil import ID_VALUE, SCHED_AT_END, SCHED_RUNNING, STATUS_ERROR
from sparseforge.sim.host import e2e, e2e_graph

__all__ = ["run_steps", "check_steps"]


async def run_steps(drv, p: dict, *, info=print, progress=None) -> dict:
    """Run the steps on ``drv`` (a started :class:`~sparseforge.sim.host.driver.Driver`).
    Returns ``{"steps": [...], "wall_s", "sim_cycles", "schedule_words"}`` (the log the
    report is built from; per step the backend's phase records, the tensors compared, the
    mismatches, the loss (and the golden training's) and SCHED_STATUS) plus, under
    ``"_check"``, what :func:`check_steps` needs. ``progress(k, run)`` is called after each
    step."""
    cfg = AcceleratorConfig.from_dict(p["config"])
    steps = int(p.get("steps", 1))
    ident = await drv.read("ID")
    if ident != ID_VALUE:
        raise AssertionError(f"ID register reads {ident:#x}, not {ID_VALUE:#x}")
    # a network with batch norm, residual adds or an average pool (digits-resnet) takes the
    # graph step (sim/host/e2e_graph.py): its BN, adds and pools on the host, no schedule
    net = e2e_graph.load_graph_net(p["network"], batch=p["batch"])
    graph = e2e_graph.is_graph_net(net)
    if graph:
        state = e2e_graph.init_graph_state(net, cfg, seed=p["seed"])
        step_fn = e2e_graph.train_step_graph
    else:
        net = e2e.load_net(p["network"], cfg, batch=p["batch"])
        state = e2e.init_state(net, cfg, seed=p["seed"])
        step_fn = e2e.train_step
    kw = dict(lr_shift=p["lr_shift"], base_seed=p["prune_seed"])
    info(f"seed={p['seed']} prune_seed={p['prune_seed']} config={cfg.name} "
         f"({cfg.pe_rows}x{cfg.pe_cols} PEs) network={net.name} batch={net.batch} "
         f"steps={steps}")
    if graph:
        sched = None
        info("graph network (batch norm / residual adds / average pool): BN, adds and pools "
             "on the host, no schedule")
        backend = e2e.RTLBackend(cfg, drv, strict=False, schedule=None, stages=False,
                                 beside=False)
    else:
        sched = build_schedule(net, cfg)
        info(f"schedule: {len(sched.entries)} entries, {len(sched.encode()) // 4} words")
        # ``stages``: the between-layer stages on chip where the network is resident
        backend = e2e.RTLBackend(cfg, drv, strict=False, schedule=sched.encode(),
                                 stages=bool(p.get("stages", True)))
    # the array model's reference cycles are computed after each step's timed window
    drv.defer_model = True

    check = p.get("check", "golden")
    if check not in ("golden", "none"):
        raise ValueError(f"check must be 'golden' or 'none', not {check!r}")
    runs, wall, sim_cycles = [], 0.0, 0
    first_state = gold_state = state
    for k in range(steps):
        # a different batch per step (the step's seed), the weights carried over: the RTL
        # trains on its own weights, the golden training on its own (equal while exact)
        x, labels = e2e.make_batch(net, cfg, seed=p["seed"] + k)
        gold = None
        if check == "golden":
            gold = await step_fn(net, cfg, gold_state, x, labels, e2e.GoldenBackend(cfg),
                                 **kw)
            gold_state = gold.state
        backend.log = []
        await backend.restart()
        # the step itself: its simulated cycles (the host's register accesses and debug reads
        # included) over its wall time (the driver's Python included; the golden step above
        # and the comparisons below are not)
        t0, c0 = time.perf_counter(), drv.now_cycles()
        rtl = await step_fn(net, cfg, state, x, labels, backend, **kw)
        wall += time.perf_counter() - t0
        sim_cycles += drv.now_cycles() - c0
        backend.resolve_models()
        state = rtl.state
        run = {"log": backend.log, "loss": e2e.step_loss(rtl.logits, labels, cfg),
               "sched_status": await drv.read("SCHED_STATUS"),
               "network_load": backend.take_network_load()}
        if gold is not None:
            run.update(tensors_compared=len(gold.tensors()), mismatched=e2e.compare(rtl, gold),
                       golden_loss=e2e.step_loss(gold.logits, labels, cfg))
        else:
            run.update(tensors_compared=0, mismatched=[])
        runs.append(run)
        info(f"step {k}: loss {run['loss']:.6f}; per-phase counters (cycles: CYCLES over "
             f"AXI; busy_mac0/nnz0: PE 0 over AXI; model_*: array_model.cycles; io_cycles: "
             f"simulated clock cycles of the phase, packets in to STATUS.done):\n"
             f"{e2e.cycle_table(backend.log)}")
        if progress is not None:
            progress(k, run)
    return {"steps": runs, "wall_s": wall, "sim_cycles": sim_cycles,
            "schedule_words": 0 if sched is None else len(sched.encode()) // 4, "check": check,
            "_check": {"net": net, "sched": sched, "first": first_state, "last": state,
                       "status": await drv.read("STATUS")}}


def check_steps(res: dict):
    """Assert that the run of :func:`run_steps` passed: every tensor equal to the golden
    model's, the whole schedule ran, PE 0's counters equal the array model's, the weights
    moved."""
    c = res["_check"]
    net, sched = c["net"], c["sched"]
    for k, run in enumerate(res["steps"]):
        assert res.get("check", "golden") == "none" or run["tensors_compared"] > 0
        bad = run["mismatched"]
        assert not bad, f"step {k}: RTL step differs from the golden step:\n" + "\n".join(bad)
        if sched is not None:        # (a graph network runs without a schedule)
            sst = run["sched_status"]
            assert sst & SCHED_RUNNING and sst & SCHED_AT_END, \
                f"step {k}: SCHED_STATUS {sst:#x}"
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
    assert not c["status"] & STATUS_ERROR
    # the steps did something: weights moved and the masks were re-generated from them
    for lay in net.compute:
        assert not np.array_equal(c["last"].weights[lay.name], c["first"].weights[lay.name]), \
            lay.name


def public_log(res: dict) -> dict:
    """The JSON-serialisable part of :func:`run_steps`'s result (``log.json``)."""
    return {k: v for k, v in res.items() if not k.startswith("_")}
