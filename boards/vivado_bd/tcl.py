"""``create_bd.tcl`` (:func:`block_design_tcl`): the Vivado project, the IP Integrator block
design around the XDMA and the core, synthesis, implementation and ``write_bitstream``; and
``build_bd.sh`` (:func:`build_script`), which runs it in batch mode.

The script is assembled from one function per section (project, PCIe and XDMA, core clock
domain, datapath, connections, implementation), in the order Vivado runs them.
"""

from __future__ import annotations

from sparseforge.boards.vcu1525 import PCIE_GT_QUAD, PCIE_REFCLK_HZ
from sparseforge.boards.vivado_bd.design import (AXI_CLK_HZ, BD_NAME, BITSTREAM_NAME,
                                                 BOARD_PART, BYPASS_BAR_BYTES, CARD_MEM_BASE,
                                                 CORE_CELL, CORE_CLK, CORE_MHZ_DEFAULT,
                                                 CORE_MHZ_MAX, CORE_MODULE, DDR4_AXI_DATA_WIDTH,
                                                 DDR4_BOARD_INTERFACE, DDR4_BYTES, DDR4_CELL,
                                                 DDR4_CLOCK_BOARD_INTERFACE, DDR4_CONFIG,
                                                 DDR4_UI_CLK_HZ, PART, PROJECT_NAME,
                                                 WRAPPER_MODULE, XDMA_BYPASS_CONFIG, XDMA_CONFIG,
                                                 XDMA_STREAM_BYTES, check_core_mhz)
from sparseforge.boards.vivado_bd.ports import CoreInterfaces

__all__ = ["block_design_tcl", "build_script"]


def block_design_tcl(itf: CoreInterfaces, *, core_mhz: int = CORE_MHZ_DEFAULT,
                     core_file: str = f"{CORE_MODULE}.v",
                     wrapper_file: str = f"{WRAPPER_MODULE}.v", xdc_file: str = "pcie.xdc",
                     cdc_file: str = "cdc.xdc", jobs: int = 8) -> str:
    """``create_bd.tcl``: project, block design, wrapper, synthesis ... ``write_bitstream``.

    ``core_mhz``: frequency of ``core_clk``, the accelerator's clock (:func:`check_core_mhz`).
    Run from its folder: ``vivado -mode batch -source create_bd.tcl`` (full flow) or ``...
    -tclargs bd_only`` (stop after ``validate_bd_design`` and ``make_wrapper``). The number of
    parallel jobs comes from ``$SF_VIVADO_JOBS`` (default ``jobs``).

    When the core has the AXI4 master ``m_axi`` (``itf.m_axi``, the DMA engine), the design
    also gets card memory (:func:`_tcl_card_memory`): the DDR4 controller on the VCU1525's
    channel 0, bound to the board interfaces (so the project gets the board part), an
    ``axi_clock_converter`` from ``core_clk`` at the core's full data width, the XDMA's
    DMA-bypass BAR (``M_AXI_BYPASS``, 512 bits, through its own ``axi_clock_converter``) as the
    host's path into card memory, and a SmartConnect on the DDR4's UI clock joining both;
    card memory at AXI address 0 in both address spaces. Without ``m_axi`` the script is the
    same, byte for byte, as before card memory existed.
    """
    core_mhz = check_core_mhz(core_mhz)
    core_window = 1 << itf.axil_addr_width
    mem = itf.m_axi is not None
    return (_tcl_project(core_mhz, core_file, wrapper_file, xdc_file, cdc_file, jobs, itf)
            + _tcl_pcie(xdc_file, mem)
            + _tcl_core_clock(core_mhz)
            + _tcl_datapath(itf, wrapper_file)
            + (_tcl_card_memory(itf) if mem else "")
            + _tcl_connections(core_mhz, core_window, itf)
            + (_tcl_card_memory_addresses(itf) if mem else "")
            + _tcl_implementation())


