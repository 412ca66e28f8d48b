"""Sparse training of a small residual network with batch norm on the digits data (issue 18,
item 4): the per-tensor densities that the bench's third source, ``"measured, BN net"``,
transfers to the ResNets (:func:`sparseforge.sim.perf.sparsity.measured_bn`).

Network: ``gen/networks/digits-resnet.yaml`` (read by :func:`load_network`, so the study runs
the graph the description states)::

    conv1 3x3 1->16 BN ReLU maxpool 2         (dense: Cin = 1 is no multiple of M)
    block1: conv 3x3 16->16 BN ReLU; conv 3x3 16->16 BN + pool1, ReLU      (BDWP)
    block2: down 1x1/2 16->32 BN; conv 3x3/2 16->32 BN ReLU;
            conv 3x3 32->32 BN + down, ReLU, global average pool              (BDWP)
    fc 32->10                                  (dense: Cout = 10 is no multiple of M)

Per compute layer, in the order the description gives: ``z = conv(x)`` (no bias under BN),
``z = BN(z)`` (training mode: the batch's mean and biased variance over ``(B, H, W)``, learned
``gamma``/``beta``; evaluation with running statistics, momentum 0.1), ``z += shortcut``
(``add``), ReLU, the fused pool. The products run on the golden model's float path
(:mod:`sparseforge.sim.reference.golden`) with the operands the accelerator would see, as in
:mod:`sparseforge.study.train`: BDWP masks (``golden.bdwp_masks``, every iteration, dense
straight-through update), the output gradient ``dY`` of every conv layer (after the ReLU and
pool backward, the shortcut split and the BN backward, which makes it dense) pruned with
``golden.prune_threshold`` / ``golden.stochastic_prune`` before it feeds that layer's BP and WG.

Statistics (schema ``sparseforge.bn-stats`` v1, :func:`validate`), sampled over the last
``stats_epochs`` epochs, per layer: ``fp_density`` (the FP operand), ``relu_density`` (the ReLU
output before any pool), ``out_density`` (the layer's output tensor, after the pool),
``dy_density_before`` / ``dy_density_after`` (pruning), ``tau_mean``; plus the tensor kinds of
the description (``input_kind``, ``grad_kind``, ``producer_add``: the FP operand is a
residual block's output) that the transfer keys on.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict

import numpy as np

from sparseforge.gen.network import load_network
from sparseforge.gen.stats_schema import BN_SCHEMA_ID as SCHEMA_ID
from sparseforge.gen.stats_schema import BN_SCHEMA_VERSION as SCHEMA_VERSION
from sparseforge.gen.stats_schema import validate_bn as validate
from sparseforge.sim.reference import golden
from sparseforge.study.train import (DigitsCNN, _lr_at, _maxpool2, _softmax_xent, _unpool2,
                                     prepare_run)

__all__ = ["NETWORK_NAME", "LABEL", "SCHEMA_ID", "SCHEMA_VERSION", "DEFAULT_VARIANTS",
           "BNResNet", "train_run", "validate"]

NETWORK_NAME = "digits-resnet"
LABEL = "measured, BN net"
#: The variants the bench needs (dense for reference).
DEFAULT_VARIANTS = ("dense", "bdwp2-8", "prune0.9", "bdwp2-8_prune0.9")
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _bn_forward(z, gamma, beta):
    """Training-mode batch norm over ``(B, H, W)`` (FC: over ``B``); returns (out, cache)."""
    axes = (0, 2, 3) if z.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if z.ndim == 4 else (1, -1)
    mu = z.mean(axis=axes)
    var = z.var(axis=axes)
    inv = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (z - mu.reshape(shape)) * inv.reshape(shape)
    return gamma.reshape(shape) * xhat + beta.reshape(shape), (xhat, inv, axes, shape, mu, var)


def _bn_backward(d, gamma, cache):
    """``(dz, dgamma, dbeta)`` of :func:`_bn_forward` (the batch statistics differentiated)."""
    xhat, inv, axes, shape, _, _ = cache
    n = d.size // d.shape[1]
    dgamma = (d * xhat).sum(axis=axes)
    dbeta = d.sum(axis=axes)
    dxhat = d * gamma.reshape(shape)
    dz = (inv.reshape(shape) / n) * (n * dxhat - dxhat.sum(axis=axes).reshape(shape)
                                     - xhat * (dxhat * xhat).sum(axis=axes).reshape(shape))
    return dz, dgamma, dbeta


def _pool_forward(spec, a):
    """The fused pool of a layer: ``(out, backward context)``."""
    if spec is None:
        return a, None
    if spec.kind == "avg" and spec.is_global:
        return a.mean(axis=(2, 3)), a.shape
    if spec.kind == "max" and spec.k == 2 and spec.stride == 2 and spec.padding == 0:
        return _maxpool2(a)
    raise ValueError(f"the BN study runs 2x2/2 max-pools and global average pools, not {spec}")


def _pool_backward(spec, d, ctx):
    if spec is None:
        return d
    if spec.kind == "avg":
        b, c, h, w = ctx
        return np.broadcast_to(d[:, :, None, None] / (h * w), ctx).copy()
    return _unpool2(d, ctx)


class BNResNet:
    """Parameters (He-normal weights; BN ``gamma = 1``, ``beta = 0``; zero biases for layers
    without BN) and the float FP / BP / WG of a network description with ``bn`` and ``add``."""

    def __init__(self, rng, net=None):
        self.net = net or load_network(NETWORK_NAME)
        self.layers = self.net.compute
        for lay in self.layers:
            if lay.kind == "conv" and lay.kh != lay.kw:
                raise ValueError(f"{lay.label}: the BN study runs square kernels")
        self.w, self.b, self.gamma, self.beta, self.run_mu, self.run_var = [], [], [], [], [], []
        for lay in self.layers:
            shape = lay.weight_shape if lay.kind == "conv" else (lay.cout, lay.cin)
            fan_in = lay.cin * lay.kh * lay.kw
            self.w.append(rng.standard_normal(shape) * math.sqrt(2.0 / fan_in))
            self.b.append(np.zeros(lay.cout))
            self.gamma.append(np.ones(lay.cout))
            self.beta.append(np.zeros(lay.cout))
            self.run_mu.append(np.zeros(lay.cout))
            self.run_var.append(np.ones(lay.cout))

    #: per layer ``(fwd, bwd)`` BDWP masks or None: the digits CNN's rule (``layers[i].bdwp``,
    #: ``w[i]``; a ComputeLayer carries ``bdwp`` as a LayerSpec does)
    masks = DigitsCNN.masks

    def forward(self, x, masks, train=True):
        """Returns ``(logits, cache)``; ``train`` uses batch statistics and updates the running
        ones, otherwise the running statistics are used."""
        t = {"input": x}
        cache = []
        for i, lay in enumerate(self.layers):
            a = t[self.net.producer(lay.src)] if lay.src != "input" else x
            in_shape = a.shape
            if lay.kind == "fc" and a.ndim == 4:
                a = a.reshape(a.shape[0], -1)
            wf = self.w[i] if masks[i] is None else self.w[i] * masks[i][0]
            z = (golden.conv2d_forward(a, wf, lay.stride, lay.padding) if lay.kind == "conv"
                 else golden.fc_forward(a, wf))
            shape = (1, -1) + (1,) * (z.ndim - 2)
            e = {"x": a, "in_shape": in_shape, "bn": None, "pool": None}
            if lay.bn:
                if train:
                    z, e["bn"] = _bn_forward(z, self.gamma[i], self.beta[i])
                    mu, var = e["bn"][4], e["bn"][5]
                    n = z.size // z.shape[1]
                    self.run_mu[i] = (1 - BN_MOMENTUM) * self.run_mu[i] + BN_MOMENTUM * mu
                    self.run_var[i] = ((1 - BN_MOMENTUM) * self.run_var[i]
                                       + BN_MOMENTUM * var * n / max(1, n - 1))
                else:
                    z = ((z - self.run_mu[i].reshape(shape))
                         / np.sqrt(self.run_var[i].reshape(shape) + BN_EPS)
                         * self.gamma[i].reshape(shape) + self.beta[i].reshape(shape))
            else:
                z = z + self.b[i].reshape(shape)
            if lay.add is not None:
                z = z + t[self.net.producer(lay.add)]
            e["z"] = z
            r = np.maximum(z, 0.0) if lay.relu else z
            e["r"] = r
            out, e["pool"] = _pool_forward(lay.pool_spec, r)
            e["out"] = out
            t[lay.name] = out
            cache.append(e)
        return t[self.layers[-1].name], cache

    def backward(self, cache, d, masks, variant, prune_rng):
        """BP and WG of every layer from ``d = dLoss/dlogits``; gradients of tensors read by
        several layers (a block input: the next conv and the shortcut) are summed. Returns one
        dict per layer: ``dw``, ``db`` (``dgamma``/``dbeta`` under BN), ``dy_before``, ``dy``,
        ``tau``."""
        grads = {self.layers[-1].name: d}
        recs = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            lay, c = self.layers[i], cache[i]
            g = grads.pop(lay.name)
            g = _pool_backward(lay.pool_spec, g, c["pool"])
            if lay.relu:
                g = g * (c["z"] > 0)
            if lay.add is not None:
                src = self.net.producer(lay.add)
                grads[src] = grads.get(src, 0.0) + g
            rec = {}
            if lay.bn:
                g, rec["dgamma"], rec["dbeta"] = _bn_backward(g, self.gamma[i], c["bn"])
                rec["db"] = None
            else:
                rec["db"] = g.sum(axis=(0, 2, 3)) if g.ndim == 4 else g.sum(axis=0)
            dy_before, dy, tau = g, g, 0.0
            if lay.prune and variant.prune_p:
                nz = dy_before[dy_before != 0] if variant.nzmean else dy_before
                tau = golden.prune_threshold(nz, variant.prune_p) if nz.size else 0.0
                dy = golden.stochastic_prune(dy_before, tau, prune_rng)
            x = c["x"]
            if lay.kind == "conv":
                rec["dw"] = golden.conv2d_backward_weight(x, dy, self.w[i].shape, lay.stride,
                                                          lay.padding)
            else:
                rec["dw"] = golden.fc_backward_weight(x, dy)
            rec.update(dy_before=dy_before, dy=dy, tau=tau)
            recs[i] = rec
            if lay.src != "input":
                wb = self.w[i] if masks[i] is None else self.w[i] * masks[i][1]
                dx = (golden.conv2d_backward_input(dy, wb, x.shape, lay.stride, lay.padding)
                      if lay.kind == "conv" else golden.fc_backward_input(dy, wb))
                src = self.net.producer(lay.src)
                grads[src] = grads.get(src, 0.0) + dx.reshape(c["in_shape"])
        return recs


class _Stats:
    KEYS = ("fp_nz", "fp_n", "relu_nz", "relu_n", "out_nz", "out_n", "dyb_nz", "dya_nz", "dy_n",
            "tau_sum", "batches")

    def __init__(self, layers):
        self.s = [dict.fromkeys(self.KEYS, 0.0) for _ in layers]

    def add(self, cache, recs, net):
        for s, c, r, lay in zip(self.s, cache, recs, net.compute):
            s["fp_nz"] += np.count_nonzero(c["x"]); s["fp_n"] += c["x"].size
            if lay.relu:
                s["relu_nz"] += np.count_nonzero(c["r"]); s["relu_n"] += c["r"].size
            out = c["out"]
            s["out_nz"] += np.count_nonzero(out); s["out_n"] += out.size
            s["dyb_nz"] += np.count_nonzero(r["dy_before"])
            s["dya_nz"] += np.count_nonzero(r["dy"]); s["dy_n"] += r["dy"].size
            s["tau_sum"] += r["tau"]; s["batches"] += 1

    def to_list(self, net, variant):
        def frac(a, b):
            return round(float(a) / b, 6) if b else None

        out = []
        for s, lay in zip(self.s, net.compute):
            prod = net.producer(lay.src) if lay.src != "input" else None
            pruned = bool(lay.prune and variant.prune_p)
            out.append({
                "name": lay.name, "type": lay.kind, "bn": lay.bn, "relu": lay.relu,
                "add": lay.add, "pool": None if lay.pool_spec is None else
                ("global avg" if lay.pool_spec.is_global else
                 f"{lay.pool_spec.kind} {lay.pool_spec.k}/{lay.pool_spec.stride}"),
                "input_kind": lay.input_kind, "grad_kind": lay.grad_kind,
                "producer": prod,
                "producer_add": bool(prod and net.compute_layer(prod).add is not None),
                "bdwp": bool(lay.bdwp and variant.nm is not None),
                "pruned": pruned, "p": float(variant.prune_p) if pruned else 0.0,
                "fp_density": frac(s["fp_nz"], s["fp_n"]),
                "relu_density": frac(s["relu_nz"], s["relu_n"]),
                "out_density": frac(s["out_nz"], s["out_n"]),
                "dy_density_before": frac(s["dyb_nz"], s["dy_n"]),
                "dy_density_after": frac(s["dya_nz"], s["dy_n"]),
                "tau_mean": (float(s["tau_sum"] / s["batches"])
                             if pruned and s["batches"] else None)})
        return out


def _evaluate(model, masks, x, y, chunk=512):
    correct, loss = 0, 0.0
    for s in range(0, len(y), chunk):
        logits, _ = model.forward(x[s:s + chunk], masks, train=False)
        l, _ = _softmax_xent(logits, y[s:s + chunk])
        loss += l * len(y[s:s + chunk])
        correct += int((logits.argmax(axis=1) == y[s:s + chunk]).sum())
    return correct / len(y), loss / len(y)


def train_run(variant, seed, cfg=None, data=None, progress=None):
    """Train the BN network with one variant and seed (SGD with momentum, weight decay on the
    conv/FC weights, the digits study's schedule: :class:`TrainConfig`); returns the statistics
    document (:func:`validate`). ``progress(epoch, test_acc)`` is called after every epoch."""
    variant, seed, cfg, (xtr, ytr, xte, yte), (init_rng, shuffle_rng, prune_rng) = \
        prepare_run(variant, seed, cfg, data)
    if variant.srste:
        raise ValueError(f"variant {variant.name!r}: the BN study does not run SR-STE")
    model = BNResNet(init_rng)
    n = len(model.layers)
    params = [("w", i) for i in range(n)] + [
        ("gamma" if model.layers[i].bn else "b", i) for i in range(n)] + [
        ("beta", i) for i in range(n) if model.layers[i].bn]
    vel = {k: 0.0 for k in params}
    steps_per_epoch = len(ytr) // cfg.batch_size
    stats = _Stats(model.layers)
    history = {"test_acc": [], "test_loss": [], "train_loss": [], "epoch_seconds": []}
    step = 0
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t_ep = time.perf_counter()
        sample = epoch >= cfg.epochs - cfg.stats_epochs
        order = shuffle_rng.permutation(len(ytr))
        ep_loss, ep_n = 0.0, 0
        for bi in range(steps_per_epoch):
            idx = order[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            xb, yb = xtr[idx], ytr[idx]
            masks = model.masks(variant)
            logits, cache = model.forward(xb, masks)
            loss, d = _softmax_xent(logits, yb)
            ep_loss += loss * len(yb)
            ep_n += len(yb)
            recs = model.backward(cache, d, masks, variant, prune_rng)
            if sample:
                stats.add(cache, recs, model.net)
            lr = _lr_at(cfg, step, steps_per_epoch)
            for kind, i in params:
                r = recs[i]
                if kind == "w":
                    g = r["dw"] + cfg.weight_decay * model.w[i]
                else:
                    g = r["d" + kind] if kind != "b" else r["db"]
                vel[(kind, i)] = cfg.momentum * vel[(kind, i)] + g
                arr = getattr(model, kind)
                arr[i] = arr[i] - lr * vel[(kind, i)]
            step += 1
        te_acc, te_loss = _evaluate(model, model.masks(variant), xte, yte)
        history["test_acc"].append(round(te_acc, 6))
        history["test_loss"].append(round(te_loss, 6))
        history["train_loss"].append(round(ep_loss / ep_n, 6))
        history["epoch_seconds"].append(round(time.perf_counter() - t_ep, 4))
        if progress is not None:
            progress(epoch + 1, te_acc)
        if not np.isfinite(ep_loss):
            raise FloatingPointError(f"{variant.name} seed {seed}: loss diverged at epoch "
                                     f"{epoch + 1}")
    from sparseforge import __version__
    doc = {"schema": SCHEMA_ID, "schema_version": SCHEMA_VERSION,
           "meta": {"variant": variant.name,
                    **{k: v for k, v in variant.to_dict().items() if k != "name"},
                    "seed": seed, "epochs": cfg.epochs,
                    "stats_epochs": list(range(cfg.epochs - cfg.stats_epochs + 1,
                                               cfg.epochs + 1)),
                    "batches_sampled": int(stats.s[0]["batches"]),
                    "dataset": "sklearn digits", "label": LABEL, "network": NETWORK_NAME,
                    "train_samples": int(len(ytr)), "test_samples": int(len(yte)),
                    "config": asdict(cfg), "bn": {"eps": BN_EPS, "momentum": BN_MOMENTUM},
                    "sparseforge_version": __version__,
                    "seconds": round(time.perf_counter() - t_start, 3)},
           "accuracy": {"test_final": history["test_acc"][-1]},
           "history": history,
           "layers": stats.to_list(model.net, variant)}
    validate(doc)
    return doc
