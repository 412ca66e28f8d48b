"""Golden model: convolution phases, FC, write-back and the 1-D row primitives.

Every check compares against an independent reference written here (brute-force loops,
numpy.correlate / convolve, Python ints / decimal), never against another golden function,
except the decompositions the brief requires to agree (rows == 2-D, FC == 1x1 conv).
Seeds are fixed and printed; hypothesis runs derandomized.
"""

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sparseforge.sim.reference import golden as G
from sparseforge.sim.testkit.seeds import derandomized, rng_factory

SEED = 20240601
HYP = derandomized(60)
rng_for = rng_factory(SEED)


def acc_dtype(*arrays):
    return np.int64 if all(a.dtype.kind in "iu" for a in arrays) else np.float64


# ---------------------------------------------------------------------------------------------
# Brute-force references (straightforward loops; no golden code)
# ---------------------------------------------------------------------------------------------

def ref_pad(x, p):
    b, c, h, w = x.shape
    xp = np.zeros((b, c, h + 2 * p, w + 2 * p), dtype=x.dtype)
    xp[:, :, p:p + h, p:p + w] = x
    return xp


def ref_out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def ref_forward(x, w, s, p):
    b_, c_, h, wd = x.shape
    co, _, kh, kw = w.shape
    ho, wo = ref_out_size(h, kh, s, p), ref_out_size(wd, kw, s, p)
    xp = ref_pad(x, p)
    out = np.zeros((b_, co, ho, wo), dtype=acc_dtype(x, w))
    for b in range(b_):
        for n in range(co):
            for y in range(ho):
                for xx in range(wo):
                    out[b, n, y, xx] = np.sum(xp[b, :, y * s:y * s + kh, xx * s:xx * s + kw] * w[n])
    return out


def ref_backward_input(dy, w, x_shape, s, p):
    b_, c_, h, wd = x_shape
    co, _, kh, kw = w.shape
    dxp = np.zeros((b_, c_, h + 2 * p, wd + 2 * p), dtype=acc_dtype(dy, w))
    for b in range(b_):
        for n in range(co):
            for y in range(dy.shape[2]):
                for xx in range(dy.shape[3]):
                    dxp[b, :, y * s:y * s + kh, xx * s:xx * s + kw] += dy[b, n, y, xx] * w[n]
    return dxp[:, :, p:p + h, p:p + wd]


def ref_backward_weight(x, dy, w_shape, s, p):
    co, c_, kh, kw = w_shape
    xp = ref_pad(x, p)
    dw = np.zeros(w_shape, dtype=acc_dtype(x, dy))
    for b in range(x.shape[0]):
        for n in range(co):
            for y in range(dy.shape[2]):
                for xx in range(dy.shape[3]):
                    dw[n] += dy[b, n, y, xx] * xp[b, :, y * s:y * s + kh, xx * s:xx * s + kw]
    return dw


def operands(kind, rng, x_shape, w_shape, dy_shape):
    if kind == "int":
        return (rng.integers(-128, 128, x_shape, dtype=np.int16),
                rng.integers(-128, 128, w_shape, dtype=np.int8),
                rng.integers(-2000, 2000, dy_shape, dtype=np.int32))
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(dy_shape)


def assert_same(actual, expected, kind):
    assert actual.shape == expected.shape
    if kind == "int":
        assert actual.dtype == np.int64
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual.dtype == np.float64
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)


KERNELS = [(1, 1), (2, 3), (3, 3), (4, 1), (5, 2), (1, 6), (7, 7), (6, 5)]


@pytest.mark.parametrize("kind", ["int", "float"])
@pytest.mark.parametrize("kh,kw", KERNELS)
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_phases_vs_brute_force(stride, padding, kh, kw, kind):
    rng = rng_for(stride, padding, kh, kw, kind == "int")
    x_shape, w_shape = (2, 3, 9, 7), (4, 3, kh, kw)     # H != W, odd sizes
    dy_shape = (2, 4, ref_out_size(9, kh, stride, padding), ref_out_size(7, kw, stride, padding))
    x, w, dy = operands(kind, rng, x_shape, w_shape, dy_shape)

    y = G.conv2d_forward(x, w, stride=stride, padding=padding)
    assert_same(y, ref_forward(x, w, stride, padding), kind)
    dx = G.conv2d_backward_input(dy, w, x_shape, stride=stride, padding=padding)
    assert_same(dx, ref_backward_input(dy, w, x_shape, stride, padding), kind)
    dw = G.conv2d_backward_weight(x, dy, w_shape, stride=stride, padding=padding)
    assert_same(dw, ref_backward_weight(x, dy, w_shape, stride, padding), kind)

    # Adjoint identities: <conv(x, w), dy> == <x, bwd_input(dy, w)> == <w, bwd_weight(x, dy)>.
    if kind == "int":
        lhs = int(np.sum(y * dy))
        assert lhs == int(np.sum(x.astype(np.int64) * dx)) == int(np.sum(w.astype(np.int64) * dw))
    else:
        lhs = np.sum(y * dy)
        assert np.isclose(lhs, np.sum(x * dx), rtol=1e-10)
        assert np.isclose(lhs, np.sum(w * dw), rtol=1e-10)


