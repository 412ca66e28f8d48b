"""Schema and validator of the training-statistics JSON files (``build/stats/*.json``).

Two documents live in ``build/stats/``, told apart by their ``"schema"`` field:

* ``sparseforge.train-stats`` (one file per variant and seed, ``<variant>_seed<k>.json``,
  written from :func:`sparseforge.study.train.train_run`): what the hardware would see, per layer
  and phase; the performance model reads these;
* ``sparseforge.train-summary`` (``summary.json``): the accuracy table over seeds and the
  measured-vs-closed-form gradient densities.

The schema is declared once below (``STATS_SCHEMA``, ``SUMMARY_SCHEMA``) in a small plain-Python
form; :func:`validate` checks a document against it plus the cross-field rules a schema cannot
say (``useful_macs <= dense_macs``, fractions that agree with their counts, pruning never adds
non-zeros, one history entry per epoch).  :func:`to_json_schema` renders the same declaration as
a JSON Schema (draft 2020-12) document for other tools.  ``docs/training.md`` describes every
field.  No dependency beyond the standard library.
"""

from __future__ import annotations

import json
import math

__all__ = ["BN_SCHEMA_ID", "BN_SCHEMA_VERSION", "validate_bn", "STATS_SCHEMA_ID", "SUMMARY_SCHEMA_ID", "SCHEMA_VERSION", "STATS_SCHEMA",
           "SUMMARY_SCHEMA", "StatsSchemaError", "errors", "validate", "validate_file",
           "to_json_schema"]

STATS_SCHEMA_ID = "sparseforge.train-stats"
SUMMARY_SCHEMA_ID = "sparseforge.train-summary"
SCHEMA_VERSION = 1
DATASET = "sklearn digits"
LABEL = "measured, digits CNN"


class StatsSchemaError(ValueError):
    """A statistics document does not follow its schema; ``.errors`` lists every problem."""

    def __init__(self, errs, source=None):
        self.errors = list(errs)
        where = f"{source}: " if source else ""
        shown = "\n  ".join(self.errors[:20])
        more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__(f"{where}{len(self.errors)} schema error(s):\n  {shown}{more}")


# --------------------------------------------------------------------------------------------
# Declaration
# --------------------------------------------------------------------------------------------

class T:
    """A leaf type: kind in {str, int, number, bool, any}, optional null, range, fixed choices."""

    def __init__(self, kind, *, null=False, lo=None, hi=None, choices=None, doc=""):
        self.kind, self.null, self.lo, self.hi, self.choices, self.doc = \
            kind, null, lo, hi, choices, doc


class Obj:
    """An object with required ``fields`` (extra keys are allowed: forward compatible)."""

    def __init__(self, fields, *, null=False, doc=""):
        self.fields, self.null, self.doc = fields, null, doc


class Arr:
    """A list of ``item``; ``min_len`` at least."""

    def __init__(self, item, *, min_len=0, null=False, doc=""):
        self.item, self.min_len, self.null, self.doc = item, min_len, null, doc


class Map:
    """An object whose keys are free (e.g. layer names) and whose values are ``item``."""

    def __init__(self, item, *, doc=""):
        self.item, self.null, self.doc = item, False, doc


def _frac(doc="", null=False):
    return T("number", lo=0.0, hi=1.0, null=null, doc=doc)


def _count(doc="", null=False):
    return T("int", lo=0, null=null, doc=doc)


_SHAPE = Obj({
    "batch": T("int", lo=1, doc="batch size B"),
    "cin": T("int", lo=1), "cout": T("int", lo=1),
    "h": T("int", lo=1, doc="input height (1 for FC)"), "w": T("int", lo=1),
    "k": T("int", lo=1, doc="kernel size K (KxK; 1 for FC)"),
    "stride": T("int", lo=1), "padding": T("int", lo=0),
    "ho": T("int", lo=1), "wo": T("int", lo=1),
})

_PHASE_COMMON = {
    "operand": T("str", choices=("x", "dy"), doc="the streamed sparse operand"),
    "operand_density": _frac("non-zero fraction of the streamed operand"),
    "weight_operand": T("str", choices=("w_fwd", "w_bwd", "x"), doc="the other operand"),
    "weight_density": _frac("non-zero fraction of the other operand (kept weights in FP/BP, "
                            "activation x in WG)"),
    "dense_macs": _count("B*Cout*Ho*Wo*Cin*K*K summed over the sampled batches"),
    "useful_macs": _count("products with both factors non-zero, summed over sampled batches"),
    "useful_fraction": _frac("useful_macs / dense_macs"),
    "skipped": T("bool", doc="the phase is not run (BP of the first layer)"),
}

