"""Amaranth components of the sparseforge accelerator (no numpy, no I/O at elaboration)."""
