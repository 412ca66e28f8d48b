"""hdl/arith: small_mul, the shift-and-add product the array mapper and the data plane use for
kernel-size factors (instead of DSP blocks), equal to ``*`` for every b < 2**bits; const_mul;
the masked magnitude sum (abs_lanes, masked_sum) the prune unit and the data plane share."""
import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from sparseforge.hdl.arith import small_mul


@pytest.mark.parametrize("a_shape,bits", [(8, 4), (signed(10), 4), (16, 7)])
def test_small_mul_equals_product(a_shape, bits):
    seed = 77
    print(f"seed={seed} a={a_shape} bits={bits}")
    rng = random.Random(seed)
    m = Module()
    a, b = Signal(a_shape), Signal(bits)
    y = Signal(signed(40))
    m.d.comb += y.eq(small_mul(a, b, bits))
    sim = Simulator(m)
    sa = a.shape()
    lo = -(1 << (sa.width - 1)) if sa.signed else 0
    hi = (1 << (sa.width - 1)) - 1 if sa.signed else (1 << sa.width) - 1
    cases = [(av, bv) for av in (lo, hi, 0, 1) for bv in range(1 << bits)]
    cases += [(rng.randint(lo, hi), rng.randrange(1 << bits)) for _ in range(300)]

    async def tb(ctx):
        for av, bv in cases:
            ctx.set(a, av)
            ctx.set(b, bv)
            assert ctx.get(y) == av * bv, (av, bv)
    sim.add_testbench(tb)
    sim.run()


def test_small_mul_rejects_zero_bits():
    with pytest.raises(ValueError, match="bits must be >= 1"):
        small_mul(Signal(4), Signal(4), 0)


def test_const_mul_abs_lanes_masked_sum():
    """``const_mul`` equals ``x * k`` for constants 0..40; ``masked_sum(abs_lanes(word))``
    equals the sum of ``|lane|`` over the enabled lanes, extremes included (seed printed)."""
    from sparseforge.hdl.arith import abs_lanes, const_mul, masked_sum
    seed = 78
    print(f"seed={seed}")
    rng = random.Random(seed)
    ks = list(range(41))
    m = Module()
    x = Signal(12)
    prods = [Signal(20, name=f"p{k}") for k in ks]
    m.d.comb += [p.eq(const_mul(x, k)) for p, k in zip(prods, ks)]
    lanes, width = 4, 16
    word, en = Signal(lanes * width), Signal(lanes)
    total = Signal(width + 4)
    m.d.comb += total.eq(masked_sum(abs_lanes(word, lanes, width), en))
    sim = Simulator(m)
    ext = [-(1 << (width - 1)), (1 << (width - 1)) - 1, 0, -1]

    async def tb(ctx):
        for xv in [0, 1, 4095] + [rng.randrange(4096) for _ in range(50)]:
            ctx.set(x, xv)
            assert [ctx.get(p) for p in prods] == [xv * k for k in ks], xv
        for vals in [ext] + [[rng.randint(ext[0], ext[1]) for _ in range(lanes)]
                             for _ in range(100)]:
            for e in range(1 << lanes):
                w = 0
                for k, v in enumerate(vals):
                    w |= (v & ((1 << width) - 1)) << (k * width)
                ctx.set(word, w)
                ctx.set(en, e)
                want = sum(abs(v) for k, v in enumerate(vals) if (e >> k) & 1)
                assert ctx.get(total) == want, (vals, e)

    sim.add_testbench(tb)
    sim.run()
