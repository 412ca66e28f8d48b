"""Stream payload layouts shared by the blocks.

Every block boundary is an :mod:`amaranth.lib.stream` interface whose payload is one of these
:class:`~amaranth.lib.data.StructLayout` s. Fields are listed in packing order: the first field
occupies the least significant bits of the flattened ``*__payload`` Verilog port.
"""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

__all__ = ["dense_elem_layout", "sparse_elem_layout"]


def dense_elem_layout(data_width: int) -> data.StructLayout:
    """One element of a dense row: ``value`` (signed), ``mask`` (1 = keep, for ReLU-derivative
    masking), ``last`` (final element of the row)."""
    return data.StructLayout({
        "value": signed(data_width),
        "mask": unsigned(1),
        "last": unsigned(1),
    })


def sparse_elem_layout(data_width: int, col_width: int) -> data.StructLayout:
    """One beat of a compressed row: ``value`` (signed), ``col`` (column index in the row),
    ``last`` (final beat of the row; see :class:`~sparseforge.hdl.compressor.Compressor` for the
    always-emitted last beat)."""
    return data.StructLayout({
        "value": signed(data_width),
        "col": unsigned(col_width),
        "last": unsigned(1),
    })
