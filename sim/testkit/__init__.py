"""Shared test kit: amaranth-sim stream helpers, cocotb stream drivers, back-pressure patterns."""
