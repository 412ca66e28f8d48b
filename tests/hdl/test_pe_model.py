"""The PE's offline mapping (:mod:`sparseforge.gen.mapper.pe`) and cycle model without the
RTL: mapped jobs executed functionally against the golden convolutions over a seeded sample of
shapes, the useful-work and tiling properties of the model, and the mapper's validation.

The RTL runs (amaranth-sim, cocotb) are in ``tests/hdl/test_pe.py``."""

import itertools

import numpy as np
import pytest

from sparseforge.gen.config import preset
from sparseforge.gen.mapper import array as am
from sparseforge.gen.mapper import pe as pm
from sparseforge.sim.testkit import layers

# The RTL tests' configuration (tests/hdl/test_pe.py): the validation messages below name it.
CFG = preset("tiny").replace(macs_per_pe=4, max_row_len=16, k_max=5, psum_buf_depth=512,
                             act_buf_depth=512)


# --------------------------------------------------------------------------------------------
# 1. The mapping + functional model against the golden convolutions (many shapes)
# --------------------------------------------------------------------------------------------

def _model_cases(mode, count, seed):
    grid = list(itertools.product([1, 3, 5], [1, 2], [0, 1, 2], [0.0, 0.5, 0.9, 1.0],
                                  [None, (2, 4), (2, 8), (1, 8)], [False, True], [False, True]))
    rng = np.random.default_rng(seed)
    return [grid[i] for i in rng.choice(len(grid), count, replace=False)]


@pytest.mark.parametrize("mode", ["fp", "bp", "wg"])
def test_pe_mapping_matches_golden(mode):
    """map_conv_* + execute == golden conv2d_* on a seeded sample of the parameter grid, and
    the cycle model's busy_mac == the executed products; dense mode gives the same result."""
    seed = {"fp": 11, "bp": 12, "wg": 13}[mode]
    print(f"seed={seed}")
    cfg = CFG.replace(macs_per_pe=3, psum_buf_depth=4096)
    for K, S, p, zf, nm, dense, raw in _model_cases(mode, 40, seed):
        job, ref = layers.random_layer(mode, cfg=cfg, kernel=K, stride=S, padding=p, zero_frac=zf,
                                   nm=nm, seed=seed, cin=8, cout=8, height=7, width=9,
                                   dense=dense, raw=raw)
        out, busy = pm.execute(job)
        assert np.array_equal(job.assemble(out), ref), (K, S, p, zf, nm, dense, raw)
        st = pm.cycles(job)
        assert st.busy_mac == busy
        assert st.cycles == (st.stall_in + st.proc + st.drained + pm.PIPE_FLUSH
                             + len(job.drains) * pm.DRAIN_ACCEPT + pm.DRAIN_LATENCY)


def test_pe_model_sparse_work_follows_useful_products():
    """Sparse-mode products are exactly the useful ones (non-zero operand x kept tap, valid
    destination), and dense mode does every product of the same layer."""
    cfg = CFG
    x = np.arange(1, 1 + 2 * 6 * 6).reshape(1, 2, 6, 6) % 7 - 3        # has zeros
    w = np.arange(1, 1 + 2 * 2 * 9).reshape(2, 2, 3, 3) % 5 - 2       # has zeros
    mask = w != 0
    sparse = pm.map_conv_fp(x, w, stride=1, padding=1, cfg=cfg, mask=mask)
    dense = pm.map_conv_fp(x, w, stride=1, padding=1, cfg=cfg, mask=mask, dense=True)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    useful = sum(int(np.count_nonzero(xp[0, c, i:i + 6, j:j + 6])) for n in range(2)
                 for c in range(2) for i in range(3) for j in range(3) if w[n, c, i, j])
    every = 2 * 2 * (5 + 6 + 5) ** 2      # (n, c) x taps x outputs whose input is not padding
    assert pm.cycles(sparse).busy_mac == useful
    assert pm.cycles(dense).busy_mac == every
    assert np.array_equal(sparse.assemble(pm.execute(sparse)[0]),
                          dense.assemble(pm.execute(dense)[0]))


