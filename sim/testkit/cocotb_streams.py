"""cocotb drivers for Amaranth streams on emitted Verilog (``<name>__payload/valid/ready``).

One clock loop serves every driver, so a cycle costs two trigger waits however many streams a
test has (Icarus is slow per trigger):

1. at the falling edge each driver writes its outputs for the coming rising edge
   (a source: ``valid``/``payload``; a sink: ``ready``);
2. at ``ReadOnly`` each driver samples; a transfer happens at the next rising edge iff
   ``valid & ready`` now, because nothing changes between here and that edge.

Sinks check the stream rule "payload stable while valid and not ready" on every cycle.
Patterns come from :mod:`sparseforge.sim.testkit.patterns`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


__all__ = ["StreamSource", "StreamSink", "run_streams", "env_params", "reset"]


class StreamSource:
    """Offers ``beats`` (packed integers) on stream ``prefix``, idling when the pattern says."""

    def __init__(self, dut, prefix: str, beats: Iterable[int], pattern: Iterator[bool]):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.beats = list(beats)
        self.pattern = pattern
        self.pos = 0
        self.offering = False
        self.sent = 0
        self.valid.value = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.beats)

    def drive(self):
        if not self.offering and not self.done and next(self.pattern):
            self.offering = True
            self.payload.value = self.beats[self.pos]
        self.valid.value = int(self.offering)

    def sample(self):
        if self.offering and int(self.ready.value):
            self.offering = False
            self.pos += 1
            self.sent += 1


class StreamSink:
    """Accepts beats from stream ``prefix`` into ``self.beats`` under a back-pressure pattern."""

    def __init__(self, dut, prefix: str, pattern: Iterator[bool], expected: int | None = None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.pattern = pattern
        self.expected = expected
        self.beats: list[int] = []
        self.cycles_at_last = 0
        self._ready = False
        self._held = None
        self.ready.value = 0

    @property
    def done(self) -> bool:
        return self.expected is not None and len(self.beats) >= self.expected

    def drive(self):
        self._ready = bool(next(self.pattern))
        self.ready.value = int(self._ready)

    def sample(self, cycle: int = 0):
        valid = int(self.valid.value)
        if self._held is not None:
            assert valid, "stream rule: valid dropped while a beat was waiting for ready"
            value = int(self.payload.value)
            assert value == self._held, \
                f"stream rule: payload changed {self._held:#x} -> {value:#x} while not ready"
        if valid:
            value = int(self.payload.value)
            if self._ready:
                self.beats.append(value)
                self.cycles_at_last = cycle
                self._held = None
            else:
                self._held = value


async def run_streams(clk, sources: list[StreamSource], sinks: list[StreamSink], *,
                      max_cycles: int, extra_cycles: int = 0) -> int:
    """Run the clock loop until every source is drained and every sink has its expected beats.

    Returns the number of cycles run. Raises ``AssertionError`` past ``max_cycles`` (a hang or
    lost beats). ``extra_cycles`` keeps running afterwards (to catch duplicated beats).
    """
    cycle = 0
    tail = None
    while True:
        await FallingEdge(clk)
        for d in (*sources, *sinks):
            d.drive()
        await ReadOnly()
        for s in sources:
            s.sample()
        for s in sinks:
            s.sample(cycle)
        cycle += 1
        if tail is None and all(s.done for s in sources) and all(s.done for s in sinks):
            tail = extra_cycles
        if tail is not None:
            if tail == 0:
                return cycle
            tail -= 1
        assert cycle < max_cycles, (
            f"timeout after {cycle} cycles: sources sent {[s.sent for s in sources]}, "
            f"sinks got {[len(s.beats) for s in sinks]} of {[s.expected for s in sinks]}")


def env_params() -> dict:
    """Parameters the pytest side passes in ``SF_PARAMS`` (JSON)."""
    import json
    import os
    return json.loads(os.environ.get("SF_PARAMS", "{}"))


async def reset(dut, cycles: int = 2):
    """Hold ``dut.rst`` for ``cycles`` rising edges and release it at the next falling edge
    (so drivers start writing on a falling edge, as :func:`run_streams` expects)."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