_PHASE = Obj(dict(_PHASE_COMMON))
_PHASE_BP = Obj({
    **_PHASE_COMMON,
    "output_mask_density": _frac("fraction of dX positions needed (x > 0: previous ReLU/pool)",
                                 null=True),
    "useful_macs_masked": _count("useful products landing on needed dX positions", null=True),
    "useful_fraction_masked": _frac("useful_macs_masked / dense_macs", null=True),
})

_GRADIENT = Obj({
    "pruned": T("bool", doc="stochastic pruning applied to this layer's dY"),
    "p": T("number", lo=0.0, hi=1.0, doc="target pruning rate (0 when not pruned)"),
    "density_before": _frac("non-zero fraction of dY before pruning (ReLU'/pool zeros only)"),
    "density_after": _frac("non-zero fraction of dY after pruning (what BP and WG stream)"),
    "closed_form": _frac("Gaussian prediction (1-p) + sqrt(2/pi)(1-exp(-z^2/2))/z", null=True),
    "closed_form_zero_aware": _frac("Gaussian prediction given density_before", null=True),
    "below_threshold_fraction": _frac("fraction of dY elements with |g| < tau", null=True),
    "tau_mean": T("number", lo=0.0, null=True, doc="mean threshold over sampled batches"),
    "relu_mask_density": _frac("fraction of ReLU derivatives that are 1", null=True),
    "pool_mask_density": _frac("fraction of pre-pool positions selected by max-pool", null=True),
    "nonzero_excess_kurtosis": T("number", null=True,
                                 doc="excess kurtosis of the non-zero dY values (Gaussian: 0)"),
})

_LAYER = Obj({
    "name": T("str"),
    "type": T("str", choices=("conv", "fc")),
    "shape": _SHAPE,
    "relu": T("bool"), "pool": T("bool"),
    "bdwp": T("bool", doc="BDWP N:M masks applied to this layer in this run"),
    "nm": Obj({"n": T("int", lo=1), "m": T("int", lo=2)}, null=True),
    "weight_kept_nominal": _frac("N/M, or 1 for a dense layer"),
    "weights": Obj({"fwd_density": _frac(), "bwd_density": _frac(),
                    "bwd_in_fwd_fraction": _frac(null=True)}),
    "phases": Obj({"fp": _PHASE, "bp": _PHASE_BP, "wg": _PHASE}),
    "gradient": _GRADIENT,
})

_META = Obj({
    "variant": T("str"),
    "bdwp": Obj({"n": T("int", lo=1), "m": T("int", lo=2)}, null=True),
    "bwd_mask": T("str", choices=("independent", "nested"), null=True),
    "prune_p": T("number", lo=0.0, hi=1.0, null=True),
    "threshold_mean": T("str", choices=("all", "nonzero"), null=True),
    "srste": T("bool"),
    "seed": T("int", lo=0),
    "epoch": T("int", lo=1, doc="the last epoch trained (the statistics end there)"),
    "stats_epochs": Arr(T("int", lo=1), min_len=1, doc="epochs the statistics were sampled in"),
    "batches_sampled": T("int", lo=1),
    "dataset": T("str", choices=(DATASET,)),
    "label": T("str", choices=(LABEL,)),
    "network": T("str"),
    "input_shape": Arr(T("int", lo=1), min_len=3),
    "train_samples": T("int", lo=1), "test_samples": T("int", lo=1),
    "config": Obj({"epochs": T("int", lo=1), "batch_size": T("int", lo=1),
                   "lr": T("number", lo=0.0)}),
    "sparseforge_version": T("str"),
    "seconds": T("number", lo=0.0),
})

_PER_LAYER_SERIES = Map(Arr(_frac()))

