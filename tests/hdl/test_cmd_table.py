"""CmdTable (``hdl/cmd_table.py``): amaranth-sim unit tests against a reference model of the
table, under random idle / back-pressure patterns, with a scoreboard of everything it emits.

The testbench plays the packet router's part: it offers one item at a time (a ``tab``
write, a ``call``, a streamed ``dp`` command or ``step`` beat) and waits until it is taken,
as the router does; the outputs ``cmd_out`` / ``step_out`` are drained under a random
back-pressure pattern. The whole emitted sequences, the ``end`` pulses and the error codes
equal the model's. The top-level path (driver memoization, the e2e step) is covered by
``tests/sim/test_fastsim.py`` and the cocotb scenario ``replay`` of
``tests/hdl/test_dataplane_top.py``.
"""

from __future__ import annotations

import random

import pytest

from sparseforge.gen.config import preset
from sparseforge.hdl.cmd_table import (CALL_RUN, CALL_SETW, ERR_CALL_OP, ERR_CALL_RANGE,
                                       ERR_TABLE_FULL, CmdTable, call_layout, check_depth,
                                       entry_layout)
from sparseforge.sim.testkit.amaranth_streams import pack, run_sim, stream_put
from sparseforge.sim.testkit.patterns import make_pattern, soak_scale

CFG = preset("tiny")
DEPTH = 16
CMDW = entry_layout(CFG).size - 1             # the command's bits (the entry adds `step`)


class TableModel:
    """Reference: what the table emits for each offered item."""

    def __init__(self, depth):
        self.depth, self.mem, self.wptr, self.mark = depth, {}, 0, 0

    def feed(self, kind, value):
        """-> (cmds, steps, end, err) of one item."""
        if kind == "cmd":
            return [value], [], 0, 0
        if kind == "step":
            return [], [value], 0, 0
        if kind == "tab":
            if self.wptr >= self.depth:
                return [], [], 0, ERR_TABLE_FULL
            self.mem[self.wptr] = value
            self.wptr += 1
            self.mark = max(self.mark, self.wptr)
            return [], [], 0, 0
        op, end, idx, count = value
        if op == CALL_SETW:
            if idx >= self.depth:
                return [], [], 0, ERR_CALL_RANGE
            self.wptr = idx
            return [], [], 0, 0
        if op != CALL_RUN:
            return [], [], 0, ERR_CALL_OP
        if idx + count > self.mark:
            return [], [], 0, ERR_CALL_RANGE
        cmds, steps = [], []
        for a in range(idx, idx + count):
            e = self.mem[a]
            if e >> CMDW & 1:
                steps.append(e & 0xFF)
            else:
                cmds.append(e)
        return cmds, steps, end, 0


def call_beat(op, end, idx, count):
    """The packed ``call`` beat."""
    return pack(call_layout(), {"op": op, "end": end, "idx": idx, "count": count})


def _script(rng, n, depth=DEPTH):
    """A random item sequence: table writes (after SETW), calls of what was written (and some
    bad ones), streamed commands and steps."""
    out, written = [], 0
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            idx = rng.randrange(0, min(written, depth - 1) + 1)
            out.append(("call", (CALL_SETW, 0, idx, 0)))
            n_w = rng.randint(1, 5)
            for _ in range(n_w):
                step = rng.random() < 0.3
                body = rng.randrange(256) if step else rng.getrandbits(CMDW)
                out.append(("tab", body | (int(step) << CMDW)))
            written = max(written, min(depth, idx + n_w))     # the written mark
        elif r < 0.6 and written:
            idx = rng.randrange(0, written)
            count = rng.randint(0, 6)
            out.append(("call", (CALL_RUN, rng.randint(0, 1), idx, count)))
        elif r < 0.65:
            out.append(("call", (rng.choice([2, 3]), 0, 0, 0)))
        elif r < 0.85:
            out.append(("cmd", rng.getrandbits(CMDW)))
        else:
            out.append(("step", rng.randrange(256)))
    return out


