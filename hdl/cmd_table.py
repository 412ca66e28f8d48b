"""Command table and replay (*ours*, issue 17 item 5): the host's per-phase command packets,
stored on chip once and replayed by a one-word call.

A training step sends the same data-plane commands every time (the network's buffers, bases
and pruner seeds do not change between steps), about 10 words per command through the 32-bit
stream. The table keeps them: the host writes a phase's *entries* once (``tab`` beats, at the
write pointer that a ``SETW`` call sets), and from then on runs the phase with one ``CALL``
beat (``call``: 32 bits) that replays the entries in order -- ``dp`` commands into the data
plane, ``step`` beats into the schedule controller -- and, with ``end`` set, ends the job as
an END packet would. The host thus sends two words per phase instead of the commands.

Entry (:func:`entry_layout`): ``cmd`` (the data plane's :func:`~sparseforge.hdl.dataplane.
cmd_layout`) and ``step`` (1: the entry is a ``step`` beat, in the low 8 bits of ``cmd``).
Call beat (:func:`call_layout`): ``op`` (``CALL_RUN`` = 0, ``CALL_SETW`` = 1), ``end``,
``idx``, ``count``.

* ``CALL_RUN``: replay entries ``[idx, idx + count)``; ``count = 0`` replays nothing. Entries
  at or past the *written mark* (one past the highest entry written since reset) are refused
  whole (``ERR_CALL_RANGE``: nothing is replayed). With ``end`` set, the ``done`` pulse
  follows the last entry (also for ``count = 0``; not after a refused call).
* ``CALL_SETW``: the next ``tab`` beat is written at ``idx`` (``idx >= depth``:
  ``ERR_CALL_RANGE``). A ``tab`` beat at a pointer past the table is dropped
  (``ERR_TABLE_FULL``); ops 2 and 3 are refused (``ERR_CALL_OP``).

Ordering: the ``call`` beat is taken (``ready``) only when its replay has ended, so the
packet router, waiting on it, delivers nothing after the call until then -- replayed and
streamed commands keep the stream's order. Outside a replay ``cmd_in`` / ``step_in`` pass
straight through to ``cmd_out`` / ``step_out`` (combinational); a call waits while either
offers a beat (so an output never drops a valid beat: the stream rules hold for any inputs
that keep them, ``sparseforge formal -k cmd_table``).

Ports
-----
call : In(stream.Signature(call_layout()))
tab : In(stream.Signature(entry_layout(cfg)))
    Always ready (a write per cycle).
cmd_in : In(stream(cmd_layout)), cmd_out : Out(stream(cmd_layout))
step_in : In(stream(8)), step_out : Out(stream(8))
done : Out(1)
    Pulse after a call with ``end`` set (the top level ORs it with the router's END).
err : Out(1), err_code : Out(8)
    Pulse with ``ERR_CALL_RANGE`` (0x51), ``ERR_TABLE_FULL`` (0x52) or ``ERR_CALL_OP`` (0x53).
busy : Out(1)
    A call is being replayed.

Latency / throughput: an entry every 2 cycles (a registered read, then the entry is
presented until its target takes it); a call's first entry 2 cycles after the beat arrives,
the call is taken the cycle its last entry is.

Cost: one memory of ``depth`` x ``cmd width + 1`` bits (``tiny``: 128 x 279).
"""

from amaranth.hdl import Module, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl.dataplane import cmd_layout

__all__ = ["CmdTable", "call_layout", "entry_layout", "CALL_RUN", "CALL_SETW",
           "ERR_CALL_RANGE", "ERR_TABLE_FULL", "ERR_CALL_OP", "MAX_DEPTH", "check_depth"]

CALL_RUN = 0
CALL_SETW = 1
#: ERROR_CODE values (the data plane's are 0x3x / 0x4x)
ERR_CALL_RANGE = 0x51    # a CALL beyond the written entries, or a SETW past the table
ERR_TABLE_FULL = 0x52    # a table write past the last entry
ERR_CALL_OP = 0x53       # an unknown call op
#: The largest table the 12-bit call fields address.
MAX_DEPTH = 4096


def call_layout() -> data.StructLayout:
    """One ``call`` beat (32 bits)."""
    return data.StructLayout({"op": 2, "end": 1, "rsv": 5, "idx": 12, "count": 12})


def entry_layout(cfg) -> data.StructLayout:
    """One table entry: a data-plane command, or (``step = 1``) a ``step`` beat in the low 8
    bits of ``cmd``."""
    return _entry_of(cmd_layout(cfg))


def _entry_of(cmd_shape) -> data.StructLayout:
    return data.StructLayout({"cmd": cmd_shape, "step": 1})


def check_depth(depth) -> int:
    """``depth`` when it is a table depth the call fields address, else ``ValueError``."""
    if not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be an int in [1, {MAX_DEPTH}], not {depth!r}")
    return depth


