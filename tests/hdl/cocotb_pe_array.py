"""cocotb test of the emitted ``pe_array``: a whole small layer (FP, BP or WG) mapped onto the
``rows x cols`` array by :mod:`sparseforge.gen.mapper.array`, bit-exact against the golden model.

Every input stream (Verilog ``x__{i}``, ``taps__{i}__{j}``, ``drain__{j}``; WG also
``dense__{i}__{j}`` first, and in a chunked WG the reloads during the job, offered from its
first cycle: the PE holds them back) is driven by a :class:`StreamSource` with an idle
pattern, every
``o__{j}`` is taken by a :class:`StreamSink` with a back-pressure pattern (which also checks the
stream rule). Each ``(src, sink)`` pair in ``runs`` is one whole layer after a reset. Checks
(``check_array`` of tests/hdl/test_pe_array.py, shared with the amaranth-sim test): the
assembled layer equals the golden result, ``o__{j}.end`` closes every tile, every PE's
``busy_mac``/``nnz`` (read through ``pe_sel``, ports ``sel__*``) equal
:func:`array_model.cycles`; with ``src == sink == "always"`` also every PE's
``cycles``/``stall_in`` (``stall_out`` 0) and the array's ``cycles``, exactly.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from sparseforge.sim.testkit import layers
from sparseforge.sim.testkit.cocotb_layers import layer_from_params
from sparseforge.hdl.pe_array import PE_COUNTERS
from sparseforge.hdl.wire import pe_layouts
from sparseforge.sim.testkit.amaranth_streams import unpack
from sparseforge.sim.testkit.cocotb_streams import StreamSink, StreamSource, env_params, run_streams
from sparseforge.sim.testkit.patterns import make_pattern
from test_pe_array import array_streams, check_array, verilog_name


async def run_layer(dut, job, src, sink, seed):
    """Reset, run the whole layer once; returns ``(per-column outputs, counters)`` in the
    format of tests/hdl/test_pe_array.py's ``run_array``."""
    R, C = job.rows, job.cols
    srcs, dense = array_streams(job)
    srcs = [(verilog_name(k), beats) for k, beats in srcs]
    dense = [(verilog_name(k), beats) for k, beats in dense]
    names = [n for n, _ in srcs] + [n for n, _ in dense]
    await FallingEdge(dut.clk)                          # out of a previous run's ReadOnly
    for n in names:
        getattr(dut, f"{n}__valid").value = 0
    for j in range(C):
        getattr(dut, f"o__{j}__ready").value = 0
    for k, v in job.control().items():
        getattr(dut, k).value = v
    dut.pe_sel.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    loads = [StreamSource(dut, n, beats, make_pattern(src, seed + 50 + k))
             for k, (n, beats) in enumerate(dense) if beats]
    if loads:                                            # WG: the X scratchpads first
        await run_streams(dut.clk, loads, [],
                          max_cycles=4 * max(len(s.beats) for s in loads) + 100,
                          extra_cycles=2)
        await FallingEdge(dut.clk)
        for s in loads:
            s.valid.value = 0
    sources = [StreamSource(dut, n, beats, make_pattern(src, seed + 2 + k))
               for k, (n, beats) in enumerate(srcs)]
    sinks = [StreamSink(dut, f"o__{j}", make_pattern(sink, seed + 100 + j),
                        expected=job.n_outputs(j)) for j in range(C)]
    limit = 60 * (sum(len(b) for _, b in srcs) + sum(s.expected for s in sinks)) + 2000
    await run_streams(dut.clk, sources, sinks, max_cycles=limit, extra_cycles=0)
    await FallingEdge(dut.clk)                          # stop taking beats; let it settle
    for s in sources:
        s.valid.value = 0
    for s in sinks:
        s.ready.value = 0
    await ClockCycles(dut.clk, 4)
    await ReadOnly()
    res = {"leftover": [len(s.beats) - s.pos for s in sources],
           "cycles": int(dut.cycles.value), "active": int(dut.active.value),
           "error": int(dut.error.value),
           "o_valid_after": [int(getattr(dut, f"o__{j}__valid").value) for j in range(C)],
           "pe": []}
    for k in range(R * C):                               # per-PE counters through the read mux
        await FallingEdge(dut.clk)
        dut.pe_sel.value = k
        await ReadOnly()
        res["pe"].append({c: int(getattr(dut, f"sel__{c}").value) for c in PE_COUNTERS})
    layout = pe_layouts(job.cfg)["out"]
    vals = [[unpack(layout, b) for b in s.beats] for s in sinks]
    return vals, res


@cocotb.test()
async def pe_array_layer(dut):
    p = env_params()
    seed = p["seed"]
    cfg, job, ref = layer_from_params(p, layers.random_array_layer, mapping=p["mapping"],
                                      value_range=p.get("value_range"))
    assert (cfg.pe_rows, cfg.pe_cols) == (job.rows, job.cols)
    Clock(dut.clk, 10, unit="ns").start()
    for src, sink in p["runs"]:
        vals, res = await run_layer(dut, job, src, sink, seed)
        st = check_array(job, ref, vals, res, ideal=(src == sink == "always"))
        dut._log.info(f"seed={seed} {p['mode']} src={src} sink={sink}: array cycles RTL "
                      f"{res['cycles']} model {st.cycles} (exact only for always/always); "
                      f"PE busy_mac {[c['busy_mac'] for c in res['pe']]}")
