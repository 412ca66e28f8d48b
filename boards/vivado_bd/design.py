"""The block design's fixed facts: part, module / project / cell names, the files written, the
two clocks (the XDMA's ``axi_aclk`` and the core's own ``core_clk``), the XDMA configuration,
and :func:`check_core_mhz`, the one check of the core clock every generator applies.

Everything else in :mod:`sparseforge.boards.vivado_bd` reads its names and numbers from here,
so that the Tcl, the wrapper, the XDC and the README cannot disagree.
"""

from __future__ import annotations

from sparseforge.boards.vcu1525 import PCIE_GT_QUAD, VCU1525Platform

__all__ = ["PART", "CORE_MODULE", "WRAPPER_MODULE", "PROJECT_NAME", "BD_NAME", "CORE_CELL",
           "BITSTREAM_NAME", "BD_FILES", "AXI_CLK_HZ", "CORE_CLK", "CORE_MHZ_DEFAULT",
           "CORE_MHZ_MIN", "CORE_MHZ_MAX", "XDMA_STREAM_BYTES", "AXIL_BAR_BYTES", "XDMA_CONFIG",
           "BOARD_PART", "DDR4_CELL", "DDR4_BOARD_INTERFACE", "DDR4_CLOCK_BOARD_INTERFACE",
           "DDR4_CONFIG", "DDR4_AXI_DATA_WIDTH", "DDR4_AXI_ADDR_WIDTH", "DDR4_BYTES",
           "DDR4_UI_CLK_HZ", "CARD_MEM_BASE", "BYPASS_BAR_BYTES", "XDMA_BYPASS_CONFIG",
           "check_core_mhz"]

#: The VCU1525's part (the same string the standalone tree uses).
PART = (f"{VCU1525Platform.device}-{VCU1525Platform.package}-{VCU1525Platform.speed}")
#: Module name of the generated core and of its wrapper (the module reference).
CORE_MODULE = "accelerator"
WRAPPER_MODULE = "accelerator_wrapper"
#: Vivado project / block design / module-reference cell names used by ``create_bd.tcl``.
PROJECT_NAME = "sparseforge_vcu1525"
BD_NAME = "sparseforge_bd"
CORE_CELL = "accel_0"
#: The bitstream ``create_bd.tcl`` copies next to itself.
BITSTREAM_NAME = "sparseforge_vcu1525.bit"
#: Files :func:`write_block_design` writes.
BD_FILES = ("accelerator.v", "accelerator_wrapper.v", "create_bd.tcl", "pcie.xdc", "cdc.xdc",
            "build_bd.sh", "README")

#: XDMA ``axi_aclk`` for PCIe Gen3 x16 with the 512-bit user interface (``axisten_freq 250``):
#: the clock of the XDMA's AXI ports, the width converters, the ``usr_irq_req`` synchronizer and
#: the ``clk_wiz`` input. The core does not run on it (it closes timing nearer 100 MHz: 104 MHz
#: on the ECP5; unmeasured on the xcvu9p) but on ``core_clk``.
AXI_CLK_HZ = 250_000_000
#: The core's own clock (``clk_wiz`` output port name) and its frequency in MHz: default, limits.
#: Whole MHz only, so that the ``clk_wiz`` output and the wrapper's ``FREQ_HZ`` can agree exactly
#: (IP Integrator rejects a ``FREQ_HZ`` mismatch): every whole MHz from 10 to 250 has an exact
#: MMCME4 setting from 250 MHz (VCO 800..1600 MHz, CLKFBOUT_MULT_F and CLKOUT0_DIVIDE_F in 1/8
#: steps; 100, 125, 150, 160, 175, 200 ... with an integer multiplier, some odd values above
#: 128 MHz only with a fractional one). Whether ``clk_wiz`` picks an exact one is checked by
#: ``create_bd.tcl`` before ``validate_bd_design``.
CORE_CLK = "core_clk"
CORE_MHZ_DEFAULT = 125
CORE_MHZ_MIN = 10
CORE_MHZ_MAX = AXI_CLK_HZ // 1_000_000
#: Bytes per beat of the XDMA's AXI4-Stream channels at Gen3 x16 (``axi_data_width 512_bit``).
XDMA_STREAM_BYTES = 64
#: Size of the AXI4-Lite master BAR (BAR0 when the AXI-Lite master is enabled): 1 MiB; the
#: core's register window (4 KiB) sits at AXI address 0, the rest answers DECERR.
AXIL_BAR_BYTES = 1 << 20

