"""Xilinx VCU1525 (Virtex UltraScale+ xcvu9p-fsgd2104-2L-e) as an Amaranth platform.

Only the pins the standalone builds need are listed: the four 300 MHz differential system
clocks (the reference clocks of the four DDR4 channels), the three user LEDs and the CPU reset
push button. PCIe, DDR4 and QSFP28 belong to the Vivado block design of the full accelerator
(XDMA + MIG IP cores, issue #6; see docs/fpga.md) and are not declared here.

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

Not confirmed, so left out: the UART pins (the sources disagree on which of BB20/BF18 is the
FPGA's receive pin) and the clocks' I/O standard beyond LVDS -- the LiteX files use
DIFF_SSTL12 instead of LVDS for the same pins; LVDS follows the corundum constraints, which are
built on this card.
"""

from amaranth.build import Attrs, Clock, DiffPairs, Pins, PinsN, Resource
from amaranth.vendor import XilinxPlatform

__all__ = ["VCU1525Platform", "SYSCLK_PINS", "LED_PINS", "CPU_RESET_PIN", "BOARD_CONSTRAINTS"]

#: (p, n) pins of the 300 MHz system clocks, index = DDR4 channel.
SYSCLK_PINS = (("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16"))
#: User LEDs 0..2.
LED_PINS = ("BC21", "BB21", "BA20")
#: CPU reset push button (active low).
CPU_RESET_PIN = "AL20"

#: Board-wide XDC lines added to every build (configuration bank settings as in the corundum
#: constraints above; over-temperature shutdown because the card is passively cooled, as the
#: LiteX XCU1525 platform does; the LEDs and the button are asynchronous to the design).
BOARD_CONSTRAINTS = "\n".join([
    "set_property CFGBVS GND [current_design]",
    "set_property CONFIG_VOLTAGE 1.8 [current_design]",
    "set_property BITSTREAM.GENERAL.COMPRESS true [current_design]",
    "set_property BITSTREAM.CONFIG.OVERTEMPSHUTDOWN ENABLE [current_design]",
    "set_false_path -to [get_ports -quiet {led_*}]",
    "set_false_path -from [get_ports -quiet {cpu_reset_*}]",
])


class VCU1525Platform(XilinxPlatform):
    """VCU1525 card: ``clk300`` 0..3 (300 MHz LVDS), ``led`` 0..2, ``cpu_reset`` (active low).

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
    ]
    connectors = []

    def build(self, *args, add_constraints: str = "", **kwargs):
        """``XilinxPlatform.build`` with :data:`BOARD_CONSTRAINTS` prepended to the XDC."""
        extra = BOARD_CONSTRAINTS + ("\n" + add_constraints if add_constraints else "")
        return super().build(*args, add_constraints=extra, **kwargs)
