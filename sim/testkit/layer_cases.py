"""The layer cases the RTL tests run and the performance-model tests replay: one home, so the
model tests check exactly the layers the RTL was checked on (same cases, same seeds)."""

from __future__ import annotations

from sparseforge.gen.config import preset

__all__ = ["PE_CFG", "PE_RTL_CASES", "ARRAY_CFG", "ARRAY_CASES", "SMALL_TOP_CFG"]

# One PE: small rows and buffers keep pysim fast; 4 lanes.
PE_CFG = preset("tiny").replace(macs_per_pe=4, max_row_len=16, k_max=5, psum_buf_depth=512,
                                act_buf_depth=512)
# The top level's small configuration (1x2 array, short rows): the router, controller and
# accelerator tests, and the top-level cocotb runs under Icarus (Verilator runs ``tiny``).
SMALL_TOP_CFG = preset("tiny").replace(pe_rows=1, pe_cols=2, psum_buf_depth=64,
                                       act_buf_depth=256, max_row_len=16, k_max=3,
                                       name="small")
# The 2x2 array.
ARRAY_CFG = preset("tiny").replace(max_row_len=16, k_max=5, psum_buf_depth=64, act_buf_depth=512)


def _rtl_case(mode, K, S, pad, zf, nm, dense, raw, io="always/always", chans=(4, 4), hw=6):
    """One :data:`PE_RTL_CASES` entry: ``io`` = source/sink patterns, ``chans`` = (cin, cout),
    ``hw`` = H = W."""
    return (mode, K, S, pad, zf, nm, dense, raw, *io.split("/"), *chans, hw, hw)


# (mode, K, S, pad, zero fraction, N:M, dense mode, raw, src, sink, cin, cout, H, W)
PE_RTL_CASES = [
    _rtl_case("fp", 3, 1, 1, 0.5, (2, 4), False, True),
    _rtl_case("fp", 3, 2, 1, 0.5, None, False, False, io="random/random", hw=7),
    _rtl_case("fp", 5, 1, 2, 0.9, (2, 8), False, True, chans=(8, 4)),
    _rtl_case("fp", 1, 1, 0, 0.0, (1, 8), False, False, io="bursty/cycle", chans=(8, 4)),
    _rtl_case("fp", 5, 2, 2, 1.0, None, False, True, hw=7),
    _rtl_case("fp", 3, 2, 0, 0.0, None, True, True, chans=(2, 4), hw=7),
    _rtl_case("fp", 1, 2, 1, 0.5, (2, 4), False, False, io="always/random"),
    _rtl_case("bp", 3, 1, 1, 0.5, (2, 4), False, True),
    _rtl_case("bp", 3, 2, 1, 0.9, (2, 8), False, False, io="random/random", chans=(4, 8), hw=7),
    _rtl_case("bp", 5, 1, 2, 0.5, None, False, True),
    _rtl_case("bp", 1, 2, 0, 0.0, (1, 8), False, False, chans=(4, 8)),
    _rtl_case("bp", 5, 2, 1, 1.0, (2, 4), False, True, io="cycle/bursty", hw=7),
    _rtl_case("bp", 3, 1, 0, 0.0, None, True, True, chans=(4, 2)),
    _rtl_case("wg", 3, 1, 1, 0.5, None, False, True),
    _rtl_case("wg", 3, 2, 1, 0.9, None, False, False, io="random/random", hw=7),
    _rtl_case("wg", 5, 1, 2, 0.0, None, False, True, chans=(2, 4)),
    _rtl_case("wg", 1, 1, 0, 1.0, None, False, True),
    _rtl_case("wg", 5, 2, 0, 0.5, None, False, False, io="bursty/always", hw=7),
    _rtl_case("wg", 3, 1, 1, 0.0, None, True, True, chans=(2, 2)),
]


# (mode, K, S, pad, zero fraction, N:M, dense, raw, mapping, src, sink, cin, cout, H, W)
ARRAY_CASES = [
    ("fp", 3, 1, 1, 0.5, (2, 4), False, False, "interleaved", "always", "always", 4, 4, 6, 6),
    ("fp", 3, 2, 1, 0.9, None, False, True, "in_order", "always", "always", 5, 3, 7, 7),
    ("bp", 3, 1, 1, 0.5, None, False, True, "in_order", "always", "always", 3, 5, 6, 6),
    ("fp", 1, 1, 0, 0.0, None, True, True, "interleaved", "random", "random", 4, 4, 5, 5),
    ("bp", 3, 1, 1, 0.5, (2, 4), False, True, "interleaved", "always", "always", 4, 4, 6, 6),
    ("bp", 5, 2, 2, 0.9, None, False, False, "interleaved", "bursty", "cycle", 3, 4, 7, 7),
    ("wg", 3, 1, 1, 0.5, None, False, True, "interleaved", "always", "always", 4, 4, 6, 6),
    ("wg", 3, 2, 0, 0.99, None, False, False, "in_order", "random", "random", 3, 4, 7, 7),
    ("fp", 5, 1, 2, 1.0, (1, 8), False, True, "interleaved", "always", "always", 8, 2, 6, 6),
]
