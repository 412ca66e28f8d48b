"""Board top for the standalone FPGA builds: one block, fed by a PRNG, observed through LEDs.

The FPGA flows build one registered block (``compressor``, ``nm_selector``, ...,
``accelerator``) at a time inside :class:`BoardTop`:

* **Clock and reset** come from the platform's ``sync`` domain, i.e. its default clock with a
  reset synchronizer on its default reset (Amaranth's ``create_missing_domain``: on the VCU1525
  IBUFDS -> BUFGCE gated by STARTUPE3.EOS plus a ``ResetSynchronizer`` on the CPU reset button;
  on the ECPIX-5 a two-flop synchronizer that drives the ECP5's GSR from the reset button).
* **Heartbeat**: LED 0 is the top bit of a free-running counter (about 1 Hz at the board's
  clock frequency) -- the bitstream is loaded and the clock runs.
* **Stimulus**: a 64-bit xorshift generator (Marsaglia 13/7/17) fills every input of the block.
  Each input *stream* gets a protocol-correct source: a payload register and a valid register
  that only load a new (pseudo-random) beat when the register is empty or the beat is taken,
  so the payload is stable while ``valid & ~ready``, and ``valid`` never looks at ``ready``.
  Each output stream's ``ready`` is a pseudo-random bit (random back-pressure). Every other
  input port is a pseudo-random register.
* **Observation**: every output bit (payloads, valids, plain output ports) is XOR-reduced
  through a registered tree of fan-in 16 into one bit, which drives LED 1. Synthesis therefore
  keeps all of the block's logic while the design uses only a clock, a reset and two LEDs.

This harness is for resource and timing numbers only. The real integration of the
``accelerator`` top level on the VCU1525 is the Vivado block design of
:mod:`sparseforge.boards.vivado_bd`, which connects its AXI4-Lite control/status slave, its
AXI4-Stream data in/out and its interrupt to an XDMA PCIe core; see docs/fpga.md.
"""

from __future__ import annotations

import math

from amaranth.build import ResourceError
from amaranth.hdl import Cat, Const, Elaboratable, Module, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.wiring import In

__all__ = ["BoardTop", "board_top", "xorshift64", "XOR_FAN_IN"]

#: Fan-in of each stage of the registered output XOR tree.
XOR_FAN_IN = 16
#: Non-zero initial state of the stimulus generator.
SEED = 0x9E3779B97F4A7C15


def xorshift64(x: int) -> int:
    """One step of the stimulus generator (software reference of :class:`BoardTop`'s PRNG)."""
    mask = (1 << 64) - 1
    x ^= (x << 13) & mask
    x ^= x >> 7
    x ^= (x << 17) & mask
    return x


def _rotl(value, k: int, width: int = 64):
    k %= width
    return Cat(value[width - k:], value[:width - k]) if k else value


