"""One integer training step of a network with batch norm and residual adds (the training
study's ``digits-resnet``), end to end, with the pluggable backends of
:mod:`sparseforge.sim.host.e2e` (golden model, array model, or the RTL).

The step (*ours*; docs/e2e.md "A residual network with batch norm") follows
:func:`sparseforge.sim.host.e2e.train_step` -- the same conv view, write-back, ReLU, max-pool,
loss gradient, stochastic pruning, N:M masks, update and pre-generation -- over a graph: a
layer reads the tensor ``src`` names (``"input"`` or a layer's output, its ReLU and pool
fused), and per layer, after the array's FP:

* **BN** (``bn``; host): ``y = golden.batchnorm_forward_int(z, gamma, beta)`` (batch
  statistics per channel; the integer definition in ``sim/reference/golden.py``);
* **residual add** (``add``; host): ``y = sat(y + t[add])``, before the ReLU;
* ReLU, then the fused pool: a max-pool (as the digits CNN's) or a global average pool
  (``golden.avgpool_global_int``; its ``(B, C)`` output feeds an FC layer).

Backward, from the last layer to the first, a tensor read by several layers (a block's input:
its first conv and its shortcut or add) gets the sum of their gradients (``sat`` after each
sum). Per layer: pool backward, ReLU derivative, the add's gradient passed on unchanged to
``add``'s producer, BN backward (``golden.batchnorm_backward_int`` -> ``dz``, ``dgamma``,
``dbeta``), pruning of ``dz`` (layers with ``prune``), then BP into ``src``'s gradient (not for
a layer reading the input) and WG. Updates: ``W' = sat(W - (dW >> lr_shift))``, ``gamma' =
sat(gamma - (sat(dgamma) >> lr_shift))``, ``beta'`` alike; no biases (as the digits CNN).

BN, adds and pools run on the host in this version (the backends run the array phases,
pruning and pre-generation); the RTL backend runs with ``stages=False``.
"""

from __future__ import annotations

import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.network import NETWORKS_DIR, Network, load_network
from sparseforge.sim.host.e2e import (StepResult, TrainState, _conv_view_in, _conv_view_w,
                                      _from_conv_view_out, _nm, _sat, check_step_args,
                                      init_state, maxpool_backward, maxpool_forward,
                                      prune_gradient)
from sparseforge.sim.reference import golden

__all__ = ["load_graph_net", "init_graph_state", "train_step_graph", "is_graph_net"]


def load_graph_net(name: str, *, batch: int) -> Network:
    """A shipped example network (``gen/networks/<name>.yaml``) with its batch replaced,
    parsed without a configuration (its global average pool is a host stage here, not a pool
    fused into the write-back, which is what a configuration checks)."""
    path = NETWORKS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown network {name!r}; known: "
                         f"{sorted(p.stem for p in NETWORKS_DIR.glob('*.yaml'))}")
    return load_network(path, None, batch=batch)


def is_graph_net(net: Network) -> bool:
    """The network needs :func:`train_step_graph` (a BN, an add, a branch or an average
    pool), not :func:`~sparseforge.sim.host.e2e.train_step`."""
    return any(lay.bn or lay.add is not None or (lay.pool_spec is not None and
                                                 lay.pool_spec.kind != "max")
               or (k and net.producer(lay.src) != net.compute[k - 1].name)
               for k, lay in enumerate(net.compute))


def init_graph_state(net: Network, cfg: AcceleratorConfig, *, seed: int) -> TrainState:
    """:func:`~sparseforge.sim.host.e2e.init_state`'s weights and masks, plus per BN layer
    ``gamma = one`` and ``beta = 0`` in ``state.bn`` (``{layer: (gamma, beta)}``)."""
    st = init_state(net, cfg, seed=seed)
    one = 1 << cfg.frac_bits
    st.bn = {lay.name: (np.full(lay.cout, one, np.int64), np.zeros(lay.cout, np.int64))
             for lay in net.compute if lay.bn}
    return st


def _pool_forward(lay, r):
    spec = lay.pool_spec
    if spec is None:
        return r, None
    if spec.kind == "avg" and spec.is_global:
        return golden.avgpool_global_int(r), r.shape
    if spec.kind == "max" and not spec.padding:
        return maxpool_forward(r, spec.k, spec.stride)
    raise ValueError(f"{lay.label}: pools here are max-pools without padding or global "
                     f"average pools, not {spec}")


def _pool_backward(lay, d, ctx, r_shape, dw):
    spec = lay.pool_spec
    if spec is None:
        return d
    if spec.kind == "avg":
        return golden.avgpool_global_backward_int(d, ctx)
    return maxpool_backward(d, ctx, r_shape, spec.k, spec.stride, dw)


