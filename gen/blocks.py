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


BLOCKS = {
    "compressor": _compressor,
}


def build_block(name: str, cfg: AcceleratorConfig, **params):
    """Instantiate block ``name``; ``ValueError`` lists the known blocks."""
    try:
        factory = BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {sorted(BLOCKS)}") from None
    return factory(cfg, **params)
