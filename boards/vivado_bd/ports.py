"""The generated core's port list: parsed from its Verilog and sorted into the interfaces the
wrapper declares (clock, reset, interrupt, AXI4-Lite slave, AXI4-Stream slave and master, and
the optional AXI4 memory-mapped master ``m_axi`` of the DMA engine, :mod:`sparseforge.hdl.dma`).

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
# AXI4 (full) master signals (xilinx.com:interface:aximm:1.0, PROTOCOL AXI4) with the direction
# seen from the master, in the order the wrapper declares them. Required: what an INCR-burst
# master with write strobes and responses needs (every signal DmaEngine has but its IDs);
# optional: IDs (DmaEngine's are fixed 0 and one bit wide), PROT, CACHE, LOCK, QOS.
_AXI4_MASTER = {
    "AWID": "output", "AWADDR": "output", "AWLEN": "output", "AWSIZE": "output",
    "AWBURST": "output", "AWLOCK": "output", "AWCACHE": "output", "AWPROT": "output",
    "AWQOS": "output", "AWVALID": "output", "AWREADY": "input",
    "WDATA": "output", "WSTRB": "output", "WLAST": "output", "WVALID": "output",
    "WREADY": "input",
    "BID": "input", "BRESP": "input", "BVALID": "input", "BREADY": "output",
    "ARID": "output", "ARADDR": "output", "ARLEN": "output", "ARSIZE": "output",
    "ARBURST": "output", "ARLOCK": "output", "ARCACHE": "output", "ARPROT": "output",
    "ARQOS": "output", "ARVALID": "output", "ARREADY": "input",
    "RID": "input", "RDATA": "input", "RRESP": "input", "RLAST": "input", "RVALID": "input",
    "RREADY": "output",
}
_AXI4_OPTIONAL = {"AWID", "BID", "ARID", "RID", "AWLOCK", "ARLOCK", "AWCACHE", "ARCACHE",
                  "AWPROT", "ARPROT", "AWQOS", "ARQOS"}
# Fixed widths of AXI4 (AMBA AXI4: AxLEN 8 bits, AxSIZE 3, AxBURST 2, xRESP 2, AxCACHE 4,
# AxPROT 3, AxQOS 4, AxLOCK 1 in AXI4), checked so that a mistyped port is caught here.
_AXI4_WIDTHS = {"AWLEN": 8, "ARLEN": 8, "AWSIZE": 3, "ARSIZE": 3, "AWBURST": 2, "ARBURST": 2,
                "BRESP": 2, "RRESP": 2, "AWCACHE": 4, "ARCACHE": 4, "AWPROT": 3, "ARPROT": 3,
                "AWQOS": 4, "ARQOS": 4, "AWLOCK": 1, "ARLOCK": 1, "AWVALID": 1, "AWREADY": 1,
                "WLAST": 1, "WVALID": 1, "WREADY": 1, "BVALID": 1, "BREADY": 1, "ARVALID": 1,
                "ARREADY": 1, "RLAST": 1, "RVALID": 1, "RREADY": 1}


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
    #: AXI4 master (logical name AWADDR, ... -> CorePort), or None when the core has no m_axi_*
    m_axi: dict | None = None

    @property
    def axil_addr_width(self) -> int:
        return self.s_axil["AWADDR"].width

    @property
    def axil_data_width(self) -> int:
        return self.s_axil["WDATA"].width

    @property
    def mem_data_width(self) -> int:
        """Data width of ``m_axi`` in bits (``ValueError`` when the core has none)."""
        return self._m_axi()["WDATA"].width

    @property
    def mem_addr_width(self) -> int:
        """Byte-address width of ``m_axi`` (``ValueError`` when the core has none)."""
        return self._m_axi()["AWADDR"].width

    @property
    def mem_id_width(self) -> int:
        """ID width of ``m_axi`` (0 when the core drives no IDs)."""
        return self._m_axi()["AWID"].width if "AWID" in self._m_axi() else 0

    def _m_axi(self) -> dict:
        if self.m_axi is None:
            raise ValueError("the core has no AXI4 master m_axi")
        return self.m_axi


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
    """Sort the core's ports into clock, reset, interrupt, AXI4-Lite, AXI4-Stream and (optional)
    AXI4 master interfaces.

    ``ValueError`` for a port that fits none of them, a wrong direction or a missing required
    signal, so that a change of the core's ports shows up here instead of in Vivado. ``m_axi``
    is optional as a whole: a core without any ``m_axi_*`` port gets ``m_axi=None`` (and the
    block design of today); one with some gets every required AXI4 signal checked, plus the
    widths AXI4 fixes, equal address / data widths on both channels, ``WSTRB`` = data / 8 and
    a data width that is a power of two from 32 to 1024 bits.
    """
    by_name = {p.name: p for p in ports}
    single = {}
    for name, direction in (("clk", "input"), ("rst", "input"), ("irq", "output")):
        p = by_name.get(name)
        if p is None or p.direction != direction or p.width != 1:
            raise ValueError(f"the core needs a one-bit {direction} {name!r}, got {p}")
        single[name] = p
    groups = {"s_axil": {}, "s_axis": {}, "m_axis": {}, "m_axi": {}}
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
        elif prefix == "m_axi" and sig.upper() in _AXI4_MASTER:
            want = _AXI4_MASTER[sig.upper()]
        else:
            raise ValueError(f"port {p.name!r} belongs to no known interface (clk, rst, irq, "
                             f"s_axil_*, s_axis_t*, m_axis_t*, m_axi_*)")
        if p.direction != want:
            raise ValueError(f"port {p.name!r} is an {p.direction}, expected an {want}")
        groups[prefix][sig.upper()] = p
    needs = [("s_axil", set(_AXIL_SLAVE) - _AXIL_OPTIONAL), ("s_axis", _AXIS_REQUIRED),
             ("m_axis", _AXIS_REQUIRED)]
    if groups["m_axi"]:
        needs.append(("m_axi", set(_AXI4_MASTER) - _AXI4_OPTIONAL))
    for need, names in needs:
        lost = sorted(names - set(groups[need]))
        if lost:
            raise ValueError(f"interface {need} lacks {lost}")
    if groups["m_axi"]:
        _check_m_axi_widths(groups["m_axi"])
    return CoreInterfaces(clk=single["clk"], rst=single["rst"], irq=single["irq"],
                          s_axil=groups["s_axil"], s_axis=groups["s_axis"],
                          m_axis=groups["m_axis"], m_axi=groups["m_axi"] or None)


def _check_m_axi_widths(sigs: dict) -> None:
    """The widths of an AXI4 master's signals agree with AXI4 and with each other."""
    def bad(what):
        raise ValueError(f"interface m_axi: {what}")
    for logical, width in _AXI4_WIDTHS.items():
        if logical in sigs and sigs[logical].width != width:
            bad(f"{sigs[logical].name} is {sigs[logical].width} bits wide, AXI4 says {width}")
    for a, b in (("AWADDR", "ARADDR"), ("WDATA", "RDATA"), ("AWID", "ARID"), ("AWID", "BID"),
                 ("ARID", "RID")):
        if a in sigs and b in sigs and sigs[a].width != sigs[b].width:
            bad(f"{sigs[a].name} ({sigs[a].width} bits) and {sigs[b].name} ({sigs[b].width} "
                f"bits) differ")
    dw = sigs["WDATA"].width
    if dw not in (32, 64, 128, 256, 512, 1024):
        bad(f"data width must be one of (32, 64, ..., 1024) bits, not {dw}")
    if sigs["WSTRB"].width != dw // 8:
        bad(f"{sigs['WSTRB'].name} must be {dw // 8} bits wide (one per data byte), not "
            f"{sigs['WSTRB'].width}")
    if not 12 <= sigs["AWADDR"].width <= 64:
        bad(f"address width must be 12..64 bits, not {sigs['AWADDR'].width}")
    ids = [k for k in ("AWID", "BID", "ARID", "RID") if k in sigs]
    if ids and len(ids) != 4:
        bad(f"IDs must be all of AWID, BID, ARID, RID or none, not {ids}")
