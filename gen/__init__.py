"""Configuration, command-line interface and Verilog emission."""
