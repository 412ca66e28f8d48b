"""Golden model: N:M masks (SAT / BDWP), N:M compression and the N:M selector's per-group output.

References are written here: a per-group stable argsort of -|w| (the brief's definition) and an
independent rank count.  Seeds are fixed and printed; hypothesis runs derandomized.
"""


import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparseforge.sim.reference import golden as G
from sparseforge.sim.testkit.seeds import derandomized, rng_factory

SEED = 715
HYP = derandomized(80)
rng_for = rng_factory(SEED)


def ref_mag(w):
    """|w| in a wide type: Python ints for integers (exact for any value), float64 otherwise."""
    w = np.asarray(w)
    if w.dtype.kind in "iu":
        return np.array([abs(int(v)) for v in w.ravel()], dtype=object).reshape(w.shape)
    return np.abs(w.astype(np.float64))


def ref_mask_argsort(w, n, m, axis=-1):
    """Per group: np.argsort(-|w|, kind='stable')[:n] (exact ints through float only when safe)."""
    w = np.moveaxis(np.asarray(w), axis, -1)
    out = np.zeros(w.shape, dtype=bool)
    for idx in np.ndindex(w.shape[:-1]):
        for g0 in range(0, w.shape[-1], m):
            group = w[idx][g0:g0 + m]
            key = -np.abs(group.astype(np.int64)) if group.dtype.kind in "iu" else -np.abs(group)
            out[idx][g0 + np.argsort(key, kind="stable")[:n]] = True
    return np.moveaxis(out, -1, axis)


def ref_mask_rank(w, n, m, axis=-1):
    """rank_i = #{j: |w_j| > |w_i| or (|w_j| == |w_i| and j < i)}; keep iff rank_i < n."""
    mag = np.moveaxis(ref_mag(w), axis, -1)
    out = np.zeros(mag.shape, dtype=bool)
    for idx in np.ndindex(mag.shape[:-1]):
        for g0 in range(0, mag.shape[-1], m):
            group = list(mag[idx][g0:g0 + m])
            for i, mi in enumerate(group):
                rank = sum(1 for j, mj in enumerate(group) if mj > mi or (mj == mi and j < i))
                out[idx][g0 + i] = rank < n
    return np.moveaxis(out, -1, axis)


def group_counts(mask, m, axis=-1):
    moved = np.moveaxis(mask, axis, -1)
    return moved.reshape(moved.shape[:-1] + (-1, m)).sum(axis=-1)


# ---------------------------------------------------------------------------------------------
# nm_mask
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [4, 8, 16])
def test_nm_mask_every_n_vs_references(m):
    rng = rng_for("every-n", m)
    w = rng.integers(-3, 4, (6, 4 * m), dtype=np.int16)       # many ties
    w[0, :m] = 5                                              # all-equal group
    w[1, :m] = 0                                              # all-zero group
    w[2, :m] = np.where(np.arange(m) % 2, 2, -2)              # equal magnitudes, mixed signs
    for n in range(1, m + 1):
        mask = G.nm_mask(w, n, m)
        assert mask.dtype == bool and mask.shape == w.shape
        np.testing.assert_array_equal(mask, ref_mask_argsort(w, n, m))
        np.testing.assert_array_equal(mask, ref_mask_rank(w, n, m))
        assert np.all(group_counts(mask, m) == n)
        # all-equal and all-zero groups keep the first n (ties to the lower index)
        np.testing.assert_array_equal(mask[0, :m], np.arange(m) < n)
        np.testing.assert_array_equal(mask[1, :m], np.arange(m) < n)
        np.testing.assert_array_equal(mask[2, :m], np.arange(m) < n)


