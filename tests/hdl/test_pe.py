"""Dual-sparse 1-D conv PE on the RTL: amaranth-sim bit-exact runs with every counter checked
against the cycle model, the utilisation / speedup table, and cocotb runs (Icarus, Verilator).

The mapping and cycle model without the RTL: ``tests/hdl/test_pe_model.py``; constructor
parameters: ``tests/hdl/test_pe_params.py``. The utilisation / speedup table:
``.venv/bin/python -m pytest -q -s tests/hdl/test_pe.py -k table``.
"""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.gen.config import preset
from sparseforge.gen.mapper import pe as pm
from sparseforge.hdl.pe import PE, pe_params
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit import layers
from sparseforge.sim.testkit.amaranth_streams import pack_beats, unpack
from sparseforge.sim.testkit.layer_cases import PE_CFG as CFG
from sparseforge.sim.testkit.layer_cases import PE_RTL_CASES as RTL_CASES
from sparseforge.sim.testkit.patterns import make_pattern

COUNTERS = ("cycles", "busy_mac", "stall_in", "stall_out", "nnz", "active", "error")


# --------------------------------------------------------------------------------------------
# amaranth-sim harness: one testbench drives every stream (one wake-up per cycle)
# --------------------------------------------------------------------------------------------

def run_pe(jobs, *, src="always", sink="always", seed=0, dut=None, cfg=None):
    """Run one or more jobs (same control inputs) back to back on one PE.

    Returns ``(drained values, counters)``. Sources idle and the sink back-pressures per the
    named patterns; the sink checks the stream rule on ``o``."""
    jobs = jobs if isinstance(jobs, list) else [jobs]
    assert all(j.control() == jobs[0].control() for j in jobs), "jobs need the same control"
    cfg = cfg or jobs[0].cfg
    dut = dut or PE(**pe_params(cfg))
    cat = lambda f: [b for j in jobs for b in f(j)]      # noqa: E731
    srcs = [(dut.x, pack_beats(dut.x_layout, cat(pm.PEJob.x_beats)), make_pattern(src, seed + 2)),
            (dut.taps, pack_beats(dut.taps_layout, cat(pm.PEJob.tap_beats)),
             make_pattern(src, seed + 3)),
            (dut.drain, pack_beats(dut.drain_layout, cat(pm.PEJob.drain_beats)),
             make_pattern(src, seed + 4))]
    dense = pack_beats(dut.dense_layout, jobs[0].dense_beats())
    n_out = sum(j.n_outputs() for j in jobs)
    spat = make_pattern(sink, seed + 1)
    out, res = [], {}
    max_cycles = 40 * (sum(len(b) for _, b, _ in srcs) + n_out) + 1000

    async def bench(ctx):
        for k, v in jobs[0].control().items():
            ctx.set(getattr(dut, k), v)
        await ctx.tick()                                 # the PE registers its controls
        dpat = make_pattern(src, seed + 10)
        for v in dense:                                  # WG: the X scratchpad first
            while not next(dpat):
                ctx.set(dut.dense.valid, 0)
                await ctx.tick()
            ctx.set(dut.dense.valid, 1)
            ctx.set(dut.dense.payload.as_value(), v)
            await ctx.tick()
        ctx.set(dut.dense.valid, 0)
        pos, offering, held, n = [0] * 3, [False] * 3, None, 0
        readies = [s.ready for s, _, _ in srcs]
        opay = dut.o.payload.as_value()
        while len(out) < n_out:
            for k, (s, beats, pat) in enumerate(srcs):
                if not offering[k] and pos[k] < len(beats) and next(pat):
                    offering[k] = True
                    ctx.set(s.payload.as_value(), beats[pos[k]])
                ctx.set(s.valid, offering[k])
            rdy = next(spat)
            ctx.set(dut.o.ready, rdy)
            _, _, *r, ov, op = await ctx.tick().sample(*readies, dut.o.valid, opay)
            for k in range(3):
                if offering[k] and r[k]:
                    offering[k] = False
                    pos[k] += 1
            if held is not None:
                assert ov and op == held, "stream rule: o changed or dropped while not ready"
            if ov and rdy:
                out.append(int(op))
                held = None
            elif ov:
                held = int(op)
            n += 1
            assert n < max_cycles, f"timeout: {len(out)} of {n_out} outputs after {n} cycles"
        ctx.set(dut.o.ready, 0)
        for s, _, _ in srcs:
            ctx.set(s.valid, 0)
        await ctx.tick().repeat(3)
        for k in COUNTERS:
            res[k] = ctx.get(getattr(dut, k))
        res["o_valid_after"] = ctx.get(dut.o.valid)
        res["leftover"] = [len(b) - p for (_, b, _), p in zip(srcs, pos)]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    vals = [unpack(dut.out_layout, v) for v in out]
    return vals, res


