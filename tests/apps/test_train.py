"""Sparse-training harness (sim/train.py), its statistics schema and its CLI.

The CI-sized run (`test_quick_cli_learns_and_validates`) trains 4 variants for 6 epochs on one
seed and checks that they learn (test accuracy far above the 10 % of chance) and that every file
validates; the full run is `make train-stats` only.
"""

import copy
import json
import math

import numpy as np
import pytest

from sparseforge.study import cli as train_cli
from sparseforge.sim.reference import golden
from sparseforge.gen import stats_schema
from sparseforge.study import train

SEED = 20260512
print(f"test_train seed: {SEED}")


# --------------------------------------------------------------------------------------------
# Variants and configuration
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, nm, p, srste, nested, nzmean", [
    ("dense", None, None, False, False, False),
    ("bdwp2-8", (2, 8), None, False, False, False),
    ("bdwp1-8_nested", (1, 8), None, False, True, False),
    ("prune0.99", None, 0.99, False, False, False),
    ("prune0.9_nzmean", None, 0.9, False, False, True),
    ("bdwp2-8_prune0.9", (2, 8), 0.9, False, False, False),
    ("bdwp2-4_srste", (2, 4), None, True, False, False),
])
def test_parse_variant(name, nm, p, srste, nested, nzmean):
    v = train.parse_variant(name)
    assert (v.name, v.nm, v.prune_p, v.srste, v.nested, v.nzmean) == \
        (name, nm, p, srste, nested, nzmean)


@pytest.mark.parametrize("name, msg", [
    ("", "non-empty"), ("sparse", "unknown token 'sparse'"), ("bdwp8-8", "1 <= N < M"),
    ("prune1.0", "unknown token"), ("bdwp2-8_bdwp2-4", "given twice"),
    ("dense_prune0.5", "cannot be combined"), ("srste", "needs a bdwpN-M"),
    ("prune0.5_nested", "needs a bdwpN-M"), ("bdwp2-8_nzmean", "needs a pruneP"),
])
def test_parse_variant_rejects(name, msg):
    with pytest.raises(ValueError, match=msg):
        train.parse_variant(name)


def test_every_listed_variant_parses():
    assert set(train.ISSUE_VARIANTS) <= set(train.DEFAULT_VARIANTS)
    for v in train.DEFAULT_VARIANTS:
        train.parse_variant(v)


@pytest.mark.parametrize("kw, msg", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1.5}, "batch_size"),
    ({"epochs": 3, "stats_epochs": 4}, "stats_epochs"), ({"lr": 0.0}, "lr"),
    ({"test_fraction": 1.0}, "test_fraction"), ({"warmup_epochs": -1}, "warmup_epochs"),
    ({"train_subset": 10}, "train_subset"),
])
def test_train_config_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        train.TrainConfig(**kw)


def test_network_channel_counts_fit_nm_groups():
    # BDWP layers need Cin (fwd groups) and Cout (bwd groups) to be multiples of M = 4 and 8
    for spec in train.NETWORK:
        if spec.bdwp:
            assert spec.cin % 8 == 0 and spec.cout % 8 == 0, spec
    assert not train.NETWORK[0].bdwp and train.NETWORK[0].cin == 1
    assert not train.NETWORK[-1].bdwp and train.NETWORK[-1].cout == 10


def test_digits_split():
    xtr, ytr, xte, yte = train.load_digits_split()
    assert xtr.shape == (1437, 1, 16, 16) and xte.shape == (360, 1, 16, 16)
    assert xtr.dtype == np.float64 and 0.0 <= xtr.min() and xtr.max() == 1.0
    # stratified: every class is split 80/20 to within one image
    per_class = np.bincount(ytr, minlength=10) + np.bincount(yte, minlength=10)
    assert np.all(np.abs(np.bincount(yte, minlength=10) - 0.2 * per_class) <= 1)
    # 2x nearest upsampling: every 2x2 block is constant
    assert np.array_equal(xtr[:, :, ::2, ::2], xtr[:, :, 1::2, 1::2])


# --------------------------------------------------------------------------------------------
# Closed forms of the pruned gradient density vs Monte Carlo through the golden pruner
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
def test_closed_form_matches_golden_pruner_on_gaussian(p):
    rng = np.random.default_rng(SEED)
    g = rng.standard_normal(400_000)
    out = golden.stochastic_prune(g, golden.prune_threshold(g, p), rng)
    measured = np.count_nonzero(out) / g.size
    assert abs(measured - train.closed_form_density(p)) < 0.004, (p, measured)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("nzmean", [False, True])
