"""N:M selector (SAT): keeps the N largest-magnitude values of each group of M, a group a cycle."""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from sparseforge.hdl._validate import check_int, read_only
from sparseforge.hdl.arith import tree

__all__ = ["NMSelector", "NMParams", "SUPPORTED_M", "check_group_size", "nm_group_layout",
           "nm_select_layout", "pack_group", "pack_select", "unpack_select"]

#: Group sizes the selector supports.
SUPPORTED_M = (2, 4, 8, 16)

#: Register stages of the pipeline (see :attr:`NMSelector.latency`).
_LATENCY = 5


def nm_group_layout(m: int, width: int) -> data.ArrayLayout:
    """One input group: ``m`` signed ``width``-bit values, element 0 at the LSBs."""
    return data.ArrayLayout(signed(width), m)


def nm_select_layout(m: int, n_max: int, width: int) -> data.StructLayout:
    """One selector output beat: ``mask`` (bit i = element i kept), ``values`` (kept values in
    ascending index order, unused slots zero), ``indices`` (their in-group positions, unused
    slots zero). Packed in this order, ``mask`` at the least significant bits; element 0 of each
    array at that array's least significant bits."""
    return data.StructLayout({
        "mask": unsigned(m),
        "values": data.ArrayLayout(signed(width), n_max),
        "indices": data.ArrayLayout(unsigned(_index_width(m)), n_max),
    })


def _index_width(m: int) -> int:
    return max(1, ceil_log2(m))


def check_group_size(m):
    """``m`` if it is one of :data:`SUPPORTED_M`; ``TypeError`` / ``ValueError`` naming ``m``."""
    if not isinstance(m, int) or isinstance(m, bool):
        raise TypeError(f"m must be an integer, not {m!r}")
    if m not in SUPPORTED_M:
        raise ValueError(f"m must be one of {SUPPORTED_M}, not {m}")
    return m


class NMParams:
    """The parameters of the N:M selection blocks (:class:`NMSelector` and
    :class:`~sparseforge.hdl.weight_pregen.WeightPregen`): their check and read-only views.

    A mixin placed before ``wiring.Component``; :meth:`_set_nm_params` runs before
    ``Component.__init__`` (the ports depend on the parameters)."""

    def _set_nm_params(self, m, n_max, width):
        """Validate and keep ``m``, ``n_max``, ``width``; ``TypeError``/``ValueError`` naming the
        argument."""
        try:
            self._m = check_group_size(m)
            self._n_max = check_int("n_max", n_max, 1, m)
            self._width = check_int("width", width, 2, 64)
        except (TypeError, ValueError):
            self._MustUse__used = True       # a rejected instance is no "unused elaboratable"
            raise

    m = read_only("_m")
    n_max = read_only("_n_max")
    width = read_only("_width")

    @property
    def index_width(self) -> int:
        """Width of each ``indices`` slot, ``clog2(m)``."""
        return _index_width(self._m)

    @property
    def latency(self) -> int:
        """Cycles from a group's input transfer to its output beat becoming valid (5)."""
        return _LATENCY


