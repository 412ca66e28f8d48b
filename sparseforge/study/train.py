"""Sparse training of a small CNN on scikit-learn's digits, with hardware sparsity statistics.

A pure-numpy training harness (no torch; it runs in CI on 2 cores).  Every convolution and FC
product of the forward pass (FP), the backward pass (BP, input gradient) and the weight-gradient
pass (WG) is computed by the golden model's float path (:mod:`sparseforge.sim.reference.golden`), with the
sparse operands the accelerator would see:

* **BDWP** (SAT, Fang et al.): N:M masks of the dense weights, taken every iteration by
  :func:`golden.bdwp_masks`; FP uses ``W * fwd`` (groups along Cin), BP uses ``W * bwd`` (groups
  along Cout); the update is dense (straight-through), optionally with the SR-STE decay
  ``lambda * (~fwd) * W`` added to the gradient.
* **Stochastic gradient pruning** (SparseTrain / Ye et al.): the output gradient ``dY`` of each
  conv layer (after the max-pool and ReLU backward) is pruned with
  ``tau = golden.prune_threshold(dY, p)`` and ``golden.stochastic_prune(dY, tau, rng)`` before it
  feeds that layer's BP and WG.
* Investigation options (``docs/training.md``): ``nested`` takes the backward mask from the
  forward-masked weights (BP then uses a subset of FP's weights); ``nzmean`` takes the pruning
  threshold's ``mean|g|`` over the non-zero elements of ``dY`` only.

Network (``NETWORK``, built from ``gen/networks/digits-cnn.yaml`` by :func:`network_specs`;
input: the 8x8 digits upsampled 2x, nearest neighbour, to 1x16x16)::

    conv1 3x3, 1->8,  pad 1   ReLU  maxpool 2   (dense: Cin = 1 is no multiple of M)
    conv2 3x3, 8->16, pad 1   ReLU  maxpool 2   (BDWP)
    fc1   256->32             ReLU              (BDWP)
    fc2   32->10                                (dense: Cout = 10 is no multiple of M)

The statistics (what the hardware would see, per layer and phase) are returned as a dict that
follows :mod:`sparseforge.gen.stats_schema`; ``docs/training.md`` documents both.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from sparseforge.gen.network import Network, load_network
from sparseforge.sim.perf.sparsity import closed_form_density, closed_form_density_zero_aware

from sparseforge.sim.reference import golden

__all__ = [
    "DATASET", "LABEL", "NETWORK", "ISSUE_VARIANTS", "DEFAULT_VARIANTS", "LayerSpec", "Variant", "TrainConfig",
    "network_specs",
    "parse_variant", "load_digits_split", "closed_form_density", "closed_form_density_zero_aware",
    "DigitsCNN", "train_run",
]

DATASET = "sklearn digits"
LABEL = "measured, digits CNN"
NETWORK_NAME = "digits-cnn"


# --------------------------------------------------------------------------------------------
# Network description
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """One conv or FC layer as the study runs it (FC per sample: ``h = w = k = 1``); followed by
    ReLU when ``relu`` and a 2x2 max-pool when ``pool``."""
    name: str
    type: str           # "conv" | "fc"
    cin: int
    cout: int
    h: int = 1          # input height (1 for FC)
    w: int = 1          # input width (1 for FC)
    k: int = 1
    stride: int = 1
    padding: int = 0
    relu: bool = True
    pool: bool = False
    bdwp: bool = True   # BDWP applies to this layer when the variant asks for it
    prune: bool = False  # stochastic gradient pruning applies to this layer's dY

    @property
    def ho(self):
        return (self.h + 2 * self.padding - self.k) // self.stride + 1

    @property
    def wo(self):
        return (self.w + 2 * self.padding - self.k) // self.stride + 1

    @property
    def weight_shape(self):
        if self.type == "conv":
            return (self.cout, self.cin, self.k, self.k)
        return (self.cout, self.cin)


def network_specs(net: Network) -> tuple:
    """The study's layers of a network description (:mod:`sparseforge.gen.network`): its conv/fc
    layers with their fused ReLU and max-pool (2x2, stride 2: the only pool the study runs),
    BDWP as the description resolves it (``bdwp: auto`` against its ``nm``: Cin and Cout
    multiples of M) and its ``prune`` flags."""
    out = []
    for c in net.compute:
        if c.pool not in (None, (2, 2)) or c.kh != c.kw or c.bn or c.add is not None:
            raise ValueError(f"{c.label}: the study runs square kernels, 2x2/2 max-pools and "
                             f"no batch norm or residuals")
        geom = dict(h=c.h, w=c.w, k=c.kh, stride=c.stride, padding=c.padding)
        out.append(LayerSpec(c.name, c.kind, c.cin, c.cout, **(geom if c.kind == "conv" else {}),
                             relu=c.relu, pool=c.pool is not None, bdwp=c.bdwp, prune=c.prune))
    return tuple(out)


#: The digits CNN (``gen/networks/digits-cnn.yaml``).
DIGITS_CNN = load_network(NETWORK_NAME)
NETWORK = network_specs(DIGITS_CNN)
INPUT_HW = DIGITS_CNN.input[1:]
NUM_CLASSES = DIGITS_CNN.output_shape[0]


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """A training variant: BDWP ``n:m`` (or None), gradient pruning rate ``p`` (or None), SR-STE."""
    name: str
    nm: tuple | None = None
    prune_p: float | None = None
    srste: bool = False
    nested: bool = False
    nzmean: bool = False

    def to_dict(self):
        return {"name": self.name,
                "bdwp": None if self.nm is None else {"n": self.nm[0], "m": self.nm[1]},
                "bwd_mask": None if self.nm is None else ("nested" if self.nested else
                                                          "independent"),
                "prune_p": self.prune_p,
                "threshold_mean": None if not self.prune_p else ("nonzero" if self.nzmean else
                                                                  "all"),
                "srste": self.srste}


#: The issue's variants (BDWP with the brief's independent masks, pruning, both together).
ISSUE_VARIANTS = ("dense", "bdwp2-4", "bdwp2-8", "bdwp1-8", "prune0.5", "prune0.9", "prune0.99",
                  "bdwp2-8_prune0.9")
#: The full run (``make train-stats``): the issue's variants plus two investigations
#: (``docs/training.md``): BDWP with nested masks, pruning with ``mean|g|`` over non-zeros.
DEFAULT_VARIANTS = ISSUE_VARIANTS + ("bdwp2-8_nested", "bdwp1-8_nested", "prune0.9_nzmean",
                                     "prune0.99_nzmean")

_TOKEN = re.compile(r"^(?:(dense)|bdwp(\d+)-(\d+)|prune(0?\.\d+|0)|(srste)|(nested)|(nzmean))$")


def parse_variant(name):
    """Parse a variant name: ``dense`` or ``_``-joined tokens ``bdwpN-M``, ``pruneP``, ``srste``.

    Examples: ``dense``, ``bdwp2-8``, ``prune0.9``, ``bdwp2-8_prune0.9``, ``bdwp2-8_srste``,
    ``bdwp2-8_nested``.  ``srste`` adds the SR-STE decay ``TrainConfig.srste_decay * (~fwd) * W``
    to the gradient; ``nested`` takes the backward mask from the forward-masked weights instead of
    the dense ones (see :meth:`DigitsCNN.masks`); ``nzmean`` takes the pruning threshold's
    ``mean|g|`` over the non-zero elements of ``dY`` only (``golden.prune_threshold(dY[dY != 0],
    p)``) instead of over all elements.  Raises ValueError naming the bad token.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"variant must be a non-empty string, not {name!r}")
    nm, p, srste, seen = None, None, False, set()
    for tok in name.split("_"):
        mt = _TOKEN.match(tok)
        if mt is None:
            raise ValueError(f"variant {name!r}: unknown token {tok!r} (expected dense, bdwpN-M, "
                             f"pruneP with 0 <= P < 1, srste, nested or nzmean)")
        kind = ("dense" if mt.group(1) else "bdwp" if mt.group(2) else
                "prune" if mt.group(4) else "srste" if mt.group(5) else
                "nested" if mt.group(6) else "nzmean")
        if kind in seen:
            raise ValueError(f"variant {name!r}: token kind {kind!r} given twice")
        seen.add(kind)
        if kind == "bdwp":
            n, m = int(mt.group(2)), int(mt.group(3))
            if not 1 <= n < m:
                raise ValueError(f"variant {name!r}: BDWP needs 1 <= N < M, not {n}:{m}")
            nm = (n, m)
        elif kind == "prune":
            p = float(mt.group(4))
            if not 0.0 <= p < 1.0:
                raise ValueError(f"variant {name!r}: prune rate must be in [0, 1), not {p}")
        elif kind == "srste":
            srste = True
    if "dense" in seen and len(seen) > 1:
        raise ValueError(f"variant {name!r}: 'dense' cannot be combined with other tokens")
    for opt in ("srste", "nested"):
        if opt in seen and nm is None:
            raise ValueError(f"variant {name!r}: {opt} needs a bdwpN-M token")
    if "nzmean" in seen and not p:
        raise ValueError(f"variant {name!r}: nzmean needs a pruneP token with P > 0")
    return Variant(name, nm, p, srste, "nested" in seen, "nzmean" in seen)