def _tcl_project(core_mhz: int, core_file: str, wrapper_file: str, xdc_file: str,
                 cdc_file: str, jobs: int, itf: CoreInterfaces) -> str:
    """Header comment (the design at a glance, the sources followed), arguments, project and
    sources (and, with card memory, the board part)."""
    axi_mhz = AXI_CLK_HZ // 1_000_000
    mem_diagram = mem_board = ""
    if itf.m_axi is not None:
        dw, ui_mhz = itf.mem_data_width, DDR4_UI_CLK_HZ // 1_000_000
        mem_diagram = f"""\
#   card memory ({ui_mhz} MHz c0_ddr4_ui_clk of {DDR4_CELL}):
#     {CORE_CELL}/m_axi ({dw} b, {CORE_CLK}) --> mem_cc ({dw} b) --> mem_smc/S00_AXI --+
#     XDMA --M_AXI_BYPASS (BAR, {DDR4_AXI_DATA_WIDTH} b, axi_aclk) --> bypass_cc --> \
mem_smc/S01 --+--> {DDR4_CELL} (DDR4 C0)
"""
        mem_board = f"""\
# Card memory: {DDR4_CELL} is bound to the board interfaces {DDR4_BOARD_INTERFACE} and
# {DDR4_CLOCK_BOARD_INTERFACE} (pins, I/O standards and the 300 MHz reference clock come from the
# VCU1525 board files, not from {xdc_file}): the project needs the board part.
set sf_board_part [get_board_parts -quiet -latest_file_version {{{BOARD_PART.rsplit(':', 1)[0]}:*}}]
if {{$sf_board_part eq ""}} {{
    error "the VCU1525 board files ({BOARD_PART}) are not installed: install them from the \
Xilinx board store (Vivado: Tools > Vivado Store > Boards, or xhub::install) and run again"
}}
set_property board_part $sf_board_part [current_project]
"""
    return f"""\
# create_bd.tcl: Vivado IP Integrator block design for the sparseforge accelerator on the
# Xilinx VCU1525 ({PART}). Generated by sparseforge.boards.vivado_bd -- do not edit.
#
#                          axi_aclk ({axi_mhz} MHz)            |  {CORE_CLK} ({core_mhz} MHz)
#   PCIe Gen3 x16 --> XDMA --M_AXI_LITE (BAR0)---> axil_cc ---> SmartConnect --> {CORE_CELL}/s_axil
#                      |   --M_AXIS_H2C_0 (512 b)--> dwidth --> h2c_cc --> {CORE_CELL}/s_axis (32 b)
#                      |   <-S_AXIS_C2H_0 (512 b)--  dwidth <-- c2h_cc <-- {CORE_CELL}/m_axis (32 b)
#                      |   <-usr_irq_req[0]-- 2-flop sync in the wrapper <-- {CORE_CELL} irq
#                      +-- axi_aclk --> core_clk_wiz (MMCM) --> {CORE_CLK} --> {CORE_CELL}/clk
#                      +-- axi_aresetn --> core_rst (proc_sys_reset) --> {CORE_CELL}/aresetn
{mem_diagram}#
# Run (from this folder):  vivado -mode batch -source create_bd.tcl
#          block design only:  vivado -mode batch -source create_bd.tcl -tclargs bd_only
#
# Sources followed (public examples; nothing here was run through Vivado when it was generated):
#   firesim/firesim platforms/xilinx_alveo_u200/cl_firesim/scripts/create_bd_2022.1.tcl
#     (U200 = same xcvu9p die and package): util_ds_buf IBUF_DS_ODIV2 -> xdma sys_clk,
#     IBUF_OUT -> sys_clk_gt, PERST# -> sys_rst_n, pcie_mgt external, module reference;
#   Xilinx/XilinxBoardStore boards/Xilinx/vcu1525/1.4/preset.xml (pciex16_preset: X16, 8.0_GT/s,
#     Advanced, en_gt_selection, select_quad {PCIE_GT_QUAD}; pcie_refclk_preset: IBUFDSGTE);
#   public XDMA AXI4-Stream designs: xdma_0/M_AXIS_H2C_0, xdma_0/S_AXIS_C2H_0, xdma_0/M_AXI_LITE;
#   firesim's U200 design for the second clock domain (xdma_0/M_AXI_LITE -> axi_clock_converter,
#     clk_wiz + proc_sys_reset); public designs for the clk_wiz and axis_clock_converter settings.
# IP VLNVs carry no version: Vivado picks the one installed.

set script_dir [file dirname [file normalize [info script]]]
set bd_only [expr {{[info exists ::argv] && [lsearch -exact $::argv bd_only] >= 0}}]
set jobs {jobs}
if {{[info exists ::env(SF_VIVADO_JOBS)]}} {{ set jobs $::env(SF_VIVADO_JOBS) }}

# -- project and sources -----------------------------------------------------------------------
create_project -force {PROJECT_NAME} [file join $script_dir vivado] -part {PART}
{mem_board}set_property target_language Verilog [current_project]
add_files -norecurse [list [file join $script_dir {core_file}] \\
    [file join $script_dir {wrapper_file}]]
add_files -fileset constrs_1 -norecurse [file join $script_dir {xdc_file}]
# {cdc_file}: the interrupt synchronizer's set_max_delay; its cells exist after synthesis only
set cdc_xdc [file join $script_dir {cdc_file}]
add_files -fileset constrs_1 -norecurse $cdc_xdc
set_property USED_IN_SYNTHESIS false [get_files $cdc_xdc]
update_compile_order -fileset sources_1

"""


