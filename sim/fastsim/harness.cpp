// Verilator C++ harness of the `accelerator` top level (issue 17, item 7: a simulation path
// without per-cycle Python and without cocotb's VPI on the hot path).
//
// Built into a shared library by sparseforge.sim.fastsim.build together with the Verilated
// model (class Vaccelerator); Python drives it through ctypes (sparseforge.sim.fastsim.sim).
// Every bus model runs here, in the same process and the same loop as the model:
//
//   s_axil   AXI4-Lite master: one transaction per sf_axil_write / sf_axil_read call
//   s_axis   AXI4-Stream source: a word queue (sf_push), `tvalid` while it holds a word
//   m_axis   AXI4-Stream sink: always ready, beats collected into frames (tlast)
//   m_axi    AXI4 slave memory (the card memory): INCR bursts, 4 outstanding reads and
//            writes, byte strobes; a beat outside the memory reads zeros and answers DECERR
//            (writes outside are dropped), as a card interconnect would
//
// Cycle protocol (one call of step()): the harness drives its outputs from its state, the
// model evaluates with clk = 0 (combinational outputs settle), the handshakes of the cycle
// are decided from both sides' values, the model evaluates with clk = 1 (the rising edge),
// and the harness advances its state by the handshakes. So every transfer takes place at a
// rising edge with the values both sides held before it, as in RTL.
//
// The data width of m_axi is the design's `dma_width` (SF_DMA_BYTES bytes, a compile-time
// define): 32-bit and 64-bit buses are plain integers in the Verilated model, wider ones
// VlWide<N> arrays; put()/get() below handle both.

#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "Vaccelerator.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

#ifndef SF_HAS_MAXI
#define SF_HAS_MAXI 1     // 0: the core has no m_axi (data_plane = "host-stream")
#endif
#ifndef SF_DMA_BYTES
#error "SF_DMA_BYTES (the m_axi data width in bytes) must be defined"
#endif

namespace {

// ---- signal access for any width ------------------------------------------------------------
inline void put(uint8_t& s, const uint8_t* p, size_t n) { s = n ? p[0] : 0; }
inline void put(uint16_t& s, const uint8_t* p, size_t n) {
    uint16_t v = 0; std::memcpy(&v, p, n < 2 ? n : 2); s = v; }
inline void put(uint32_t& s, const uint8_t* p, size_t n) {
    uint32_t v = 0; std::memcpy(&v, p, n < 4 ? n : 4); s = v; }
inline void put(uint64_t& s, const uint8_t* p, size_t n) {
    uint64_t v = 0; std::memcpy(&v, p, n < 8 ? n : 8); s = v; }
template <std::size_t N> void put(VlWide<N>& s, const uint8_t* p, size_t n) {
    for (std::size_t w = 0; w < N; ++w) {
        uint32_t v = 0;
        if (4 * w < n) std::memcpy(&v, p + 4 * w, (n - 4 * w) < 4 ? (n - 4 * w) : 4);
        s[w] = v;
    }
}
template <typename T> inline void get(const T& s, uint8_t* p, size_t n) {
    uint64_t v = s; std::memcpy(p, &v, n < 8 ? n : 8); }
template <std::size_t N> void get(const VlWide<N>& s, uint8_t* p, size_t n) {
    for (std::size_t w = 0; w < N && 4 * w < n; ++w) {
        uint32_t v = s[w];
        std::memcpy(p + 4 * w, &v, (n - 4 * w) < 4 ? (n - 4 * w) : 4);
    }
}
// the write strobe: a plain integer up to 64 lanes, VlWide beyond
template <typename T> inline bool strobe(const T& s, size_t k) { return (uint64_t(s) >> k) & 1; }
template <std::size_t N> bool strobe(const VlWide<N>& s, size_t k) { return (s[k / 32] >> (k % 32)) & 1; }

constexpr size_t kBytes = SF_DMA_BYTES;
constexpr size_t kOutstanding = 4;

struct Burst {
    uint64_t addr;      // the beat-aligned address of the next beat
    uint32_t left;      // beats still to go (AxLEN + 1 at the start)
    uint32_t id;
};

}  // namespace

