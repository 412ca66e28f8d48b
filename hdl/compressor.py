"""Row compressor: dense row stream -> compressed (value, column, last) stream of non-zeros."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int, read_only
from sparseforge.hdl.layouts import dense_elem_layout, sparse_elem_layout

__all__ = ["Compressor"]


class Compressor(wiring.Component):
    """Drops the zeros of a dense row and tags the survivors with their column.

    Parameters
    ----------
    data_width : int, >= 2
        Width of the signed element values.
    max_row_len : int, >= 2
        Longest row accepted; the column field is ``clog2(max_row_len)`` bits wide.

    Ports
    -----
    i : In(stream.Signature(dense_elem_layout(data_width)))
        Dense elements ``(value, mask, last)`` in column order; ``last`` marks a row's final
        element.
    o : Out(stream.Signature(sparse_elem_layout(data_width, col_width)))
        ``(value, col, last)`` for every element that is non-zero after masking, plus the row's
        final element, which is **always** emitted with ``last = 1`` even when its value is zero
        (*ours*: every row, an all-zero one included, ends in exactly one ``last`` beat, and no
        look-ahead buffer is needed to know which non-zero is the final one; a zero last beat
        costs the consumer one cycle and contributes a zero product).
    relu : In(1)
        ReLU masking: negative values become zero before the zero test. Hold stable per row.
    use_mask : In(1)
        ReLU-derivative masking: elements whose ``mask`` bit is 0 become zero. Applied after
        ``relu`` when both are set. Hold stable per row.
    nnz : Out(32)
        Count of non-zero elements emitted since reset (performance counter, wraps).
    error : Out(1)
        Sticky: a row ran past ``max_row_len`` elements without ``last``. The column then wraps;
        the flag makes that visible (the hardware never truncates silently). Cleared by reset.

    Timing
    ------
    Latency 1 cycle (registered output). Throughput one dense element per cycle when ``o`` is
    not back-pressured. ``i.ready = o.ready | ~o.valid``: ready depends combinationally on
    ``o.ready`` (allowed by the stream rules); ``o.valid`` never depends on ``o.ready``. While
    ``o.valid & ~o.ready`` the output payload is held stable.
    """

    def __init__(self, *, data_width: int = 16, max_row_len: int = 64):
        self._data_width = check_int("data_width", data_width, 2, 64)
        self._max_row_len = check_int("max_row_len", max_row_len, 2, 1 << 20)
        self._col_width = max(1, (max_row_len - 1).bit_length())
        super().__init__({
            "i": In(stream.Signature(dense_elem_layout(data_width))),
            "o": Out(stream.Signature(sparse_elem_layout(data_width, self._col_width))),
            "relu": In(1),
            "use_mask": In(1),
            "nnz": Out(32),
            "error": Out(1),
        })

    data_width = read_only("_data_width")
    max_row_len = read_only("_max_row_len")
    col_width = read_only("_col_width")

    def elaborate(self, platform):
        m = Module()

        col = Signal(self._col_width)
        value = Signal.like(self.i.payload.value)
        m.d.comb += value.eq(self.i.payload.value)
        with m.If(self.relu & self.i.payload.value[-1]):
            m.d.comb += value.eq(0)
        with m.If(self.use_mask & ~self.i.payload.mask):
            m.d.comb += value.eq(0)
        nonzero = value != 0

        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(self.o.ready | ~self.o.valid),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # The output register loads whenever it is empty or being drained this cycle.
        with m.If(self.i.ready):
            m.d.sync += [
                self.o.valid.eq(self.i.valid & (nonzero | self.i.payload.last)),
                self.o.payload.value.eq(value),
                self.o.payload.col.eq(col),
                self.o.payload.last.eq(self.i.payload.last),
            ]

        with m.If(accept):
            with m.If(self.i.payload.last):
                m.d.sync += col.eq(0)
            with m.Else():
                m.d.sync += col.eq(col + 1)
                with m.If(col == self._max_row_len - 1):
                    m.d.sync += self.error.eq(1)
            with m.If(nonzero):
                m.d.sync += self.nnz.eq(self.nnz + 1)

        return m
