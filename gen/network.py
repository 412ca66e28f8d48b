"""Network description -> validated layer list with inferred shapes.

A network is a table (YAML or TOML file, or a Python dict)::

    name: digits-cnn
    input: [1, 16, 16]          # (C, H, W) of one sample
    batch: 4
    prune_p: 0.9                # optional: stochastic dY pruning rate of the layers with prune
    nm: [2, 8]                  # optional: BDWP N:M (N <= cfg.nm_n_max, M == cfg.nm_m)
    layers:
      - {kind: conv, name: conv1, cout: 8, kernel: 3, padding: 1}
      - {kind: relu}
      - {kind: maxpool, kernel: 2, stride: 2}
      - {kind: fc, name: fc1, cout: 32, relu: true}

Layer kinds and keys (``name`` optional everywhere, default ``<kind><index>``):

* ``conv``: ``cout``; ``kernel`` (int or ``[kh, kw]``); ``stride`` (1); ``padding`` (0);
  ``relu`` (false); ``cin`` (optional check against the inferred input channels); ``bdwp``
  (``auto`` | true | false, default ``auto``); ``prune`` (default true).
* ``fc``: ``cout``; ``relu`` (false); ``cin`` (optional check; the input is flattened to
  ``C*H*W`` features); ``bdwp``; ``prune`` (default false).
* ``maxpool``: ``kernel`` (2); ``stride`` (default = kernel); ``padding`` (0).
* ``avgpool``: as ``maxpool``, or ``global: true`` (one output per channel).
* ``relu``: no keys.

Graph keys of conv/fc (the benchmark networks; the accelerator runs chains, so with a
configuration they are refused): ``in`` (the tensor read: ``input`` or an earlier layer's name;
default the previous layer), ``bn`` (batch norm after the layer), ``add`` (an earlier layer whose
output is added before the ReLU: residual). Top-level ``network`` / ``dataset`` / ``description``
are labels. ``gen/networks/`` holds every shipped network: the two the accelerator runs
(``digits-cnn``, the training study's network, and ``tiny-cnn``) and the benchmark networks of
the performance model (AlexNet, VGG-16, ResNet-18, ResNet-50 in ImageNet and CIFAR forms,
written by :mod:`sparseforge.gen.netgen`; :data:`BENCHMARKS`).

Without a configuration (``cfg=None``) a description is checked for what it says only (keys,
values, shapes that chain); the hardware checks below and BDWP against ``cfg.nm_m`` need one
(without it BDWP resolves against the network's own ``nm``, or stays off).

Hardware view (*ours*): ReLU and max-pool are not separate passes. A ``relu`` layer is fused
into the nearest preceding conv/fc (it commutes with max-pool), where the compressor applies it
on the way out (and the ReLU derivative mask on the way back); a ``maxpool`` is fused into the
preceding conv/fc's write-back. :attr:`Network.compute` lists the conv/fc layers with their
fused ``relu`` and ``pool``. An FC layer runs as a 1x1 convolution whose row axis is the batch
(operand rows ``x[:, c]`` of length ``batch``; see ``docs/schedule.md``).

Checks with a configuration (each error names the layer by index, name and kind): unknown kinds and keys, bad
values, shapes that do not chain (an explicit ``cin`` that differs from the inferred one, a
kernel or pool window larger than its padded input), strides outside ``cfg.strides``, kernel
rows longer than ``cfg.k_max``, padding outside ``[0, cfg.k_max]``, input or output rows (FC:
the batch) longer than ``cfg.max_row_len``, reductions that could overflow ``cfg.acc_width``, and
``bdwp: true`` on a layer whose reduction axes are not multiples of ``cfg.nm_m``.

Tensor kinds (what the performance model needs): :attr:`ComputeLayer.input_kind` is what the
layer's FP operand is (``image``, ``relu``, ``relu+maxpool``, ``relu+avgpool``, ``linear``);
:attr:`ComputeLayer.grad_kind` what its output gradient passed through (``bn``, ``relu``,
``relu+maxpool``, ``relu+avgpool``, ``none``: the loss gradient or a linear output).

BDWP policy (as ``sparseforge/study/train.py``): the forward N:M groups run along Cin, the backward ones
along Cout, so BDWP applies to a layer only when **both** Cin and Cout are multiples of M;
with ``bdwp: auto`` any other layer stays dense in both directions (the digits CNN's conv1,
Cin = 1, and fc2, Cout = 10), with the reason recorded in :attr:`ComputeLayer.dense_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseforge.gen.config import AcceleratorConfig, parse_table_file

__all__ = ["Layer", "ComputeLayer", "PoolSpec", "Network", "NetworkError", "load_network", "parse_network",
           "NETWORKS_DIR", "BENCHMARKS", "example", "examples"]

#: Example networks shipped with the package.
NETWORKS_DIR = Path(__file__).parent / "networks"

#: The benchmark networks of the performance model (``sparseforge.bench``), in report order.
BENCHMARKS = ("alexnet-imagenet", "alexnet-cifar", "vgg16-imagenet", "vgg16-cifar",
              "resnet18-imagenet", "resnet18-cifar", "resnet50-imagenet", "resnet50-cifar")

KINDS = ("conv", "fc", "maxpool", "avgpool", "relu")
_GRAPH = {"in", "bn", "add"}
_KEYS = {
    "conv": {"kind", "type", "name", "cout", "kernel", "stride", "padding", "relu", "cin", "bdwp",
             "prune"} | _GRAPH,
    "fc": {"kind", "type", "name", "cout", "relu", "cin", "bdwp", "prune"} | _GRAPH,
    "maxpool": {"kind", "type", "name", "kernel", "stride", "padding"},
    "avgpool": {"kind", "type", "name", "kernel", "stride", "padding", "global"},
    "relu": {"kind", "type", "name"},
}
_TOP_KEYS = {"name", "input", "batch", "layers", "prune_p", "nm", "description", "network",
             "dataset"}


class NetworkError(ValueError):
    """A network description that cannot run on the configuration (a ``ValueError``)."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Layer:
    """One layer of the description with its inferred shapes (``(C, H, W)`` of one sample)."""
    index: int
    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"layer {self.index} {self.name!r} ({self.kind})"