struct SfSim {
    VerilatedContext ctx;
    Vaccelerator* top = nullptr;
#if VM_TRACE
    VerilatedVcdC* vcd = nullptr;
#endif
    uint64_t cycle = 0;
    std::vector<uint8_t> mem;
    uint64_t mem_errors = 0;      // m_axi beats answered DECERR (outside the memory)
    // s_axis source
    std::deque<uint32_t> in_data;
    std::deque<uint8_t> in_last;
    // m_axis sink
    std::vector<uint32_t> out_data;           // words of frames not yet popped
    std::deque<size_t> frame_ends;            // word counts of complete frames, in order
    size_t open_words = 0;                    // words of the frame being received
    // m_axi slave
    std::deque<Burst> rq, wq;                 // accepted AR / AW bursts
    std::deque<uint32_t> bq;                  // B responses to send (id << 2 | resp)
    std::deque<uint8_t> wresp;                // per AW burst: the worst resp so far
    // s_axil master (one transaction at a time)
    bool aw_pend = false, w_pend = false, b_wait = false, ar_pend = false, r_wait = false;
    uint32_t r_data = 0, r_resp = 0, b_resp = 0;

    void eval_dump() {
        top->eval();
#if VM_TRACE
        if (vcd) vcd->dump(ctx.time());
#endif
        ctx.timeInc(5);
    }

    uint8_t read_beat(uint64_t addr, uint8_t* buf) {
        if (addr + kBytes > mem.size()) {
            std::memset(buf, 0, kBytes);
            ++mem_errors;
            return 3;                                             // DECERR
        }
        std::memcpy(buf, mem.data() + addr, kBytes);
        return 0;
    }

