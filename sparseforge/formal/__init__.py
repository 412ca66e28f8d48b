"""Formal proofs with SymbiYosys: proof harnesses, must-fail mutants, a runner, and the
``make formal`` table.

The package, by job:

* :mod:`~sparseforge.formal.harnesses` -- the Amaranth harnesses: :class:`FormalHarness` (the
  stream rules on every ``lib.stream`` port of any component), :class:`SelectorHarness` (the
  N:M selector's latency and functional invariants) and :class:`DmaBoundsHarness` (the DMA
  engine's buffer and memory address bounds);
* :mod:`~sparseforge.formal.mutants` -- deliberately broken designs for the negative proofs
  (:class:`TiesToHigherSelector`, :class:`BrokenStage`);
* :mod:`~sparseforge.formal.sby` -- running SymbiYosys: tool discovery, ``.sby`` files,
  :func:`run_sby`, the structural check :func:`run_comb_check`, result parsing
  (:class:`ProofResult`, :class:`FormalError`);
* :mod:`~sparseforge.formal.traces` -- counterexample VCDs as text tables;
* :mod:`~sparseforge.formal.runner` -- the proof list (:func:`default_proofs`), checking
  against the expected result and the command line :func:`main`.

Run everything and print a table with ``python -m sparseforge.formal`` (what ``make formal``
calls). See ``docs/formal.md``. The public names of all five modules are importable from here.
"""

from sparseforge.formal.harnesses import (CmdTableHarness, DmaBoundsHarness, FormalHarness,
                                          SelectorHarness, stream_ports)
from sparseforge.formal.mutants import BrokenStage, TiesToHigherSelector
from sparseforge.formal.runner import (Proof, check_proof, default_proofs, format_table, main,
                                       run_proof, run_proofs)
from sparseforge.formal.sby import (ENGINES, FormalError, ProofResult, prewarm, run_comb_check,
                                    run_sby, tools_available)
from sparseforge.formal.traces import read_vcd, trace_table

__all__ = [
    "ENGINES", "FormalHarness", "SelectorHarness", "DmaBoundsHarness", "CmdTableHarness", "TiesToHigherSelector", "BrokenStage",
    "stream_ports", "tools_available", "prewarm", "run_sby", "run_comb_check", "ProofResult",
    "FormalError", "read_vcd", "trace_table", "Proof", "default_proofs", "run_proof",
    "check_proof", "run_proofs", "format_table", "main",
]
