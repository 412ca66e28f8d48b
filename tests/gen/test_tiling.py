"""The one tiler (gen/tiling.py): bands, rows per psum bank, y-major order."""

import numpy as np
import pytest

from sparseforge.gen import tiling


def test_bands_cover_in_order():
    assert tiling.bands(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert tiling.bands(0, 3) == []
    assert tiling.bands(3, 5) == [(0, 3)]
    with pytest.raises(ValueError, match="band size"):
        tiling.bands(3, 0)


def test_rows_per_tile_and_y_major():
    assert tiling.rows_per_tile(64, 10) == 6 and tiling.rows_per_tile(8, 10) == 0
    # planes (b, c) = 2 of 3 rows: y major -> (p0,y0) (p1,y0) (p0,y1) (p1,y1) (p0,y2) (p1,y2)
    assert tiling.y_major(6, 3).tolist() == [0, 3, 1, 4, 2, 5]
    assert np.array_equal(np.sort(tiling.y_major(12, 4)), np.arange(12))
