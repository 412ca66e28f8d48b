"""``make e2e``: training steps of a network on the ``accelerator`` RTL, checked against the
golden model, with the per-phase cycle and traffic report ``build/e2e/report.json``.

    python -m sparseforge.e2e [--net digits-cnn] [--preset tiny] [--batch 1]
                              [--sim verilator|icarus] [--engine cpp|cocotb] [--steps 1]
                              [--waves] [-o build/e2e]

(``make e2e E2E_ARGS="--preset ecp5 --sim icarus"``). The run emits the ``accelerator``
Verilog of the configuration and builds it once per configuration. Two engines run the same
steps (:mod:`sparseforge.sim.host.e2e_run`) through the same driver:

* ``cpp`` (Verilator only; the default there): the Verilated model with a C++ harness that
  holds every bus model (:mod:`sparseforge.sim.fastsim`), loaded into this process with
  ctypes, built under ``<out>/fast-<config key>[-waves]/``; no cocotb, no VPI, no Python per
  cycle;
* ``cocotb`` (Icarus, or Verilator with ``--engine cocotb``): the cocotb test
  :mod:`sparseforge.sim.host.e2e_cocotb`, built under ``<out>/sim-<config key>-<sim>/``.

It writes ``<out>/report.json`` (schema: ``docs/e2e.md``, "The report") and ``<out>/log.json``
(the raw per-phase records). Exit status 0 when every tensor of every step equals the golden
model's, 1 when the run completed with a mismatch or a failed check, 2 on bad arguments (one
line ``sparseforge: error: ...``), e.g. a network the configuration cannot map.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path

from sparseforge.gen.cliutil import (OneLineParser, add_config_args, config_from_args,
                                     error_line, guarded)
from sparseforge.gen.network import NetworkError

DEFAULT_NET = "digits-cnn"
SEED, PRUNE_SEED, LR_SHIFT = 2024, 77, 4


ENGINES = ("cpp", "cocotb")


class UsageError(Exception):
    """A request the run cannot serve (reported as one line, exit status 2)."""


def add_run_args(p, *, steps: int, steps_help: str):
    """The options ``e2e`` and ``train`` share (``--waves`` differs: each adds its own)."""
    p.add_argument("--net", default=DEFAULT_NET,
                   help=f"network name or YAML file (default {DEFAULT_NET})")
    add_config_args(p)
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--steps", type=int, default=steps, help=f"{steps_help} (default {steps})")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator)")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="cpp: the Verilated model with a C++ bus harness in this process "
                        "(Verilator only; its default); cocotb: a cocotb test (Icarus's only "
                        "engine)")
    p.add_argument("--seed", type=int, default=SEED,
                   help=f"seed of the initial weights and of the batches (default {SEED})")
    p.add_argument("--prune-seed", type=int, default=PRUNE_SEED,
                   help=f"base seed of the stochastic pruner (default {PRUNE_SEED})")
    p.add_argument("--lr-shift", type=int, default=LR_SHIFT,
                   help=f"SGD step as a right shift of dW (default {LR_SHIFT})")
    p.add_argument("-o", "--output", default="build/e2e", metavar="DIR",
                   help="output folder (default build/e2e)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="sparseforge e2e",
        description="Training steps of a network on the accelerator RTL (cocotb), every tensor "
                    "checked against the golden model; writes OUT/report.json.")
    add_run_args(p, steps=1, steps_help="consecutive training steps, weights carried over")
    p.add_argument("--waves", action="store_true",
                   help="dump waveforms (the simulator's default format, in the run folder)")
    return p


def resolve_engine(args) -> str:
    """``--engine`` as given, else the simulator's default (Verilator: cpp, Icarus: cocotb)."""
    engine = getattr(args, "engine", None)
    return engine or ("cpp" if args.sim == "verilator" else "cocotb")


def _check_args(args):
    for name, lo in (("batch", 1), ("steps", 1)):
        v = getattr(args, name)
        if v < lo:
            raise UsageError(f"--{name} must be >= {lo}, not {v}")
    if not 0 <= args.lr_shift <= 62:
        raise UsageError(f"--lr-shift must be in [0, 62], not {args.lr_shift}")
    if not 1 <= args.prune_seed <= 2**32 - 1:
        raise UsageError(f"--prune-seed must be in [1, 2**32 - 1], not {args.prune_seed}")
    args.engine = resolve_engine(args)
    if args.engine == "cpp" and args.sim != "verilator":
        raise UsageError(f"--engine cpp needs --sim verilator (the C++ harness wraps a "
                         f"Verilated model), not --sim {args.sim}")


