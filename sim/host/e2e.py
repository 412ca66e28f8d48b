"""One integer training step of a CNN, end to end, with a pluggable backend (golden model,
array model, or the RTL through :class:`sparseforge.sim.host.driver.Driver`).

The step (*ours*; ``docs/e2e.md`` has the same definition with the figures). All tensors are
``int64`` arrays of signed ``cfg.data_width``-bit fixed-point values with ``cfg.frac_bits``
fractional bits (``one = 2**frac_bits``); ``sat`` clips to the signed ``data_width`` range and
``wb`` is :func:`golden.writeback` (shift right by ``frac_bits``, round half to even, saturate).
The network is a :class:`sparseforge.gen.network.Network`; its compute layers (conv or FC,
with fused ReLU and max-pool) are run in order. Per layer ``l`` (weight ``W``, masks ``fwd``,
``bwd``):

* **conv view.** A conv layer's input is ``x (B, Cin, H, W)``. An FC layer runs as a 1x1
  convolution with the batch on the row axis: its input ``(B, C, H, W)`` is flattened to
  ``(B, Cin)`` and viewed as ``(1, Cin, 1, B)``, its weight ``(Cout, Cin)`` as ``(Cout, Cin, 1,
  1)``, its output ``(1, Cout, 1, B)`` is read back as ``(B, Cout)``.
* **FP** (backend: array): ``z = wb(conv2d_forward(x, W * fwd, stride, padding))``.
* **host**: ``r = max(z, 0)`` when the layer has a ReLU (else ``r = z``); a max-pool (kernel
  ``k``, stride ``s``) takes each window's maximum, the first one in row-major window order
  on ties, and remembers its position; the result is the next layer's input. The last
  layer's ``(B, classes)`` output are the logits.
* **loss gradient** (host): ``dlogits = sat(logits - one * onehot(label))`` (the gradient of
  ``0.5 * ||logits - onehot||^2``).
* **backward**, from the last layer to the first, with ``d`` the gradient of the layer's
  output: max-pool backward (``d`` goes to the remembered position of each window, summed
  where windows overlap, then ``sat``), ReLU derivative (``g = d * (z > 0)``), giving the
  gradient ``g`` of ``z`` (FC: in the conv view ``(1, Cout, 1, B)``).
* **stochastic pruning** (backend: pruner; only layers with ``prune``, the network's flag):
  ``tau = golden.prune_threshold_int(g, *golden.prune_threshold_params(p, g.size),
  data_width)`` with ``p`` the network's ``prune_p``, ``seed = layer_seed(base_seed, l)``,
  ``gp = golden.stochastic_prune_int(g, tau, seed, data_width)`` over ``g``'s C order (conv
  view). Layers without pruning use ``gp = g``.
* **BP** (backend: array; not run for the first layer): ``dx = wb(conv2d_backward_input(gp,
  W * bwd, x.shape, stride, padding))``, reshaped to the previous layer's output shape.
* **WG** (backend: array): ``dW = wb(conv2d_backward_weight(x, gp, W.shape, stride,
  padding))``.
* **update**: ``W' = sat(W - (dW >> lr_shift))`` (arithmetic shift: floor), dense
  (straight-through: the masks do not gate the update). On the host, or -- a backend with
  ``update_in_wg`` (the RTL with the weights on chip) -- fused into the WG job, the weight
  never leaving the accelerator.
* **pre-generation** (backend: pre-generation; BDWP layers only): ``(fwd', bwd') =
  golden.bdwp_masks(W', N, M)`` -- the next step's masks. Dense layers keep all-ones masks.

:func:`train_step` returns a :class:`StepResult` whose :meth:`~StepResult.tensors` lists
every intermediate tensor under a stable name (``conv1.fp.z``, ``fc2.bp.g_pruned``, ...);
:func:`compare` says which differ. The step is ``async`` so the RTL backend can await the
simulator; :class:`GoldenBackend` and :class:`ModelBackend` never wait on anything
(``asyncio.run(train_step(...))`` runs them outside cocotb).

Backends implement ``fp``, ``bp``, ``wg`` (conv-view operands), ``prune`` and ``pregen``,
all ``async``, and append one record per phase to ``self.log`` (layer, phase, and the
counters they know).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.gen.network import NETWORKS_DIR, Network, load_network
from sparseforge.gen.mapper import array as am
from sparseforge.gen.schedule import Op
from sparseforge.hdl.axil import SCHED_RUNNING, STATUS_DONE, STATUS_ERROR
from sparseforge.hdl.wire import PHASE_CODES, Phase
from sparseforge.sim.host.driver import LazyArrayStats
from sparseforge.sim.host.pregen import pregen_reassemble, pregen_schedule
from sparseforge.sim.reference import golden

__all__ = ["TrainState", "StepResult", "GoldenBackend", "ModelBackend", "RTLBackend",
           "load_net", "init_state", "make_batch", "layer_seed", "prune_plan", "prune_gradient",
           "check_step_args", "train_step", "compare", "step_loss",
           "maxpool_forward", "maxpool_backward", "cycle_table", "report_phase",
           "report_step", "REPORT_SCHEMA_VERSION", "PHASE_CODES"]

MASK32 = 0xFFFF_FFFF


# ------------------------------------------------------------------------------------------
# set-up
# ------------------------------------------------------------------------------------------

def load_net(name: str, cfg: AcceleratorConfig, *, batch: int | None = None) -> Network:
    """An example network (``gen/networks/<name>.yaml``) with its batch replaced by ``batch``
    (:func:`sparseforge.gen.network.load_network` restricted to the shipped examples)."""
    path = NETWORKS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown network {name!r}; known: "
                         f"{sorted(p.stem for p in NETWORKS_DIR.glob('*.yaml'))}")
    return load_network(path, cfg, batch=batch)


@dataclass
class TrainState:
    """Weights (conv ``(Cout, Cin, Kh, Kw)``, FC ``(Cout, Cin)``) and their ``(fwd, bwd)``
    masks, by layer name; ``bn``: ``(gamma, beta)`` of each batch-norm layer (a graph network,
    :mod:`sparseforge.sim.host.e2e_graph`)."""
    weights: dict
    masks: dict
    bn: dict = field(default_factory=dict)


def _sat(a, dw):
    return np.clip(a, -(1 << (dw - 1)), (1 << (dw - 1)) - 1).astype(np.int64)


def _w_shape(lay):
    return (lay.cout, lay.cin, lay.kh, lay.kw) if lay.kind == "conv" else (lay.cout, lay.cin)


def _nm(net, cfg):
    return net.nm if net.nm is not None else (min(2, cfg.nm_n_max), cfg.nm_m)


def init_state(net: Network, cfg: AcceleratorConfig, *, seed: int) -> TrainState:
    """He-initialised fixed-point weights (``round(N(0, 2/fan_in) * 2**frac_bits)``,
    saturated) and their masks: ``golden.bdwp_masks(W, N, M)`` for BDWP layers, all ones
    otherwise."""
    rng = np.random.default_rng(seed)
    n, m = _nm(net, cfg)
    weights, masks = {}, {}
    for lay in net.compute:
        shape = _w_shape(lay)
        fan_in = lay.cin * lay.kh * lay.kw
        w = np.rint(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape) * (1 << cfg.frac_bits))
        w = _sat(w, cfg.data_width)
        weights[lay.name] = w
        if lay.bdwp:
            masks[lay.name] = golden.bdwp_masks(w, n, m)
        else:
            masks[lay.name] = (np.ones(shape, bool), np.ones(shape, bool))
    return TrainState(weights, masks)


def make_batch(net: Network, cfg: AcceleratorConfig, *, seed: int):
    """``(x, labels)``: ``x (B, C, H, W)`` in ``[0, one]``. For a ``1x16x16`` input, digits of
    scikit-learn's set (upsampled as in ``sim/train.py``), picked by ``seed``; otherwise
    uniform random values. ``labels`` are the digits' classes, or random classes."""
    rng = np.random.default_rng(seed)
    one = 1 << cfg.frac_bits
    B = net.batch
    classes = net.compute[-1].cout
    if net.input == (1, 16, 16):
        from sklearn.datasets import load_digits
        d = load_digits()
        idx = rng.choice(len(d.target), B, replace=False)
        img = d.images[idx].repeat(2, axis=1).repeat(2, axis=2)[:, None]     # 0..16
        x = np.rint(img * one / 16.0).astype(np.int64)
        labels = d.target[idx].astype(np.int64) % classes
    else:
        x = rng.integers(0, one + 1, (B,) + tuple(net.input))
        labels = rng.integers(0, classes, B)
    return _sat(x, cfg.data_width), labels