def test_zero_aware_closed_form_matches_golden_pruner(p, nzmean):
    rng = np.random.default_rng(SEED + 1)
    d = 0.25
    g = rng.standard_normal(400_000) * (rng.random(400_000) < d)
    src = g[g != 0] if nzmean else g
    out = golden.stochastic_prune(g, golden.prune_threshold(src, p), rng)
    measured = np.count_nonzero(out) / g.size
    predicted = train.closed_form_density_zero_aware(p, np.count_nonzero(g) / g.size, nzmean)
    assert abs(measured - predicted) < 0.003, (p, nzmean, measured, predicted)


def test_closed_form_values():
    assert train.closed_form_density(0.0) == 1.0
    # p = 0.9: z = 1.6449, (1-p) + sqrt(2/pi)(1 - exp(-z^2/2))/z
    z = 1.6448536269514722
    assert math.isclose(train.closed_form_density(0.9),
                        0.1 + math.sqrt(2 / math.pi) * (1 - math.exp(-z * z / 2)) / z)
    assert train.closed_form_density_zero_aware(0.9, 1.0) == pytest.approx(
        train.closed_form_density(0.9))
    with pytest.raises(ValueError, match="p must be"):
        train.closed_form_density(1.0)


# --------------------------------------------------------------------------------------------
# Model: gradients against finite differences; BDWP masks; statistics counts vs brute force
# --------------------------------------------------------------------------------------------

def _loss(model, x, y, masks):
    logits, _ = model.forward(x, masks)
    return train._softmax_xent(logits, y)[0]


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(SEED)
    model = train.DigitsCNN(rng)
    for b in model.b:
        b += 0.05 * rng.standard_normal(b.shape)
    xtr, ytr, _, _ = train.load_digits_split()
    x, y = xtr[:6], ytr[:6]
    dense = train.parse_variant("dense")
    masks = model.masks(dense)
    logits, cache = model.forward(x, masks)
    recs = model.backward(cache, train._softmax_xent(logits, y)[1], masks, dense, rng)
    eps = 1e-6
    for li, (w, rec) in enumerate(zip(model.w, recs)):
        for flat in rng.choice(w.size, 6, replace=False):
            idx = np.unravel_index(flat, w.shape)
            old = w[idx]
            w[idx] = old + eps
            lp = _loss(model, x, y, masks)
            w[idx] = old - eps
            lm = _loss(model, x, y, masks)
            w[idx] = old
            num = (lp - lm) / (2 * eps)
            assert abs(num - rec["dw"][idx]) <= 1e-6 + 1e-4 * abs(num), (li, idx, num,
                                                                          rec["dw"][idx])


@pytest.mark.parametrize("nested", [False, True])
def test_bdwp_masks_per_layer(nested):
    model = train.DigitsCNN(np.random.default_rng(SEED))
    v = train.parse_variant("bdwp2-8" + ("_nested" if nested else ""))
    masks = model.masks(v)
    for spec, w, m in zip(model.layers, model.w, masks):
        if not spec.bdwp:
            assert m is None
            continue
        fwd, bwd = m
        ref_fwd, ref_bwd = golden.bdwp_masks(w, 2, 8)
        assert np.array_equal(fwd, ref_fwd)
        # forward: exactly 2 of 8 along Cin; backward: at most 2 of 8 along Cout
        assert np.all(fwd.reshape(w.shape[0], -1, 8, *w.shape[2:]).sum(axis=2) == 2)
        per_group = np.moveaxis(bwd, 0, -1).reshape(*bwd.shape[1:], -1, 8).sum(axis=-1)
        if nested:
            assert np.all(bwd <= fwd) and np.all(per_group <= 2)
            assert np.array_equal(bwd, fwd & golden.nm_mask(w * fwd, 2, 8, axis=0))
        else:
            assert np.array_equal(bwd, ref_bwd) and np.all(per_group == 2)


