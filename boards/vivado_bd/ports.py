"""The generated core's port list: parsed from its Verilog and sorted into the interfaces the
wrapper declares (clock, reset, interrupt, AXI4-Lite slave, AXI4-Stream slave and master).

A change of the core's ports that the block design cannot carry raises ``ValueError`` here,
when the tree is generated, instead of in Vivado.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparseforge.boards.vivado_bd.design import CORE_MODULE

__all__ = ["CorePort", "CoreInterfaces", "parse_verilog_ports", "classify_ports"]

# AXI4-Lite slave channel signals (logical names of xilinx.com:interface:aximm:1.0) with the
# direction seen from the slave; PROT is optional.
_AXIL_SLAVE = {
    "AWADDR": "input", "AWPROT": "input", "AWVALID": "input", "AWREADY": "output",
    "WDATA": "input", "WSTRB": "input", "WVALID": "input", "WREADY": "output",
    "BRESP": "output", "BVALID": "output", "BREADY": "input",
    "ARADDR": "input", "ARPROT": "input", "ARVALID": "input", "ARREADY": "output",
    "RDATA": "output", "RRESP": "output", "RVALID": "output", "RREADY": "input",
}
_AXIL_OPTIONAL = {"AWPROT", "ARPROT"}
# AXI4-Stream signals (xilinx.com:interface:axis:1.0), direction seen from a slave.
_AXIS_SLAVE = {"TDATA": "input", "TVALID": "input", "TREADY": "output", "TLAST": "input",
               "TKEEP": "input"}
_AXIS_REQUIRED = {"TDATA", "TVALID", "TREADY"}


@dataclass(frozen=True)
class CorePort:
    """One port of the generated core: ``direction`` is ``"input"`` or ``"output"``."""
    name: str
    direction: str
    width: int

    @property
    def decl(self) -> str:
        """``[w-1:0] `` (with the trailing blank) or ``""`` for one bit."""
        return f"[{self.width - 1}:0] " if self.width > 1 else ""


@dataclass
class CoreInterfaces:
    """The core's ports sorted into the interfaces the wrapper declares."""
    clk: CorePort
    rst: CorePort
    irq: CorePort
    s_axil: dict      # logical name (AWADDR, ...) -> CorePort
    s_axis: dict      # logical name (TDATA, ...) -> CorePort
    m_axis: dict

    @property
    def axil_addr_width(self) -> int:
        return self.s_axil["AWADDR"].width

    @property
    def axil_data_width(self) -> int:
        return self.s_axil["WDATA"].width



_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?(\\\S+|[A-Za-z_][\w$]*)\s*;", re.M)


def parse_verilog_ports(text: str, module: str = CORE_MODULE) -> list[CorePort]:
    """Ports of ``module`` in Verilog ``text`` (non-ANSI header, as Yosys writes it), in the order
    of the module header."""
    head = re.search(r"^module\s+" + re.escape(module) + r"\s*\(([^;]*)\)\s*;", text, re.M)
    if head is None:
        raise ValueError(f"module {module!r} not found")
    order = [n.strip() for n in head.group(1).replace("\n", " ").split(",") if n.strip()]
    end = text.find("\nendmodule", head.end())
    body = text[head.end():end if end >= 0 else len(text)]
    decls = {}
    for m in _DECL.finditer(body):
        direction, msb, lsb, name = m.groups()
        if direction == "inout":
            raise ValueError(f"inout port {name!r} is not supported")
        width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
        decls.setdefault(name.strip(), CorePort(name.strip(), direction, width))
    missing = [n for n in order if n not in decls]
    if missing:
        raise ValueError(f"no direction found for port(s) {missing} of {module!r}")
    return [decls[n] for n in order]


def classify_ports(ports: list[CorePort]) -> CoreInterfaces:
    """Sort the core's ports into clock, reset, interrupt, AXI4-Lite and AXI4-Stream interfaces.

    ``ValueError`` for a port that fits none of them, a wrong direction or a missing required
    signal, so that a change of the core's ports shows up here instead of in Vivado.
    """
    by_name = {p.name: p for p in ports}
    single = {}
    for name, direction in (("clk", "input"), ("rst", "input"), ("irq", "output")):
        p = by_name.get(name)
        if p is None or p.direction != direction or p.width != 1:
            raise ValueError(f"the core needs a one-bit {direction} {name!r}, got {p}")
        single[name] = p
    groups = {"s_axil": {}, "s_axis": {}, "m_axis": {}}
    for p in ports:
        if p.name in single:
            continue
        prefix, _, sig = p.name.rpartition("_")
        if prefix == "s_axil" and sig.upper() in _AXIL_SLAVE:
            want = _AXIL_SLAVE[sig.upper()]
        elif prefix in ("s_axis", "m_axis") and sig.upper() in _AXIS_SLAVE:
            want = _AXIS_SLAVE[sig.upper()]
            if prefix == "m_axis":
                want = "output" if want == "input" else "input"
        else:
            raise ValueError(f"port {p.name!r} belongs to no known interface (clk, rst, irq, "
                             f"s_axil_*, s_axis_t*, m_axis_t*)")
        if p.direction != want:
            raise ValueError(f"port {p.name!r} is an {p.direction}, expected an {want}")
        groups[prefix][sig.upper()] = p
    for need, names in (("s_axil", set(_AXIL_SLAVE) - _AXIL_OPTIONAL),
                        ("s_axis", _AXIS_REQUIRED), ("m_axis", _AXIS_REQUIRED)):
        lost = sorted(names - set(groups[need]))
        if lost:
            raise ValueError(f"interface {need} lacks {lost}")
    return CoreInterfaces(clk=single["clk"], rst=single["rst"], irq=single["irq"], **groups)
