"""Random layer workloads for tests and tables: operands, their golden result, and the jobs
the offline mapper makes of them (one PE: :func:`random_layer`; the array:
:func:`random_array_layer`)."""

from __future__ import annotations

import numpy as np

from sparseforge.gen.mapper import array as am
from sparseforge.gen.mapper import pe as pm
from sparseforge.sim.reference import golden

__all__ = ["random_operands", "random_layer", "random_array_layer"]



def random_operands(mode, *, cfg, kernel=3, stride=1, padding=1, zero_frac=0.5, nm=None,
                    seed=0, batch=1, cin=4, cout=4, height=6, width=6, raw=True,
                    value_range=None, channel_density=None):
    """Random operands of a layer phase and its golden result: ``(x, w, dy, mask, expected)``.

    Operands are uniform in ``value_range`` (default: the full ``data_width`` range, so
    write-back saturates); a fraction ``zero_frac`` of the sparse operand (x in FP, dy in BP/WG)
    is zeroed, or with ``channel_density`` each channel keeps that fraction of non-zeros;
    ``nm = (n, m)`` prunes the weights with :func:`golden.nm_mask` (``mask``: the forward mask
    in FP, the backward one in BP, all ones without ``nm``; ``None`` in WG). ``expected`` is the
    golden result (``writeback`` applied unless ``raw``)."""
    if mode not in pm.MODES:
        raise ValueError(f"mode must be one of {tuple(pm.MODES)}, not {mode!r}")
    rng = np.random.default_rng(seed)
    lo, hi = value_range or (-(1 << (cfg.data_width - 1)), (1 << (cfg.data_width - 1)) - 1)
    K, S, p = kernel, stride, padding
    x = rng.integers(lo, hi + 1, (batch, cin, height, width))
    w = rng.integers(lo, hi + 1, (cout, cin, K, K))
    ho, wo = (height + 2 * p - K) // S + 1, (width + 2 * p - K) // S + 1
    dy = rng.integers(lo, hi + 1, (batch, cout, ho, wo))
    sparse = x if mode == "fp" else dy
    if channel_density is None:
        sparse[rng.random(sparse.shape) < zero_frac] = 0
    else:
        dens = np.asarray(channel_density, float)[None, :, None, None]
        sparse[rng.random(sparse.shape) >= dens] = 0
    if mode == "wg":
        mask = None
        ref = golden.conv2d_backward_weight(x, dy, w.shape, S, p)
    else:
        axis = 1 if mode == "fp" else 0
        mask = np.ones(w.shape, dtype=bool) if nm is None else \
            golden.nm_mask(w, nm[0], nm[1], axis=axis)
        ref = golden.conv2d_forward(x, w * mask, S, p) if mode == "fp" else \
            golden.conv2d_backward_input(dy, w * mask, x.shape, S, p)
    if not raw:
        ref = golden.writeback(ref, cfg.frac_bits, cfg.data_width)
    return x, w, dy, mask, ref


def random_layer(mode, *, cfg, kernel=3, stride=1, padding=1, zero_frac=0.5, nm=None, seed=0,
                 batch=1, cin=4, cout=4, height=6, width=6, dense=False, raw=True,
                 value_range=None, empty_rows="omit", drain_chunk=None):
    """A random layer (:func:`random_operands`) mapped onto one PE for ``mode`` ('fp', 'bp',
    'wg'): returns ``(job, expected)``."""
    x, w, dy, mask, ref = random_operands(
        mode, cfg=cfg, kernel=kernel, stride=stride, padding=padding, zero_frac=zero_frac,
        nm=nm, seed=seed, batch=batch, cin=cin, cout=cout, height=height, width=width, raw=raw,
        value_range=value_range)
    common = dict(stride=stride, padding=padding, cfg=cfg, dense=dense, raw=raw,
                  empty_rows=empty_rows, drain_chunk=drain_chunk)
    if mode == "fp":
        job = pm.map_conv_fp(x, w, mask=mask, **common)
    elif mode == "bp":
        job = pm.map_conv_bp(dy, w, x.shape, mask=mask, **common)
    else:
        job = pm.map_conv_wg(x, dy, w.shape, **common)
    return job, ref


def random_array_layer(mode, *, cfg, kernel=3, stride=1, padding=1, zero_frac=0.5, nm=None,
                       seed=0, batch=1, cin=4, cout=4, height=6, width=6, dense=False,
                       raw=True, mapping="interleaved", tile_words=None, value_range=None,
                       channel_density=None):
    """A random layer (:func:`random_operands`) on the array: ``(job, expected)``.

    ``channel_density``: optional per-channel non-zero fractions of the sparse operand (FP:
    input channels; BP/WG: output-gradient channels), for uneven-work experiments."""
    x, w, dy, mask, ref = random_operands(
        mode, cfg=cfg, kernel=kernel, stride=stride, padding=padding, zero_frac=zero_frac,
        nm=nm, seed=seed, batch=batch, cin=cin, cout=cout, height=height, width=width, raw=raw,
        value_range=value_range, channel_density=channel_density)
    kw = dict(cfg=cfg, stride=stride, padding=padding, dense=dense, raw=raw, mapping=mapping,
              tile_words=tile_words)
    if mode == "fp":
        job = am.map_array("fp", x=x, w=w, mask=mask, **kw)
    elif mode == "bp":
        job = am.map_array("bp", dy=dy, w=w, x_shape=x.shape, mask=mask, **kw)
    else:
        job = am.map_array("wg", x=x, dy=dy, w_shape=w.shape, **kw)
    return job, ref
