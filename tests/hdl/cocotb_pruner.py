"""cocotb tests of the emitted ``pruner`` (StochasticPruner) against the golden model.

Scoreboard: whole pruned tensors equal :func:`golden.stochastic_prune_int`, the PRNG ``state``
equals its ``final_state``, ``abs_sum`` equals ``sum|g|`` and ``tau_next`` equals
:func:`golden.prune_threshold_int`; the threshold of one pass feeds the next pass through the
ports, as a controller would do it.
"""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import (StreamSink, StreamSource, env_params, reset,
                                                    run_streams)
from sparseforge.sim.testkit.patterns import make_pattern

RESET_SEED = 1          # sparseforge.hdl.pruner.RESET_SEED (not imported: no Amaranth needed here)
# StochasticPruner.LATENCY comes in as the "latency" parameter from tests/test_pruner.py.


def pack(v, last, dw):
    return (int(v) & ((1 << dw) - 1)) | (int(last) << dw)


def unpack_value(beat, dw):
    v = beat & ((1 << dw) - 1)
    return v - (1 << dw) if v >> (dw - 1) else v


def gaussian_grad(rng, n, dw, scale=1 << 10):
    g = np.rint(rng.normal(0.0, scale, size=n)).astype(np.int64)
    return np.clip(g, -(1 << (dw - 1)), (1 << (dw - 1)) - 1)


async def init(dut):
    Clock(dut.clk, 10, unit="ns").start()
    for name in ("seed_load", "clear", "tau", "k_p", "shift", "seed"):
        getattr(dut, name).value = 0
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut)


async def load_seed(dut, seed):
    """Pulse seed_load for one clock edge (called right after a falling edge)."""
    dut.seed.value = seed
    dut.seed_load.value = 1
    await FallingEdge(dut.clk)
    dut.seed_load.value = 0
    assert int(dut.state.value) == seed, f"state {int(dut.state.value):#x} after loading {seed:#x}"


async def run_job(dut, g, dw, src, sink, seed, *, throughput=False, latency=None):
    """Stream one job; return its pruned values (int64 array). Ends after a falling edge."""
    beats = [pack(v, k == len(g) - 1, dw) for k, v in enumerate(g)]
    source = StreamSource(dut, "i", beats, make_pattern(src, seed))
    snk = StreamSink(dut, "o", make_pattern(sink, seed + 1), expected=len(beats))
    await run_streams(dut.clk, [source], [snk], max_cycles=20 * len(beats) + 100, extra_cycles=8)
    assert len(snk.beats) == len(beats), f"{len(snk.beats)} beats out, {len(beats)} expected"
    lasts = [b >> dw & 1 for b in snk.beats]
    assert lasts == [0] * (len(g) - 1) + [1], "last flags"
    if throughput:
        # first element offered in cycle 0, one per cycle; the last one, accepted in cycle
        # len(g) - 1, leaves LATENCY cycles later.
        assert snk.cycles_at_last == len(g) - 1 + latency, \
            f"throughput: {len(g)} elements, last output in cycle {snk.cycles_at_last}"
    await FallingEdge(dut.clk)
    return np.array([unpack_value(b, dw) for b in snk.beats], dtype=np.int64)


def check_job(dut, k, out, g, tau, prng_in, k_p, s, dw):
    """Compare a finished job with the golden model; return the golden final state."""
    exp, final = golden.stochastic_prune_int(g, tau, prng_in, data_width=dw)
    diff = np.flatnonzero(out != exp)
    assert not diff.size, (f"job {k}: {diff.size} of {len(g)} elements differ, first at {diff[0]}: "
                           f"g={g[diff[0]]} got {out[diff[0]]} expected {exp[diff[0]]}")
    assert int(dut.state.value) == final, f"job {k}: state {int(dut.state.value):#x} != {final:#x}"
    abs_sum = int(np.abs(g).sum())
    got = int(dut.abs_sum.value)
    assert got == abs_sum, f"job {k}: abs_sum {got} != {abs_sum}"
    assert int(dut.overflow.value) == 0
    tau_next = golden.prune_threshold_int(g, k_p, s, data_width=dw)
    got = (int(dut.tau_next_valid.value), int(dut.tau_next.value))
    assert got == (1, tau_next), f"job {k}: (tau_next_valid, tau_next) {got} != (1, {tau_next})"
    return final, exp, tau_next


