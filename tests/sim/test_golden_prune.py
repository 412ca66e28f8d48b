"""Golden model: the xorshift32 PRNG, pruning thresholds and stochastic gradient pruning.

References are written here: Marsaglia's textbook xorshift32, a plain Python pruning loop,
scipy's normal quantile and a numeric integral for the closed-form kept fraction.
Seeds are fixed and printed; hypothesis runs derandomized.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from sparseforge.sim.reference import golden as G
from sparseforge.sim.reference.prng import xorshift32_step, xorshift32_stream
from sparseforge.sim.testkit.seeds import derandomized, rng_factory

SEED = 1908
HYP = derandomized(50)
rng_for = rng_factory(SEED)


def textbook_xorshift32(state):
    """Marsaglia (2003), 'Xorshift RNGs', the 32-bit generator with the (13, 17, 5) triple."""
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def ref_prune_int(g, tau, seed):
    """The hardware pruner, one element per step, in plain Python ints."""
    state, out = seed, []
    for v in np.asarray(g).ravel().tolist():
        state = textbook_xorshift32(state)
        r = ((state >> 16) * tau) >> 16
        if abs(v) >= tau:
            out.append(v)
        elif r < abs(v):
            out.append(tau if v > 0 else -tau)
        else:
            out.append(0)
    return np.array(out, dtype=np.int64).reshape(np.shape(g)), state


# ---------------------------------------------------------------------------------------------
# xorshift32
# ---------------------------------------------------------------------------------------------

def test_xorshift32_known_values():
    assert xorshift32_step(1) == 270369
    assert xorshift32_step(270369) == 67634689
    assert xorshift32_step(67634689) == 2647435461
    assert xorshift32_stream(1, 3).tolist() == [270369, 67634689, 2647435461]
    x, seq = 1, []
    for _ in range(3):
        x = textbook_xorshift32(x)
        seq.append(x)
    assert seq == [270369, 67634689, 2647435461]
    assert xorshift32_step(0) == 0                  # the fixed point, hence seeds must be != 0
    assert xorshift32_stream(5, 0).shape == (0,)


@pytest.mark.parametrize("seed", [1, 2463534242, 0xFFFFFFFF, 0x80000000])
@pytest.mark.parametrize("count", [1, 17, 4095, 4096, 4097, 10007, 65536])
def test_xorshift32_stream_vs_textbook(seed, count):
    stream = xorshift32_stream(seed, count)
    assert stream.dtype == np.uint32 and stream.shape == (count,)
    x, ref = seed, []
    for _ in range(count):
        x = textbook_xorshift32(x)
        ref.append(x)
    assert stream.tolist() == ref


@pytest.mark.parametrize("call,exc,match", [
    (lambda: xorshift32_stream(0, 4), ValueError, r"seed must be in \[1, 4294967295\], got 0"),
    (lambda: xorshift32_stream(1 << 32, 4), ValueError, "seed must be in"),
    (lambda: xorshift32_stream(1, -1), ValueError, "count must be >= 0"),
    (lambda: xorshift32_stream(1.0, 4), TypeError, "seed must be an integer"),
    (lambda: xorshift32_step(-1), ValueError, "x must be in"),
    (lambda: xorshift32_step(1 << 32), ValueError, "x must be in"),
])
def test_prng_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9, 0.99, 0.999])
def test_prune_threshold_formula(p):
    rng = rng_for("thr", p)
    g = rng.standard_normal(1000) * 0.01
    expected = stats.norm.ppf((1 + p) / 2) * math.sqrt(math.pi / 2) * np.mean(np.abs(g))
    assert math.isclose(G.prune_threshold(g, p), expected, rel_tol=1e-12, abs_tol=1e-300)
    assert isinstance(G.prune_threshold(g, p), float)


def kept_fraction_closed_form(p):
    """Gaussian g, tau = z*sigma with z = Phi^-1((1+p)/2) (because mean|g| = sigma*sqrt(2/pi)).

    P(|g| >= tau) = 1 - p; below tau an element is kept with probability |g|/tau, which
    integrates to E[|g|/tau; |g| < tau] = sqrt(2/pi) * (1 - exp(-z^2/2)) / z.
    """
    z = stats.norm.ppf((1 + p) / 2)
    return (1 - p) + math.sqrt(2 / math.pi) * (1 - math.exp(-z * z / 2)) / z


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_closed_form_kept_fraction_matches_integral(p):
    z = stats.norm.ppf((1 + p) / 2)
    tail = 2 * stats.norm.sf(z)
    below = integrate.quad(lambda t: t / z * 2 * stats.norm.pdf(t), 0, z)[0]
    assert math.isclose(tail + below, kept_fraction_closed_form(p), rel_tol=1e-9)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_nonzero_fraction_on_gaussian_data(p):
    rng = rng_for("frac", p)
    g = rng.standard_normal(200_000) * 3.0
    tau = G.prune_threshold(g, p)
    out = G.stochastic_prune(g, tau, rng)
    assert abs(np.mean(np.abs(g) >= tau) - (1 - p)) < 3e-3
    # binomial sd of the fraction ~1.1e-3; tau's own sampling error adds < 2e-3
    assert abs(np.mean(out != 0) - kept_fraction_closed_form(p)) < 4e-3


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_prune_threshold_int_vs_float(p):
    rng = rng_for("thr-int", p)
    g = np.round(rng.standard_normal((16, 64)) * 1500).astype(np.int16)
    k_p, s = G.prune_threshold_params(p, g.size)
    assert s == 32 and 1 <= k_p < 2**32
    coefficient = stats.norm.ppf((1 + p) / 2) * math.sqrt(math.pi / 2)
    assert abs(k_p - coefficient / g.size * 2**32) <= 0.5 + 1e-6
    tau_int = G.prune_threshold_int(g, k_p, s)
    abs_sum = sum(abs(int(v)) for v in g.ravel())
    assert tau_int == (abs_sum * k_p) >> s                    # exact integer form
    # quantisation: floor (<= 1) plus k_p rounding (<= 0.5 * sum|g| / 2**s)
    assert abs(tau_int - G.prune_threshold(g, p)) <= 1 + 0.5 * abs_sum / 2**s


def test_prune_threshold_int_clamp_and_options():
    g = np.full(100, 1000, dtype=np.int64)                    # sum|g| = 100000
    assert G.prune_threshold_int(g, 1 << 16, 16) == 32767     # 100000 clamped (data_width 16)
    assert G.prune_threshold_int(g, 1 << 16, 16, data_width=None) == 100000
    assert G.prune_threshold_int(g, 1 << 16, 16, data_width=18) == 100000
    assert G.prune_threshold_int(g, 3, 2, data_width=None) == (100000 * 3) >> 2
    assert G.prune_threshold_int(g, 3, 20) == (100000 * 3) >> 20
    assert G.prune_threshold_int(g, 0, 0) == 0
    assert G.prune_threshold_int(np.array([-32768, 32767], np.int16), 1, 0) == 32767
    assert G.prune_threshold_int(np.array([-5, 5]), 1, 0, data_width=4) == 7
    big = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max])
    assert G.prune_threshold_int(big, 1, 0, data_width=None) == 2**64 - 1     # exact, no wrap


def test_prune_threshold_params_edges():
    assert G.prune_threshold_params(0.0, 1000) == (0, 32)      # p = 0: threshold 0
    k_p, s = G.prune_threshold_params(0.9, 1000, shift=20)
    assert s == 20 and abs(k_p - stats.norm.ppf(0.95) * math.sqrt(math.pi / 2) / 1000 * 2**20) <= 0.5 + 1e-6
    k_p, s = G.prune_threshold_params(0.9, 1, shift=30)       # the largest shift that fits
    assert k_p < 2**32 <= round(k_p * 2.0)
    with pytest.raises(ValueError, match="use a larger shift"):
        G.prune_threshold_params(0.5, 10**9, shift=8)
    with pytest.raises(ValueError, match=r"use a smaller shift \(shift=30 keeps the most precision\)"):
        G.prune_threshold_params(0.9, 1, shift=40)


# ---------------------------------------------------------------------------------------------
# Stochastic pruning: float form
# ---------------------------------------------------------------------------------------------

def test_stochastic_prune_float_values_and_edges():
    rng = rng_for("float-edges")
    g = np.array([-3.0, -0.5, 0.0, 0.25, 1.0, 2.0, 5.0])
    out = G.stochastic_prune(g, 1.0, rng)
    assert out.dtype == np.float64
    big = np.abs(g) >= 1.0
    np.testing.assert_array_equal(out[big], g[big])
    assert set(out[~big].tolist()) <= {-1.0, 0.0, 1.0}
    assert out[2] == 0.0
    assert np.all(np.sign(out[~big]) * np.sign(g[~big]) >= 0)  # never flips the sign
    copy = G.stochastic_prune(g, 0.0, rng)
    np.testing.assert_array_equal(copy, g)
    assert copy is not g
    np.testing.assert_array_equal(G.stochastic_prune(g, -1.0, rng), g)


def test_stochastic_prune_float_uses_rng_random():
    g = np.array([0.1, -0.7, 0.3, 0.9])
    u = np.random.default_rng(7).random(g.shape)
    expected = np.where(u < np.abs(g) / 1.0, np.sign(g), 0.0)
    np.testing.assert_array_equal(G.stochastic_prune(g, 1.0, np.random.default_rng(7)), expected)


def test_stochastic_prune_float_unbiased():
    rng = rng_for("float-unbiased")
    g = rng.standard_normal(48) * 0.5
    tau = 1.0
    trials = 3000
    print(f"seeds 0..{trials - 1}")
    total = np.zeros_like(g)
    for seed in range(trials):
        total += G.stochastic_prune(g, tau, np.random.default_rng(seed))
    mean = total / trials
    # per element: |g| < tau -> value tau*sign(g) w.p. |g|/tau: variance |g| * (tau - |g|)
    sd = np.sqrt(np.where(np.abs(g) < tau, np.abs(g) * (tau - np.abs(g)), 0.0) / trials)
    assert np.all(np.abs(mean - g) <= 5 * sd + 1e-12)


# ---------------------------------------------------------------------------------------------
# Stochastic pruning: bit-exact integer (hardware) form
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0, 1, 7, 300, 4096, 32767])
@pytest.mark.parametrize("seed", [1, 0xDEADBEEF, 0xFFFFFFFF])
def test_stochastic_prune_int_vs_python_loop(tau, seed):
    rng = rng_for("int-ref", tau, seed)
    g = rng.integers(-32768, 32768, (3, 5, 7), dtype=np.int16)
    g[0, 0, :4] = [0, -32768, 32767, tau]
    out, state = G.stochastic_prune_int(g, tau, seed)
    ref, ref_state = ref_prune_int(g, tau, seed)
    assert out.dtype == np.int64 and out.shape == g.shape
    np.testing.assert_array_equal(out, ref)
    assert state == ref_state


def test_stochastic_prune_int_row_major_order_and_state_chaining():
    rng = rng_for("int-order")
    g = rng.integers(-100, 101, (6, 8))
    out, state = G.stochastic_prune_int(g, 64, 12345)
    # Fortran-ordered input: same logical (row-major) processing order
    out_f, state_f = G.stochastic_prune_int(np.asfortranarray(g), 64, 12345)
    np.testing.assert_array_equal(out_f, out)
    assert state_f == state
    # Two halves with the state carried over == one pass: one PRNG step per element
    top, mid = G.stochastic_prune_int(g[:3], 64, 12345)
    bottom, end = G.stochastic_prune_int(g[3:], 64, mid)
    np.testing.assert_array_equal(np.concatenate([top, bottom]), out)
    assert end == state == int(xorshift32_stream(12345, g.size)[-1])


def test_stochastic_prune_int_determinism_and_edges():
    g = np.arange(-50, 50)
    a = G.stochastic_prune_int(g, 40, 99)
    b = G.stochastic_prune_int(g, 40, 99)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    c = G.stochastic_prune_int(g, 40, 100)
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(G.stochastic_prune_int(g, 0, 5)[0], g)     # tau 0: identity
    out, _ = G.stochastic_prune_int(np.zeros(1000, np.int64), 100, 5)
    assert not out.any()                                                       # 0 always stays 0
    out, state = G.stochastic_prune_int(np.zeros((0, 3), np.int64), 100, 5)
    assert out.shape == (0, 3) and state == 5
    out, _ = G.stochastic_prune_int(np.array([-128, 127, -1]), 127, 5, data_width=8)
    assert out[0] == -128 and out[1] == 127 and out[2] in (-127, 0)


def test_stochastic_prune_int_unbiased_over_seeds():
    # Seeds spread over the whole 32-bit range.  (Consecutive small seeds 1, 2, 3, ... are NOT
    # suitable: xorshift32 needs a few steps to spread a low-entropy seed into its upper bits,
    # so the first draws of such seeds are far from uniform -- see docs/golden-model.md.)
    g = np.array([1, 5, 17, 63, -64, 99, -100, -127, 128, -3000, 0])
    tau = 128
    trials = 4000
    seeds = rng_for("int-unbiased").integers(1, 2**32, trials)
    total = np.zeros(g.shape, dtype=np.int64)
    for seed in seeds:
        total += G.stochastic_prune_int(g, tau, int(seed))[0]
    mean = total / trials
    mag = np.abs(g)
    sd = np.sqrt(np.where(mag < tau, mag * (tau - mag), 0) / trials)
    # keep probability is ceil(|g| * 2**16 / tau) / 2**16: |bias| <= tau / 2**16 per element
    assert np.all(np.abs(mean - g) <= 5 * sd + tau / 2**16)


def test_stochastic_prune_int_unbiased_long_stream():
    rng = rng_for("int-long")
    g = rng.integers(-200, 201, 64)
    reps = 5000
    out, _ = G.stochastic_prune_int(np.tile(g, reps), 256, 0xACE1)
    mean = out.reshape(reps, -1).mean(axis=0)
    mag = np.abs(g)
    sd = np.sqrt(np.where(mag < 256, mag * (256 - mag), 0) / reps)
    assert np.all(np.abs(mean - g) <= 5 * sd + 256 / 2**16)


def test_stochastic_prune_int_large_tensor_matches_chained_small_calls():
    """The vectorised (jump-ahead) PRNG path for long streams equals chained short calls.
    (No wall-clock assertion: speed is measured in benchmarks, never asserted in tests.)"""
    g = np.random.default_rng(3).integers(-32768, 32768, 100_000)
    out, state = G.stochastic_prune_int(g, 1000, 42)
    parts, s = [], 42
    for chunk in np.array_split(g, 50):                     # 2000 elements: the short path
        o, s = G.stochastic_prune_int(chunk, 1000, s)
        parts.append(o)
    np.testing.assert_array_equal(out, np.concatenate(parts))
    assert state == s


@HYP
@given(g=st.lists(st.integers(-2**15, 2**15 - 1), min_size=0, max_size=40),
       tau=st.integers(0, 2**15 - 1), seed=st.integers(1, 2**32 - 1))
def test_stochastic_prune_int_property(g, tau, seed):
    out, state = G.stochastic_prune_int(np.array(g, dtype=np.int64), tau, seed)
    ref, ref_state = ref_prune_int(np.array(g, dtype=np.int64), tau, seed)
    np.testing.assert_array_equal(out, ref)
    assert state == ref_state


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: G.prune_threshold([1.0], 1.0), ValueError, r"p must be a finite number in \[0.0, 1.0\)"),
    (lambda: G.prune_threshold([1.0], -0.1), ValueError, "p must be"),
    (lambda: G.prune_threshold([1.0], float("nan")), ValueError, "p must be"),
    (lambda: G.prune_threshold([1.0], True), TypeError, "p must be a real number"),
    (lambda: G.prune_threshold([1.0], "0.5"), TypeError, "p must be a real number"),
    (lambda: G.prune_threshold([], 0.5), ValueError, "g must not be empty"),
    (lambda: G.prune_threshold(["x"], 0.5), TypeError, "g must have a numeric"),
    (lambda: G.prune_threshold_params(1.0, 10), ValueError, "p must be"),
    (lambda: G.prune_threshold_params(0.5, 0), ValueError, "numel must be >= 1"),
    (lambda: G.prune_threshold_params(0.5, 10, shift=-1), ValueError, "shift must be in"),
    (lambda: G.prune_threshold_params(0.5, 10.0), TypeError, "numel must be an integer"),
    (lambda: G.prune_threshold_int([1, 2], -1, 0), ValueError, "k_p must be in"),
    (lambda: G.prune_threshold_int([1, 2], 2**32, 0), ValueError, "k_p must be in"),
    (lambda: G.prune_threshold_int([1, 2], 1, -1), ValueError, "s must be >= 0"),
    (lambda: G.prune_threshold_int([1.5, 2], 1, 0), TypeError, "g_int must have an integer dtype"),
    (lambda: G.prune_threshold_int([40000], 1, 0), ValueError, "g_int has a value 40000 outside the 16-bit"),
    (lambda: G.prune_threshold_int([1], 1, 0, data_width=1), ValueError, "data_width must be in"),
    (lambda: G.prune_threshold_int([1], 1, 0, data_width=0), ValueError, "data_width must be in"),
    (lambda: G.stochastic_prune([1.0], float("nan"), np.random.default_rng(0)), ValueError, "tau must be a finite number"),
    (lambda: G.stochastic_prune([1.0], 1.0, 0), TypeError, "rng must be a numpy.random.Generator"),
    (lambda: G.stochastic_prune([1.0], "1", np.random.default_rng(0)), TypeError, "tau must be a real number"),
    (lambda: G.stochastic_prune_int([1], 1, 0), ValueError, r"seed must be in \[1, 4294967295\], got 0"),
    (lambda: G.stochastic_prune_int([1], 1, 2**32), ValueError, "seed must be in"),
    (lambda: G.stochastic_prune_int([1], 32768, 1), ValueError, r"tau_int must be in \[0, 32767\]"),
    (lambda: G.stochastic_prune_int([1], -1, 1), ValueError, "tau_int must be in"),
    (lambda: G.stochastic_prune_int([1], 1.0, 1), TypeError, "tau_int must be an integer"),
    (lambda: G.stochastic_prune_int([32768], 1, 1), ValueError, "g_int has a value 32768 outside the 16-bit"),
    (lambda: G.stochastic_prune_int([-129], 1, 1, data_width=8), ValueError, "g_int has a value -129"),
    (lambda: G.stochastic_prune_int([1.0], 1, 1), TypeError, "g_int must have an integer dtype"),
    (lambda: G.stochastic_prune_int([1], 1, 1, data_width=1), ValueError, "data_width must be in"),
    (lambda: G.stochastic_prune_int([1], 1, 1, data_width=0), ValueError, "data_width must be in"),
    (lambda: G.stochastic_prune_int([1], 1, 1, data_width=-16), ValueError, "data_width must be in"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
