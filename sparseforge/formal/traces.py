"""Counterexample traces: a minimal reader for the VCD files smtbmc writes, and a text table
of the DUT's ports per cycle (what a failed proof's summary and ``--trace`` print)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["read_vcd", "trace_table"]


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