class CmdTable(wiring.Component):
    __doc__ = __doc__

    def __init__(self, cfg, depth: int, *, cmd_shape=None):
        """``cmd_shape``: the command's shape instead of ``cmd_layout(cfg)`` (with ``cfg =
        None``; the formal proof uses a narrow one)."""
        self._depth = check_depth(depth)
        cl = cmd_layout(cfg) if cmd_shape is None else cmd_shape
        self._entry = _entry_of(cl)
        super().__init__({
            "call": In(stream.Signature(call_layout())),
            "tab": In(stream.Signature(self._entry)),
            "cmd_in": In(stream.Signature(cl)), "cmd_out": Out(stream.Signature(cl)),
            "step_in": In(stream.Signature(unsigned(8))),
            "step_out": Out(stream.Signature(unsigned(8))),
            "done": Out(1), "err": Out(1), "err_code": Out(8), "busy": Out(1),
        })
        # the state the formal harness reads (sparseforge/formal/harnesses.py)
        self._wptr = Signal(range(MAX_DEPTH + 1))
        self._mark = Signal(range(self._depth + 1))      # one past the highest entry written
        self._ptr = Signal(range(self._depth))
        self._left = Signal(13)
        self._wr_en = Signal()
        self._reading = Signal()                         # READ: the entry at _ptr is read

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg, cfg.cmd_table_depth)

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        m.submodules.mem = mem = Memory(shape=self._entry, depth=depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")

        wptr, mark, ptr, left = self._wptr, self._mark, self._ptr, self._left
        m.d.comb += self._wr_en.eq(wr.en)
        c = self.call.payload

        # ---------------------------------------------------------------- table writes
        m.d.comb += [self.tab.ready.eq(1), wr.addr.eq(wptr), wr.data.eq(self.tab.payload)]
        with m.If(self.tab.valid):
            with m.If(wptr < depth):
                m.d.comb += wr.en.eq(1)
                m.d.sync += wptr.eq(wptr + 1)
                with m.If(wptr >= mark):
                    m.d.sync += mark.eq(wptr + 1)
            with m.Else():
                m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_TABLE_FULL)]

        # ---------------------------------------------------------------- calls
        entry = rd.data
        m.d.comb += rd.addr.eq(ptr)
        with m.FSM():
            with m.State("IDLE"):
                # streamed commands pass through
                m.d.comb += [self.cmd_out.payload.eq(self.cmd_in.payload),
                             self.cmd_out.valid.eq(self.cmd_in.valid),
                             self.cmd_in.ready.eq(self.cmd_out.ready),
                             self.step_out.payload.eq(self.step_in.payload),
                             self.step_out.valid.eq(self.step_in.valid),
                             self.step_in.ready.eq(self.step_out.ready)]
                # a streamed beat already offered goes first (the router never offers both,
                # but then cmd_out / step_out would drop a valid beat)
                with m.If(self.call.valid & ~self.cmd_in.valid & ~self.step_in.valid):
                    with m.Switch(c.op):
                        with m.Case(CALL_RUN):
                            with m.If(c.idx + c.count > mark):
                                m.d.comb += [self.call.ready.eq(1), self.err.eq(1),
                                             self.err_code.eq(ERR_CALL_RANGE)]
                            with m.Elif(c.count == 0):
                                m.d.comb += [self.call.ready.eq(1), self.done.eq(c.end)]
                            with m.Else():
                                m.d.sync += [ptr.eq(c.idx), left.eq(c.count)]
                                m.next = "READ"
                        with m.Case(CALL_SETW):
                            m.d.comb += self.call.ready.eq(1)
                            with m.If(c.idx >= depth):
                                m.d.comb += [self.err.eq(1), self.err_code.eq(ERR_CALL_RANGE)]
                            with m.Else():
                                m.d.sync += wptr.eq(c.idx)
                        with m.Default():
                            m.d.comb += [self.call.ready.eq(1), self.err.eq(1),
                                         self.err_code.eq(ERR_CALL_OP)]
            with m.State("READ"):            # the entry at ptr is read this cycle
                m.d.comb += [rd.en.eq(1), self.busy.eq(1), self._reading.eq(1)]
                m.next = "EMIT"
            with m.State("EMIT"):            # ... and presented until its target takes it
                m.d.comb += [rd.en.eq(0), self.busy.eq(1),
                             self.cmd_out.payload.eq(entry.cmd),
                             self.step_out.payload.eq(Value.cast(entry.cmd)[:8]),
                             self.cmd_out.valid.eq(~entry.step),
                             self.step_out.valid.eq(entry.step)]
                taken = (self.cmd_out.ready & ~entry.step) | (self.step_out.ready & entry.step)
                with m.If(taken):
                    m.d.sync += [ptr.eq(ptr + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.comb += [self.call.ready.eq(1), self.done.eq(c.end)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "READ"
        return m
