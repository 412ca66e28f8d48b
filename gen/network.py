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
* ``maxpool``: ``kernel`` (2); ``stride`` (default = kernel).
* ``relu``: no keys.

Hardware view (*ours*): ReLU and max-pool are not separate passes. A ``relu`` layer is fused
into the nearest preceding conv/fc (it commutes with max-pool), where the compressor applies it
on the way out (and the ReLU derivative mask on the way back); a ``maxpool`` is fused into the
preceding conv/fc's write-back. :attr:`Network.compute` lists the conv/fc layers with their
fused ``relu`` and ``pool``. An FC layer runs as a 1x1 convolution whose row axis is the batch
(operand rows ``x[:, c]`` of length ``batch``; see ``docs/schedule.md``).

Checks (each error names the layer by index, name and kind): unknown kinds and keys, bad
values, shapes that do not chain (an explicit ``cin`` that differs from the inferred one, a
kernel or pool window larger than its padded input), strides outside ``cfg.strides``, kernel
rows longer than ``cfg.k_max``, padding outside ``[0, cfg.k_max]``, input or output rows (FC:
the batch) longer than ``cfg.max_row_len``, reductions that could overflow ``cfg.acc_width``, and
``bdwp: true`` on a layer whose reduction axes are not multiples of ``cfg.nm_m``.

