"""Performance model (sim/perf.py): the statistical model against the EXACT array cycle model,
the exact backend against the RTL-tested layers, the workload tables, the sparsity sources and
the benchmark CLI (small, fast runs only).

Chain "model == RTL": tests/test_pe_array.py asserts RTL ``cycles`` == ``array_model.cycles``
on every layer of its ``CASES`` and tests/test_pe.py asserts RTL == ``pe_model.cycles`` on
every layer of its ``RTL_CASES`` (ideal streams; counters otherwise). Here the exact backend
of perf.py (``perf.exact_tensors_cycles``: ``array_model.map_array`` + ``array_model.cycles``,
a 1x1 array for the single-PE cases) reproduces those cycle counts exactly on the very same
tensors, so the exact backend equals the RTL on every RTL-tested layer (single-PE cases: the
1x1 array's PE counters equal the PE's; the array's ``cycles`` add the column's
``COLUMN_LATENCY`` = 3 registers, which tests/test_pe_array.py checks on the array RTL).

Statistical vs exact (tolerance): 2x2 and 1x1 arrays (tiny preset, 4 lanes, 64-word psum
banks, so every layer runs in 1..20 tiles), FP/BP/WG, dense / density 0.5 / 0.1 / 2:8 /
2:8 + 0.3: dense mode equal (to 1e-9); each sparse case within TOL = 10% of the exact mean over
3 seeds (the seed-to-seed sd of the exact cycles is up to 4%), the mean |error| over all sparse
cases within 4% (seed noise alone gives ~2%).
"""

import json
import math

import numpy as np
import pytest

from sparseforge.sim.testkit import layer_cases, layers
from sparseforge import bench
from sparseforge.gen.config import preset
from sparseforge.gen.mapper import array as am
from sparseforge.gen.mapper import pe as pm
from sparseforge.sim.perf import model as perf
from sparseforge.sim.perf import sparsity
from sparseforge.gen.network import BENCHMARKS, NetworkError, load_network, parse_network

ARRAY_2X2 = preset("tiny").replace(macs_per_pe=4, max_row_len=16, k_max=5, psum_buf_depth=64,
                                   act_buf_depth=4096)
ARRAYS = {"2x2": ARRAY_2X2, "1x1": ARRAY_2X2.replace(pe_rows=1, pe_cols=1)}
TOL, MEAN_TOL = 0.10, 0.04


def conv(cin, cout, k, s, p, hw):
    net = parse_network({"input": [cin, hw, hw], "layers": [
        {"kind": "conv", "name": f"c{cin}-{cout}-k{k}s{s}", "cout": cout, "kernel": k,
         "stride": s, "padding": p}]})
    return net.compute[0]


LAYERS = [conv(8, 8, 3, 1, 1, 12), conv(8, 8, 3, 2, 1, 12), conv(8, 6, 1, 1, 0, 10),
          conv(3, 8, 3, 1, 1, 8)]
CASES = [(1.0, None, True), (0.5, None, False), (0.1, None, False), (1.0, (2, 8), False),
         (0.3, (2, 8), False)]


@pytest.mark.parametrize("array", ARRAYS)
@pytest.mark.parametrize("phase", perf.PHASES)
def test_statistical_vs_exact_array_model(array, phase):
    cfg = ARRAYS[array]
    print(f"seeds 0,1,2; {array} array, phase {phase}")
    errs = []
    for layer in LAYERS:
        for d, nm, dense in CASES:
            if nm and (phase == "wg" or layer.cin % nm[1] or layer.cout % nm[1]):
                continue                  # WG taps are dense; N:M needs whole groups
            r = perf.validate_against_exact(layer, phase, cfg, operand_density=d, nm=nm,
                                            dense=dense)
            print(f"  {layer.name:13s} density {d} nm {nm} dense {dense}: model "
                  f"{r['model']:.0f} exact {r['exact']:.0f} (sd {r['exact_sd']:.0f}, "
                  f"{r['tiles']} tiles) {100 * r['rel_err']:+.2f}%")
            if dense:
                assert r["model"] == pytest.approx(r["exact"], rel=1e-9), r
            else:
                assert abs(r["rel_err"]) <= TOL, r
                errs.append(abs(r["rel_err"]))
    print(f"  mean |error| {100 * np.mean(errs):.2f}%")
    assert np.mean(errs) <= MEAN_TOL


CHUNKED_WG = [(conv(4, 8, 3, 1, 1, 8), 128, 2), (conv(8, 8, 3, 1, 1, 8), 64, 1),
              (conv(8, 8, 3, 2, 1, 12), 256, 2), (conv(8, 6, 1, 1, 0, 10), 128, 1),
              (conv(6, 4, 3, 1, 1, 8), 64, 3)]