class NMSelector(NMParams, wiring.Component):
    """N:M selector: of every group of ``m`` signed values keeps the ``n`` largest magnitudes.

    Bit-exact with :func:`sparseforge.sim.reference.golden.nm_select_group`: the ``n`` largest ``|v|`` are
    kept, ties go to the lower index, and the most negative value ``-2**(width-1)`` ranks by its
    true magnitude ``2**(width-1)`` (magnitudes are exact ``unsigned(width)`` numbers, which hold
    ``2**(width-1)``).

    Parameters (keyword-only)
    -------------------------
    m : int, one of 2, 4, 8, 16
        Group size M.
    n_max : int, 1 <= n_max <= m
        Largest N; the output has ``n_max`` value/index slots.
    width : int, >= 2
        Width of the signed values.

    Ports
    -----
    i : In(stream.Signature(ArrayLayout(signed(width), m)))
        One group per beat, element 0 in the least significant bits.
    o : Out(stream.Signature(StructLayout({"mask", "values", "indices"})))
        ``mask`` (``m`` bits, bit i = element i kept); ``values`` (``n_max`` x signed(width): the
        kept values in ascending index order); ``indices`` (``n_max`` x ``clog2(m)`` bits: their
        in-group positions). Slots ``n .. n_max-1`` are zero. Fields packed in this order, mask
        at the least significant bits (see :func:`nm_select_layout`).
    n : In(range(n_max + 1))
        Runtime N. It is sampled **with each group** when that group is accepted
        (``i.valid & i.ready``) and travels down the pipeline beside it, so a change of ``n``
        affects only groups accepted afterwards (holding it stable for a whole job, as the
        controller does, is therefore sufficient but not required). ``n = 0`` keeps nothing:
        mask 0, every slot zero. Codes above ``n_max`` (reachable only through the port's spare
        binary codes) act as ``n_max``.

    Timing
    ------
    Latency :attr:`latency` = 5 cycles: a group transferred in cycle ``t`` is offered on ``o``
    (``o.valid`` high) from cycle ``t + 5``. Throughput one group per cycle, with no gaps, while
    ``o`` is not back-pressured: K back-to-back groups take K + 5 cycles.

    Back-pressure: the five register stages form one rigid pipeline that advances only when
    ``advance = ~o.valid | o.ready``; ``i.ready = advance``. While ``o.valid & ~o.ready`` the whole
    pipeline (bubbles included) holds, so no beat is lost or duplicated and the output payload is
    stable. ``i.ready`` depends combinationally on ``o.ready`` only (never on ``i.valid``);
    ``o.valid`` is a register and never depends on ``o.ready``. Reset clears the stage valid bits
    (in-flight groups are dropped) and the output register; the inner data registers are
    reset-less, which lets the value delay line map to shift-register LUTs.

    Structure (and why not a sorting network)
    -----------------------------------------
    1. magnitudes ``|v_i|`` (one negation each) -> register;
    2. all ``m(m-1)/2`` pairwise comparators at once: ``c[i][j] = |v_i| >= |v_j|`` for ``i < j``
       (``>=`` encodes "ties to the lower index") -> register;
    3. rank of element i = number of elements that beat it (``c[j][i]`` for ``j < i``,
       ``~c[i][j]`` for ``j > i``), a balanced adder tree over ``m-1`` bits; ``keep_i = rank_i < n``
       -> register (the mask);
    4. prefix counts ``pos_i = popcount(mask[0:i])`` (balanced adder trees) -> register;
    5. compaction: slot ``k`` takes the value and index of the kept element with ``pos_i = k``
       through an AND-OR tree of depth ``clog2(m)`` -> the output register.

    Every stage is one comparator or a ``log2(m)``-deep tree of small adders/ORs, so the clock
    period does not grow with ``m`` beyond a level or two. A sorting network would need
    ``log2(m)(log2(m)+1)/2`` dependent compare-exchange levels (10 for m = 16), each a full-width
    comparator followed by full-width muxes, so either a long critical path or ~10 stages of
    ``m``-wide value registers; it would also lose the original order, needing a second
    sort by index (plus tie-breaking logic) to produce ascending-index output. Here ranks are
    computed on 1-bit comparison results, ties are exact by construction, and the mask is
    already in index order, so the prefix-count compaction emits ascending indices directly.
    """

    def __init__(self, *, m: int, n_max: int, width: int):
        self._set_nm_params(m, n_max, width)
        super().__init__(self._ports())

    def _ports(self) -> dict:
        return {
            "i": In(stream.Signature(nm_group_layout(self._m, self._width))),
            "o": Out(stream.Signature(nm_select_layout(self._m, self._n_max, self._width))),
            "n": In(range(self._n_max + 1)),
        }

    # A subclass may carry a side-band tag beside every group (see weight_pregen); the base
    # selector carries none.
    def _tag_in(self):
        return None

    def _tag_out(self):
        return None

    def elaborate(self, platform):
        mod = Module()
        m, n_max, width = self._m, self._n_max, self._width
        iw = self.index_width
        nw = bits_for(n_max)

        advance = Signal()
        mod.d.comb += [
            advance.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(advance),
        ]

        tag_in, tag_out = self._tag_in(), self._tag_out()

        def stage(name, valid_src, tag_src):
            """Per-stage valid bit (reset to 0) and tag register, both loaded on ``advance``."""
            valid = Signal(name=f"{name}_valid")
            with mod.If(advance):
                mod.d.sync += valid.eq(valid_src)
            tag = None
            if tag_in is not None:
                tag = Signal.like(tag_in, name=f"{name}_tag", reset_less=True)
                with mod.If(advance):
                    mod.d.sync += tag.eq(tag_src)
            return valid, tag

        # ---- stage 1: values, magnitudes, n (clamped to n_max) -------------------------------
        v1 = [Signal(signed(width), name=f"s1_v{k}", reset_less=True) for k in range(m)]
        mag1 = [Signal(unsigned(width), name=f"s1_mag{k}", reset_less=True) for k in range(m)]
        n1 = Signal(nw, name="s1_n", reset_less=True)
        valid1, tag1 = stage("s1", self.i.valid, tag_in)
        with mod.If(advance):
            for k in range(m):
                x = self.i.payload[k]
                mod.d.sync += [v1[k].eq(x), mag1[k].eq(abs(x))]
            mod.d.sync += n1.eq(Mux(self.n > n_max, n_max, self.n))

        # ---- stage 2: pairwise comparators c[i][j] = |v_i| >= |v_j|, i < j --------------------
        v2 = [Signal(signed(width), name=f"s2_v{k}", reset_less=True) for k in range(m)]
        c2 = {(a, b): Signal(name=f"s2_c{a}_{b}", reset_less=True)
              for a in range(m) for b in range(a + 1, m)}
        n2 = Signal(nw, name="s2_n", reset_less=True)
        valid2, tag2 = stage("s2", valid1, tag1)
        with mod.If(advance):
            mod.d.sync += [v2[k].eq(v1[k]) for k in range(m)]
            mod.d.sync += [c.eq(mag1[a] >= mag1[b]) for (a, b), c in c2.items()]
            mod.d.sync += n2.eq(n1)

        # ---- stage 3: rank_i = #elements beating i (adder tree); keep_i = rank_i < n ----------
        v3 = [Signal(signed(width), name=f"s3_v{k}", reset_less=True) for k in range(m)]
        mask3 = Signal(m, name="s3_mask", reset_less=True)
        valid3, tag3 = stage("s3", valid2, tag2)
        with mod.If(advance):
            mod.d.sync += [v3[k].eq(v2[k]) for k in range(m)]
            for k in range(m):
                beaten_by = [c2[(j, k)] for j in range(k)] + [~c2[(k, j)] for j in range(k + 1, m)]
                rank = Signal(range(m), name=f"s3_rank{k}")
                mod.d.comb += rank.eq(tree(beaten_by, lambda a, b: a + b))
                mod.d.sync += mask3[k].eq(rank < n2)

        # ---- stage 4: prefix counts pos_i = popcount(mask[0:i]) (adder trees) -----------------
        v4 = [Signal(signed(width), name=f"s4_v{k}", reset_less=True) for k in range(m)]
        mask4 = Signal(m, name="s4_mask", reset_less=True)
        pos4 = [Signal(iw, name=f"s4_pos{k}", reset_less=True) for k in range(m)]
        valid4, tag4 = stage("s4", valid3, tag3)
        with mod.If(advance):
            mod.d.sync += [v4[k].eq(v3[k]) for k in range(m)]
            mod.d.sync += mask4.eq(mask3)
            for k in range(1, m):
                mod.d.sync += pos4[k].eq(tree([mask3[j] for j in range(k)], lambda a, b: a + b))
            mod.d.sync += pos4[0].eq(0)

        # ---- stage 5 (output register): compaction into n_max slots (AND-OR trees) -----------
        valid5, tag5 = stage("s5", valid4, tag4)
        mod.d.comb += self.o.valid.eq(valid5)
        if tag_out is not None:
            mod.d.comb += tag_out.eq(tag5)
        with mod.If(advance):
            mod.d.sync += self.o.payload.mask.eq(mask4)
            for slot in range(n_max):
                # Element i can land in slot k only if i >= k (pos_i <= i).
                sel = {i: mask4[i] & (pos4[i] == slot) for i in range(slot, m)}
                value = tree([Mux(s, v4[i].as_unsigned(), 0) for i, s in sel.items()],
                             lambda a, b: a | b)
                index = tree([Mux(s, i, 0) for i, s in sel.items()], lambda a, b: a | b)
                mod.d.sync += [
                    self.o.payload.values[slot].eq(value),
                    self.o.payload.indices[slot].eq(index),
                ]

        return mod


