"""Arithmetic building blocks shared by the components."""

from amaranth.hdl import Const, Mux, Signal, signed

__all__ = ["abs_lanes", "const_mul", "masked_sum", "pipelined_umul", "small_mul", "tree", "umul_latency",
           "writeback"]


def tree(values, op):
    """Reduce ``values`` with the binary ``op`` as a balanced tree: depth ``ceil(log2(len))``
    (*why*: a linear chain would make the adder / OR depth grow with the operand count, and
    keeps Icarus slow). Pairs ``(0, 1), (2, 3), ...`` each level; an odd last item passes
    through. ``ValueError`` when ``values`` is empty."""
    values = list(values)
    if not values:
        raise ValueError("empty reduction")
    while len(values) > 1:
        values = [op(values[k], values[k + 1]) if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def small_mul(a, b, bits: int):
    """``a * b`` for an unsigned ``b`` below ``2 ** bits`` (a kernel size, a stride), as
    shift-and-add in logic: ``sum(b[i] ? a << i : 0)``, a balanced adder tree of ``bits``
    terms. *Why*: Yosys gives every ``$mul`` a DSP block whatever its operand widths, and the
    array mapper's address generation multiplies by ``kh`` / ``kw`` in every tap generator:
    on ECP5 those products alone took more MULT18X18D than the PEs' MACs (the part has 156).
    Only the low ``bits`` bits of ``b`` are used (the caller guarantees ``b < 2 ** bits``)."""
    if bits < 1:
        raise ValueError(f"bits must be >= 1, not {bits}")
    return tree([Mux(b[i], a << i, 0) for i in range(bits)], lambda x, y: x + y)


def const_mul(x, k: int):
    """``x * k`` for a constant ``k >= 0`` as shifted adds (a balanced tree of the set bits'
    shifts). *Why*: as :func:`small_mul`, a constant ``$mul`` still takes a DSP slice on
    ECP5."""
    terms = [x << b for b in range(k.bit_length()) if (k >> b) & 1]
    return tree(terms, lambda a, b: a + b) if terms else Const(0, 1)


def abs_lanes(word, lanes: int, width: int) -> list:
    """``|v|`` of each of the ``lanes`` signed ``width``-bit lanes of ``word``, as ``width``-bit
    unsigned values (``|-2**(width-1)|`` fits)."""
    vals = [word.word_select(k, width).as_signed() for k in range(lanes)]
    return [Mux(v < 0, -v, v)[:width] for v in vals]


def masked_sum(values, en):
    """The sum of the ``values`` whose bit of ``en`` is set (a balanced adder tree)."""
    return tree([Mux(en[k], v, 0) for k, v in enumerate(values)], lambda a, b: a + b)


def writeback(m, acc, *, acc_width: int, frac_bits: int, data_width: int, name: str = "wb"):
    """The numeric contract's write-back of the signed ``acc_width``-bit value ``acc``, as a
    combinational value: arithmetic shift right by ``frac_bits``, round half to even, saturate
    to ``data_width`` (``golden.writeback``). Adds its intermediate signals to ``m``."""
    wb = Signal(signed(acc_width + 1), name=name)
    if frac_bits:
        q = acc >> frac_bits
        rem = acc[:frac_bits]
        half = 1 << (frac_bits - 1)
        up = (rem > half) | ((rem == half) & q[0])
        m.d.comb += wb.eq(q + up)
    else:
        m.d.comb += wb.eq(acc)
    hi, lo = (1 << (data_width - 1)) - 1, -(1 << (data_width - 1))
    return Mux(wb > hi, hi, Mux(wb < lo, lo, wb))


def umul_latency(a_width: int, b_width: int, *, chunk_a: int = 17, chunk_b: int = 16) -> int:
    """Latency (clock edges) of :func:`pipelined_umul` for these operand widths."""
    pieces = -(-a_width // chunk_a) * -(-b_width // chunk_b)
    return 1 + (pieces - 1).bit_length()


def pipelined_umul(m, a, b, *, chunk_a: int = 17, chunk_b: int = 16, name: str = "pmul"):
    """Add a free-running pipelined unsigned multiplier ``a * b`` to module ``m``.

    The operands are cut into ``chunk_a`` x ``chunk_b`` pieces (17 x 16 fits one ECP5
    MULT18X18D or one DSP48E2 unsigned), each partial product is registered, then a balanced
    tree of registered two-input adders sums them (*why*: one wide multiply in a single cycle
    limited the pruner to ~101 MHz on ECP5; this keeps every stage to one small multiply or
    one add). The pipeline advances every cycle; the product of the operands sampled at edge
    ``t`` is on the returned signal after edge ``t + latency - 1``, i.e. readable in the cycle
    after ``latency`` edges counting the sampling edge.

    Returns ``(product, latency)`` with ``latency = 1 + ceil(log2(#pieces))``.
    """
    aw, bw = len(a), len(b)
    terms = []
    for i in range(0, aw, chunk_a):
        for j in range(0, bw, chunk_b):
            pa, pb = a[i:min(i + chunk_a, aw)], b[j:min(j + chunk_b, bw)]
            pp = Signal(len(pa) + len(pb), name=f"{name}_pp{i}_{j}")
            m.d.sync += pp.eq(pa * pb)
            terms.append((pp, i + j))
    latency, level = 1, 0
    while len(terms) > 1:
        nxt = []
        for k in range(0, len(terms) - 1, 2):
            (x, sx), (y, sy) = terms[k], terms[k + 1]
            base = min(sx, sy)
            width = max(len(x) + sx, len(y) + sy) - base + 1
            s = Signal(width, name=f"{name}_s{level}_{k // 2}")
            m.d.sync += s.eq((x << (sx - base)) + (y << (sy - base)))
            nxt.append((s, base))
        if len(terms) % 2:
            x, sx = terms[-1]
            r = Signal(len(x), name=f"{name}_r{level}")
            m.d.sync += r.eq(x)
            nxt.append((r, sx))
        terms, latency, level = nxt, latency + 1, level + 1
    (p, shift), = terms
    product = Signal(aw + bw, name=f"{name}_out")
    m.d.comb += product.eq(p << shift)
    return product, latency