#: XDMA configuration, in the order ``create_bd.tcl`` sets it. Sources: the Xilinx VCU1525
#: board preset (link, mode, GT quad) and public XDMA AXI4-Stream designs (the rest).
XDMA_CONFIG = (
    ("mode_selection", "Advanced"),
    ("pl_link_cap_max_link_width", "X16"),
    ("pl_link_cap_max_link_speed", "8.0_GT/s"),
    ("ref_clk_freq", "100_MHz"),
    ("en_gt_selection", "true"),
    ("select_quad", PCIE_GT_QUAD),
    ("axi_data_width", f"{8 * XDMA_STREAM_BYTES}_bit"),
    ("axisten_freq", str(AXI_CLK_HZ // 1_000_000)),
    ("xdma_axi_intf_mm", "AXI_Stream"),
    ("xdma_rnum_chnl", "1"),
    ("xdma_wnum_chnl", "1"),
    ("axilite_master_en", "true"),
    ("axilite_master_size", str(AXIL_BAR_BYTES >> 20)),
    ("axilite_master_scale", "Megabytes"),
    ("pciebar2axibar_axil_master", "0x00000000"),
    ("xdma_num_usr_irq", "1"),
)

# -- card memory: only when the core has the AXI4 master m_axi (the DMA engine) ---------------
#: The board part the project gets when the design has the DDR4 (board-bound interfaces need
#: the VCU1525 board files: Xilinx/XilinxBoardStore boards/Xilinx/vcu1525/1.4).
BOARD_PART = "xilinx.com:vcu1525:part0:1.4"
#: The DDR4 controller cell and the board interfaces it is bound to (board.xml of the VCU1525
#: board files: interface ``ddr4_sdram_c0`` (``ddr4_rtl``, DIMM slot 0, preset
#: ``ddr4_sdram_c0_preset``) and its reference clock ``default_300mhz_clk0``; the same names
#: firesim's Alveo U200 design (same die, package and DIMM layout) binds its ``ddr4_0`` to).
DDR4_CELL = "ddr4_0"
DDR4_BOARD_INTERFACE = "ddr4_sdram_c0"
DDR4_CLOCK_BOARD_INTERFACE = "default_300mhz_clk0"
#: AXI side of the DDR4 controller: 512-bit data, 34-bit byte address (16 GiB: one
#: MTA18ASF2G72PZ-2G3 RDIMM, 2G x 72 with ECC).
DDR4_AXI_DATA_WIDTH = 512
DDR4_AXI_ADDR_WIDTH = 34
DDR4_BYTES = 1 << DDR4_AXI_ADDR_WIDTH
#: The controller's user-interface clock ``c0_ddr4_ui_clk``: memory clock 1200 MHz
#: (``DDR4_TimePeriod`` 833 ps, DDR4-2400) / 4 = 300 MHz. The DDR4 side of both clock converters
#: and the memory SmartConnect run on it.
DDR4_UI_CLK_HZ = 300_000_000
#: DDR4 configuration, in the order ``create_bd.tcl`` sets it: the board interfaces, then every
#: value of the board store's ``ddr4_sdram_c0_preset`` (boards/Xilinx/vcu1525/1.4/preset.xml),
#: repeated so that the design does not depend on the preset being applied.
DDR4_CONFIG = (
    ("C0_DDR4_BOARD_INTERFACE", DDR4_BOARD_INTERFACE),
    ("C0_CLOCK_BOARD_INTERFACE", DDR4_CLOCK_BOARD_INTERFACE),
    ("C0.ControllerType", "DDR4_SDRAM"),
    ("C0.DDR4_MemoryType", "RDIMMs"),
    ("C0.DDR4_MemoryPart", "MTA18ASF2G72PZ-2G3"),
    ("C0.DDR4_DataWidth", "72"),
    ("C0.DDR4_Ecc", "true"),
    ("C0.DDR4_DataMask", "NONE"),
    ("C0.DDR4_InputClockPeriod", "3332"),
    ("C0.DDR4_TimePeriod", "833"),
    ("C0.DDR4_CasLatency", "17"),
    ("C0.DDR4_CasWriteLatency", "12"),
    ("C0.DDR4_CLKOUT0_DIVIDE", "5"),
    ("C0.BANK_GROUP_WIDTH", "2"),
    ("C0.CKE_WIDTH", "1"),
    ("C0.CS_WIDTH", "1"),
    ("C0.ODT_WIDTH", "1"),
    ("C0.DDR4_AxiDataWidth", str(DDR4_AXI_DATA_WIDTH)),
    ("C0.DDR4_AxiAddressWidth", str(DDR4_AXI_ADDR_WIDTH)),
    ("ADDN_UI_CLKOUT1_FREQ_HZ", "100"),
)
#: Where card memory sits in both AXI address spaces (the core's m_axi and the host's bypass
#: BAR): at 0, so a DMA descriptor's ``addr`` and a host offset into the BAR are the same number.
CARD_MEM_BASE = 0
#: The host's window onto card memory: XDMA's DMA-bypass BAR (AXI4 master ``M_AXI_BYPASS``),
#: the whole DDR4 channel, so that it needs a 64-bit (prefetchable) BAR.
BYPASS_BAR_BYTES = DDR4_BYTES
#: XDMA settings added when the design has card memory: the DMA stays in AXI4-Stream mode (the
#: two channels keep feeding s_axis / m_axis); the "PCIe to DMA bypass" BAR gives the host an AXI4
#: memory-mapped master into the DDR4. Names as public XDMA 4.1 block designs write them
#: (``axist_bypass_en``, ``axist_bypass_size`` / ``_scale``, ``pciebar2axibar_axist_bypass``,
#: ``axi_bypass_64bit_en``, ``axi_bypass_prefetchable``).
XDMA_BYPASS_CONFIG = (
    ("axist_bypass_en", "true"),
    ("axist_bypass_size", str(BYPASS_BAR_BYTES >> 30)),
    ("axist_bypass_scale", "Gigabytes"),
    ("axi_bypass_64bit_en", "true"),
    ("axi_bypass_prefetchable", "true"),
    ("pciebar2axibar_axist_bypass", f"0x{CARD_MEM_BASE:016X}"),
)



def check_core_mhz(value) -> int:
    """``value`` as the core clock in whole MHz, or ``ValueError`` (outside 10..250, not whole).

    Accepts an int, an integral float or a numeric string (the command line's ``--core-mhz``).
    """
    if isinstance(value, bool):
        raise ValueError(f"core_mhz must be a number of MHz, not {value!r}")
    try:
        mhz = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"core_mhz must be a number of MHz, not {value!r}") from None
    if not (CORE_MHZ_MIN <= mhz <= CORE_MHZ_MAX):
        raise ValueError(f"core_mhz must be between {CORE_MHZ_MIN} and {CORE_MHZ_MAX} MHz (the "
                         f"core clock comes from the {CORE_MHZ_MAX} MHz axi_aclk), not {value!r}")
    if mhz != int(mhz):
        raise ValueError(f"core_mhz must be a whole number of MHz (so that the clk_wiz output "
                         f"and the wrapper's FREQ_HZ agree exactly), not {value!r}")
    return int(mhz)