STATS_SCHEMA = Obj({
    "schema": T("str", choices=(STATS_SCHEMA_ID,)),
    "schema_version": T("int", choices=(SCHEMA_VERSION,)),
    "meta": _META,
    "accuracy": Obj({"test_final": _frac(), "train_final": _frac()}),
    "history": Obj({
        "test_acc": Arr(_frac()), "test_loss": Arr(T("number", lo=0.0)),
        "train_acc": Arr(_frac()), "train_loss": Arr(T("number", lo=0.0)),
        "grad_density_before": _PER_LAYER_SERIES, "grad_density_after": _PER_LAYER_SERIES,
        "epoch_seconds": Arr(T("number", lo=0.0)),
    }),
    "layers": Arr(_LAYER, min_len=1),
})

SUMMARY_SCHEMA = Obj({
    "schema": T("str", choices=(SUMMARY_SCHEMA_ID,)),
    "schema_version": T("int", choices=(SCHEMA_VERSION,)),
    "meta": Obj({
        "dataset": T("str", choices=(DATASET,)),
        "label": T("str", choices=(LABEL,)),
        "epochs": T("int", lo=1),
        "seeds": Arr(T("int", lo=0), min_len=1),
        "tolerance_points": T("number", lo=0.0),
        "command": T("str"),
        "seconds": T("number", lo=0.0),
    }),
    "variants": Arr(Obj({
        "variant": T("str"),
        "seeds": Arr(T("int", lo=0), min_len=1),
        "test_acc": Arr(_frac(), min_len=1),
        "mean": _frac(), "std": T("number", lo=0.0),
        "delta_vs_dense_points": T("number", null=True),
        "within_tolerance": T("bool", null=True),
        "files": Arr(T("str")),
    }), min_len=1),
    "gradient_density": Arr(Obj({
        "variant": T("str"), "layer": T("str"), "p": T("number", lo=0.0, hi=1.0),
        "threshold_mean": T("str", choices=("all", "nonzero")),
        "density_before": _frac(), "density_after": _frac(),
        "closed_form": _frac(), "closed_form_zero_aware": _frac(),
    })),
})


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _type_ok(kind, v):
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(v, str)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "number":
        return (isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v))
    raise AssertionError(kind)  # pragma: no cover


def _check(v, spec, path, errs):
    if v is None:
        if not spec.null:
            errs.append(f"{path}: must not be null")
        return
    if isinstance(spec, T):
        if not _type_ok(spec.kind, v):
            errs.append(f"{path}: expected {spec.kind}, got {type(v).__name__} {v!r:.60}")
            return
        if spec.choices is not None and v not in spec.choices:
            errs.append(f"{path}: {v!r} not one of {list(spec.choices)}")
        if spec.lo is not None and v < spec.lo:
            errs.append(f"{path}: {v!r} < {spec.lo}")
        if spec.hi is not None and v > spec.hi:
            errs.append(f"{path}: {v!r} > {spec.hi}")
    elif isinstance(spec, Obj):
        if not isinstance(v, dict):
            errs.append(f"{path}: expected object, got {type(v).__name__}")
            return
        for k, sub in spec.fields.items():
            if k not in v:
                errs.append(f"{path}.{k}: missing")
            else:
                _check(v[k], sub, f"{path}.{k}", errs)
    elif isinstance(spec, Arr):
        if not isinstance(v, list):
            errs.append(f"{path}: expected list, got {type(v).__name__}")
            return
        if len(v) < spec.min_len:
            errs.append(f"{path}: {len(v)} item(s), at least {spec.min_len} required")
        for i, item in enumerate(v):
            _check(item, spec.item, f"{path}[{i}]", errs)
    elif isinstance(spec, Map):
        if not isinstance(v, dict):
            errs.append(f"{path}: expected object, got {type(v).__name__}")
            return
        for k, item in v.items():
            _check(item, spec.item, f"{path}.{k}", errs)
    else:  # pragma: no cover
        raise AssertionError(spec)


def _close(a, b, tol=2e-6):
    return a is not None and b is not None and abs(a - b) <= tol


