"""TensorMemory: amaranth-sim test of both port kinds against a numpy model of every buffer."""

import random

import numpy as np
import pytest

from sparseforge.hdl.tensor_mem import TensorMemory
from sparseforge.sim.testkit.amaranth_streams import run_sim


@pytest.mark.parametrize("width,seed", [(32, 1), (128, 2)])
def test_tensor_mem_random_ports(width, seed):
    """Random DMA writes (per-element enables, incl. a bad buffer id that must write nothing),
    compute writes, and reads on both ports with 1-cycle latency; whole contents = model."""
    print(f"seed={seed} width={width}")
    rng = random.Random(seed)
    sizes = (64, 128, 64)
    dut = TensorMemory(sizes=sizes, word_width=width)
    epw = dut.epw
    model = [np.zeros(s // epw * epw, np.uint64).reshape(-1, epw) for s in sizes]
    top = (1 << 16) - 1

    def word_of(k, w):
        return sum(int(model[k][w, j]) << (16 * j) for j in range(epw))

    async def tb(ctx):
        for _ in range(400):
            op = rng.random()
            k = rng.randrange(len(sizes) + 1)            # len(sizes): a bad id
            kk = min(k, len(sizes) - 1)
            w = rng.randrange(sizes[kk] // epw)
            elems = [rng.randint(0, top) for _ in range(epw)]
            data = sum(e << (16 * j) for j, e in enumerate(elems))
            if op < 0.4:
                we = rng.randrange(1 << epw)
                ctx.set(dut.dma.buf, k)
                ctx.set(dut.dma.addr, w)
                ctx.set(dut.dma.wdata, data)
                ctx.set(dut.dma.we, we)
                await ctx.tick()
                ctx.set(dut.dma.we, 0)
                if k < len(sizes):
                    for j in range(epw):
                        if we >> j & 1:
                            model[k][w, j] = elems[j]
            elif op < 0.6:
                cp = dut.compute[kk]
                ctx.set(cp.addr, w)
                ctx.set(cp.wdata, data)
                ctx.set(cp.we, 1)
                await ctx.tick()
                ctx.set(cp.we, 0)
                model[kk][w, :] = elems
            elif op < 0.8:
                ctx.set(dut.dma.buf, k)
                ctx.set(dut.dma.addr, w)
                await ctx.tick()
                assert ctx.get(dut.dma.rdata) == (word_of(k, w) if k < len(sizes) else 0)
            else:
                cp = dut.compute[kk]
                ctx.set(cp.addr, w)
                await ctx.tick()
                assert ctx.get(cp.rdata) == word_of(kk, w)
        for k, s in enumerate(sizes):
            for w in range(s // epw):
                ctx.set(dut.compute[k].addr, w)
                await ctx.tick()
                assert ctx.get(dut.compute[k].rdata) == word_of(k, w), (k, w)

    run_sim(dut, tb)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")   # built, not simulated
def test_tensor_mem_params():
    assert TensorMemory(sizes=(64, 256), word_width=64).addr_width == 6
    with pytest.raises(ValueError, match=r"sizes\[0\] must be a multiple of 4"):
        TensorMemory(sizes=(66,), word_width=64)
    with pytest.raises(ValueError, match="word_width must be a multiple of elem_width"):
        TensorMemory(word_width=40)
