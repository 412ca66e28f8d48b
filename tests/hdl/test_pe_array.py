"""PE array: whole layers on a rows x cols array in amaranth-sim, bit-exact against the golden
model, every PE's counters and the array's cycles against the exact array cycle model;
interleaved vs in-order mapping on uneven channels; the cocotb run is in
tests/hdl/cocotb_pe_array.py."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.sim.testkit import layers
from sparseforge.hdl.pe_array import COLUMN_LATENCY, PE_COUNTERS, PEArray
from sparseforge.hdl.wire import pe_layouts
from sparseforge.gen.mapper import array as am
from sparseforge.gen.mapper import pe as pm
from sparseforge.sim.testkit.amaranth_streams import pack_beats, unpack
from sparseforge.sim.testkit.layer_cases import ARRAY_CASES as CASES
from sparseforge.sim.testkit.layer_cases import ARRAY_CFG as CFG
from sparseforge.sim.testkit.patterns import make_pattern



def array_streams(job):
    """``(sources, dense loads)``: per input stream of the array, ``((port, *index), packed
    beats)``, e.g. ``(("taps", i, j), [...])`` for ``taps[i][j]``; the dense loads are the
    scratchpad images loaded before the job, the images a chunked WG job reloads during the
    job are sources (``("dense", i, j)``) like the others."""
    R, C = job.rows, job.cols
    lay = pe_layouts(job.cfg)
    cat = lambda tiles, f: [b for t in tiles for b in f(t)]      # noqa: E731
    srcs = []
    for i in range(R):
        srcs.append((("x", i), pack_beats(lay["x"], cat(job.grid[i][0], pm.PEJob.x_beats))))
        for j in range(C):
            srcs.append((("taps", i, j),
                         pack_beats(lay["taps"], cat(job.grid[i][j], pm.PEJob.tap_beats))))
    for j in range(C):
        srcs.append((("drain", j), pack_beats(lay["drain"], cat(job.grid[0][j],
                                                              pm.PEJob.drain_beats))))
    dense = [(("dense", i, j), pack_beats(lay["dense"], job.grid[i][j][0].dense_beats()))
             for i in range(R) for j in range(C)]
    for i in range(R):
        for j in range(C):
            re = [b for t, tile in enumerate(job.grid[i][j])
                  for load in tile.reload_beats(t == 0) for b in load]
            if re:
                srcs.append((("dense", i, j), pack_beats(lay["dense"], re)))
    return srcs, dense


def port_of(dut, key):
    """The stream ``key = (port, *index)`` of a PEArray, e.g. ``dut.taps[i][j]``."""
    port = {"x": dut.x, "taps": dut.taps, "dense": dut.dense, "drain": dut.drain}[key[0]]
    for k in key[1:]:
        port = port[k]
    return port


def verilog_name(key):
    """The Verilog port prefix of ``key = (port, *index)``: Amaranth flattens ``taps[1][0]``
    to ``taps__1__0``."""
    return "__".join(map(str, key))


def run_array(job, *, src="always", sink="always", seed=0):
    """Drive every stream of the array (idle / back-pressure per the named patterns); returns
    ``(per-column output values, per-PE counters, array counters)``."""
    cfg = job.cfg
    dut = PEArray.from_config(cfg)
    R, C = job.rows, job.cols
    srcs, dense = array_streams(job)
    ports = [(port_of(dut, key), beats, make_pattern(src, seed + 2 + k))
             for k, (key, beats) in enumerate(srcs)]
    outs = dut.o
    n_out = [job.n_outputs(j) for j in range(C)]
    spats = [make_pattern(sink, seed + 100 + j) for j in range(C)]
    got = [[] for _ in range(C)]
    res = {}
    limit = 60 * (sum(len(b) for _, b, _ in ports) + sum(n_out)) + 2000

    async def bench(ctx):
        for k, v in job.control().items():
            ctx.set(getattr(dut, k), v)
        await ctx.tick()                     # the array registers its controls once per PE
        for key, beats in dense:                         # WG: the X scratchpads first
            s = port_of(dut, key)
            for v in beats:
                ctx.set(s.valid, 1)
                ctx.set(s.payload.as_value(), v)
                await ctx.tick()
            ctx.set(s.valid, 0)
        pos = [0] * len(ports)
        offering = [False] * len(ports)
        held = [None] * C
        n = 0
        readies = [s.ready for s, _, _ in ports]
        ovalid = [o.valid for o in outs]
        opay = [o.payload.as_value() for o in outs]
        while any(len(got[j]) < n_out[j] for j in range(C)):
            for k, (s, beats, pat) in enumerate(ports):
                if not offering[k] and pos[k] < len(beats) and next(pat):
                    offering[k] = True
                    ctx.set(s.payload.as_value(), beats[pos[k]])
                ctx.set(s.valid, offering[k])
            rdy = [next(p) for p in spats]
            for j in range(C):
                ctx.set(outs[j].ready, rdy[j])
            _, _, *smp = await ctx.tick().sample(*readies, *ovalid, *opay)
            r, ov, op = smp[:len(ports)], smp[len(ports):len(ports) + C], smp[len(ports) + C:]
            for k in range(len(ports)):
                if offering[k] and r[k]:
                    offering[k] = False
                    pos[k] += 1
            for j in range(C):
                if held[j] is not None:
                    assert ov[j] and op[j] == held[j], f"stream rule broken on o[{j}]"
                if ov[j] and rdy[j]:
                    got[j].append(int(op[j]))
                    held[j] = None
                elif ov[j]:
                    held[j] = int(op[j])
            n += 1
            assert n < limit, f"timeout after {n} cycles: {[len(g) for g in got]} of {n_out}"
        for j in range(C):
            ctx.set(outs[j].ready, 0)
        for s, _, _ in ports:
            ctx.set(s.valid, 0)
        await ctx.tick().repeat(4)
        res["leftover"] = [len(b) - p for (_, b, _), p in zip(ports, pos)]
        res["cycles"] = ctx.get(dut.cycles)
        res["active"] = ctx.get(dut.active)
        res["error"] = ctx.get(dut.error)
        res["o_valid_after"] = [ctx.get(o.valid) for o in outs]
        res["pe"] = []
        for k in range(R * C):
            ctx.set(dut.pe_sel, k)
            res["pe"].append({c: ctx.get(getattr(dut.sel, c)) for c in PE_COUNTERS})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    vals = [[unpack(pe_layouts(cfg)["out"], v) for v in g] for g in got]
    return vals, res


def check_array(job, ref, vals, res, ideal):
    assert res["leftover"] == [0] * len(res["leftover"]), res["leftover"]
    assert res["o_valid_after"] == [0] * job.cols and res["active"] == 0 and res["error"] == 0
    out = job.assemble([[v["value"] for v in col] for col in vals])
    bad = np.argwhere(out != ref)
    assert not bad.size, (f"{bad.shape[0]} of {ref.size} outputs differ; first at {bad[0]}: "
                          f"{out[tuple(bad[0])]} != {ref[tuple(bad[0])]}")
    for j, col in enumerate(vals):
        ends = [v["end"] for v in col]
        want = []
        for t in job.grid[0][j]:
            want += [0] * (t.n_outputs() - 1) + [1]
        assert ends == want, f"o[{j}].end must close every tile"
    st = am.cycles(job)
    for k, got in enumerate(res["pe"]):
        model = st.pe[k // job.cols][k % job.cols]
        assert (got["busy_mac"], got["nnz"]) == (model.busy_mac, model.nnz), (k, got, model)
        if ideal:
            assert (got["cycles"], got["stall_in"], got["stall_out"]) == \
                (model.cycles, model.stall_in, 0), (k, got, model)
    if ideal:
        assert res["cycles"] == st.cycles, (res["cycles"], st.cycles)
    return st




@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:9])).replace(" ", ""))
def test_pe_array_rtl_layer(case):
    mode, K, S, p, zf, nm, dense, raw, mapping, src, sink, cin, cout, h, w = case
    seed = 700 + CASES.index(case)
    print(f"seed={seed} case={case}")
    job, ref = layers.random_array_layer(mode, cfg=CFG, kernel=K, stride=S, padding=p, zero_frac=zf,
                                     nm=nm, seed=seed, cin=cin, cout=cout, height=h, width=w,
                                     dense=dense, raw=raw, mapping=mapping)
    assert np.array_equal(job.assemble(am.execute(job)), ref)
    vals, res = run_array(job, src=src, sink=sink, seed=seed)
    st = check_array(job, ref, vals, res, ideal=(src == sink == "always"))
    print(f"array cycles RTL {res['cycles']} model {st.cycles}; tiles {len(job.grid[0][0])}; "
          f"utilisation {st.utilisation:.1%}")


def test_pe_array_interleaving_balances_uneven_channels():
    """Input channels of very different density: interleaved dealing spreads the non-zeros
    over the PE rows; in-order puts the dense channels on one PE row. Measured on the RTL:
    busy balance (min/max PE busy_mac) and total cycles; interleaved is no worse."""
    dens = [0.9, 0.8, 0.7, 0.6, 0.1, 0.05, 0.05, 0.0]
    out = {}
    for mapping in am.MAPPINGS:
        job, ref = layers.random_array_layer("fp", cfg=CFG, kernel=3, stride=1, padding=1, seed=11,
                                         cin=8, cout=4, height=6, width=6, mapping=mapping,
                                         channel_density=dens)
        vals, res = run_array(job, seed=11)
        check_array(job, ref, vals, res, ideal=True)
        busy = [p["busy_mac"] for p in res["pe"]]
        out[mapping] = (res["cycles"], min(busy) / max(busy))
        print(f"{mapping:12s} cycles {res['cycles']:6d}  PE busy_mac {busy}  "
              f"balance {min(busy) / max(busy):.2f}")
    assert out["interleaved"][0] <= out["in_order"][0]
    assert out["interleaved"][1] >= out["in_order"][1]


def test_pe_array_model_column_latency_constant():
    assert COLUMN_LATENCY == am.COLUMN_LATENCY


@pytest.mark.parametrize("kwargs,match", [
    ({"rows": 0}, "rows must be in"),
    ({"cols": 65}, "cols must be in"),
    ({"macs_per_pe": 0}, "macs_per_pe must be in"),
])
def test_pe_array_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PEArray(**{"rows": 2, "cols": 2, **kwargs})


def test_pe_array_mapping_rejects_bad_layers():
    with pytest.raises(ValueError, match="mapping must be one of"):
        layers.random_array_layer("fp", cfg=CFG, mapping="random")
    with pytest.raises(ValueError, match="kernel row"):
        layers.random_array_layer("fp", cfg=CFG, kernel=7, padding=3)


@pytest.mark.parametrize("mode", ["bp", "wg"])
def test_pe_array_fewer_operand_rows_than_pe_rows(mode):
    """A fully connected layer (kernel = input size, one output pixel) at batch 1 has only
    ``Cout = 4`` ``dy`` rows for 8 PE rows: the idle PE rows get one skip row each, the layer
    maps, the model equals the golden result, and the RTL equals the model (every counter)."""
    seed = 790 + ("bp", "wg").index(mode)
    print(f"seed={seed} mode={mode}")
    cfg = CFG.replace(pe_rows=8)
    job, ref = layers.random_array_layer(mode, cfg=cfg, kernel=5, padding=0, height=5, width=5,
                                     seed=seed)
    fed = [sum(r.n_taps for t in job.grid[i][0] for r in t.rows) for i in range(job.rows)]
    assert sum(1 for f in fed if f == 0) == 4, fed           # 4 of the 8 PE rows only skip
    assert np.array_equal(job.assemble(am.execute(job)), ref)
    vals, res = run_array(job, seed=seed)
    check_array(job, ref, vals, res, ideal=True)


# (batch, kernel, stride, padding, cin, cout, H, W, dense mode, zero fraction, act_buf_depth,
#  src, sink): WG layers whose per-column scratchpad image exceeds act_buf_depth
CHUNKED_WG_CASES = [
    (2, 3, 1, 1, 3, 8, 5, 6, False, 0.5, 32, "always", "always"),
    (1, 1, 2, 0, 5, 4, 4, 7, True, 0.0, 32, "always", "always"),
    (3, 5, 1, 2, 2, 3, 4, 4, False, 0.9, 32, "always", "always"),
    (3, 3, 2, 1, 4, 3, 7, 7, False, 0.5, 128, "always", "always"),
    (2, 3, 1, 0, 3, 2, 6, 5, False, 0.3, 64, "random", "random"),
    (3, 3, 2, 2, 2, 4, 5, 5, False, 0.5, 32, "bursty", "cycle"),
]


@pytest.mark.parametrize("case", CHUNKED_WG_CASES,
                         ids=lambda c: "b{}-k{}-s{}-p{}-d{}-{}".format(*c[:4], c[10], c[11]))
def test_pe_array_chunked_wg(case):
    """A WG phase whose scratchpad image (``x[:, c % cols == j]``) exceeds ``act_buf_depth``:
    the reference maps it as chunks of whole planes, each reloaded per tile after the chunk
    before it (``eoc``); the RTL array fed by the reference streams (the reloads are ``dense``
    sources like any other, offered from the first cycle: the PE holds them back) equals the
    golden result and, with ideal streams, every counter of the exact model."""
    B, K, S, p, cin, cout, h, w, dense, zf, depth, src, sink = case
    seed = 900 + CHUNKED_WG_CASES.index(case)
    print(f"seed={seed} case={case}")
    cfg = CFG.replace(act_buf_depth=depth)
    job, ref = layers.random_array_layer("wg", cfg=cfg, kernel=K, stride=S, padding=p,
                                         zero_frac=zf, seed=seed, batch=B, cin=cin, cout=cout,
                                         height=h, width=w, dense=dense)
    tiles = job.grid[0][0]
    image = B * -(-cin // cfg.pe_cols) * h * w
    assert image > depth and tiles[0].chunked                 # the case needs chunks
    assert all(c.size <= depth for c in tiles[0].chunks)
    assert np.array_equal(job.assemble(am.execute(job)), ref)
    vals, res = run_array(job, src=src, sink=sink, seed=seed)
    st = check_array(job, ref, vals, res, ideal=(src == sink == "always"))
    loads = sum(len(t.loads(k == 0)) for k, t in enumerate(tiles))
    print(f"chunks {len(tiles[0].chunks)} tiles {len(tiles)} loads/PE {loads}; array cycles "
          f"RTL {res['cycles']} model {st.cycles}")


# --------------------------------------------------------------------------------------------
# cocotb on the emitted Verilog (Icarus, Verilator): tests/hdl/cocotb_pe_array.py
# --------------------------------------------------------------------------------------------

# Each case runs the layer twice after a reset: always/always (every counter exact) and with
# idle inputs + back-pressured outputs (results, busy_mac, nnz exact). The write-back cases use
# operands in +-2000 so most outputs exercise rounding and a few saturate (full-range operands
# saturate nearly every output).
COCOTB_CASES = [
    dict(mode="fp", kernel=3, stride=1, padding=1, zero_frac=0.5, nm=[2, 4], raw=False,
         mapping="interleaved", cin=4, cout=5, height=6, width=6, value_range=[-2000, 2000],
         runs=[["always", "always"], ["random", "random"]]),
    dict(mode="bp", kernel=3, stride=2, padding=1, zero_frac=0.5, nm=None, raw=True,
         mapping="in_order", cin=5, cout=4, height=7, width=7,
         runs=[["always", "always"], ["bursty", "cycle"]]),
    dict(mode="wg", kernel=3, stride=1, padding=1, zero_frac=0.5, nm=None, raw=False,
         mapping="interleaved", cin=3, cout=4, height=6, width=6, value_range=[-2000, 2000],
         runs=[["always", "always"], ["cycle", "random"]]),
    # chunked WG: 3 samples x 3 channels per column x 8x8 = 576 words > act_buf_depth = 512,
    # 2 chunks of whole planes, reloaded per tile during the job
    dict(mode="wg", kernel=3, stride=2, padding=1, zero_frac=0.5, nm=None, raw=True,
         mapping="interleaved", batch=3, cin=6, cout=3, height=8, width=8,
         runs=[["always", "always"], ["random", "random"]]),
]


@pytest.mark.parametrize("case", COCOTB_CASES,
                         ids=lambda c: f"{c['mode']}-k{c['kernel']}-s{c['stride']}"
                                       f"{'-b%d' % c['batch'] if 'batch' in c else ''}")
def test_pe_array_cocotb(sim, cocotb_run, case):
    seed = 800 + COCOTB_CASES.index(case)
    print(f"seed={seed} sim={sim} case={case}")
    n = cocotb_run("pe_array", sim, "cocotb_pe_array", config=CFG,
                   params={"seed": seed, "config": CFG.to_dict(), **case},
                   testcase="pe_array_layer")
    assert n == 1
