"""Sparse-training runs on scikit-learn's digits and their hardware statistics.

    python -m sparseforge.study.cli [--net digits-cnn|digits-resnet] [--variants LIST]
                                        [--seeds 0,1,2] [--epochs N] [--out build/stats]
                                        [--plot [PNG]] [--jobs N] [--quick]

Trains the digits CNN of :mod:`sparseforge.study.train` once per (variant, seed), with the same
schedule for every variant, and writes into ``--out``:

* ``<variant>_seed<k>.json`` -- per-layer, per-phase statistics (schema
  ``sparseforge.train-stats``, :mod:`sparseforge.gen.stats_schema`), validated before writing;
* ``summary.json`` / ``summary.md`` -- test accuracy per variant (mean +- std over seeds, delta to
  dense) and measured vs closed-form gradient densities;
* ``accuracy.png`` (with ``--plot``) -- test-accuracy curves per variant.

``--net digits-resnet`` trains the small residual network with batch norm of
:mod:`sparseforge.study.bnnet` instead (default output ``build/stats-bn``, schema
``sparseforge.bn-stats``, default variants ``bnnet.DEFAULT_VARIANTS``; ``summary.json`` /
``summary.md`` then hold the accuracy and the seed-averaged per-layer densities that the
bench's ``"measured, BN net"`` source reads).

``make train-stats`` runs the full version of both; ``--quick`` is the CI-sized one.  See
``docs/training.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import time
from pathlib import Path

from sparseforge.gen.cliutil import OneLineParser, guarded

QUICK = {"variants": "dense,bdwp2-8,prune0.9,bdwp2-8_prune0.9", "seeds": "0", "epochs": 6}
TOLERANCE_POINTS = 1.5

_PROGRESS_Q = None


def _parse_seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, not {text!r}")
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must be distinct non-negative integers, "
                                         f"not {text!r}")
    return seeds


NETS = ("digits-cnn", "digits-resnet")


def _parse_variants(text, net="digits-cnn"):
    from sparseforge.study import train
    if net == "digits-resnet" and text in ("all", "issue"):
        from sparseforge.study import bnnet
        return list(bnnet.DEFAULT_VARIANTS)
    if text == "all":
        return list(train.DEFAULT_VARIANTS)
    if text == "issue":
        return list(train.ISSUE_VARIANTS)
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"--variants must be distinct names, not {text!r}")
    for n in names:
        try:
            v = train.parse_variant(n)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if net == "digits-resnet" and v.srste:
            raise argparse.ArgumentTypeError(f"variant {n!r}: the BN net does not run SR-STE")
    return names


def build_parser():
    p = OneLineParser(
        prog="sparseforge train-stats",
        description="Train the digits CNN (or the BN residual net) per variant and seed; write "
                    "hardware sparsity statistics (JSON), an accuracy summary and a plot.")
    p.add_argument("--net", default="digits-cnn", choices=NETS,
                   help="digits-cnn (default) or digits-resnet: the residual network with batch "
                        "norm whose densities are the bench's 'measured, BN net' source")
    p.add_argument("--variants", default="all",
                   help="comma-separated variant names (dense, bdwpN-M, pruneP, joined tokens "
                        "like bdwp2-8_prune0.9, options _srste _nested _nzmean), or 'all' "
                        "(default: the issue's variants + the investigation ones) or 'issue'")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 30)")
    p.add_argument("--out", default=None,
                   help="output folder (default build/stats; build/stats-bn for digits-resnet)")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PNG",
                   help="write test-accuracy curves (default file OUT/accuracy.png)")
    p.add_argument("--jobs", type=int, default=None,
                   help="parallel processes, one BLAS thread each (default: CPU count, max 2)")
    p.add_argument("--quick", action="store_true",
                   help=f"CI-sized run: variants {QUICK['variants']}, seed {QUICK['seeds']}, "
                        f"{QUICK['epochs']} epochs (explicit flags still win)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default: the study's, docs/training.md)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the study's, docs/training.md)")
    p.add_argument("--stats-epochs", type=int, default=None,
                   help="sample the statistics over the last this-many epochs (default 1)")
    p.add_argument("--srste-decay", type=float, default=None,
                   help="SR-STE decay of the pruned weights (variants with _srste)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _init_worker(q):
    global _PROGRESS_Q
    _PROGRESS_Q = q


def _run_one(args):
    """Worker: one (variant, seed) run with one BLAS thread; returns the statistics dict."""
    variant, seed, cfg, net = args
    from threadpoolctl import threadpool_limits

    from sparseforge.study import bnnet, train
    q = _PROGRESS_Q

    def progress(epoch, acc):
        if q is not None:
            q.put((variant, seed, epoch, acc))

    run = bnnet.train_run if net == "digits-resnet" else train.train_run
    with threadpool_limits(1):
        return run(variant, seed, cfg, progress=progress)


def _execute(runs, cfg, jobs, show_progress, net="digits-cnn"):
    """Run every (variant, seed); returns {(variant, seed): stats} (order-independent)."""
    from tqdm import tqdm
    total = len(runs) * cfg.epochs
    bar = tqdm(total=total, unit="epoch", desc="training", disable=not show_progress,
               dynamic_ncols=True, file=sys.stderr,
               mininterval=0.5 if sys.stderr.isatty() else 5.0)
    results = {}
    try:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        q = ctx.Queue() if jobs > 1 else None
        if jobs == 1:
            class _Q:
                @staticmethod
                def put(item):
                    v, s, e, acc = item
                    bar.set_postfix_str(f"{v} seed {s} acc {acc:.3f}")
                    bar.update(1)
            _init_worker(_Q)
            for v, s in runs:
                results[(v, s)] = _run_one((v, s, cfg, net))
            _init_worker(None)
        else:
            with ctx.Pool(jobs, initializer=_init_worker, initargs=(q,)) as pool:
                pending = {(v, s): pool.apply_async(_run_one, ((v, s, cfg, net),)) for v, s in runs}
                while pending:
                    try:
                        while True:
                            v, s, e, acc = q.get(timeout=0.2)
                            bar.set_postfix_str(f"{v} seed {s} acc {acc:.3f}")
                            bar.update(1)
                    except queue.Empty:
                        pass
                    for key in [k for k, r in pending.items() if r.ready()]:
                        results[key] = pending.pop(key).get()     # re-raises a worker error
                bar.update(total - bar.n)
    finally:
        bar.close()
    return results


def _mean_std(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def summarize(results, variants, seeds, cfg, command, seconds):
    """The ``sparseforge.train-summary`` document of a set of runs."""
    from sparseforge.gen.stats_schema import SCHEMA_VERSION, SUMMARY_SCHEMA_ID
    from sparseforge.study.train import DATASET, LABEL
    dense = None
    if "dense" in variants:
        dense = _mean_std([results[("dense", s)]["accuracy"]["test_final"] for s in seeds])[0]
    rows, grads = [], []
    for v in variants:
        accs = [results[(v, s)]["accuracy"]["test_final"] for s in seeds]
        m, sd = _mean_std(accs)
        delta = None if dense is None else round(100.0 * (m - dense), 3)
        rows.append({"variant": v, "seeds": list(seeds), "test_acc": accs,
                     "mean": round(m, 6), "std": round(sd, 6),
                     "delta_vs_dense_points": delta,
                     "within_tolerance": None if delta is None else
                     bool(v == "dense" or delta >= -TOLERANCE_POINTS),
                     "files": [f"{v}_seed{s}.json" for s in seeds]})
        first = results[(v, seeds[0])]
        for li, layer in enumerate(first["layers"]):
            if not layer["gradient"]["pruned"]:
                continue
            per = [results[(v, s)]["layers"][li]["gradient"] for s in seeds]
            grads.append({
                "variant": v, "layer": layer["name"], "p": layer["gradient"]["p"],
                "threshold_mean": first["meta"]["threshold_mean"],
                "density_before": round(_mean_std([g["density_before"] for g in per])[0], 6),
                "density_after": round(_mean_std([g["density_after"] for g in per])[0], 6),
                "closed_form": layer["gradient"]["closed_form"],
                "closed_form_zero_aware": round(
                    _mean_std([g["closed_form_zero_aware"] for g in per])[0], 6)})
    return {"schema": SUMMARY_SCHEMA_ID, "schema_version": SCHEMA_VERSION,
            "meta": {"dataset": DATASET, "label": LABEL, "epochs": cfg.epochs,
                     "seeds": list(seeds), "tolerance_points": TOLERANCE_POINTS,
                     "command": command, "seconds": round(seconds, 1),
                     "config": results[(variants[0], seeds[0])]["meta"]["config"]},
            "variants": rows, "gradient_density": grads}


def summary_markdown(summary):
    """Markdown tables (accuracy; gradient density) of a summary document."""
    meta = summary["meta"]
    seeds = ", ".join(str(s) for s in meta["seeds"])
    out = [f"Test accuracy on {meta['dataset']} ({meta['label']}), {meta['epochs']} epochs, "
           f"mean +- std over {len(meta['seeds'])} seed(s) ({seeds}); "
           f"tolerance {meta['tolerance_points']} points below dense.", "",
           "| variant | test accuracy (%) | delta vs dense (points) | within 1.5 |",
           "|---|---|---|---|"]
    for r in summary["variants"]:
        d = "" if r["delta_vs_dense_points"] is None else f"{r['delta_vs_dense_points']:+.2f}"
        ok = "" if r["within_tolerance"] is None else ("yes" if r["within_tolerance"] else "**no**")
        out.append(f"| {r['variant']} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} | {d} | "
                   f"{ok} |")
    if summary["gradient_density"]:
        out += ["", "Gradient (dY) non-zero fraction, last epoch, mean over seeds: measured vs "
                "Gaussian closed form.", "",
                "| variant | layer | p | mean\\|g\\| over | before pruning | after (measured) | "
                "closed form (dense Gaussian) | closed form (zero-aware) |",
                "|---|---|---|---|---|---|---|---|"]
        for g in summary["gradient_density"]:
            out.append(f"| {g['variant']} | {g['layer']} | {g['p']} | {g['threshold_mean']} | "
                       f"{g['density_before']:.4f} | {g['density_after']:.4f} | "
                       f"{g['closed_form']:.4f} | {g['closed_form_zero_aware']:.4f} |")
    return "\n".join(out) + "\n"


def summarize_bn(results, variants, seeds, cfg, command, seconds):
    """The BN-net summary document: accuracy per variant (mean +- std over seeds) and the
    seed-averaged per-layer densities (:func:`sparseforge.sim.perf.sparsity.summarise_bn_dir`
    reads the same files)."""
    from sparseforge.study import bnnet
    rows, layers = [], {}
    for v in variants:
        accs = [results[(v, s)]["accuracy"]["test_final"] for s in seeds]
        m, sd = _mean_std(accs)
        rows.append({"variant": v, "seeds": list(seeds), "test_acc": accs, "mean": round(m, 6),
                     "std": round(sd, 6), "files": [f"{v}_seed{s}.json" for s in seeds]})
        docs = [results[(v, s)] for s in seeds]
        layers[v] = [{**{k: lay[k] for k in ("name", "input_kind", "grad_kind", "producer_add")},
                      **{k: (None if lay[k] is None else round(_mean_std(
                          [d["layers"][i][k] for d in docs])[0], 6))
                         for k in ("fp_density", "relu_density", "out_density",
                                   "dy_density_before", "dy_density_after")}}
                     for i, lay in enumerate(docs[0]["layers"])]
    return {"schema": "sparseforge.bn-summary", "schema_version": 1,
            "meta": {"dataset": "sklearn digits", "label": bnnet.LABEL,
                     "network": bnnet.NETWORK_NAME, "epochs": cfg.epochs, "seeds": list(seeds),
                     "command": command, "seconds": round(seconds, 1)},
            "variants": rows, "layers": layers}


def summary_bn_markdown(summary):
    meta = summary["meta"]
    out = [f"{meta['network']} ({meta['label']}), {meta['epochs']} epochs, mean over "
           f"{len(meta['seeds'])} seed(s) ({', '.join(str(s) for s in meta['seeds'])}).", "",
           "| variant | test accuracy (%) |", "|---|---|"]
    for r in summary["variants"]:
        out.append(f"| {r['variant']} | {100 * r['mean']:.2f} +- {100 * r['std']:.2f} |")

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for v, layers in summary["layers"].items():
        out += ["", f"Densities, {v} (FP operand, ReLU output, layer output, dY before / after "
                "pruning):", "",
                "| layer | input kind | block output in | FP operand | ReLU out | out | "
                "dY before | dY after |", "|---|---|---|---|---|---|---|---|"]
        for lay in layers:
            out.append(f"| {lay['name']} | {lay['input_kind']} | "
                       f"{'yes' if lay['producer_add'] else ''} | {f(lay['fp_density'])} | "
                       f"{f(lay['relu_density'])} | {f(lay['out_density'])} | "
                       f"{f(lay['dy_density_before'])} | {f(lay['dy_density_after'])} |")
    return "\n".join(out) + "\n"


def plot_accuracy(results, variants, seeds, path, title="digits CNN",
                  label="measured, digits CNN (sklearn digits)"):
    """Test accuracy per epoch (mean over seeds, +-std band) per variant, and final bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("tab20" if len(variants) > 10 else "tab10")
    finals = []
    for i, v in enumerate(variants):
        curves = np.array([results[(v, s)]["history"]["test_acc"] for s in seeds]) * 100
        m, sd = curves.mean(axis=0), curves.std(axis=0, ddof=1) if len(seeds) > 1 else 0 * curves[0]
        ep = np.arange(1, curves.shape[1] + 1)
        ax.plot(ep, m, label=v, color=cmap(i), lw=1.5, ls="-" if i < 10 else "--")
        ax.fill_between(ep, m - sd, m + sd, color=cmap(i), alpha=0.12, lw=0)
        finals.append((m[-1], sd[-1]))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, min(f[0] for f in finals) - 15), 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.set_title(f"{title}, test accuracy (mean +- std over {len(seeds)} seed(s))")
    y = np.arange(len(variants))
    bx.barh(y, [f[0] for f in finals], xerr=[f[1] for f in finals],
            color=[cmap(i) for i in range(len(variants))])
    bx.set_yticks(y, variants, fontsize=8)
    bx.invert_yaxis()
    lo = min(f[0] - f[1] for f in finals)
    bx.set_xlim(max(0, lo - 3), 100)
    if "dense" in variants:
        d = finals[variants.index("dense")][0]
        bx.axvline(d, color="k", lw=0.8)
        bx.axvline(d - TOLERANCE_POINTS, color="r", lw=0.8, ls="--", label="dense - 1.5")
        bx.legend(fontsize=8, loc="lower left")
    bx.set_xlabel("final test accuracy (%)")
    bx.grid(axis="x", alpha=0.3)
    fig.text(0.01, 0.01, label, fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    return guarded(_main, argv)


def _main(argv):
    from sparseforge.gen import stats_schema
    from sparseforge.study import train
    parser = build_parser()
    args = parser.parse_args(argv)
    bn = args.net == "digits-resnet"
    try:
        variants = _parse_variants(args.variants if not (args.quick and args.variants == "all")
                                   else QUICK["variants"], args.net)
        seeds = _parse_seeds(args.seeds if not (args.quick and args.seeds == "0,1,2")
                             else QUICK["seeds"])
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("lr", args.lr), ("stats_epochs", args.stats_epochs),
                                   ("srste_decay", args.srste_decay)) if v is not None}
    if args.quick and "epochs" not in overrides:
        overrides["epochs"] = QUICK["epochs"]
    try:
        cfg = train.TrainConfig(**overrides)
    except ValueError as e:
        parser.error(str(e))
    jobs = args.jobs if args.jobs is not None else max(1, min(2, os.cpu_count() or 1))
    if jobs < 1:
        parser.error(f"--jobs must be >= 1, not {jobs}")
    runs = [(v, s) for v in variants for s in seeds]
    jobs = min(jobs, len(runs))
    out = Path(args.out or ("build/stats-bn" if bn else "build/stats"))
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m sparseforge.study.cli " + " ".join(
        sys.argv[1:] if argv is None else argv)
    print(f"{args.net}: {len(runs)} run(s): {len(variants)} variant(s) x {len(seeds)} seed(s), "
          f"{cfg.epochs} epochs, {jobs} process(es) -> {out}/", file=sys.stderr)
    t0 = time.perf_counter()
    results = _execute(runs, cfg, jobs, not args.no_progress, args.net)
    seconds = time.perf_counter() - t0
    if bn:
        from sparseforge.study import bnnet
        return _write(results, variants, seeds, cfg, command, seconds, out, args,
                      validate=bnnet.validate, summarize_fn=summarize_bn,
                      markdown=summary_bn_markdown,
                      plot_kw=dict(title="digits ResNet with batch norm",
                                   label=f"{bnnet.LABEL} (sklearn digits)"))
    return _write(results, variants, seeds, cfg, command, seconds, out, args,
                  validate=stats_schema.validate, summarize_fn=summarize,
                  markdown=summary_markdown, summary_validate=stats_schema.validate)


def _write(results, variants, seeds, cfg, command, seconds, out, args, *, validate,
           summarize_fn, markdown, summary_validate=None, plot_kw=None):
    """Write the per-run files (each validated), the summary (``summary_validate``: its
    check, if the network's summary has a schema), its markdown and the plot; print them."""
    for (v, s), doc in sorted(results.items()):
        validate(doc, source=f"{v} seed {s}")
        (out / f"{v}_seed{s}.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = summarize_fn(results, variants, seeds, cfg, command, seconds)
    if summary_validate is not None:
        summary_validate(summary, source="summary")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = markdown(summary)
    (out / "summary.md").write_text(md)
    if args.plot is not None:
        png = Path(args.plot) if args.plot else out / "accuracy.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_accuracy(results, variants, seeds, png, **(plot_kw or {}))
        print(f"wrote {png}", file=sys.stderr)
    print(md)
    print(f"wrote {len(results)} statistics file(s), summary.json, summary.md to {out}/ "
          f"in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
