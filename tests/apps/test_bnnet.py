"""The training study's residual network with batch norm (issue 18, item 4:
``sparseforge.study.bnnet``) and the bench's ``"measured, BN net"`` source built on it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from sparseforge import bench
from sparseforge.gen.network import load_network
from sparseforge.sim.perf import sparsity
from sparseforge.study import bnnet
from sparseforge.study import cli as train_cli
from sparseforge.study.train import TrainConfig, _softmax_xent, parse_variant

SEED = 20261205


@pytest.fixture(scope="module")
def data():
    from sparseforge.study.train import load_digits_split
    return load_digits_split()


@pytest.fixture(scope="module")
def small_doc(data):
    return bnnet.train_run("prune0.9", 0, TrainConfig(epochs=1, batch_size=32, train_subset=64,
                                                      warmup_epochs=0), data=data)


def test_network_is_the_description():
    net = load_network(bnnet.NETWORK_NAME)
    m = bnnet.BNResNet(np.random.default_rng(0))
    assert [lay.name for lay in m.layers] == [c.name for c in net.compute]
    by = {c.name: c for c in net.compute}
    assert by["block1.conv2"].add == "pool1" and by["block2.conv2"].add == "block2.down"
    assert all(c.bn for c in net.compute if c.kind == "conv") and not by["fc"].bn
    assert [c.name for c in net.compute if c.bdwp] == [
        "block1.conv1", "block1.conv2", "block2.down", "block2.conv1", "block2.conv2"]
    assert {c.input_kind for c in net.compute} == {"image", "relu+maxpool", "relu",
                                                    "relu+avgpool"}


def test_backward_matches_finite_differences():
    """Every parameter kind of every layer (conv / FC weights, BN gamma and beta, the FC bias):
    the analytic gradient (BN batch statistics, the residual split and sum, max and global
    average pools) equals a central difference of the loss."""
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    m = bnnet.BNResNet(rng)
    x, y = rng.random((5, 1, 16, 16)), rng.integers(0, 10, 5)
    v = parse_variant("dense")
    masks = m.masks(v)

    def loss():
        return _softmax_xent(m.forward(x, masks)[0], y)[0]

    logits, cache = m.forward(x, masks)
    _, d = _softmax_xent(logits, y)
    recs = m.backward(cache, d, masks, v, np.random.default_rng(0))
    checked = 0
    for i, lay in enumerate(m.layers):
        for kind, key in (("w", "dw"), ("gamma", "dgamma"), ("beta", "dbeta"), ("b", "db")):
            if recs[i].get(key) is None:
                continue
            arr = getattr(m, kind)[i]
            for _ in range(2):
                idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
                old = arr[idx]
                arr[idx] = old + 1e-5
                lp = loss()
                arr[idx] = old - 1e-5
                lm = loss()
                arr[idx] = old
                num = (lp - lm) / 2e-5
                assert recs[i][key][idx] == pytest.approx(num, rel=1e-5, abs=1e-9), (
                    lay.name, kind, idx)
                checked += 1
    assert checked == 2 * (len(m.layers) * 3 - 1)        # conv: w, gamma, beta; fc: w, b


def test_pruning_and_masks_in_the_backward_pass():
    """BN makes dY dense; with pruning every conv layer's dY is pruned (FC not), by the golden
    rule; BDWP masks the BDWP layers' FP and BP weights."""
    rng = np.random.default_rng(SEED + 1)
    m = bnnet.BNResNet(rng)
    x, y = rng.random((8, 1, 16, 16)), rng.integers(0, 10, 8)
    v = parse_variant("bdwp2-8_prune0.9")
    masks = m.masks(v)
    assert [mk is not None for mk in masks] == [lay.bdwp for lay in m.layers]
    for mk in masks:
        if mk is not None:
            assert mk[0].mean() == pytest.approx(0.25) and mk[1].mean() == pytest.approx(0.25)
    logits, cache = m.forward(x, masks)
    _, d = _softmax_xent(logits, y)
    recs = m.backward(cache, d, masks, v, np.random.default_rng(3))
    for lay, r in zip(m.layers, recs):
        before = np.count_nonzero(r["dy_before"]) / r["dy_before"].size
        after = np.count_nonzero(r["dy"]) / r["dy"].size
        if lay.kind == "conv":
            assert before > 0.99, lay.name                     # BN backward: dense
            assert r["tau"] > 0 and after < 0.6, (lay.name, after)
            keep = np.abs(r["dy_before"]) >= r["tau"]
            assert np.array_equal(r["dy"][keep], r["dy_before"][keep])
            small = r["dy"][~keep]
            assert np.all((small == 0) | (np.abs(np.abs(small) - r["tau"]) < 1e-12))
        else:
            assert r["tau"] == 0 and np.array_equal(r["dy"], r["dy_before"])


