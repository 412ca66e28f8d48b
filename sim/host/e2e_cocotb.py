"""cocotb test module of the end-to-end run (``make e2e --engine cocotb``,
:mod:`sparseforge.e2e`, and ``tests/sim/cocotb_e2e.py``): the steps of
:func:`sparseforge.sim.host.e2e_run.run_steps` on the ``accelerator`` RTL under Icarus or
Verilator (through VPI), checked by :func:`~sparseforge.sim.host.e2e_run.check_steps`.

Parameters (JSON in ``SF_PARAMS``, :func:`sparseforge.sim.testkit.cocotb_streams.env_params`):
those of :func:`~sparseforge.sim.host.e2e_run.run_steps` and ``log_path`` (where the run's log
is written as JSON: per step the backend's phase records, the number of tensors compared and
the mismatches; the simulated cycles and the wall time of the steps). The log is written
before the checks, so a failing run still leaves its figures.
"""

import json
import logging

import cocotb

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.sim.host.driver import Driver
from sparseforge.sim.host.e2e_run import check_steps, public_log, run_steps
from sparseforge.sim.testkit.cocotb_streams import env_params

CLOCK_NS = 10


@cocotb.test()
async def e2e_training_step(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    drv = await Driver.start(dut, cfg, period_ns=CLOCK_NS)
    # cocotbext-axi logs every AXI4-Lite access at INFO: hundreds of counter reads per step
    for bus in (drv.axil.write_if, drv.axil.read_if):
        bus.log.setLevel(logging.WARNING)
    res = await run_steps(drv, p, info=dut._log.info)
    if p.get("log_path"):
        with open(p["log_path"], "w") as fh:
            json.dump(public_log(res), fh, indent=1)
    check_steps(res)
    dut._log.info(f"{len(res['steps'])} step(s): {res['steps'][0]['tensors_compared']} tensors "
                  f"per step equal bit for bit (RTL vs golden); {res['wall_s']:.1f} s wall, "
                  f"{res['sim_cycles']} simulated cycles")
