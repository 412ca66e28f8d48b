"""Vivado IP Integrator block design for the accelerator on the VCU1525 (XDMA, PCIe Gen3 x16).

:func:`write_block_design` (:mod:`~sparseforge.boards.vivado_bd.tree`) writes, next to the
standalone Vivado tree of ``make bitstream BOARD=vcu1525 BLOCK=accelerator``, a folder ``bd/``
with

* ``accelerator.v`` -- the core as plain Verilog (``sparseforge.gen.verilog`` header, flat
  ports: ``clk``, ``rst``, ``s_axil_*``, ``s_axis_*``, ``m_axis_*``, ``irq``);
* ``accelerator_wrapper.v`` -- a thin Verilog wrapper (:func:`wrapper_verilog`) generated from
  the core's port list, with ``X_INTERFACE_INFO`` / ``X_INTERFACE_PARAMETER`` attributes so that
  IP Integrator infers the AXI4-Lite slave ``s_axil``, the AXI4-Stream slave ``s_axis`` and
  master ``m_axis``, the core clock ``clk`` (``ASSOCIATED_BUSIF s_axil:s_axis:m_axis``,
  ``FREQ_HZ`` = ``core_mhz``), the active-low reset ``aresetn``, the level-high interrupt
  ``irq`` and its clock ``irq_clk`` (the XDMA's ``axi_aclk``). The core's reset is Amaranth's
  active-high synchronous ``rst``: the wrapper registers ``~aresetn`` into it; the core's
  ``irq`` crosses into ``irq_clk`` through a register and a two-flop synchronizer;
* ``create_bd.tcl`` (:func:`block_design_tcl`) -- project for xcvu9p-fsgd2104-2L-e, the two
  Verilog files, a block design with the XDMA (PCIe Gen3 x16, AXI4-Stream, one H2C and one C2H
  channel, AXI4-Lite master BAR), a ``util_ds_buf`` IBUFDSGTE on the PCIe reference clock,
  the core clock domain (``clk_wiz`` ``core_clk`` at ``core_mhz`` from ``axi_aclk``,
  ``proc_sys_reset``), AXI4-Stream width converters (512 <-> 32 bits) and clock converters
  (32 bits, ``axi_aclk`` <-> ``core_clk``), an ``axi_clock_converter`` and a SmartConnect for
  the AXI4-Lite BAR, the wrapper as a module reference, then ``validate_bd_design``,
  ``make_wrapper`` and synthesis, implementation and ``write_bitstream`` (``-tclargs bd_only``
  stops after the block design);
* ``pcie.xdc`` (:func:`pcie_xdc`) -- the PCIe reference clock (``create_clock``, 100 MHz),
  PERST# and the 16 lanes from :mod:`sparseforge.boards.vcu1525`, plus the configuration
  settings every VCU1525 design carries;
* ``cdc.xdc`` (:func:`cdc_xdc`) -- the one hand-written clock-domain crossing (the wrapper's
  interrupt synchronizer): ``set_max_delay -datapath_only``, implementation only. The clock
  converters carry their own constraints and ``core_clk`` is derived by the ``clk_wiz``;
* ``build_bd.sh`` (``vivado -mode batch -source create_bd.tcl``) and ``README``.

Public examples this follows (cited again next to the lines they shaped):

* firesim/firesim, ``platforms/xilinx_alveo_u200/cl_firesim/scripts/create_bd_2022.1.tcl`` --
  XDMA block design on the Alveo U200 (same xcvu9p die and fsgd2104 package as the VCU1525):
  ``util_ds_buf`` ``IBUF_DS_ODIV2 -> xdma_0/sys_clk``, ``IBUF_OUT -> xdma_0/sys_clk_gt``,
  ``pcie_perstn -> xdma_0/sys_rst_n``, ``xdma_0/pcie_mgt`` to an external
  ``pcie_7x_mgt_rtl`` port, a module reference created with ``create_bd_cell -type module
  -reference``; its ``design/firesim_wrapper.v`` is a module-reference wrapper with
  ``X_INTERFACE_INFO`` / ``X_INTERFACE_PARAMETER`` on every AXI port.
* Xilinx/XilinxBoardStore, ``boards/Xilinx/vcu1525/1.4/preset.xml`` (``pciex16_preset``):
  XDMA ``pl_link_cap_max_link_width X16``, ``pl_link_cap_max_link_speed 8.0_GT/s``,
  ``mode_selection Advanced``, ``en_gt_selection true``, ``select_quad GTY_Quad_227``;
  ``pcie_refclk_preset``: ``util_ds_buf`` ``C_BUF_TYPE IBUFDSGTE``.
* AMD PG195 (DMA/Bridge Subsystem for PCI Express): with the AXI4-Lite master enabled it is BAR0
  and the DMA registers are BAR1; ``usr_irq_req`` must stay asserted until the interrupt is
  serviced (the core's ``irq`` is such a level).
* Public XDMA AXI4-Stream block designs connecting ``xdma_0/M_AXIS_H2C_0``,
  ``xdma_0/S_AXIS_C2H_0`` and ``xdma_0/M_AXI_LITE`` (SmartConnect ``S00_AXI``), and the
  ``axis_dwidth_converter`` parameters ``S_TDATA_NUM_BYTES`` / ``M_TDATA_NUM_BYTES`` /
  ``HAS_TLAST`` / ``HAS_TKEEP`` as used with a 512-bit XDMA stream.
* firesim's U200 design again for the second clock domain: ``xdma_0/M_AXI_LITE`` ->
  ``axi_clock_converter`` (``s_axi_aclk`` = ``axi_aclk``, ``m_axi_aclk`` = the ``clk_wiz``
  output) and a ``proc_sys_reset`` on the ``clk_wiz`` clock; public block designs for the
  ``clk_wiz`` parameters (``PRIM_SOURCE No_buffer``, ``RESET_TYPE ACTIVE_LOW``, ``RESET_PORT
  resetn``, ``CLK_OUT1_PORT``) and the ``axis_clock_converter`` ports and parameters
  (``s_axis_aclk`` / ``m_axis_aclk``, ``TDATA_NUM_BYTES``, ``HAS_TLAST``, ``HAS_TKEEP``).

With the DMA engine's AXI4 master (``m_axi_*`` ports, :mod:`sparseforge.hdl.dma`) the core also
gets card memory: the DDR4 controller on channel 0 (board-bound to the VCU1525's
``ddr4_sdram_c0`` / ``default_300mhz_clk0``, the board store's ``ddr4_sdram_c0_preset``
values), ``m_axi`` crossing into the DDR4's 300 MHz UI clock at its full width, the XDMA's
DMA-bypass BAR (``M_AXI_BYPASS``, the streams stay) as the host's path into card memory, a
SmartConnect joining both, card memory at AXI address 0 for the core and the host. A core
without ``m_axi`` gets exactly the design above (docs/fpga.md, "Card memory").

Nothing here has been run through Vivado: the tests check the Tcl textually and by sourcing it in
a plain Tcl interpreter with every Vivado command stubbed, and compile the wrapper plus the core
with Icarus Verilog.

The package, by job (every public name is importable from here):

* :mod:`~sparseforge.boards.vivado_bd.design` -- part, names, clocks, XDMA configuration,
  :func:`check_core_mhz`;
* :mod:`~sparseforge.boards.vivado_bd.ports` -- the core's port list (:func:`parse_verilog_ports`,
  :func:`classify_ports`);
* :mod:`~sparseforge.boards.vivado_bd.wrapper` -- :func:`wrapper_verilog`;
* :mod:`~sparseforge.boards.vivado_bd.xdc` -- :func:`pcie_xdc`, :func:`cdc_xdc`;
* :mod:`~sparseforge.boards.vivado_bd.tcl` -- :func:`block_design_tcl`, :func:`build_script`;
* :mod:`~sparseforge.boards.vivado_bd.tree` -- :func:`write_block_design`.
"""