    void step() {
        Vaccelerator& t = *top;
        // -- drive: the harness's outputs from its state
        t.s_axis_tvalid = !in_data.empty();
        t.s_axis_tdata = in_data.empty() ? 0 : in_data.front();
        t.s_axis_tlast = in_last.empty() ? 0 : in_last.front();
        t.m_axis_tready = 1;
        t.s_axil_awvalid = aw_pend;
        t.s_axil_wvalid = w_pend;
        t.s_axil_bready = b_wait;
        t.s_axil_arvalid = ar_pend;
        t.s_axil_rready = r_wait;
#if SF_HAS_MAXI
        t.m_axi_arready = rq.size() < kOutstanding;
        t.m_axi_awready = wq.size() < kOutstanding;
        t.m_axi_wready = !wq.empty();
        t.m_axi_rvalid = !rq.empty();
        if (!rq.empty()) {
            uint8_t buf[kBytes];
            uint8_t resp = read_beat(rq.front().addr, buf);
            put(t.m_axi_rdata, buf, kBytes);
            t.m_axi_rresp = resp;
            t.m_axi_rlast = rq.front().left == 1;
            t.m_axi_rid = rq.front().id;
        } else {
            t.m_axi_rlast = 0;
        }
        t.m_axi_bvalid = !bq.empty();
        t.m_axi_bresp = bq.empty() ? 0 : (bq.front() & 3);
        t.m_axi_bid = bq.empty() ? 0 : (bq.front() >> 2);
#endif
        t.clk = 0;
        eval_dump();
        // -- the cycle's handshakes, from the values before the edge
        const bool in_fire = t.s_axis_tvalid && t.s_axis_tready;
        const bool out_fire = t.m_axis_tvalid;
        const uint32_t out_word = t.m_axis_tdata;
        const bool out_last = t.m_axis_tlast;
        const bool aw_fire = aw_pend && t.s_axil_awready;
        const bool w_fire = w_pend && t.s_axil_wready;
        const bool b_fire = b_wait && t.s_axil_bvalid;
        const uint32_t bresp = t.s_axil_bresp;
        const bool ar_fire = ar_pend && t.s_axil_arready;
        const bool r_fire = r_wait && t.s_axil_rvalid;
        const uint32_t rdata = t.s_axil_rdata, rresp = t.s_axil_rresp;
#if SF_HAS_MAXI
        const bool mar_fire = t.m_axi_arvalid && t.m_axi_arready;
        const Burst mar{uint64_t(t.m_axi_araddr) & ~uint64_t(kBytes - 1),
                        uint32_t(t.m_axi_arlen) + 1, uint32_t(t.m_axi_arid)};
        const bool mr_fire = t.m_axi_rvalid && t.m_axi_rready;
        const bool maw_fire = t.m_axi_awvalid && t.m_axi_awready;
        const Burst maw{uint64_t(t.m_axi_awaddr) & ~uint64_t(kBytes - 1),
                        uint32_t(t.m_axi_awlen) + 1, uint32_t(t.m_axi_awid)};
        const bool mw_fire = t.m_axi_wvalid && t.m_axi_wready;
        uint8_t wbuf[kBytes];
        bool wen[kBytes];
        if (mw_fire) {
            get(t.m_axi_wdata, wbuf, kBytes);
            for (size_t k = 0; k < kBytes; ++k) wen[k] = strobe(t.m_axi_wstrb, k);
        }
        const bool mb_fire = t.m_axi_bvalid && t.m_axi_bready;
#else
        // a core without the DMA master (data_plane = "host-stream"): no card memory traffic
        const bool mar_fire = false, mr_fire = false, maw_fire = false, mw_fire = false,
                   mb_fire = false;
        const Burst mar{0, 0, 0}, maw{0, 0, 0};
        uint8_t wbuf[kBytes] = {};
        bool wen[kBytes] = {};
#endif
        // -- the rising edge
        t.clk = 1;
        eval_dump();
        ++cycle;
        // -- advance the harness by the handshakes
        if (in_fire) { in_data.pop_front(); in_last.pop_front(); }
        if (out_fire) {
            out_data.push_back(out_word);
            ++open_words;
            if (out_last) { frame_ends.push_back(open_words); open_words = 0; }
        }
        if (aw_fire) aw_pend = false;
        if (w_fire) w_pend = false;
        if (b_fire) { b_wait = false; b_resp = bresp; }
        if (ar_fire) ar_pend = false;
        if (r_fire) { r_wait = false; r_data = rdata; r_resp = rresp; }
        if (mr_fire) {
            Burst& b = rq.front();
            b.addr += kBytes;
            if (--b.left == 0) rq.pop_front();
        }
        if (mw_fire) {
            Burst& b = wq.front();
            if (b.addr + kBytes > mem.size()) {
                ++mem_errors;
                wresp.front() = 3;
            } else {
                for (size_t k = 0; k < kBytes; ++k)
                    if (wen[k]) mem[b.addr + k] = wbuf[k];
            }
            b.addr += kBytes;
            if (--b.left == 0) {
                bq.push_back(b.id << 2 | wresp.front());
                wq.pop_front();
                wresp.pop_front();
            }
        }
        if (mb_fire) bq.pop_front();
        if (mar_fire) rq.push_back(mar);
        if (maw_fire) { wq.push_back(maw); wresp.push_back(0); }
    }
};