def _tcl_pcie(xdc_file: str, mem: bool = False) -> str:
    """The block design, its external PCIe ports (and the DDR4's, with card memory), the
    reference clock buffer and the XDMA (with card memory: its DMA-bypass BAR too)."""
    config = XDMA_CONFIG + (XDMA_BYPASS_CONFIG if mem else ())
    xdma_dict = " \\\n".join(f"    CONFIG.{k} {{{v}}}" for k, v in config)
    mem_ports = bypass = ""
    if mem:
        mem_ports = f"""\
# Card memory: DDR4 channel 0 and its 300 MHz reference clock, board-bound (pins from the board
# files, as firesim's Alveo U200 design creates them)
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:ddr4_rtl:1.0 {DDR4_BOARD_INTERFACE}
set mem_refclk [create_bd_intf_port -mode Slave \\
    -vlnv xilinx.com:interface:diff_clock_rtl:1.0 {DDR4_CLOCK_BOARD_INTERFACE}]
set_property CONFIG.FREQ_HZ 300000000 $mem_refclk

"""
        bypass = f"""\
# ... and the host's path into card memory: the DMA stays in AXI4-Stream mode; the "PCIe to DMA
# bypass" BAR ({BYPASS_BAR_BYTES >> 30} GiB, 64-bit, prefetchable; host offset = AXI address) is the
# AXI4 master M_AXI_BYPASS ({8 * XDMA_STREAM_BYTES} bits, axi_aclk)
"""
    return f"""\
# -- block design ------------------------------------------------------------------------------
create_bd_design {BD_NAME}
current_bd_design {BD_NAME}

# External ports: PCIe lanes, 100 MHz reference clock, PERST# (pins in {xdc_file})
set pcie_mgt [create_bd_intf_port -mode Master \\
    -vlnv xilinx.com:interface:pcie_7x_mgt_rtl:1.0 pcie_mgt]
set pcie_refclk [create_bd_intf_port -mode Slave \\
    -vlnv xilinx.com:interface:diff_clock_rtl:1.0 pcie_refclk]
set_property CONFIG.FREQ_HZ {PCIE_REFCLK_HZ} $pcie_refclk
set pcie_perstn [create_bd_port -dir I -type rst pcie_perstn]
set_property CONFIG.POLARITY ACTIVE_LOW $pcie_perstn

{mem_ports}# PCIe reference clock buffer (IBUFDS_GTE4)
set refclk_buf [create_bd_cell -type ip -vlnv xilinx.com:ip:util_ds_buf refclk_buf]
set_property CONFIG.C_BUF_TYPE IBUFDSGTE $refclk_buf

# XDMA: PCIe Gen3 x16, AXI4-Stream with one H2C and one C2H channel, AXI4-Lite master BAR
{bypass}set xdma [create_bd_cell -type ip -vlnv xilinx.com:ip:xdma xdma_0]
set_property -dict [list \\
{xdma_dict} \\
] $xdma

"""


