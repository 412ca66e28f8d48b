"""cocotb test of the emitted ``weight_pregen``: a whole weight tensor in both directions, under
random idle and back-pressure, reassembled and compared with the golden bdwp_masks + nm_compress."""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from sparseforge.sim.host.pregen import pregen_beats, pregen_reassemble, unpack_pregen_out
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import StreamSink, StreamSource, env_params, run_streams
from sparseforge.sim.testkit.patterns import make_pattern


@cocotb.test()
async def pregen_tensor(dut):
    p = env_params()
    m, n_max, width, n, seed = p["m"], p["n_max"], p["width"], p["n"], p["seed"]
    shape = tuple(p["shape"])
    dut._log.info(f"seed={seed} shape={shape} m={m} n={n} n_max={n_max}")
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    w = rng.integers(lo, hi + 1, size=shape)
    pick = rng.random(shape)
    w[pick < 0.1] = 0
    special = (pick >= 0.1) & (pick < 0.2)
    w[special] = rng.choice([lo, hi, 1, -1], size=int(special.sum()))
    beats = pregen_beats(w, m, width)

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.n.value = n
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    src = StreamSource(dut, "i", beats, make_pattern("random", seed))
    sink = StreamSink(dut, "o", make_pattern("random", seed + 1), expected=len(beats))
    await run_streams(dut.clk, [src], [sink], max_cycles=20 * len(beats) + 100, extra_cycles=10)
    assert len(sink.beats) == len(beats), f"{len(sink.beats)} beats out, {len(beats)} expected"

    res = pregen_reassemble([unpack_pregen_out(b, m=m, n_max=n_max, width=width)
                             for b in sink.beats], shape, m, n)
    fwd_mask, bwd_mask = golden.bdwp_masks(w, n, m)
    fv, fi, _ = golden.nm_compress(w, n, m, axis=1)
    bv, bi, _ = golden.nm_compress(w, n, m, axis=0)
    for name, got, exp in (("fwd_mask", res.fwd_mask, fwd_mask),
                           ("bwd_mask", res.bwd_mask, bwd_mask),
                           ("fwd_values", res.fwd_values, fv),
                           ("fwd_indices", res.fwd_indices, fi),
                           ("bwd_values", res.bwd_values, bv),
                           ("bwd_indices", res.bwd_indices, bi)):
        assert got.shape == exp.shape and np.array_equal(got, exp), f"{name} differs from golden"
    dut._log.info(f"{len(beats)} groups (fwd + bwd) exact")