def _stats_rules(doc, errs):
    meta, hist, layers = doc["meta"], doc["history"], doc["layers"]
    epochs = meta["epoch"]
    for key in ("test_acc", "test_loss", "train_acc", "train_loss", "epoch_seconds"):
        if len(hist[key]) != epochs:
            errs.append(f"$.history.{key}: {len(hist[key])} entries, expected one per epoch "
                        f"({epochs})")
    if hist["test_acc"] and not _close(hist["test_acc"][-1], doc["accuracy"]["test_final"]):
        errs.append("$.accuracy.test_final: differs from the last $.history.test_acc entry")
    if any(not 1 <= e <= epochs for e in meta["stats_epochs"]):
        errs.append(f"$.meta.stats_epochs: entries must be in [1, epoch={epochs}]")
    names = [ly["name"] for ly in layers]
    if len(set(names)) != len(names):
        errs.append(f"$.layers: layer names are not unique: {names}")
    for key in ("grad_density_before", "grad_density_after"):
        if set(hist[key]) != set(names):
            errs.append(f"$.history.{key}: keys {sorted(hist[key])} != layer names {names}")
        for name, series in hist[key].items():
            if len(series) != epochs:
                errs.append(f"$.history.{key}.{name}: {len(series)} entries, expected {epochs}")
    for i, ly in enumerate(layers):
        p = f"$.layers[{i}]({ly['name']})"
        sh = ly["shape"]
        if ly["type"] == "fc" and (sh["h"], sh["w"], sh["k"]) != (1, 1, 1):
            errs.append(f"{p}.shape: an FC layer has h = w = k = 1")
        if ly["bdwp"] != (ly["nm"] is not None):
            errs.append(f"{p}.nm: must be given exactly when bdwp is true")
        for ph, d in ly["phases"].items():
            pp = f"{p}.phases.{ph}"
            if d["useful_macs"] > d["dense_macs"]:
                errs.append(f"{pp}: useful_macs {d['useful_macs']} > dense_macs {d['dense_macs']}")
            if d["dense_macs"] and not _close(d["useful_fraction"],
                                              d["useful_macs"] / d["dense_macs"]):
                errs.append(f"{pp}.useful_fraction: != useful_macs / dense_macs")
            expected_operand = "x" if ph == "fp" else "dy"
            if d["operand"] != expected_operand:
                errs.append(f"{pp}.operand: {d['operand']!r}, expected {expected_operand!r}")
        bp = ly["phases"]["bp"]
        if bp["useful_macs_masked"] is not None and bp["useful_macs_masked"] > bp["useful_macs"]:
            errs.append(f"{p}.phases.bp: useful_macs_masked > useful_macs")
        if i == 0 and not bp["skipped"]:
            errs.append(f"{p}.phases.bp.skipped: the first layer's BP is never run")
        g = ly["gradient"]
        if g["density_after"] > g["density_before"] + 1e-9:
            errs.append(f"{p}.gradient: density_after > density_before (pruning adds no non-zeros)")
        if g["pruned"]:
            for k in ("closed_form", "closed_form_zero_aware", "below_threshold_fraction",
                      "tau_mean"):
                if g[k] is None:
                    errs.append(f"{p}.gradient.{k}: required when pruned")
            if not g["p"] > 0:
                errs.append(f"{p}.gradient.p: must be > 0 when pruned")
        elif g["density_after"] != g["density_before"]:
            errs.append(f"{p}.gradient: not pruned, so density_after must equal density_before")


def _summary_rules(doc, errs):
    for i, v in enumerate(doc["variants"]):
        if len(v["test_acc"]) != len(v["seeds"]):
            errs.append(f"$.variants[{i}]: one test_acc per seed required")
        elif v["test_acc"] and not _close(v["mean"], sum(v["test_acc"]) / len(v["test_acc"]),
                                          1e-5):
            errs.append(f"$.variants[{i}].mean: != mean of test_acc")


def errors(doc):
    """Every schema problem of ``doc`` (a parsed JSON document) as a list of strings."""
    if not isinstance(doc, dict):
        return [f"$: expected a JSON object, got {type(doc).__name__}"]
    kind = doc.get("schema")
    if kind == STATS_SCHEMA_ID:
        schema, rules = STATS_SCHEMA, _stats_rules
    elif kind == SUMMARY_SCHEMA_ID:
        schema, rules = SUMMARY_SCHEMA, _summary_rules
    else:
        return [f"$.schema: {kind!r} is not one of {[STATS_SCHEMA_ID, SUMMARY_SCHEMA_ID]}"]
    errs = []
    _check(doc, schema, "$", errs)
    if not errs:                         # cross-field rules need a well-typed document
        rules(doc, errs)
    return errs


