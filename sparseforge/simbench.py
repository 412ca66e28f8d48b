"""Simulator-throughput benchmark (issue #7 item 4): one fixed cocotb workload on the ``tiny``
preset's ``pe_array``, under Icarus and Verilator, through :mod:`sparseforge.sim.testkit.runner`.

    python -m sparseforge.simbench [-o build/bench-sim] [--sims icarus,verilator]

(also ``make bench BENCH_ARGS=--sim``, which runs it after the model benchmark).

Workload: ``tests/hdl/cocotb_pe_array.py::pe_array_layer`` with :data:`WORKLOAD` -- a 3x3 FP layer
(2:4 weights, half-zero activations, seed :data:`SEED`) mapped onto the 2x2 array, run three
times after a reset (no idle/back-pressure; random idle + random back-pressure; bursty idle +
``1110`` back-pressure), every output
checked bit-exact against the golden model inside the test. So the cocotb run includes the
Python side (stream drivers, golden model, checks), as every cocotb test of the project does.

Per simulator: ``build_s`` (compile, from a clean build folder), ``run_s`` (wall clock of the
whole ``runner.test`` call: simulator start-up, cocotb, the test), ``test_s`` (the testcase's
own real time as cocotb records it in ``results.xml``), ``sim_cycles`` (cocotb's simulated time
of the testcase / the 10 ns clock period) and ``cycles_per_s`` = ``sim_cycles / run_s``,
``cycles_per_s_test`` = ``sim_cycles / test_s``. Verilog generation (``build_block`` +
``write_verilog``) is timed once as ``verilog_s``; it is shared by both simulators.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from sparseforge.sim.testkit import runner as R

BLOCK = "pe_array"
TEST_MODULE = "cocotb_pe_array"
TESTCASE = "pe_array_layer"
CLOCK_NS = 10                       # tests/hdl/cocotb_pe_array.py: Clock(dut.clk, 10, unit="ns")
SEED = 900
WORKLOAD = dict(mode="fp", kernel=3, stride=1, padding=1, zero_frac=0.5, nm=[2, 4], raw=False,
                mapping="interleaved", cin=8, cout=8, height=10, width=10,
                value_range=[-2000, 2000], runs=[["always", "always"], ["random", "random"], ["bursty", "cycle"]])


def _tests_dir() -> Path:
    """The repository's ``tests/hdl/`` (the cocotb module imports ``test_pe_array`` from it,
    whose helpers name the ``pe_array`` ports ``x__{i}``, ``taps__{i}__{j}``, ``o__{j}``, ...)."""
    here = Path(__file__).resolve().parent.parent / "tests" / "hdl"
    if not (here / f"{TEST_MODULE}.py").exists():
        raise FileNotFoundError(f"{TEST_MODULE}.py not found under {here} (needs a source "
                                f"checkout of sparseforge)")
    return here


def _testcase_times(results_xml: Path) -> tuple[float, float]:
    """``(sim_time_ns, real time s)`` of the testcase from cocotb's xUnit ``results.xml``."""
    root = ET.parse(results_xml).getroot()
    scale = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6}
    for tc in root.iter("testcase"):
        if tc.get("name") == TESTCASE:
            props = {p.get("name"): p.get("value") for p in tc.iter("property")}
            ns = float(props["sim_time_duration"]) * scale[props["sim_time_unit"]]
            return ns, float(tc.get("time"))
    raise ValueError(f"no testcase {TESTCASE!r} in {results_xml}")


def run(out="build/bench-sim", sims=R.SIMULATORS, preset_name="tiny", log=print) -> dict:
    """Emit, build (clean) and run the workload under each of ``sims``; returns the section
    stored as ``bench.json["simulators"]``."""
    from sparseforge.gen.blocks import build_block
    from sparseforge.gen.config import preset
    from sparseforge.gen.verilog import write_verilog

    bad = [s for s in sims if s not in R.SIMULATORS]
    if bad:
        raise ValueError(f"sims: unknown simulator(s) {bad}; allowed: {R.SIMULATORS}")
    out = Path(out).resolve()
    cfg = preset(preset_name)
    tests = str(_tests_dir())
    if tests not in sys.path:           # the runner passes sys.path on as PYTHONPATH
        sys.path.insert(0, tests)
    t0 = time.perf_counter()
    rtl = out / "rtl" / f"{BLOCK}.v"
    component, used = build_block(BLOCK, cfg)
    write_verilog(component, BLOCK, rtl, config=cfg, params=used)
    verilog_s = time.perf_counter() - t0
    params = {"seed": SEED, "config": cfg.to_dict(), **WORKLOAD}
    rows = []
    for sim in sims:
        if not R.simulator_available(sim):
            rows.append({"simulator": sim, "error": "not installed (make setup)"})
            continue
        bdir = out / sim
        shutil.rmtree(bdir, ignore_errors=True)          # time a full compile every time
        t0 = time.perf_counter()
        R.build(sim, [rtl], BLOCK, bdir)
        build_s = time.perf_counter() - t0
        tdir = bdir / "run"
        t0 = time.perf_counter()
        R.run_test(sim, BLOCK, TEST_MODULE, bdir, params=params, testcase=TESTCASE,
                   test_dir=tdir)
        run_s = time.perf_counter() - t0
        sim_ns, test_s = _testcase_times(tdir / "results.xml")
        cycles = int(round(sim_ns / CLOCK_NS))
        rows.append({"simulator": sim, "build_s": round(build_s, 2), "run_s": round(run_s, 2),
                     "test_s": round(test_s, 2), "sim_cycles": cycles,
                     "cycles_per_s": round(cycles / run_s, 1),
                     "cycles_per_s_test": round(cycles / test_s, 1)})
        log(f"simbench: {sim}: build {build_s:.1f} s, run {run_s:.1f} s, {cycles} cycles")
    return {"preset": cfg.name, "block": BLOCK, "test": f"tests/hdl/{TEST_MODULE}.py::{TESTCASE}",
            "params": params, "clock_ns": CLOCK_NS, "verilog_s": round(verilog_s, 2),
            "rows": rows}


def table(section: dict) -> str:
    lines = [f"Simulator throughput: {section['block']} ({section['preset']} preset), "
             f"{section['test']}, Verilog emitted in {section['verilog_s']} s",
             f"{'simulator':<10} {'build s':>8} {'run s':>7} {'test s':>7} {'sim cycles':>11} "
             f"{'cycles/s':>9} {'cyc/s test':>10}"]
    for r in section["rows"]:
        if "error" in r:
            lines.append(f"{r['simulator']:<10} {r['error']}")
            continue
        lines.append(f"{r['simulator']:<10} {r['build_s']:>8.2f} {r['run_s']:>7.2f} "
                     f"{r['test_s']:>7.2f} {r['sim_cycles']:>11} {r['cycles_per_s']:>9.0f} "
                     f"{r['cycles_per_s_test']:>10.0f}")
    lines.append("run s: whole runner.test call; test s: the testcase's time from results.xml; "
                 "cycles/s = sim cycles / run s (cyc/s test: / test s).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparseforge.simbench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", default="build/bench-sim")
    ap.add_argument("--sims", default=",".join(R.SIMULATORS))
    a = ap.parse_args(argv)
    try:
        sec = run(out=a.out, sims=[s for s in a.sims.split(",") if s])
    except ValueError as e:
        ap.error(str(e))
    print(table(sec))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "simulators.json").write_text(json.dumps(sec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