BDWP policy (as ``sim/train.py``): the forward N:M groups run along Cin, the backward ones
along Cout, so BDWP applies to a layer only when **both** Cin and Cout are multiples of M;
with ``bdwp: auto`` any other layer stays dense in both directions (the digits CNN's conv1,
Cin = 1, and fc2, Cout = 10), with the reason recorded in :attr:`ComputeLayer.dense_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseforge.gen.config import AcceleratorConfig, parse_table_file

__all__ = ["Layer", "ComputeLayer", "Network", "NetworkError", "load_network", "parse_network",
           "NETWORKS_DIR", "example"]

#: Example networks shipped with the package.
NETWORKS_DIR = Path(__file__).parent / "networks"

KINDS = ("conv", "fc", "maxpool", "relu")
_KEYS = {
    "conv": {"kind", "type", "name", "cout", "kernel", "stride", "padding", "relu", "cin", "bdwp",
             "prune"},
    "fc": {"kind", "type", "name", "cout", "relu", "cin", "bdwp", "prune"},
    "maxpool": {"kind", "type", "name", "kernel", "stride"},
    "relu": {"kind", "type", "name"},
}
_TOP_KEYS = {"name", "input", "batch", "layers", "prune_p", "nm", "description"}


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
class ComputeLayer:
    """A conv or FC layer as the accelerator runs it: a (possibly 1x1) convolution with fused
    ReLU and max-pool.

    ``cin, h, w``: the conv input; ``cout, ho, wo``: the conv output before pooling (FC:
    ``h = ho = 1`` and the row axis ``w = wo = batch`` with a batch of 1, see the module doc).
    ``batch``: the batch the rows are replicated over (FC: 1). ``pool``: ``(kernel, stride)``
    or ``None``. ``bdwp``: N:M applies (forward along Cin, backward along Cout); otherwise
    ``dense_reason`` says why not.
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

    @property
    def label(self) -> str:
        return f"layer {self.layer_index} {self.name!r} ({self.kind})"

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

    @property
    def output_shape(self) -> tuple:
        return self.layers[-1].out_shape if self.layers else self.input

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

def load_network(src, cfg: AcceleratorConfig) -> Network:
    """Load and validate a network: a ``.yaml``/``.yml``/``.toml`` path, a dict, or the name of
    an example in :data:`NETWORKS_DIR` (e.g. ``"digits-cnn"``)."""
    if isinstance(src, dict):
        return parse_network(src, cfg)
    if isinstance(src, str) and not Path(src).suffix and (NETWORKS_DIR / f"{src}.yaml").is_file():
        src = NETWORKS_DIR / f"{src}.yaml"
    if not isinstance(src, (str, Path)):
        raise TypeError(f"network must be a path, an example name or a dict, not {type(src).__name__}")
    path = Path(src)
    if not path.is_file():
        raise NetworkError(f"network file {str(path)!r} does not exist (examples: {examples()})")
    data = parse_table_file(path, "network", NetworkError)
    if not isinstance(data, dict):
        raise NetworkError(f"network file {str(path)!r} must hold a table")
    data.setdefault("name", path.stem)
    return parse_network(data, cfg)


def examples() -> list[str]:
    return sorted(p.stem for p in NETWORKS_DIR.glob("*.yaml"))


def example(name: str, cfg: AcceleratorConfig) -> Network:
    """One of the shipped example networks (``ValueError`` lists them)."""
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


def parse_network(data: dict, cfg: AcceleratorConfig) -> Network:
    """Validate a network table against ``cfg``; raise :class:`NetworkError` naming the layer."""
    if not isinstance(cfg, AcceleratorConfig):
        raise TypeError(f"cfg must be an AcceleratorConfig, not {type(cfg).__name__}")
    if not isinstance(data, dict):
        raise TypeError(f"network description must be a dict, not {type(data).__name__}")
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
        n = _int("network", "nm[0] (N)", nm[0], 1, cfg.nm_n_max)
        if nm[1] != cfg.nm_m:
            raise NetworkError(f"network: nm[1] (M) must equal cfg.nm_m={cfg.nm_m}, not {nm[1]!r}")
        nm = (n, cfg.nm_m)
    layers_in = data.get("layers")
    if not isinstance(layers_in, (list, tuple)) or not layers_in:
        raise NetworkError("network: layers must be a non-empty list")

    layers: list[Layer] = []
    compute: list[dict] = []
    names: set[str] = set()
    shape = inp
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
        if lname in names:
            raise NetworkError(f"{label}: duplicate layer name")
        names.add(lname)
        bad = sorted(set(spec) - _KEYS[kind])
        if bad:
            raise NetworkError(f"{label}: unknown key(s) {bad}; known for {kind}: "
                               f"{sorted(_KEYS[kind] - {'type'})}")
        c, h, w = shape
        params: dict[str, Any] = {}
        if kind == "conv":
            out = _conv(label, spec, shape, batch, cfg, params)
        elif kind == "fc":
            out = _fc(label, spec, shape, batch, cfg, params)
        elif kind == "maxpool":
            k = _int(label, "kernel", spec.get("kernel", 2), 1)
            s = _int(label, "stride", spec.get("stride", k), 1)
            if k > h or k > w:
                raise NetworkError(f"{label}: pool window {k}x{k} is larger than its input "
                                   f"{h}x{w}: shapes do not chain")
            out = (c, (h - k) // s + 1, (w - k) // s + 1)
            params.update(kernel=k, stride=s)
            if not compute:
                raise NetworkError(f"{label}: a max-pool must follow a conv or fc layer (it is "
                                   f"fused into that layer's write-back)")
            if compute[-1]["pool"] is not None:
                raise NetworkError(f"{label}: {compute[-1]['name']!r} already has a max-pool; "
                                   f"only one per conv/fc layer")
            compute[-1]["pool"] = (k, s)
            compute[-1]["pooled_shape"] = out
        else:  # relu
            out = shape
            if not compute:
                raise NetworkError(f"{label}: a ReLU must follow a conv or fc layer (it is fused "
                                   f"into the nearest preceding one)")
            compute[-1]["relu"] = True
        if kind in ("conv", "fc"):
            compute.append(params | {"name": lname, "kind": kind, "layer_index": index,
                                     "pool": None})
        layers.append(Layer(index, lname, kind, shape, out, dict(params)))
        shape = out

    out_compute = []
    for cid, p in enumerate(compute):
        p = dict(p)
        p.pop("pooled_shape", None)
        out_compute.append(ComputeLayer(id=cid, **p))
    return Network(name=name, input=inp, batch=batch, layers=tuple(layers),
                   compute=tuple(out_compute), prune_p=float(prune_p), nm=nm)


def _check_rows(label, cfg, rows):
    for what, n in rows:
        if n > cfg.max_row_len:
            raise NetworkError(f"{label}: {what} row length {n} exceeds max_row_len="
                               f"{cfg.max_row_len}")


def _bdwp(label, spec, cin, cout, cfg):
    """Resolve the layer's BDWP flag; returns ``(bdwp, dense_reason)``."""
    want = spec.get("bdwp", "auto")
    if want not in ("auto", True, False):
        raise NetworkError(f"{label}: bdwp must be auto, true or false, not {want!r}")
    why = []
    if cin % cfg.nm_m:
        why.append(f"Cin={cin} is no multiple of M={cfg.nm_m}")
    if cout % cfg.nm_m:
        why.append(f"Cout={cout} is no multiple of M={cfg.nm_m}")
    if want is False:
        return False, "bdwp: false"
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


def _conv(label, spec, shape, batch, cfg, params) -> tuple:
    c, h, w = shape
    if "cin" in spec and _int(label, "cin", spec["cin"], 1) != c:
        raise NetworkError(f"{label}: expects cin={spec['cin']} but its input has {c} channels "
                           f"(shape {shape}): shapes do not chain")
    cout = _int(label, "cout", spec.get("cout"), 1)
    kh, kw = _pair(label, "kernel", spec.get("kernel", 3), 1)
    stride = spec.get("stride", 1)
    if not _is_int(stride):
        raise NetworkError(f"{label}: stride must be an integer, not {stride!r}")
    if stride not in cfg.strides:
        raise NetworkError(f"{label}: unsupported stride {stride}: the PE supports strides "
                           f"{cfg.strides}")
    padding = _int(label, "padding", spec.get("padding", 0), 0, cfg.k_max)
    if kw > cfg.k_max:
        raise NetworkError(f"{label}: kernel row length {kw} exceeds k_max={cfg.k_max}")
    if kh > h + 2 * padding or kw > w + 2 * padding:
        raise NetworkError(f"{label}: kernel {kh}x{kw} is larger than the padded input "
                           f"{h + 2 * padding}x{w + 2 * padding}: shapes do not chain")
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    _check_rows(label, cfg, [("input", w), ("output", wo)])
    _common_checks(label, cfg, batch, c, cout, kh, kw, ho, wo)
    bdwp, why = _bdwp(label, spec, c, cout, cfg)
    params.update(cin=c, cout=cout, h=h, w=w, kh=kh, kw=kw, stride=stride, padding=padding,
                  ho=ho, wo=wo, batch=batch, relu=_bool(label, "relu", spec.get("relu", False)),
                  bdwp=bdwp, dense_reason=why,
                  prune=_bool(label, "prune", spec.get("prune", True)))
    return (cout, ho, wo)


def _fc(label, spec, shape, batch, cfg, params) -> tuple:
    c, h, w = shape
    cin = c * h * w
    if "cin" in spec and _int(label, "cin", spec["cin"], 1) != cin:
        raise NetworkError(f"{label}: expects cin={spec['cin']} but its input {shape} flattens "
                           f"to {cin} features: shapes do not chain")
    cout = _int(label, "cout", spec.get("cout"), 1)
    # 1x1 convolution with the batch as the row axis (module doc): rows of `batch` elements.
    _check_rows(label, cfg, [("batch (FC row)", batch)])
    _common_checks(label, cfg, 1, cin, cout, 1, 1, 1, batch)
    bdwp, why = _bdwp(label, spec, cin, cout, cfg)
    params.update(cin=cin, cout=cout, h=1, w=batch, kh=1, kw=1, stride=1, padding=0, ho=1,
                  wo=batch, batch=1, relu=_bool(label, "relu", spec.get("relu", False)),
                  bdwp=bdwp, dense_reason=why,
                  prune=_bool(label, "prune", spec.get("prune", False)))
    return (cout, 1, 1)
