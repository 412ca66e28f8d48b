"""Integer batch norm and global average pooling of the golden model (``sim/reference/
golden.py``, *ours*): the definition's properties, closeness to the float batch norm of the
training study, and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseforge.sim.reference import golden

FB, DW = 8, 16
ONE = 1 << FB
HYP = settings(max_examples=40, deadline=None, derandomize=True)


def _float_bn(z, gamma, beta, d):
    axes = (0,) if z.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (z.ndim - 2)
    zf, df = z / ONE, d / ONE
    mu = zf.mean(axes, keepdims=True)
    var = zf.var(axes, keepdims=True)
    inv = 1 / np.sqrt(var + 1e-5)
    xh = (zf - mu) * inv
    g = gamma.reshape(shape) / ONE
    y = g * xh + beta.reshape(shape) / ONE
    n = z.size // z.shape[1]
    dxh = df * g
    dz = inv / n * (n * dxh - dxh.sum(axes, keepdims=True) - xh * (dxh * xh).sum(axes,
                                                                             keepdims=True))
    return y, dz, (df * xh).sum(axes), df.sum(axes)


@HYP
@given(seed=st.integers(0, 2**31), conv=st.booleans(), spread=st.sampled_from([0.3, 1.0, 3.0]))
def test_bn_int_follows_the_float_bn(seed, conv, spread):
    """Forward within 2 LSB of the float batch norm plus 1.5 LSB per unit of ``gamma / std``
    (the mean's rounding is scaled by ``inv`` and ``gamma``); backward within 2 LSB plus 2 LSB
    per unit of ``1 / std`` (the LSB roundings of ``dxhat`` and ``s2`` are scaled by
    ``inv``); dgamma within 8 (a sum of rounded products); dbeta exact (no saturation at these
    values)."""
    rng = np.random.default_rng(seed)
    shape = (2, 3, 4, 5) if conv else (6, 3)
    z = (rng.normal(0.2, spread, shape) * ONE).round().astype(np.int64)
    gamma = (rng.normal(1, 0.2, 3) * ONE).round().astype(np.int64)
    beta = (rng.normal(0, 0.3, 3) * ONE).round().astype(np.int64)
    d = (rng.normal(0, 0.5, shape) * ONE).round().astype(np.int64)
    y, cache = golden.batchnorm_forward_int(z, gamma, beta, FB, DW)
    dz, dgamma, dbeta = golden.batchnorm_backward_int(d, gamma, cache, FB, DW)
    yf, dzf, dgf, dbf = _float_bn(z, gamma, beta, d)
    assert y.dtype == dz.dtype == np.int64 and y.shape == dz.shape == shape
    inv_real = float(cache[1].max()) / (1 << (2 * FB))
    assert np.abs(y - yf * ONE).max() <= 2 + 1.5 * inv_real * np.abs(gamma).max() / ONE
    assert np.abs(dz - dzf * ONE).max() <= 2 + 2 * inv_real
    assert np.abs(dgamma - dgf * ONE).max() <= 8
    assert np.array_equal(dbeta, (dbf * ONE).round().astype(np.int64))


def test_bn_int_definition_by_hand():
    """One channel of four values, worked by hand -- and a constant channel gives xhat 0."""
    z = np.array([[0, 2, 4, 2]], np.int64).T             # (4, 1): values 0, 2, 4, 2 (LSB)
    y, (xhat, inv, n) = golden.batchnorm_forward_int(z, [ONE], [0], FB, DW)
    # mu = rdiv(8, 4) = 2; var = rdiv(4 + 0 + 4 + 0, 4) = 2; std = isqrt(3 << 16) = 443;
    # inv = rdiv(2^32, 443) = 9695186; xhat = rdiv(+-2 * inv, 2^16) = +-296 (float: 295.6)
    assert n == 4 and inv.ravel().tolist() == [9695186]
    assert xhat.ravel().tolist() == [-296, 0, 296, 0] == y.ravel().tolist()
    zc = np.full((3, 1), 77, np.int64)
    y, (xhat, _, _) = golden.batchnorm_forward_int(zc, [ONE], [5], FB, DW)
    assert not xhat.any() and y.ravel().tolist() == [5, 5, 5]
    # saturation: a huge gamma clips y to the data range
    y, _ = golden.batchnorm_forward_int(z, [(1 << 15) - 1], [0], FB, DW)
    assert y.min() == -(1 << 15) and y.max() == (1 << 15) - 1


def test_avgpool_global_int():
    r = np.arange(2 * 3 * 2 * 2, dtype=np.int64).reshape(2, 3, 2, 2)
    out = golden.avgpool_global_int(r)
    assert out.tolist() == [[2, 6, 10], [14, 18, 22]]     # (4k + 6) / 4 rounded half up
    assert golden.avgpool_global_int(np.array([[[[1, 2]]]])).tolist() == [[2]]   # 1.5 -> 2
    assert golden.avgpool_global_int(np.array([[[[-1, -2]]]])).tolist() == [[-1]]  # -1.5 -> -1
    d = np.array([[8, -6, 1]], np.int64)
    g = golden.avgpool_global_backward_int(d, (1, 3, 2, 2))
    assert g.shape == (1, 3, 2, 2) and g[0, :, 1, 1].tolist() == [2, -1, 0]


@pytest.mark.parametrize("call,msg", [
    (lambda: golden.batchnorm_forward_int(np.zeros((2, 3, 4), np.int64), [1] * 3, [0] * 3, FB, DW),
     r"z must be \(B, C\) or \(B, C, H, W\)"),
    (lambda: golden.batchnorm_forward_int(np.zeros((2, 3), np.int64), [1] * 2, [0] * 3, FB, DW),
     r"gamma must have shape \(3,\)"),
    (lambda: golden.batchnorm_forward_int(np.zeros((2, 3), np.int64), [1] * 3, [0] * 2, FB, DW),
     r"beta must have shape \(3,\)"),
    (lambda: golden.batchnorm_forward_int(np.zeros((2, 3), np.int64), [1] * 3, [0] * 3, FB, DW, eps=0),
     "eps"),
    (lambda: golden.batchnorm_forward_int(np.full((2, 3), 0.5), [1] * 3, [0] * 3, FB, DW),
     "z"),
    (lambda: golden.batchnorm_backward_int(np.zeros((2, 3), np.int64), [1] * 3,
                                           golden.batchnorm_forward_int(np.zeros((4, 3), np.int64), [1] * 3,
                                                                        [0] * 3, FB, DW)[1],
                                           FB, DW),
     "d must have the forward's shape"),
    (lambda: golden.avgpool_global_backward_int(np.zeros((1, 2), np.int64), (1, 3, 2, 2)),
     r"d must have shape \(1, 3\)"),
])
def test_bn_int_bad_input(call, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        call()