def test_train_run_statistics_and_determinism(data):
    cfg = TrainConfig(epochs=2, batch_size=32, train_subset=256, warmup_epochs=0)
    a = bnnet.train_run("bdwp2-8_prune0.9", 1, cfg, data=data)
    b = bnnet.train_run("bdwp2-8_prune0.9", 1, cfg, data=data)
    for doc in (a, b):
        doc["meta"]["seconds"] = 0
        doc["history"]["epoch_seconds"] = []
    assert a == b                                       # fixed seeds: the same run
    bnnet.validate(a)
    assert a["meta"]["batches_sampled"] == 256 // 32
    L = {lay["name"]: lay for lay in a["layers"]}
    assert L["conv1"]["fp_density"] == pytest.approx(
        np.count_nonzero(data[0][:256]) / data[0][:256].size, abs=0.05)
    # the tensors chain: a layer's FP operand is its producer's output
    for lay in a["layers"][1:]:
        assert lay["fp_density"] == L[lay["producer"]]["out_density"], lay["name"]
    assert L["block2.down"]["relu_density"] is None and L["block2.down"]["out_density"] == 1.0
    assert L["block2.conv1"]["producer_add"] and not L["block1.conv2"]["producer_add"]
    for name in ("conv1", "block1.conv1", "block2.conv2"):
        assert L[name]["pruned"] and L[name]["dy_density_before"] > 0.99
        assert L[name]["dy_density_after"] < 0.6
    assert not L["fc"]["pruned"] and L["fc"]["dy_density_after"] == 1.0


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d.update(schema="x"), "schema must be"),
    (lambda d: d["layers"][0].update(fp_density=1.5), "layers[0].fp_density"),
    (lambda d: d["layers"][1].update(producer_add="no"), "layers[1].producer_add"),
    (lambda d: d["accuracy"].update(test_final=None), "accuracy.test_final"),
    (lambda d: d.update(layers=[]), "non-empty"),
])
def test_validate_rejects(mutate, msg, small_doc):
    doc = copy.deepcopy(small_doc)
    bnnet.validate(doc)
    mutate(doc)
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        bnnet.validate(doc, source="t")


def test_train_run_rejects():
    with pytest.raises(ValueError, match="SR-STE"):
        bnnet.train_run("bdwp2-8_srste", 0)
    with pytest.raises(ValueError, match="seed"):
        bnnet.train_run("dense", -1)


# -- the bench source --------------------------------------------------------------------------

def test_snapshot_holds_the_bench_variants():
    snap = json.loads(sparsity.BN_SNAPSHOT.read_text())
    assert snap["label"] == sparsity.MEASURED_BN
    assert set(sparsity.BN_VARIANTS) <= set(snap["variants"])
    for v in snap["variants"].values():
        assert v["seeds"] >= 3 and 0.9 < v["accuracy"] <= 1.0
    summary, origin = sparsity.load_bn_stats("does-not-exist")
    assert origin == "bn_stats.json" and summary == snap["variants"]