# --------------------------------------------------------------------------------------------
# Training configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Fixed schedule shared by every variant (only the variant and seed change between runs)."""
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.02            # peak learning rate; cosine decay to 0 over all steps
    warmup_epochs: int = 1      # linear warm-up from lr/10
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on weights (not biases)
    srste_decay: float = 2e-4   # SR-STE lambda_W (variants with ``srste``)
    test_fraction: float = 0.2
    split_seed: int = 0         # the train/test split is the same for every seed
    stats_epochs: int = 1       # hardware statistics over the last this-many epochs
    train_subset: int | None = None  # use only the first this-many training images (CI)

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not 1 <= self.stats_epochs <= self.epochs:
            raise ValueError(f"stats_epochs must be in [1, epochs={self.epochs}], "
                             f"not {self.stats_epochs!r}")
        if (isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int)
                or not 0 <= self.warmup_epochs <= self.epochs):
            raise ValueError(f"warmup_epochs must be an integer in [0, epochs={self.epochs}], "
                             f"not {self.warmup_epochs!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), not {self.test_fraction!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr!r}")
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise ValueError(f"train_subset must be >= batch_size ({self.batch_size}), "
                             f"not {self.train_subset!r}")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def load_digits_split(test_fraction=0.2, split_seed=0):
    """scikit-learn's digits (shipped inside the package), scaled to [0, 1], upsampled to 16x16.

    Returns ``(x_train, y_train, x_test, y_test)`` with ``x`` of shape ``(N, 1, 16, 16)`` float64
    and ``y`` int64; the split is stratified and fixed by ``split_seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float64)
    x = x.repeat(2, axis=1).repeat(2, axis=2)[:, None]            # nearest 2x upsampling
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                          random_state=split_seed)
    return (np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

def _maxpool2(a):
    """2x2/2 max-pool of ``(B, C, H, W)`` (H, W even); returns (out, one-hot argmax mask)."""
    b, c, h, w = a.shape
    win = a.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        b, c, h // 2, w // 2, 4)
    idx = win.argmax(axis=-1)                                         # first max wins ties
    out = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
    onehot = np.zeros(win.shape, dtype=bool)
    np.put_along_axis(onehot, idx[..., None], True, axis=-1)
    mask = onehot.reshape(b, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        b, c, h, w)
    return out, mask


def _unpool2(d, mask):
    """Route a pooled gradient ``(B, C, H/2, W/2)`` to the argmax positions of ``mask``."""
    return d.repeat(2, axis=2).repeat(2, axis=3) * mask


def _ind(a):
    return (a != 0).astype(np.float64)


def _fwd(spec, x, w):
    if spec.type == "conv":
        return golden.conv2d_forward(x, w, spec.stride, spec.padding)
    return golden.fc_forward(x, w)


def _bwd_input(spec, dy, w, x_shape):
    if spec.type == "conv":
        return golden.conv2d_backward_input(dy, w, x_shape, spec.stride, spec.padding)
    return golden.fc_backward_input(dy, w)


def _bwd_weight(spec, x, dy):
    if spec.type == "conv":
        return golden.conv2d_backward_weight(x, dy, spec.weight_shape, spec.stride, spec.padding)
    return golden.fc_backward_weight(x, dy)


def _macs(spec, batch):
    """Dense multiply count of one phase (the same in FP, BP and WG): B*Cout*Ho*Wo*Cin*K*K."""
    return batch * spec.cout * spec.ho * spec.wo * spec.cin * spec.k * spec.k


class DigitsCNN:
    """Parameters (He-normal weights, zero biases) and the golden-model FP/BP/WG of ``layers``."""

    def __init__(self, rng, layers=NETWORK):
        self.layers = tuple(layers)
        self.w, self.b = [], []
        for spec in self.layers:
            fan_in = spec.cin * spec.k * spec.k
            self.w.append(rng.standard_normal(spec.weight_shape) * math.sqrt(2.0 / fan_in))
            self.b.append(np.zeros(spec.cout))

    def masks(self, variant):
        """Per layer ``(fwd, bwd)`` bool masks for ``variant`` (None for a dense layer).

        Default (the brief's BDWP): ``golden.bdwp_masks`` of the dense weights, both masks
        independent.  ``variant.nested``: ``bwd = fwd & nm_mask(W * fwd, n, m, axis=0)``, the
        Cout-direction N:M mask of the forward-masked weights (as Bi-Mask, Zhang et al. ICML 2023,
        does), so BP only uses weights that FP used; still at most N of every M along Cout.
        """
        out = []
        for spec, w in zip(self.layers, self.w):
            if variant.nm is not None and spec.bdwp:
                fwd, bwd = golden.bdwp_masks(w, *variant.nm)
                if variant.nested:
                    bwd = fwd & golden.nm_mask(w * fwd, *variant.nm, axis=0)
                out.append((fwd, bwd))
            else:
                out.append(None)
        return out

    def forward(self, x, masks):
        """FP with the forward-masked weights; returns (logits, cache for :meth:`backward`)."""
        cache = []
        a = x
        for i, spec in enumerate(self.layers):
            in_shape = a.shape
            if spec.type == "fc" and a.ndim == 4:
                a = a.reshape(a.shape[0], -1)
            wf = self.w[i] if masks[i] is None else self.w[i] * masks[i][0]
            z = _fwd(spec, a, wf)
            z += self.b[i].reshape((1, -1) + (1,) * (z.ndim - 2))
            entry = {"x": a, "in_shape": in_shape, "z": z, "pool_mask": None}
            out = np.maximum(z, 0.0) if spec.relu else z
            if spec.pool:
                out, entry["pool_mask"] = _maxpool2(out)
            cache.append(entry)
            a = out
        return a, cache

    def backward(self, cache, d, masks, variant, prune_rng):
        """BP and WG of every layer, last to first, from ``d`` = dLoss/dlogits.

        Per layer: ``dY`` = the gradient at the conv/FC output (after the max-pool and ReLU
        backward); pruned (``variant.prune_p``, layers with ``spec.prune``) into ``dy``, which
        feeds WG (``dw = conv2d_backward_weight(x, dy)``) and BP (``conv2d_backward_input(dy,
        W * bwd)``; not run for the first layer).  Returns one dict per layer (network order)
        with ``dw``, ``db``, ``dy_before``, ``dy``, ``tau``, ``p``, ``wf``, ``wb``.
        """
        recs = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            spec, c = self.layers[i], cache[i]
            if spec.pool:
                d = _unpool2(d, c["pool_mask"])
            if spec.relu:
                d = d * (c["z"] > 0)
            dy_before, dy, tau, p = d, d, 0.0, 0.0
            if spec.prune and variant.prune_p:
                p = variant.prune_p
                nz = dy_before[dy_before != 0] if variant.nzmean else dy_before
                tau = golden.prune_threshold(nz, p) if nz.size else 0.0
                dy = golden.stochastic_prune(dy_before, tau, prune_rng)
            x, w = c["x"], self.w[i]
            wf = w if masks[i] is None else w * masks[i][0]
            wb = w if masks[i] is None else w * masks[i][1]
            recs[i] = {"dw": _bwd_weight(spec, x, dy),
                       "db": dy.sum(axis=(0, 2, 3)) if dy.ndim == 4 else dy.sum(axis=0),
                       "dy_before": dy_before, "dy": dy, "tau": tau, "p": p, "wf": wf, "wb": wb}
            if i > 0:
                d = _bwd_input(spec, dy, wb, x.shape).reshape(c["in_shape"])
        return recs


def _softmax_xent(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    prob = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(prob[np.arange(len(y)), y] + 1e-300).mean()
    d = prob.copy()
    d[np.arange(len(y)), y] -= 1.0
    return loss, d / len(y)


# --------------------------------------------------------------------------------------------
# Statistics accumulation
# --------------------------------------------------------------------------------------------

class _LayerStats:
    """Sums (over sampled batches) of the counts the hardware would see in one layer."""

    _PHASE_KEYS = ("operand_nz", "operand_n", "weight_nz", "weight_n", "other_nz", "other_n",
                   "dense_macs", "useful_macs", "mask_nz", "mask_n", "useful_macs_masked")

    def __init__(self, spec):
        self.spec = spec
        self.phase = {ph: dict.fromkeys(self._PHASE_KEYS, 0) for ph in ("fp", "bp", "wg")}
        self.g = dict.fromkeys(("numel", "nz_before", "nz_after", "below_tau", "relu_nz",
                                "relu_n", "pool_nz", "pool_n", "nz_kurt_sum", "batches",
                                "tau_sum", "zero_aware_sum", "nonzero_before_sum"), 0.0)
        self.wts = dict.fromkeys(("n", "fwd_nz", "bwd_nz", "both_nz"), 0)

    def add(self, x, wf, wb, dy_before, dy_after, z, pool_mask, tau, p, nzmean=False):
        spec, b = self.spec, x.shape[0]
        macs = _macs(spec, b)
        ix, idy = _ind(x), _ind(dy_after)
        # FP: streamed x, weights W_fwd
        fp = self.phase["fp"]
        fp["operand_nz"] += int(np.count_nonzero(x)); fp["operand_n"] += x.size
        fp["weight_nz"] += int(np.count_nonzero(wf)) * b; fp["weight_n"] += wf.size * b
        fp["dense_macs"] += macs
        fp["useful_macs"] += int(round(_fwd(spec, ix, _ind(wf)).sum()))
        # BP: streamed dY, weights W_bwd; output positions needed where x > 0 (previous ReLU/pool)
        bp = self.phase["bp"]
        bp["operand_nz"] += int(np.count_nonzero(dy_after)); bp["operand_n"] += dy_after.size
        bp["weight_nz"] += int(np.count_nonzero(wb)) * b; bp["weight_n"] += wb.size * b
        bp["dense_macs"] += macs
        per_pos = _bwd_input(spec, idy, _ind(wb), x.shape)
        bp["useful_macs"] += int(round(per_pos.sum()))
        bp["useful_macs_masked"] += int(round((per_pos * (x > 0)).sum()))
        bp["mask_nz"] += int(np.count_nonzero(x > 0)); bp["mask_n"] += x.size
        # WG: streamed dY, other operand x; the result is dense
        wg = self.phase["wg"]
        wg["operand_nz"] += int(np.count_nonzero(dy_after)); wg["operand_n"] += dy_after.size
        wg["other_nz"] += int(np.count_nonzero(x)); wg["other_n"] += x.size
        wg["dense_macs"] += macs
        wg["useful_macs"] += int(round(_bwd_weight(spec, ix, idy).sum()))
        # weights (per batch; nz counts of the masked weights)
        self.wts["n"] += wf.size
        self.wts["fwd_nz"] += int(np.count_nonzero(wf))
        self.wts["bwd_nz"] += int(np.count_nonzero(wb))
        self.wts["both_nz"] += int(np.count_nonzero((wf != 0) & (wb != 0)))
        # gradient
        g = self.g
        n = dy_before.size
        g["numel"] += n
        g["batches"] += 1
        nz_b = np.count_nonzero(dy_before)
        g["nz_before"] += nz_b
        g["nz_after"] += np.count_nonzero(dy_after)
        g["tau_sum"] += tau
        if tau > 0:
            g["below_tau"] += np.count_nonzero(np.abs(dy_before) < tau)
        g["zero_aware_sum"] += closed_form_density_zero_aware(p, nz_b / n, nzmean) * n
        if spec.relu:
            g["relu_nz"] += np.count_nonzero(z > 0); g["relu_n"] += z.size
        if pool_mask is not None:
            g["pool_nz"] += np.count_nonzero(pool_mask); g["pool_n"] += pool_mask.size
        nzv = dy_before[dy_before != 0]
        if nzv.size > 3:
            c = nzv - nzv.mean()
            var = (c * c).mean()
            if var > 0:
                g["nz_kurt_sum"] += ((c ** 4).mean() / var ** 2 - 3.0)
                g["nonzero_before_sum"] += 1

    def to_dict(self, p, first_layer):
        spec = self.spec

        def frac(a, b):
            return round(a / b, 6) if b else None

        phases = {}
        for ph, d in self.phase.items():
            o = {"operand": "x" if ph == "fp" else "dy",
                 "operand_density": frac(d["operand_nz"], d["operand_n"]),
                 "weight_operand": {"fp": "w_fwd", "bp": "w_bwd", "wg": "x"}[ph],
                 "weight_density": (frac(d["weight_nz"], d["weight_n"]) if ph != "wg"
                                    else frac(d["other_nz"], d["other_n"])),
                 "dense_macs": int(d["dense_macs"]),
                 "useful_macs": int(d["useful_macs"]),
                 "useful_fraction": frac(d["useful_macs"], d["dense_macs"]),
                 "skipped": bool(ph == "bp" and first_layer)}
            if ph == "bp":
                o["output_mask_density"] = None if first_layer else frac(d["mask_nz"], d["mask_n"])
                o["useful_macs_masked"] = None if first_layer else int(d["useful_macs_masked"])
                o["useful_fraction_masked"] = (None if first_layer else
                                               frac(d["useful_macs_masked"], d["dense_macs"]))
            phases[ph] = o
        g = self.g
        grad = {"pruned": bool(spec.prune and p is not None and p > 0),
                "p": float(p) if (spec.prune and p is not None) else 0.0,
                "density_before": frac(g["nz_before"], g["numel"]),
                "density_after": frac(g["nz_after"], g["numel"]),
                "closed_form": None, "closed_form_zero_aware": None,
                "below_threshold_fraction": None, "tau_mean": None,
                "relu_mask_density": frac(g["relu_nz"], g["relu_n"]),
                "pool_mask_density": frac(g["pool_nz"], g["pool_n"]),
                "nonzero_excess_kurtosis": (round(g["nz_kurt_sum"] / g["nonzero_before_sum"], 4)
                                            if g["nonzero_before_sum"] else None)}
        if grad["pruned"]:
            grad["closed_form"] = round(closed_form_density(grad["p"]), 6)
            grad["closed_form_zero_aware"] = frac(g["zero_aware_sum"], g["numel"])
            grad["below_threshold_fraction"] = frac(g["below_tau"], g["numel"])
            grad["tau_mean"] = float(g["tau_sum"] / g["batches"]) if g["batches"] else None
        wts = {"fwd_density": frac(self.wts["fwd_nz"], self.wts["n"]),
               "bwd_density": frac(self.wts["bwd_nz"], self.wts["n"]),
               "bwd_in_fwd_fraction": frac(self.wts["both_nz"], self.wts["bwd_nz"])}
        return {"name": spec.name, "type": spec.type,
                "shape": {"batch": None, "cin": spec.cin, "cout": spec.cout, "h": spec.h,
                          "w": spec.w, "k": spec.k, "stride": spec.stride,
                          "padding": spec.padding, "ho": spec.ho, "wo": spec.wo},
                "relu": spec.relu, "pool": spec.pool,
                "bdwp": bool(spec.bdwp), "weights": wts, "phases": phases, "gradient": grad}


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------

def _lr_at(cfg, step, steps_per_epoch):
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (0.1 + 0.9 * step / warm)
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def _evaluate(model, masks, x, y, chunk=512):
    correct, loss = 0, 0.0
    for s in range(0, len(y), chunk):
        logits, _ = model.forward(x[s:s + chunk], masks)
        l, _ = _softmax_xent(logits, y[s:s + chunk])
        loss += l * len(y[s:s + chunk])
        correct += int((logits.argmax(axis=1) == y[s:s + chunk]).sum())
    return correct / len(y), loss / len(y)


def prepare_run(variant, seed, cfg=None, data=None):
    """The set-up every study run shares: ``variant`` parsed, ``seed`` checked, the config,
    the data split (loaded when ``data`` is None; ``cfg.train_subset`` applied) and the three
    random streams. Returns ``(variant, seed, cfg, (xtr, ytr, xte, yte), (init_rng,
    shuffle_rng, prune_rng))``."""
    if isinstance(variant, str):
        variant = parse_variant(variant)
    if not isinstance(variant, Variant):
        raise TypeError(f"variant must be a Variant or a name, not {type(variant).__name__}")
    cfg = cfg or TrainConfig()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    if data is None:
        data = load_digits_split(cfg.test_fraction, cfg.split_seed)
    xtr, ytr, xte, yte = data
    if cfg.train_subset is not None:
        xtr, ytr = xtr[:cfg.train_subset], ytr[:cfg.train_subset]
    rngs = tuple(np.random.default_rng(ss) for ss in np.random.SeedSequence(seed).spawn(3))
    return variant, seed, cfg, (xtr, ytr, xte, yte), rngs


def train_run(variant, seed, cfg=None, data=None, progress=None):
    """Train one variant with one seed; return the statistics dict (see ``stats_schema``).

    ``variant``: a :class:`Variant` or a name for :func:`parse_variant`.  ``data``: the result of
    :func:`load_digits_split` (loaded when None).  ``progress``: optional callable
    ``progress(epoch, test_acc)`` called after every epoch.
    """
    variant, seed, cfg, (xtr, ytr, xte, yte), (init_rng, shuffle_rng, prune_rng) = \
        prepare_run(variant, seed, cfg, data)
    model = DigitsCNN(init_rng)
    layers = model.layers
    vel_w = [np.zeros_like(w) for w in model.w]
    vel_b = [np.zeros_like(b) for b in model.b]
    steps_per_epoch = len(ytr) // cfg.batch_size                     # drop the last partial batch
    stats = [_LayerStats(s) for s in layers]
    history = {"test_acc": [], "test_loss": [], "train_acc": [], "train_loss": [],
               "grad_density_before": {s.name: [] for s in layers},
               "grad_density_after": {s.name: [] for s in layers}, "epoch_seconds": []}
    step = 0
    t_start = time.perf_counter()
    for epoch in range(cfg.epochs):
        t_ep = time.perf_counter()
        sample_stats = epoch >= cfg.epochs - cfg.stats_epochs
        order = shuffle_rng.permutation(len(ytr))
        ep_loss, ep_correct, ep_n = 0.0, 0, 0
        gd_nz = dict.fromkeys((s.name for s in layers), 0)
        gd_n = dict.fromkeys((s.name for s in layers), 0)
        gb_nz = dict.fromkeys((s.name for s in layers), 0)
        for bi in range(steps_per_epoch):
            idx = order[bi * cfg.batch_size:(bi + 1) * cfg.batch_size]
            xb, yb = xtr[idx], ytr[idx]
            masks = model.masks(variant)
            logits, cache = model.forward(xb, masks)
            loss, d = _softmax_xent(logits, yb)
            ep_loss += loss * len(yb)
            ep_correct += int((logits.argmax(axis=1) == yb).sum())
            ep_n += len(yb)
            recs = model.backward(cache, d, masks, variant, prune_rng)
            for i, (spec, r) in enumerate(zip(layers, recs)):
                gd_nz[spec.name] += int(np.count_nonzero(r["dy"]))
                gd_n[spec.name] += r["dy"].size
                gb_nz[spec.name] += int(np.count_nonzero(r["dy_before"]))
                if sample_stats:
                    c = cache[i]
                    stats[i].add(c["x"], r["wf"], r["wb"], r["dy_before"], r["dy"], c["z"],
                                 c["pool_mask"], r["tau"], r["p"], variant.nzmean)
            lr = _lr_at(cfg, step, steps_per_epoch)
            for i, spec in enumerate(layers):
                g = recs[i]["dw"] + cfg.weight_decay * model.w[i]
                if variant.srste and masks[i] is not None:
                    g = g + cfg.srste_decay * (~masks[i][0]) * model.w[i]
                vel_w[i] = cfg.momentum * vel_w[i] + g
                vel_b[i] = cfg.momentum * vel_b[i] + recs[i]["db"]
                model.w[i] = model.w[i] - lr * vel_w[i]
                model.b[i] = model.b[i] - lr * vel_b[i]
            step += 1
        eval_masks = model.masks(variant)
        te_acc, te_loss = _evaluate(model, eval_masks, xte, yte)
        history["test_acc"].append(round(te_acc, 6))
        history["test_loss"].append(round(te_loss, 6))
        history["train_acc"].append(round(ep_correct / ep_n, 6))
        history["train_loss"].append(round(ep_loss / ep_n, 6))
        for s in layers:
            history["grad_density_after"][s.name].append(round(gd_nz[s.name] / gd_n[s.name], 6))
            history["grad_density_before"][s.name].append(round(gb_nz[s.name] / gd_n[s.name], 6))
        history["epoch_seconds"].append(round(time.perf_counter() - t_ep, 4))
        if progress is not None:
            progress(epoch + 1, te_acc)
        if not np.isfinite(ep_loss):
            raise FloatingPointError(f"{variant.name} seed {seed}: loss diverged at epoch "
                                     f"{epoch + 1}")

    from sparseforge import __version__
    layer_dicts = []
    for i, st in enumerate(stats):
        ld = st.to_dict(variant.prune_p, first_layer=(i == 0))
        ld["shape"]["batch"] = cfg.batch_size
        ld["bdwp"] = bool(layers[i].bdwp and variant.nm is not None)
        kept = 1.0 if not ld["bdwp"] else variant.nm[0] / variant.nm[1]
        ld["nm"] = None if not ld["bdwp"] else {"n": variant.nm[0], "m": variant.nm[1]}
        ld["weight_kept_nominal"] = kept
        layer_dicts.append(ld)
    return {
        "schema": "sparseforge.train-stats",
        "schema_version": 1,
        "meta": {
            "variant": variant.name, **{k: v for k, v in variant.to_dict().items() if k != "name"},
            "seed": seed,
            "epoch": cfg.epochs,
            "stats_epochs": list(range(cfg.epochs - cfg.stats_epochs + 1, cfg.epochs + 1)),
            "batches_sampled": int(stats[0].g["batches"]),
            "dataset": DATASET, "label": LABEL, "network": NETWORK_NAME,
            "input_shape": [1, *INPUT_HW],
            "train_samples": int(len(ytr)), "test_samples": int(len(yte)),
            "config": asdict(cfg),
            "first_layer_dense": "conv1 has Cin = 1, no multiple of M: kept dense (fwd and bwd)",
            "last_layer_dense": "fc2 has Cout = 10, no multiple of M: kept dense (fwd and bwd)",
            "sparseforge_version": __version__,
            "seconds": round(time.perf_counter() - t_start, 3),
        },
        "accuracy": {"test_final": history["test_acc"][-1],
                     "train_final": history["train_acc"][-1]},
        "history": history,
        "layers": layer_dicts,
    }