def layer_seed(base_seed: int, layer_id: int) -> int:
    """The pruner seed of layer ``layer_id``: a non-zero 32-bit value (xorshift32 needs one)."""
    return ((base_seed * 0x9E3779B1 + (layer_id + 1) * 0x85EBCA6B) & MASK32) % MASK32 + 1


def prune_plan(net: Network, lay, g, base_seed: int, data_width: int) -> tuple:
    """``(k_p, shift, seed, tau)`` of layer ``lay``'s stochastic pruning of its gradient ``g``
    (the golden rule: the network's ``prune_p``, the layer's seed)."""
    k_p, s = golden.prune_threshold_params(net.prune_p, np.asarray(g).size)
    return (k_p, s, layer_seed(base_seed, lay.id),
            golden.prune_threshold_int(g, k_p, s, data_width))


async def prune_gradient(backend, rec: dict, net: Network, lay, g, base_seed: int,
                         data_width: int):
    """``g`` pruned by ``backend`` when ``lay`` prunes (its ``tau`` and ``seed`` into
    ``rec``), else ``g``."""
    if not lay.prune:
        return g
    k_p, s, seed, tau = prune_plan(net, lay, g, base_seed, data_width)
    gp = await backend.prune(g, tau, seed, rule=(k_p, s))
    rec.update(tau=np.int64(tau), seed=np.int64(seed))
    return gp


# ------------------------------------------------------------------------------------------
# host operations
# ------------------------------------------------------------------------------------------

def maxpool_forward(a, k, s):
    """Max-pool ``(B, C, H, W)`` with a ``k x k`` window and stride ``s``; returns ``(out,
    arg)`` with ``arg`` the winning window position ``dy * k + dx`` (the first maximum in
    row-major window order on ties)."""
    B, C, H, W = a.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = arg = None
    for p in range(k * k):
        dy, dx = divmod(p, k)
        v = a[:, :, dy:dy + s * (Ho - 1) + 1:s, dx:dx + s * (Wo - 1) + 1:s]
        if out is None:
            out, arg = v.copy(), np.zeros(v.shape, np.int64)
        else:
            better = v > out                       # strictly greater: ties keep the first
            out = np.where(better, v, out)
            arg = np.where(better, p, arg)
    return out, arg


def maxpool_backward(d, arg, in_shape, k, s, dw):
    """Route ``d`` to the remembered positions; overlapping windows add, then saturate."""
    g = np.zeros(in_shape, np.int64)
    Ho, Wo = d.shape[2:]
    for p in range(k * k):
        dy, dx = divmod(p, k)
        g[:, :, dy:dy + s * (Ho - 1) + 1:s, dx:dx + s * (Wo - 1) + 1:s] += np.where(arg == p, d, 0)
    return _sat(g, dw)


def _conv_view_in(lay, a):
    if lay.kind == "conv":
        return a
    B = a.shape[0]
    return a.reshape(B, -1).T[None, :, None, :].copy()


def _conv_view_w(lay, w):
    return w if w.ndim == 4 else w[:, :, None, None]


def _from_conv_view_out(lay, z4):
    return z4 if lay.kind == "conv" else z4[0, :, 0, :].T.copy()


# ------------------------------------------------------------------------------------------
# the step
# ------------------------------------------------------------------------------------------

@dataclass
class StepResult:
    """Every tensor of one step. ``fp[name]``: ``x`` (conv-view input), ``z``, ``r`` (after
    ReLU), ``a`` (layer output, after pooling; FC ``(B, Cout)``), ``arg`` (pool winners);
    ``bp[name]``: ``d`` (output gradient), ``g``, ``tau``, ``seed``, ``g_pruned``, ``dx``
    (absent for the first layer), ``dw``, ``w_new``, ``fwd``, ``bwd`` (next masks)."""
    fp: dict = field(default_factory=dict)
    bp: dict = field(default_factory=dict)
    logits: np.ndarray | None = None
    dlogits: np.ndarray | None = None
    state: TrainState | None = None

    def tensors(self) -> dict:
        out = {}
        for name, d in self.fp.items():
            for k, v in d.items():
                out[f"{name}.fp.{k}"] = v
        out["loss.logits"] = self.logits
        out["loss.dlogits"] = self.dlogits
        for name, d in self.bp.items():
            for k, v in d.items():
                out[f"{name}.bp.{k}"] = v
        return out


def step_loss(logits, labels, cfg: AcceleratorConfig) -> float:
    """The step's loss, ``0.5 * ||logits - onehot||^2`` per sample (batch mean), in real units
    (``logits / one``): the loss whose gradient the step's ``dlogits`` is. A function of the
    integer logits only, so an exact RTL step has exactly the golden step's loss."""
    one = float(1 << cfg.frac_bits)
    z = np.asarray(logits, np.float64) / one
    t = np.zeros(z.shape)
    t[np.arange(z.shape[0]), np.asarray(labels, np.int64)] = 1.0
    return float(0.5 * np.sum((z - t) ** 2) / z.shape[0])


def compare(a: StepResult, b: StepResult) -> list[str]:
    """Names of the tensors that differ (shape, dtype kind or any value), each with the first
    differing index; ``[]`` when the two steps are equal bit for bit."""
    ta, tb = a.tensors(), b.tensors()
    bad = []
    for k in sorted(set(ta) | set(tb)):
        if k not in ta or k not in tb:
            bad.append(f"{k}: only in {'first' if k in ta else 'second'}")
            continue
        x, y = np.asarray(ta[k]), np.asarray(tb[k])
        if x.shape != y.shape:
            bad.append(f"{k}: shapes {x.shape} != {y.shape}")
        elif not np.array_equal(x, y):
            idx = tuple(int(i) for i in np.argwhere(x != y)[0])
            bad.append(f"{k}: {int(np.count_nonzero(x != y))} of {x.size} differ, first at "
                       f"{idx}: {x[idx]} != {y[idx]}")
    return bad


def check_step_args(net: Network, x, labels, lr_shift) -> tuple:
    """``(x, labels)`` as int64 arrays once a step's arguments are checked (``ValueError``
    naming the bad one): ``lr_shift`` in [0, 62], ``x`` of the batch's input shape, one label
    per sample, each a class index -- checked before anything runs: a negative label would
    silently pick a class from the end, a large one fail only after the forward pass."""
    if not isinstance(lr_shift, int) or isinstance(lr_shift, bool) or not 0 <= lr_shift <= 62:
        raise ValueError(f"lr_shift must be an integer in [0, 62], not {lr_shift!r}")
    x = np.asarray(x, np.int64)
    labels = np.asarray(labels, np.int64)
    if x.shape != (net.batch,) + tuple(net.input):
        raise ValueError(f"x must have shape {(net.batch,) + tuple(net.input)}, not {x.shape}")
    if labels.shape != (net.batch,):
        raise ValueError(f"labels must have shape ({net.batch},), not {labels.shape}")
    classes = net.compute[-1].cout
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        raise ValueError(f"labels must be class indices in [0, {classes}), not "
                         f"{sorted(set(int(v) for v in bad))}")
    return x, labels