def _tcl_core_clock(core_mhz: int) -> str:
    """The core's clock domain: ``clk_wiz`` (with the exactness check of its MMCM setting) and
    ``proc_sys_reset``."""
    axi_mhz = AXI_CLK_HZ // 1_000_000
    return f"""\
# -- core clock domain -------------------------------------------------------------------------
# {CORE_CLK} ({core_mhz} MHz): the accelerator's clock. The core closes timing nearer 100 MHz than
# the XDMA's {axi_mhz} MHz axi_aclk, so it runs in a domain of its own (change it with
# --core-mhz; whole MHz, 10..{CORE_MHZ_MAX}).
# Source: an MMCM fed by axi_aclk, not the board's 300 MHz SYSCLK0. The core is of no use
# without the PCIe link and is reset with it anyway (axi_aresetn); deriving core_clk from
# axi_aclk needs no extra pins, I/O standard or create_clock (the VCU1525 sources disagree on
# SYSCLK0's I/O standard, LVDS or DIFF_SSTL12), and Vivado derives core_clk from the MMCM.
# axi_aclk is already on a global buffer (BUFG_GT): PRIM_SOURCE No_buffer. The MMCM is held in
# reset while axi_aresetn is low: axi_aclk may stop or move during a PCIe reset, and an MMCM
# has to be reset to lock again afterwards.
set core_clk_wiz [create_bd_cell -type ip -vlnv xilinx.com:ip:clk_wiz core_clk_wiz]
set_property -dict [list \\
    CONFIG.PRIM_SOURCE {{No_buffer}} \\
    CONFIG.PRIM_IN_FREQ {{{axi_mhz}.000}} \\
    CONFIG.CLK_OUT1_PORT {{{CORE_CLK}}} \\
    CONFIG.CLKOUT1_REQUESTED_OUT_FREQ {{{core_mhz}.000}} \\
    CONFIG.USE_LOCKED {{true}} \\
    CONFIG.USE_RESET {{true}} \\
    CONFIG.RESET_TYPE {{ACTIVE_LOW}} \\
    CONFIG.RESET_PORT {{resetn}} \\
] $core_clk_wiz
# The wrapper declares FREQ_HZ {core_mhz * 1_000_000} on {CORE_CELL}/clk; IP Integrator rejects a
# clock whose FREQ_HZ differs. Say early if the MMCM setting clk_wiz chose is not exact.
proc sf_mmcm_out_mhz {{cell}} {{
    if {{[catch {{
        set period [get_property CONFIG.MMCM_CLKIN1_PERIOD $cell]
        set mult [get_property CONFIG.MMCM_CLKFBOUT_MULT_F $cell]
        set divclk [get_property CONFIG.MMCM_DIVCLK_DIVIDE $cell]
        set div [get_property CONFIG.MMCM_CLKOUT0_DIVIDE_F $cell]
        set mhz [expr {{1000.0 / $period * $mult / ($divclk * $div)}}]
    }}]}} {{ return "" }}
    return $mhz
}}
set core_clk_mhz [sf_mmcm_out_mhz $core_clk_wiz]
if {{$core_clk_mhz ne "" && abs($core_clk_mhz - {core_mhz}) > 0.001}} {{
    puts "WARNING: core_clk_wiz gives $core_clk_mhz MHz, not {core_mhz} MHz: validate_bd_design \\
will reject FREQ_HZ {core_mhz * 1_000_000} of {CORE_CELL}/clk; regenerate with another --core-mhz"
}}

# Reset of the core domain: axi_aresetn (asynchronous here) and the MMCM's locked, synchronized
# to {CORE_CLK}; interconnect_aresetn for the converters, peripheral_aresetn for the core
set core_rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset core_rst]
set_property CONFIG.C_EXT_RESET_HIGH {{0}} $core_rst

"""