def _brute_counts(spec, x, wf, wb, dy):
    """Useful products of FP, BP (all, masked by x > 0) and WG by enumerating every term."""
    b, cin, h, w = x.shape
    fp = bp = bpm = wg = 0
    for bi in range(b):
        for n in range(spec.cout):
            for oy in range(spec.ho):
                for ox in range(spec.wo):
                    for c in range(cin):
                        for i in range(spec.k):
                            for j in range(spec.k):
                                iy = oy * spec.stride + i - spec.padding
                                ix = ox * spec.stride + j - spec.padding
                                if not (0 <= iy < h and 0 <= ix < w):
                                    continue
                                xv, dv = x[bi, c, iy, ix], dy[bi, n, oy, ox]
                                fp += xv != 0 and wf[n, c, i, j] != 0
                                if dv != 0 and wb[n, c, i, j] != 0:
                                    bp += 1
                                    bpm += xv > 0
                                wg += dv != 0 and xv != 0
    return fp, bp, bpm, wg


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), (1, 0)])
def test_useful_product_counts_match_brute_force(stride, padding):
    rng = np.random.default_rng(SEED + stride * 7 + padding)
    spec = train.LayerSpec("t", "conv", 2, 3, 5, 5, k=3, stride=stride, padding=padding,
                           pool=False)
    x = rng.standard_normal((2, 2, 5, 5)) * (rng.random((2, 2, 5, 5)) < 0.5)
    wf = rng.standard_normal(spec.weight_shape) * (rng.random(spec.weight_shape) < 0.6)
    wb = rng.standard_normal(spec.weight_shape) * (rng.random(spec.weight_shape) < 0.4)
    dy_shape = (2, 3, spec.ho, spec.wo)
    dy = rng.standard_normal(dy_shape) * (rng.random(dy_shape) < 0.3)
    st = train._LayerStats(spec)
    st.add(x, wf, wb, dy, dy, rng.standard_normal(dy.shape), None, 0.0, 0.0)
    d = st.to_dict(None, first_layer=False)["phases"]
    fp, bp, bpm, wg = _brute_counts(spec, x, wf, wb, dy)
    assert (d["fp"]["useful_macs"], d["bp"]["useful_macs"], d["bp"]["useful_macs_masked"],
            d["wg"]["useful_macs"]) == (fp, bp, bpm, wg)
    dense = 2 * 3 * spec.ho * spec.wo * 2 * 9
    assert all(d[ph]["dense_macs"] == dense for ph in ("fp", "bp", "wg"))
    assert d["fp"]["operand_density"] == round(np.count_nonzero(x) / x.size, 6)


# --------------------------------------------------------------------------------------------
# Runs: determinism, statistics content, schema
# --------------------------------------------------------------------------------------------

TINY = train.TrainConfig(epochs=2, train_subset=192, warmup_epochs=0)


@pytest.fixture(scope="module")
def data():
    return train.load_digits_split()


def _strip_times(doc):
    doc = copy.deepcopy(doc)
    doc["meta"].pop("seconds")
    doc["history"].pop("epoch_seconds")
    return doc


def test_runs_are_deterministic(data):
    a = train.train_run("bdwp2-8_prune0.9", 3, TINY, data=data)
    b = train.train_run("bdwp2-8_prune0.9", 3, TINY, data=data)
    c = train.train_run("bdwp2-8_prune0.9", 4, TINY, data=data)
    assert _strip_times(a) == _strip_times(b)
    assert a["history"]["train_loss"] != c["history"]["train_loss"]
    stats_schema.validate(a)


@pytest.mark.parametrize("variant", ["dense", "bdwp2-8", "bdwp1-8_nested", "prune0.9_nzmean"])
def test_statistics_content(variant, data):
    doc = stats_schema.validate(train.train_run(variant, 0, TINY, data=data))
    v = train.parse_variant(variant)
    assert doc["meta"]["dataset"] == "sklearn digits"
    assert doc["meta"]["label"] == "measured, digits CNN"
    assert doc["meta"]["batches_sampled"] == 192 // 64
    layers = {ly["name"]: ly for ly in doc["layers"]}
    assert list(layers) == ["conv1", "conv2", "fc1", "fc2"]
    assert layers["conv1"]["phases"]["bp"]["skipped"]
    assert layers["conv1"]["phases"]["fp"]["weight_density"] == 1.0
    for name, ly in layers.items():
        spec = next(s for s in train.NETWORK if s.name == name)
        on = v.nm is not None and spec.bdwp
        assert ly["bdwp"] == on
        kept = v.nm[0] / v.nm[1] if on else 1.0
        assert ly["weight_kept_nominal"] == kept
        assert ly["phases"]["fp"]["weight_density"] == pytest.approx(kept, abs=1e-6)
        if on and v.nested:
            assert ly["weights"]["bwd_in_fwd_fraction"] == 1.0
            assert ly["phases"]["bp"]["weight_density"] <= kept
        else:
            assert ly["phases"]["bp"]["weight_density"] == pytest.approx(kept, abs=1e-6)
        g = ly["gradient"]
        assert g["pruned"] == bool(spec.prune and v.prune_p)
        if g["pruned"]:
            assert g["density_after"] < g["density_before"]
            assert g["closed_form"] == pytest.approx(train.closed_form_density(v.prune_p),
                                                     abs=1e-6)
        # streamed operands of BP and WG are the pruned dY
        assert ly["phases"]["bp"]["operand_density"] == g["density_after"]
        assert ly["phases"]["wg"]["operand_density"] == g["density_after"]
        if ly["relu"] and ly["pool"]:
            assert g["pool_mask_density"] == 0.25
    # fc2's dY is softmax - onehot: dense; ReLU makes the others sparse
    assert layers["fc2"]["gradient"]["density_before"] == 1.0
    assert layers["conv2"]["gradient"]["density_before"] < 0.5


