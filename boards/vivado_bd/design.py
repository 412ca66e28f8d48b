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