def _tcl_datapath(itf: CoreInterfaces, wrapper_file: str) -> str:
    """AXI4-Stream width and clock converters, the AXI4-Lite clock converter and SmartConnect,
    and the core as a module reference."""
    stream_bytes = (itf.s_axis["TDATA"].width + 7) // 8
    out_bytes = (itf.m_axis["TDATA"].width + 7) // 8
    core_window = 1 << itf.axil_addr_width
    return f"""\
# AXI4-Stream width converters between the XDMA ({8 * XDMA_STREAM_BYTES} bits) and the core
set h2c_dw [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_dwidth_converter h2c_dwidth]
set_property -dict [list CONFIG.S_TDATA_NUM_BYTES {{{XDMA_STREAM_BYTES}}} \\
    CONFIG.M_TDATA_NUM_BYTES {{{stream_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $h2c_dw
set c2h_dw [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_dwidth_converter c2h_dwidth]
set_property -dict [list CONFIG.S_TDATA_NUM_BYTES {{{out_bytes}}} \\
    CONFIG.M_TDATA_NUM_BYTES {{{XDMA_STREAM_BYTES}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $c2h_dw

# AXI4-Stream clock converters, axi_aclk <-> {CORE_CLK}, on the core's side of the width
# converters ({8 * stream_bytes} / {8 * out_bytes} bits: small FIFOs); IP Integrator sets them
# asynchronous (two clock domains)
set h2c_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_clock_converter h2c_cc]
set_property -dict [list CONFIG.TDATA_NUM_BYTES {{{stream_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $h2c_cc
set c2h_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_clock_converter c2h_cc]
set_property -dict [list CONFIG.TDATA_NUM_BYTES {{{out_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $c2h_cc

# AXI4-Lite BAR -> core registers (address width {itf.axil_addr_width} bits): an
# axi_clock_converter (axi_aclk -> {CORE_CLK}, as firesim's U200 design does for M_AXI_LITE),
# then the SmartConnect in {CORE_CLK} next to the core (it decodes the {core_window}-byte window,
# DECERR elsewhere)
set axil_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_clock_converter axil_cc]
set axil_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axil_smc]
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}}] $axil_smc

# The accelerator, as a module reference to {WRAPPER_MODULE} ({wrapper_file})
if {{[catch {{create_bd_cell -type module -reference {WRAPPER_MODULE} {CORE_CELL}}} err]}} {{
    error "cannot add the module reference {WRAPPER_MODULE}: $err"
}}

"""


