"""Statistical performance model (sim/perf.py) against the EXACT per-PE cycle model, the
workload tables, the sparsity sources and the benchmark CLI (small, fast runs only).

Tolerance: the statistical model predicts the exact per-PE model's cycles (averaged over 3
random operand seeds) within 5% on every case below; dense mode is exact (equality).
"""

import json
import math

import pytest

from sparseforge.gen import bench
from sparseforge.gen.config import preset
from sparseforge.sim import perf, sparsity
from sparseforge.sim import workloads as W

ONE_PE = preset("tiny").replace(pe_rows=1, pe_cols=1, macs_per_pe=4, psum_buf_depth=1 << 16,
                                act_buf_depth=1 << 16)
TOL = 0.05


def conv(cin, cout, k, s, p, hw):
    return W.Layer(name=f"c{cin}-{cout}-k{k}s{s}", type="conv", cin=cin, cout=cout, kh=k, kw=k,
                   stride=s, padding=p, h=hw, w=hw)


LAYERS = [conv(8, 8, 3, 1, 1, 16), conv(16, 16, 3, 2, 1, 12), conv(8, 16, 1, 1, 0, 10)]
CASES = [(1.0, None, True), (0.5, None, False), (0.1, None, False), (1.0, (2, 8), False),
         (0.1, (2, 8), False)]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: l.name)
@pytest.mark.parametrize("phase", perf.PHASES)
def test_statistical_vs_exact_pe_model(layer, phase):
    print(f"seeds 0,1,2; layer {layer.name}, phase {phase}")
    for d, nm, dense in CASES:
        if phase == "wg" and nm:
            continue                      # WG taps are dense: no weight variant
        r = perf.validate_against_exact(layer, phase, ONE_PE, operand_density=d, nm=nm,
                                        dense=dense)
        print(f"  density {d} nm {nm} dense {dense}: model {r['model']:.0f} exact "
              f"{r['exact']:.0f} (sd {r['exact_sd']:.0f}) {100 * r['rel_err']:+.2f}%")
        if dense:
            assert r["model"] == r["exact"]
        else:
            assert abs(r["rel_err"]) <= TOL, r


def test_validate_needs_one_pe():
    with pytest.raises(ValueError, match="1x1 array"):
        perf.validate_against_exact(LAYERS[0], "fp", preset("tiny"), operand_density=0.5)
    with pytest.raises(ValueError, match="tiles"):
        perf.validate_against_exact(LAYERS[0], "fp", ONE_PE.replace(psum_buf_depth=64),
                                    operand_density=0.5)


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
    lay = W.load("resnet18-cifar").layer("layer2.1.conv1")
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


# -- workloads -------------------------------------------------------------------------------

KNOWN_GMACS = {"vgg16-imagenet": 15.47, "resnet18-imagenet": 1.81, "resnet50-imagenet": 4.09}


def test_workloads_load_and_chain():
    nets = W.load_all()
    assert set(nets) == set(W.NETWORKS)
    for name, gmac in KNOWN_GMACS.items():        # published MAC counts (torchvision / papers)
        assert nets[name].dense_macs() / 1e9 == pytest.approx(gmac, abs=0.01)
    assert nets["alexnet-imagenet"].layers[0].ho == 55
    assert nets["resnet50-imagenet"].layers[-1].cin == 2048
    for net in nets.values():
        assert net.layers[-1].out_shape[1:] == (1, 1)
        assert net.layers[0].input_kind == "image"


def test_workload_errors_name_the_layer():
    doc = {"name": "t", "input": [3, 8, 8], "layers": [
        {"name": "a", "type": "conv", "cin": 3, "cout": 4, "kh": 3, "kw": 3, "stride": 1,
         "padding": 1, "h": 8, "w": 8, "relu": True},
        {"name": "b", "type": "conv", "cin": 5, "cout": 4, "kh": 3, "kw": 3, "stride": 1,
         "padding": 1, "h": 8, "w": 8}]}
    with pytest.raises(W.WorkloadError, match=r"layer 1 \(b\).*does not match"):
        W.parse(doc)
    doc["layers"][1]["cin"] = 4
    doc["layers"][1]["in"] = "zz"
    with pytest.raises(W.WorkloadError, match=r"\(b\).*'zz'"):
        W.parse(doc)
    del doc["layers"][1]["in"]
    doc["layers"].append({"name": "f", "type": "fc", "cin": 100, "cout": 10, "kh": 1, "kw": 1,
                          "stride": 1, "padding": 0, "h": 1, "w": 1})
    with pytest.raises(W.WorkloadError, match=r"\(f\).*flattens to 4x8x8 = 256"):
        W.parse(doc)


# -- sparsity sources ------------------------------------------------------------------------

def test_sparsity_sources():
    net = W.load("alexnet-imagenet")
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
    (e,) = saved["results"]
    assert e["network"] == "alexnet-cifar" and e["preset"] == "tiny"
    assert 0 < e["dense_utilisation"] <= 1
    keys = {(s["key"], s["source"]) for s in e["scenarios"]}
    assert ("actgrad", sparsity.MEASURED) in keys and ("combined", sparsity.MODELLED) in keys
    for s in e["scenarios"]:
        assert 1.0 <= s["speedup"] <= s["ideal"] * 1.0001, s["key"]
        if s.get("ideal_bdwp_formula"):
            assert s["speedup"] <= s["ideal_bdwp_formula"] * 1.0001
        for ph in ("fp", "bp", "wg"):
            assert s["phases"][ph]["speedup"] >= 0.999
        assert math.isclose(s["speedup"], e["dense_cycles"] / s["cycles"])
    assert any(f.endswith(".png") for f in saved["plots"])
    assert all((tmp_path / f.split("/")[-1]).exists() for f in saved["plots"])
    assert "alexnet-cifar on tiny" in text
    assert {g["goal"] for g in saved["goals"]} >= {"dense MAC utilisation"}


def test_bench_cli_errors(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--networks", "lenet"])
    assert "unknown network" in capsys.readouterr().err