class BoardTop(Elaboratable):
    """Wraps ``block`` (a :class:`wiring.Component`) for a standalone board build.

    Attributes (also usable without a platform, e.g. in simulation):

    * ``heartbeat`` -- top bit of the free-running counter (LED 0 on a board);
    * ``activity`` -- XOR of all of the block's outputs, registered (LED 1 on a board);
    * ``in_transfers`` -- count of beats the block accepted on its input streams (wraps).

    ``heartbeat_bits``: counter width; default from the platform's clock (about 1 Hz), 8
    without a platform.
    """

    def __init__(self, block: wiring.Component, *, heartbeat_bits: int | None = None):
        if not isinstance(block, wiring.Component):
            raise TypeError(f"block must be a wiring.Component, not {block!r}")
        self.block = block
        self._heartbeat_bits = heartbeat_bits
        self.heartbeat = Signal()
        self.activity = Signal()
        self.in_transfers = Signal(32)

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _xor_tree(m: Module, bits: list) -> Signal:
        """Registered XOR reduction of ``bits`` (fan-in :data:`XOR_FAN_IN` per stage)."""
        level = list(bits) or [Const(0, 1)]
        stage = 0
        while True:
            nxt = []
            for k in range(0, len(level), XOR_FAN_IN):
                r = Signal(name=f"xor_s{stage}_{k // XOR_FAN_IN}")
                m.d.sync += r.eq(Cat(*level[k:k + XOR_FAN_IN]).xor())
                nxt.append(r)
            level, stage = nxt, stage + 1
            if len(level) == 1:
                return level[0]

    def _heartbeat_width(self, platform) -> int:
        if self._heartbeat_bits is not None:
            return self._heartbeat_bits
        freq = getattr(platform, "default_clk_frequency", None) if platform is not None else None
        return max(2, round(math.log2(freq))) if freq else 8

    # -- elaboration -----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self.block

        # Stimulus generator.
        rng = Signal(64, init=SEED)
        x1 = Signal(64)
        x2 = Signal(64)
        m.d.comb += [
            x1.eq(rng ^ (rng << 13)[:64]),
            x2.eq(x1 ^ (x1 >> 7)),
        ]
        m.d.sync += rng.eq(x2 ^ (x2 << 17)[:64])
        consumer = 0

        def fresh(width: int, current: Signal):
            """Next value of a ``width``-bit stimulus register: 64 new bits shifted in."""
            nonlocal consumer
            bits = _rotl(rng, 17 * consumer)
            consumer += 1
            if width <= 64:
                return bits[:width]
            return Cat(bits, current[:width - 64])

        observed = []
        stream_names = set()
        transfers = []
        for name, member in block.signature.members.items():
            if not (member.is_signature and isinstance(member.signature, stream.Signature)):
                continue
            stream_names.add(name)
            port = getattr(block, name)
            payload_width = len(port.payload.as_value())
            if member.flow == In:   # a source feeds the block
                payload = Signal(payload_width, name=f"{name}_src_payload")
                valid = Signal(name=f"{name}_src_valid")
                with m.If(~valid | port.ready):
                    coin = _rotl(rng, 17 * consumer + 5)
                    m.d.sync += [
                        payload.eq(fresh(payload_width, payload)),
                        valid.eq(coin[0] | coin[1]),      # valid 3/4 of the cycles
                    ]
                m.d.comb += [port.payload.eq(payload), port.valid.eq(valid)]
                transfers.append(port.valid & port.ready)
            else:                   # a sink drains the block, with random back-pressure
                ready = Signal(name=f"{name}_sink_ready")
                coin = _rotl(rng, 17 * consumer + 11)
                consumer += 1
                m.d.sync += ready.eq(coin[0] | coin[1])
                m.d.comb += port.ready.eq(ready)
                observed += [port.payload.as_value()[k] for k in range(payload_width)]
                observed.append(port.valid)

        for path, member, value in block.signature.flatten(block):
            if path[0] in stream_names:
                continue
            value = value.as_value() if hasattr(value, "as_value") else value
            if member.flow == In:
                reg = Signal(len(value), name="stim_" + "_".join(map(str, path)))
                m.d.sync += reg.eq(fresh(len(reg), reg))
                m.d.comb += value.eq(reg)
            else:
                observed += [value[k] for k in range(len(value))]

        m.d.comb += self.activity.eq(self._xor_tree(m, observed))
        if transfers:
            m.d.sync += self.in_transfers.eq(self.in_transfers + sum(transfers))

        counter = Signal(self._heartbeat_width(platform))
        m.d.sync += counter.eq(counter + 1)
        m.d.comb += self.heartbeat.eq(counter[-1])

        if platform is not None:
            leds, dark = _request_leds(platform, 2)
            for k, (port, sig) in enumerate(zip(leds, (self.heartbeat, self.activity))):
                m.submodules[f"led_buf_{k}"] = buf = io.Buffer("o", port)
                m.d.comb += buf.o.eq(sig)
            for k, port in enumerate(dark):         # other colours of an RGB LED: off
                m.submodules[f"led_off_{k}"] = io.Buffer("o", port)
        return m


def _request_leds(platform, count: int) -> tuple[list, list]:
    """Ports of the first ``count`` LEDs (``led`` resources, else the green of ``rgb_led``),
    and the ports to hold dark (the red and blue of those RGB LEDs)."""
    leds, dark = [], []
    for i in range(count):
        try:
            leds.append(platform.request("led", i, dir="-"))
            continue
        except ResourceError:
            pass
        try:
            rgb = platform.request("rgb_led", i, dir="-")
        except ResourceError:
            break
        leds.append(rgb.g)
        dark += [rgb.r, rgb.b]
    return leds, dark


def board_top(block: str, cfg, **params) -> tuple[BoardTop, dict]:
    """``BoardTop`` around the registered block ``block`` built from ``cfg`` (+ ``params``)."""
    from sparseforge.gen.blocks import build_block
    component, used = build_block(block, cfg, **params)
    return BoardTop(component), used