async def train_step(net: Network, cfg: AcceleratorConfig, state: TrainState, x, labels,
                     backend, *, lr_shift: int = 4, base_seed: int = 1) -> StepResult:
    """One training step (module docstring) on ``backend``; ``state`` is not modified (the
    updated one is ``result.state``)."""
    x, labels = check_step_args(net, x, labels, lr_shift)
    dw_, fb = cfg.data_width, cfg.frac_bits
    res = StepResult()
    n_nm = _nm(net, cfg)[0]
    # a backend that keeps the weights on chip places them (and their masks) once; a later
    # step whose weights are still there loads nothing
    load_network = getattr(backend, "load_network", None)
    if load_network is not None:
        await load_network(
            {lay.name: _conv_view_w(lay, state.weights[lay.name]) for lay in net.compute},
            {lay.name: tuple(_conv_view_w(lay, mk) for mk in state.masks[lay.name])
             for lay in net.compute})

    # ---- forward
    a = x
    for lay in net.compute:
        w4 = _conv_view_w(lay, state.weights[lay.name])
        fwd, bwd = (_conv_view_w(lay, mk) for mk in state.masks[lay.name])
        xin = _conv_view_in(lay, a)
        backend.layer = lay.name
        z4 = await backend.fp(xin, w4, fwd, lay.stride, lay.padding)
        z = _from_conv_view_out(lay, z4)
        r = np.maximum(z, 0) if lay.relu else z
        rec = {"x": xin, "z": z, "r": r}
        if lay.pool is not None:
            if lay.kind != "conv":
                raise ValueError(f"{lay.label}: max-pool after an FC layer is not supported")
            a, rec["arg"] = maxpool_forward(r, *lay.pool)
        else:
            a = r
        rec["a"] = a
        res.fp[lay.name] = rec
        # a backend with the between-layer stages on chip runs this layer's ReLU / pooling
        # there, into the next layer's input (checked against ``a``)
        fwd_stage = getattr(backend, "stage_forward", None)
        if fwd_stage is not None and lay.id + 1 < len(net.compute):
            nxt = net.compute[lay.id + 1]
            await fwd_stage(lay, nxt, z4, _conv_view_in(nxt, a))
    logits = a
    if logits.ndim != 2:
        raise ValueError(f"the last layer must give (B, classes) logits, not {logits.shape}")
    onehot = np.zeros(logits.shape, np.int64)
    onehot[np.arange(net.batch), labels] = 1 << fb
    res.logits = logits
    res.dlogits = d = _sat(logits - onehot, dw_)
    loss_stage = getattr(backend, "stage_loss", None)
    if loss_stage is not None:
        backend.layer = net.compute[-1].name
        await loss_stage(net.compute[-1], labels, d.T[None, :, None, :].copy())

    # ---- backward, update, pre-generation
    weights, masks = dict(state.weights), dict(state.masks)
    # a backend with a data plane pre-generates a layer's masks beside the next layer's WG
    # (``pregen_beside_wg``): the layer waits here until that WG runs
    pending = None
    defer = getattr(backend, "pregen_beside_wg", None)

    def set_masks(lay, rec, nf, nb):
        rec.update(fwd=np.asarray(nf, bool), bwd=np.asarray(nb, bool))
        masks[lay.name] = (rec["fwd"], rec["bwd"])

    def layer_gradient(lay, d):
        """The pool / ReLU backward of layer ``lay`` for its output gradient ``d``, in the conv
        view (FC: ``(1, Cout, 1, B)``)."""
        f = res.fp[lay.name]
        if lay.pool is not None:
            d = maxpool_backward(d, f["arg"], f["r"].shape, *lay.pool, dw_)
        g = d * (f["z"] > 0) if lay.relu else d
        return g.T[None, :, None, :].copy() if lay.kind == "fc" else g

    bwd_stage = getattr(backend, "stage_backward", None)

    g_next = None                          # the next layer's gradient, when already computed
    for lay in reversed(net.compute):
        f = res.fp[lay.name]
        backend.layer = lay.name
        rec = {"d": d}
        # FC: (B, Cout) -> the conv view (1, Cout, 1, B)
        g4 = layer_gradient(lay, d) if g_next is None else g_next
        g_next = None
        rec["g"] = g4
        gp = rec["g_pruned"] = await prune_gradient(backend, rec, net, lay, g4, base_seed, dw_)
        w = state.weights[lay.name]
        w4 = _conv_view_w(lay, w)
        fwd, bwd = (_conv_view_w(lay, mk) for mk in state.masks[lay.name])
        xin = f["x"]
        if lay.id > 0:
            p_lay = net.compute[lay.id - 1]
            if bwd_stage is not None:
                # where the on-chip backward stage of the previous layer will run (before
                # this layer's WG or after it): decided before BP places its result
                backend.plan_backward(lay, p_lay, int(res.fp[lay.name]["z"].size),
                                      int(res.fp[p_lay.name]["z"].size))
            dx4 = await backend.bp(gp, w4, bwd, xin.shape, lay.stride, lay.padding)
            prev = res.fp[p_lay.name]["a"]
            if lay.kind == "fc":                  # (1, Cin, 1, B) -> previous output shape
                dx = dx4[0, :, 0, :].T.reshape(prev.shape).copy()
            else:
                dx = dx4
            rec["dx"] = dx
            if bwd_stage is not None:
                # the previous layer's gradient from dx on chip (checked against the golden
                # one, which the next iteration takes over); the backend may hold it until
                # this layer's WG has run
                g_next = layer_gradient(p_lay, dx)
                # its pruning (threshold rule, seed, the golden threshold) may run beside the
                # WG job too, right after the stage
                await bwd_stage(p_lay, lay, g_next, prune=prune_plan(
                    net, p_lay, g_next, base_seed, dw_) if p_lay.prune else None)
        # a backend with the weights on chip fuses the update into the WG job: it returns dW
        # and the updated weight it holds (read back for checking)
        fused = getattr(backend, "update_in_wg", None)
        upd = {"update": (w4, lr_shift)} if fused is not None and fused(xin) else {}
        if pending is not None:
            p_lay, p_w, p_rec = pending
            r, (nf, nb) = await backend.wg_with_pregen(xin, gp, w4.shape, lay.stride,
                                                       lay.padding, p_w, n_nm, p_lay.name,
                                                       **upd)
            set_masks(p_lay, p_rec, nf, nb)
            pending = None
        else:
            r = await backend.wg(xin, gp, w4.shape, lay.stride, lay.padding, **upd)
        if upd:
            dw4, w_new4 = r
            dw = dw4.reshape(w.shape)
            w_new = w_new4.reshape(w.shape)
        else:
            dw = r.reshape(w.shape)
            w_new = _sat(w - (dw >> lr_shift), dw_)
        rec.update(dw=dw, w_new=w_new)
        if bwd_stage is not None:
            await backend.after_wg()
            backend.layer = lay.name
        weights[lay.name] = w_new
        if lay.bdwp and lay.id > 0 and defer is not None and defer(w_new, n_nm):
            await backend.pregen_step(w_new)          # the schedule's PREGEN steps, in place
            pending = (lay, w_new, rec)
        elif lay.bdwp:
            set_masks(lay, rec, *(await backend.pregen(w_new, n_nm)))
        else:
            set_masks(lay, rec, *masks[lay.name])
        res.bp[lay.name] = rec
        if lay.id > 0:
            d = rec["dx"]
    if pending is not None:                # (the loop ends with a WG: never the case)
        p_lay, p_w, p_rec = pending
        set_masks(p_lay, p_rec, *(await backend.pregen_alone(p_w, n_nm, p_lay.name)))
    res.state = TrainState(weights, masks)
    return res


# ------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------

class _Backend:
    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.layer = None
        self.log: list[dict] = []

    def _wb(self, acc):
        return golden.writeback(acc, self.cfg.frac_bits, self.cfg.data_width)


