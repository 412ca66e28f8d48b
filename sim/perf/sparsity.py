"""Operand densities for the benchmark networks, from two labelled sources.

* ``"measured, digits CNN"``: the digits CNN's training statistics (``build/stats/*.json``,
  ``make train-stats``; if that folder is missing, the snapshot ``sim/perf/digits_stats.json``
  taken from one full run), averaged over seeds, transferred to the large networks by tensor
  kind (below). The digits CNN has no batch norm, 16x16 inputs and 2 conv layers: the transfer
  is an assumption, stated, not a measurement of the large networks.
* ``"measured, BN net"`` (issue 18, item 4): the same study run on a small residual network
  with batch norm (``gen/networks/digits-resnet.yaml``, :mod:`sparseforge.study.bnnet`;
  ``build/stats-bn/*.json``, else the snapshot ``sim/perf/bn_stats.json``), transferred to the
  ResNets by tensor kind (:func:`measured_bn`). Still a 16x16 digits network: the transfer is
  an assumption, stated; it replaces the digits CNN's "no batch norm" with the real thing.
* ``"modelled"``: ReLU zero fraction ``relu_zero`` (default 0.5: a batch-normalised or
  symmetric pre-activation is positive half of the time) at every ReLU output; a max-pool of
  a ReLU output is zero only if its whole window is (independent-window model: density
  ``1 - relu_zero**(k*k)``, an upper bound: real activations are spatially correlated);
  gradients: Gaussian with the zero-aware stochastic-pruning closed form
  (``closed_form_density_zero_aware(p, d0)``, mean|g| over all elements as the hardware
  computes it), where ``d0`` is the gradient's density before pruning: the ReLU-derivative
  zeros (``1 - relu_zero``), times the max-pool's reachable fraction (pooled / pre-pool
  positions) and the pooled density, or 1 after batch norm (its backward pass is dense).

Conv layers' output gradients are pruned (as in the digits runs and SparseTrain); FC layers'
are not. The first layer's input (the image) is dense in both sources.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

from sparseforge.gen.stats_schema import validate

__all__ = ["MEASURED", "MEASURED_BN", "MODELLED", "load_digits_stats", "load_bn_stats",
           "measured", "measured_bn", "modelled", "SNAPSHOT", "BN_SNAPSHOT",
           "summarise_stats_dir", "summarise_bn_dir", "has_bn"]

MEASURED = "measured, digits CNN"
MEASURED_BN = "measured, BN net"
MODELLED = "modelled"
SNAPSHOT = Path(__file__).resolve().parent / "digits_stats.json"
BN_SNAPSHOT = Path(__file__).resolve().parent / "bn_stats.json"
#: Variants of the BN net the benchmark needs.
BN_VARIANTS = ("prune0.9", "bdwp2-8_prune0.9")
#: Variants the benchmark needs (digits-run names).
VARIANTS = ("dense", "prune0.9", "bdwp2-8_prune0.9")


def summarise_stats_dir(path) -> dict:
    """Seed-averaged figures of ``build/stats``: per variant, the digits layers' FP operand
    density, ReLU-mask density and dY density after pruning."""
    path = Path(path)
    out = {}
    for v in VARIANTS:
        files = sorted(path.glob(f"{v}_seed*.json"))
        if not files:
            continue
        acc = {}
        for f in files:
            doc = json.loads(f.read_text())
            validate(doc)
            for lay in doc["layers"]:
                a = acc.setdefault(lay["name"], {"fp_density": [], "relu_density": [],
                                                 "dy_density": [], "type": lay["type"]})
                a["fp_density"].append(lay["phases"]["fp"]["operand_density"])
                a["dy_density"].append(lay["gradient"]["density_after"])
                if lay["gradient"]["relu_mask_density"] is not None:
                    a["relu_density"].append(lay["gradient"]["relu_mask_density"])
        out[v] = {"seeds": len(files), "layers": {
            k: {"type": a["type"],
                **{f: (round(sum(a[f]) / len(a[f]), 6) if a[f] else None)
                   for f in ("fp_density", "relu_density", "dy_density")}}
            for k, a in acc.items()}}
    return out


def load_digits_stats(stats_dir="build/stats") -> tuple:
    """``(summary, origin)``: from ``stats_dir`` when it holds the runs, else the snapshot."""
    p = Path(stats_dir)
    if p.is_dir() and all(list(p.glob(f"{v}_seed*.json")) for v in VARIANTS):
        return summarise_stats_dir(p), str(p)
    return json.loads(SNAPSHOT.read_text())["variants"], str(SNAPSHOT.name)


def summarise_bn_dir(path) -> dict:
    """Seed-averaged per-layer figures of the BN-net runs in ``path`` (``<variant>_seed<k>.json``
    of :mod:`sparseforge.study.bnnet`), every variant found: ``{variant: {"seeds", "accuracy",
    "layers": {name: {tensor kinds, densities}}}}``."""
    from sparseforge.gen.stats_schema import validate_bn
    path = Path(path)
    groups = {}
    for f in sorted(path.glob("*_seed*.json")):
        groups.setdefault(f.name.rsplit("_seed", 1)[0], []).append(f)
    out = {}
    dens = ("fp_density", "relu_density", "out_density", "dy_density_before",
            "dy_density_after")
    for v, files in groups.items():
        docs = [json.loads(f.read_text()) for f in files]
        for f, d in zip(files, docs):
            validate_bn(d, source=str(f))
        layers = {}
        for lay in docs[0]["layers"]:
            per = [next(x for x in d["layers"] if x["name"] == lay["name"]) for d in docs]
            layers[lay["name"]] = {
                **{k: lay[k] for k in ("type", "input_kind", "grad_kind", "producer_add", "bn",
                                       "pruned")},
                **{k: (None if lay[k] is None else
                       round(sum(x[k] for x in per) / len(per), 6)) for k in dens}}
        out[v] = {"seeds": len(docs),
                  "accuracy": round(sum(d["accuracy"]["test_final"] for d in docs) / len(docs),
                                    6),
                  "layers": layers}
    return out


def load_bn_stats(stats_dir="build/stats-bn") -> tuple:
    """``(summary, origin)`` of the BN-net runs: from ``stats_dir`` when it holds the bench's
    variants (:data:`BN_VARIANTS`), else the snapshot ``bn_stats.json``."""
    p = Path(stats_dir)
    if p.is_dir() and all(list(p.glob(f"{v}_seed*.json")) for v in BN_VARIANTS):
        return summarise_bn_dir(p), str(p)
    return json.loads(BN_SNAPSHOT.read_text())["variants"], str(BN_SNAPSHOT.name)


def has_bn(net) -> bool:
    """Whether the BN-net source applies to ``net`` (any layer with batch norm)."""
    return any(lay.bn for lay in net.compute)


def _mean(vals, what):
    vals = [v for v in vals if v is not None]
    if not vals:
        raise ValueError(f"the BN-net statistics hold no {what}")
    return sum(vals) / len(vals)


def measured_bn(net, stats: dict, variant: str) -> tuple:
    """``(fp_density, dy_density)`` for a batch-norm network ``net`` from the BN-net summary of
    ``variant`` (:func:`load_bn_stats`).

    Transfer by tensor kind (*ours*), each class the mean over the BN net's layers of that
    class: the image -> 1 (natural images are dense; the digits are not, so their 0.51 is not
    transferred); a max-pooled post-ReLU tensor -> the BN net's ``relu+maxpool`` operands; a
    post-ReLU operand that is a residual block's output (its producer has ``add``) -> the BN
    net's block-output operands; any other post-ReLU operand (after conv + BN inside a block)
    -> the BN net's in-block operands; an average-pooled post-ReLU tensor -> the BN net's FC
    operand; a linear tensor -> 1. Output gradients: a pruned conv layer with BN -> the BN
    net's pruned dY density after pruning, the stem's for the first layer and the mean of the
    others for the rest (a BN backward makes dY dense, so before pruning it is ~1); an unpruned
    one -> the density before pruning; the loss gradient (``none``) -> 1. A layer whose
    gradient passes through a ReLU without BN has no counterpart: ValueError."""
    if variant not in stats:
        raise ValueError(f"variant {variant!r} not in the BN-net statistics ({sorted(stats)})")
    if not has_bn(net):
        raise ValueError(f"{net.name}: the BN-net source applies to networks with batch norm")
    L = list(stats[variant]["layers"].values())
    stems = [v for v in L if v["input_kind"] == "image"]
    if len(stems) != 1:
        raise ValueError(f"the BN-net statistics need one layer reading the image, not "
                         f"{len(stems)}")
    first = stems[0]                       # by kind: a summary's layer order is not kept
    rest = [v for v in L if v is not first and v["type"] == "conv" and v["bn"]]
    cls = {
        "relu+maxpool": _mean([v["fp_density"] for v in L if v["input_kind"] == "relu+maxpool"],
                              "max-pooled operand"),
        "block_out": _mean([v["fp_density"] for v in L
                            if v["input_kind"] == "relu" and v["producer_add"]],
                           "block-output operand"),
        "in_block": _mean([v["fp_density"] for v in L
                           if v["input_kind"] == "relu" and not v["producer_add"]],
                          "in-block operand"),
        "relu+avgpool": _mean([v["fp_density"] for v in L if v["input_kind"] == "relu+avgpool"],
                              "average-pooled operand"),
    }
    dy_stem = first["dy_density_after"]
    dy_body = _mean([v["dy_density_after"] for v in rest], "BN conv gradient")
    dy_body_before = _mean([v["dy_density_before"] for v in rest], "BN conv gradient")
    fp, dy = {}, {}
    for i, lay in enumerate(net.compute):
        k = lay.input_kind
        if k in ("image", "linear"):
            fp[lay.name] = 1.0
        elif k == "relu":
            prod = net.compute_layer(net.producer(lay.src))
            fp[lay.name] = cls["block_out" if prod.add is not None else "in_block"]
        else:
            fp[lay.name] = cls[k]
        g = lay.grad_kind
        if g == "none":
            dy[lay.name] = 1.0
        elif g == "bn":
            if lay.kind == "conv" and lay.prune:
                dy[lay.name] = dy_stem if i == 0 else dy_body
            else:
                dy[lay.name] = dy_body_before
        else:
            raise ValueError(f"{net.name} {lay.label}: its gradient passes a {g!r} without batch "
                             f"norm; the BN net has no such tensor")
    return fp, dy


def _pooled(pool, relu_zero):
    k = 1 if pool.is_global else pool.k
    return 1.0 - relu_zero ** (k * k)


def modelled(net, *, p=0.9, relu_zero=0.5) -> tuple:
    """``(fp_density, dy_density)`` dicts for ``net`` (a :class:`sparseforge.gen.network.Network`;
    see the module docstring)."""
    if not 0.0 <= relu_zero < 1.0:
        raise ValueError(f"relu_zero must be in [0, 1), not {relu_zero!r}")
    a = 1.0 - relu_zero
    out_density = {"input": 1.0}
    fp, dy = {}, {}
    for lay in net.compute:
        fp[lay.name] = out_density[net.producer(lay.src)]
        pool = lay.pool_spec
        pooled = _pooled(pool, relu_zero) if pool and pool.kind == "max" else None
        if not lay.relu:
            out_density[lay.name] = 1.0
        elif pool and pool.kind == "avg":
            out_density[lay.name] = 1.0
        else:
            out_density[lay.name] = pooled if pooled is not None else a
        if lay.grad_kind == "bn" or lay.grad_kind == "none":
            d0 = 1.0
        elif lay.grad_kind == "relu+maxpool":
            d0 = lay.pool_select_fraction * pooled
        else:
            d0 = a
        dy[lay.name] = (closed_form_density_zero_aware(p, d0) if (lay.kind == "conv" and p > 0)
                        else d0)
    return fp, dy


def measured(net, stats: dict, variant: str) -> tuple:
    """``(fp_density, dy_density)`` for ``net`` from the digits summary of ``variant``.

    Transfer by tensor kind (*ours*): a post-ReLU conv activation -> the digits conv layers'
    mean ReLU-mask density; a max-pooled ReLU output -> digits conv2's input density (after
    ReLU + 2x2 max-pool); an FC input after ReLU -> digits fc2's input density; an
    average-pooled or non-ReLU tensor and the image -> 1; a conv layer's dY -> the mean
    density after pruning of the digits conv layers; an FC layer's dY after ReLU -> digits
    fc1's dY density; the last layer's dY -> 1."""
    if variant not in stats:
        raise ValueError(f"variant {variant!r} not in the digits statistics ({sorted(stats)})")
    L = stats[variant]["layers"]
    conv_relu = [v["relu_density"] for v in L.values() if v["type"] == "conv" and v["relu_density"]]
    conv_dy = [v["dy_density"] for v in L.values() if v["type"] == "conv"]
    relu = sum(conv_relu) / len(conv_relu)
    pooled = L["conv2"]["fp_density"]
    fc_relu = L["fc2"]["fp_density"]
    dy_conv = sum(conv_dy) / len(conv_dy)
    dy_fc = L["fc1"]["dy_density"]
    fp, dy = {}, {}
    for lay in net.compute:
        k = lay.input_kind
        fp[lay.name] = (1.0 if k in ("image", "linear", "relu+avgpool") else
                        pooled if k == "relu+maxpool" else
                        fc_relu if lay.kind == "fc" else relu)
        if lay.kind == "conv":
            dy[lay.name] = dy_conv
        else:
            dy[lay.name] = dy_fc if lay.grad_kind != "none" else 1.0
    return fp, dy


# --------------------------------------------------------------------------------------------
# Gaussian closed forms of the pruned gradient density
# --------------------------------------------------------------------------------------------

_ND = NormalDist()


def _gauss_kept(z):
    """Kept fraction of N(0, s^2) data pruned at ``tau = z*s``.

    ``P(|g| >= tau) + E[|g|/tau; |g| < tau] = 2(1 - Phi(z)) + sqrt(2/pi)(1 - exp(-z^2/2))/z``.
    """
    if z <= 0:
        return 1.0
    return 2.0 * (1.0 - _ND.cdf(z)) + math.sqrt(2.0 / math.pi) * (1.0 - math.exp(-z * z / 2)) / z


def closed_form_density(p):
    """Non-zero fraction after stochastic pruning of a dense Gaussian tensor at rate ``p``.

    ``(1 - p) + sqrt(2/pi) * (1 - exp(-z^2/2)) / z`` with ``z = Phi^-1((1 + p)/2)``; 1 at p = 0.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), not {p!r}")
    if p == 0.0:
        return 1.0
    z = _ND.inv_cdf((1.0 + p) / 2.0)
    return (1.0 - p) + math.sqrt(2.0 / math.pi) * (1.0 - math.exp(-z * z / 2)) / z


def closed_form_density_zero_aware(p, d, nzmean=False):
    """Like :func:`closed_form_density`, for a tensor of which a fraction ``d`` is non-zero and
    Gaussian (the rest: exact zeros from ReLU / max-pool).

    With ``mean|g|`` over all elements (the golden/hardware threshold) the zeros lower it by the
    factor ``d``, so ``tau = z*d*s`` instead of ``z*s`` and the prediction is ``d * kept(z*d)``;
    with ``nzmean`` (``mean|g|`` over the non-zeros) it is ``d * kept(z)``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), not {p!r}")
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"d must be in [0, 1], not {d!r}")
    if p == 0.0 or d == 0.0:
        return float(d)
    z = _ND.inv_cdf((1.0 + p) / 2.0)
    return d * _gauss_kept(z if nzmean else z * d)