def test_statistical_vs_exact_chunked_wg():
    """WG whose scratchpad image exceeds ``act_buf_depth`` (reloaded per tile and chunk): the
    statistical model counts the reloads; dense equals the exact model (= the RTL), sparse
    within TOL. Before, the model ignored them (up to -91 % on these layers)."""
    print("seeds 0,1,2; 2x2 array")
    errs = []
    for layer, abd, batch in CHUNKED_WG:
        cfg = ARRAY_2X2.replace(act_buf_depth=abd)
        ch = perf.wg_chunking(layer, cfg, batch)
        assert ch is not None and not ch["plane_split"]
        for d, dense in ((1.0, True), (0.5, False), (0.1, False)):
            r = perf.validate_against_exact(layer, "wg", cfg, operand_density=d, dense=dense,
                                            batch=batch)
            print(f"  {layer.name:13s} act_buf {abd} batch {batch} density {d}: model "
                  f"{r['model']:.0f} exact {r['exact']:.0f} {100 * r['rel_err']:+.2f}%")
            if dense:
                assert r["model"] == pytest.approx(r["exact"], rel=1e-9), r
            else:
                assert abs(r["rel_err"]) <= TOL, r
                errs.append(abs(r["rel_err"]))
        res = perf.phase_cycles(layer, "wg", cfg, batch=batch, dense=True)
        big = perf.phase_cycles(layer, "wg", cfg.replace(act_buf_depth=1 << 16), batch=batch,
                                dense=True)
        assert res.reload > 0 and big.reload == 0 and res.cycles > big.cycles
    print(f"  mean |error| {100 * np.mean(errs):.2f}%")
    assert np.mean(errs) <= MEAN_TOL


def test_wg_load_words_what_if():
    """What-if (issue 18 item 2): a wider scratchpad load shortens only the reloads."""
    layer, abd, batch = CHUNKED_WG[1]
    cfg = ARRAY_2X2.replace(act_buf_depth=abd)
    one = perf.phase_cycles(layer, "wg", cfg, batch=batch, dense=True)
    eight = perf.phase_cycles(layer, "wg", cfg, batch=batch, dense=True, wg_load_words=8)
    assert eight.reload < one.reload and one.cycles - eight.cycles == pytest.approx(
        one.reload - eight.reload, rel=0.05)
    assert perf.phase_cycles(layer, "fp", cfg, wg_load_words=8).cycles == \
        perf.phase_cycles(layer, "fp", cfg).cycles
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="wg_load_words"):
            perf.phase_cycles(layer, "wg", cfg, wg_load_words=bad)
    net = load_network("resnet18-cifar")
    with pytest.raises(ValueError, match="statistical"):
        perf.iteration(net, preset("vcu1525"), backend="exact", wg_load_words=8)
    a = perf.iteration(net, preset("vcu1525"), dense=True)
    b = perf.iteration(net, preset("vcu1525"), dense=True, wg_load_words=8)
    assert b.reload_total() < a.reload_total() and b.total() < a.total()


def test_top_level_mapper_floor():
    """``top_level``: the hardware mapper's read floor. An FC layer under 2:8 is scan-bound
    (one dense candidate per cycle: the RTL's fc1 FP took 2,121 cycles for 349 of array work;
    the floor model gives 2,078); dense conv rows cost more than their scan (unchanged), dense
    FC rows of length 1 do not; never below the array model."""
    cfg = preset("tiny")
    net = load_network("digits-cnn", batch=1)
    fc1 = net.compute_layer("fc1")
    kw = dict(operand_density=0.7, weight_density=0.25, nm=(2, 8))
    arr = perf.phase_cycles(fc1, "fp", cfg, **kw)
    top = perf.phase_cycles(fc1, "fp", cfg, top_level=True, **kw)
    # 128 rows per PE row, 16 candidates each (32 outputs over 2 columns)
    assert top.cycles >= 128 * 16 > 4 * arr.cycles
    for lay in net.compute:
        for ph in perf.PHASES:
            d = perf.phase_cycles(lay, ph, cfg, dense=True)
            dt = perf.phase_cycles(lay, ph, cfg, dense=True, top_level=True)
            if lay.kind == "conv":
                assert dt.cycles == pytest.approx(d.cycles), (lay.name, ph)
            else:
                assert dt.cycles >= d.cycles
            s = perf.phase_cycles(lay, ph, cfg, operand_density=0.3)
            assert perf.phase_cycles(lay, ph, cfg, operand_density=0.3,
                                     top_level=True).cycles >= s.cycles - 1e-6
    it = perf.iteration(net, cfg, nm=(2, 8), top_level=True)
    assert it.array_total() > perf.iteration(net, cfg, nm=(2, 8)).array_total()
    with pytest.raises(ValueError, match="statistical"):
        perf.iteration(net, cfg, backend="exact", top_level=True)


def test_memory_profiles():
    """The card memory behind the DMA: DDR4 on vcu1525 (bandwidth and latency from the
    stated assumptions), the simulation's slave elsewhere; a memory slower than the engine
    stretches the beats; the bench's iteration uses the preset's profile."""
    vcu = preset("vcu1525")
    ddr = perf.memory_profile(vcu)
    assert ddr is perf.MEMORY["vcu1525"] and perf.memory_profile(preset("ecp5")) is perf.SIM_MEMORY
    # 2400 MT/s x 8 B x 0.7 = 13.4 GB/s > 64 B x 125 MHz = 8 GB/s: latency-bound, full rate
    assert ddr.beats_per_cycle == 1.0 and ddr.read_latency == ddr.write_latency == 19
    fast = perf.ddr4_profile(core_mhz=250)          # 16 GB/s wanted: bandwidth-bound
    assert fast.beats_per_cycle == pytest.approx(13.44 / 16, abs=1e-4)
    assert fast.read_latency == 38 and "not measured" in fast.source
    full = perf.dma_transfer_cycles(10_000, False, vcu)
    slow = perf.dma_transfer_cycles(10_000, False, vcu, beats_per_cycle=0.5)
    assert slow - full == 313                       # 313 beats take 626 cycles
    with pytest.raises(ValueError, match="beats_per_cycle"):
        perf.MemoryProfile("x", beats_per_cycle=1.5)
    net = load_network("resnet18-cifar")
    it = perf.iteration(net, vcu, nm=(2, 8))
    sim = perf.iteration(net, vcu, nm=(2, 8), memory=perf.SIM_MEMORY)
    bw = perf.iteration(net, vcu, nm=(2, 8), memory=fast)
    assert sim.dma_total(exposed=False) < it.dma_total(exposed=False) < bw.dma_total(
        exposed=False)
    assert sim.array_total() == it.array_total() == bw.array_total()


