"""Proof harnesses: Amaranth wrappers that put a component under ``Assert`` / ``Assume`` /
``Cover`` for SymbiYosys.

A *harness* is an :class:`~amaranth.hdl.Elaboratable` that instantiates a component (the DUT)
as a submodule, exposes every port of the DUT as a free top-level port, and adds the properties
around it. :func:`sparseforge.formal.sby.run_sby` proves it.

* :class:`FormalHarness` checks the **stream rules** on every ``lib.stream`` port of any
  component: for an output stream, once ``valid & ~ready`` in cycle *t*, ``valid`` is still 1
  and the payload is unchanged in cycle *t + 1* (asserted); an input stream is *assumed* to obey
  the same rule (the environment is a well-behaved producer). Reset may be asserted at any
  cycle: the rule is re-armed after it (the harness's own registers are in the same domain).
* :class:`SelectorHarness` adds the N:M selector's latency and functional invariants on every
  valid output beat, against a shadow chain of the groups (and their ``n``) in flight.

Amaranth 0.5 has no ``Initial``: registers start at their ``init`` values (SymbiYosys honours
the ``init`` attributes), which is the reset state; the ``rst`` input stays free.
"""

from __future__ import annotations

from amaranth.hdl import (Array, Assert, Assume, Cat, Cover, Elaboratable, Module, Mux,
                          ResetSignal, Signal, Value)
from amaranth.lib import stream, wiring

__all__ = ["stream_ports", "FormalHarness", "SelectorHarness", "DmaBoundsHarness",
           "CmdTableHarness"]


def stream_ports(dut: wiring.Component) -> list[tuple[str, bool, object]]:
    """``(name, is_output, interface)`` for every top-level ``lib.stream`` member of ``dut``."""
    out = []
    for name, member in dut.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            out.append((name, member.flow == wiring.Out, getattr(dut, name)))
    return out