def check_run(jobs, expected, vals, res, ideal):
    """Whole-tensor equality with the golden model and every counter against the model."""
    jobs = jobs if isinstance(jobs, list) else [jobs]
    expected = expected if isinstance(expected, list) else [expected]
    assert res["leftover"] == [0, 0, 0], f"beats left unconsumed: {res['leftover']}"
    assert res["o_valid_after"] == 0, "extra output beat after the job"
    k = 0
    for job, exp in zip(jobs, expected):
        n = job.n_outputs()
        got = job.assemble([v["value"] for v in vals[k:k + n]])
        assert np.array_equal(got, exp), (
            f"{job.mode}: {int(np.sum(got != exp))} of {exp.size} outputs differ; first at "
            f"{np.argwhere(got != exp)[0]}: got {got[tuple(np.argwhere(got != exp)[0])]}, "
            f"expected {exp[tuple(np.argwhere(got != exp)[0])]}")
        lasts = [v["last"] for v in vals[k:k + n]]
        ends = [v["end"] for v in vals[k:k + n]]
        want_last = [0] * n
        at = -1
        for _, c, _, _ in job.drains:
            at += max(c, 1)
            want_last[at] = 1
        assert lasts == want_last, "o.last must mark the final beat of every drain command"
        assert ends == [0] * (n - 1) + [1], "o.end must mark the job's final beat only"
        k += n
    st = pm.cycles_tiles(jobs)
    assert res["error"] == 0 and res["active"] == 0
    assert res["busy_mac"] == st.busy_mac
    assert res["nnz"] == st.nnz
    work = res["cycles"] - res["stall_in"] - res["stall_out"]
    if len(jobs) == 1:
        # one tile: every cycle is processing, flush, drain, tail or a stall -- whatever the
        # idle / back-pressure pattern
        assert work == st.work, f"work cycles {work} != model {st.work}"
    else:
        # overlapped tiles: a back-pressured drain cycle may also be a processing cycle
        assert work >= max(st.proc, st.drained), (work, st)
    if ideal:
        assert (res["cycles"], res["stall_in"], res["stall_out"]) == \
            (st.cycles, st.stall_in, 0), f"RTL {res} != model {st}"
    return st


# --------------------------------------------------------------------------------------------
# 1. RTL (amaranth-sim): whole small layers, bit-exact, counters == model
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", RTL_CASES,
                         ids=lambda c: "-".join(map(str, c[:8])).replace(" ", ""))
def test_pe_rtl_layer(case):
    mode, K, S, p, zf, nm, dense, raw, src, sink, cin, cout, h, w = case
    seed = 100 + RTL_CASES.index(case)
    print(f"seed={seed} case={case}")
    job, ref = layers.random_layer(mode, cfg=CFG, kernel=K, stride=S, padding=p, zero_frac=zf,
                               nm=nm, seed=seed, cin=cin, cout=cout, height=h, width=w,
                               dense=dense, raw=raw)
    vals, res = run_pe(job, src=src, sink=sink, seed=seed)
    stats = check_run(job, ref, vals, res, ideal=(src == sink == "always"))
    print(f"RTL {res}\nmodel {stats}")


@pytest.mark.parametrize("lanes,dw,aw,fb", [(1, 8, 20, 3), (3, 12, 30, 0)])
def test_pe_rtl_other_widths(lanes, dw, aw, fb):
    """Odd lane counts (non-power-of-2 adder trees), narrow widths, frac_bits 0 (saturate only)."""
    cfg = CFG.replace(macs_per_pe=lanes, data_width=dw, acc_width=aw, frac_bits=fb, k_max=3)
    seed = 200 + lanes
    print(f"seed={seed}")
    for mode, raw in (("fp", False), ("bp", True)):
        job, ref = layers.random_layer(mode, cfg=cfg, kernel=3, stride=1, padding=1, zero_frac=0.5,
                                   seed=seed, cin=3, cout=3, height=5, width=5, raw=raw)
        vals, res = run_pe(job)
        check_run(job, ref, vals, res, ideal=True)