from sparseforge.boards.vivado_bd.design import (AXI_CLK_HZ, AXIL_BAR_BYTES, BD_FILES, BD_NAME,
                                                 BITSTREAM_NAME, BOARD_PART, BYPASS_BAR_BYTES,
                                                 CARD_MEM_BASE, CORE_CELL, CORE_CLK,
                                                 CORE_MHZ_DEFAULT, CORE_MHZ_MAX, CORE_MHZ_MIN,
                                                 CORE_MODULE, DDR4_AXI_ADDR_WIDTH,
                                                 DDR4_AXI_DATA_WIDTH, DDR4_BOARD_INTERFACE,
                                                 DDR4_BYTES, DDR4_CELL,
                                                 DDR4_CLOCK_BOARD_INTERFACE, DDR4_CONFIG,
                                                 DDR4_UI_CLK_HZ, PART, PROJECT_NAME,
                                                 WRAPPER_MODULE, XDMA_BYPASS_CONFIG, XDMA_CONFIG,
                                                 XDMA_STREAM_BYTES, check_core_mhz)
from sparseforge.boards.vivado_bd.ports import (CoreInterfaces, CorePort, classify_ports,
                                                parse_verilog_ports)
from sparseforge.boards.vivado_bd.tcl import block_design_tcl, build_script
from sparseforge.boards.vivado_bd.tree import write_block_design
from sparseforge.boards.vivado_bd.wrapper import wrapper_verilog
from sparseforge.boards.vivado_bd.xdc import cdc_xdc, pcie_xdc

__all__ = ["CorePort", "CoreInterfaces", "PART", "CORE_MODULE", "WRAPPER_MODULE", "BD_NAME",
           "PROJECT_NAME", "CORE_CELL", "BITSTREAM_NAME", "AXI_CLK_HZ", "CORE_MHZ_DEFAULT",
           "CORE_MHZ_MIN", "CORE_MHZ_MAX", "CORE_CLK", "XDMA_STREAM_BYTES", "XDMA_CONFIG",
           "AXIL_BAR_BYTES", "BD_FILES", "BOARD_PART", "DDR4_CELL", "DDR4_BOARD_INTERFACE",
           "DDR4_CLOCK_BOARD_INTERFACE", "DDR4_CONFIG", "DDR4_AXI_DATA_WIDTH",
           "DDR4_AXI_ADDR_WIDTH", "DDR4_BYTES", "DDR4_UI_CLK_HZ", "CARD_MEM_BASE",
           "BYPASS_BAR_BYTES", "XDMA_BYPASS_CONFIG", "check_core_mhz", "parse_verilog_ports",
           "classify_ports", "wrapper_verilog", "block_design_tcl", "pcie_xdc", "cdc_xdc",
           "build_script", "write_block_design"]
