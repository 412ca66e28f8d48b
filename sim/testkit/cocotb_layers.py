"""The random layer a cocotb test's parameters describe (``SF_PARAMS``, see
:func:`sparseforge.sim.testkit.cocotb_streams.env_params`), one spelling for the PE and the
PE-array cocotb tests.

Pure Python: no cocotb import, so the pytest side can build the same layer."""

from __future__ import annotations

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.sim.testkit import layers

__all__ = ["layer_from_params"]


def layer_from_params(p: dict, make=layers.random_layer, **extra):
    """``(cfg, job, expected)``: ``make`` (:func:`~sparseforge.sim.testkit.layers.random_layer`
    or :func:`~sparseforge.sim.testkit.layers.random_array_layer`) applied to the layer keys of
    ``p`` -- ``config`` (an ``AcceleratorConfig`` dict), ``mode``, ``kernel``, ``stride``,
    ``padding``, ``zero_frac``, ``nm`` (a list, or ``None`` for no pruning), ``seed``, ``cin``,
    ``cout``, ``height``, ``width``, ``raw``, optional ``batch`` (default 1) -- plus ``extra``
    keyword arguments."""
    cfg = AcceleratorConfig.from_dict(p["config"])
    job, ref = make(p["mode"], cfg=cfg, kernel=p["kernel"], stride=p["stride"],
                    padding=p["padding"], zero_frac=p["zero_frac"],
                    nm=tuple(p["nm"]) if p["nm"] else None, seed=p["seed"], cin=p["cin"],
                    cout=p["cout"], height=p["height"], width=p["width"], raw=p["raw"],
                    batch=p.get("batch", 1), **extra)
    return cfg, job, ref