async def train_step_graph(net: Network, cfg: AcceleratorConfig, state: TrainState, x, labels,
                           backend, *, lr_shift: int = 4, base_seed: int = 1) -> StepResult:
    """One training step of a graph network (module docstring) on ``backend``; ``state`` (from
    :func:`init_graph_state`) is not modified, the updated one is ``result.state``.
    ``result.fp[layer]``: ``x``, ``z`` (the array's output), ``y`` (after BN; absent without),
    ``s`` (after the add, before the ReLU), ``r``, ``a`` (the layer's output after the pool);
    ``result.bp[layer]``: ``d``, ``g`` (at the array's output: after the pool, ReLU, add and
    BN backward), ``tau``, ``seed``, ``g_pruned``, ``dx``, ``dw``, ``w_new``, ``dgamma``,
    ``dbeta``, ``gamma_new``, ``beta_new``, ``fwd``, ``bwd``."""
    x, labels = check_step_args(net, x, labels, lr_shift)
    dw_, fb = cfg.data_width, cfg.frac_bits
    bn_state = getattr(state, "bn", {})
    missing = [lay.name for lay in net.compute if lay.bn and lay.name not in bn_state]
    if missing:
        raise ValueError(f"state has no BN parameters for {missing} (init_graph_state)")
    res = StepResult()
    n_nm = _nm(net, cfg)[0]

    # ---- forward
    t = {"input": x}
    for lay in net.compute:
        a = t[net.producer(lay.src)] if lay.src != "input" else x
        w4 = _conv_view_w(lay, state.weights[lay.name])
        fwd, _ = (_conv_view_w(lay, mk) for mk in state.masks[lay.name])
        if lay.kind == "fc" and a.ndim == 4:
            a = a.reshape(a.shape[0], -1)
        xin = _conv_view_in(lay, a)
        backend.layer = lay.name
        z = _from_conv_view_out(lay, await backend.fp(xin, w4, fwd, lay.stride, lay.padding))
        rec = {"x": xin, "z": z}
        s = z
        if lay.bn:
            s, rec["_bn"] = golden.batchnorm_forward_int(z, *bn_state[lay.name], fb, dw_)
            rec["y"] = s
        if lay.add is not None:
            s = _sat(s + t[net.producer(lay.add)], dw_)
        rec["s"] = s
        r = np.maximum(s, 0) if lay.relu else s
        rec["r"] = r
        out, rec["_pool"] = _pool_forward(lay, r)
        rec["a"] = out
        t[lay.name] = out
        res.fp[lay.name] = rec
    logits = t[net.compute[-1].name]
    if logits.ndim != 2:
        raise ValueError(f"the last layer must give (B, classes) logits, not {logits.shape}")
    onehot = np.zeros(logits.shape, np.int64)
    onehot[np.arange(net.batch), labels] = 1 << fb
    res.logits = logits
    res.dlogits = _sat(logits - onehot, dw_)

    # ---- backward, update, pre-generation
    weights, masks, bn_new = dict(state.weights), dict(state.masks), dict(bn_state)
    grads = {net.compute[-1].name: res.dlogits}

    def add_grad(name, g):
        grads[name] = g if name not in grads else _sat(grads[name] + g, dw_)

    for lay in reversed(net.compute):
        f = res.fp[lay.name]
        backend.layer = lay.name
        d = grads.pop(lay.name)
        rec = {"d": d}
        g = _pool_backward(lay, d, f["_pool"], f["r"].shape, dw_)
        if lay.relu:
            g = g * (f["s"] > 0)
        if lay.add is not None:
            add_grad(net.producer(lay.add), g)
        if lay.bn:
            gamma, beta = bn_state[lay.name]
            g, dgamma, dbeta = golden.batchnorm_backward_int(g, gamma, f["_bn"], fb, dw_)
            rec.update(dgamma=dgamma, dbeta=dbeta,
                       gamma_new=_sat(gamma - (_sat(dgamma, dw_) >> lr_shift), dw_),
                       beta_new=_sat(beta - (_sat(dbeta, dw_) >> lr_shift), dw_))
            bn_new[lay.name] = (rec["gamma_new"], rec["beta_new"])
        g4 = g.T[None, :, None, :].copy() if lay.kind == "fc" else g
        rec["g"] = g4
        gp = rec["g_pruned"] = await prune_gradient(backend, rec, net, lay, g4, base_seed, dw_)
        w = state.weights[lay.name]
        w4 = _conv_view_w(lay, w)
        _, bwd = (_conv_view_w(lay, mk) for mk in state.masks[lay.name])
        xin = f["x"]
        if lay.src != "input":
            dx4 = await backend.bp(gp, w4, bwd, xin.shape, lay.stride, lay.padding)
            src = net.producer(lay.src)
            prev = res.fp[src]["a"]
            dx = dx4[0, :, 0, :].T.reshape(prev.shape).copy() if lay.kind == "fc" else dx4
            rec["dx"] = dx
            add_grad(src, dx)
        dw4 = await backend.wg(xin, gp, w4.shape, lay.stride, lay.padding)
        dw = np.asarray(dw4).reshape(w.shape)
        w_new = _sat(w - (dw >> lr_shift), dw_)
        rec.update(dw=dw, w_new=w_new)
        weights[lay.name] = w_new
        if lay.bdwp:
            nf, nb = await backend.pregen(w_new, n_nm)
        else:
            nf, nb = masks[lay.name]
        rec.update(fwd=np.asarray(nf, bool), bwd=np.asarray(nb, bool))
        masks[lay.name] = (rec["fwd"], rec["bwd"])
        res.bp[lay.name] = rec
    for rec in res.fp.values():            # the host's private contexts are not tensors
        rec.pop("_bn", None)
        rec.pop("_pool", None)
    res.state = TrainState(weights, masks, bn_new)
    return res