@dataclass(frozen=True)
class PoolSpec:
    """A pool as described: ``kind`` ``"max"`` or ``"avg"``; window ``k``, ``stride``,
    ``padding``; or ``is_global`` (one output per channel; ``k`` and ``stride`` None)."""
    kind: str
    k: int | None = None
    stride: int | None = None
    padding: int = 0
    is_global: bool = False

    def out_hw(self, h: int, w: int) -> tuple:
        if self.is_global:
            return (1, 1)
        return (_out_len(h, self.k, self.stride, self.padding),
                _out_len(w, self.k, self.stride, self.padding))


@dataclass(frozen=True)
class ComputeLayer:
    """A conv or FC layer as the accelerator runs it: a (possibly 1x1) convolution with fused
    ReLU and max-pool.

    ``cin, h, w``: the conv input; ``cout, ho, wo``: the conv output before pooling (FC:
    ``h = ho = 1`` and the row axis ``w = wo = batch`` with a batch of 1, see the module doc).
    ``batch``: the batch the rows are replicated over (FC: 1). ``pool``: ``(kernel, stride)``
    or ``None`` (a global average pool: ``None``; see ``pool_spec``). ``bdwp``: N:M applies
    (forward along Cin, backward along Cout); otherwise ``dense_reason`` says why not.

    Graph view (the benchmark networks): ``src`` (the tensor read), ``bn``, ``add``,
    ``pool_spec`` (the fused pool, a :class:`PoolSpec`), ``input_kind`` / ``grad_kind`` (module doc). The performance model reads
    the conv geometry per image (``batch`` is its parameter): a network parsed with batch 1,
    as the benchmark networks are, has its FC layers at ``h = w = 1``.
    """
    id: int
    name: str
    kind: str
    layer_index: int
    cin: int
    cout: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int
    padding: int
    ho: int
    wo: int
    batch: int
    relu: bool
    pool: tuple | None
    bdwp: bool
    prune: bool
    dense_reason: str = ""
    src: str = "input"
    bn: bool = False
    add: str | None = None
    pool_spec: PoolSpec | None = None
    input_kind: str = "image"
    grad_kind: str = "none"

    @property
    def label(self) -> str:
        return f"layer {self.layer_index} {self.name!r} ({self.kind})"

    @property
    def out_shape(self) -> tuple:
        """(C, H, W) of one sample after the fused ReLU and pool."""
        if self.pool_spec is None:
            return (self.cout, self.ho, self.wo)
        return (self.cout, *self.pool_spec.out_hw(self.ho, self.wo))

    @property
    def pool_select_fraction(self) -> float:
        """Fraction of this layer's output positions a max-pool's backward pass can reach
        (pooled positions / pre-pool positions, at most 1); 1 without a max-pool."""
        if self.pool_spec is None or self.pool_spec.kind != "max":
            return 1.0
        _, ph, pw = self.out_shape
        return min(1.0, ph * pw / (self.ho * self.wo))

    def dense_macs(self, batch: int = 1) -> int:
        """``batch`` * Cout * Ho * Wo * Cin * Kh * Kw (padding products included)."""
        return batch * self.cout * self.ho * self.wo * self.cin * self.kh * self.kw

    def valid_macs(self, batch: int = 1) -> int:
        """Products with both factors inside the (unpadded) tensors: what a dense-mode PE
        counts in ``busy_mac`` (padding products are squashed)."""
        def valid(n_in, n_out, k):
            return sum(sum(1 for r in range(k) if 0 <= o * self.stride + r - self.padding < n_in)
                       for o in range(n_out))
        return (batch * self.cout * self.cin * valid(self.h, self.ho, self.kh)
                * valid(self.w, self.wo, self.kw))

    @property
    def weight_shape(self) -> tuple:
        return (self.cout, self.cin, self.kh, self.kw)

    @property
    def weight_words(self) -> int:
        return self.cout * self.cin * self.kh * self.kw

    @property
    def in_words(self) -> int:
        return self.batch * self.cin * self.h * self.w

    @property
    def out_words(self) -> int:
        return self.batch * self.cout * self.ho * self.wo

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of one FP (= one BP = one WG) pass."""
        return self.batch * self.cout * self.ho * self.wo * self.cin * self.kh * self.kw


@dataclass(frozen=True)
class Network:
    name: str
    input: tuple
    batch: int
    layers: tuple
    compute: tuple
    prune_p: float = 0.0
    nm: tuple | None = None
    network: str = ""
    dataset: str = ""

    @property
    def output_shape(self) -> tuple:
        return self.layers[-1].out_shape if self.layers else self.input

    def producer(self, tensor: str) -> str:
        """The conv/fc layer whose output, with the ReLU and pool fused into it, ``tensor`` (a
        layer name, as ``in`` and ``add`` use) is; ``"input"`` for the network input."""
        owner = {"input": "input"}
        for lay in self.layers:
            owner[lay.name] = lay.name if lay.kind in ("conv", "fc") else owner[prev]
            prev = lay.name
        return owner[tensor]

    def compute_layer(self, name: str) -> ComputeLayer:
        """The conv/fc layer called ``name`` (``KeyError`` otherwise)."""
        for c in self.compute:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}: no conv/fc layer named {name!r}")

    def dense_macs(self, batch: int = 1) -> int:
        """Dense products of one pass over the conv/fc layers, ``batch`` times."""
        return sum(c.dense_macs(batch) for c in self.compute)

    def summary(self) -> str:
        lines = [f"network {self.name!r}: input {self.input}, batch {self.batch}"]
        for lay in self.layers:
            lines.append(f"  {lay.index:2d} {lay.name:<10} {lay.kind:<8} {lay.in_shape} -> "
                         f"{lay.out_shape}")
        for c in self.compute:
            mode = "BDWP" if c.bdwp else f"dense ({c.dense_reason})"
            lines.append(f"  compute {c.id}: {c.name} {c.kind} {c.cin}x{c.h}x{c.w} -> "
                         f"{c.cout}x{c.ho}x{c.wo} k={c.kh}x{c.kw} s={c.stride} p={c.padding} "
                         f"relu={int(c.relu)} pool={c.pool} {mode}")
        return "\n".join(lines)


# -- loading ------------------------------------------------------------------------------------

def load_network(src, cfg: AcceleratorConfig | None = None, *, batch: int | None = None) -> Network:
    """Load and validate a network: a ``.yaml``/``.yml``/``.toml`` path, a dict, or the name of
    a network in :data:`NETWORKS_DIR` (e.g. ``"digits-cnn"``, ``"resnet18-cifar"``). ``cfg``:
    the configuration it must run on, or None (structural checks only; module doc). ``batch``:
    replaces the description's batch size."""
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise NetworkError(f"batch must be an integer >= 1, not {batch!r}")
    if isinstance(src, dict):
        return parse_network(src if batch is None else {**src, "batch": batch}, cfg)
    if isinstance(src, str) and not Path(src).suffix and (NETWORKS_DIR / f"{src}.yaml").is_file():
        src = NETWORKS_DIR / f"{src}.yaml"
    if not isinstance(src, (str, Path)):
        raise TypeError(f"network must be a path, an example name or a dict, not {type(src).__name__}")
    path = Path(src)
    if not path.is_file():
        raise NetworkError(f"unknown network {str(src)!r}: no such file or example (examples: "
                           f"{examples()})")
    data = parse_table_file(path, "network", NetworkError)
    data.setdefault("name", path.stem)
    if batch is not None:
        data["batch"] = batch
    return parse_network(data, cfg)