extern "C" {

// A new simulation with `mem_bytes` of card memory; `vcd_path` (or NULL) dumps a VCD trace
// (only in a library built with waves; otherwise the path is ignored and sf_has_waves is 0).
SfSim* sf_new(uint64_t mem_bytes, const char* vcd_path) {
    SfSim* s = new SfSim();
    s->ctx.debug(0);
    s->ctx.randReset(0);
    s->top = new Vaccelerator(&s->ctx, "accelerator");
    s->mem.assign(mem_bytes, 0);
#if VM_TRACE
    if (vcd_path && *vcd_path) {
        s->ctx.traceEverOn(true);
        s->vcd = new VerilatedVcdC();
        s->top->trace(s->vcd, 99);
        s->vcd->open(vcd_path);
    }
#else
    (void)vcd_path;
#endif
    s->top->clk = 0;
    s->top->rst = 1;
    s->top->eval();
    return s;
}

int sf_has_waves(void) { return VM_TRACE; }

void sf_free(SfSim* s) {
    if (!s) return;
#if VM_TRACE
    if (s->vcd) { s->vcd->close(); delete s->vcd; }
#endif
    s->top->final();
    delete s->top;
    delete s;
}

// Hold `rst` for `cycles` rising edges, then release it.
void sf_reset(SfSim* s, uint32_t cycles) {
    s->top->rst = 1;
    for (uint32_t k = 0; k < cycles; ++k) s->step();
    s->top->rst = 0;
}

uint64_t sf_cycles(SfSim* s) { return s->cycle; }
uint64_t sf_mem_errors(SfSim* s) { return s->mem_errors; }
uint8_t* sf_mem(SfSim* s) { return s->mem.data(); }
uint64_t sf_mem_size(SfSim* s) { return s->mem.size(); }
int sf_irq(SfSim* s) { return s->top->irq; }

void sf_run(SfSim* s, uint64_t cycles) {
    for (uint64_t k = 0; k < cycles; ++k) s->step();
}

// Simulate until the core's `irq` output is high (the user interrupt a card raises through
// XDMA): returns the cycles simulated (0 when it is already high), or -1 when it stayed low
// for `max_cycles`. The host waits for done/error here instead of polling STATUS over
// AXI4-Lite (one read per a few cycles, each a call from Python).
int64_t sf_wait_irq(SfSim* s, uint64_t max_cycles) {
    for (uint64_t k = 0;; ++k) {
        if (s->top->irq) return int64_t(k);
        if (k == max_cycles) return -1;
        s->step();
    }
}

// One AXI4-Lite write; returns BRESP, or -1 when it did not complete in `max_cycles`.
int sf_axil_write(SfSim* s, uint32_t addr, uint32_t data, uint64_t max_cycles) {
    s->top->s_axil_awaddr = addr;
    s->top->s_axil_awprot = 0;
    s->top->s_axil_wdata = data;
    s->top->s_axil_wstrb = 0xF;
    s->aw_pend = s->w_pend = s->b_wait = true;
    for (uint64_t k = 0; k < max_cycles; ++k) {
        s->step();
        if (!s->aw_pend && !s->w_pend && !s->b_wait) return int(s->b_resp);
    }
    s->aw_pend = s->w_pend = s->b_wait = false;
    return -1;
}

// One AXI4-Lite read; returns RRESP << 32 | RDATA, or -1 when it did not complete.
int64_t sf_axil_read(SfSim* s, uint32_t addr, uint64_t max_cycles) {
    s->top->s_axil_araddr = addr;
    s->top->s_axil_arprot = 0;
    s->ar_pend = s->r_wait = true;
    for (uint64_t k = 0; k < max_cycles; ++k) {
        s->step();
        if (!s->ar_pend && !s->r_wait) return int64_t(s->r_resp) << 32 | s->r_data;
    }
    s->ar_pend = s->r_wait = false;
    return -1;
}

// Queue one packet (`n` words, tlast on the last) on s_axis; nothing is simulated.
void sf_push(SfSim* s, const uint32_t* words, uint64_t n) {
    for (uint64_t k = 0; k < n; ++k) {
        s->in_data.push_back(words[k]);
        s->in_last.push_back(k + 1 == n);
    }
}

uint64_t sf_in_pending(SfSim* s) { return s->in_data.size(); }

// Simulate until s_axis has taken every queued word; returns the words left (0: all taken).
uint64_t sf_drain_input(SfSim* s, uint64_t max_cycles) {
    for (uint64_t k = 0; k < max_cycles && !s->in_data.empty(); ++k) s->step();
    return s->in_data.size();
}

// Simulate until a whole m_axis frame has arrived (or `max_cycles`); returns the word count
// of the oldest complete frame, or -1.
int64_t sf_wait_frame(SfSim* s, uint64_t max_cycles) {
    for (uint64_t k = 0; k < max_cycles && s->frame_ends.empty(); ++k) s->step();
    return s->frame_ends.empty() ? -1 : int64_t(s->frame_ends.front());
}

// Pop the oldest complete frame into `buf` (at least its word count long); returns its length.
uint64_t sf_pop_frame(SfSim* s, uint32_t* buf) {
    if (s->frame_ends.empty()) return 0;
    size_t n = s->frame_ends.front();
    s->frame_ends.pop_front();
    std::memcpy(buf, s->out_data.data(), n * sizeof(uint32_t));
    s->out_data.erase(s->out_data.begin(), s->out_data.begin() + n);
    return n;
}

}  // extern "C"