def test_uncovered_input_positions_get_zero():
    # H + 2p - K = 6 - 3 = 3 is odd with stride 2: the last input row/column is in no window.
    rng = rng_for("uncovered")
    w = rng.integers(-5, 6, (2, 3, 3, 3))
    dy = rng.integers(-5, 6, (1, 2, 2, 2))
    dx = G.conv2d_backward_input(dy, w, (1, 3, 6, 6), stride=2)
    assert np.all(dx[:, :, 5, :] == 0) and np.all(dx[:, :, :, 5] == 0)
    np.testing.assert_array_equal(dx, ref_backward_input(dy, w, (1, 3, 6, 6), 2, 0))


def test_mixed_int_float_computes_in_float64():
    rng = rng_for("mixed")
    x = rng.integers(-3, 4, (1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = G.conv2d_forward(x, w, padding=1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref_forward(x.astype(np.float64), w.astype(np.float64), 1, 1),
                               rtol=1e-12, atol=1e-12)


def test_int_results_are_exact_beyond_float53():
    # Sums near 2**60: float64 would lose the low bits; int64 must not.
    x = np.full((1, 2, 2, 2), (1 << 28) + 1, dtype=np.int64)
    w = np.full((1, 2, 2, 2), (1 << 28) + 3, dtype=np.int64)
    y = G.conv2d_forward(x, w)
    assert int(y[0, 0, 0, 0]) == 8 * ((1 << 28) + 1) * ((1 << 28) + 3)


def test_unsigned_inputs():
    x = np.full((1, 1, 3, 3), 255, dtype=np.uint8)
    w = np.ones((1, 1, 3, 3), dtype=np.uint16)
    assert G.conv2d_forward(x, w).item() == 9 * 255


# ---------------------------------------------------------------------------------------------
# Rows decomposition == 2-D (property test) and the row primitives vs numpy.correlate
# ---------------------------------------------------------------------------------------------

@HYP
@given(b=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3),
       h=st.integers(1, 8), w=st.integers(1, 8), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.integers(1, 3), padding=st.integers(0, 2), seed=st.integers(0, 2**32 - 1))
def test_rows_decomposition_equals_2d(b, cin, cout, h, w, kh, kw, stride, padding, seed):
    assume(kh <= h + 2 * padding and kw <= w + 2 * padding)
    rng = np.random.default_rng(seed)
    x = rng.integers(-50, 50, (b, cin, h, w))
    wt = rng.integers(-50, 50, (cout, cin, kh, kw))
    y = G.conv2d_forward(x, wt, stride, padding)
    np.testing.assert_array_equal(G.conv2d_forward_rows(x, wt, stride, padding), y)
    dy = rng.integers(-50, 50, y.shape)
    np.testing.assert_array_equal(G.conv2d_backward_input_rows(dy, wt, x.shape, stride, padding),
                                  G.conv2d_backward_input(dy, wt, x.shape, stride, padding))
    np.testing.assert_array_equal(G.conv2d_backward_weight_rows(x, dy, wt.shape, stride, padding),
                                  G.conv2d_backward_weight(x, dy, wt.shape, stride, padding))


def test_rows_decomposition_float():
    rng = rng_for("rows-float")
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((2, 3, 3, 2))
    y = G.conv2d_forward(x, w, 2, 1)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(G.conv2d_forward_rows(x, w, 2, 1), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G.conv2d_backward_input_rows(dy, w, x.shape, 2, 1),
                               G.conv2d_backward_input(dy, w, x.shape, 2, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G.conv2d_backward_weight_rows(x, dy, w.shape, 2, 1),
                               G.conv2d_backward_weight(x, dy, w.shape, 2, 1), rtol=1e-12, atol=1e-12)


def upsample(v, stride):
    u = np.zeros((len(v) - 1) * stride + 1, dtype=v.dtype)
    u[::stride] = v
    return u


@HYP
@given(k=st.integers(1, 7), out_len=st.integers(1, 12), stride=st.integers(1, 3),
       extra=st.integers(0, 4), seed=st.integers(0, 2**32 - 1))
def test_row_fp_vs_correlate(k, out_len, stride, extra, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-99, 100, (out_len - 1) * stride + k + extra)
    w = rng.integers(-99, 100, k)
    expected = np.correlate(x, w, "valid")[::stride][:out_len]
    np.testing.assert_array_equal(G.row_fp(x, w, stride, out_len), expected)


def test_row_fp_taps_beyond_the_row_are_zero():
    x, w = np.array([1, 2, 3]), np.array([1, 10, 100])
    # out[j] = sum_r x[j + r] * w[r], x[3:] = 0
    np.testing.assert_array_equal(G.row_fp(x, w, 1, 4), [321, 32, 3, 0])
    assert G.row_fp(x, w, 1, 0).shape == (0,)


@HYP
@given(k=st.integers(1, 7), j=st.integers(1, 10), stride=st.integers(1, 3),
       trim=st.integers(-3, 3), seed=st.integers(0, 2**32 - 1))
def test_row_bp_is_correlation_with_flipped_kernel(k, j, stride, trim, seed):
    rng = np.random.default_rng(seed)
    dy, w = rng.integers(-99, 100, j), rng.integers(-99, 100, k)
    full = (j - 1) * stride + k
    in_len = max(0, full + trim)
    u = np.pad(upsample(dy, stride), (k - 1, k - 1))
    expected = np.correlate(u, w[::-1], "valid")           # length full
    expected = np.pad(expected, (0, max(0, in_len - full)))[:in_len]
    np.testing.assert_array_equal(G.row_bp(dy, w, stride, in_len), expected)
    if stride == 1:
        np.testing.assert_array_equal(G.row_bp(dy, w, 1, full), np.convolve(dy, w))


@HYP
@given(k=st.integers(1, 7), j=st.integers(1, 10), stride=st.integers(1, 3),
       short=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_row_wg_vs_correlate(k, j, stride, short, seed):
    rng = np.random.default_rng(seed)
    full = (j - 1) * stride + k
    x = rng.integers(-99, 100, max(1, full - short))       # possibly short: missing taps are 0
    dy = rng.integers(-99, 100, j)
    xz = np.pad(x, (0, full - x.size))
    expected = np.correlate(xz, upsample(dy, stride), "valid")
    np.testing.assert_array_equal(G.row_wg(x, dy, stride, k), expected)


# ---------------------------------------------------------------------------------------------
# FC == 1x1 conv == matrix products
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["int", "float"])
def test_fc_phases(kind):
    rng = rng_for("fc", kind)
    x, w, dy = operands(kind, rng, (5, 12), (7, 12), (5, 7))
    xi, wi, dyi = (a.astype(np.int64 if kind == "int" else np.float64) for a in (x, w, dy))
    assert_same(G.fc_forward(x, w), xi @ wi.T, kind)
    assert_same(G.fc_backward_input(dy, w), dyi @ wi, kind)
    assert_same(G.fc_backward_weight(x, dy), dyi.T @ xi, kind)
    assert_same(G.fc_forward(x, w), G.conv2d_forward(x[:, :, None, None], w[:, :, None, None])[..., 0, 0], kind)
    assert_same(G.fc_backward_input(dy, w),
                G.conv2d_backward_input(dy[:, :, None, None], w[:, :, None, None], (5, 12, 1, 1))[..., 0, 0], kind)
    assert_same(G.fc_backward_weight(x, dy),
                G.conv2d_backward_weight(x[:, :, None, None], dy[:, :, None, None], (7, 12, 1, 1))[..., 0, 0], kind)


# ---------------------------------------------------------------------------------------------
# Write-back: shift right, round half to even, saturate
# ---------------------------------------------------------------------------------------------

def ref_writeback(a, frac_bits, data_width):
    with localcontext() as ctx:
        ctx.prec = 80
        q = int((Decimal(int(a)) / Decimal(2) ** frac_bits).to_integral_value(rounding=ROUND_HALF_EVEN))
    return max(-(1 << (data_width - 1)), min((1 << (data_width - 1)) - 1, q))


@pytest.mark.parametrize("frac_bits", [1, 2, 3, 8])
def test_writeback_exact_halves_round_to_even(frac_bits):
    half = 1 << (frac_bits - 1)
    k = np.arange(-6, 7)
    acc = k * (1 << frac_bits) + half                         # exactly k + 0.5
    out = G.writeback(acc, frac_bits, 16)
    expected = np.where(k % 2 == 0, k, k + 1)                 # the even neighbour of k + 0.5
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, [ref_writeback(a, frac_bits, 16) for a in acc])


def test_writeback_handpicked():
    acc = np.array([5, 6, 7, -5, -6, -7, 1, -1, 3, -3])
    np.testing.assert_array_equal(G.writeback(acc, 1, 16), [2, 3, 4, -2, -3, -4, 0, 0, 2, -2])
    np.testing.assert_array_equal(G.writeback(np.array([9, 10, 11, -9, -10, -11]), 2, 16),
                                  [2, 2, 3, -2, -2, -3])      # 2.25, 2.5, 2.75 and negatives


def test_writeback_saturates_both_ends_and_frac0():
    acc = np.array([40000, -40000, 32767, -32768, 32768, -32769, 0, 1 << 62, -(1 << 63)])
    np.testing.assert_array_equal(G.writeback(acc, 0, 16),
                                  [32767, -32768, 32767, -32768, 32767, -32768, 0, 32767, -32768])
    np.testing.assert_array_equal(G.writeback(np.array([255, 256, -256, -257]) * 2, 1, 9),
                                  [255, 255, -256, -256])
    out = G.writeback([1, -2, 3], 0, 2)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [1, -2, 1])