def test_nm_mask_handpicked():
    w = np.array([3, -1, 4, 1, -5, 9, 2, -6])
    np.testing.assert_array_equal(G.nm_mask(w, 2, 4), [1, 0, 1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(G.nm_mask(w, 2, 8), [0, 0, 0, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(G.nm_mask([1, -1, 1, -1], 1, 4), [1, 0, 0, 0])
    np.testing.assert_array_equal(G.nm_mask([0, 0, 0, 7], 3, 4), [1, 1, 0, 1])


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_most_negative_counts_as_its_true_magnitude(dtype):
    info = np.iinfo(dtype)
    w = np.array([info.max, info.min, info.max, 0], dtype=dtype)
    np.testing.assert_array_equal(G.nm_mask(w, 1, 4), [False, True, False, False])
    np.testing.assert_array_equal(G.nm_mask(w, 2, 4), [True, True, False, False])
    np.testing.assert_array_equal(G.nm_mask(w, 1, 4), ref_mask_rank(w, 1, 4))


def test_int16_most_negative_wins():
    w = np.array([32767, -32768, 1, 1], dtype=np.int16)
    np.testing.assert_array_equal(G.nm_mask(w, 1, 4), [False, True, False, False])


def test_unsigned_input():
    w = np.array([255, 0, 255, 254, 1, 2, 3, 3], dtype=np.uint8)
    np.testing.assert_array_equal(G.nm_mask(w, 2, 4), [1, 0, 1, 0, 0, 0, 1, 1])
    big = np.array([2**64 - 1, 2**63, 0, 1], dtype=np.uint64)
    np.testing.assert_array_equal(G.nm_mask(big, 1, 4), [1, 0, 0, 0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_input(dtype):
    rng = rng_for("float", np.dtype(dtype).name)
    w = rng.standard_normal((5, 16)).astype(dtype)
    w[0, :4] = [0.5, -0.5, 0.5, -0.5]
    w[1, :4] = [0.0, -0.0, 0.0, -0.0]
    w[2, :4] = [-np.inf, 1.0, np.inf, 2.0]
    for n in range(1, 5):
        mask = G.nm_mask(w, n, 4)
        np.testing.assert_array_equal(mask, ref_mask_argsort(w, n, 4))
        np.testing.assert_array_equal(mask, ref_mask_rank(w, n, 4))
    np.testing.assert_array_equal(G.nm_mask(w, 2, 4)[2, :4], [1, 0, 1, 0])


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_axis_handling(axis):
    rng = rng_for("axis", axis)
    w = rng.integers(-4, 5, (8, 8, 8))
    for n, m in [(1, 4), (2, 4), (2, 8), (5, 8)]:
        mask = G.nm_mask(w, n, m, axis=axis)
        np.testing.assert_array_equal(mask, ref_mask_argsort(w, n, m, axis=axis))
        assert np.all(group_counts(mask, m, axis=axis) == n)
    # axis=a on w == axis=-1 on w with that axis moved last
    np.testing.assert_array_equal(
        G.nm_mask(w, 2, 4, axis=axis),
        np.moveaxis(G.nm_mask(np.moveaxis(w, axis, -1), 2, 4), -1, axis))


def test_non_contiguous_input():
    rng = rng_for("noncontig")
    w = rng.integers(-9, 10, (8, 12))[:, ::2].T        # (6, 8), non-contiguous view
    np.testing.assert_array_equal(G.nm_mask(w, 3, 4), ref_mask_rank(w, 3, 4))


@HYP
@given(w=hnp.arrays(np.int16, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
                    elements=st.integers(-4, 4)),
       m=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_exactly_n_per_group_always(w, m, data):
    axis = data.draw(st.integers(-w.ndim, w.ndim - 1))
    w = np.concatenate([w] * m, axis=axis)            # axis length a multiple of m
    n = data.draw(st.integers(1, m))
    mask = G.nm_mask(w, n, m, axis=axis)
    assert np.all(group_counts(mask, m, axis) == n)
    np.testing.assert_array_equal(mask, ref_mask_rank(w, n, m, axis))


@HYP
@given(w=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.sampled_from([8, 16])),
                    elements=st.floats(-1e6, 1e6), unique=True),
       n=st.integers(1, 8))
def test_exactly_n_per_group_no_ties_keeps_the_largest(w, n):
    mask = G.nm_mask(w, n, 8)
    groups = np.abs(w).reshape(w.shape[0], -1, 8)
    kept = mask.reshape(groups.shape)
    assert np.all(kept.sum(-1) == n)
    # every kept magnitude >= every dropped magnitude of its group
    if n < 8:
        low_kept = np.where(kept, groups, np.inf).min(-1)
        high_dropped = np.where(kept, -np.inf, groups).max(-1)
        assert np.all(low_kept >= high_dropped)


# ---------------------------------------------------------------------------------------------
# bdwp_masks
# ---------------------------------------------------------------------------------------------

def test_bdwp_masks_4d():
    rng = rng_for("bdwp4")
    w = rng.integers(-20, 21, (8, 16, 3, 3))
    fwd, bwd = G.bdwp_masks(w, 2, 8)
    assert fwd.shape == bwd.shape == w.shape
    np.testing.assert_array_equal(fwd, ref_mask_argsort(w, 2, 8, axis=1))
    np.testing.assert_array_equal(bwd, ref_mask_argsort(w, 2, 8, axis=0))
    assert np.all(group_counts(fwd, 8, axis=1) == 2)       # along Cin
    assert np.all(group_counts(bwd, 8, axis=0) == 2)       # along Cout
    # bwd is the forward rule on the transposed weights
    np.testing.assert_array_equal(bwd, G.nm_mask(w.transpose(1, 0, 2, 3), 2, 8, axis=1).transpose(1, 0, 2, 3))


def test_bdwp_masks_2d():
    rng = rng_for("bdwp2")
    w = rng.standard_normal((12, 8))
    fwd, bwd = G.bdwp_masks(w, 1, 4)
    np.testing.assert_array_equal(fwd, ref_mask_argsort(w, 1, 4, axis=1))
    np.testing.assert_array_equal(bwd, ref_mask_argsort(w, 1, 4, axis=0))


# ---------------------------------------------------------------------------------------------
# nm_compress / nm_decompress / nm_select_group
# ---------------------------------------------------------------------------------------------

def test_nm_compress_layout():
    w = np.array([[3, -1, 4, 1, -5, 9, 2, -6],
                  [0, 0, 0, 0, 7, 7, 7, 7]])
    values, indices, mask = G.nm_compress(w, 2, 4)
    assert values.shape == indices.shape == (2, 2, 2)         # (rows, G, n)
    assert indices.dtype == np.int64 and values.dtype == w.dtype
    np.testing.assert_array_equal(values, [[[3, 4], [9, -6]], [[0, 0], [7, 7]]])
    np.testing.assert_array_equal(indices, [[[0, 2], [1, 3]], [[0, 1], [0, 1]]])
    np.testing.assert_array_equal(mask, G.nm_mask(w, 2, 4))


def test_nm_compress_axis0_shape():
    rng = rng_for("nmc-axis0")
    w = rng.integers(-9, 10, (8, 3, 5))
    values, indices, mask = G.nm_compress(w, 3, 4, axis=0)
    assert values.shape == (2, 3, 3, 5)                       # axis 0 -> (G=2, n=3)
    for g in range(2):
        for c in range(3):
            for k in range(5):
                group = w[4 * g:4 * g + 4, c, k]
                kept = np.flatnonzero(ref_mask_rank(group, 3, 4))
                np.testing.assert_array_equal(indices[g, :, c, k], kept)
                np.testing.assert_array_equal(values[g, :, c, k], group[kept])
    np.testing.assert_array_equal(G.nm_decompress(values, indices, mask, 4, axis=0), w * mask)


@HYP
@given(w=hnp.arrays(np.int32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                    elements=st.integers(-2**31, 2**31 - 1)),
       m=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_nm_compress_round_trip(w, m, data):
    axis = data.draw(st.integers(-w.ndim, w.ndim - 1))
    w = np.concatenate([w] * m, axis=axis)
    n = data.draw(st.integers(1, m))
    values, indices, mask = G.nm_compress(w, n, m, axis=axis)
    ax = axis % w.ndim
    expected_shape = w.shape[:ax] + (w.shape[ax] // m, n) + w.shape[ax + 1:]
    assert values.shape == indices.shape == expected_shape
    assert np.all((indices >= 0) & (indices < m))
    np.testing.assert_array_equal(mask, G.nm_mask(w, n, m, axis=axis))
    np.testing.assert_array_equal(G.nm_decompress(values, indices, mask, m, axis=axis), w * mask)


def test_nm_decompress_partial_groups_and_validation():
    values = np.array([[[5, 0], [7, 8]]])                     # (1, G=2, n=2)
    indices = np.array([[[2, 0], [0, 3]]])
    mask = np.array([[0, 0, 1, 0, 1, 0, 0, 1]], dtype=bool)   # first group keeps only 1 element
    np.testing.assert_array_equal(G.nm_decompress(values, indices, mask, 4), [[0, 0, 5, 0, 7, 0, 0, 8]])
    with pytest.raises(ValueError, match="indices do not match the set bits of mask"):
        G.nm_decompress(values, np.array([[[1, 0], [0, 3]]]), mask, 4)
    with pytest.raises(ValueError, match="more than the 2 slots"):
        G.nm_decompress(values, indices, np.array([[1, 1, 1, 0, 1, 0, 0, 1]], dtype=bool), 4)
    with pytest.raises(ValueError, match="values shape .* does not match"):
        G.nm_decompress(values, indices, mask, 2)
    with pytest.raises(ValueError, match="indices shape"):
        G.nm_decompress(values, indices[..., :1], mask, 4)
    with pytest.raises(ValueError, match="not a multiple of m=3"):
        G.nm_decompress(values, indices, mask, 3)
    with pytest.raises(TypeError, match="mask must be a bool array"):
        G.nm_decompress(values, indices, mask.astype(float), 4)


def test_nm_select_group_handcrafted():
    group = [3, -1, 4, 1, -5, 9, 2, -6]
    assert G.nm_select_group(group, 2, 4) == (0b10100000, [9, -6, 0, 0], [5, 7, 0, 0])
    assert G.nm_select_group(group, 4, 4) == (0b10110100, [4, -5, 9, -6], [2, 4, 5, 7])
    assert G.nm_select_group(group, 1, 1) == (0b00100000, [9], [5])
    assert G.nm_select_group([5, 5, 5, 5], 2, 3) == (0b0011, [5, 5, 0], [0, 1, 0])
    assert G.nm_select_group([0, 0, 0, 0], 1, 4) == (0b0001, [0, 0, 0, 0], [0, 0, 0, 0])
    assert G.nm_select_group(np.array([32767, -32768, 0, -32768], np.int16), 2, 2) == \
        (0b1010, [-32768, -32768], [1, 3])
    assert G.nm_select_group([1, 2, 3, 4], 4, 4) == (0b1111, [1, 2, 3, 4], [0, 1, 2, 3])


@HYP
@given(group=st.lists(st.integers(-8, 8), min_size=1, max_size=16), data=st.data())
def test_nm_select_group_matches_mask(group, data):
    m = len(group)
    n_max = data.draw(st.integers(1, m))
    n = data.draw(st.integers(1, n_max))
    bits, values, indices = G.nm_select_group(group, n, n_max)
    mask = ref_mask_rank(np.array(group), n, m)
    assert bits == sum(1 << i for i in range(m) if mask[i])
    kept = [i for i in range(m) if mask[i]]
    assert indices == kept + [0] * (n_max - n)
    assert values == [group[i] for i in kept] + [0] * (n_max - n)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: G.nm_mask(np.zeros(6), 2, 4), ValueError, r"length of w along axis=-1 .* is 6, not a multiple of m=4"),
    (lambda: G.nm_mask(np.zeros((4, 6)), 1, 4, axis=1), ValueError, "axis=1 .* not a multiple of m=4"),
    (lambda: G.nm_mask(np.zeros(8), 5, 4), ValueError, "n must be <= m, got n=5 > m=4"),
    (lambda: G.nm_mask(np.zeros(8), 0, 4), ValueError, "n must be >= 1, got 0"),
    (lambda: G.nm_mask(np.zeros(8), -1, 4), ValueError, "n must be >= 1"),
    (lambda: G.nm_mask(np.zeros(8), 1, 0), ValueError, "m must be >= 1, got 0"),
    (lambda: G.nm_mask(np.zeros(8), 1, -4), ValueError, "m must be >= 1"),
    (lambda: G.nm_mask(np.zeros(8), 2.0, 4), TypeError, "n must be an integer"),
    (lambda: G.nm_mask(np.zeros(8), 2, "4"), TypeError, "m must be an integer"),
    (lambda: G.nm_mask(np.zeros(8), True, 4), TypeError, "n must be an integer"),
    (lambda: G.nm_mask(np.zeros(8), 1, 4, axis=1), ValueError, "axis 1 is out of range for a 1-D array"),
    (lambda: G.nm_mask(np.zeros((2, 8)), 1, 4, axis=-3), ValueError, "axis -3 is out of range"),
    (lambda: G.nm_mask(np.zeros(8), 1, 4, axis=0.0), TypeError, "axis must be an integer"),
    (lambda: G.nm_mask(np.float64(3.0), 1, 1), ValueError, "w must have at least one dimension"),
    (lambda: G.nm_mask(["a", "b"], 1, 2), TypeError, "w must have a numeric"),
    (lambda: G.nm_mask([1 + 1j, 2], 1, 2), TypeError, "w must have a numeric"),
    (lambda: G.nm_mask([True, False], 1, 2), TypeError, "w must have a numeric"),
    (lambda: G.nm_mask([[1, 2], [3]], 1, 2), ValueError, "w must be a numeric array-like"),
    (lambda: G.nm_mask(None, 1, 2), TypeError, "w must have a numeric"),
    (lambda: G.nm_mask([1.0, np.nan], 1, 2), ValueError, "w contains NaN"),
    (lambda: G.bdwp_masks(np.zeros((8, 8, 3)), 2, 4), ValueError, "w must be 2-D or 4-D, got 3-D"),
    (lambda: G.bdwp_masks(np.zeros(8), 2, 4), ValueError, "w must be 2-D or 4-D"),
    (lambda: G.bdwp_masks(np.zeros((8, 6)), 2, 4), ValueError, "axis=1 .* not a multiple of m=4"),
    (lambda: G.bdwp_masks(np.zeros((6, 8)), 2, 4), ValueError, "axis=0 .* not a multiple of m=4"),
    (lambda: G.bdwp_masks(np.zeros((8, 8)), 5, 4), ValueError, "n must be <= m"),
    (lambda: G.nm_compress(np.zeros(6), 1, 4), ValueError, "not a multiple of m=4"),
    (lambda: G.nm_compress(np.zeros(8), 0, 4), ValueError, "n must be >= 1"),
    (lambda: G.nm_select_group([1, 2, 3, 4], 3, 2), ValueError, r"n must be in \[1, 2\], got 3"),
    (lambda: G.nm_select_group([1, 2, 3, 4], 1, 5), ValueError, r"n_max must be in \[1, 4\], got 5"),
    (lambda: G.nm_select_group([1, 2, 3, 4], 0, 2), ValueError, "n must be in"),
    (lambda: G.nm_select_group([[1, 2], [3, 4]], 1, 2), ValueError, "group must be 1-D"),
    (lambda: G.nm_select_group([1, 2], 1.5, 2), TypeError, "n must be an integer"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
