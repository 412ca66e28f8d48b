"""Shared pytest fixtures: Verilog emitted and simulators built once per session per config.

* ``sim`` parametrization: ``icarus`` and ``verilator`` (``SIM=`` restricts), skipped with a
  reason when the simulator is not installed.
* ``cocotb_run``: ``cocotb_run(block, sim, test_module, params=..., config=..., **block_params)``
  emits the block's Verilog (once per session and configuration), builds it (once per
  simulator), runs the cocotb module with ``params`` in ``SF_PARAMS`` and returns the number of
  cocotb tests that passed.
"""

from __future__ import annotations

import hashlib
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


@pytest.fixture(scope="session")
def cocotb_run(tmp_path_factory, worker_id):
    from sparseforge.gen.config import preset

    # Shared by all xdist workers of this session (each worker's basetemp is a child of it), so
    # each (block, config) is emitted once and each simulator model is compiled once per
    # session; a file lock serialises the first build.
    root = tmp_path_factory.getbasetemp()
    base = (root.parent if worker_id != "master" else root) / "cocotb"
    base.mkdir(exist_ok=True)
    counter = {"n": 0}

    def run(block: str, sim: str, test_module: str, *, params: dict | None = None,
            config=None, testcase=None, **block_params) -> int:
        cfg = config if config is not None else preset("tiny")
        digest = hashlib.sha1(json.dumps(block_params, sort_keys=True).encode()).hexdigest()[:8]
        key = f"{block}-{cfg.key()}-{digest}"
        with _runner.locked(base / f"{key}.lock"):
            build_dir = _runner.build_once(block, cfg, sim, base / key,
                                           block_params=block_params)
        counter["n"] += 1
        test_dir = build_dir / f"run-{worker_id}-{counter['n']}"
        return _runner.run_test(sim, block, test_module, build_dir, params=params,
                                testcase=testcase, test_dir=test_dir)

    return run