def test_pe_rtl_back_to_back_same_address():
    """WG: every product of a bundle goes to the same accumulator address on consecutive
    cycles (a fully dense dy row, K=1); the transparent bank read port makes that exact with no
    stall: busy_mac per cycle == lanes while processing."""
    cfg = CFG
    rng = np.random.default_rng(7)
    x = rng.integers(-30000, 30000, (1, 4, 4, 16))
    dy = rng.integers(1, 30000, (1, 1, 4, 16))                # no zeros: 16 entries per row
    job = pm.map_conv_wg(x, dy, (1, 4, 1, 1), cfg=cfg)
    assert all(r.values.size == 16 for r in job.rows)
    dut = PE.from_config(cfg)
    assert (dut.macs_per_pe, dut.k_max, dut.max_row_len, dut.psum_buf_depth, dut.act_buf_depth) == \
        (cfg.macs_per_pe, cfg.k_max, cfg.max_row_len, cfg.psum_buf_depth, cfg.act_buf_depth)
    vals, res = run_pe(job, dut=dut)
    check_run(job, golden.conv2d_backward_weight(x, dy, (1, 4, 1, 1)), vals, res, ideal=True)
    st = pm.cycles(job)
    assert st.busy_mac == cfg.macs_per_pe * st.proc == 4 * 4 * 16


def test_pe_rtl_skip_rows_chunked_drains_and_two_tiles():
    """Rows with no taps sent as 1-cycle skip beats; drains in 3 chunks; two tiles back to back
    on one PE (the second tile's rows load while the first drains)."""
    seed = 300
    print(f"seed={seed}")
    job1, ref1 = layers.random_layer("fp", cfg=CFG, kernel=1, stride=2, padding=0, zero_frac=0.5,
                                 nm=(2, 4), seed=seed, cin=4, cout=4, height=7, width=7,
                                 empty_rows="skip", drain_chunk=13)   # odd rows: no taps
    assert any(r.n_taps == 0 for r in job1.rows), "the case must contain skip rows"
    job2, ref2 = layers.random_layer("fp", cfg=CFG, kernel=1, stride=2, padding=0, zero_frac=0.9,
                                 seed=seed + 1, cin=4, cout=4, height=7, width=7, raw=False)
    vals, res = run_pe([job1], seed=seed)
    check_run(job1, ref1, vals, res, ideal=True)
    vals, res = run_pe([job1, job2], src="random", sink="random", seed=seed)
    check_run([job1, job2], [ref1, ref2], vals, res, ideal=False)


# (mode, zero fraction, N:M, dense mode, tile words, src, sink)
TILE_CASES = [
    ("fp", 0.9, (2, 4), False, 36, "always", "always"),
    ("fp", 0.0, None, True, 48, "always", "always"),
    ("bp", 0.5, (2, 4), False, 36, "always", "always"),
    ("wg", 0.5, None, False, 20, "always", "always"),
    ("fp", 0.5, (2, 4), False, 36, "random", "random"),
    ("wg", 0.9, None, False, 16, "bursty", "cycle"),
]