def test_wg_chunking_flags_planes_larger_than_the_scratchpad():
    cfg = ARRAY_2X2.replace(act_buf_depth=64)
    assert perf.wg_chunking(conv(4, 8, 3, 1, 1, 4), cfg, 1) is None        # 2 x 16 words fit
    ch = perf.wg_chunking(conv(4, 8, 3, 1, 1, 6), cfg, 2)                  # 4 x 36 words
    assert ch == {"ppc": 1, "planes": 4, "plane_words": 36, "plane_split": False}
    ch = perf.wg_chunking(conv(4, 8, 3, 1, 1, 10), cfg, 1)                 # a 100-word plane
    assert ch["plane_split"] and ch["ppc"] == 1
    r = perf.phase_cycles(conv(4, 8, 3, 1, 1, 10), "wg", cfg, dense=True)
    assert r.reload > 0


def _capture(monkeypatch, module, names):
    """Record the arguments of the first call of ``module.<name>`` for each name."""
    got = {}
    for name in names:
        orig = getattr(module, name)

        def wrap(*a, _orig=orig, _name=name, **kw):
            got.setdefault("call", (_name, a, kw))
            return _orig(*a, **kw)
        monkeypatch.setattr(module, name, wrap)
    return got


@pytest.mark.parametrize("case", layer_cases.ARRAY_CASES, ids=lambda c: "-".join(map(str, c[:9])))
def test_exact_backend_equals_rtl_tested_array_layers(case, monkeypatch):
    mode, K, S, p, zf, nm, dense, raw, mapping, src, sink, cin, cout, h, w = case
    seed = 700 + layer_cases.ARRAY_CASES.index(case)                 # the seed test_pe_array uses
    got = _capture(monkeypatch, am, ["map_array"])
    job, _ = layers.random_array_layer(mode, cfg=layer_cases.ARRAY_CFG, kernel=K, stride=S, padding=p,
                                   zero_frac=zf, nm=nm, seed=seed, cin=cin, cout=cout,
                                   height=h, width=w, dense=dense, raw=raw, mapping=mapping)
    monkeypatch.undo()
    _, (m,), kw = got["call"]
    t = {"x": kw.get("x", np.zeros(kw.get("x_shape", (0,)))), "w": kw.get("w"),
         "dy": kw.get("dy"), "mask": kw.get("mask")}
    if mode == "wg":
        t["w"] = np.zeros(kw["w_shape"])
    st = perf.exact_tensors_cycles(m, layer_cases.ARRAY_CFG, stride=S, padding=p, dense=dense,
                                   mapping=mapping, **t)
    want = am.cycles(job)
    print(f"seed={seed} {case}: exact backend {st.cycles} array model {want.cycles}")
    assert st.cycles == want.cycles
    assert st.busy_mac == want.busy_mac


