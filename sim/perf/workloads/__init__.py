"""Layer tables of the benchmark networks (AlexNet, VGG-16, ResNet-18, ResNet-50; ImageNet and
CIFAR forms), loaded from the YAML files next to this module and validated.

>>> net = load("resnet18-imagenet")
>>> net.layers[0].name, net.layers[0].ho
('conv1', 112)

Each file lists the layers in forward order; every layer reads a tensor (``in``: ``input`` or an
earlier layer's output, default the previous layer) and records its input shape, so that
:func:`load` checks the chain (channels, height, width; FC: the flattened size) and names the
layer in every error. What follows a layer (``bn``, residual ``add``, ``relu``, ``pool``) is
what the performance model needs to know which operands are post-ReLU (activation zeros) and
which gradients carry ReLU-derivative / max-pool zeros. Batch is 1 image per iteration in the
tables; :mod:`sparseforge.sim.perf.model` takes ``batch`` as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = ["Layer", "Network", "WorkloadError", "NETWORKS", "load", "load_file", "load_all"]

HERE = Path(__file__).resolve().parent
#: The shipped tables, in report order.
NETWORKS = ("alexnet-imagenet", "alexnet-cifar", "vgg16-imagenet", "vgg16-cifar",
            "resnet18-imagenet", "resnet18-cifar", "resnet50-imagenet", "resnet50-cifar")

_INT_FIELDS = ("cin", "cout", "kh", "kw", "stride", "padding", "h", "w")
_KNOWN = set(_INT_FIELDS) | {"name", "type", "in", "bn", "relu", "add", "pool"}


class WorkloadError(ValueError):
    """A workload table is malformed; the message names the file and the layer."""


@dataclass(frozen=True)
class Layer:
    """One conv or FC layer (FC: ``h = w = kh = kw = 1``, ``cin`` = flattened input size).

    ``input_kind``: what the FP operand (the layer's input) is -- ``image`` (the network input,
    dense), ``relu`` (a ReLU output), ``relu+maxpool`` (max-pooled ReLU output), ``relu+avgpool``
    (average-pooled ReLU output), ``linear`` (no ReLU before it).
    ``grad_kind``: what the output gradient dY (streamed by BP and WG) has passed through --
    ``bn`` (batch-norm backward: dense), ``relu`` (ReLU derivative zeros), ``relu+maxpool``
    (max-pool backward, then ReLU derivative), ``relu+avgpool``, ``none`` (the last layer: the
    loss gradient, dense).
    """
    name: str
    type: str
    cin: int
    cout: int
    kh: int
    kw: int
    stride: int
    padding: int
    h: int
    w: int
    src: str = "input"
    bn: bool = False
    relu: bool = False
    add: str | None = None
    pool: dict | None = None
    index: int = 0
    input_kind: str = "image"
    grad_kind: str = "none"

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.padding - self.kh) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.padding - self.kw) // self.stride + 1

    @property
    def out_shape(self) -> tuple:
        """(C, H, W) after the ReLU and pool that follow the layer."""
        ho, wo = self.ho, self.wo
        if self.pool:
            if self.pool.get("global"):
                ho = wo = 1
            else:
                k, s, p = self.pool["k"], self.pool["stride"], self.pool.get("padding", 0)
                ho, wo = (ho + 2 * p - k) // s + 1, (wo + 2 * p - k) // s + 1
        return (self.cout, ho, wo)

    @property
    def pool_select_fraction(self) -> float:
        """Fraction of this layer's output positions a max-pool's backward pass can reach
        (pooled positions / pre-pool positions, at most 1); 1 without a max-pool."""
        if not self.pool or self.pool["type"] != "max":
            return 1.0
        c, ph, pw = self.out_shape
        return min(1.0, ph * pw / (self.ho * self.wo))

    def dense_macs(self, batch: int = 1) -> int:
        """B * Cout * Ho * Wo * Cin * Kh * Kw (padding products included)."""
        return batch * self.cout * self.ho * self.wo * self.cin * self.kh * self.kw

    def valid_macs(self, batch: int = 1) -> int:
        """Products with both factors inside the (unpadded) tensors: what a dense-mode PE
        counts in ``busy_mac`` (padding products are squashed)."""
        def valid(n_in, n_out, k):
            return sum(sum(1 for r in range(k) if 0 <= o * self.stride + r - self.padding < n_in)
                       for o in range(n_out))
        return (batch * self.cout * self.cin * valid(self.h, self.ho, self.kh)
                * valid(self.w, self.wo, self.kw))


@dataclass(frozen=True)
class Network:
    name: str
    network: str
    dataset: str
    input: tuple
    layers: tuple = field(default_factory=tuple)
    path: str = ""

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(f"{self.name}: no layer named {name!r}")

    def dense_macs(self, batch: int = 1) -> int:
        return sum(lay.dense_macs(batch) for lay in self.layers)


def _err(where, msg):
    raise WorkloadError(f"{where}: {msg}")


def _parse(doc: dict, where: str) -> Network:
    if not isinstance(doc, dict):
        _err(where, "the document must be a mapping with name, input and layers")
    for key in ("name", "input", "layers"):
        if key not in doc:
            _err(where, f"missing top-level key {key!r}")
    inp = doc["input"]
    if (not isinstance(inp, list) or len(inp) != 3
            or not all(isinstance(v, int) and v > 0 for v in inp)):
        _err(where, f"input must be [C, H, W] of positive integers, not {inp!r}")
    if not isinstance(doc["layers"], list) or not doc["layers"]:
        _err(where, "layers must be a non-empty list")
    shapes = {"input": tuple(inp)}
    kinds = {"input": "image"}
    producers = {}
    layers, prev = [], "input"
    for i, d in enumerate(doc["layers"]):
        name = d.get("name") if isinstance(d, dict) else None
        lw = f"{where}: layer {i} ({name or '?'})"
        if not isinstance(d, dict) or not isinstance(name, str) or not name:
            _err(lw, "every layer needs a non-empty string 'name'")
        if name in shapes:
            _err(lw, f"duplicate layer name {name!r}")
        unknown = sorted(set(d) - _KNOWN)
        if unknown:
            _err(lw, f"unknown field(s) {unknown}; known: {sorted(_KNOWN)}")
        if d.get("type") not in ("conv", "fc"):
            _err(lw, f"type must be 'conv' or 'fc', not {d.get('type')!r}")
        for f in _INT_FIELDS:
            v = d.get(f)
            if not isinstance(v, int) or isinstance(v, bool):
                _err(lw, f"{f} must be an integer, not {v!r}")
            lo = 0 if f == "padding" else 1
            if v < lo:
                _err(lw, f"{f} must be >= {lo}, not {v}")
        src = d.get("in", prev)
        if src not in shapes:
            _err(lw, f"input {src!r} is not 'input' or an earlier layer")
        c, h, w = shapes[src]
        if d["type"] == "fc":
            if (d["h"], d["w"], d["kh"], d["kw"], d["stride"], d["padding"]) != (1, 1, 1, 1, 1, 0):
                _err(lw, "an fc layer needs h = w = kh = kw = stride = 1 and padding = 0")
            if d["cin"] != c * h * w:
                _err(lw, f"cin={d['cin']} but the input {src!r} flattens to {c}x{h}x{w} = "
                     f"{c * h * w}")
        elif (d["cin"], d["h"], d["w"]) != (c, h, w):
            _err(lw, f"input shape (cin, h, w) = {(d['cin'], d['h'], d['w'])} does not match "
                 f"{src!r}'s output {(c, h, w)}")
        if d["kh"] > d["h"] + 2 * d["padding"] or d["kw"] > d["w"] + 2 * d["padding"]:
            _err(lw, f"kernel {d['kh']}x{d['kw']} larger than the padded input")
        pool = d.get("pool")
        if pool is not None:
            if not isinstance(pool, dict) or pool.get("type") not in ("max", "avg"):
                _err(lw, f"pool must be {{type: max|avg, k, stride[, padding]}} or "
                     f"{{type: avg, global: true}}, not {pool!r}")
            if not pool.get("global"):
                for f in ("k", "stride"):
                    if not isinstance(pool.get(f), int) or pool[f] < 1:
                        _err(lw, f"pool.{f} must be a positive integer, not {pool.get(f)!r}")
        lay = Layer(name=name, type=d["type"], **{f: d[f] for f in _INT_FIELDS}, src=src,
                    bn=bool(d.get("bn", False)), relu=bool(d.get("relu", False)),
                    add=d.get("add"), pool=pool, index=i)
        if lay.add is not None:
            if lay.add not in shapes or lay.add == "input":
                _err(lw, f"add {lay.add!r} is not an earlier layer")
            if shapes[lay.add] != (lay.cout, lay.ho, lay.wo):
                _err(lw, f"residual {lay.add!r} has shape {shapes[lay.add]}, the layer's output "
                     f"is {(lay.cout, lay.ho, lay.wo)}")
        _, oh, ow = lay.out_shape
        if oh < 1 or ow < 1:
            _err(lw, "the pool leaves an empty output")
        # what the FP operand is, and what the output gradient passed through
        input_kind = kinds[src]
        if lay.relu:
            out_kind = ("relu" if not pool else
                        "relu+maxpool" if pool["type"] == "max" else "relu+avgpool")
        else:
            out_kind = "linear"
        if lay.bn:
            grad_kind = "bn"
        elif lay.relu:
            grad_kind = out_kind
        else:
            grad_kind = "none"
        lay = Layer(**{**lay.__dict__, "input_kind": input_kind, "grad_kind": grad_kind})
        shapes[name], kinds[name], producers[name] = lay.out_shape, out_kind, lay
        layers.append(lay)
        prev = name
    return Network(name=str(doc["name"]), network=str(doc.get("network", doc["name"])),
                   dataset=str(doc.get("dataset", "")), input=tuple(inp), layers=tuple(layers),
                   path=where)


def load_file(path) -> Network:
    """Load and validate one workload YAML file (:class:`WorkloadError` names the layer)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise WorkloadError(f"{path.name}: not valid YAML: {e}") from None
    return _parse(doc, path.name)


def load(name: str) -> Network:
    """Load a shipped table by name (one of :data:`NETWORKS`)."""
    if not isinstance(name, str):
        raise TypeError(f"network name must be a string, not {name!r}")
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; known: {list(NETWORKS)}")
    return load_file(HERE / f"{name}.yaml")


def load_all() -> dict:
    return {n: load(n) for n in NETWORKS}


def parse(doc: dict, where: str = "<dict>") -> Network:
    """Validate an in-memory document (same format as the YAML files)."""
    return _parse(doc, where)
