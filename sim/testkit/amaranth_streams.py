"""``amaranth.sim`` helpers for :mod:`amaranth.lib.stream` interfaces (async testbenches).

``stream_put`` / ``stream_get`` transfer one beat; ``stream_source`` / ``stream_sink`` run a
whole sequence under an idle / back-pressure pattern; ``run_stream_sim`` wires one source and
one sink to a component and returns what came out, plus the cycle count.

Payloads are given and returned as packed integers (``payload.as_value()``), which is how the
golden model and the cocotb side speak too; :func:`pack` / :func:`unpack` convert to and from
field dictionaries of a :class:`~amaranth.lib.data.StructLayout`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.sim import Simulator

from sparseforge.sim.testkit.patterns import make_pattern

__all__ = ["pack", "pack_beats", "unpack", "stream_put", "stream_get", "stream_source", "stream_sink",
           "run_stream_sim", "run_sim"]


def pack(layout: data.StructLayout, fields: dict) -> int:
    """Pack a field dictionary into the layout's integer (negative values two's complemented)."""
    out = 0
    for name, field in layout:
        width = Shape.cast(field.shape).width
        out |= (int(fields.get(name, 0)) & ((1 << width) - 1)) << field.offset
    return out


def pack_beats(layout, beats) -> list[int]:
    """Field dictionaries (nested arrays and structs too) -> the layout's payload integers."""
    return [int(layout.const(b).as_bits()) for b in beats]


def unpack(layout: data.StructLayout, value: int) -> dict:
    """Unpack an integer into a field dictionary (signed fields sign-extended)."""
    out = {}
    for name, field in layout:
        shape = Shape.cast(field.shape)
        v = (value >> field.offset) & ((1 << shape.width) - 1)
        if shape.signed and v >> (shape.width - 1):
            v -= 1 << shape.width
        out[name] = v
    return out


async def stream_put(ctx, stream, payload: int):
    """Offer ``payload`` until the sink takes it (one transfer)."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload,
            payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream) -> int:
    """Accept one beat and return its payload as an integer."""
    ctx.set(stream.ready, 1)
    payload = stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload
    (value,) = await ctx.tick().sample(payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return int(value)


async def stream_source(ctx, stream, beats: Iterable[int], pattern: Iterator[bool]):
    """Send every beat, inserting an idle cycle whenever ``pattern`` yields ``False``."""
    for beat in beats:
        while not next(pattern):
            await ctx.tick()
        await stream_put(ctx, stream, beat)


async def stream_sink(ctx, stream, count: int, pattern: Iterator[bool], out: list):
    """Collect ``count`` beats into ``out``, de-asserting ready whenever ``pattern`` says so.

    Also checks the stream rule that a payload stays stable while valid and not ready."""
    payload = stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload
    held = None
    while len(out) < count:
        ready = next(pattern)
        ctx.set(stream.ready, int(ready))
        _, _, valid, value = await ctx.tick().sample(stream.valid, payload)
        if held is not None:
            assert valid, "stream rule: valid dropped while a beat was waiting for ready"
            assert value == held, f"stream rule: payload changed from {held:#x} to {value:#x} while not ready"
        if valid and ready:
            out.append(int(value))
            held = None
        elif valid:
            held = int(value)
    ctx.set(stream.ready, 0)


def run_stream_sim(dut, *, i, o, beats: list[int], expected_count: int,
                   src_pattern: str = "always", sink_pattern: str = "always", seed: int = 0,
                   setup=None, max_cycles: int | None = None, vcd: str | None = None):
    """Drive ``beats`` into stream ``i`` of ``dut`` and collect ``expected_count`` beats from ``o``.

    ``setup(ctx)`` (optional, async) runs first, e.g. to set mode inputs. Returns
    ``(outputs, cycles)`` where ``cycles`` counts clock cycles until the last output beat.
    Fails if the run exceeds ``max_cycles`` (default: generous bound from the beat counts).
    """
    out: list[int] = []
    state = {"cycles": 0}
    if max_cycles is None:
        max_cycles = 20 * (len(beats) + expected_count) + 100

    async def source(ctx):
        if setup is not None:
            await setup(ctx)
        await stream_source(ctx, i, beats, make_pattern(src_pattern, seed))

    async def sink(ctx):
        await stream_sink(ctx, o, expected_count, make_pattern(sink_pattern, seed + 1), out)

    async def watchdog(ctx):
        async for _ in ctx.tick():
            state["cycles"] += 1
            if len(out) >= expected_count:
                return
            assert state["cycles"] < max_cycles, \
                f"timeout: {len(out)} of {expected_count} beats after {max_cycles} cycles"

    run_sim(dut, sink, background=[source], processes=[watchdog], vcd=vcd)
    return out, state["cycles"]


def run_sim(dut, *testbenches, background=(), processes=(), vcd: str | None = None,
            period: float = 1e-8):
    """Simulate ``dut`` with a clock of ``period`` seconds until the (foreground)
    ``testbenches`` return; ``background`` testbenches and ``processes`` run alongside.
    ``vcd``: write a waveform to that path."""
    sim = Simulator(dut)
    sim.add_clock(period)
    for tb in background:
        sim.add_testbench(tb, background=True)
    for tb in testbenches:
        sim.add_testbench(tb)
    for proc in processes:
        sim.add_process(proc)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
