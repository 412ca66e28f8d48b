"""Shared pytest fixtures: Verilog emitted and simulators built once per session per config.

* ``sim`` parametrization: ``icarus`` and ``verilator`` (``SIM=`` restricts), skipped with a
  reason when the simulator is not installed.
* ``cocotb_run``: ``cocotb_run(block, sim, test_module, params=..., config=..., **block_params)``
  emits the block's Verilog (once per session and configuration), builds it (once per
  simulator), runs the cocotb module with ``params`` in ``SF_PARAMS`` and returns the number of
  cocotb tests that passed.
"""

from __future__ import annotations

import json
import os

import pytest

from sparseforge.sim.testkit import runner as _runner

_runner.prepare_env()


def pytest_generate_tests(metafunc):
    if "sim" in metafunc.fixturenames:
        params = []
        for s in _runner.selected_simulators():
            marks = [pytest.mark.cocotb]
            if not _runner.simulator_available(s):
                marks.append(pytest.mark.skip(reason=f"{s} not installed (run `make setup`)"))
            params.append(pytest.param(s, marks=marks, id=s))
        metafunc.parametrize("sim", params)


def pytest_collection_modifyitems(config, items):
    """Keep each (test module, simulator) on one xdist worker (``--dist loadgroup``) so each
    Verilator model is compiled once per session, and the two simulators run in parallel."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "sim" in callspec.params:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}-{callspec.params['sim']}"))


def soak_scale() -> float:
    """``SF_SOAK=short`` (what `make test` sets) scales soaks down; ``long`` runs them fully."""
    return {"short": 1.0, "long": 10.0}.get(os.environ.get("SF_SOAK", "short"), 1.0)


@pytest.fixture(scope="session")
def cocotb_run(tmp_path_factory):
    from sparseforge.gen.blocks import build_block
    from sparseforge.gen.config import preset
    from sparseforge.gen.verilog import write_verilog

    base = tmp_path_factory.mktemp("cocotb")
    emitted: dict = {}
    built: set = set()
    counter = {"n": 0}

    def run(block: str, sim: str, test_module: str, *, params: dict | None = None,
            config=None, testcase=None, **block_params) -> int:
        cfg = config if config is not None else preset("tiny")
        key = f"{block}-{cfg.key()}-{abs(hash(json.dumps(block_params, sort_keys=True))) % 10**8}"
        if key not in emitted:
            component, used = build_block(block, cfg, **block_params)
            emitted[key] = write_verilog(component, block, base / key / "rtl", config=cfg,
                                         params=used)
        build_dir = base / key / sim
        if (key, sim) not in built:
            _runner.build(sim, [emitted[key]], block, build_dir)
            built.add((key, sim))
        counter["n"] += 1
        test_dir = build_dir / f"run{counter['n']}"
        return _runner.run_test(sim, block, test_module, build_dir, params=params,
                                testcase=testcase, test_dir=test_dir)

    return run
