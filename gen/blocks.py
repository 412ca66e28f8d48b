"""Registry of the blocks the generator can emit, each built from an AcceleratorConfig.

``BLOCKS[name](config, **params)`` returns ``(component, params)``: the Amaranth component and
the block parameters actually used (stamped into the Verilog header). ``make verilog`` emits
every registered block for the default preset.
"""

from __future__ import annotations

from amaranth.hdl import unsigned

from sparseforge import __version__
from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.schedule import config_hash, config_tag
from sparseforge.hdl.accelerator import Accelerator
from sparseforge.hdl.array_mapper import ArrayMapper
from sparseforge.hdl.axil import AxiLiteRegs, config_words
from sparseforge.hdl.cmd_table import CmdTable
from sparseforge.hdl.compressor import Compressor
from sparseforge.hdl.dataplane import DataPlane, DataPlaneSystem
from sparseforge.hdl.dma import DmaSystem
from sparseforge.hdl.nm_selector import NMSelector
from sparseforge.hdl.pe import PE, pe_params
from sparseforge.hdl.pe_array import PEArray
from sparseforge.hdl.pruner import StochasticPruner
from sparseforge.hdl.skid import SkidBuffer
from sparseforge.hdl.tensor_mem import TensorMemory
from sparseforge.hdl.weight_pregen import WeightPregen

__all__ = ["BLOCKS", "build_block"]


def _nm_params(cfg: AcceleratorConfig) -> dict:
    return {"m": cfg.nm_m, "n_max": cfg.nm_n_max, "width": cfg.data_width}


#: Blocks built as ``Class(**params)``: name -> (class, the parameters from the configuration;
#: the caller's ``params`` override them).
KEYWORD_BLOCKS = {
    "compressor": (Compressor,
                   lambda cfg: {"data_width": cfg.data_width, "max_row_len": cfg.max_row_len}),
    "nm_selector": (NMSelector, _nm_params),
    "pruner": (StochasticPruner, lambda cfg: {"data_width": cfg.data_width}),
    "weight_pregen": (WeightPregen, _nm_params),
    "pe": (PE, pe_params),
    # DmaEngine wired to the tensor buffers (hdl/dma.py, docs/dma.md).
    "dma": (DmaSystem, lambda cfg: {
        "sizes": list(cfg.tensor_mem_elems), "data_width": cfg.dma_width,
        "elem_width": cfg.data_width, "addr_width": cfg.dma_addr_width,
        "max_burst": cfg.dma_max_burst, "timeout": cfg.dma_timeout}),
    "tensor_mem": (TensorMemory, lambda cfg: {
        "sizes": list(cfg.tensor_mem_elems), "word_width": cfg.dma_width,
        "elem_width": cfg.data_width}),
}


def _keyword_block(name: str, block, defaults):
    def factory(cfg: AcceleratorConfig, **params):
        p = defaults(cfg)
        p.update(params)
        return block(**p), p
    factory.__name__ = factory.__qualname__ = f"_{name}"
    return factory


def _pe_array(cfg: AcceleratorConfig, **params):
    array = PEArray.from_config(cfg, **params)          # params override the PE parameters
    return array, {"rows": array.rows, "cols": array.cols, **array.pe_params}


def _array_mapper(cfg: AcceleratorConfig, **params):
    mapper = ArrayMapper.from_config(cfg, **params)     # params override (e.g. addr_width)
    return mapper, {"rows": mapper.rows, "cols": mapper.cols, **mapper.params}


def _dataplane(cfg: AcceleratorConfig, *, with_array: bool = False, **params):
    # DMA + tensor buffers + array mapper + result store (hdl/dataplane.py, docs/dataplane.md);
    # with_array: wired to its PEArray (DataPlaneSystem, the Verilog tests' top level)
    if with_array:
        system = DataPlaneSystem(cfg, **params)
        return system, {"rows": cfg.pe_rows, "cols": cfg.pe_cols, "with_array": True,
                        **system.dp.params}
    dp = DataPlane.from_config(cfg, **params)
    return dp, {"rows": cfg.pe_rows, "cols": cfg.pe_cols, **dp.params}


def _axil(cfg: AcceleratorConfig, **params):
    p = {"addr_width": 12, "version": __version__, "config": config_words(cfg),
         "counter_width": 48}
    p.update(params)
    return AxiLiteRegs(**p), p


def _cmd_table(cfg: AcceleratorConfig, **params):
    # the command table (hdl/cmd_table.py, docs/cmd_table.md); depth: cmd_table_depth (at
    # least 1: a configuration without a table still emits the block)
    p = {"depth": max(cfg.cmd_table_depth, 1)}
    p.update(params)
    unknown = sorted(set(p) - {"depth"})
    if unknown:
        raise TypeError(f"cmd_table: unexpected parameter(s) {unknown}; known: ['depth']")
    return CmdTable(cfg, p["depth"]), p


def _skid(cfg: AcceleratorConfig, **params):
    p = {"width": 24}
    p.update(params)
    unknown = sorted(set(p) - {"width"})
    if unknown:
        raise TypeError(f"skid: unexpected parameter(s) {unknown}; known: ['width']")
    return SkidBuffer(unsigned(p["width"])), p


def _accelerator(cfg: AcceleratorConfig, **params):
    acc = Accelerator(cfg, config_tag=config_tag(cfg), config_hash=config_hash(cfg),
                      version=params.get("version", __version__), sched_depth=cfg.sched_depth)
    return acc, {"version": __version__}


BLOCKS = {
    **{name: _keyword_block(name, *row) for name, row in KEYWORD_BLOCKS.items()},
    "pe_array": _pe_array,
    "array_mapper": _array_mapper,
    "dataplane": _dataplane,
    "axil": _axil,
    "skid": _skid,
    "cmd_table": _cmd_table,
    "accelerator": _accelerator,
}


def build_block(name: str, cfg: AcceleratorConfig, **params):
    """Instantiate block ``name``; ``ValueError`` lists the known blocks."""
    try:
        factory = BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {sorted(BLOCKS)}") from None
    return factory(cfg, **params)
