"""On-chip tensor buffers: the memories the DMA engine loads and stores whole tensors into.

:class:`TensorMemory` holds one ``amaranth.lib.memory.Memory`` per buffer (buffer id ``k`` is
``sizes[k]`` elements). A word is ``word_width`` bits = ``epw = word_width // elem_width``
elements; element ``j`` of a word sits in bits ``[j * elem_width, (j + 1) * elem_width)`` -- the
little-endian byte order of the AXI bus, so a word is exactly one DMA beat.

Ports
-----
dma : In(:func:`dma_port_signature`)
    The DMA engine's port, one for all buffers, selected by ``dma.buf``: ``addr`` (word
    address), ``wdata`` with ``we`` (one write enable per element: a partial last beat writes
    only its valid elements), ``rdata`` (the word at the ``addr`` of the previous cycle).
    A ``buf`` id past the last buffer writes nothing and reads 0.
compute : ``compute[k]`` = In(:func:`compute_port_signature`) per buffer
    A word read/write port per buffer for the compute side (the hardware mapper another
    session builds drives them; unused today). ``addr``, ``wdata``, ``we`` (whole word),
    ``rdata`` (1-cycle latency).

Latency: reads return in the cycle after the address (synchronous read port, non-transparent
with respect to the other port). Writes land at the clock edge. Throughput: one word per cycle
on each port. A DMA write and a compute write to the same word in the same cycle: the result is
undefined (the mapper's schedule never does this).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int

__all__ = ["TensorMemory", "dma_port_signature", "compute_port_signature", "word_addr_width"]


def word_addr_width(sizes, epw: int) -> int:
    """Bits of a word address able to address the largest buffer."""
    return max(1, (max(sizes) // epw - 1).bit_length())


def dma_port_signature(num_bufs: int, addr_width: int, word_width: int, epw: int):
    """The DMA side of the buffers, from the DMA engine's (initiator's) point of view."""
    return wiring.Signature({
        "buf": Out(max(1, (num_bufs - 1).bit_length())),
        "addr": Out(addr_width),
        "wdata": Out(word_width),
        "we": Out(epw),
        "rdata": In(word_width),
    })


def compute_port_signature(addr_width: int, word_width: int):
    """One buffer's compute port, from the initiator's point of view."""
    return wiring.Signature({
        "addr": Out(addr_width),
        "wdata": Out(word_width),
        "we": Out(1),
        "rdata": In(word_width),
    })


class TensorMemory(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, sizes=(4096, 4096, 4096, 4096), word_width: int = 32,
                 elem_width: int = 16):
        sizes = tuple(sizes)
        if not 1 <= len(sizes) <= 16:
            raise ValueError(f"sizes must name 1 to 16 buffers, not {len(sizes)}")
        self._word_width = check_int("word_width", word_width, 8, 1024)
        self._elem_width = check_int("elem_width", elem_width, 1, self._word_width)
        if word_width % elem_width:
            raise ValueError(f"word_width must be a multiple of elem_width ({elem_width}), "
                             f"not {word_width}")
        self._epw = word_width // elem_width
        for k, s in enumerate(sizes):
            check_int(f"sizes[{k}]", s, self._epw, 1 << 24)
            if s % self._epw:
                raise ValueError(f"sizes[{k}] must be a multiple of {self._epw} elements "
                                 f"(one word), not {s}")
        self._sizes = sizes
        self._addr_width = word_addr_width(sizes, self._epw)
        super().__init__({
            "dma": In(dma_port_signature(len(sizes), self._addr_width, word_width, self._epw)),
            "compute": In(compute_port_signature(self._addr_width, word_width)).array(len(sizes)),
        })

    sizes = property(lambda self: self._sizes)
    word_width = property(lambda self: self._word_width)
    elem_width = property(lambda self: self._elem_width)
    epw = property(lambda self: self._epw)
    addr_width = property(lambda self: self._addr_width)

    def elaborate(self, platform):
        m = Module()
        # The read multiplexer selects with the buffer id of the cycle the address was given,
        # matching the memories' one-cycle read latency.
        buf_q = Signal.like(self.dma.buf)
        m.d.sync += buf_q.eq(self.dma.buf)
        for k, size in enumerate(self._sizes):
            depth = size // self._epw
            mem = m.submodules[f"buf{k}"] = Memory(shape=self._word_width, depth=depth, init=[])
            sel = self.dma.buf == k
            wr = mem.write_port(granularity=self._elem_width)
            rd = mem.read_port()
            m.d.comb += [
                wr.addr.eq(self.dma.addr), wr.data.eq(self.dma.wdata),
                wr.en.eq(self.dma.we & sel.replicate(self._epw)),
                rd.addr.eq(self.dma.addr),
            ]
            with m.If(buf_q == k):
                m.d.comb += self.dma.rdata.eq(rd.data)
            cp = self.compute[k]
            cwr = mem.write_port()
            crd = mem.read_port()
            m.d.comb += [
                cwr.addr.eq(cp.addr), cwr.data.eq(cp.wdata), cwr.en.eq(cp.we),
                crd.addr.eq(cp.addr), cp.rdata.eq(crd.data),
            ]
        return m
