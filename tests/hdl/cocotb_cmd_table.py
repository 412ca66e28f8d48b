"""cocotb tests of the emitted ``cmd_table`` (CmdTable, ``hdl/cmd_table.py``).

A source plays the packet router's part: it offers one item at a time -- a ``tab`` write, a
``call``, a streamed ``cmd_in`` command or ``step_in`` beat -- on its own stream, waits until it
is taken and idles between items by a pattern; ``cmd_out`` and ``step_out`` are drained under
back-pressure patterns (the sinks check "payload stable while not ready"). Scoreboard: the whole
emitted command and step sequences, the number of ``done`` pulses and the error codes equal the
reference model's (``TableModel`` of tests/hdl/test_cmd_table.py) for a random script.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from sparseforge.sim.testkit.cocotb_streams import StreamSink, env_params, reset
from sparseforge.sim.testkit.patterns import make_pattern
from test_cmd_table import TableModel, _script, call_beat

PORTS = ("call", "tab", "cmd_in", "step_in")


class RouterSource:
    """Offers the script's items one at a time, each on its stream, like the router."""

    def __init__(self, dut, items, pattern):
        self.dut, self.items, self.pattern = dut, list(items), pattern
        self.pos, self.offering, self.sent = 0, None, 0
        for p in PORTS:
            getattr(dut, f"{p}__valid").value = 0

    @property
    def done(self):
        return self.pos >= len(self.items)

    def drive(self):
        if self.offering is None and not self.done and next(self.pattern):
            kind, value = self.items[self.pos]
            port = {"call": "call", "tab": "tab", "cmd": "cmd_in", "step": "step_in"}[kind]
            getattr(self.dut, f"{port}__payload").value = \
                call_beat(*value) if kind == "call" else value
            self.offering = port
        for p in PORTS:
            getattr(self.dut, f"{p}__valid").value = int(p == self.offering)

    def sample(self):
        if self.offering is not None and int(getattr(self.dut, f"{self.offering}__ready").value):
            self.offering = None
            self.pos += 1
            self.sent += 1


@cocotb.test()
async def cmd_table_scoreboard(dut):
    p = env_params()
    seed, depth = p["seed"], p["depth"]
    dut._log.info(f"seed={seed} depth={depth} src={p['src']} sink={p['sink']}")
    Clock(dut.clk, 10, unit="ns").start()
    src = RouterSource(dut, [], make_pattern(p["src"], seed))
    sinks = [StreamSink(dut, "cmd_out", make_pattern(p["sink"], seed + 1)),
             StreamSink(dut, "step_out", make_pattern(p["sink"], seed + 2))]
    await reset(dut)
    script = _script(random.Random(seed), p["items"], depth)
    model = TableModel(depth)
    want = {"cmd": [], "step": [], "done": 0, "err": []}
    for kind, value in script:
        c, s, e, err = model.feed(kind, value)
        want["cmd"] += c
        want["step"] += s
        want["done"] += e
        want["err"] += [err] if err else []
    assert want["done"] > 0 and len(want["cmd"]) > 10 and want["err"], "a script too tame"
    src.items = script
    got = {"done": 0, "err": []}
    cycle, tail = 0, None
    while True:
        await FallingEdge(dut.clk)
        src.drive()
        for s in sinks:
            s.drive()
        await ReadOnly()
        src.sample()
        for s in sinks:
            s.sample(cycle)
        assert not (int(dut.cmd_out__valid.value) and int(dut.step_out__valid.value))
        got["done"] += int(dut.done.value)
        if int(dut.err.value):
            got["err"].append(int(dut.err_code.value))
        cycle += 1
        if tail is None and src.done:
            tail = 20
        if tail is not None:
            if tail == 0:
                break
            tail -= 1
        assert cycle < 40 * len(script) + 200, f"timeout: {src.sent} of {len(script)} items"
    assert sinks[0].beats == want["cmd"], "replayed / passed commands differ"
    assert sinks[1].beats == want["step"], "replayed / passed steps differ"
    assert got == {"done": want["done"], "err": want["err"]}
    dut._log.info(f"{len(script)} items: {len(want['cmd'])} commands, {len(want['step'])} "
                  f"steps, {want['done']} done pulses, errors {[hex(e) for e in want['err']]} "
                  f"-- equal to the model in {cycle} cycles")