def _tcl_connections(core_mhz: int, core_window: int, itf: CoreInterfaces) -> str:
    """Every net of the design, by clock domain, and the address map of the register window
    (card memory adds its crossings' pins to the nets they share; its own nets and address map
    come from :func:`_tcl_card_memory` / :func:`_tcl_card_memory_addresses`)."""
    axi_mhz = AXI_CLK_HZ // 1_000_000
    mem = itf.m_axi is not None

    def more(*pins):
        return "".join(f" [get_bd_pins {p}]" for p in pins) if mem else ""
    return f"""\
# -- connections -------------------------------------------------------------------------------
connect_bd_intf_net [get_bd_intf_ports pcie_refclk] [get_bd_intf_pins refclk_buf/CLK_IN_D]
connect_bd_net [get_bd_pins refclk_buf/IBUF_DS_ODIV2] [get_bd_pins xdma_0/sys_clk]
connect_bd_net [get_bd_pins refclk_buf/IBUF_OUT] [get_bd_pins xdma_0/sys_clk_gt]
connect_bd_net [get_bd_ports pcie_perstn] [get_bd_pins xdma_0/sys_rst_n]{more("mem_sys_rst/Op1")}
connect_bd_intf_net [get_bd_intf_pins xdma_0/pcie_mgt] [get_bd_intf_ports pcie_mgt]

connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI_LITE] [get_bd_intf_pins axil_cc/S_AXI]
connect_bd_intf_net [get_bd_intf_pins axil_cc/M_AXI] [get_bd_intf_pins axil_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axil_smc/M00_AXI] [get_bd_intf_pins {CORE_CELL}/s_axil]
connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXIS_H2C_0] [get_bd_intf_pins h2c_dwidth/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins h2c_dwidth/M_AXIS] [get_bd_intf_pins h2c_cc/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins h2c_cc/M_AXIS] [get_bd_intf_pins {CORE_CELL}/s_axis]
connect_bd_intf_net [get_bd_intf_pins {CORE_CELL}/m_axis] [get_bd_intf_pins c2h_cc/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins c2h_cc/M_AXIS] [get_bd_intf_pins c2h_dwidth/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins c2h_dwidth/M_AXIS] [get_bd_intf_pins xdma_0/S_AXIS_C2H_0]
# The wrapper's irq is already synchronous to axi_aclk (its irq_clk): a level, held until serviced
connect_bd_net [get_bd_pins {CORE_CELL}/irq] [get_bd_pins xdma_0/usr_irq_req]

# axi_aclk ({axi_mhz} MHz) domain: XDMA side of every crossing, width converters, MMCM input
connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins core_clk_wiz/clk_in1] \\
    [get_bd_pins {CORE_CELL}/irq_clk] [get_bd_pins axil_cc/s_axi_aclk] \\
    [get_bd_pins h2c_dwidth/aclk] [get_bd_pins h2c_cc/s_axis_aclk] \\
    [get_bd_pins c2h_cc/m_axis_aclk] [get_bd_pins c2h_dwidth/aclk]{more("bypass_cc/s_axi_aclk")}
connect_bd_net [get_bd_pins xdma_0/axi_aresetn] [get_bd_pins core_clk_wiz/resetn] \\
    [get_bd_pins core_rst/ext_reset_in] [get_bd_pins axil_cc/s_axi_aresetn] \\
    [get_bd_pins h2c_dwidth/aresetn] [get_bd_pins h2c_cc/s_axis_aresetn] \\
    [get_bd_pins c2h_cc/m_axis_aresetn] [get_bd_pins c2h_dwidth/aresetn]\
{more("bypass_cc/s_axi_aresetn")}
# {CORE_CLK} ({core_mhz} MHz) domain: the core, the SmartConnect, core side of every crossing
connect_bd_net [get_bd_pins core_clk_wiz/{CORE_CLK}] [get_bd_pins core_rst/slowest_sync_clk] \\
    [get_bd_pins {CORE_CELL}/clk] [get_bd_pins axil_cc/m_axi_aclk] [get_bd_pins axil_smc/aclk] \\
    [get_bd_pins h2c_cc/m_axis_aclk] [get_bd_pins c2h_cc/s_axis_aclk]{more("mem_cc/s_axi_aclk")}
connect_bd_net [get_bd_pins core_clk_wiz/locked] [get_bd_pins core_rst/dcm_locked]
connect_bd_net [get_bd_pins core_rst/interconnect_aresetn] [get_bd_pins axil_cc/m_axi_aresetn] \\
    [get_bd_pins axil_smc/aresetn] [get_bd_pins h2c_cc/m_axis_aresetn] \\
    [get_bd_pins c2h_cc/s_axis_aresetn]{more("mem_cc/s_axi_aresetn")}
connect_bd_net [get_bd_pins core_rst/peripheral_aresetn] [get_bd_pins {CORE_CELL}/aresetn]

# -- address map: the core's {core_window}-byte register window at AXI address 0 of the BAR -------
set core_segs [get_bd_addr_segs {CORE_CELL}/s_axil/*]
if {{[catch {{assign_bd_address -target_address_space [get_bd_addr_spaces xdma_0/M_AXI_LITE] \\
        -offset 0x00000000 -range 0x{core_window:08X} $core_segs}} err]}} {{
    puts "assign_bd_address with offset failed ($err); assigning automatically"
    assign_bd_address
}}

"""