class GoldenBackend(_Backend):
    """Every phase by the numpy golden model (:mod:`sparseforge.sim.reference.golden`)."""

    async def fp(self, x, w, mask, stride, padding):
        self.log.append({"layer": self.layer, "phase": "fp"})
        return self._wb(golden.conv2d_forward(x, w * mask, stride, padding))

    async def bp(self, g, w, mask, x_shape, stride, padding):
        self.log.append({"layer": self.layer, "phase": "bp"})
        return self._wb(golden.conv2d_backward_input(g, w * mask, x_shape, stride, padding))

    async def wg(self, x, g, w_shape, stride, padding):
        self.log.append({"layer": self.layer, "phase": "wg"})
        return self._wb(golden.conv2d_backward_weight(x, g, w_shape, stride, padding))

    async def prune(self, g, tau, seed, rule=None):
        """``rule``: the threshold's ``(k_p, shift)`` (a backend that computes ``tau`` itself
        uses it; ``tau`` is the golden one)."""
        self.log.append({"layer": self.layer, "phase": "prune"})
        return golden.stochastic_prune_int(g, tau, seed, self.cfg.data_width)[0]

    async def pregen(self, w, n):
        self.log.append({"layer": self.layer, "phase": "pregen"})
        return golden.bdwp_masks(w, n, self.cfg.nm_m)


class ModelBackend(GoldenBackend):
    """The array phases through the hardware mapping (:func:`array_model.map_array`,
    :func:`array_model.execute`, ``job.assemble``) with the exact cycle model logged; the
    pre-generation walks :func:`~sparseforge.hdl.weight_pregen.pregen_schedule` through
    :func:`golden.nm_select_group` and :func:`~sparseforge.hdl.weight_pregen.pregen_reassemble`
    (what the RTL path does, minus the RTL); the pruner is the golden one."""

    @staticmethod
    def _model_fields(st) -> dict:
        """The log fields of the array model's statistics ``st`` of a phase."""
        return {"model_cycles": st.cycles, "model_busy_mac0": st.pe[0][0].busy_mac,
                "model_nnz0": st.pe[0][0].nnz}

    def _run(self, mode, **kw):
        t0 = time.perf_counter()
        job = am.map_array(mode, cfg=self.cfg, raw=False, **kw)
        out = job.assemble(am.execute(job))
        self.log.append({"layer": self.layer, "phase": mode,
                         **self._model_fields(am.cycles(job)),
                         "host_s": time.perf_counter() - t0})
        return out

    async def fp(self, x, w, mask, stride, padding):
        return self._run("fp", x=x, w=w, mask=mask, stride=stride, padding=padding)

    async def bp(self, g, w, mask, x_shape, stride, padding):
        return self._run("bp", dy=g, w=w, mask=mask, x_shape=x_shape, stride=stride,
                         padding=padding)

    async def wg(self, x, g, w_shape, stride, padding):
        return self._run("wg", x=x, dy=g, w_shape=w_shape, stride=stride, padding=padding)

    async def pregen(self, w, n):
        cfg = self.cfg
        self.log.append({"layer": self.layer, "phase": "pregen"})
        flat = np.asarray(w).ravel()
        beats = []
        for grp in pregen_schedule(w.shape, cfg.nm_m):
            mask, vals, idx = golden.nm_select_group(flat[list(grp.addrs)], n, cfg.nm_n_max)
            beats.append((mask, vals, idx, grp.dir, int(grp.last)))
        r = pregen_reassemble(beats, w.shape, cfg.nm_m, n)
        return r.fwd_mask, r.bwd_mask


# -- between-layer stages on chip (CMD_STAGE; sim/host/driver.py Driver.stage_onchip) -------
def _stage_geometry(lay, z4):
    """``((B, C, H, W), zfc)`` of a layer's output ``z`` in its conv view."""
    if lay.kind == "fc":                       # (1, Cout, 1, B)
        return (int(z4.shape[3]), int(z4.shape[1]), 1, 1), True
    return tuple(int(v) for v in z4.shape), False


def _stage_lgk(lay):
    """``log2`` of the layer's pool (window = stride in {2, 4}), 0 without one, None when the
    stage unit cannot take it (overlapping or odd windows: the host runs it)."""
    if lay.pool is None:
        return 0
    k, s = lay.pool
    return {2: 1, 4: 2}.get(k) if k == s else None


