"""Idle / back-pressure patterns: infinite iterators of booleans, one per clock cycle.

``True`` means "offer a beat" for a source (no idle cycle) and "accept" for a sink (no
back-pressure). Every random pattern takes an explicit seed; tests print it.

Named patterns (:data:`PATTERNS`):

* ``always`` -- never idle / never back-pressure (full throughput);
* ``cycle``  -- ``1, 1, 1, 0`` repeated (cocotbext-axi's classic pause pattern);
* ``random`` -- independent coin flips with probability 1/2;
* ``bursty`` -- random runs: on for 1..16 cycles, then off for 1..8 cycles.
"""

from __future__ import annotations

import itertools
import os
import random
from typing import Iterator

__all__ = ["PATTERNS", "make_pattern", "soak_scale"]

PATTERNS = ("always", "cycle", "random", "bursty")


def make_pattern(name: str, seed: int = 0) -> Iterator[bool]:
    """Return the named pattern as an infinite iterator (``ValueError`` on an unknown name)."""
    if name == "always":
        return itertools.repeat(True)
    if name == "cycle":
        return itertools.cycle([True, True, True, False])
    if name == "random":
        rng = random.Random(seed)
        return (rng.random() < 0.5 for _ in itertools.count())
    if name == "bursty":
        rng = random.Random(seed)

        def gen():
            while True:
                yield from itertools.repeat(True, rng.randint(1, 16))
                yield from itertools.repeat(False, rng.randint(1, 8))
        return gen()
    raise ValueError(f"pattern must be one of {PATTERNS}, not {name!r}")


def soak_scale() -> float:
    """``SF_SOAK=short`` (what `make test` sets) scales soaks down; ``long`` runs them fully."""
    return {"short": 1.0, "long": 10.0}.get(os.environ.get("SF_SOAK", "short"), 1.0)
