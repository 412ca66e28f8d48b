"""Registry of the blocks the generator can emit, each built from an AcceleratorConfig.

``BLOCKS[name](config, **params)`` returns ``(component, params)``: the Amaranth component and
the block parameters actually used (stamped into the Verilog header). ``make verilog`` emits
every registered block for the default preset.
"""

from __future__ import annotations

from .config import AcceleratorConfig

__all__ = ["BLOCKS", "build_block"]


def _compressor(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.compressor import Compressor
    p = {"data_width": cfg.data_width, "max_row_len": cfg.max_row_len}
    p.update(params)
    return Compressor(**p), p


def _nm_selector(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.nm_selector import NMSelector
    p = {"m": cfg.nm_m, "n_max": cfg.nm_n_max, "width": cfg.data_width}
    p.update(params)
    return NMSelector(**p), p


def _pruner(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.pruner import StochasticPruner
    p = {"data_width": cfg.data_width}
    p.update(params)
    return StochasticPruner(**p), p


def _weight_pregen(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.weight_pregen import WeightPregen
    p = {"m": cfg.nm_m, "n_max": cfg.nm_n_max, "width": cfg.data_width}
    p.update(params)
    return WeightPregen(**p), p


def _pe(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.pe import PE, pe_params
    p = pe_params(cfg)
    p.update(params)
    return PE(**p), p


BLOCKS = {
    "compressor": _compressor,
    "nm_selector": _nm_selector,
    "pruner": _pruner,
    "weight_pregen": _weight_pregen,
    "pe": _pe,
}


def build_block(name: str, cfg: AcceleratorConfig, **params):
    """Instantiate block ``name``; ``ValueError`` lists the known blocks."""
    try:
        factory = BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {sorted(BLOCKS)}") from None
    return factory(cfg, **params)