class FormalHarness(Elaboratable):
    """Wraps ``dut`` (a ``wiring.Component``) for SymbiYosys and checks the stream rules.

    Parameters
    ----------
    dut : wiring.Component
        The design under test; its ports become the harness's free top-level ports.
    stream_rules : bool
        Assert the stream rule on every output stream and assume it on every input stream.
    assume_ranges : dict[str, (int, int)]
        Input port name -> inclusive ``(lo, hi)`` range assumed in every cycle.
    assume_stable : iterable of str
        Input ports assumed constant (they may change only in a reset cycle).
    covers : bool
        Add ``Cover`` statements (a stall that resolves, a transfer, a reset while valid), so a
        ``cover`` run shows the properties are not vacuous.

    Subclasses add their own properties in :meth:`checks`.
    """

    def __init__(self, dut: wiring.Component, *, stream_rules: bool = True,
                 assume_ranges: dict | None = None, assume_stable=(), covers: bool = True):
        if not isinstance(dut, wiring.Component):
            raise TypeError(f"dut must be a wiring.Component, not {dut!r}")
        self.dut = dut
        self.stream_rules = bool(stream_rules)
        self.assume_ranges = dict(assume_ranges or {})
        self.assume_stable = tuple(assume_stable)
        self.covers = bool(covers)
        for port in list(self.assume_ranges) + list(self.assume_stable):
            member = dut.signature.members[port] if port in dut.signature.members else None
            if member is None or member.is_signature or member.flow != wiring.In:
                raise ValueError(f"{port!r} is not an input port of {type(dut).__name__}")

    def ports(self) -> list[Value]:
        """Every port of the DUT (inputs become free inputs of the proof)."""
        return [Value.cast(v) for _, _, v in self.dut.signature.flatten(self.dut)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        #: stream name -> its ``valid & ~ready`` of the previous cycle (with stream_rules)
        self.stalled = {}
        if self.stream_rules:
            for name, is_output, iface in stream_ports(self.dut):
                self._stream_rule(m, name, is_output, iface)
        for port, (lo, hi) in self.assume_ranges.items():
            sig = getattr(self.dut, port)
            m.d.comb += Assume((sig >= lo) & (sig <= hi), f"assume {port} in [{lo}, {hi}]")
        for port in self.assume_stable:
            sig = Value.cast(getattr(self.dut, port))
            prev = Signal.like(sig, name=f"{port}_prev", reset_less=True)
            seen = Signal(name=f"{port}_seen")       # cleared by reset: a reset may change it
            m.d.sync += [prev.eq(sig), seen.eq(1)]
            with m.If(seen):
                m.d.comb += Assume(sig == prev, f"assume {port} stable")
        self.checks(m)
        return m

    def _stream_rule(self, m, name, is_output, iface):
        payload = Value.cast(iface.payload)
        stalled = Signal(name=f"{name}_stalled")      # valid & ~ready in the previous cycle
        self.stalled[name] = stalled                  # (for a subclass's invariants)
        held = Signal(len(payload), name=f"{name}_held")
        m.d.sync += [stalled.eq(iface.valid & ~iface.ready), held.eq(payload)]
        check = Assert if is_output else Assume
        who = "" if is_output else "assume "
        with m.If(stalled):
            m.d.comb += [
                check(iface.valid, f"{who}{name}: valid held after valid & ~ready"),
                check(payload == held, f"{who}{name}: payload stable after valid & ~ready"),
            ]
        if is_output and self.covers:
            m.d.comb += [
                Cover(stalled & iface.valid & iface.ready,
                      f"cover {name}: a stalled beat is transferred"),
                Cover(iface.valid & ResetSignal(), f"cover {name}: reset while valid"),
            ]

    def checks(self, m: Module):
        """Hook for subclasses: add properties to ``m`` (the harness module)."""


def _abs(x: Value) -> Value:
    """Exact magnitude of a signed value: ``unsigned(len(x))`` holds ``2**(len(x)-1)``."""
    return Mux(x < 0, -x, x)[:len(x)]


class SelectorHarness(FormalHarness):
    """Stream rules plus the invariants of :class:`~sparseforge.hdl.nm_selector.NMSelector`.

    The selector is documented as one rigid pipeline of ``dut.latency`` register stages that
    advances exactly when ``i.ready`` (``advance = ~o.valid | o.ready``), sampling ``n`` with
    each group. The harness mirrors that with a shadow chain of ``latency`` registers, shifted
    whenever ``i.ready`` and fed with ``(group, n, i.valid)``; its last entry is therefore the
    group that must be on ``o`` now. The harness asserts:

    * timing: ``o.valid`` equals the shadow chain's last valid bit (latency exactly
      ``latency`` pipeline advances; no beat lost, duplicated or invented, bubbles included);

    and whenever ``o.valid``, with ``N = min(n, n_max)`` of that group (the selector's
    documented clamp; ``n = 0`` keeps nothing):

    * ``popcount(mask) == N``;
    * every kept magnitude ``>=`` every dropped magnitude (exact magnitudes, the most negative
      value included), and no kept element has an equal-magnitude dropped element at a lower
      index (ties go to the lower index);
    * slot ``k < N``: ``mask[indices[k]]`` is set, the indices strictly ascend (so
      ``indices[k]`` is the k-th set bit of ``mask``), ``values[k]`` is the group's element
      ``indices[k]``; slot ``k >= N``: value and index are 0.

    No assumption is made on ``n`` (every code of the port is covered) nor on ``o.ready``.

    ``mutation="popcount_plus_one"`` deliberately asserts ``popcount(mask) == N + 1`` instead,
    so the flow can be seen to fail (see also :class:`TiesToHigherSelector`, a broken design).
    """

    MUTATIONS = (None, "popcount_plus_one")

    def __init__(self, dut, *, mutation: str | None = None, **kw):
        super().__init__(dut, **kw)
        if mutation not in self.MUTATIONS:
            raise ValueError(f"mutation must be one of {self.MUTATIONS}, not {mutation!r}")
        for attr in ("m", "n_max", "width", "latency"):
            if not isinstance(getattr(dut, attr, None), int):
                raise TypeError(f"dut must be an NMSelector-like component with an integer "
                                f"{attr!r} attribute, not {dut!r}")
        self.mutation = mutation

    def checks(self, m):
        dut = self.dut
        mm, n_max, width, latency = dut.m, dut.n_max, dut.width, dut.latency
        group_in = Value.cast(dut.i.payload)
        n_in = Value.cast(dut.n)
        gw, nw = len(group_in), len(n_in)

        entry = Cat(group_in, n_in, dut.i.valid)
        chain = [Signal(len(entry), name=f"shadow{k}") for k in range(latency)]
        with m.If(dut.i.ready):
            m.d.sync += chain[0].eq(entry)
            m.d.sync += [chain[k].eq(chain[k - 1]) for k in range(1, latency)]
        head = chain[-1]
        m.d.comb += Assert(dut.o.valid == head[-1],
                           f"o.valid == group accepted {latency} pipeline advances ago")

        xs = [head[k * width:(k + 1) * width].as_signed() for k in range(mm)]
        n_raw = head[gw:gw + nw]
        n_eff = Signal(range(n_max + 1), name="n_eff")
        m.d.comb += n_eff.eq(Mux(n_raw > n_max, n_max, n_raw))
        mags = []
        for k, x in enumerate(xs):
            mag = Signal(width, name=f"mag{k}")
            m.d.comb += mag.eq(_abs(x))
            mags.append(mag)

        o = dut.o.payload
        mask = Value.cast(o.mask)
        popcount = Signal(range(mm + 1), name="popcount")
        m.d.comb += popcount.eq(sum(mask[k] for k in range(mm)))
        x_arr = Array(xs)

        with m.If(dut.o.valid):
            if self.mutation == "popcount_plus_one":
                m.d.comb += Assert(popcount == n_eff + 1, "MUTANT popcount(mask) == N + 1")
            else:
                m.d.comb += Assert(popcount == n_eff, "popcount(mask) == N")
            for a in range(mm):
                for b in range(mm):
                    if a == b:
                        continue
                    kept_over_dropped = mask[a] & ~mask[b]
                    m.d.comb += Assert(~kept_over_dropped | (mags[a] >= mags[b]),
                                       f"kept |x{a}| >= dropped |x{b}|")
                    if a > b:
                        m.d.comb += Assert(~kept_over_dropped | (mags[a] != mags[b]),
                                           f"tie |x{a}| == |x{b}|: lower index {b} wins")
            for k in range(n_max):
                idx, val = o.indices[k], Value.cast(o.values[k])
                with m.If(k < n_eff):
                    m.d.comb += [
                        Assert(mask.bit_select(idx, 1), f"slot {k}: mask[indices[{k}]] set"),
                        Assert(val == x_arr[idx], f"slot {k}: values[{k}] == x[indices[{k}]]"),
                    ]
                    if k > 0:
                        m.d.comb += Assert(idx > o.indices[k - 1],
                                           f"slot {k}: indices[{k - 1}] < indices[{k}]")
                with m.Else():
                    m.d.comb += [
                        Assert(val == 0, f"unused slot {k}: value 0"),
                        Assert(idx == 0, f"unused slot {k}: index 0"),
                    ]

        if self.covers:
            beat = dut.o.valid & dut.o.ready
            for n in range(n_max + 1):
                m.d.comb += Cover(beat & (n_raw == n), f"cover beat with n = {n}")
            if (1 << nw) > n_max + 1:
                m.d.comb += Cover(beat & (n_raw > n_max), "cover beat with n > n_max (clamped)")
            tie = Signal(name="tie_at_boundary")
            m.d.comb += tie.eq(Cat(mask[a] & ~mask[b] & (mags[a] == mags[b])
                                   for a in range(mm) for b in range(a + 1, mm)).any())
            most_neg = Signal(name="most_negative_kept")
            m.d.comb += most_neg.eq(Cat(mask[k] & (xs[k] == -(1 << (width - 1)))
                                        for k in range(mm)).any())
            full = Cat(c[-1] for c in chain).all()
            m.d.comb += [
                Cover(beat & tie, "cover tie across the keep/drop boundary"),
                Cover(beat & most_neg, "cover most negative value kept"),
                Cover(dut.o.valid & ~dut.o.ready & full, "cover back-pressure on a full pipeline"),
            ]


class DmaBoundsHarness(FormalHarness):
    """Stream rules plus the address bounds of :class:`~sparseforge.hdl.dma.DmaEngine`
    (issue 16: "address generation is proven in bounds for every buffer").

    The harness keeps the descriptor the engine accepted (``desc.valid & desc.ready``) and
    asserts, in every cycle after it until the next one:

    * **buffer side**: every element the engine writes (``mem.we[k]``) is in the descriptor's
      buffer and range: ``mem.buf == buf`` and ``base <= mem.addr * epw + k < base + length``
      (so also ``< sizes[buf]``: a descriptor beyond its buffer is refused, never written);
    * **memory side**: every read burst raised (``arvalid``) lies in ``[addr, addr + bytes)``
      of a load descriptor and every write burst (``awvalid``) in that of a store, where
      ``bytes = ceil(length / epw) * data_width / 8``; no burst crosses a 4 KiB page; and
      each burst belongs to a descriptor that passed its checks (none for a refused one).

    ``mutation="beyond"`` weakens the bound by one element (``< base + length - 1``): the
    negative check that shows the assertion can fail.
    """

    def __init__(self, dut, *, mutation: str | None = None, **kw):
        super().__init__(dut, **kw)
        if mutation not in (None, "beyond"):
            raise ValueError(f"unknown mutation {mutation!r}")
        self.mutation = mutation

    def checks(self, m):
        d = self.dut
        epw, sizes = d._epw, d._sizes
        desc = d.desc.payload
        have = Signal(name="desc_have")               # a descriptor was accepted (since reset)
        buf, base = Signal.like(desc.buf, name="d_buf"), Signal.like(desc.base, name="d_base")
        length = Signal.like(desc.length, name="d_length")
        dirn, addr = Signal.like(desc.dir, name="d_dir"), Signal.like(desc.addr, name="d_addr")
        with m.If(d.desc.valid & d.desc.ready):
            m.d.sync += [have.eq(1), buf.eq(desc.buf), base.eq(desc.base),
                         length.eq(desc.length), dirn.eq(desc.dir), addr.eq(desc.addr)]
        top = base + length - (1 if self.mutation == "beyond" else 0)
        ok_buf = Signal(name="d_buf_fits")            # the accepted descriptor fits its buffer
        m.d.comb += ok_buf.eq(Array([Value.cast(base + length <= s) for s in sizes] +
                                    [Value.cast(0)] * (2 ** len(buf) - len(sizes)))[buf])
        for k in range(epw):
            idx = d.mem.addr * epw + k
            with m.If(d.mem.we[k]):
                m.d.comb += [
                    Assert(have, f"mem.we[{k}] only after a descriptor"),
                    Assert(d.mem.buf == buf, f"mem.we[{k}] writes the descriptor's buffer"),
                    Assert((idx >= base) & (idx < top),
                           f"mem.we[{k}] inside [base, base + length)"),
                    Assert(ok_buf, f"mem.we[{k}] only for a descriptor inside its buffer"),
                ]
        beat = d._data_width // 8
        span = ((length + epw - 1) // epw) * beat
        for ch, want in (("ar", 0), ("aw", 1)):
            valid = getattr(d, f"m_axi_{ch}valid")
            a = getattr(d, f"m_axi_{ch}addr")
            n = (getattr(d, f"m_axi_{ch}len") + 1) * beat
            with m.If(valid):
                m.d.comb += [
                    Assert(have & (dirn == want) & ok_buf,
                           f"{ch}valid only for an accepted {('load', 'store')[want]} that fits"),
                    Assert((a >= addr) & (a + n <= addr + span),
                           f"{ch} burst inside [addr, addr + bytes)"),
                    Assert((a & 0xFFF) + n <= 0x1000, f"{ch} burst inside one 4 KiB page"),
                ]
        if self.covers:
            last = Signal(name="cover_last_elem")
            m.d.comb += last.eq(d.mem.we[epw - 1] & (d.mem.addr * epw + epw - 1 == base
                                                     + length - 1))
            m.d.comb += Cover(have & last, "cover: the range's last element is written")


class CmdTableHarness(FormalHarness):
    """Stream rules plus the bounds of :class:`~sparseforge.hdl.cmd_table.CmdTable` (its
    replay never reads an entry that was not written, its writes stay in the table).

    Assumed: the packet router's contract, one input stream offered at a time. Asserted in
    every cycle:

    * the written mark never passes the table: ``mark <= depth``;
    * a table write only at a pointer inside the table: ``wr.en -> wptr < depth``;
    * a replay reads only written entries, and what is left of the call stays below the
      mark: while it runs (READ, EMIT) ``ptr + left <= mark`` and ``left >= 1`` (so the entry
      read, ``ptr``, is below the mark);
    * in a replay only one output stream is valid at a time, and neither while reading;
    * a call beat is taken only from IDLE (the replay ends then) -- ``done`` and ``err`` never
      pulse together.

    ``mutation="mark"``: the bound one entry short (``ptr + left < mark``): the negative check
    that shows the assertion can fail.
    """

    def __init__(self, dut, *, mutation: str | None = None, **kw):
        super().__init__(dut, **kw)
        if mutation not in (None, "mark"):
            raise ValueError(f"unknown mutation {mutation!r}")
        self.mutation = mutation

    def checks(self, m):
        d = self.dut
        depth = d.depth
        # the packet router's contract: it offers one beat at a time (a call stays offered
        # until its replay ends)
        offers = [d.call.valid, d.tab.valid, d.cmd_in.valid, d.step_in.valid]
        m.d.comb += Assume(sum(offers) <= 1, "assume one input offered at a time")
        m.d.comb += Assert(d._mark <= depth, "mark <= depth")
        with m.If(d._wr_en):
            m.d.comb += Assert(d._wptr < depth, "a table write inside the table")
        with m.If(d.busy):           # READ or EMIT (the read entry presented)
            # the call stays offered, untaken, while it is replayed (strengthens induction)
            if "call" in self.stalled:
                m.d.comb += Assert(self.stalled["call"], "a replay holds its call beat")
            within = (d._ptr + d._left < d._mark) if self.mutation == "mark" else \
                (d._ptr + d._left <= d._mark)
            m.d.comb += [Assert(within, "replay reads only written entries"),
                         Assert(d._left >= 1, "a replay has an entry left")]
        with m.If(d._reading):
            m.d.comb += Assert(~d.cmd_out.valid & ~d.step_out.valid,
                               "no output while an entry is read")
        with m.If(d.busy):           # (outside a replay both pass through what comes in)
            m.d.comb += Assert(~(d.cmd_out.valid & d.step_out.valid),
                               "one replayed output at a time")
        m.d.comb += Assert(~(d.done & d.err), "done and err never together")
        if self.covers:
            m.d.comb += Cover(d._reading & (d._left == 2), "cover: a replay of two entries")