def test_pe_model_tiles_hide_drain():
    """With ping-pong halves a tiled sparse layer's drain hides under processing: the tiled
    run costs less than the single-tile run plus nothing more than the first/last tile's
    drain, and the model equals the functional result tile by tile."""
    big = CFG.replace(psum_buf_depth=1 << 16)
    job, ref = layers.random_layer("fp", cfg=big, kernel=3, stride=1, padding=1, zero_frac=0.9,
                               nm=(2, 8), seed=9, cin=16, cout=16, height=16, width=16)
    tiles = pm.split_tiles(job, 256, cfg=big.replace(psum_buf_depth=256))
    got = np.concatenate([pm.execute(t)[0] for t in tiles])
    assert np.array_equal(pm.assemble_tiles(job, tiles, got), ref)
    whole, tiled = pm.cycles(job), pm.cycles_tiles(tiles)
    assert tiled.busy_mac == whole.busy_mac
    print(f"whole layer, one tile: {whole.cycles}; {len(tiles)} tiles: {tiled.cycles}")
    assert tiled.cycles < whole.cycles


@pytest.mark.parametrize("mode_seed", [21, 22])
def test_pe_model_chunked_wg(mode_seed):
    """WG inputs larger than ``act_buf_depth`` (*ours*: chunks of whole ``(b, c)`` planes,
    :func:`pm.wg_chunks`): on a seeded sample of shapes (batch 1-3, strides 1/2, padding 0-2,
    dense mode) the chunked job equals the golden weight gradient, tile by tile too; every
    chunk fits the scratchpad; rows are taken chunk by chunk with ``eoc`` on each run's last
    bundle; the products equal those of the same job with a scratchpad large enough for one
    image, and the cycles exceed its: with chunks of whole samples by at most ``RELOAD_GAP`` +
    the words of each reload (a sample split over chunks also sends its dy rows per chunk)."""
    print(f"seed={mode_seed}")
    rng = np.random.default_rng(mode_seed)
    for _ in range(12):
        B, K, S = int(rng.integers(1, 4)), int(rng.choice([1, 3, 5])), int(rng.choice([1, 2]))
        p, cin = int(rng.integers(0, min(K, 3))), int(rng.integers(1, 6))
        hw = int(rng.integers(5, 9))
        dense = bool(rng.random() < 0.3)
        plane = hw * hw
        depth = max(16, plane * int(rng.integers(1, 4)))
        cfg = CFG.replace(act_buf_depth=depth, psum_buf_depth=4096)
        if B * cin * plane <= depth:
            B = -(-(depth + 1) // (cin * plane))
        job, ref = layers.random_layer("wg", cfg=cfg, kernel=K, stride=S, padding=p,
                                       zero_frac=0.5, seed=mode_seed, batch=B, cin=cin, cout=3,
                                       height=hw, width=hw, dense=dense)
        case = (B, K, S, p, cin, hw, depth, dense)
        bands = pm.wg_chunks((B, cin, hw, hw), depth)
        assert job.chunked and len(job.chunks) == len(bands) > 1, case
        assert all(c.size <= depth for c in job.chunks), case
        x = layers.random_operands("wg", cfg=cfg, kernel=K, stride=S, padding=p, zero_frac=0.5,
                                   seed=mode_seed, batch=B, cin=cin, cout=3, height=hw,
                                   width=hw)[0]
        assert np.array_equal(np.concatenate(job.chunks), x.ravel()), case   # the slices
        assert [r.chunk for r in job.rows] == sorted(r.chunk for r in job.rows), case
        out, busy = pm.execute(job)
        assert np.array_equal(job.assemble(out), ref), case
        runs = job.runs()
        eoc = [bl[-1][4] for bl in job.bundles()]
        assert [k for k, e in enumerate(eoc) if e] == [stop - 1 for _, _, stop in runs], case
        big = layers.random_layer("wg", cfg=cfg.replace(act_buf_depth=1 << 16), kernel=K,
                                  stride=S, padding=p, zero_frac=0.5, seed=mode_seed, batch=B,
                                  cin=cin, cout=3, height=hw, width=hw, dense=dense)[0]
        assert not big.chunked and all(e == 0 for bl in big.bundles() for b in bl for e in b[4:])
        st, one = pm.cycles(job), pm.cycles(big)
        assert st.busy_mac == one.busy_mac == busy and st.proc >= one.proc, case
        assert st.cycles > one.cycles, case
        if (depth // plane) % cin == 0:
            # chunks of whole samples: each dy row is sent once, with the same taps, so the
            # reloads are the only extra cost
            reload = sum(pm.RELOAD_GAP + job.chunks[c].size for c, _, _ in runs[1:])
            assert st.proc == one.proc and st.cycles <= one.cycles + reload, case
        tiles = pm.split_tiles(job, 3 * 9, cfg=cfg.replace(psum_buf_depth=27))
        got = np.concatenate([pm.execute(t)[0] for t in tiles])
        assert np.array_equal(pm.assemble_tiles(job, tiles, got), ref), case
        assert all(t.loads(k == 0) == [c for c, _, _ in t.runs()] for k, t in enumerate(tiles))
        print(f"{case}: {len(job.chunks)} chunks, cycles {st.cycles} (one image: {one.cycles})")


def test_pe_model_chunked_wg_cost():
    """The reload cost on the tiny preset's 2x2 array (act_buf_depth 256): WG 3x3, 2 -> 8
    channels, 16x16 (one 256-word plane per PE column and sample), batch 1 / 2 / 4 against the
    same layer with one image; chunks of whole samples, so the extra cycles are at most the
    reloads (2 + 256 each, one per extra chunk per tile)."""
    cfg = preset("tiny")
    for B in (1, 2, 4):
        st = {}
        for depth in (cfg.act_buf_depth, 1 << 14):
            job, ref = layers.random_array_layer("wg", cfg=cfg.replace(act_buf_depth=depth),
                                                 kernel=3, stride=1, padding=1, seed=1, batch=B,
                                                 cin=2, cout=8, height=16, width=16)
            st[depth] = (am.cycles(job).cycles, len(job.grid[0][0][0].chunks),
                         len(job.grid[0][0]))
        (c, k, t), (one, _, _) = st[cfg.act_buf_depth], st[1 << 14]
        assert k == B and c - one <= t * (B - 1) * (pm.RELOAD_GAP + 256) and (c > one) == (B > 1)
        print(f"batch {B}: {k} chunk(s), {t} tile(s): {c} cycles, one image {one} "
              f"(+{100 * (c / one - 1):.1f}%)")


# --------------------------------------------------------------------------------------------
# 2. Layers the mapper rejects
# --------------------------------------------------------------------------------------------

def _x(shape, v=1):
    return np.full(shape, v, dtype=np.int64)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: pm.map_conv_fp(_x((1, 2, 8, 8)), _x((2, 2, 7, 7)), cfg=CFG), ValueError,
     "kernel row length 7 exceeds k_max=5"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 17)), _x((2, 2, 3, 3)), cfg=CFG), ValueError,
     "input row length 17 exceeds max_row_len=16"),
    (lambda: pm.map_conv_bp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), (1, 2, 6, 6), stride=3, cfg=CFG),
     ValueError, "unsupported stride 3"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), stride=3, cfg=CFG), ValueError,
     "unsupported stride 3"),
    (lambda: pm.map_conv_fp(_x((1, 8, 16, 16)), _x((8, 8, 1, 1)), cfg=CFG), ValueError,
     "psum out of range"),
    (lambda: pm.map_conv_wg(_x((1, 1, 40, 16)), _x((1, 1, 40, 16)), (1, 1, 1, 1), cfg=CFG),
     ValueError, r"dense scratchpad out of range: one input plane \(40x16 = 640 words\)"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4), 1 << 15), _x((2, 2, 3, 3)), cfg=CFG), ValueError,
     "x has values outside the 16-bit signed range"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), padding=6, cfg=CFG), ValueError,
     "padding must be in"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), cfg=CFG.replace(acc_width=32)),
     ValueError, "could overflow the 32-bit accumulator"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 3, 3, 3)), cfg=CFG), ValueError,
     "channel mismatch"),
    (lambda: pm.map_conv_bp(_x((1, 2, 3, 3)), _x((2, 2, 3, 3)), (1, 2, 6, 6), cfg=CFG), ValueError,
     "dy shape"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), cfg=CFG, mask=np.ones((2, 2, 3))),
     TypeError, "mask must be a bool array"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), cfg=CFG, empty_rows="drop"),
     ValueError, "empty_rows must be"),
    (lambda: pm.map_conv_fp(_x((1, 2, 4, 4)), _x((2, 2, 3, 3)), cfg="tiny"), TypeError,
     "cfg must be an AcceleratorConfig"),
])
def test_pe_mapping_rejects_bad_layers(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