def _good_doc(data):
    return train.train_run("prune0.5", 1, train.TrainConfig(epochs=1, train_subset=64,
                                                            warmup_epochs=0), data=data)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d.pop("layers"), r"\$\.layers: missing"),
    (lambda d: d["meta"].update(dataset="mnist"), r"\$\.meta\.dataset: 'mnist' not one of"),
    (lambda d: d["meta"].update(label="stated"), r"\$\.meta\.label"),
    (lambda d: d["layers"][1]["phases"]["wg"].update(useful_fraction=1.5),
     r"wg\.useful_fraction: 1\.5 > 1"),
    (lambda d: d["layers"][0]["shape"].update(cin="1"), r"shape\.cin: expected int"),
    (lambda d: d["layers"][1]["phases"]["fp"].update(useful_macs=10 ** 15),
     r"useful_macs \d+ > dense_macs"),
    (lambda d: d["layers"][1]["gradient"].update(density_after=0.99, density_before=0.5),
     "pruning adds no non-zeros"),
    (lambda d: d["history"]["test_acc"].append(0.5), "expected one per epoch"),
    (lambda d: d["layers"][0]["phases"]["bp"].update(skipped=False), "first layer's BP"),
    (lambda d: d["layers"][1]["gradient"].update(closed_form=None), "required when pruned"),
    (lambda d: d.update(schema="other"), r"\$\.schema: 'other' is not one of"),
    (lambda d: d["layers"][2]["phases"]["fp"].update(useful_fraction=0.123456),
     "useful_fraction: != useful_macs / dense_macs"),
])
def test_schema_rejects(mutate, msg, data):
    doc = _good_doc(data)
    stats_schema.validate(doc)
    bad = copy.deepcopy(doc)
    mutate(bad)
    with pytest.raises(stats_schema.StatsSchemaError, match=msg):
        stats_schema.validate(bad)


def test_schema_json_rendering():
    js = stats_schema.to_json_schema()
    assert js["title"] == "sparseforge.train-stats"
    assert set(js["required"]) == {"schema", "schema_version", "meta", "accuracy", "history",
                                   "layers"}
    layer = js["properties"]["layers"]["items"]
    assert set(layer["properties"]["phases"]["required"]) == {"fp", "bp", "wg"}
    json.dumps(js)
    assert stats_schema.to_json_schema("sparseforge.train-summary")["title"].endswith("summary")
    with pytest.raises(ValueError, match="kind must be"):
        stats_schema.to_json_schema("x")


# --------------------------------------------------------------------------------------------
# CLI: the CI-sized run
# --------------------------------------------------------------------------------------------

def test_quick_cli_learns_and_validates(tmp_path, capsys):
    out = tmp_path / "stats"
    assert train_cli.main(["--quick", "--jobs", "1", "--no-progress", "--out", str(out),
                           "--plot"]) == 0
    printed = capsys.readouterr().out
    variants = train_cli.QUICK["variants"].split(",")
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted([f"{v}_seed0.json" for v in variants] + ["summary.json"])
    for p in out.glob("*.json"):
        stats_schema.validate_file(p)
    summary = json.loads((out / "summary.json").read_text())
    accs = {r["variant"]: r["mean"] for r in summary["variants"]}
    print("quick accuracies:", accs)
    assert accs["dense"] > 0.85                       # chance is 0.10
    assert all(a > 0.6 for a in accs.values()), accs
    assert {(g["variant"], g["layer"]) for g in summary["gradient_density"]} == {
        (v, layer) for v in ("prune0.9", "bdwp2-8_prune0.9") for layer in ("conv1", "conv2")}
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| dense |" in printed and (out / "summary.md").read_text() in printed


@pytest.mark.parametrize("argv, msg", [
    (["--variants", "bdwp9-8"], "1 <= N < M"),
    (["--seeds", "0,x"], "--seeds"),
    (["--epochs", "0"], "epochs must be"),
    (["--jobs", "0", "--variants", "dense", "--seeds", "0", "--epochs", "1"], "--jobs"),
])
def test_cli_rejects(argv, msg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_cli.main(argv + ["--out", str(tmp_path)])
    assert e.value.code == 2
    assert msg in capsys.readouterr().err
