"""Bit-exact golden model, performance model and test kit."""