def _tcl_card_memory(itf: CoreInterfaces) -> str:
    """Card memory (only with ``m_axi``): the DDR4 controller, its reset, the two AXI4 clock
    converters into its UI clock (the core's ``m_axi`` at the core's data width, the XDMA's
    bypass BAR at 512 bits), the memory SmartConnect, and their nets."""
    dw, aw = itf.mem_data_width, itf.mem_addr_width
    ui_mhz = DDR4_UI_CLK_HZ // 1_000_000
    ddr4_dict = " \\\n".join(f"    CONFIG.{k} {{{v}}}" for k, v in DDR4_CONFIG)
    conv = ("no width conversion" if dw == DDR4_AXI_DATA_WIDTH else
            f"{'upsized' if dw < DDR4_AXI_DATA_WIDTH else 'downsized'} in the SmartConnect")
    return f"""\
# -- card memory -------------------------------------------------------------------------------
# {DDR4_CELL}: DDR4 controller (MIG) on channel 0 of the VCU1525, bound to the board interfaces
# {DDR4_BOARD_INTERFACE} / {DDR4_CLOCK_BOARD_INTERFACE} and set to the values of the board store's
# ddr4_sdram_c0_preset (Xilinx/XilinxBoardStore boards/Xilinx/vcu1525/1.4/preset.xml; the same
# interface names and C0_* keys as firesim's Alveo U200 design): one 16 GiB RDIMM, 72 bits with
# ECC, DDR4-2400 (tCK 833 ps), 300 MHz reference; AXI slave C0_DDR4_S_AXI \
{DDR4_AXI_DATA_WIDTH} bits, 34-bit
# address, on c0_ddr4_ui_clk ({ui_mhz} MHz = memory clock / 4). Its ECC control slave
# C0_DDR4_S_AXI_CTRL stays unconnected (inputs tied inactive by IP Integrator).
set ddr4 [create_bd_cell -type ip -vlnv xilinx.com:ip:ddr4 {DDR4_CELL}]
set_property -dict [list \\
{ddr4_dict} \\
] $ddr4
# sys_rst (active high): PERST#, inverted (as firesim's U200 design inverts its reset for
# ddr4_0/sys_rst): the memory is reset and recalibrated with the PCIe link, like everything else
set mem_sys_rst [create_bd_cell -type ip -vlnv xilinx.com:ip:util_vector_logic mem_sys_rst]
set_property -dict [list CONFIG.C_OPERATION {{not}} CONFIG.C_SIZE {{1}}] $mem_sys_rst
# Reset of the UI clock domain: c0_ddr4_ui_clk_sync_rst (active high), held until the
# calibration completes (c0_init_calib_complete as dcm_locked): until then the memory
# SmartConnect is in reset and the core's DMA engine sees no handshake (its timeout reports it)
set mem_rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset mem_rst]
set_property CONFIG.C_EXT_RESET_HIGH {{1}} $mem_rst

# AXI4 clock converters into c0_ddr4_ui_clk, at full width: the core's m_axi ({dw} bits,
# {aw}-bit address, {CORE_CLK} -> c0_ddr4_ui_clk) and the XDMA's bypass master
# ({8 * XDMA_STREAM_BYTES} bits, axi_aclk -> c0_ddr4_ui_clk); widths and IDs are propagated from
# the interfaces; IP Integrator sets them asynchronous (independent clocks)
set mem_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_clock_converter mem_cc]
set bypass_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_clock_converter bypass_cc]
# Memory SmartConnect on c0_ddr4_ui_clk: S00 = the core, S01 = the host; M00 = the DDR4
# (S00 {dw} bits -> M00 {DDR4_AXI_DATA_WIDTH} bits: {conv}; IDs and address widths
# adapted, DECERR outside the memory; the partial beats' WSTRB are the engine's own)
set mem_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect mem_smc]
set_property -dict [list CONFIG.NUM_SI {{2}} CONFIG.NUM_MI {{1}}] $mem_smc

"""


