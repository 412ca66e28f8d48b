"""DMA engine: moves whole tensors between card memory (AXI4 master) and the tensor buffers.

:class:`DmaEngine` takes one descriptor at a time from ``desc`` and answers each with one
completion beat on ``done``. Its buffer side is :func:`hdl.tensor_mem.dma_port_signature`
(connect it to :class:`hdl.tensor_mem.TensorMemory`'s ``dma`` port); its memory side is an AXI4
memory-mapped master whose ports are named like AXI4 with the ``m_axi_`` prefix
(``m_axi_awaddr`` ... ``m_axi_rready``), so ``cocotbext.axi.AxiBus.from_prefix(dut, "m_axi")``
binds the emitted Verilog. IDs are fixed 0 (bursts complete in order); ``bid``/``rid`` are
inputs but ignored.

Descriptor (``desc.payload``, :func:`desc_layout`): ``buf`` (buffer id), ``base`` (element
offset in the buffer), ``length`` (elements), ``dir`` (0: memory -> buffer "load",
1: buffer -> memory "store"), ``addr`` (byte address in memory).

Rules (docs/dma.md):

* ``addr`` must be a multiple of the beat (``data_width // 8`` bytes) and ``base`` a multiple
  of the elements per beat ``epw = data_width // elem_width``; else ``MISALIGNED``.
* ``length == 0`` -> ``LEN_ZERO``; a ``buf`` past the last buffer -> ``BAD_BUFFER``;
  ``base + length`` past the buffer -> ``BEYOND_BUFFER``; the memory range past
  ``2 ** addr_width`` -> ``ADDR_OVERFLOW``. All checked before any bus traffic (none at all).
* Bursts are INCR, full-width (``awsize = log2(data_width / 8)``), at most ``max_burst`` beats,
  never crossing a 4 KiB boundary. Run-ahead: the next AR (load) / AW (store) is raised in the
  cycle after the previous one is accepted, so any number of bursts may be outstanding and data
  beats move one per cycle across burst and 4 KiB boundaries when the bus allows. A load takes
  an R beat every cycle (``rready`` always high while loading: the buffer takes a beat per
  cycle); a store sends W beats only for committed bursts (AW accepted), ``wlast`` from the
  beat's place (``max_burst``-th beat of a burst, last beat of a 4 KiB page, last beat of the
  transfer: the AW split rule), and takes every B (``bready`` high while storing).
* The last beat of a transfer is partial when ``length % epw != 0``: a store masks the unused
  bytes with ``wstrb``, a load writes only the valid elements (per-element write enables). No
  element outside ``[base, base + length)`` is ever written.
* ``SLVERR``/``DECERR`` on R or B -> ``BUS_ERROR``: no new burst is raised (an AR/AW already
  raised stays until accepted), every burst already accepted finishes (its remaining R beats are
  accepted and dropped; its remaining W beats go out with ``wstrb = 0`` and its B is collected),
  then the completion is sent. With run-ahead, store bursts after the erroring one may already
  have sent beats with data before the B error arrives (each written byte is then the
  transfer's own, a prefix of the range after the erroring burst).
* ``abort`` (level, from the soft reset) during a transfer -> ``ABORTED``, drained the same way.
  Every valid the engine raised stays high until its ready (AXI's rule) -- except after a
  ``TIMEOUT``: ``timeout`` cycles without any handshake while a transfer is on the bus; the
  engine then drops its valids and returns to idle (the slave is considered dead; the
  interconnect must be reset before the next transfer).
* The first error of a transfer is the one reported, except that ``TIMEOUT`` overrides.

Ports
-----
desc : In(stream.Signature(desc_layout))
    Descriptors; ``ready`` only while idle.
done : Out(stream.Signature(done_layout))
    One beat per descriptor: ``status`` (a :class:`DmaErr`), ``beats`` (data beats handshaken
    on the bus for it).
mem : Out(dma_port_signature)
    The buffer port (1-cycle read latency, per-element write enables).
abort : In(1)
m_axi_* : the AXI4 master.
busy_cycles, beat_count, stall_cycles : Out(counter_width)
    Free-running counters: cycles not idle, data beats, cycles with a transfer on the bus but
    no handshake at all (performance model).

Latency/throughput (no back-pressure): a transfer of ``n`` elements is ``B = ceil(n / epw)``
beats in ``ceil(B / max_burst)`` bursts (more at 4 KiB boundaries), moved at one beat per
cycle whatever the bursts: from offering ``desc`` to the completion's handshake, a load takes
``3 + 1 + L_R + B`` cycles (accept, check, completion; the first AR cycle; the slave's read
latency ``L_R`` beyond the AR cycle), a store ``3 + 2 + L_W + B`` (the first AW cycle and
the last B handshake; ``L_W`` = the slave's AW -> ``wready`` plus last W -> ``bvalid``
latencies), i.e. ``B + 5`` and ``B + 7`` with the registered slave of
``sim/testkit/axi_mem_model.py`` (``sim/perf/model.dma_transfer_cycles``).
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hdl._validate import check_int
from sparseforge.hdl.tensor_mem import TensorMemory, dma_port_signature, word_addr_width

__all__ = ["DmaEngine", "DmaSystem", "DmaErr", "desc_layout", "done_layout", "DIR_LOAD", "DIR_STORE"]

DIR_LOAD = 0
DIR_STORE = 1


class DmaErr(enum.IntEnum):
    """Completion status codes (4 bits; the accelerator maps them to ``0x30 | code``)."""
    OK = 0
    LEN_ZERO = 1        # length 0
    BEYOND_BUFFER = 2   # base + length > buffer size (no bus traffic)
    MISALIGNED = 3      # addr not beat-aligned or base not a whole word (no bus traffic)
    BUS_ERROR = 4       # SLVERR/DECERR on R or B (outstanding burst drained)
    TIMEOUT = 5         # no handshake for `timeout` cycles (valids dropped, back to idle)
    ABORTED = 6         # `abort` during the transfer (outstanding burst drained)
    BAD_BUFFER = 7      # buffer id past the last buffer (no bus traffic)
    ADDR_OVERFLOW = 8   # addr + bytes > 2 ** addr_width (no bus traffic)


def desc_layout(num_bufs: int, len_width: int, addr_width: int) -> data.StructLayout:
    return data.StructLayout({
        "buf": 4,
        "base": len_width,
        "length": len_width,
        "dir": 1,
        "addr": addr_width,
    })


def done_layout(len_width: int) -> data.StructLayout:
    return data.StructLayout({"status": 4, "beats": len_width})


class DmaEngine(wiring.Component):
    __doc__ = __doc__

    def __init__(self, *, sizes=(4096, 4096, 4096, 4096), data_width: int = 32,
                 elem_width: int = 16, addr_width: int = 32, max_burst: int = 16,
                 timeout: int = 4096, len_width: int = 24, counter_width: int = 32):
        self._data_width = data_width
        if data_width not in (32, 64, 128, 256, 512, 1024):
            raise ValueError(f"data_width must be one of (32, 64, ..., 1024), not {data_width}")
        self._elem_width = check_int("elem_width", elem_width, 8, data_width)
        if elem_width % 8 or data_width % elem_width:
            raise ValueError(f"elem_width must be a multiple of 8 dividing data_width "
                             f"({data_width}), not {elem_width}")
        self._addr_width = check_int("addr_width", addr_width, 12, 64)
        self._max_burst = check_int("max_burst", max_burst, 1, 256)
        if max_burst & (max_burst - 1):
            raise ValueError(f"max_burst must be a power of 2, not {max_burst}")
        self._timeout = check_int("timeout", timeout, 2, 1 << 24)
        self._len_width = check_int("len_width", len_width, 4, 32)
        self._counter_width = check_int("counter_width", counter_width, 8, 64)
        self._epw = data_width // elem_width
        sizes = tuple(check_int(f"sizes[{k}]", s, self._epw, 1 << 24) for k, s in enumerate(sizes))
        if not 1 <= len(sizes) <= 15:
            raise ValueError(f"sizes must name 1 to 15 buffers, not {len(sizes)}")
        self._sizes = sizes
        self._buf_addr_width = word_addr_width(sizes, self._epw)
        aw, dw = addr_width, data_width
        super().__init__({
            "desc": In(stream.Signature(desc_layout(len(sizes), len_width, aw))),
            "done": Out(stream.Signature(done_layout(len_width))),
            "mem": Out(dma_port_signature(len(sizes), self._buf_addr_width, dw, self._epw)),
            "abort": In(1),
            "m_axi_awid": Out(1), "m_axi_awaddr": Out(aw), "m_axi_awlen": Out(8),
            "m_axi_awsize": Out(3), "m_axi_awburst": Out(2), "m_axi_awvalid": Out(1),
            "m_axi_awready": In(1),
            "m_axi_wdata": Out(dw), "m_axi_wstrb": Out(dw // 8), "m_axi_wlast": Out(1),
            "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
            # bid/rid: present because AXI4 (and cocotbext-axi) require them; ignored (id 0).
            "m_axi_bid": In(1), "m_axi_bresp": In(2), "m_axi_bvalid": In(1),
            "m_axi_bready": Out(1),
            "m_axi_arid": Out(1), "m_axi_araddr": Out(aw), "m_axi_arlen": Out(8),
            "m_axi_arsize": Out(3), "m_axi_arburst": Out(2), "m_axi_arvalid": Out(1),
            "m_axi_arready": In(1),
            "m_axi_rid": In(1), "m_axi_rdata": In(dw), "m_axi_rresp": In(2), "m_axi_rlast": In(1),
            "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
            "busy_cycles": Out(counter_width), "beat_count": Out(counter_width),
            "stall_cycles": Out(counter_width),
        })

    sizes = property(lambda self: self._sizes)
    data_width = property(lambda self: self._data_width)
    elem_width = property(lambda self: self._elem_width)
    addr_width = property(lambda self: self._addr_width)
    max_burst = property(lambda self: self._max_burst)
    timeout = property(lambda self: self._timeout)
    len_width = property(lambda self: self._len_width)
    epw = property(lambda self: self._epw)

    def elaborate(self, platform):
        m = Module()
        epw, lw = self._epw, self._len_width
        bpb = self._data_width // 8                       # bytes per beat
        size_log2 = (bpb - 1).bit_length()
        epw_log2 = (epw - 1).bit_length()
        ebytes = self._elem_width // 8

        d = Signal.like(self.desc.payload)                # the descriptor being served
        err = Signal(4)
        kill = Signal()                                   # stop issuing, drain, then report
        wkill = Signal()                                  # kill as seen by wstrb (beat-stable)
        mem_addr = Signal(self._addr_width + 1)           # next burst's byte address
        issue_left = Signal(lw + 1)                       # beats not yet requested
        total_left = Signal(lw + 1)                       # data beats left in the transfer
        wptr = Signal(self._buf_addr_width + 1)           # buffer word of the current beat
        tail_mask = Signal(epw)                           # element mask of the final beat
        xfer_beats = Signal(lw)
        tmo = Signal(range(self._timeout + 1))

        ax = self.m_axi_awvalid | self.m_axi_arvalid
        ar_fire = self.m_axi_arvalid & self.m_axi_arready
        aw_fire = self.m_axi_awvalid & self.m_axi_awready
        r_fire = self.m_axi_rvalid & self.m_axi_rready
        w_fire = self.m_axi_wvalid & self.m_axi_wready
        b_fire = self.m_axi_bvalid & self.m_axi_bready
        progress = ar_fire | aw_fire | r_fire | w_fire | b_fire
        del ax
        # No handshake for `timeout` cycles while on the bus: give up (each bus state's last
        # transition, so it overrides the others).
        tmo_hit = ~progress & (tmo == self._timeout - 1)

        # -- checks on the latched descriptor (CHECK state) ----------------------------------
        beats_total = (d.length + (epw - 1)) >> epw_log2
        size_of_buf = Signal(25)
        for k, s in enumerate(self._sizes):
            with m.If(d.buf == k):
                m.d.comb += size_of_buf.eq(s)
        end_addr = Signal(self._addr_width + lw + 1)
        m.d.comb += end_addr.eq(d.addr + (beats_total << size_log2))
        check = Signal(4)
        with m.If(d.length == 0):
            m.d.comb += check.eq(DmaErr.LEN_ZERO)
        with m.Elif(d.buf >= len(self._sizes)):
            m.d.comb += check.eq(DmaErr.BAD_BUFFER)
        with m.Elif((d.addr[:size_log2] != 0 if size_log2 else Const(0)) |
                    (d.base[:epw_log2] != 0 if epw_log2 else Const(0))):
            m.d.comb += check.eq(DmaErr.MISALIGNED)
        with m.Elif(d.base + d.length > size_of_buf):
            m.d.comb += check.eq(DmaErr.BEYOND_BUFFER)
        with m.Elif(end_addr > (1 << self._addr_width)):
            m.d.comb += check.eq(DmaErr.ADDR_OVERFLOW)

        # -- burst length: min(max_burst, beats left, beats to the next 4 KiB boundary) -----
        page_beats = 4096 // bpb
        to_4k = Signal(range(page_beats + 1))
        m.d.comb += to_4k.eq(page_beats - mem_addr[size_log2:12])
        blen = Signal(9)
        lim = Signal(9)
        m.d.comb += lim.eq(Mux(issue_left < self._max_burst, issue_left, self._max_burst))
        m.d.comb += blen.eq(Mux(to_4k < lim, to_4k, lim))

        # -- buffer side ------------------------------------------------------------------
        all_mask = (1 << epw) - 1
        beat_mask = Mux(total_left == 1, tail_mask, all_mask)
        m.d.comb += [
            self.mem.buf.eq(d.buf),
            self.mem.wdata.eq(self.m_axi_rdata),
            # The current beat's word, so a store's first beat is read while the address
            # handshake runs (overridden by the read-ahead in DATA).
            self.mem.addr.eq(wptr),
        ]

        # -- AXI constant fields ----------------------------------------------------------
        m.d.comb += [
            self.m_axi_awid.eq(0), self.m_axi_arid.eq(0),
            self.m_axi_awsize.eq(size_log2), self.m_axi_arsize.eq(size_log2),
            self.m_axi_awburst.eq(1), self.m_axi_arburst.eq(1),          # INCR
            self.m_axi_awaddr.eq(mem_addr), self.m_axi_araddr.eq(mem_addr),
            self.m_axi_awlen.eq(blen - 1), self.m_axi_arlen.eq(blen - 1),
            self.m_axi_wdata.eq(self.mem.rdata),
            self.done.payload.status.eq(err),
            self.done.payload.beats.eq(xfer_beats),
        ]
        strb = Cat(*(Mux(wkill, 0, beat_mask[j]).replicate(ebytes) for j in range(epw)))
        m.d.comb += self.m_axi_wstrb.eq(strb)

        def first_err(code):
            with m.If(err == 0):
                m.d.sync += err.eq(code)

        # -- run-ahead state (LOAD / STORE) -------------------------------------------------
        # The address channel issues bursts back to back (``a_on``: the current AR/AW is raised,
        # its payload is mem_addr / blen); the data side follows. A load's outstanding beats
        # are total_left - issue_left (R beats requested, not yet taken). ``a_out``: store
        # bursts accepted on AW whose B is not yet taken; ``w_credit``: store bursts whose AW
        # was accepted and whose W beats are not all sent (W beats only for committed bursts).
        a_on = Signal()
        a_out = Signal(lw + 1)
        w_credit = Signal(lw + 1)
        w_pos = Signal(8)                                 # W beat index in its burst
        w_addr = Signal(self._addr_width + 1)             # byte address of the current W beat
        page_last = (w_addr[size_log2:12] == page_beats - 1) if page_beats > 1 else Const(1)
        m.d.comb += self.m_axi_wlast.eq((total_left == 1) | (w_pos == self._max_burst - 1) |
                                        page_last)
        # a kill raised at this edge (abort, an error response) already stops the next burst
        kill_now = Signal()
        m.d.comb += kill_now.eq(kill | self.abort |
                                (r_fire & self.m_axi_rresp[1]) | (b_fire & self.m_axi_bresp[1]))
        more = issue_left != blen                          # beats left after this burst

        with m.FSM(name="dma_fsm") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.desc.ready.eq(1)
                with m.If(self.desc.valid):
                    m.d.sync += [d.eq(self.desc.payload), err.eq(0), kill.eq(0), wkill.eq(0),
                                 xfer_beats.eq(0)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                rem = d.length[:epw_log2] if epw_log2 else Const(0, 1)
                m.d.sync += [
                    mem_addr.eq(d.addr),
                    w_addr.eq(d.addr),
                    issue_left.eq(beats_total),
                    total_left.eq(beats_total),
                    wptr.eq(d.base >> epw_log2),
                    # rem elements valid in the final beat (all when rem == 0)
                    tail_mask.eq(Mux(rem == 0, all_mask, (Const(1, epw + 1) << rem) - 1)),
                    tmo.eq(0),
                    a_on.eq(1), a_out.eq(0), w_credit.eq(0), w_pos.eq(0),
                ]
                with m.If(check != 0):
                    m.d.sync += err.eq(check)
                    m.next = "DONE"
                with m.Elif(self.abort):
                    m.d.sync += err.eq(DmaErr.ABORTED)
                    m.next = "DONE"
                with m.Elif(d.dir == DIR_LOAD):
                    m.next = "LOAD"
                with m.Else():
                    m.next = "STORE"
            with m.State("LOAD"):
                # AR: raised from the first cycle, the next one as soon as one is accepted;
                # once raised it stays until arready. R: always ready (the buffer takes a beat
                # every cycle).
                m.d.comb += [self.m_axi_arvalid.eq(a_on), self.m_axi_rready.eq(1)]
                with m.If(ar_fire):
                    m.d.sync += [mem_addr.eq(mem_addr + (blen << size_log2)),
                                 issue_left.eq(issue_left - blen),
                                 a_on.eq(more & ~kill_now)]
                # an R beat nobody asked for (before its AR was accepted, or past the
                # requested beats: a broken slave or interconnect) is taken and dropped as a
                # BUS_ERROR -- never written, so no element outside the range can be
                # (sparseforge formal -k dma proves it with a free slave)
                r_asked = total_left != issue_left
                with m.If(r_fire & ~r_asked):
                    m.d.sync += kill.eq(1)
                    first_err(DmaErr.BUS_ERROR)
                with m.If(r_fire & r_asked):
                    bad = self.m_axi_rresp[1]
                    m.d.comb += self.mem.we.eq(Mux(kill | bad, 0, beat_mask))
                    with m.If(bad):
                        m.d.sync += kill.eq(1)
                        first_err(DmaErr.BUS_ERROR)
                    m.d.sync += [wptr.eq(wptr + 1), total_left.eq(total_left - 1),
                                 xfer_beats.eq(xfer_beats + 1)]
                    # the last requested beat, no AR raised (none left, or stopped): done
                    with m.If(~a_on & (total_left - 1 == issue_left)):
                        m.next = "DONE"
                with m.If(tmo_hit):
                    m.next = "DONE"
            with m.State("STORE"):
                # AW runs ahead of W; W beats stream for the committed bursts (wlast from the
                # beat's position: max_burst, 4 KiB page end, transfer end -- the AW split
                # rule); every B collected.
                m.d.comb += [self.m_axi_awvalid.eq(a_on), self.m_axi_wvalid.eq(w_credit != 0),
                             self.m_axi_bready.eq(1)]
                # Read one word ahead: the buffer answers a cycle later, so the next beat's
                # word is addressed in the cycle the current one is taken (never past the
                # transfer's last word).
                m.d.comb += self.mem.addr.eq(Mux(w_fire & (total_left != 1), wptr + 1, wptr))
                with m.If(aw_fire):
                    m.d.sync += [mem_addr.eq(mem_addr + (blen << size_log2)),
                                 issue_left.eq(issue_left - blen),
                                 a_on.eq(more & ~kill_now)]
                wl = w_fire & self.m_axi_wlast
                m.d.sync += [w_credit.eq(w_credit + aw_fire - wl),
                             a_out.eq(a_out + aw_fire - b_fire)]
                with m.If(w_fire):
                    m.d.sync += [wptr.eq(wptr + 1), total_left.eq(total_left - 1),
                                 xfer_beats.eq(xfer_beats + 1), w_addr.eq(w_addr + bpb),
                                 w_pos.eq(Mux(self.m_axi_wlast, 0, w_pos + 1))]
                with m.If(b_fire):
                    with m.If(self.m_axi_bresp[1]):
                        m.d.sync += kill.eq(1)
                        first_err(DmaErr.BUS_ERROR)
                    # the last outstanding burst's B, no AW raised: done
                    with m.If(~a_on & (a_out == 1)):
                        m.next = "DONE"
                with m.If(tmo_hit):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.valid.eq(1)
                with m.If(self.done.ready):
                    m.next = "IDLE"

        on_bus = fsm.ongoing("LOAD") | fsm.ongoing("STORE")
        with m.If(on_bus):
            with m.If(self.abort):
                m.d.sync += kill.eq(1)
                first_err(DmaErr.ABORTED)
            # wstrb must stay stable while a W beat waits for wready: follow kill only
            # between beats.
            with m.If(~(self.m_axi_wvalid & ~self.m_axi_wready)):
                m.d.sync += wkill.eq(kill)
            with m.If(progress):
                m.d.sync += tmo.eq(0)
            with m.Elif(tmo_hit):
                m.d.sync += [err.eq(DmaErr.TIMEOUT), tmo.eq(0)]
            with m.Else():
                m.d.sync += tmo.eq(tmo + 1)

        cw = self._counter_width
        busy = Signal(cw); beats = Signal(cw); stall = Signal(cw)
        with m.If(~fsm.ongoing("IDLE")):
            m.d.sync += busy.eq(busy + 1)
        with m.If(r_fire | w_fire):
            m.d.sync += beats.eq(beats + 1)
        with m.If(on_bus & ~progress):
            m.d.sync += stall.eq(stall + 1)
        m.d.comb += [self.busy_cycles.eq(busy), self.beat_count.eq(beats),
                     self.stall_cycles.eq(stall)]
        return m


class DmaSystem(wiring.Component):
    """A :class:`DmaEngine` wired to a :class:`hdl.tensor_mem.TensorMemory` (the ``dma`` block).

    Ports: the engine's ``desc``, ``done``, ``abort``, ``m_axi_*`` and counters, and the
    memory's ``compute`` ports (``compute[k]`` for buffer ``k``). Latency and throughput are the
    engine's; the compute ports are the memory's (1-cycle read).
    """

    def __init__(self, **params):
        self.engine = DmaEngine(**params)
        self.tmem = TensorMemory(sizes=self.engine.sizes, word_width=self.engine.data_width,
                                 elem_width=self.engine.elem_width)
        members = {name: member for name, member in self.engine.signature.members.items()
                   if name != "mem"}
        members["compute"] = self.tmem.signature.members["compute"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        m.submodules.tmem = tm = self.tmem
        wiring.connect(m, eng.mem, tm.dma)
        wiring.connect(m, wiring.flipped(self.desc), eng.desc)
        wiring.connect(m, eng.done, wiring.flipped(self.done))
        for k in range(len(eng.sizes)):
            wiring.connect(m, wiring.flipped(self.compute[k]), tm.compute[k])
        for name, member in eng.signature.members.items():
            if name in ("mem", "desc", "done"):
                continue
            if member.flow == wiring.Out:
                m.d.comb += getattr(self, name).eq(getattr(eng, name))
            else:
                m.d.comb += getattr(eng, name).eq(getattr(self, name))
        return m
