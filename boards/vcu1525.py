"""Xilinx VCU1525 (Virtex UltraScale+ xcvu9p-fsgd2104-2L-e) as an Amaranth platform.

The standalone builds use the four 300 MHz differential system clocks (the reference clocks of
the four DDR4 channels), the three user LEDs and the CPU reset push button. The PCIe x16 edge
connector (100 MHz reference clock, PERST#, 16 GTY lanes) is listed too, as constants and as the
``pcie_x16`` resource: the Vivado block design of the accelerator
(:mod:`sparseforge.boards.vivado_bd`, XDMA PCIe Gen3 x16) writes its XDC from these constants.
DDR4 and QSFP28 are not declared.

Pin sources (public constraint files for this part; each pin agreed in at least two of them):

* corundum/corundum, ``fpga/mqnic/VCU1525/fpga_100g/fpga.xdc`` -- "XDC constraints for the
  Xilinx VCU1525 board, part: xcvu9p-fsgd2104-2L-e": ``clk_300mhz_0..3`` at AY37/AY38,
  AW20/AW19, F32/E32, J16/H16 (LVDS, ``create_clock -period 3.333``), LEDs BC21/BB21/BA20
  (LVCMOS12), reset button AL20 (LVCMOS12).
* alexforencich/verilog-ethernet, ``example/VCU1525/fpga_10g/fpga.xdc`` -- the same pins;
  its ``rtl/fpga.v`` documents the reset as "Push button, active low".
* litex-hub/litex-boards, ``litex_boards/platforms/sqrl_xcu1525.py`` (the SQRL XCU1525, same
  PCB) -- the same four clock pairs and three LEDs;
  ``litex_boards/platforms/xilinx_alveo_u200.py`` ("applicable to ... VCU1525") -- the same
  clocks and LEDs plus ``cpu_reset`` at AL20.

PCIe pins (four sources, all agree pin for pin):

* corundum/corundum, ``fpga/mqnic/VCU1525/fpga_100g/fpga.xdc`` ("PCIe Interface"):
  ``pcie_refclk_p`` AM11 / ``pcie_refclk_n`` AM10 ("MGTREFCLK0P_226", ``create_clock -period 10``,
  "100 MHz MGT reference clock"), ``pcie_reset_n`` BD21 (LVCMOS12, PULLUP true), lanes
  ``pcie_rx_p[0..15]`` AF2 ... BC2 and ``pcie_tx_p[0..15]`` AF7 ... BF5 (lane 0 is
  MGTYRXP3_227 / GTYE4_CHANNEL_X1Y35, lane 15 MGTYRXP0_224 / GTYE4_CHANNEL_X1Y20).
* Xilinx/XilinxBoardStore, ``boards/Xilinx/vcu1525/1.4/part0_pins.xml`` (Xilinx's own board file):
  ``pcie_mgt_clkp`` AM11 / ``pcie_mgt_clkn`` AM10, ``pcie_perstn_rst`` BD21 (LVCMOS12), the same
  ``pcie_rx{i}_p/n`` and ``pcie_tx{i}_p/n``; its ``preset.xml`` (``pciex16_preset``) configures
  the XDMA with ``select_quad GTY_Quad_227``.
* litex-hub/litex-boards, ``litex_boards/platforms/sqrl_xcu1525.py`` and
  ``litex_boards/platforms/xilinx_alveo_u200.py``: ``pcie_x16`` with ``rst_n`` BD21 (LVCMOS12),
  ``clk_p`` AM11 / ``clk_n`` AM10 and the same 16 rx/tx pairs.

Not confirmed, so left out: the UART pins (the sources disagree on which of BB20/BF18 is the
FPGA's receive pin) and the clocks' I/O standard beyond LVDS -- the LiteX files use
DIFF_SSTL12 instead of LVDS for the same pins; LVDS follows the corundum constraints, which are
built on this card.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource, Subsignal
from amaranth.vendor import XilinxPlatform

__all__ = ["VCU1525Platform", "SYSCLK_PINS", "LED_PINS", "CPU_RESET_PIN", "BOARD_CONSTRAINTS",
           "CONFIG_CONSTRAINTS", "PCIE_REFCLK_PINS", "PCIE_REFCLK_HZ", "PCIE_PERST_PIN",
           "PCIE_PERST_IOSTANDARD", "PCIE_RX_PINS", "PCIE_TX_PINS", "PCIE_GT_QUAD"]

#: (p, n) pins of the 300 MHz system clocks, index = DDR4 channel.
SYSCLK_PINS = (("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16"))
#: User LEDs 0..2.
LED_PINS = ("BC21", "BB21", "BA20")
#: CPU reset push button (active low).
CPU_RESET_PIN = "AL20"

# -- PCIe x16 edge connector (sources in the module docstring) ----------------------------------
#: (p, n) of the 100 MHz PCIe reference clock from the edge connector (MGTREFCLK0 of GTY quad 226).
PCIE_REFCLK_PINS = ("AM11", "AM10")
#: Frequency of the PCIe reference clock (``create_clock -period 10``).
PCIE_REFCLK_HZ = 100_000_000
#: PERST# from the edge connector (active low; the corundum XDC adds a pull-up).
PCIE_PERST_PIN = "BD21"
PCIE_PERST_IOSTANDARD = "LVCMOS12"
#: (p, n) of the receive pins of lanes 0..15 (lane 0 in GTY quad 227, lane 15 in quad 224).
PCIE_RX_PINS = tuple(zip(
    "AF2 AG4 AH2 AJ4 AK2 AL4 AM2 AN4 AP2 AR4 AT2 AU4 AV2 AW4 BA2 BC2".split(),
    "AF1 AG3 AH1 AJ3 AK1 AL3 AM1 AN3 AP1 AR3 AT1 AU3 AV1 AW3 BA1 BC1".split()))
#: (p, n) of the transmit pins of lanes 0..15.
PCIE_TX_PINS = tuple(zip(
    "AF7 AG9 AH7 AJ9 AK7 AL9 AM7 AN9 AP7 AR9 AT7 AU9 AV7 BB5 BD5 BF5".split(),
    "AF6 AG8 AH6 AJ8 AK6 AL8 AM6 AN8 AP6 AR8 AT6 AU8 AV6 BB4 BD4 BF4".split()))
#: GT quad of PCIe lane 0, the XDMA ``select_quad`` of the Xilinx VCU1525 board preset.
PCIE_GT_QUAD = "GTY_Quad_227"

#: Configuration-bank and bitstream settings for every VCU1525 design (as in the corundum
#: constraints above; over-temperature shutdown because the card is passively cooled, as the
#: LiteX XCU1525 platform does).
CONFIG_CONSTRAINTS = (
    "set_property CFGBVS GND [current_design]",
    "set_property CONFIG_VOLTAGE 1.8 [current_design]",
    "set_property BITSTREAM.GENERAL.COMPRESS true [current_design]",
    "set_property BITSTREAM.CONFIG.OVERTEMPSHUTDOWN ENABLE [current_design]",
)

#: Board-wide XDC lines added to every standalone build: :data:`CONFIG_CONSTRAINTS` plus false
#: paths to the LEDs and from the button (both asynchronous to the design).
BOARD_CONSTRAINTS = "\n".join([
    *CONFIG_CONSTRAINTS,
    "set_false_path -to [get_ports -quiet {led_*}]",
    "set_false_path -from [get_ports -quiet {cpu_reset_*}]",
])


class VCU1525Platform(XilinxPlatform):
    """VCU1525 card: ``clk300`` 0..3 (300 MHz LVDS), ``led`` 0..2, ``cpu_reset`` (active low),
    ``pcie_x16`` (``clk``: 100 MHz GT reference clock, ``perst``: PERST#, active low, ``rx`` /
    ``tx``: the 16 GTY lanes; request it with ``dir="-"`` and drive an IBUFDS_GTE4 / a PCIe
    hard block by hand -- the XDMA block design does not go through the platform).

    ``default_clk`` is ``clk300`` 0 (DDR4 channel 0 reference) and ``default_rst`` the reset
    button: the platform's ``sync`` domain is IBUFDS -> BUFGCE gated by STARTUPE3.EOS, with a
    reset synchronizer on the button (Amaranth's ``XilinxPlatform.create_missing_domain``).
    """

    device = "xcvu9p"
    package = "fsgd2104"
    speed = "2L-e"
    default_clk = "clk300"
    default_rst = "cpu_reset"
    resources = [
        *[Resource("clk300", i, DiffPairs(p, n, dir="i"), Clock(300e6), Attrs(IOSTANDARD="LVDS"))
          for i, (p, n) in enumerate(SYSCLK_PINS)],
        *[Resource("led", i, Pins(pin, dir="o"),
                   Attrs(IOSTANDARD="LVCMOS12", SLEW="SLOW", DRIVE="8"))
          for i, pin in enumerate(LED_PINS)],
        Resource("cpu_reset", 0, PinsN(CPU_RESET_PIN, dir="i"), Attrs(IOSTANDARD="LVCMOS12")),
        Resource("pcie_x16", 0,
                 Subsignal("clk", DiffPairs(*PCIE_REFCLK_PINS, dir="i"), Clock(PCIE_REFCLK_HZ)),
                 Subsignal("perst", PinsN(PCIE_PERST_PIN, dir="i"),
                           Attrs(IOSTANDARD=PCIE_PERST_IOSTANDARD)),
                 Subsignal("rx", DiffPairs(" ".join(p for p, _ in PCIE_RX_PINS),
                                           " ".join(n for _, n in PCIE_RX_PINS), dir="i")),
                 Subsignal("tx", DiffPairs(" ".join(p for p, _ in PCIE_TX_PINS),
                                           " ".join(n for _, n in PCIE_TX_PINS), dir="o"))),
    ]
    connectors = []

    def build(self, *args, add_constraints: str = "", **kwargs):
        """``XilinxPlatform.build`` with :data:`BOARD_CONSTRAINTS` prepended to the XDC."""
        extra = BOARD_CONSTRAINTS + ("\n" + add_constraints if add_constraints else "")
        return super().build(*args, add_constraints=extra, **kwargs)