def _tcl_card_memory_addresses(itf: CoreInterfaces) -> str:
    """Card memory's nets and its place in both address spaces (after the register window)."""
    aw = itf.mem_addr_width
    core_range = min(DDR4_BYTES, 1 << aw)
    ui_mhz = DDR4_UI_CLK_HZ // 1_000_000
    return f"""\
# -- card memory: connections ----------------------------------------------------------------
connect_bd_intf_net [get_bd_intf_ports {DDR4_BOARD_INTERFACE}] \
[get_bd_intf_pins {DDR4_CELL}/C0_DDR4]
connect_bd_intf_net [get_bd_intf_ports {DDR4_CLOCK_BOARD_INTERFACE}] \
[get_bd_intf_pins {DDR4_CELL}/C0_SYS_CLK]
connect_bd_net [get_bd_pins mem_sys_rst/Res] [get_bd_pins {DDR4_CELL}/sys_rst]
connect_bd_intf_net [get_bd_intf_pins {CORE_CELL}/m_axi] [get_bd_intf_pins mem_cc/S_AXI]
connect_bd_intf_net [get_bd_intf_pins mem_cc/M_AXI] [get_bd_intf_pins mem_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI_BYPASS] [get_bd_intf_pins bypass_cc/S_AXI]
connect_bd_intf_net [get_bd_intf_pins bypass_cc/M_AXI] [get_bd_intf_pins mem_smc/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins mem_smc/M00_AXI] [get_bd_intf_pins {DDR4_CELL}/C0_DDR4_S_AXI]
# c0_ddr4_ui_clk ({ui_mhz} MHz) domain: the DDR4's AXI side, mem_smc, the memory side of both
# converters
connect_bd_net [get_bd_pins {DDR4_CELL}/c0_ddr4_ui_clk] [get_bd_pins mem_rst/slowest_sync_clk] \\
    [get_bd_pins mem_smc/aclk] [get_bd_pins mem_cc/m_axi_aclk] [get_bd_pins bypass_cc/m_axi_aclk]
connect_bd_net [get_bd_pins {DDR4_CELL}/c0_ddr4_ui_clk_sync_rst] [get_bd_pins mem_rst/ext_reset_in]
connect_bd_net [get_bd_pins {DDR4_CELL}/c0_init_calib_complete] [get_bd_pins mem_rst/dcm_locked]
connect_bd_net [get_bd_pins mem_rst/interconnect_aresetn] [get_bd_pins mem_smc/aresetn] \\
    [get_bd_pins mem_cc/m_axi_aresetn] [get_bd_pins bypass_cc/m_axi_aresetn] \\
    [get_bd_pins {DDR4_CELL}/c0_ddr4_aresetn]

# -- address map: card memory (DDR4 C0) at 0x{CARD_MEM_BASE:X} for the core ({aw}-bit m_axi: \
0x{core_range:X} bytes)
# and for the host (bypass BAR: 0x{BYPASS_BAR_BYTES:X} bytes, BAR offset = DDR4 address)
set mem_segs [get_bd_addr_segs {DDR4_CELL}/C0_DDR4_MEMORY_MAP/*]
if {{[catch {{
    assign_bd_address -target_address_space [get_bd_addr_spaces {CORE_CELL}/m_axi] \\
        -offset 0x{CARD_MEM_BASE:016X} -range 0x{core_range:X} $mem_segs
    assign_bd_address -target_address_space [get_bd_addr_spaces xdma_0/M_AXI_BYPASS] \\
        -offset 0x{CARD_MEM_BASE:016X} -range 0x{BYPASS_BAR_BYTES:X} $mem_segs
}} err]}} {{
    puts "assign_bd_address of card memory failed ($err); assigning automatically"
    assign_bd_address
}}

"""


def _tcl_implementation() -> str:
    """``validate_bd_design``, the block design's wrapper (``bd_only`` stops there), synthesis,
    implementation, reports and the bitstream."""
    return f"""\
validate_bd_design
save_bd_design

set bd_wrapper [make_wrapper -files [get_files {BD_NAME}.bd] -top]
add_files -norecurse $bd_wrapper
set_property top {BD_NAME}_wrapper [current_fileset]
update_compile_order -fileset sources_1

if {{$bd_only}} {{
    puts "bd_only: stopped after the block design ({BD_NAME}) and its wrapper"
    return
}}

# -- synthesis, implementation, bitstream --------------------------------------------------------
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{ error "synth_1 failed" }}
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{ error "impl_1 failed" }}

open_run impl_1
report_timing_summary -max_paths 10 -file [file join $script_dir timing_summary.rpt]
report_utilization -file [file join $script_dir utilization.rpt]
set bit [file join [get_property DIRECTORY [get_runs impl_1]] {BD_NAME}_wrapper.bit]
if {{![file exists $bit]}} {{ error "no bitstream at $bit" }}
file copy -force $bit [file join $script_dir {BITSTREAM_NAME}]
puts "bitstream: [file join $script_dir {BITSTREAM_NAME}]"
"""


def build_script() -> str:
    """``build_bd.sh``: like Amaranth's ``build_top.sh`` (``$VIVADO`` or ``vivado``)."""
    return ("#!/bin/sh\n"
            "# Generated by sparseforge.boards.vivado_bd -- do not edit.\n"
            "# Runs the VCU1525 XDMA block design: project, block design, synthesis,\n"
            "# implementation, bitstream. Extra arguments go to Vivado (e.g. -tclargs bd_only).\n"
            "set -e\n"
            "cd \"$(dirname \"$0\")\"\n"
            ": ${VIVADO:=vivado}\n"
            "\"$VIVADO\" -mode batch -log create_bd.log -journal create_bd.jou "
            "-source create_bd.tcl \"$@\"\n")
