"""FPGA platforms and build flows."""
