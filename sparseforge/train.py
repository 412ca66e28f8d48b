"""``sparseforge train``: train a network on the ``accelerator`` RTL for many steps and watch
its loss (issue 17, item 8; the training *study* in software is ``train-stats``).

    sparseforge train [--net digits-cnn] [--preset tiny] [--steps 100] [--batch 1]
                      [--sim verilator|icarus] [--engine cpp|cocotb] [--waves FILE]
                      [--check golden|none] [-o build/e2e]

Each step draws a batch (seed ``--seed + k``), runs the whole training step on the RTL through
the driver (the array phases through the data plane) and carries the RTL's updated weights
and masks to the next step. ``--check golden`` (default) trains the golden model alongside
from the same initial weights and compares every tensor of every step; ``--check none`` runs
the RTL alone. Writes ``<out>/report.json`` (the e2e report, ``docs/e2e.md``; each step adds
``loss`` and, when checked, ``golden_loss``; the run adds ``check``) and ``<out>/loss.png``
(the loss per step, RTL and golden). A progress bar (tqdm) shows the steps on the cpp engine
(the cocotb engine runs in a simulator process and logs there). Exit status as ``e2e``: 0 when
every checked tensor is equal, 1 on a mismatch, 2 on bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sparseforge import e2e as _e2e
from sparseforge.gen.cliutil import OneLineParser, error_line, guarded

DEFAULT_STEPS = 100


def build_parser():
    p = OneLineParser(
        prog="sparseforge train",
        description="Train a network on the accelerator RTL for many steps (the loss per step, "
                    "checked against the golden training); writes OUT/report.json and "
                    "OUT/loss.png.")
    _e2e.add_run_args(p, steps=DEFAULT_STEPS, steps_help="training steps")
    p.add_argument("--waves", metavar="FILE", default=None,
                   help="write the run's waveform to FILE (VCD on the cpp engine; the "
                        "simulator's format under cocotb)")
    p.add_argument("--check", choices=("golden", "none"), default="golden",
                   help="golden: compare every tensor of every step with the golden "
                        "training (default); none: the RTL alone")
    return p


def plot_loss(report: dict, path: Path):
    """The loss per step of the RTL run and of the golden training (when checked)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = report["steps"]
    k = list(range(len(steps)))
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    if all("golden_loss" in s for s in steps):
        ax.plot(k, [s["golden_loss"] for s in steps], color="0.6", lw=4, label="golden model")
    ax.plot(k, [s["loss"] for s in steps], color="C0", lw=1.2, marker=".", label="RTL")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (0.5 ||logits - onehot||^2 per sample)")
    ax.set_title(f"{report['network']} on {report['preset']} ({report['simulator']}, "
                 f"{report['engine']}), batch {report['batch']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    return guarded(_main, argv)


def _main(argv) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv, args.prog = argv, "train"
    args.waves_file = args.waves
    args.waves = args.waves is not None
    bar = None
    try:
        progress = None
        if _e2e.resolve_engine(args) == "cpp":
            from tqdm import tqdm
            bar = tqdm(total=args.steps, desc="steps", unit="step", file=sys.stderr,
                       disable=None)           # (no bar when stderr is not a terminal)

            def progress(k, run):
                bar.set_postfix(loss=f"{run['loss']:.4f}", refresh=False)
                bar.update(1)

        report, passed = _e2e.run(args, log=lambda m: print(m, file=sys.stderr),
                                  progress=progress)
    except _e2e.UsageError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    out = Path(args.output)
    plot_loss(report, out / "loss.png")
    print(_e2e.summary(report) if args.steps <= 10 else _short_summary(report))
    print(f"wrote {out / 'report.json'} and {out / 'loss.png'}")
    return 0 if passed else 1


def _short_summary(report: dict) -> str:
    steps = report["steps"]
    checked = [s for s in steps if s["tensors_compared"]]
    bad = sum(1 for s in checked if s["tensors_mismatched"])
    cyc = sum(s["cycles"] for s in steps)
    arr = sum(s["array_cycles"] for s in steps)
    lines = [f"{report['network']} batch {report['batch']} on {report['preset']} "
             f"({report['simulator']}, {report['engine']} engine): {len(steps)} steps, loss "
             f"{steps[0]['loss']:.6f} -> {steps[-1]['loss']:.6f}",
             (f"{len(checked) - bad}/{len(checked)} steps equal the golden training tensor for "
              f"tensor" if checked else "not checked against the golden model"),
             f"{cyc} step cycles for {arr} array cycles ({cyc / arr:.2f}x); "
             f"{report['sim_cycles']} simulated cycles in {report['sim_wall_s']:.1f} s "
             f"({report['sim_cycles_per_s']} cycles/s)"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