@pytest.mark.parametrize("case", TILE_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_pe_rtl_tiles_overlap_drain(case):
    """A layer cut into tiles (ping-pong psum halves): tile t+1 is processed while tile t
    drains. Whole-tensor equality, every tile's o.end, and (ideal streams) cycles and stall_in
    exactly as :func:`pe_model.cycles_tiles` predicts."""
    mode, zf, nm, dense, words, src, sink = case
    seed = 400 + TILE_CASES.index(case)
    print(f"seed={seed} case={case}")
    big = CFG.replace(psum_buf_depth=4096)
    job, ref = layers.random_layer(mode, cfg=big, kernel=3, stride=1, padding=1, zero_frac=zf,
                               nm=nm, seed=seed, cin=4, cout=4, height=6, width=6,
                               dense=dense, raw=True)
    tiles = pm.split_tiles(job, words, cfg=CFG)
    assert len(tiles) >= 3
    vals, res = run_pe(tiles, src=src, sink=sink, seed=seed)
    exp = [pm.tile_expected(job, t, ref) for t in tiles]
    st = check_run(tiles, exp, vals, res, ideal=(src == sink == "always"))
    one_by_one = sum(pm.cycles(t).cycles for t in tiles)
    print(f"RTL {res}\nmodel {st}; tiles one at a time: {one_by_one} cycles")
    assert st.cycles < one_by_one


def test_pe_rtl_operand_overflow_sets_error():
    """A row with more entries than max_row_len (no last) is not stored past the buffer; the
    sticky error flag says so."""
    dut = PE(**pe_params(CFG.replace(max_row_len=4, k_max=3)))
    seen = {}

    async def bench(ctx):
        ctx.set(dut.skip_zero, 1)
        await ctx.tick()                                 # the PE registers its controls
        for j in range(5):
            ctx.set(dut.x.valid, 1)
            ctx.set(dut.x.payload.as_value(), int(dut.x_layout.const(
                {"value": 1, "col": j % 4, "last": 0}).as_bits()))
            await ctx.tick()
            seen[j] = ctx.get(dut.error)
        ctx.set(dut.x.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [seen[j] for j in range(5)] == [0, 0, 0, 0, 1]


# --------------------------------------------------------------------------------------------
# 2. Utilisation and speedup table (RTL-measured, model-checked)
# --------------------------------------------------------------------------------------------

LARGE = os.environ.get("SF_PE_TABLE") == "large"
#: RTL table layer: the default keeps the test fast; SF_PE_TABLE=large runs 16x16 rows.
TABLE_LAYER = dict(kernel=3, stride=1, padding=1, cin=8, cout=8,
                   height=16 if LARGE else 6, width=16 if LARGE else 6)
#: Model-only table layer: SF_PE_TABLE=large gives the 3x3, 64-channel, 32x32 figure.
MODEL_LAYER = dict(kernel=3, stride=1, padding=1, cin=64 if LARGE else 16,
                   cout=64 if LARGE else 16, height=32 if LARGE else 16,
                   width=32 if LARGE else 16)
VARIANTS = [("dense", 0.0, None, True), ("90% zero operand", 0.9, None, False),
            ("2:8 weights", 0.0, (2, 8), False), ("90% zero + 2:8", 0.9, (2, 8), False)]


def speedup_rows(mode, cfg, layer, seed, run_rtl, tile_cfg=None):
    """Per variant: (name, cycles, busy_mac, speedup, engine speedup, ideal, utilisation).

    speedup = dense-mode cycles / cycles; engine speedup = the same for the processing cycles
    only (``proc``, without the load / flush / drain overheads); ideal = dense-mode products /
    useful products (the sparse job's busy_mac: non-zero operand x kept tap with a valid
    destination). The operands are the same in every variant (same seed); with ``run_rtl``
    every variant runs on the RTL and is checked bit-exact and counter-exact against the
    model."""
    rows = []
    for name, zf, nm, dense in VARIANTS:
        if mode == "wg" and nm is not None:
            continue                                  # the weight gradient is dense
        job, ref = layers.random_layer(mode, cfg=cfg, zero_frac=zf, nm=nm, seed=seed, dense=dense,
                                   **layer)
        dense_job = layers.random_layer(mode, cfg=cfg, zero_frac=zf, nm=nm, seed=seed, dense=True,
                                    **layer)[0]
        if run_rtl:
            vals, res = run_pe(job)
            st = check_run(job, ref, vals, res, ideal=True)
            base = pm.cycles(dense_job)
        elif tile_cfg is not None:                    # ping-pong tiles of tile_cfg's psum
            st = pm.cycles_tiles(pm.split_tiles(job, cfg=tile_cfg))
            base = pm.cycles_tiles(pm.split_tiles(dense_job, cfg=tile_cfg))
        else:
            st, base = pm.cycles(job), pm.cycles(dense_job)
        rows.append((name, st.cycles, st.busy_mac, base.cycles / st.cycles, base.proc / st.proc,
                     base.busy_mac / max(st.busy_mac, 1), st.utilisation(cfg.macs_per_pe)))
    return rows


def format_table(title, table):
    lines = [title, f"{'phase':5} {'variant':18} {'cycles':>9} {'busy_mac':>10} {'util':>6} "
                    f"{'speedup':>8} {'engine':>7} {'ideal':>7}"]
    for mode, rows in table:
        for name, cyc, busy, sp, eng, ideal, util in rows:
            lines.append(f"{mode:5} {name:18} {cyc:9d} {busy:10d} {util:6.1%} {sp:8.2f} "
                         f"{eng:7.2f} {ideal:7.2f}")
    return "\n".join(lines)


def _check_table(mode, rows, min_util):
    assert rows[0][6] > min_util, f"{mode}: dense-mode utilisation {rows[0][6]:.1%}"
    for name, _, _, sp, eng, ideal, _ in rows[1:]:
        assert 1.0 < sp <= eng <= ideal * 1.001, (mode, name, sp, eng, ideal)


@pytest.mark.parametrize("mode", ["fp", "bp", "wg"])
def test_pe_table_rtl(mode):
    """Dense-mode utilisation and sparse speedups, measured on the RTL (every run also checked
    bit-exact and counter-exact against the model)."""
    seed = 400
    print(f"seed={seed}")
    cfg = CFG.replace(psum_buf_depth=2048, act_buf_depth=2048)
    rows = speedup_rows(mode, cfg, TABLE_LAYER, seed, run_rtl=True)
    print("\n" + format_table(f"PE RTL (amaranth-sim), {cfg.macs_per_pe} lanes, layer "
                              f"{TABLE_LAYER}", [(mode, rows)]))
    _check_table(mode, rows, 0.75)


def test_pe_table_model():
    """The same table from the cycle model (exact on every RTL test) for one PE of the tiny
    preset (2 lanes, 256-word ping-pong psum halves): the layer runs as tiles of 256 outputs,
    each tile's drain hidden under the next tile. SF_PE_TABLE=large: the 3x3, 64-channel,
    32x32 layer of the acceptance figure (~3 min)."""
    tiny = preset("tiny").replace(act_buf_depth=1 << 20)
    cfg = tiny.replace(psum_buf_depth=1 << 20)
    table = [(mode, speedup_rows(mode, cfg, MODEL_LAYER, 500, run_rtl=False, tile_cfg=tiny))
             for mode in ("fp", "bp", "wg")]
    print("\n" + format_table(f"PE cycle model, tiny preset ({tiny.macs_per_pe} lanes, "
                              f"{tiny.psum_buf_depth}-word tiles), layer {MODEL_LAYER}", table))
    for mode, rows in table:
        _check_table(mode, rows, 0.95)


# --------------------------------------------------------------------------------------------
# 3. cocotb on the emitted Verilog (Icarus, Verilator)
# --------------------------------------------------------------------------------------------

COCOTB_CFG = preset("tiny")          # the "pe" block of the tiny preset (2 lanes, k_max 7)
COCOTB_CASES = [
    dict(mode="fp", kernel=3, stride=2, padding=1, zero_frac=0.5, nm=[2, 8], raw=False,
         cin=8, cout=4, height=7, width=7, src="random", sink="random"),
    dict(mode="bp", kernel=3, stride=1, padding=1, zero_frac=0.5, nm=[2, 4], raw=True,
         cin=4, cout=4, height=6, width=6, src="cycle", sink="random"),
    dict(mode="wg", kernel=3, stride=1, padding=1, zero_frac=0.5, nm=None, raw=True,
         cin=4, cout=4, height=6, width=6, src="always", sink="random"),
    dict(mode="fp", kernel=5, stride=1, padding=2, zero_frac=0.9, nm=None, raw=True,
         cin=4, cout=4, height=6, width=6, src="always", sink="always"),
]


@pytest.fixture(scope="module")
def pe_cocotb(cocotb_run):
    """``cocotb_run('pe', ...)`` on the cocotb configuration."""
    return lambda sim, **kw: cocotb_run("pe", sim, "cocotb_pe", config=COCOTB_CFG, **kw)


@pytest.mark.parametrize("case", COCOTB_CASES,
                         ids=lambda c: f"{c['mode']}-k{c['kernel']}-s{c['stride']}")
def test_pe_cocotb(sim, pe_cocotb, case):
    seed = 600 + COCOTB_CASES.index(case)
    print(f"seed={seed} sim={sim} case={case}")
    n = pe_cocotb(sim, params={"seed": seed, "config": COCOTB_CFG.to_dict(), **case},
                  testcase="pe_layer")
    assert n == 1