@pytest.mark.parametrize("case", layer_cases.PE_RTL_CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_exact_backend_equals_rtl_tested_pe_layers(case, monkeypatch):
    mode, K, S, p, zf, nm, dense, raw, src, sink, cin, cout, h, w = case
    seed = 100 + layer_cases.PE_RTL_CASES.index(case)             # the seed test_pe uses
    got = _capture(monkeypatch, pm, ["map_conv_fp", "map_conv_bp", "map_conv_wg"])
    job, _ = layers.random_layer(mode, cfg=layer_cases.PE_CFG, kernel=K, stride=S, padding=p, zero_frac=zf,
                             nm=nm, seed=seed, cin=cin, cout=cout, height=h, width=w,
                             dense=dense, raw=raw)
    monkeypatch.undo()
    name, a, kw = got["call"]
    if mode == "fp":
        t = dict(x=a[0], w=a[1], mask=kw.get("mask"))
    elif mode == "bp":
        t = dict(dy=a[0], w=a[1], x=np.zeros(a[2]), mask=kw.get("mask"))
    else:
        t = dict(x=a[0], dy=a[1], w=np.zeros(a[2]))
    one_pe = layer_cases.PE_CFG.replace(pe_rows=1, pe_cols=1)
    st = perf.exact_tensors_cycles(mode, one_pe, stride=S, padding=p, dense=dense, **t)
    want = pm.cycles(job)
    print(f"seed={seed} {case}: exact backend {st.cycles} PE model {want.cycles}")
    assert st.pe[0][0] == want                   # every counter of the one PE
    assert st.cycles == want.cycles + am.COLUMN_LATENCY  # + the column's sum/write-back regs


def test_exact_backend_runs_through_iteration():
    """The registered "exact" backend (random tensors of the requested densities) on a small
    network: FP/BP/WG cycles per layer from the array model, close to the statistical one."""
    net = parse_network({"name": "t", "input": [8, 8, 8], "layers": [
        {"name": "a", "kind": "conv", "cin": 8, "cout": 8, "kernel": 3, "stride": 1,
         "padding": 1, "relu": True},
        {"name": "b", "kind": "conv", "cin": 8, "cout": 8, "kernel": 3, "stride": 2,
         "padding": 1}]})
    kw = dict(fp_density={"b": 0.5}, dy_density={"a": 0.3, "b": 0.3}, nm=(2, 8))
    ex = perf.iteration(net, ARRAY_2X2, backend="exact", **kw)
    st = perf.iteration(net, ARRAY_2X2, **kw)
    print(f"exact {ex.total():.0f} statistical {st.total():.0f}")
    assert ex.layers[0].phases["bp"].skipped
    assert ex.total() == pytest.approx(st.total(), rel=TOL)
    with pytest.raises(ValueError, match="needs nm"):
        perf.exact_phase_cycles(net.compute[1], "fp", ARRAY_2X2, weight_density=0.25)


def test_phase_cycles_rejects_bad_arguments():
    cfg = preset("tiny")
    with pytest.raises(ValueError, match="phase"):
        perf.phase_cycles(LAYERS[0], "xx", cfg)
    with pytest.raises(ValueError, match="operand_density"):
        perf.phase_cycles(LAYERS[0], "fp", cfg, operand_density=1.5)
    with pytest.raises(ValueError, match="batch"):
        perf.phase_cycles(LAYERS[0], "fp", cfg, batch=0)
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        perf.phase_cycles(LAYERS[0], "fp", "tiny")


def test_monotone_in_density_and_bounded_by_ideal():
    cfg = preset("ecp5")
    lay = load_network("resnet18-cifar").compute_layer("layer2.1.conv1")
    for ph in perf.PHASES:
        dense = perf.phase_cycles(lay, ph, cfg, dense=True)
        prev = dense.cycles
        for d in (0.9, 0.5, 0.2, 0.05):
            r = perf.phase_cycles(lay, ph, cfg, operand_density=d)
            assert r.cycles <= prev * 1.0001
            assert 1.0 <= dense.cycles / r.cycles <= dense.valid_macs / r.useful_macs
            prev = r.cycles


def test_bdwp_work_fraction():
    assert perf.bdwp_work_fraction(2, 8) == pytest.approx(0.5)
    assert 1 / perf.bdwp_work_fraction(2, 4) == pytest.approx(1.5)


# -- benchmark networks (gen/networks, through gen.network) ---------------------------------

KNOWN_GMACS = {"vgg16-imagenet": 15.47, "resnet18-imagenet": 1.81, "resnet50-imagenet": 4.09}


def test_benchmark_networks_load_and_chain():
    nets = {n: load_network(n) for n in BENCHMARKS}
    for name, gmac in KNOWN_GMACS.items():        # published MAC counts (torchvision / papers)
        assert nets[name].dense_macs() / 1e9 == pytest.approx(gmac, abs=0.01)
    assert nets["alexnet-imagenet"].compute[0].ho == 55
    assert nets["resnet50-imagenet"].compute[-1].cin == 2048
    for net in nets.values():
        assert net.batch == 1
        assert net.compute[-1].out_shape[1:] == (1, 1)
        assert net.compute[0].input_kind == "image"
    r18 = nets["resnet18-imagenet"]
    first = r18.compute_layer("layer1.0.conv1")
    assert (first.src, r18.producer(first.src)) == ("conv1.pool", "conv1")
    assert first.input_kind == "relu+maxpool" and r18.compute[0].grad_kind == "bn"
    assert r18.compute_layer("layer4.1.conv2").pool_spec.is_global
    with pytest.raises(NetworkError, match=r"layer 0 'conv1' \(conv\): "):
        load_network("resnet18-imagenet", preset("ecp5"))   # the accelerator cannot run it


def test_benchmark_network_errors_name_the_layer():
    doc = {"name": "t", "input": [3, 8, 8], "layers": [
        {"name": "a", "kind": "conv", "cin": 3, "cout": 4, "kernel": 3, "padding": 1,
         "relu": True},
        {"name": "b", "kind": "conv", "cin": 5, "cout": 4, "kernel": 3, "padding": 1}]}
    with pytest.raises(NetworkError, match=r"layer 1 'b' \(conv\): expects cin=5"):
        parse_network(doc)
    doc["layers"][1]["cin"] = 4
    doc["layers"][1]["in"] = "zz"
    with pytest.raises(NetworkError, match=r"'b' \(conv\): input 'zz' is not"):
        parse_network(doc)
    doc["layers"][1]["in"] = "a"
    doc["layers"][1]["add"] = "input"
    with pytest.raises(NetworkError, match=r"'b' \(conv\): add 'input' is not an earlier"):
        parse_network(doc)
    del doc["layers"][1]["add"]
    doc["layers"].append({"name": "f", "kind": "fc", "cin": 100, "cout": 10})
    with pytest.raises(NetworkError, match=r"'f' \(fc\): expects cin=100 .* 256 features"):
        parse_network(doc)
    doc["layers"][2]["cin"] = 256
    doc["layers"][1]["bn"] = True
    parse_network(doc)                      # fine as a description
    with pytest.raises(NetworkError, match=r"'b' \(conv\): the accelerator runs a chain"):
        parse_network(doc, preset("tiny"))


# -- sparsity sources ------------------------------------------------------------------------

def test_sparsity_sources():
    net = load_network("alexnet-imagenet")
    fp, dy = sparsity.modelled(net, p=0.9, relu_zero=0.5)
    assert fp["conv1"] == 1.0 and fp["conv4"] == 0.5
    assert dy["fc8"] == 1.0
    assert 0 < dy["conv4"] < 0.5                 # pruning on top of the ReLU derivative
    stats = json.loads(sparsity.SNAPSHOT.read_text())
    assert stats["label"] == sparsity.MEASURED
    fp, dy = sparsity.measured(net, stats["variants"], "prune0.9")
    assert fp["conv1"] == 1.0 and all(0 < v <= 1 for v in dy.values())


# -- benchmark CLI (one small network, tiny preset) ---------------------------------------------

def test_bench_small_run(tmp_path):
    doc, text = bench.run(out=tmp_path, presets=("tiny",), networks=("alexnet-cifar",),
                          make_plots=True, progress=False,
                          stats_dir=tmp_path / "no-stats")          # -> the snapshot
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["schema"] == bench.SCHEMA and saved["schema_version"] == 1
    assert saved["meta"]["digits_stats"] == "digits_stats.json"
    assert saved["meta"]["memory"]["tiny"]["read_latency"] == perf.DMA_READ_LATENCY
    assert saved["results"][0]["data_plane"] == "dma" and "host_stream_note" in saved["meta"]
    (e,) = saved["results"]
    assert e["network"] == "alexnet-cifar" and e["preset"] == "tiny"
    assert 0 < e["dense_utilisation"] <= 1
    # tiny's 256-word scratchpad: alexnet-cifar's WG inputs are chunked and reloaded
    assert e["wg_chunked_layers"] and e["dense_reload_cycles"] > 0
    assert set(e["wg_plane_split_layers"]) <= set(e["wg_chunked_layers"])
    keys = {(s["key"], s["source"]) for s in e["scenarios"]}
    assert ("actgrad", sparsity.MEASURED) in keys and ("combined", sparsity.MODELLED) in keys
    for s in e["scenarios"]:
        # with every exposed cost (pruning and pre-generation at the RTL's rates) a sparse
        # scenario may be slower than dense; the array alone never is
        assert 0 < s["speedup"] <= s["ideal"] * 1.0001, s["key"]
        assert s["array_speedup"] >= 0.999 and s["speedup_if_hidden"] >= s["speedup"]
        if s.get("ideal_bdwp_formula"):
            assert s["speedup"] <= s["ideal_bdwp_formula"] * 1.0001
        for ph in ("fp", "bp", "wg"):
            assert s["phases"][ph]["speedup"] >= 0.999
        ph = s["phases"]
        assert {"dma", "prune", "pregen", "reload"} <= set(ph)
        assert math.isclose(ph["reload"], sum(ph[q]["reload"] for q in ("fp", "bp", "wg")))
        assert ph["fp"]["reload"] == ph["bp"]["reload"] == 0
        assert math.isclose(ph["pregen"], sum(ph[q]["pregen"] for q in ("fp", "bp", "wg")))
        assert (ph["pregen"] > 0) == bool(s["nm"]) and (ph["prune"] > 0) == (s["p"] is not None)
        assert ph["fp"]["prune"] == ph["fp"]["pregen"] == 0
        assert math.isclose(s["cycles"], s["array_cycles"] + s["dma_cycles"] + ph["prune"]
                            + ph["pregen"])
        assert math.isclose(s["speedup"], e["dense_cycles"] / s["cycles"])
    assert any(f.endswith(".png") for f in saved["plots"])
    assert all((tmp_path / f.split("/")[-1]).exists() for f in saved["plots"])
    assert "alexnet-cifar on tiny" in text
    assert {g["goal"] for g in saved["goals"]} >= {"dense MAC utilisation"}


def test_bench_set_what_if(tmp_path, capsys):
    """``--set data_plane=dma`` (a what-if) prices vcu1525's pruning and pre-generation as the
    data plane runs them (CMD_PRUNE, CMD_PREGEN beside the next WG): far below the host-stream
    rates; the presets are renamed, the overrides recorded; a bad field is refused."""
    args = ["--presets", "vcu1525", "--networks", "alexnet-cifar", "--no-plots",
            "--no-progress"]
    assert bench.main(args + ["-o", str(tmp_path / "hs")]) == 0
    assert bench.main(args + ["-o", str(tmp_path / "dp"), "--set", "data_plane=dma"]) == 0
    hs = json.loads((tmp_path / "hs" / "bench.json").read_text())
    dp = json.loads((tmp_path / "dp" / "bench.json").read_text())
    assert dp["meta"]["what_if_set"] == ["data_plane=dma"] and hs["meta"]["what_if_set"] == []
    assert dp["results"][0]["preset"] == "vcu1525-set"
    assert dp["meta"]["presets"]["vcu1525-set"]["data_plane"] == "dma"
    by = lambda d: {(s["key"], s["source"]): s for s in d["results"][0]["scenarios"]}  # noqa
    h, d = by(hs), by(dp)
    for k in h:
        if h[k]["phases"]["prune"] > 0:
            assert d[k]["phases"]["prune"] < h[k]["phases"]["prune"] / 5, k
        if h[k]["phases"]["pregen"] > 0:
            assert d[k]["phases"]["pregen"] < h[k]["phases"]["pregen"] / 5, k
        assert math.isclose(d[k]["array_cycles"], h[k]["array_cycles"])
    with pytest.raises(SystemExit):
        bench.main(args + ["--set", "no_such_field=1"])
    assert "--set" in capsys.readouterr().err


def test_bench_cli_errors(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--networks", "lenet"])
    assert "unknown network" in capsys.readouterr().err


# -- DMA cost (issue 16) -------------------------------------------------------------------------

def test_dma_cost_equals_hand_formula():
    """Beats, bursts and cycles of a few tensors worked out by hand from docs/dma.md
    (the engine runs ahead across bursts: load 3 + beats + 2, store 3 + beats + 4 per
    descriptor at the default latencies, whatever the bursts)."""
    tiny = preset("tiny")                          # 32-bit beats = 2 elements, 16-beat bursts
    assert (tiny.dma_width, tiny.data_width, tiny.dma_max_burst) == (32, 16, 16)
    # 1000 elements from 0: 500 beats, ceil(500 / 16) = 32 bursts
    assert perf.dma_bursts(1000, tiny) == (500, 32)
    assert perf.dma_transfer_cycles(1000, False, tiny) == 3 + 500 + 2
    assert perf.dma_transfer_cycles(1000, True, tiny) == 3 + 500 + 4
    # from byte 4000: 24 beats to the 4 KiB boundary (16 + 8), then 476 beats (30 bursts)
    assert perf.dma_bursts(1000, tiny, addr=4000) == (500, 2 + 30)
    assert perf.dma_transfer_cycles(1000, False, tiny, addr=4000) == 3 + 500 + 2
    # 101 elements: the last beat is partial -> 51 beats, 4 bursts
    assert perf.dma_transfer_cycles(101, False, tiny) == 3 + 51 + 2
    vcu = preset("vcu1525")                        # 512-bit beats = 32 elements, 64-beat bursts
    assert (vcu.dma_width, vcu.dma_max_burst) == (512, 64)
    # 10,000 elements: 313 beats; a 4 KiB page is 64 beats -> ceil(313 / 64) = 5 bursts
    assert perf.dma_bursts(10_000, vcu) == (313, 5)
    assert perf.dma_transfer_cycles(10_000, True, vcu, write_latency=30) == 3 + 313 + 32
    assert perf.dma_transfer_cycles(10_000, False, vcu, read_latency=40) == 3 + 313 + 41
    assert perf.dma_transfer_cycles(0, False, vcu) == 0


def test_phase_dma_tensors_and_buffers():
    """A conv layer's phases move x, w, (mask), y / dy, w, (mask), dx / x, dy, dW, each in
    descriptors of at most its buffer; the sums are the per-tensor formula's."""
    net = parse_network({"name": "t", "input": [4, 8, 8], "layers": [
        {"name": "a", "kind": "conv", "cin": 4, "cout": 16, "kernel": 3, "stride": 1,
         "padding": 1}]})
    lay = net.compute[0]                           # x 4*8*8, y 16*8*8, w 16*4*9 per image
    cfg = preset("tiny").replace(act_mem_elems=512, out_mem_elems=1024)
    x, y, w = 2 * 256, 2 * 1024, 576               # batch 2
    fp = perf.phase_dma(lay, "fp", cfg, batch=2, masked=True)
    got = {t[0]: (t[2], t[3], t[4]) for t in fp.tensors}
    # mask: packed, one bit per weight as the data plane loads it (576 bits = 36 16-bit
    # elements, 18 beats); y: 2048 > 1024 -> 2 descriptors
    m = -(-w // cfg.data_width)
    assert m == 36
    assert got == {"x": (x, x // 2, 1), "w": (w, w // 2, 1), "mask": (m, m // 2, 1),
                   "y": (y, y // 2, 2)}
    t = perf.dma_transfer_cycles
    assert fp.load == t(x, False, cfg) + t(w, False, cfg) + t(m, False, cfg)
    # the second y descriptor starts 2048 bytes on (same 4 KiB residue rule as the engine)
    assert fp.store == t(1024, True, cfg) + t(1024, True, cfg, addr=2048)
    bp = perf.phase_dma(lay, "bp", cfg, batch=2)
    assert [(n, e) for n, _, e, *_ in bp.tensors] == [("dy", y), ("w", w), ("mask", m),
                                                       ("dx", x)]
    # a mask larger than its packed MASK buffer (ceil(wgt_mem_elems / 16) elements) goes in
    # buffer-sized descriptors, like w in wgt_mem_elems ones
    small = cfg.replace(wgt_mem_elems=256)
    got = {t[0]: (t[2], t[4]) for t in perf.phase_dma(lay, "fp", small, batch=2).tensors}
    assert got["w"] == (w, 3) and got["mask"] == (m, 3)    # 576 / 256, 36 / 16
    wg = perf.phase_dma(lay, "wg", cfg, batch=2)
    assert [(n, e, s) for n, _, e, _, _, _, s in wg.tensors] == [
        ("x", x, False), ("dy", y, False), ("dW", w, True)]
    assert wg.cycles == t(x, False, cfg) + t(y, False, cfg) + t(w, True, cfg)


def test_prune_pregen_costs():
    """The exposed costs of pruning and pre-generation (perf.prune_cycles / pregen_cycles,
    the RTL's top-level rates) land where they run: pruning before each pruned layer's BP
    (the first layer: its WG), pre-generation after each BDWP layer's WG; dense pays none;
    hidden (the what-if) they vanish."""
    cfg = preset("ecp5")
    net = load_network("digits-cnn", batch=1)
    assert perf.prune_cycles(1024) == 3.0 * 1024 + 28 and perf.prune_cycles(0) == 0
    # a core with the data plane prunes on chip (CMD_PRUNE, hdl/dp_prune.py): the gradient's
    # load (which sums |g| as it writes GRAD) and one pass at a word per cycle; the pruned
    # tensor stays in GRAD for BP and WG (no store)
    from sparseforge.hdl.dp_prune import prune_job_cycles
    epw = cfg.dma_width // cfg.data_width
    assert cfg.data_plane == "dma" and prune_job_cycles(1024, epw, 16) == 1024 + 12
    assert prune_job_cycles(1024, epw, 16, summed=True) == 512 + 11
    assert perf.prune_cycles(1024, cfg) == (512 + 11 + perf.dma_transfer_cycles(1024, False, cfg))
    assert perf.prune_cycles(1024, cfg) < perf.prune_cycles(1024) / 1.4
    assert perf.prune_cycles(1024, preset("vcu1525")) == perf.prune_cycles(1024)   # host-stream
    assert perf.pregen_cycles(1152, 8) == 11.1 * 288 + 30
    # on chip (CMD_PREGEN): 2 cycles per group with 4 read lanes for M = 8, the weight's load
    # and both masks' store; a layer whose Cin*Kh*Kw is below dma_width stays on the stream
    assert perf.pregen_cycles(1152, 8, cfg) == (288 * 2 + perf.PREGEN_DP_OVERHEAD
                                                + perf.dma_transfer_cycles(1152, False, cfg)
                                                + perf.dma_transfer_cycles(144, True, cfg))
    assert perf.pregen_cycles(1152, 8, cfg, cin_kk=8) == perf.pregen_cycles(1152, 8)
    dens = {lay.name: 0.5 for lay in net.compute}
    it = perf.iteration(net, cfg, nm=(2, 8), fp_density=dens, dy_density=dens)
    by = {lay.name: lay for lay in it.layers}
    for lay in net.compute:
        first = "bp" if lay.id > 0 else "wg"
        want = perf.prune_cycles(lay.cout * lay.ho * lay.wo, cfg) if lay.prune else 0.0
        assert by[lay.name].phases[first].prune_exposed == want, lay.name
        pg = by[lay.name].phases["wg"].pregen_exposed
        assert (pg > 0) == perf.bdwp_applies(lay, 8), lay.name
    dense = perf.iteration(net, cfg, dense=True)
    assert dense.prune_total() == dense.pregen_total() == 0
    hid = perf.iteration(net, cfg, nm=(2, 8), fp_density=dens, dy_density=dens,
                         hide_prune_pregen=True)
    assert hid.prune_total() == hid.pregen_total() == 0
    assert math.isclose(it.total() - hid.total(), it.prune_total() + it.pregen_total())


def test_dma_exposure_rule():
    """exposed = first phase's loads + max(0, load_k + store_{k-1} - compute_{k-1}) for the
    later phases + the last store (docs/benchmarks.md)."""
    ps = [perf.PhaseResult(cycles=c, valid_macs=0, useful_macs=0, dma_load=lo, dma_store=st)
          for c, lo, st in [(100, 30, 20), (10, 50, 5), (200, 40, 60)]]
    total = perf.expose_dma(ps)
    assert [p.dma_exposed for p in ps] == [30, max(0, 50 + 20 - 100), max(0, 40 + 5 - 10) + 60]
    assert total == 30 + 0 + 95


def test_iteration_total_includes_exposed_dma():
    cfg = preset("ecp5")
    net = load_network("digits-cnn")
    it = perf.iteration(net, cfg, nm=(2, 8))
    dma = it.dma_total()
    pregen = it.pregen_total()
    assert dma > 0 and pregen > 0 and it.prune_total() == 0      # 2:8 alone prunes nothing
    assert math.isclose(it.total(), it.array_total() + dma + pregen)
    assert it.total(dma=False) == it.array_total()
    assert it.dma_total(exposed=False) >= dma
    assert math.isclose(it.total("fp"), it.array_total("fp") + it.dma_total("fp"))
    # the first phase exposes its loads; every phase carries its whole DMA cost
    first = it.layers[0].phases["fp"]
    assert first.dma_exposed >= first.dma_load > 0
    for lay in it.layers:
        for ph, p in lay.phases.items():
            if not p.skipped:
                assert p.dma_cycles == p.dma_load + p.dma_store > 0
    # a larger read latency never hides more
    slow = perf.iteration(net, cfg, nm=(2, 8), read_latency=40)
    assert slow.dma_total() > dma and slow.array_total() == it.array_total()


def test_weights_on_chip_when_they_fit():
    """A data-plane core whose WGT / MASK buffers hold the network's weights and both masks
    (``dataplane.plan_weight_homes``: tiny and the digits CNN, 9,736 weights in 16,384) keeps
    them there, as the e2e step does: no ``w`` / ``mask`` load, no ``dW`` store, no
    pre-generation transfers; ``ecp5`` (8,192) moves them every phase."""
    from sparseforge.hdl.dataplane import plan_weight_homes
    net = load_network("digits-cnn", batch=1)
    shapes = {lay.name: (lay.cout, lay.cin, lay.kh, lay.kw) for lay in net.compute}
    assert plan_weight_homes(preset("tiny"), shapes) is not None
    assert plan_weight_homes(preset("ecp5"), shapes) is None
    fc1 = net.compute_layer("fc1")
    cfg = preset("tiny")
    names = {t[0] for t in perf.phase_dma(fc1, "fp", cfg, weights_on_chip=True).tensors}
    assert names == {"x", "y"}
    assert {t[0] for t in perf.phase_dma(fc1, "wg", cfg, weights_on_chip=True).tensors} == \
        {"x", "dy"}
    busy, dma = perf.pregen_dp_split(8192, 8, cfg, cin_kk=256, weights_on_chip=True)
    assert dma == 0 and busy == 2 * 8192 // 8 + perf.PREGEN_DP_OVERHEAD    # 8 lanes: 1/group
    # the iteration uses it on tiny, not on ecp5; on tiny the step also runs the stages on
    # chip (CMD_STAGE): fc1's FP loads nothing (its input is the forward stage's), only the
    # first layer's input is loaded and the last one's logits stored, and the stages' cycles
    # are charged (perf.stage_costs)
    on = perf.iteration(net, cfg, nm=(2, 8))
    off = perf.iteration(net, preset("ecp5"), nm=(2, 8))
    fp_on = [lr for lr in on.layers if lr.name == "fc1"][0].phases["fp"]
    fp_off = [lr for lr in off.layers if lr.name == "fc1"][0].phases["fp"]
    assert fp_on.dma_load == perf.phase_dma(fc1, "fp", cfg, weights_on_chip=True,
                                            stages_on_chip=True).load == 0
    assert fp_off.dma_load == perf.phase_dma(fc1, "fp", preset("ecp5")).load
    assert fp_on.dma_load < perf.phase_dma(fc1, "fp", cfg).load
    assert fp_on.stage_exposed == perf.stage_costs(fc1, net.compute_layer("fc2"), cfg)[0] > 0
    assert on.stage_total() > 0 and off.stage_total() == 0
    loads = {lr.name: lr.phases["fp"].dma_load for lr in on.layers}
    assert loads["conv1"] > 0 and all(v == 0 for k, v in loads.items() if k != "conv1")
    last = on.layers[-1].phases["fp"]
    assert last.dma_store > 0 and all(lr.phases["fp"].dma_store == 0 for lr in on.layers[:-1])


def test_bwd_stages_beside_follow_the_buffers():
    """``perf.bwd_stages_beside``: on ``tiny`` (GRAD 4096, OUT 16384) every backward stage of
    the digits CNN fits beside the next layer's WG job; with GRAD 2048 / OUT 8192 only fc1's
    (conv1's and conv2's gradients do not fit GRAD together, fc1's dW fills OUT); at a larger
    batch fewer."""
    tiny = preset("tiny")
    net = load_network("digits-cnn", tiny, batch=1)
    names = [lay.name for lay in net.compute]
    assert sorted(names[i] for i in perf.bwd_stages_beside(net, tiny)) == \
        ["conv1", "conv2", "fc1"]
    small = tiny.replace(grad_mem_elems=2048, out_mem_elems=8192)
    assert [names[i] for i in perf.bwd_stages_beside(net, small)] == ["fc1"]
    # a larger batch fills the buffers again: at batch 2 conv1's gradient no longer fits
    # next to conv2's, at batch 4 only fc1's stage fits
    assert [names[i] for i in sorted(perf.bwd_stages_beside(net, tiny, batch=2))] == \
        ["conv2", "fc1"]
    assert [names[i] for i in perf.bwd_stages_beside(net, tiny, batch=4)] == ["fc1"]


def test_prune_beside_the_wg_in_the_model():
    """The e2e step on ``tiny`` runs a layer's pruning right after its backward stage beside
    the next WG job: the model exposes only what outlasts that job (nothing on the digits CNN);
    with GRAD 2048 / OUT 8192 the conv stages run alone and their pruning is exposed whole."""
    tiny = preset("tiny")
    net = load_network("digits-cnn", tiny, batch=1)
    kw = dict(nm=(2, 8), prune=0.9)

    def exposed(cfg):
        it = perf.iteration(net, cfg, **kw)
        return {lr.name: lr.phases["bp" if lr.name != "conv1" else "wg"].prune_exposed
                for lr in it.layers}

    got = exposed(tiny)
    assert got["conv1"] == got["conv2"] == 0.0
    small = exposed(tiny.replace(grad_mem_elems=2048, out_mem_elems=8192))
    assert small["conv1"] == perf.prune_cycles(2048, tiny, loaded=False)
    assert small["conv2"] == perf.prune_cycles(1024, tiny, loaded=False)