def validate(doc, source=None):
    """Raise :class:`StatsSchemaError` (a ValueError) listing every problem; return ``doc``."""
    errs = errors(doc)
    if errs:
        raise StatsSchemaError(errs, source)
    return doc


def validate_file(path):
    """Load and validate one JSON file; return the document."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise StatsSchemaError([f"not valid JSON: {e}"], path) from None
    return validate(doc, source=str(path))


# --------------------------------------------------------------------------------------------
# JSON Schema rendering (for other tools; the validator above does not need it)
# --------------------------------------------------------------------------------------------

def _js(spec):
    if isinstance(spec, T):
        out = {"type": {"str": "string", "int": "integer", "number": "number",
                        "bool": "boolean", "any": None}[spec.kind]}
        if out["type"] is None:
            out = {}
        if spec.choices is not None:
            out["enum"] = list(spec.choices)
        if spec.lo is not None:
            out["minimum"] = spec.lo
        if spec.hi is not None:
            out["maximum"] = spec.hi
    elif isinstance(spec, Obj):
        out = {"type": "object", "required": list(spec.fields),
               "properties": {k: _js(s) for k, s in spec.fields.items()}}
    elif isinstance(spec, Arr):
        out = {"type": "array", "items": _js(spec.item)}
        if spec.min_len:
            out["minItems"] = spec.min_len
    else:
        out = {"type": "object", "additionalProperties": _js(spec.item)}
    if spec.doc:
        out["description"] = spec.doc
    if spec.null:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def to_json_schema(kind=STATS_SCHEMA_ID):
    """The declaration of ``kind`` as a JSON Schema (draft 2020-12) dict."""
    spec = {STATS_SCHEMA_ID: STATS_SCHEMA, SUMMARY_SCHEMA_ID: SUMMARY_SCHEMA}.get(kind)
    if spec is None:
        raise ValueError(f"kind must be {STATS_SCHEMA_ID!r} or {SUMMARY_SCHEMA_ID!r}, not {kind!r}")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": kind,
            **_js(spec)}


# --------------------------------------------------------------------------------------------
# The BN net's statistics (sparseforge.study.bnnet; issue 18 item 4)
# --------------------------------------------------------------------------------------------

BN_SCHEMA_ID = "sparseforge.bn-stats"
BN_SCHEMA_VERSION = 1

_LAYER_KEYS = {"name": str, "type": str, "bn": bool, "relu": bool, "input_kind": str,
               "grad_kind": str, "producer_add": bool, "bdwp": bool, "pruned": bool}
_DENSITIES = ("fp_density", "out_density", "dy_density_before", "dy_density_after")


def validate_bn(doc, source="bn-stats"):
    """Raise ValueError naming ``source`` and the field when ``doc`` is not a ``bn-stats`` v1
    document (the fields the bench reads, with densities in [0, 1])."""
    def bad(msg):
        raise ValueError(f"{source}: {msg}")

    if not isinstance(doc, dict):
        bad(f"document must be a dict, not {type(doc).__name__}")
    if doc.get("schema") != BN_SCHEMA_ID or doc.get("schema_version") != BN_SCHEMA_VERSION:
        bad(f"schema must be {BN_SCHEMA_ID!r} v{BN_SCHEMA_VERSION}, not {doc.get('schema')!r} "
            f"v{doc.get('schema_version')!r}")
    for key in ("meta", "accuracy", "layers"):
        if key not in doc:
            bad(f"missing key {key!r}")
    if not isinstance(doc["meta"].get("variant"), str):
        bad("meta.variant must be a string")
    acc = doc["accuracy"].get("test_final")
    if not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
        bad(f"accuracy.test_final must be in [0, 1], not {acc!r}")
    layers = doc["layers"]
    if not isinstance(layers, list) or not layers:
        bad("layers must be a non-empty list")
    for i, lay in enumerate(layers):
        for k, t in _LAYER_KEYS.items():
            if not isinstance(lay.get(k), t):
                bad(f"layers[{i}].{k} must be {t.__name__}, not {lay.get(k)!r}")
        for k in _DENSITIES + ("relu_density",):
            v = lay.get(k, "missing")
            if v is None and k == "relu_density" and not lay["relu"]:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                bad(f"layers[{i}].{k} must be a density in [0, 1], not {v!r}")