def plan(args):
    """The configuration and network of a run, checked before anything is built: the step
    must map on the configuration (the array model runs it once, in Python) and its schedule
    must fit the schedule memory. Returns ``(cfg, net, schedule_words)``."""
    from sparseforge.gen.schedule import build_schedule, check_fits, validate
    from sparseforge.sim.host import e2e, e2e_graph
    cfg = config_from_args(args)
    try:
        net = e2e_graph.load_graph_net(args.net, batch=args.batch)
        graph = e2e_graph.is_graph_net(net)
        if not graph:
            net = e2e.load_net(args.net, cfg, batch=args.batch)
    except (NetworkError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if graph:        # BN, residual adds, average pool: the graph step, no schedule
        words, step = 0, e2e_graph.train_step_graph
        state = e2e_graph.init_graph_state(net, cfg, seed=args.seed)
    else:
        words = len(validate(build_schedule(net, cfg).encode(), cfg))   # fits sched_depth
        step = e2e.train_step
        state = e2e.init_state(net, cfg, seed=args.seed)
    x, y = e2e.make_batch(net, cfg, seed=args.seed)
    try:
        asyncio.run(step(net, cfg, state, x, y, e2e.ModelBackend(cfg),
                         lr_shift=args.lr_shift, base_seed=args.prune_seed))
    except ValueError as exc:
        raise UsageError(f"{net.name} at batch {net.batch} does not map on {cfg.name}: "
                         f"{exc}") from None
    if cfg.data_plane == "dma":       # the tensors go through the on-chip buffers
        try:
            check_fits(net, cfg)
        except NetworkError as exc:
            raise UsageError(f"{net.name} at batch {net.batch} does not fit {cfg.name}'s "
                             f"tensor buffers: {exc}") from None
    return cfg, net, words


def breakdown(step: dict) -> dict:
    """Where a step's cycles go: per phase code the summed ``cycles``, ``dma`` (exposed DMA),
    and each one's share of the step's ``cycles + dma_cycles`` (issue 17 item 4 asks for the
    exposed pre-generation share: at most 2 %)."""
    out = {}
    for q in step["phases"]:
        out[q["phase"]] = out.get(q["phase"], 0) + q["cycles"]
    out["dma"] = step["dma_cycles"]
    total = step["cycles"] + step["dma_cycles"]
    shares = {k: round(v / total, 4) if total else 0.0 for k, v in out.items()}
    return {"cycles": out, "share": shares, "total": total}


def build_report(args, cfg, net, res: dict, wall_build: float) -> dict:
    """``report.json`` from the cocotb run's log (``res``)."""
    from sparseforge.gen.schedule import config_hash
    from sparseforge.sim.host import e2e
    steps = []
    for r in res["steps"]:
        st = e2e.report_step(r["log"], tensors_compared=r["tensors_compared"],
                             mismatched=r["mismatched"])
        for k in ("loss", "golden_loss"):
            if k in r:
                st[k] = r[k]
        if r.get("network_load"):
            # the weights and masks placed on chip before the step (once per run: a later
            # step finds them there); not step time or traffic
            st["network_load"] = r["network_load"]
        st["breakdown"] = breakdown(st)
        steps.append(st)
    return {"schema_version": e2e.REPORT_SCHEMA_VERSION, "preset": cfg.name,
            "config_hash": f"{config_hash(cfg):08x}", "network": net.name,
            "batch": net.batch, "simulator": args.sim, "engine": args.engine, "steps": steps,
            "data_plane": cfg.data_plane, "check": res.get("check", "golden"),
            "sim_cycles": res["sim_cycles"], "sim_wall_s": round(res["wall_s"], 3),
            "sim_cycles_per_s": round(res["sim_cycles"] / res["wall_s"]) if res["wall_s"] else 0,
            "build_s": round(wall_build, 3), "schedule_words": res["schedule_words"],
            "seed": args.seed, "prune_seed": args.prune_seed, "lr_shift": args.lr_shift,
            "command": f"python -m sparseforge {getattr(args, 'prog', 'e2e')} " +
                       shlex.join(getattr(args, "argv", []))}


def run(args, log=print, progress=None) -> tuple[dict, bool]:
    """Plan, build, simulate; returns ``(report, passed)``. ``progress(k, run)`` after each
    step (the cpp engine only: the cocotb engine runs in a simulator process).
    ``args.waves_file`` (optional): where the waveform goes instead of the run folder."""
    from sparseforge.sim.testkit import runner as R
    _check_args(args)
    cfg, net, words = plan(args)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not R.simulator_available(args.sim):
        raise UsageError(f"{args.sim} is not installed (run `make setup`)")
    log_path = out / "log.json"
    log_path.unlink(missing_ok=True)
    params = {"config": cfg.to_dict(), "seed": args.seed, "prune_seed": args.prune_seed,
              "lr_shift": args.lr_shift, "network": args.net, "batch": args.batch,
              "steps": args.steps, "log_path": str(log_path),
              "check": getattr(args, "check", "golden")}
    waves_file = getattr(args, "waves_file", None)
    passed = True
    t0 = time.perf_counter()
    if args.engine == "cpp":
        from sparseforge.sim.fastsim.build import build_fast
        work = out / f"fast-{cfg.key()}{'-waves' if args.waves else ''}"
        log(f"the accelerator for {cfg.name}: Verilator + C++ harness (built once per "
            f"configuration in {work}) ...")
        lib = build_fast(cfg, work, waves=args.waves)
        wall_build = time.perf_counter() - t0
        log(f"running {args.steps} step(s) of {net.name} (batch {net.batch}, schedule {words} "
            f"words) on {cfg.name} under verilator (cpp engine) ...")
        try:
            vcd = (Path(waves_file) if waves_file else work / "dump.vcd") if args.waves \
                else None
            _run_cpp(cfg, lib, params, log_path, waves=vcd, progress=progress)
        except AssertionError as exc:
            passed = False
            log(f"the run failed: {exc}")
    else:
        if args.waves:
            os.environ["WAVES"] = "1"
        work = out / f"sim-{cfg.key()}-{args.sim}"
        log(f"the accelerator for {cfg.name} under {args.sim} (emitted and built once per "
            f"configuration) ...")
        build_dir = R.build_once("accelerator", cfg, args.sim, work,
                                 build_name="build-waves" if args.waves else "build")
        wall_build = time.perf_counter() - t0
        log(f"running {args.steps} step(s) of {net.name} (batch {net.batch}, schedule {words} "
            f"words) on {cfg.name} under {args.sim} ...")
        try:
            R.run_test(args.sim, "accelerator", "sparseforge.sim.host.e2e_cocotb", build_dir,
                       params=params, testcase="e2e_training_step", test_dir=work / "run")
        except AssertionError as exc:
            passed = False
            log(f"the run failed: {exc}")
        if args.waves and waves_file:
            dumps = sorted((work / "run").glob("dump.*"))
            if dumps:
                import shutil
                Path(waves_file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dumps[0], waves_file)
                log(f"waveform ({dumps[0].suffix[1:]}) copied to {waves_file}")
    if not log_path.exists():
        raise RuntimeError("the run wrote no log (see the simulator output above)")
    res = json.loads(log_path.read_text())
    report = build_report(args, cfg, net, res, wall_build)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    passed = passed and all(s["tensors_mismatched"] == 0 for s in report["steps"])
    return report, passed


def _run_cpp(cfg, lib, params, log_path, *, waves=None, progress=None):
    """The steps on the fast engine; the log is written before the checks (as the cocotb
    test does), so a failing run still leaves its figures."""
    from sparseforge.sim.host.driver import Driver
    from sparseforge.sim.host.e2e_run import check_steps, public_log, run_steps
    if waves is not None:
        Path(waves).parent.mkdir(parents=True, exist_ok=True)
    drv = Driver.fast(cfg, lib, waves=waves)
    try:
        res = asyncio.run(run_steps(drv, params, info=lambda m: None, progress=progress))
    finally:
        drv.transport.sim.close()          # flushes the VCD
    log_path.write_text(json.dumps(public_log(res), indent=1))
    check_steps(res)


def summary(report: dict) -> str:
    lines = [f"{report['network']} batch {report['batch']} on {report['preset']} "
             f"({report['simulator']}, {report.get('engine', 'cocotb')} engine), data plane: "
             f"{report['data_plane']}"]
    for k, s in enumerate(report["steps"]):
        ratio = s["cycles"] / s["array_cycles"] if s["array_cycles"] else float("nan")
        checked = (f"{s['tensors_compared'] - s['tensors_mismatched']}/"
                   f"{s['tensors_compared']} tensors equal the golden model"
                   if s["tensors_compared"] else "not checked")
        loss = f"loss {s['loss']:.6f}; " if "loss" in s else ""
        lines.append(f"step {k}: {loss}{checked}; {s['cycles']} "
                     f"cycles for {s['array_cycles']} array cycles ({ratio:.2f}x); host words "
                     f"in {s['host_words_in']}, out {s['host_words_out']}")
        if "breakdown" in s:
            sh = s["breakdown"]["share"]
            lines.append("  share of cycles + exposed DMA: " + ", ".join(
                f"{k} {100 * v:.1f}%" for k, v in sh.items()))
    lines.append(f"{report['sim_cycles']} simulated cycles in {report['sim_wall_s']:.1f} s "
                 f"({report['sim_cycles_per_s']} cycles/s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    return guarded(_main, argv)


def _main(argv) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv                          # for the report's command line
    try:
        report, passed = run(args)
    except UsageError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    print(summary(report))
    print(f"wrote {Path(args.output) / 'report.json'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