def _run(script, out_pattern, seed):
    dut = CmdTable(CFG, DEPTH)
    got = {"cmd": [], "step": [], "end": 0, "err": []}
    done = {"flag": False}

    async def driver(ctx):
        for kind, value in script:
            if kind == "call":
                await stream_put(ctx, dut.call, call_beat(*value))
            elif kind == "tab":
                await stream_put(ctx, dut.tab, value)
            elif kind == "cmd":
                await stream_put(ctx, dut.cmd_in, value)
            else:
                await stream_put(ctx, dut.step_in, value)
        for _ in range(8):
            await ctx.tick()
        done["flag"] = True

    async def sinks(ctx):
        pat = make_pattern(out_pattern, seed)
        while not done["flag"]:
            rdy = next(pat)
            ctx.set(dut.cmd_out.ready, int(rdy))
            ctx.set(dut.step_out.ready, int(rdy))
            _, _, cv, cp, sv, sp, end, err, code = await ctx.tick().sample(
                dut.cmd_out.valid, dut.cmd_out.payload.as_value(), dut.step_out.valid,
                dut.step_out.payload, dut.done, dut.err, dut.err_code)
            assert not (cv and sv), "a command and a step at once"
            if rdy and cv:
                got["cmd"].append(int(cp))
            if rdy and sv:
                got["step"].append(int(sp))
            got["end"] += int(end)
            if err:
                got["err"].append(int(code))

    run_sim(dut, driver, background=[sinks])
    return got


@pytest.mark.parametrize("seed,pattern", [(1, "always"), (2, "random"), (3, "bursty"),
                                          (4, "cycle"), (5, "random")])
def test_cmd_table_equals_model(seed, pattern):
    print(f"seed={seed} pattern={pattern}")
    rng = random.Random(seed)
    script = _script(rng, 60)
    model = TableModel(DEPTH)
    want = {"cmd": [], "step": [], "end": 0, "err": []}
    for kind, value in script:
        c, s, e, err = model.feed(kind, value)
        want["cmd"] += c
        want["step"] += s
        want["end"] += e
        if err:
            want["err"].append(err)
    got = _run(script, pattern, seed)
    assert got == want
    # the script exercises what it should
    assert want["end"] > 0 and len(want["cmd"]) > 10 and len(want["step"]) > 3


def test_cmd_table_errors_and_full_table():
    """Writes past the table, a SETW past it, a call past the written mark, unknown ops: each
    its error, nothing emitted; a call of exactly the written entries works."""
    script = [("call", (CALL_SETW, 0, DEPTH - 2, 0)), ("tab", 5), ("tab", 6 | 1 << CMDW),
              ("tab", 7), ("call", (CALL_SETW, 0, DEPTH, 0)),
              ("call", (CALL_RUN, 1, DEPTH - 2, 3)), ("call", (2, 1, 0, 1)),
              ("call", (3, 1, 0, 1)), ("call", (CALL_RUN, 1, DEPTH - 2, 2)),
              ("call", (CALL_RUN, 1, 0, 0))]
    got = _run(script, "random", 9)
    assert got == {"cmd": [5], "step": [6], "end": 2,
                   "err": [ERR_TABLE_FULL, ERR_CALL_RANGE, ERR_CALL_RANGE, ERR_CALL_OP,
                           ERR_CALL_OP]}


def test_cmd_table_depth_is_checked():
    for bad in (0, 4097, 2.0):
        with pytest.raises(ValueError, match=r"depth must be an int in \[1, 4096\]"):
            check_depth(bad)
    with pytest.raises(ValueError, match="cmd_table_depth must be in"):
        CFG.replace(cmd_table_depth=5000)


# --------------------------------------------------------------------------------------------
# cocotb (emitted Verilog, Icarus and Verilator)
# --------------------------------------------------------------------------------------------

COCOTB_CASES = [("random", "random"), ("bursty", "cycle"), ("always", "always")]


@pytest.mark.parametrize("src,sink", COCOTB_CASES)
def test_cmd_table_cocotb(sim, cocotb_run, src, sink):
    seed = 7000 + COCOTB_CASES.index((src, sink))
    items = int(150 * soak_scale())
    print(f"seed={seed} src={src} sink={sink} items={items} sim={sim}")
    assert cocotb_run("cmd_table", sim, "cocotb_cmd_table", testcase="cmd_table_scoreboard",
                      params={"seed": seed, "depth": DEPTH, "items": items, "src": src,
                              "sink": sink}, depth=DEPTH) == 1