@HYP
@given(acc=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=1, max_size=20),
       frac_bits=st.integers(0, 63), data_width=st.integers(2, 64))
def test_writeback_vs_decimal_reference(acc, frac_bits, data_width):
    out = G.writeback(np.array(acc, dtype=np.int64), frac_bits, data_width)
    assert out.tolist() == [ref_writeback(a, frac_bits, data_width) for a in acc]


@HYP
@given(acc=st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=20),
       frac_bits=st.integers(0, 20), data_width=st.integers(8, 24))
def test_writeback_typical_ranges(acc, frac_bits, data_width):
    out = G.writeback(np.array(acc), frac_bits, data_width)
    assert out.tolist() == [ref_writeback(a, frac_bits, data_width) for a in acc]


# ---------------------------------------------------------------------------------------------
# Errors: clear messages naming the argument, no numpy tracebacks
# ---------------------------------------------------------------------------------------------

X = np.zeros((2, 3, 5, 5), dtype=np.int64)
W = np.zeros((4, 3, 3, 3), dtype=np.int64)
DY = np.zeros((2, 4, 3, 3), dtype=np.int64)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: G.conv2d_forward(X, W[:, :2]), ValueError, "channel mismatch"),
    (lambda: G.conv2d_forward(X[0], W), ValueError, "x shape must have 4 dimensions"),
    (lambda: G.conv2d_forward(X, W[0]), ValueError, "w shape must have 4 dimensions"),
    (lambda: G.conv2d_forward(X, np.zeros((1, 3, 6, 3))), ValueError, "kernel 6x3 is larger than the padded input"),
    (lambda: G.conv2d_forward(X, np.zeros((1, 3, 8, 3)), padding=1), ValueError, "kernel 8x3 is larger than the padded input 7x7"),
    (lambda: G.conv2d_forward(X, W, stride=0), ValueError, "stride must be >= 1"),
    (lambda: G.conv2d_forward(X, W, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: G.conv2d_forward(X, W, stride=1.0), TypeError, "stride must be an integer"),
    (lambda: G.conv2d_forward(X, W, stride=True), TypeError, "stride must be an integer"),
    (lambda: G.conv2d_forward(X.astype(str), W), TypeError, "x must have a numeric"),
    (lambda: G.conv2d_forward(X, W.astype(bool)), TypeError, "w must have a numeric"),
    (lambda: G.conv2d_forward([[1, 2], [3]], W), ValueError, "x must be a numeric array-like"),
    (lambda: G.conv2d_forward(np.full((1, 1, 2, 2), 1 << 31), np.full((1, 1, 2, 2), 1 << 31)),
     ValueError, "int64 accumulation could overflow"),
    (lambda: G.conv2d_forward(np.full((1, 1, 1, 1), 1 << 63, dtype=np.uint64), np.ones((1, 1, 1, 1), int)),
     ValueError, "x has a value .* does not fit in int64"),
    (lambda: G.conv2d_backward_input(DY, W, (2, 3, 5)), ValueError, "x_shape must have 4 dimensions"),
    (lambda: G.conv2d_backward_input(DY, W, (2, 2, 5, 5)), ValueError, "channel mismatch"),
    (lambda: G.conv2d_backward_input(DY[:, :3], W, X.shape), ValueError, r"dy shape \(2, 3, 3, 3\) does not match"),
    (lambda: G.conv2d_backward_input(DY, W, X.shape, stride=2), ValueError, "dy shape .* forward output shape \\(2, 4, 2, 2\\)"),
    (lambda: G.conv2d_backward_input(DY, W, (2, 3, 0, 5)), ValueError, r"x_shape\[2\] must be >= 1"),
    (lambda: G.conv2d_backward_input(DY, W, X.shape, padding=-2), ValueError, "padding must be >= 0"),
    (lambda: G.conv2d_backward_input(DY, W, "abcd"), TypeError, r"x_shape\[0\] must be an integer"),
    (lambda: G.conv2d_backward_weight(X, DY, (4, 2, 3, 3)), ValueError, "channel mismatch"),
    (lambda: G.conv2d_backward_weight(X, DY, (4, 3, 2, 3)), ValueError, "dy shape .* does not match"),
    (lambda: G.conv2d_backward_weight(X, DY[0], W.shape), ValueError, "dy shape"),
    (lambda: G.conv2d_backward_weight(X, DY, (4, 3, 3)), ValueError, "w_shape must have 4 dimensions"),
    (lambda: G.conv2d_backward_weight(X, DY, W.shape, stride=0), ValueError, "stride must be >= 1"),
    (lambda: G.conv2d_forward_rows(X, W[:, :2]), ValueError, "channel mismatch"),
    (lambda: G.conv2d_backward_input_rows(DY[:, :3], W, X.shape), ValueError, "dy shape"),
    (lambda: G.conv2d_backward_weight_rows(X, DY, (4, 3, 2, 3)), ValueError, "dy shape"),
    (lambda: G.fc_forward(np.zeros((2, 3)), np.zeros((4, 5))), ValueError, "channel mismatch"),
    (lambda: G.fc_forward(np.zeros((2, 3, 1)), np.zeros((4, 3))), ValueError, "x must be 2-D"),
    (lambda: G.fc_backward_input(np.zeros((2, 3)), np.zeros((4, 5))), ValueError, "dy shape"),
    (lambda: G.fc_backward_weight(np.zeros((2, 3)), np.zeros((3, 4))), ValueError, "batch mismatch"),
    (lambda: G.writeback([1, 2], -1, 16), ValueError, "frac_bits must be in"),
    (lambda: G.writeback([1, 2], 64, 16), ValueError, "frac_bits must be in"),
    (lambda: G.writeback([1, 2], 0, 1), ValueError, "data_width must be in"),
    (lambda: G.writeback([1, 2], 0, 0), ValueError, "data_width must be in"),
    (lambda: G.writeback([1, 2], 0, -3), ValueError, "data_width must be in"),
    (lambda: G.writeback([1.5, 2], 0, 16), TypeError, "acc must have an integer dtype"),
    (lambda: G.writeback([1, 2], 1.0, 16), TypeError, "frac_bits must be an integer"),
    (lambda: G.row_fp([1, 2], [1], 0, 2), ValueError, "stride must be >= 1"),
    (lambda: G.row_fp([1, 2], [1], 1, -1), ValueError, "out_len must be >= 0"),
    (lambda: G.row_fp([[1, 2]], [1], 1, 1), ValueError, "x_row must be 1-D"),
    (lambda: G.row_bp([1, 2], [[1]], 1, 3), ValueError, "w_row must be 1-D"),
    (lambda: G.row_bp([1, 2], [1], 1, -1), ValueError, "in_len must be >= 0"),
    (lambda: G.row_wg([1, 2], [1], 1, 0), ValueError, "k must be >= 1"),
    (lambda: G.row_wg(["a"], [1], 1, 1), TypeError, "x_row must have a numeric"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
