"""Golden model: the Compressor's (value, column, last) row format and its inverse.

The reference compressor is a plain Python loop written here.  Seeds are fixed and printed;
hypothesis runs derandomized.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparseforge.sim.reference import golden as G

SEED = 2007
HYP = settings(max_examples=80, deadline=None, derandomize=True)


def ref_compress(row, mode="none", mask=None):
    """Mask, then emit non-zeros in column order; the final column always, with last=True."""
    beats = []
    for col, v in enumerate(int(x) for x in row):
        if mode == "relu" and v < 0:
            v = 0
        if mode == "mask" and not mask[col]:
            v = 0
        if col == len(row) - 1:
            beats.append((v, col, True))
        elif v != 0:
            beats.append((v, col, False))
    return beats


def beats_of(stream):
    values, cols, last = stream
    assert values.dtype == np.int64 and cols.dtype == np.int64 and last.dtype == bool
    assert values.shape == cols.shape == last.shape
    return list(zip(values.tolist(), cols.tolist(), last.tolist()))


def masked(row, mode, mask):
    row = np.asarray(row, dtype=np.int64)
    if mode == "relu":
        return np.maximum(row, 0)
    if mode == "mask":
        return np.where(mask, row, 0)
    return row


def test_compress_row_handpicked():
    assert beats_of(G.compress_row([0, 3, 0, -2, 0])) == [(3, 1, False), (-2, 3, False), (0, 4, True)]
    assert beats_of(G.compress_row([0, 3, 0, -2, 7])) == [(3, 1, False), (-2, 3, False), (7, 4, True)]
    assert beats_of(G.compress_row([5])) == [(5, 0, True)]
    assert beats_of(G.compress_row([0])) == [(0, 0, True)]


@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_all_zero_row_is_exactly_one_last_beat(length):
    assert beats_of(G.compress_row(np.zeros(length, dtype=np.int16))) == [(0, length - 1, True)]


def test_relu_and_mask_modes():
    row = np.array([-4, 2, -1, 0, 6, -3])
    assert beats_of(G.compress_row(row, "relu")) == [(2, 1, False), (6, 4, False), (0, 5, True)]
    mask = np.array([True, False, True, True, False, True])
    assert beats_of(G.compress_row(row, "mask", mask)) == [(-4, 0, False), (-1, 2, False), (-3, 5, True)]
    assert beats_of(G.compress_row(row, "mask", [1, 0, 1, 1, 0, 0])) == [(-4, 0, False), (-1, 2, False), (0, 5, True)]
    assert beats_of(G.compress_row(row)) == ref_compress(row)


@HYP
@given(row=hnp.arrays(np.int16, st.integers(1, 40), elements=st.sampled_from([0, 0, 0, 1, -1, 32767, -32768, 5])),
       mode=st.sampled_from(["none", "relu", "mask"]), data=st.data())
def test_compress_row_vs_reference_and_round_trip(row, mode, data):
    mask = data.draw(hnp.arrays(bool, row.shape)) if mode == "mask" else None
    stream = G.compress_row(row, mode, mask)
    beats = beats_of(stream)
    assert beats == ref_compress(row, mode, mask)
    assert sum(last for _, _, last in beats) == 1 and beats[-1][2] and beats[-1][1] == row.size - 1
    np.testing.assert_array_equal(G.decompress_row(stream[0], stream[1], row.size), masked(row, mode, mask))


@HYP
@given(x=hnp.arrays(np.int32, st.tuples(st.integers(0, 6), st.integers(1, 12)),
                    elements=st.integers(-3, 3)),
       mode=st.sampled_from(["none", "relu", "mask"]), data=st.data())
def test_compress_rows_is_the_concatenation_and_round_trips(x, mode, data):
    mask = data.draw(hnp.arrays(bool, x.shape)) if mode == "mask" else None
    values, cols, last = G.compress_rows(x, mode, mask)
    expected = [b for r in range(x.shape[0])
                for b in ref_compress(x[r], mode, None if mask is None else mask[r])]
    assert beats_of((values, cols, last)) == expected
    assert int(last.sum()) == x.shape[0]
    out = G.decompress_rows(values, cols, last, x.shape[1])
    assert out.dtype == np.int64 and out.shape == x.shape
    np.testing.assert_array_equal(out, masked(x, mode, mask))


def test_decompress_row_handpicked():
    np.testing.assert_array_equal(G.decompress_row([3, -2], [1, 3], 5), [0, 3, 0, -2, 0])
    np.testing.assert_array_equal(G.decompress_row([], [], 3), [0, 0, 0])


@pytest.mark.parametrize("call,exc,match", [
    (lambda: G.compress_row([1, 2], "gelu"), ValueError, "mode must be one of"),
    (lambda: G.compress_row([1, 2], "mask"), ValueError, "mode='mask' needs a mask"),
    (lambda: G.compress_row([1, 2], "relu", [True, False]), ValueError, "mask is only used with mode='mask'"),
    (lambda: G.compress_row([1, 2], "mask", [True]), ValueError, r"mask shape \(1,\) does not match"),
    (lambda: G.compress_row([1, 2], "mask", [0.5, 1.0]), TypeError, "mask must be a bool array"),
    (lambda: G.compress_row([1, 2], "mask", [2, 1]), TypeError, "mask must be a bool array"),
    (lambda: G.compress_row([], "none"), ValueError, "rows must have length >= 1"),
    (lambda: G.compress_row([[1, 2]]), ValueError, "row must be 1-D"),
    (lambda: G.compress_row([1.5, 2.0]), TypeError, "row must have an integer dtype"),
    (lambda: G.compress_rows([1, 2]), ValueError, "x2d must be 2-D"),
    (lambda: G.compress_rows([[1, 2]], "mask", [True, False]), ValueError, "mask shape"),
    (lambda: G.decompress_row([1, 2], [2, 1], 4), ValueError, "cols must be strictly increasing"),
    (lambda: G.decompress_row([1, 2], [1, 1], 4), ValueError, "cols must be strictly increasing"),
    (lambda: G.decompress_row([1], [4], 4), ValueError, r"cols must be in \[0, 3\]"),
    (lambda: G.decompress_row([1], [-1], 4), ValueError, "cols must be in"),
    (lambda: G.decompress_row([1, 2], [1], 4), ValueError, "values and cols lengths differ"),
    (lambda: G.decompress_row([1], [0], 0), ValueError, "length must be >= 1"),
    (lambda: G.decompress_row([1.0], [0], 2), TypeError, "values must have an integer dtype"),
    (lambda: G.decompress_rows([1, 2], [0, 3], [False, False], 4), ValueError, "must end with a last beat"),
    (lambda: G.decompress_rows([1, 2], [0, 2], [True, True], 4), ValueError, "last beat must be at column"),
    (lambda: G.decompress_rows([1, 2], [3, 3], [True], 4), ValueError, "last shape"),
])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