@pytest.mark.parametrize("name", ["resnet18-imagenet", "resnet50-imagenet", "resnet18-cifar"])
def test_measured_bn_transfer(name):
    """Each ResNet tensor gets the BN net's figure of its class (sparsity.measured_bn)."""
    stats = sparsity.load_bn_stats("does-not-exist")[0]
    net = load_network(name)
    fp, dy = sparsity.measured_bn(net, stats, "prune0.9")
    L = list(stats["prune0.9"]["layers"].values())

    def mean(xs):
        return sum(xs) / len(xs)

    block_out = mean([v["fp_density"] for v in L if v["input_kind"] == "relu"
                      and v["producer_add"]])
    in_block = mean([v["fp_density"] for v in L if v["input_kind"] == "relu"
                     and not v["producer_add"]])
    stem = stats["prune0.9"]["layers"]["conv1"]
    body = mean([v["dy_density_after"] for v in L if v["type"] == "conv" and v is not stem])
    for i, lay in enumerate(net.compute):
        if lay.input_kind == "image":
            assert fp[lay.name] == 1.0
        elif lay.input_kind == "relu":
            prod = net.compute_layer(net.producer(lay.src))
            assert fp[lay.name] == (block_out if prod.add else in_block), lay.name
        assert 0 < fp[lay.name] <= 1 and 0 < dy[lay.name] <= 1
        if lay.kind == "fc":
            assert dy[lay.name] == 1.0
        elif i > 0:
            assert dy[lay.name] == body
    assert in_block < block_out                        # the add fills in the ReLU zeros
    assert dy[net.compute[0].name] == stem["dy_density_after"] < body


def test_measured_bn_refuses_networks_without_bn():
    stats = sparsity.load_bn_stats("does-not-exist")[0]
    with pytest.raises(ValueError, match="batch norm"):
        sparsity.measured_bn(load_network("vgg16-cifar"), stats, "prune0.9")
    with pytest.raises(ValueError, match="variant"):
        sparsity.measured_bn(load_network("resnet18-cifar"), stats, "prune0.5")


def test_bench_bn_source_only_on_bn_networks(tmp_path):
    doc, text = bench.run(out=tmp_path, presets=("tiny",), networks=("alexnet-cifar",
                                                                        "resnet18-cifar"),
                          make_plots=True, progress=False, stats_dir=tmp_path / "none",
                          bn_stats_dir=tmp_path / "none")
    assert doc["meta"]["bn_stats"] == "bn_stats.json"
    by = {e["network"]: {(s["key"], s["source"]) for s in e["scenarios"]}
          for e in doc["results"]}
    assert ("actgrad", sparsity.MEASURED_BN) in by["resnet18-cifar"]
    assert ("combined", sparsity.MEASURED_BN) in by["resnet18-cifar"]
    assert not any(src == sparsity.MEASURED_BN for _, src in by["alexnet-cifar"])
    goal = [g for g in doc["goals"] if g["network"] == "resnet18-cifar"
            and g["goal"] == f"act+grad speedup ({sparsity.MEASURED_BN})"]
    assert len(goal) == 1 and goal[0]["ideal"] > 1 and isinstance(goal[0]["attainable"], bool)
    assert "ideal" in text and sparsity.MEASURED_BN in text
    # --p without runs at that rate leaves the measured sources out instead of failing
    doc, _ = bench.run(out=tmp_path / "p5", presets=("tiny",), networks=("resnet18-cifar",),
                       make_plots=False, progress=False, p=0.5, stats_dir=tmp_path / "none",
                       bn_stats_dir=tmp_path / "none")
    assert not any(s["source"] == sparsity.MEASURED_BN for s in doc["results"][0]["scenarios"])


def test_cli_trains_the_bn_net_and_the_bench_reads_it(tmp_path, capsys):
    out = tmp_path / "bn"
    assert train_cli.main(["--net", "digits-resnet", "--variants", ",".join(
        sparsity.BN_VARIANTS), "--seeds", "0", "--epochs", "2", "--jobs", "1",
        "--no-progress", "--out", str(out), "--plot"]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted([f"{v}_seed0.json" for v in sparsity.BN_VARIANTS]
                           + ["summary.json"])
    summary, origin = sparsity.load_bn_stats(out)
    assert origin == str(out) and set(summary) == set(sparsity.BN_VARIANTS)
    doc = json.loads((out / "prune0.9_seed0.json").read_text())
    assert summary["prune0.9"]["layers"]["block1.conv1"]["fp_density"] == \
        doc["layers"][1]["fp_density"]
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| block2.conv2 |" in printed
    fp, dy = sparsity.measured_bn(load_network("resnet18-cifar"), summary, "prune0.9")
    assert all(0 < v <= 1 for v in list(fp.values()) + list(dy.values()))


def test_cli_rejects_srste_for_the_bn_net(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--net", "digits-resnet", "--variants", "bdwp2-8_srste",
                        "--out", str(tmp_path)])
    assert e.value.code == 2 and "SR-STE" in capsys.readouterr().err
