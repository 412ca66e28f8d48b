"""cocotb test of the emitted ``pe``: a whole small layer (FP, BP or WG) against the golden
model, with idle gaps on the inputs and back-pressure on ``o``; counters vs the cycle model."""

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from sparseforge.gen.mapper import pe as pm
from sparseforge.hdl.layouts import sparse_elem_layout
from sparseforge.hdl.pe import pe_dense_layout, pe_drain_layout, pe_params, pe_taps_layout
from sparseforge.sim.testkit.amaranth_streams import pack_beats
from sparseforge.sim.testkit.cocotb_layers import layer_from_params
from sparseforge.sim.testkit.cocotb_streams import (StreamSink, StreamSource, env_params, reset,
                                                    run_streams)
from sparseforge.sim.testkit.patterns import make_pattern

COUNTERS = ("cycles", "busy_mac", "stall_in", "stall_out", "nnz", "active", "error")


@cocotb.test()
async def pe_layer(dut):
    p = env_params()
    seed = p["seed"]
    cfg, job, ref = layer_from_params(p)
    stats = pm.cycles(job)
    dut._log.info(f"seed={seed} {p['mode']} src={p['src']} sink={p['sink']} model={stats}")
    kw = pe_params(cfg)
    col_width = max(1, (cfg.max_row_len - 1).bit_length())
    xs = pack_beats(sparse_elem_layout(cfg.data_width, col_width), job.x_beats())
    ts = pack_beats(pe_taps_layout(kw["macs_per_pe"], cfg.data_width, cfg.k_max, kw["psum_buf_depth"],
                               kw["act_buf_depth"]), job.tap_beats())
    dr = pack_beats(pe_drain_layout(kw["psum_buf_depth"]), job.drain_beats())
    ds = pack_beats(pe_dense_layout(cfg.data_width), job.dense_beats())
    n_out = job.n_outputs()

    for name in ("x", "taps", "drain", "dense"):
        getattr(dut, f"{name}__valid").value = 0
    dut.o__ready.value = 0
    for k, v in job.control().items():
        getattr(dut, k).value = v
    Clock(dut.clk, 10, unit="ns").start()
    await reset(dut)

    if ds:                                               # WG: the X scratchpad first
        dense = StreamSource(dut, "dense", ds, make_pattern(p["src"], seed + 10))
        await run_streams(dut.clk, [dense], [], max_cycles=4 * len(ds) + 100, extra_cycles=2)
        await FallingEdge(dut.clk)
        dut.dense__valid.value = 0
    sources = [StreamSource(dut, "x", xs, make_pattern(p["src"], seed + 2)),
               StreamSource(dut, "taps", ts, make_pattern(p["src"], seed + 3)),
               StreamSource(dut, "drain", dr, make_pattern(p["src"], seed + 4))]
    sink = StreamSink(dut, "o", make_pattern(p["sink"], seed + 1), expected=n_out)
    await run_streams(dut.clk, sources, [sink], max_cycles=40 * (len(xs) + len(ts) + n_out) + 1000,
                      extra_cycles=5)
    res = {k: int(getattr(dut, k).value) for k in COUNTERS}
    dut._log.info(f"RTL counters {res}")

    aw = cfg.acc_width                                   # o: value (aw, signed), last, end
    got = np.array([(b & ((1 << aw) - 1)) - ((b >> (aw - 1) & 1) << aw) for b in sink.beats],
                   dtype=np.int64)
    assert len(sink.beats) == n_out
    out = job.assemble(got)
    bad = np.argwhere(out != ref)
    assert not bad.size, f"{bad.shape[0]} outputs differ; first at {bad[0]}: " \
                         f"{out[tuple(bad[0])]} != {ref[tuple(bad[0])]}"
    ends = [(b >> (aw + 1)) & 1 for b in sink.beats]
    assert ends == [0] * (n_out - 1) + [1]
    assert res["error"] == 0 and res["active"] == 0
    assert res["busy_mac"] == stats.busy_mac and res["nnz"] == stats.nnz
    assert res["cycles"] - res["stall_in"] - res["stall_out"] == stats.work
    if p["src"] == p["sink"] == "always":
        assert (res["cycles"], res["stall_in"], res["stall_out"]) == \
            (stats.cycles, stats.stall_in, 0)
