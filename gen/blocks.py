"""Registry of the blocks the generator can emit, each built from an AcceleratorConfig.

``BLOCKS[name](config, **params)`` returns ``(component, params)``: the Amaranth component and
the block parameters actually used (stamped into the Verilog header). ``make verilog`` emits
every registered block for the default preset.
"""

from __future__ import annotations

from sparseforge.gen.config import AcceleratorConfig

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


def _pe_array(cfg: AcceleratorConfig, **params):
    from sparseforge.hdl.pe_array import PEArray
    array = PEArray.from_config(cfg, **params)          # params override the PE parameters
    return array, {"rows": array.rows, "cols": array.cols, **array.pe_params}


def _axil(cfg: AcceleratorConfig, **params):
    from sparseforge import __version__
    from sparseforge.hdl.axil import AxiLiteRegs, config_words
    p = {"addr_width": 12, "version": __version__, "config": config_words(cfg),
         "counter_width": 48}
    p.update(params)
    return AxiLiteRegs(**p), p


def _skid(cfg: AcceleratorConfig, **params):
    from amaranth.hdl import unsigned
    from sparseforge.hdl.skid import SkidBuffer
    p = {"width": 24}
    p.update(params)
    unknown = sorted(set(p) - {"width"})
    if unknown:
        raise TypeError(f"skid: unexpected parameter(s) {unknown}; known: ['width']")
    return SkidBuffer(unsigned(p["width"])), p


def _accelerator(cfg: AcceleratorConfig, **params):
    from sparseforge import __version__
    from sparseforge.hdl.accelerator import Accelerator
    from sparseforge.gen.schedule import config_hash, config_tag
    acc = Accelerator(cfg, config_tag=config_tag(cfg), config_hash=config_hash(cfg),
                      version=params.get("version", __version__))
    return acc, {"version": __version__}


BLOCKS = {
    "compressor": _compressor,
    "nm_selector": _nm_selector,
    "pruner": _pruner,
    "weight_pregen": _weight_pregen,
    "pe": _pe,
    "pe_array": _pe_array,
    "axil": _axil,
    "skid": _skid,
    "accelerator": _accelerator,
}


def build_block(name: str, cfg: AcceleratorConfig, **params):
    """Instantiate block ``name``; ``ValueError`` lists the known blocks."""
    try:
        factory = BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {sorted(BLOCKS)}") from None
    return factory(cfg, **params)
