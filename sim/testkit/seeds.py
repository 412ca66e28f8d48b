"""Reproducible randomness for the golden-model tests: per-test generators derived from a file's
base seed and a test key (printed, so a failure names its seed), and derandomized hypothesis
settings."""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["rng_factory", "derandomized"]


def rng_factory(base_seed: int):
    """``rng_for(*key)``: a Generator seeded from ``base_seed`` and a test-specific ``key``
    (``[base_seed, crc32(repr(key))]``; printed, reproducible)."""
    def rng_for(*key):
        seed = [base_seed, zlib.crc32(repr(key).encode())]
        print(f"rng seed = {seed} (key {key!r})")
        return np.random.default_rng(seed)
    return rng_for


def derandomized(max_examples: int):
    """Hypothesis settings of the golden tests: ``max_examples``, no deadline, derandomized."""
    from hypothesis import settings
    return settings(max_examples=max_examples, deadline=None, derandomize=True)