# ------------------------------------------------------------------------------------------------
# Payload codecs (pure Python): how a host, a cocotb bench or a test packs the stream payloads.
# ------------------------------------------------------------------------------------------------

def pack_group(values, width: int) -> int:
    """Pack a group (sequence of ints) into the ``i`` payload, element k at bit ``k*width``."""
    out, full = 0, (1 << width) - 1
    for k, v in enumerate(values):
        out |= (int(v) & full) << (k * width)
    return out


def pack_select(mask: int, values, indices, *, m: int, width: int) -> int:
    """Pack ``(mask, values[n_max], indices[n_max])`` into the ``o`` payload integer."""
    iw = _index_width(m)
    n_max = len(values)
    if len(indices) != n_max:
        raise ValueError(f"values and indices lengths differ: {n_max} != {len(indices)}")
    out = int(mask) & ((1 << m) - 1)
    out |= pack_group(values, width) << m
    out |= pack_group(indices, iw) << (m + n_max * width)
    return out


def unpack_select(payload: int, *, m: int, n_max: int, width: int):
    """Inverse of :func:`pack_select`: ``(mask, values, indices)`` (values sign-extended)."""
    iw = _index_width(m)
    mask = payload & ((1 << m) - 1)
    values = []
    for k in range(n_max):
        v = (payload >> (m + k * width)) & ((1 << width) - 1)
        values.append(v - (1 << width) if v >> (width - 1) else v)
    base = m + n_max * width
    indices = [(payload >> (base + k * iw)) & ((1 << iw) - 1) for k in range(n_max)]
    return mask, values, indices