@cocotb.test()
async def pruner_scoreboard(dut):
    """Three passes: golden tau; hardware tau, PRNG running on; hardware tau after a re-seed."""
    p = env_params()
    seed, dw, n, prate = p["seed"], p["data_width"], p["elems"], p["p"]
    dut._log.info(f"seed={seed} p={prate} elems/job={n} src={p['src']} sink={p['sink']}")
    rng = np.random.default_rng(seed)
    k_p, s = golden.prune_threshold_params(prate, n)
    gs = [gaussian_grad(rng, n, dw) for _ in range(3)]
    gs[0][:4] = [0, -(1 << (dw - 1)), (1 << (dw - 1)) - 1, -1]
    seeds = [int(x) for x in rng.integers(1, 1 << 32, size=2)]
    throughput = p["src"] == "always" and p["sink"] == "always"

    await init(dut)
    dut.k_p.value = k_p
    dut.shift.value = s
    assert int(dut.state.value) == RESET_SEED
    await load_seed(dut, seeds[0])

    prng, tau, nnz, total = seeds[0], golden.prune_threshold_int(gs[0], k_p, s, data_width=dw), 0, 0
    for k, g in enumerate(gs):
        if k == 2:
            await load_seed(dut, seeds[1])
            prng = seeds[1]
        if k:
            tau = int(dut.tau_next.value)          # the hardware's threshold from the last pass
        dut.tau.value = tau
        out = await run_job(dut, g, dw, p["src"], p["sink"], seed + 10 * k, throughput=throughput,
                            latency=p["latency"])
        prng, exp, tau_next = check_job(dut, k, out, g, tau, prng, k_p, s, dw)
        nnz += int(np.count_nonzero(exp))
        total += len(g)
        dut._log.info(f"job {k}: tau={tau} kept {np.count_nonzero(exp)}/{len(g)} "
                      f"tau_next={tau_next}")
        if k:
            # tau from the previous (same-distribution) pass prunes about a fraction p
            frac = float(np.mean(np.abs(g) < tau))
            assert abs(frac - prate) < 0.05, f"job {k}: {frac:.3f} below tau, p = {prate}"
    assert int(dut.count.value) == total, f"count {int(dut.count.value)} != {total}"
    assert int(dut.nnz_out.value) == nnz, f"nnz_out {int(dut.nnz_out.value)} != {nnz}"

    # clear: the job statistics restart, the PRNG does not
    dut.clear.value = 1
    await FallingEdge(dut.clk)
    dut.clear.value = 0
    got = [int(getattr(dut, x).value) for x in ("abs_sum", "count", "nnz_out", "tau_next_valid",
                                                   "tau_next")]
    assert got == [0, 0, 0, 0, 0], f"after clear: {got}"
    assert int(dut.state.value) == prng


@cocotb.test()
async def pruner_reset_mid_stream(dut):
    """Reset in the middle of a back-pressured job; then fresh jobs are exact."""
    p = env_params()
    seed, dw = p["seed"], p["data_width"]
    rng = np.random.default_rng(seed)
    k_p, s = golden.prune_threshold_params(0.9, 400)
    g = gaussian_grad(rng, 400, dw)

    await init(dut)
    dut.k_p.value = k_p
    dut.shift.value = s
    tau = golden.prune_threshold_int(g, k_p, s, data_width=dw)
    dut.tau.value = tau
    await load_seed(dut, 0xC0FFEE)
    # Half a job under random idles and back-pressure, checked against the golden prefix.
    beats = [pack(v, k == len(g) - 1, dw) for k, v in enumerate(g)]
    source = StreamSource(dut, "i", beats, make_pattern("random", seed))
    snk = StreamSink(dut, "o", make_pattern("random", seed + 1))
    for cycle in range(300):
        await FallingEdge(dut.clk)
        source.drive()
        snk.drive()
        await ReadOnly()
        source.sample()
        snk.sample(cycle)
    await FallingEdge(dut.clk)
    exp, _ = golden.stochastic_prune_int(g, tau, 0xC0FFEE, data_width=dw)
    got = np.array([unpack_value(b, dw) for b in snk.beats], dtype=np.int64)
    assert 0 < len(got) < len(g) and np.array_equal(got, exp[:len(got)]), "prefix before reset"
    # Reset with beats offered and the element pipeline full (LATENCY edges without ready
    # fill the output register whatever was in flight).
    dut.o__ready.value = 0
    dut.i__valid.value = 1
    await ClockCycles(dut.clk, p["latency"], rising=False)
    assert int(dut.o__valid.value) == 1
    assert int(dut.i__ready.value) == 0
    dut.rst.value = 1
    dut.i__valid.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    after = {x: int(getattr(dut, x).value) for x in ("o__valid", "state", "abs_sum", "count",
                                                       "nnz_out", "tau_next_valid", "tau_next",
                                                       "overflow")}
    assert after == {"o__valid": 0, "state": RESET_SEED, "abs_sum": 0, "count": 0, "nnz_out": 0,
                     "tau_next_valid": 0, "tau_next": 0, "overflow": 0}, after

    # A fresh job from the reset seed (no load), then one with a loaded seed and hw tau.
    g1, g2 = gaussian_grad(rng, 300, dw), gaussian_grad(rng, 300, dw)
    tau1 = golden.prune_threshold_int(g1, k_p, s, data_width=dw)
    dut.tau.value = tau1
    out = await run_job(dut, g1, dw, "cycle", "random", seed + 1)
    check_job(dut, 1, out, g1, tau1, RESET_SEED, k_p, s, dw)
    await load_seed(dut, 0x12345678)
    tau2 = int(dut.tau_next.value)
    dut.tau.value = tau2
    out = await run_job(dut, g2, dw, "random", "cycle", seed + 2)
    check_job(dut, 2, out, g2, tau2, 0x12345678, k_p, s, dw)
    assert int(dut.count.value) == len(g1) + len(g2)
