"""hdl/arith.small_mul: the shift-and-add product the array mapper and the data plane use for
kernel-size factors (instead of DSP blocks), equal to ``*`` for every b < 2**bits."""
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