def examples() -> list[str]:
    """Names of the shipped networks (``gen/networks/*.yaml``)."""
    return sorted(p.stem for p in NETWORKS_DIR.glob("*.yaml"))


def example(name: str, cfg: AcceleratorConfig | None = None) -> Network:
    """One of the shipped networks (``ValueError`` lists them)."""
    path = NETWORKS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise NetworkError(f"unknown example network {name!r}; known: {examples()}")
    return load_network(path, cfg)


# -- validation ---------------------------------------------------------------------------------

def _int(label, key, v, lo, hi=None) -> int:
    if not _is_int(v):
        raise NetworkError(f"{label}: {key} must be an integer, not {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise NetworkError(f"{label}: {key} must be in {rng}, not {v}")
    return v


def _bool(label, key, v) -> bool:
    if not isinstance(v, bool):
        raise NetworkError(f"{label}: {key} must be true or false, not {v!r}")
    return v


def _pair(label, key, v, lo, hi=None) -> tuple:
    if _is_int(v):
        v = (v, v)
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise NetworkError(f"{label}: {key} must be an integer or a pair [h, w], not {v!r}")
    return (_int(label, f"{key}[0]", v[0], lo, hi), _int(label, f"{key}[1]", v[1], lo, hi))


def _out_len(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _top(data, cfg):
    """The validated top-level keys: ``(name, input, batch, prune_p, nm)``."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise NetworkError(f"network: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    name = data.get("name", "network")
    if not isinstance(name, str) or not name:
        raise NetworkError(f"network: name must be a non-empty string, not {name!r}")
    inp = data.get("input")
    if not isinstance(inp, (list, tuple)) or len(inp) != 3:
        raise NetworkError(f"network: input must be [C, H, W], not {inp!r}")
    inp = tuple(_int("network", f"input[{k}]", v, 1) for k, v in enumerate(inp))
    batch = _int("network", "batch", data.get("batch", 1), 1)
    prune_p = data.get("prune_p", 0.0)
    if isinstance(prune_p, bool) or not isinstance(prune_p, (int, float)) or not 0 <= prune_p < 1:
        raise NetworkError(f"network: prune_p must be a number in [0, 1), not {prune_p!r}")
    nm = data.get("nm")
    if nm is not None:
        if not isinstance(nm, (list, tuple)) or len(nm) != 2:
            raise NetworkError(f"network: nm must be [N, M], not {nm!r}")
        if cfg is None:
            m = _int("network", "nm[1] (M)", nm[1], 1)
            nm = (_int("network", "nm[0] (N)", nm[0], 1, m), m)
        else:
            n = _int("network", "nm[0] (N)", nm[0], 1, cfg.nm_n_max)
            if nm[1] != cfg.nm_m:
                raise NetworkError(f"network: nm[1] (M) must equal cfg.nm_m={cfg.nm_m}, not "
                                   f"{nm[1]!r}")
            nm = (n, cfg.nm_m)
    return name, inp, batch, float(prune_p), nm


def _pool(label, spec, kind, shape, compute, cfg, params) -> tuple:
    """A max- or average pool fused into the preceding conv/fc; returns its output shape."""
    c, h, w = shape
    what = "a max-pool" if kind == "maxpool" else "an average pool"
    if not compute:
        raise NetworkError(f"{label}: {what} must follow a conv or fc layer (it is fused into "
                           f"that layer's write-back)")
    if compute[-1]["pool_spec"] is not None:
        had = "a max-pool" if compute[-1]["pool_spec"].kind == "max" else "an average pool"
        raise NetworkError(f"{label}: {compute[-1]['name']!r} already has {had}; only one per "
                           f"conv/fc layer")
    typ = "max" if kind == "maxpool" else "avg"
    glob = _bool(label, "global", spec.get("global", False))
    if glob and set(spec) & {"kernel", "stride", "padding"}:
        raise NetworkError(f"{label}: a global pool takes no kernel, stride or padding")
    if glob:
        pool_spec, pool, out = PoolSpec(typ, is_global=True), None, (c, 1, 1)
    else:
        k = _int(label, "kernel", spec.get("kernel", 2), 1)
        s = _int(label, "stride", spec.get("stride", k), 1)
        p = _int(label, "padding", spec.get("padding", 0), 0)
        if k > h + 2 * p or k > w + 2 * p:
            raise NetworkError(f"{label}: pool window {k}x{k} is larger than its input "
                               f"{h}x{w}: shapes do not chain")
        pool_spec, pool = PoolSpec(typ, k, s, p), (k, s)
        out = (c, _out_len(h, k, s, p), _out_len(w, k, s, p))
        params.update(kernel=k, stride=s, **({"padding": p} if p else {}))
    if cfg is not None and (typ != "max" or pool_spec.padding):
        raise NetworkError(f"{label}: the accelerator fuses only unpadded max-pools into the "
                           f"write-back")
    compute[-1].update(pool=pool, pool_spec=pool_spec)
    return out


def parse_network(data: dict, cfg: AcceleratorConfig | None = None) -> Network:
    """Validate a network table (against ``cfg`` when given); raise :class:`NetworkError`
    naming the layer."""
    if cfg is not None and not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    if not isinstance(data, dict):
        raise TypeError(f"network description must be a dict, not {type(data).__name__}")
    name, inp, batch, prune_p, nm = _top(data, cfg)
    layers_in = data.get("layers")
    if not isinstance(layers_in, (list, tuple)) or not layers_in:
        raise NetworkError("network: layers must be a non-empty list")

    layers: list[Layer] = []
    compute: list[dict] = []
    shapes = {"input": inp}                  # tensor name -> (C, H, W) of one sample
    tensor_kind = {"input": "image"}         # tensor name -> what it is (module doc)
    prev = "input"
    for index, spec in enumerate(layers_in):
        if not isinstance(spec, dict):
            raise NetworkError(f"layer {index}: must be a table, not {spec!r}")
        kind = spec.get("kind", spec.get("type"))
        if kind not in KINDS:
            raise NetworkError(f"layer {index}: kind must be one of {KINDS}, not {kind!r}")
        lname = spec.get("name", f"{kind}{index}")
        label = f"layer {index} {lname!r} ({kind})"
        if not isinstance(lname, str) or not lname:
            raise NetworkError(f"layer {index}: name must be a non-empty string, not {lname!r}")
        if lname in shapes:
            raise NetworkError(f"{label}: duplicate layer name" if lname != "input" else
                               f"{label}: the name 'input' is the network input's")
        bad = sorted(set(spec) - _KEYS[kind])
        if bad:
            raise NetworkError(f"{label}: unknown key(s) {bad}; known for {kind}: "
                               f"{sorted(_KEYS[kind] - {'type'})}")
        params: dict[str, Any] = {}
        if kind in ("conv", "fc"):
            src = spec.get("in", prev)
            if not isinstance(src, str) or src not in shapes:
                raise NetworkError(f"{label}: input {src!r} is not 'input' or an earlier layer")
            shape = shapes[src]
            out = (_conv if kind == "conv" else _fc)(label, spec, shape, batch, cfg, nm, params)
            graph = _graph(label, spec, src, prev, params, shapes, cfg)
            compute.append(params | graph | {"name": lname, "kind": kind, "layer_index": index,
                                             "pool": None, "pool_spec": None,
                                             "input_kind": tensor_kind[src]})
            tensor_kind[lname] = "relu" if params["relu"] else "linear"
        else:
            shape = shapes[prev]
            if kind == "relu":
                out = shape
                if not compute:
                    raise NetworkError(f"{label}: a ReLU must follow a conv or fc layer (it is "
                                       f"fused into the nearest preceding one)")
                compute[-1]["relu"] = True
                pool = compute[-1]["pool_spec"]
                tensor_kind[lname] = f"relu+{pool.kind}pool" if pool else "relu"
            else:
                out = _pool(label, spec, kind, shape, compute, cfg, params)
                tensor_kind[lname] = (f"relu+{kind[:3]}pool" if tensor_kind[prev] == "relu"
                                      else "linear")
        layers.append(Layer(index, lname, kind, shape, out, dict(params)))
        shapes[lname] = out
        prev = lname

    out_compute = []
    for cid, p in enumerate(compute):
        pool = p["pool_spec"]
        grad = ("bn" if p["bn"] else "none" if not p["relu"] else
                "relu" if not pool else f"relu+{pool.kind}pool")
        out_compute.append(ComputeLayer(id=cid, **p, grad_kind=grad))
    return Network(name=name, input=inp, batch=batch, layers=tuple(layers),
                   compute=tuple(out_compute), prune_p=prune_p, nm=nm,
                   network=str(data.get("network", "")), dataset=str(data.get("dataset", "")))


def _graph(label, spec, src, prev, params, shapes, cfg) -> dict:
    """The graph keys of a conv/fc layer: ``src``, ``bn``, residual ``add`` (checked)."""
    bn = _bool(label, "bn", spec.get("bn", False))
    add = spec.get("add")
    if add is not None:
        if not isinstance(add, str) or add not in shapes or add == "input":
            raise NetworkError(f"{label}: add {add!r} is not an earlier layer")
        want = (params["cout"], params["ho"], params["wo"])
        if shapes[add] != want:
            raise NetworkError(f"{label}: residual {add!r} has shape {shapes[add]}, the layer's "
                               f"output is {want}")
    if cfg is not None and (bn or add is not None or src != prev):
        raise NetworkError(f"{label}: the accelerator runs a chain of conv/fc layers (no bn, "
                           f"add or in other than the previous layer)")
    return {"src": src, "bn": bn, "add": add}


def _check_rows(label, cfg, rows):
    for what, n in rows:
        if n > cfg.max_row_len:
            raise NetworkError(f"{label}: {what} row length {n} exceeds max_row_len="
                               f"{cfg.max_row_len}")


def _bdwp(label, spec, cin, cout, cfg, nm):
    """Resolve the layer's BDWP flag against ``cfg.nm_m`` (without a configuration: the
    network's ``nm``; neither: off); returns ``(bdwp, dense_reason)``."""
    want = spec.get("bdwp", "auto")
    if want not in ("auto", True, False):
        raise NetworkError(f"{label}: bdwp must be auto, true or false, not {want!r}")
    if want is False:
        return False, "bdwp: false"
    m = cfg.nm_m if cfg is not None else nm[1] if nm else None
    if m is None:
        if want is True:
            raise NetworkError(f"{label}: bdwp requested but neither a configuration nor the "
                               f"network's nm gives M")
        return False, "no N:M (no configuration, no nm)"
    why = []
    if cin % m:
        why.append(f"Cin={cin} is no multiple of M={m}")
    if cout % m:
        why.append(f"Cout={cout} is no multiple of M={m}")
    if why:
        if want is True:
            raise NetworkError(f"{label}: bdwp requested but {' and '.join(why)} (forward N:M "
                               f"groups run along Cin, backward ones along Cout)")
        return False, "; ".join(why)
    return True, ""


def _common_checks(label, cfg, batch, cin, cout, kh, kw, ho, wo):
    for what, terms in (("FP output", cin * kh * kw), ("BP input gradient", cout * kh * kw),
                        ("WG weight gradient", batch * ho * wo)):
        try:
            cfg.check_reduction(terms, what)
        except ValueError as e:
            raise NetworkError(f"{label}: {e}") from None


def _conv(label, spec, shape, batch, cfg, nm, params) -> tuple:
    c, h, w = shape
    if "cin" in spec and _int(label, "cin", spec["cin"], 1) != c:
        raise NetworkError(f"{label}: expects cin={spec['cin']} but its input has {c} channels "
                           f"(shape {shape}): shapes do not chain")
    cout = _int(label, "cout", spec.get("cout"), 1)
    kh, kw = _pair(label, "kernel", spec.get("kernel", 3), 1)
    stride = spec.get("stride", 1)
    if not _is_int(stride):
        raise NetworkError(f"{label}: stride must be an integer, not {stride!r}")
    if cfg is None:
        stride = _int(label, "stride", stride, 1)
        padding = _int(label, "padding", spec.get("padding", 0), 0)
    else:
        if stride not in cfg.strides:
            raise NetworkError(f"{label}: unsupported stride {stride}: the PE supports strides "
                               f"{cfg.strides}")
        padding = _int(label, "padding", spec.get("padding", 0), 0, cfg.k_max)
        if kw > cfg.k_max:
            raise NetworkError(f"{label}: kernel row length {kw} exceeds k_max={cfg.k_max}")
    if kh > h + 2 * padding or kw > w + 2 * padding:
        raise NetworkError(f"{label}: kernel {kh}x{kw} is larger than the padded input "
                           f"{h + 2 * padding}x{w + 2 * padding}: shapes do not chain")
    ho, wo = _out_len(h, kh, stride, padding), _out_len(w, kw, stride, padding)
    if cfg is not None:
        _check_rows(label, cfg, [("input", w), ("output", wo)])
        _common_checks(label, cfg, batch, c, cout, kh, kw, ho, wo)
    bdwp, why = _bdwp(label, spec, c, cout, cfg, nm)
    params.update(cin=c, cout=cout, h=h, w=w, kh=kh, kw=kw, stride=stride, padding=padding,
                  ho=ho, wo=wo, batch=batch, relu=_bool(label, "relu", spec.get("relu", False)),
                  bdwp=bdwp, dense_reason=why,
                  prune=_bool(label, "prune", spec.get("prune", True)))
    return (cout, ho, wo)


def _fc(label, spec, shape, batch, cfg, nm, params) -> tuple:
    c, h, w = shape
    cin = c * h * w
    if "cin" in spec and _int(label, "cin", spec["cin"], 1) != cin:
        raise NetworkError(f"{label}: expects cin={spec['cin']} but its input {shape} flattens "
                           f"to {cin} features: shapes do not chain")
    cout = _int(label, "cout", spec.get("cout"), 1)
    # 1x1 convolution with the batch as the row axis (module doc): rows of `batch` elements.
    if cfg is not None:
        _check_rows(label, cfg, [("batch (FC row)", batch)])
        _common_checks(label, cfg, 1, cin, cout, 1, 1, 1, batch)
    bdwp, why = _bdwp(label, spec, cin, cout, cfg, nm)
    params.update(cin=cin, cout=cout, h=1, w=batch, kh=1, kw=1, stride=1, padding=0, ho=1,
                  wo=batch, batch=1, relu=_bool(label, "relu", spec.get("relu", False)),
                  bdwp=bdwp, dense_reason=why,
                  prune=_bool(label, "prune", spec.get("prune", False)))
    return (cout, 1, 1)