class _StageMixin:
    """The :class:`RTLBackend`'s between-layer stages (issue 17 item 1): the step calls
    :meth:`stage_forward` after each layer's FP, :meth:`stage_loss` after the last,
    :meth:`plan_backward` / :meth:`stage_backward` around each BP and :meth:`after_wg` after
    each WG. Each stage's result is read back and must equal the golden step's tensor
    (``AssertionError`` otherwise); a stage the configuration cannot place runs on the host
    (the next phase then loads its operand as before)."""

    def _stages_on(self) -> bool:
        return bool(self.stages and self.resident and self.drv.ram is not None)

    def _last_layer(self) -> bool:
        return bool(self.drv.homes) and list(self.drv.homes)[-1] == self.layer

    def _stage_log(self, layer, op, t0, c0, w0, g0, st=None, **extra):
        """Log a stage phase from its figures ``st`` (default ``Driver.last_stage``: its own
        packet) plus ``extra`` fields."""
        st = self.drv.last_stage if st is None else st
        self.log.append({"layer": layer, "phase": "stage", "stage_op": op,
                         "io_cycles": self._now() - c0, **self._words(w0),
                         "data_plane": "dma", "job_cycles": st["cycles"],
                         "dma_cycles": st["dma_cycles"], "card_words_in": st["card_words_in"],
                         "card_words_out": 0, "elements": st["elements"],
                         "debug_words": self.drv.debug_words - g0,
                         "host_s": time.perf_counter() - t0, **extra})

    def _check_stage(self, what, got, want):
        if got.size != np.asarray(want).size or \
                not np.array_equal(got.reshape(-1), np.asarray(want).reshape(-1)):
            raise AssertionError(f"{what}: the on-chip stage's result differs from the golden "
                                 f"step's")

    async def _stage(self, layer, op, want, **kw):
        t0, c0, w0, g0 = time.perf_counter(), self._now(), self._words(), self.drv.debug_words
        out = await self.drv.stage_onchip(op, **kw)
        self._stage_log(layer, op, t0, c0, w0, g0)
        self._check_stage(f"{layer} {op} stage", out, want)
        return out

    def _host_stage(self, lay):
        """A forward stage the host runs after all: the FP result it kept in OUT and read back
        is real traffic (the host needs it), not a check -- its words move to the FP's
        ``card_words_out``."""
        rec = self.log[-1] if self.log else None
        if rec is not None and rec["layer"] == lay.name and rec["phase"] == "fp" and \
                rec.get("card_words_out", 1) == 0:
            rec["card_words_out"], rec["debug_words"] = rec["debug_words"], 0

    async def stage_forward(self, lay, nxt, z4, a_next):
        """ReLU / pooling of ``lay``'s output (left in OUT by its FP) into ``nxt``'s input
        home in ACT; its pool winners in KEEP."""
        if lay.id == 0:
            self._keep, self._keep_end, self._dy_base = {}, 0, {}
            self._pruned_beside = {}
        lgk = _stage_lgk(lay)
        if not self._stages_on():
            return
        if lgk is None or nxt.name not in self.drv.homes:
            return self._host_stage(lay)
        shape, zfc = _stage_geometry(lay, z4)
        npool = int(np.asarray(a_next).size)
        kb = self._keep_end
        if kb + npool > self.cfg.keep_mem_elems or (zfc and lgk):
            return self._host_stage(lay)
        dst = self.drv._act_home(nxt.name, npool)
        if dst == 0:                   # no home after the earlier inputs: the host path
            return self._host_stage(lay)
        await self._stage(lay.name, "fwd", a_next, shape=shape, src=0, dst=dst, keep=kb,
                          pool=1 << lgk, relu=lay.relu, zfc=zfc, nfc=nxt.kind == "fc")
        self._keep[lay.name] = kb
        self._keep_end = kb + npool

    async def stage_loss(self, last, labels, d4):
        """The loss gradient from the logits the last FP left in OUT and the labels (loaded
        into ACT after the layers' inputs), into GRAD at 0."""
        if not self._stages_on():
            return
        from sparseforge.hdl.dataplane import BUF_ACT, buf_sizes
        epw = max(1, self.cfg.dma_width // self.cfg.data_width)
        sizes = [self.drv._x_sizes.get(n) for n in self.drv.homes]
        if any(v is None or v % epw for v in sizes):
            return
        aux = sum(sizes)
        B = int(np.asarray(labels).size)
        if aux + -(-B // epw) * epw > buf_sizes(self.cfg)[BUF_ACT] or \
                int(np.asarray(d4).size) > self.cfg.grad_mem_elems:
            return
        await self._stage(last.name, "loss", d4, shape=(B, last.cout, 1, 1), src=0, dst=0,
                          labels=np.asarray(labels), aux=aux)
        self._dy_base[last.name] = 0

    def plan_backward(self, lay, prev, n_g, n_prev):
        """Before ``lay``'s BP: where ``prev``'s backward stage runs -- beside ``lay``'s WG job
        (``"beside"``, the data plane runs it under the job: the BP result placed in OUT after
        the WG's ``dW``, the gradient into GRAD right after ``lay``'s, which the WG reads),
        right after the BP (``"now"``: the gradient placed so, the BP result where the WG's
        ``dW`` goes) or after the WG (``"after"``: the BP result after ``dW``, the gradient
        anywhere); None (the host path) when none fits or ``prev`` had no forward stage."""
        from sparseforge.hdl.dataplane import BUF_GRAD, buf_sizes, bwd_stage_fits
        self._plan = None
        self.drv.dp_bases["bp_out"] = 0
        if not self._stages_on() or prev.name not in self._keep or lay.name not in \
                self.drv.homes:
            return
        sizes = buf_sizes(self.cfg)
        epw = max(1, self.cfg.dma_width // self.cfg.data_width)
        gb = self._dy_base.get(lay.name, 0) + n_g
        n_w = self.drv.homes[lay.name]["n"]
        ob = -(-n_w // epw) * epw
        g_fits, o_fits = bwd_stage_fits(self.cfg, gb, n_prev, n_w,
                                        self.drv._x_sizes.get(lay.name))
        if g_fits and o_fits and self.beside:
            self._plan = ("beside", gb, ob)
            self.drv.dp_bases["bp_out"] = ob
        elif g_fits:
            self._plan = ("now", gb, 0)
        elif o_fits and n_prev <= sizes[BUF_GRAD]:
            self._plan = ("after", 0, ob)
            self.drv.dp_bases["bp_out"] = ob

    async def stage_backward(self, prev, lay, g_prev, prune=None):
        """``prev``'s pool / ReLU backward from ``lay``'s BP result in OUT (as planned).
        ``prune``: ``(k_p, shift, seed, tau)`` of ``prev``'s gradient pruning -- beside the
        WG job it runs right after the stage (:meth:`_take_beside`)."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        mode, dst, src = plan
        shape, zfc = _stage_geometry(prev, g_prev)
        args = dict(shape=shape, src=src, dst=dst, keep=self._keep[prev.name],
                    pool=1 << _stage_lgk(prev), relu=prev.relu, zfc=zfc,
                    nfc=lay.kind == "fc")
        if mode == "now":
            await self._stage(prev.name, "bwd", g_prev, **args)
            self._dy_base[prev.name] = dst
        else:
            self._pending = (prev.name, g_prev, args, mode == "beside", prune)

    async def after_wg(self):
        """A backward stage held until the WG had run (its gradient's GRAD range was the WG's
        operand)."""
        if self._pending is not None:
            (name, g_prev, args, _, _), self._pending = self._pending, None
            await self._stage(name, "bwd", g_prev, **args)
            self._dy_base[name] = args["dst"]

    def _take_beside(self, mode, update) -> dict:
        """The held backward stage that runs beside this WG job (``"beside"`` placement, the
        fused update: the job's ``dW`` stays on chip): ``{"beside": [cmd]}`` for the driver,
        the stage kept in ``_beside_run`` for :meth:`_finish_beside`; else ``{}``."""
        p = self._pending
        if update is None or p is None or not p[3]:
            return {}
        self._pending = None
        name, g_prev, args, _, prune = p
        cmd, where = self.drv.stage_command("bwd", **args)
        cmds = [cmd]
        if prune is not None and self.prune_beside:
            # its pruning in place right after it, beside the job too (one pass: the stage
            # summed |g|); the later prune call finds the result (_pruned_beside)
            cmds.append(self.drv.prune_command(args["dst"], np.asarray(g_prev).size,
                                               *prune[:3]))
        else:
            prune = None
        self._beside_run = (name, g_prev, args, where, prune)
        return {"beside": cmds}

    async def _finish_beside(self, wg_layer, t0):
        """After the WG packet: the stage that ran beside the job -- its gradient read back
        and checked, logged as a ``stage`` phase whose ``job_cycles`` are STAGE_EXPOSED (the
        cycles it ran outside the job) and ``busy_cycles`` STAGE_CYCLES."""
        run, self._beside_run = self._beside_run, None
        if run is None:
            return
        name, g_prev, args, (buf, n, oshape), prune = run
        c0, w0, g0 = self._now(), self._words(), self.drv.debug_words
        b = self.drv.last_beside
        if prune is None:
            out = await self.drv.stage_result(buf, args["dst"], n, oshape)
            want = g_prev
        else:
            # the stage's gradient was pruned in place right after it: what is read back is
            # the pruned gradient (the stage is checked through it: the elements pruning
            # keeps, and the threshold computed from all of them)
            k_p, sh, seed, tau = prune
            out, tau_chip = await self.drv.prune_result(args["dst"], oshape)
            if tau_chip != tau:
                raise AssertionError(f"{name} prune beside {wg_layer} wg: the on-chip "
                                     f"threshold {tau_chip} differs from the golden {tau}")
            want = golden.stochastic_prune_int(np.asarray(g_prev).reshape(oshape), tau, seed,
                                               self.cfg.data_width)[0]
            self._pruned_beside[name] = {"out": out, "tau": int(tau_chip),
                                         "base": args["dst"], "beside": f"{wg_layer} wg",
                                         "exposed": b["prune_exposed"],
                                         "busy": b["prune_cycles"]}
        self._dy_base[name] = args["dst"]
        B, C, H, W = args["shape"]
        self._stage_log(name, "bwd", t0, c0, w0, g0,
                        st={"cycles": b["stage_exposed"], "dma_cycles": 0, "card_words_in": 0,
                            "elements": B * C * H * W},
                        busy_cycles=b["stage_cycles"], beside=f"{wg_layer} wg")
        self._check_stage(f"{name} bwd stage" + (" + prune" if prune else ""), out, want)


class RTLBackend(_StageMixin, ModelBackend):
    """Every phase on the ``accelerator`` RTL through ``driver`` (a running cocotb
    :class:`~sparseforge.sim.host.driver.Driver`). After each array phase the counters are read
    over AXI4-Lite (CYCLES, and BUSY_MAC / NNZ of PE 0) and logged with the array model's
    prediction for the same job; every phase also logs its simulated clock cycles
    (``io_cycles``: packets in to STATUS.done, the I/O bound time) and host seconds.
    ``strict``: raise when PE 0's BUSY_MAC / NNZ increments differ from the model's.
    ``schedule``: a schedule binary (:func:`sparseforge.gen.schedule.build_schedule` of the
    same network, encoded): it is loaded into the on-chip schedule controller and started
    before the first phase, and every phase then runs as the schedule's next step -- the phase
    controls, the pruner's threshold rule and the pre-generation runs come from the schedule
    (hdl/controller.py); the host sends the data. ``stages``: run the between-layer stages on
    chip where the network is resident (:class:`_StageMixin`; False: on the host).
    ``beside``: a backward stage runs beside the next layer's WG job where the buffers allow
    (:meth:`_StageMixin.plan_backward`)."""

    def __init__(self, cfg, driver, *, clock_ns=10, strict=True, schedule=None, stages=True,
                 beside=True, prune_beside=True):
        super().__init__(cfg)
        self.drv = driver
        self.clock_ns = clock_ns
        self.strict = strict
        self.prev = None
        self.schedule = schedule
        self._started = False
        #: the network's weights are resident in the data plane (:meth:`load_network`)
        self.resident = False
        #: what :meth:`load_network` moved since the last :meth:`take_network_load`
        self.network_load = None
        #: the between-layer stages run on chip (``CMD_STAGE``) where the network is resident
        #: (``stages=False``: on the host, every layer's output crossing the bus)
        self.stages = stages
        self._keep: dict = {}          # layer -> its KEEP base (forward stage)
        self._keep_end = 0
        self._dy_base: dict = {}       # layer -> GRAD base of its gradient
        self._plan = None              # the planned backward stage (plan_backward)
        self._pending = None           # a backward stage held until the WG has run
        #: a held backward stage runs beside the next WG job (in its packet) where the
        #: buffers allow (``beside=False``: after it, as its own packet)
        self.beside = beside
        self._beside_run = None        # the stage sent beside the running WG job
        #: a backward stage beside a WG job is followed there by its layer's pruning
        #: (``prune_beside=False``: the pruning runs as its own packet, after the WG)
        self.prune_beside = prune_beside
        self._pruned_beside: dict = {}     # layer -> the pruning that ran beside a WG job

    async def load_network(self, weights: dict, masks: dict):
        """On a core with the data plane where the network's weights and masks fit
        (``Driver.plan_homes``): ``Driver.load_network`` -- they stay on chip, the phases use
        them there, the update runs on chip. Otherwise nothing (every phase loads its
        operands)."""
        drv = self.drv
        if drv.ram is None or drv.plan_homes({k: np.shape(v) for k, v in weights.items()}) \
                is None:
            self.resident = False
            return
        c0, w0 = self._now(), self._words()
        r = await drv.load_network(weights, masks)
        self.resident = True
        if r["loaded"]:
            self.network_load = {"cycles": self._now() - c0, "dma_cycles": r["dma_cycles"],
                                 "host_words_in": r["card_words_in"] + self._words(w0)[
                                     "words_in"]}

    def take_network_load(self):
        """The last network load's figures (None when the step loaded none), then forget."""
        out, self.network_load = self.network_load, None
        return out

    def update_in_wg(self, x) -> bool:
        """Whether the WG phase of input ``x`` updates its layer's weight on chip (the weights
        are resident and the phase is not chunked)."""
        return self.resident and not self.drv._chunked_wg("wg", {"x": x})

    def _home(self, layer=None):
        """``layer`` (default: the current one) when its weights are on chip, else None."""
        layer = self.layer if layer is None else layer
        return layer if self.resident and layer in self.drv.homes else None

    async def _step(self, op):
        """The schedule opcode of the next phase (None without a schedule), loading and
        starting the schedule the first time."""
        if self.schedule is None:
            return None
        if not self._started:
            sst, st, code = await self.drv.load_schedule(self.schedule)
            if st & STATUS_ERROR:
                raise RuntimeError(f"the controller rejected the schedule: ERROR_CODE {code:#x}")
            if not await self.drv.start_schedule() & SCHED_RUNNING:
                raise RuntimeError("the schedule did not start")
            self._started = True
        else:                    # a PRUNE / PREGEN phase raises no done: check it here
            st = await self.drv.read("STATUS")
            if st & STATUS_ERROR:
                raise RuntimeError(f"{self.layer} before {op}: STATUS.error, ERROR_CODE "
                                   f"{await self.drv.read('ERROR_CODE'):#x}")
        return getattr(Op, op)

    def _words(self, since=None):
        """The driver's stream word counts, or (``since`` a previous result) the increments
        as ``words_in`` / ``words_out``."""
        now = (self.drv.words_in, self.drv.words_out)
        if since is None:
            return now
        return {"words_in": now[0] - since[0], "words_out": now[1] - since[1]}

    async def restart(self):
        """Run the loaded schedule again from its first entry (the next training step)."""
        if self.schedule is not None and self._started:
            if not await self.drv.start_schedule() & SCHED_RUNNING:
                raise RuntimeError("the schedule did not restart")

    def _now(self):
        return self.drv.now_cycles()

    async def _counters(self):
        return {k: await self.drv.counter(k) for k in ("cycles", "busy_mac", "nnz")}

    def pregen_beside_wg(self, w, n) -> bool:
        """Whether a layer's pre-generation waits for the next layer's WG to run beside it:
        on a core with the data plane, for a weight ``CMD_PREGEN`` takes."""
        return self.drv.ram is not None and \
            self.drv.pregen_onchip_refusal(np.shape(w), n) is None

    async def pregen_step(self, w):
        """The schedule's PREGEN steps of a deferred pre-generation, sent where the schedule
        has them (flagged STEP_DATA_PLANE: the controller only advances)."""
        step = await self._step("PREGEN")
        if step is not None:
            groups = 2 * int(np.asarray(w).size) // self.cfg.nm_m
            chunks = -(-groups // self.cfg.weight_buf_depth)
            await self.drv.send([self.drv.codec.step_packet(step, data_plane=True)
                                 for _ in range(chunks)])

    async def wg_with_pregen(self, x, g, w_shape, stride, padding, pw, n, pregen_layer,
                             update=None):
        """The WG phase with the deferred pre-generation of ``pregen_layer``'s ``pw`` beside it
        (``Driver.run_wg_with_pregen``); a chunked WG runs alone, then the pre-generation.
        ``update``: ``(w, lr_shift)``, the fused SGD update (as :meth:`wg`)."""
        if self.drv._chunked_wg("wg", {"x": x}):
            out = await self.wg(x, g, w_shape, stride, padding, update=update)
            return out, await self.pregen_alone(pw, n, pregen_layer)
        return await self._run_rtl("wg", x=x, dy=g, w_shape=w_shape, stride=stride,
                                   padding=padding, _pregen=(pw, n, pregen_layer),
                                   _update=update)

    async def pregen_alone(self, w, n, layer):
        """A deferred pre-generation run by itself (its schedule steps were sent)."""
        t0, c0, w0 = time.perf_counter(), self._now(), self._words()
        g0 = self.drv.debug_words
        out = await self.drv.pregen_onchip(w, n, home=self._home(layer))
        self._log_pregen_dp(layer, w, c0, w0, t0)
        self.log[-1]["debug_words"] = self.drv.debug_words - g0
        return out

    def _log_pregen_dp(self, layer, w, c0, w0, t0, *, words=None):
        lp = self.drv.last_pregen_dp
        self.log.append({"layer": layer, "phase": "pregen", "io_cycles": self._now() - c0,
                         "groups": 2 * int(np.asarray(w).size) // self.cfg.nm_m,
                         **(words if words is not None else self._words(w0)),
                         "data_plane": "dma", "job_cycles": lp["cycles"],
                         "busy_cycles": lp["busy_cycles"], "dma_cycles": lp["dma_cycles"],
                         "card_words_in": lp["card_words_in"],
                         "card_words_out": lp["card_words_out"], "beside": lp["beside"],
                         "host_s": time.perf_counter() - t0})

    @staticmethod
    def _dp_record(lp: dict, **extra) -> dict:
        """The log fields of a phase the data plane ran (``lp``: ``Driver.last_phase``)."""
        return {"data_plane": "dma", "job_cycles": lp["cycles"], "dma_cycles": lp["dma_cycles"],
                "dma_busy_cycles": lp["dma_busy_cycles"], "card_words_in": lp["card_words_in"],
                "card_words_out": lp["card_words_out"], "resident": lp["resident"],
                "update": lp["update"], **extra}

    def _place(self, mode):
        """The driver's placement for the next data-plane operation of the current layer: its
        gradient's GRAD base, and whether an FP / BP result stays in OUT for a stage (the last
        layer's logits are stored: the host reads them)."""
        drv = self.drv
        if not self._stages_on():
            drv.dp_bases, drv.keep_results = {}, False
            return
        drv.dp_bases["dy"] = self._dy_base.get(self.layer, 0)
        drv.keep_results = (mode == "fp" and not self._last_layer()) or \
            (mode == "bp" and self._plan is not None)

    def resolve_models(self):
        """Fill the array model's fields (``model_cycles``, ``model_busy_mac0``,
        ``model_nnz0``) of the phase records whose statistics the driver deferred
        (``Driver.defer_model``): the e2e run calls it after each step's timed window."""
        for rec in self.log:
            st = rec.pop("_stats", None)
            if st is not None:
                rec.update(self._model_fields(st))

    async def _run_rtl(self, mode, _pregen=None, _update=None, **kw):
        t0 = time.perf_counter()
        self._place(mode)
        if self.prev is None:
            self.prev = await self._counters()
        await self.drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
        c0, w0, g0 = self._now(), self._words(), self.drv.debug_words
        step = await self._step(mode.upper())
        dp = {}
        masks = None
        home = self._home()
        upd = {} if _update is None else {"home": home, "w": _update[0],
                                          "update": _update[1]}
        if _update is not None and home is None:
            raise ValueError(f"{self.layer}: the fused update needs the weights on chip")
        if _pregen is not None:
            pw, pn, p_layer = _pregen
            out, masks = await self.drv.run_wg_with_pregen(
                x=kw["x"], dy=kw["dy"], w_shape=kw["w_shape"], stride=kw["stride"],
                padding=kw["padding"], pregen_w=pw, n=pn, step=step, pregen_home=self._home(p_layer),
                **upd, **self._take_beside(mode, _update))
            st, lp = self.drv.last_stats, self.drv.last_phase
            status = lp["status"]
            dp = self._dp_record(lp, beside=f"{p_layer} pregen")
        elif _update is not None:
            out = await self.drv.run_wg_update(x=kw["x"], dy=kw["dy"], w=_update[0],
                                               lr_shift=_update[1], home=home,
                                               stride=kw["stride"], padding=kw["padding"],
                                               step=step, **self._take_beside(mode, _update))
            st, lp = self.drv.last_stats, self.drv.last_phase
            status = lp["status"]
            dp = self._dp_record(lp)
        elif self.drv.ram is not None:
            # the self-feeding data plane: tensors in card memory, one dp packet per phase
            if home is not None:
                kw["home"] = home
            out = await self.drv.run_phase(mode, step=step, raw=False, **kw)
            st = self.drv.last_stats               # (run_phase mapped it)
            lp = self.drv.last_phase
            status = lp["status"]
            if lp["data_plane"] == "dma":        # (a chunked WG phase goes host-fed)
                dp = self._dp_record(lp)
        else:
            job = am.map_array(mode, cfg=self.cfg, raw=False, **kw)
            st = am.cycles(job)
            out, status, _ = await self.drv.run_array_job(job, step=step)
        io = self._now() - c0
        words = self._words(w0)
        if not status & STATUS_DONE or status & STATUS_ERROR:
            raise RuntimeError(f"{self.layer} {mode}: STATUS {status:#x} (done without error "
                               f"expected)")
        now = await self._counters()
        d = {k: now[k] - self.prev[k] for k in now}
        self.prev = now
        rec = {"layer": self.layer, "phase": mode, "cycles": d["cycles"],
               "busy_mac0": d["busy_mac"], "nnz0": d["nnz"], "io_cycles": io, **words, **dp,
               "debug_words": self.drv.debug_words - g0,
               "host_s": time.perf_counter() - t0}
        if isinstance(st, LazyArrayStats):
            rec["_stats"] = st               # the reference model runs in resolve_models()
        else:
            rec.update(self._model_fields(st))
        self.log.append(rec)
        if masks is not None:          # the pre-generation that ran beside it (no own traffic)
            self._log_pregen_dp(p_layer, pw, c0, None, t0,
                                words={"words_in": 0, "words_out": 0})
            self.log[-1]["io_cycles"] = 0
            self.log[-1]["beside"] = f"{self.layer} wg"
        await self._finish_beside(self.layer, t0)
        if self.strict and (d["busy_mac"] != st.pe[0][0].busy_mac or
                            d["nnz"] != st.pe[0][0].nnz):
            raise AssertionError(f"{self.layer} {mode}: PE 0 counters over AXI (busy_mac "
                                 f"{d['busy_mac']}, nnz {d['nnz']}) differ from the array "
                                 f"model ({st.pe[0][0].busy_mac}, {st.pe[0][0].nnz})")
        return out if masks is None else (out, masks)

    async def fp(self, x, w, mask, stride, padding):
        return await self._run_rtl("fp", x=x, w=w, mask=mask, stride=stride, padding=padding)

    async def bp(self, g, w, mask, x_shape, stride, padding):
        return await self._run_rtl("bp", dy=g, w=w, mask=mask, x_shape=x_shape, stride=stride,
                                   padding=padding)

    async def wg(self, x, g, w_shape, stride, padding, update=None):
        """``update``: ``(w, lr_shift)`` -- the SGD update fused into the job (the weights on
        chip, :meth:`update_in_wg`); returns ``(dW, W')`` then."""
        return await self._run_rtl("wg", x=x, dy=g, w_shape=w_shape, stride=stride,
                                   padding=padding, _update=update)

    async def prune(self, g, tau, seed, rule=None):
        """On a core with the data plane and given the threshold ``rule`` ``(k_p, shift)``:
        ``Driver.prune_onchip`` (the threshold computed on chip; it must equal ``tau``, the
        golden one, else ``AssertionError``); otherwise the stream pruner with the host's
        ``tau``."""
        t0, c0, w0 = time.perf_counter(), self._now(), self._words()
        hit = self._pruned_beside.pop(self.layer, None)
        if hit is not None:
            return await self._prune_done_beside(hit, g, tau, t0, c0, w0)
        self._place("prune")
        step = await self._step("PRUNE")
        dp = {}
        if self.drv.ram is not None and rule is not None:
            # the pruned gradient stays in GRAD for BP and WG: read back only for checking
            g0 = self.drv.debug_words
            out, tau_chip = await self.drv.prune_onchip(g, *rule, seed, step=step, keep=True)
            lp = self.drv.last_prune
            if tau_chip != tau:
                raise AssertionError(f"{self.layer} prune: the on-chip threshold {tau_chip} "
                                     f"differs from the golden rule's {tau}")
            dp = {"data_plane": "dma", "job_cycles": lp["cycles"],
                  "dma_cycles": lp["dma_cycles"], "card_words_in": lp["card_words_in"],
                  "card_words_out": lp["card_words_out"], "tau_chip": int(tau_chip),
                  "debug_words": self.drv.debug_words - g0}
        else:
            out = await self.drv.prune(g, tau, seed, step=step)
        self.log.append({"layer": self.layer, "phase": "prune", "io_cycles": self._now() - c0,
                         "elements": int(np.asarray(g).size), **self._words(w0), **dp,
                         "host_s": time.perf_counter() - t0})
        return out

    async def _prune_done_beside(self, hit, g, tau, t0, c0, w0):
        """The pruning that ran beside the previous WG job (:meth:`_finish_beside`): its
        schedule step (the data plane ran it: the controller only advances), its record --
        ``job_cycles`` PRUNE_EXPOSED (outside any job), ``busy_cycles`` PRUNE_CYCLES -- and
        the pruned gradient it left in GRAD."""
        if hit["tau"] != tau:
            raise AssertionError(f"{self.layer} prune: the on-chip threshold {hit['tau']} "
                                 f"differs from the golden rule's {tau}")
        step = await self._step("PRUNE")
        if step is not None:
            await self.drv.step_only(step)
        self._place("prune")
        self.log.append({"layer": self.layer, "phase": "prune", "io_cycles": self._now() - c0,
                         "elements": int(np.asarray(g).size), **self._words(w0),
                         "data_plane": "dma", "job_cycles": hit["exposed"],
                         "busy_cycles": hit["busy"], "dma_cycles": 0, "card_words_in": 0,
                         "card_words_out": 0, "tau_chip": hit["tau"], "debug_words": 0,
                         "beside": hit["beside"], "host_s": time.perf_counter() - t0})
        return hit["out"].reshape(np.shape(g))

    async def pregen(self, w, n):
        """On a core with the data plane, for a weight ``CMD_PREGEN`` takes
        (``Driver.pregen_onchip_refusal``): ``Driver.pregen_onchip``; otherwise the stream
        pre-generation (through the weight buffer under a schedule)."""
        t0, c0, w0 = time.perf_counter(), self._now(), self._words()
        g0 = self.drv.debug_words
        step = await self._step("PREGEN")
        dp = {}
        if self.drv.ram is not None and self.drv.pregen_onchip_refusal(np.shape(w), n) is None:
            out = await self.drv.pregen_onchip(w, n, step=step, home=self._home())
            lp = self.drv.last_pregen_dp
            dp = {"data_plane": "dma", "job_cycles": lp["cycles"],
                  "busy_cycles": lp["busy_cycles"], "dma_cycles": lp["dma_cycles"],
                  "card_words_in": lp["card_words_in"],
                  "card_words_out": lp["card_words_out"]}
        elif step is None:
            out = await self.drv.pregen(w, n)
        else:
            out = await self.drv.pregen_scheduled(w, n, step=step)
        self.log.append({"layer": self.layer, "phase": "pregen", "io_cycles": self._now() - c0,
                         "groups": 2 * int(np.asarray(w).size) // self.cfg.nm_m,
                         **self._words(w0), **dp, "debug_words": self.drv.debug_words - g0,
                         "host_s": time.perf_counter() - t0})
        return out


def cycle_table(log: list[dict]) -> str:
    """A per-layer/per-phase text table of a backend's log."""
    cols = ["layer", "phase", "cycles", "model_cycles", "busy_mac0", "model_busy_mac0", "nnz0",
            "model_nnz0", "io_cycles", "host_s"]
    cols = [c for c in cols if any(c in r for r in log)]
    rows = [[("%.2f" % r[c]) if isinstance(r.get(c), float) else str(r.get(c, "-"))
             for c in cols] for r in log]
    wid = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, wid))   # noqa: E731
    return "\n".join([line(cols)] + [line(r) for r in rows])


# ------------------------------------------------------------------------------------------
# build/e2e/report.json (docs/e2e.md, "The report")
# ------------------------------------------------------------------------------------------

#: Version of the report's schema; bumped when a field changes meaning.
REPORT_SCHEMA_VERSION = 1
#: The report's phase codes (:data:`sparseforge.hdl.wire.PHASE_CODES`); ``update`` runs
#: inside the WG job (no phase of its own); ``stage`` is a between-layer stage on chip
#: (``CMD_STAGE``; ``op``: ``fwd``, ``bwd``, ``loss``).
ARRAY_PHASES = tuple(p.name.lower() for p in Phase)


def report_phase(rec: dict) -> dict:
    """One ``phases[]`` entry of the report from an :class:`RTLBackend` log record.

    ``cycles``: simulated clock cycles from the phase's first packet to its done (the
    host-visible time of the phase at the top level); ``array_cycles``: the exact array
    model's cycles for the same work fed at full rate (0 for phases that are not array work);
    ``dma_cycles``: transfer cycles not hidden under compute -- 0 on the host-fed path,
    where every operand word crosses the stream inside ``cycles``; ``host_words_in`` /
    ``host_words_out``: 32-bit AXI4-Stream words to and from the accelerator;
    ``debug_words``: 32-bit words read only for checking (``Driver.debug_read``: the results
    that stay on chip -- ``dW``, the updated weight, the masks -- are read back to compare
    them; not step traffic, their transfers are outside every phase's counters). ``counter_cycles`` (array phases):
    the CYCLES counter's increment over AXI4-Lite. ``data_plane`` (array phases, and a prune
    phase run by the data plane): the path that ran it; ``resident`` (data-plane array phases): the operands not loaded
    because their buffer still held them; ``tau`` (on-chip pruning): its threshold.

    A phase through the data plane (``data_plane == "dma"``): ``cycles`` is its job (JOB_CYCLES:
    start to last result stored), ``dma_cycles`` the DMA's busy cycles outside any job
    (DMA_EXPOSED), the host words add the tensors written into / read from the card memory
    (each once), and ``io_cycles`` keeps the phase's whole simulated time (first packet to
    done, with the packets and the host's register reads)."""
    phase = rec["phase"]
    if phase not in PHASE_CODES:
        raise ValueError(f"unknown phase code {phase!r}; known: {PHASE_CODES}")
    arr = phase in ARRAY_PHASES
    out = {"layer": rec["layer"], "phase": phase, "cycles": int(rec["io_cycles"]),
           "array_cycles": int(rec["model_cycles"]) if arr else 0, "dma_cycles": 0,
           "host_words_in": int(rec.get("words_in", 0)),
           "host_words_out": int(rec.get("words_out", 0)),
           "debug_words": int(rec.get("debug_words", 0))}
    if rec.get("data_plane") == "dma":
        # self-fed: the phase's top-level time is its job (start to last result stored,
        # JOB_CYCLES); the DMA time outside any job is dma_cycles; the host's traffic is the
        # dp packet plus each tensor written to / read from the card memory once
        out.update(cycles=int(rec["job_cycles"]), dma_cycles=int(rec["dma_cycles"]),
                   host_words_in=out["host_words_in"] + int(rec["card_words_in"]),
                   host_words_out=out["host_words_out"] + int(rec["card_words_out"]),
                   io_cycles=int(rec["io_cycles"]))
        if "resident" in rec:              # operands the buffers still held (not loaded)
            out["resident"] = list(rec["resident"])
        if "tau_chip" in rec:              # on-chip pruning: the threshold it computed
            out["tau"] = int(rec["tau_chip"])
        if "busy_cycles" in rec:           # on-chip pre-generation: its whole busy time
            out["busy_cycles"] = int(rec["busy_cycles"])
        if rec.get("beside"):              # ran in one packet with this phase
            out["beside"] = rec["beside"]
        if rec.get("update"):              # the SGD update fused into this WG job
            out["update"] = True
        if "stage_op" in rec:              # a between-layer stage: fwd, bwd or loss
            out["op"] = rec["stage_op"]
    if arr:
        # which path ran it: a dma configuration still runs a chunked WG phase host-fed
        out["data_plane"] = rec.get("data_plane", "host-stream")
        out["counter_cycles"] = int(rec["cycles"])
    elif "data_plane" in rec:              # on-chip pruning (CMD_PRUNE)
        out["data_plane"] = rec["data_plane"]
    return out


def report_step(log: list[dict], *, tensors_compared: int, mismatched: list[str]) -> dict:
    """One ``steps[]`` entry: the phases of ``log`` and the step's sums."""
    phases = [report_phase(r) for r in log]
    tot = {k: sum(p[k] for p in phases) for k in ("cycles", "array_cycles", "dma_cycles",
                                                   "host_words_in", "host_words_out",
                                                   "debug_words")}
    return {"tensors_compared": int(tensors_compared),
            "tensors_mismatched": len(mismatched), "mismatches": list(mismatched),
            **tot, "phases": phases}
