"""``sparseforge``: one command line for every flow.

    sparseforge verilog [BLOCK ...] [--preset P] [--config FILE] [--set FIELD=VALUE ...] [-o DIR]
    sparseforge config  [--preset P] [--config FILE] [--set FIELD=VALUE ...]
    sparseforge presets
    sparseforge schedule [--net NET] [--batch B] [--preset P ...] [-o FILE]
    sparseforge bitstream --board ecpix5|vcu1525 [--block B] ...    (make bitstream)
    sparseforge synth-report [--preset P] ...                       (make synth-report)
    sparseforge bench [...]                                          (make bench)
    sparseforge e2e [...]                                            (make e2e)
    sparseforge train [...]                                          (make train)
    sparseforge train-stats [...]                                    (make train-stats)
    sparseforge formal [...]                                         (make formal)
    sparseforge --version

``sparseforge COMMAND --help`` shows a command's options. Every command reports a failure as
one line ``sparseforge: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path

from sparseforge.gen import blocks as _blocks
from sparseforge.gen.cliutil import OneLineParser, add_config_args, config_from_args, guarded
from sparseforge.gen.config import PRESETS

#: Commands served by another module's ``main(argv)`` (their own options and ``--help``).
DELEGATED = {
    "bitstream": ("sparseforge.boards.flows", "bitstream",
                  "FPGA build of a block: ECPIX-5 bitstream (YoWASP) or the VCU1525 Vivado tree"),
    "synth-report": ("sparseforge.boards.flows", "synth-report",
                     "Yosys synth_xilinx / synth_ecp5 estimates per block vs the baselines"),
    "bench": ("sparseforge.bench", None,
              "speedup benchmarks on real networks (tables, bench.json, PNG plots)"),
    "e2e": ("sparseforge.e2e", None,
            "training step(s) on the accelerator RTL vs the golden model; build/e2e/report.json"),
    "train": ("sparseforge.train", None,
              "train a network on the accelerator RTL for many steps: loss per step vs the "
              "golden training, build/e2e/report.json + loss.png"),
    "train-stats": ("sparseforge.study.cli", None,
                    "sparse-training accuracy and sparsity statistics of the digits CNN"),
    "formal": ("sparseforge.formal.runner", None,
               "SymbiYosys proofs (stream rules, N:M selector invariants, must-fail mutants)"),
}


# -- verilog ---------------------------------------------------------------------------------

#: Block-specific flags: (argparse dest, constructor parameter) per block that takes them.
NM_FLAGS = [("m", "m"), ("n_max", "n_max"), ("width", "width")]
BLOCK_FLAGS = {"nm_selector": NM_FLAGS, "weight_pregen": NM_FLAGS}


def _block_overrides(args, name) -> dict:
    """Block-specific CLI flags (only those given) as constructor parameters."""
    return {param: getattr(args, flag) for flag, param in BLOCK_FLAGS.get(name, [])
            if getattr(args, flag, None) is not None}


def _check_block_flags(args, names):
    for flag in sorted({f for rows in BLOCK_FLAGS.values() for f, _ in rows}):
        if getattr(args, flag, None) is None:
            continue
        takers = sorted(b for b, rows in BLOCK_FLAGS.items() if any(f == flag for f, _ in rows))
        if not set(takers) & set(names):
            raise ValueError(f"--{flag.replace('_', '-')} applies only to "
                             f"{', '.join(takers)}, not to {', '.join(names)}")


def cmd_verilog(args) -> int:
    from sparseforge import __version__
    from sparseforge.gen.verilog import write_verilog
    cfg = config_from_args(args)
    names = args.blocks or sorted(_blocks.BLOCKS)
    unknown = sorted(set(names) - set(_blocks.BLOCKS))
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; known blocks: {sorted(_blocks.BLOCKS)}")
    _check_block_flags(args, names)
    out = Path(args.output)
    single_file = out.suffix == ".v"
    if single_file and len(names) != 1:
        raise ValueError(f"-o {args.output} names one file but {len(names)} blocks are emitted; "
                         f"give one block or a folder")
    folder = out.parent if single_file else out / cfg.name
    manifest = {"sparseforge": __version__, "config": {"name": cfg.name, "key": cfg.key(),
                                                       "fields": cfg.to_dict()},
                "blocks": []}
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name} ...", flush=True)
        t0 = time.perf_counter()
        component, params = _blocks.build_block(name, cfg, **_block_overrides(args, name))
        path = write_verilog(component, name, out if single_file else folder, config=cfg,
                             params=params)
        manifest["blocks"].append({"block": name, "file": path.name, "top": name,
                                   "params": params,
                                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        print(f"      wrote {path} ({time.perf_counter() - t0:.2f} s)", flush=True)
    if not single_file:
        mpath = folder / "manifest.json"
        mpath.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
        print(f"wrote {mpath}")
    return 0


def cmd_config(args) -> int:
    cfg = config_from_args(args)
    for k, v in cfg.to_dict().items():
        print(f"{k} = {v!r}")
    return 0


def cmd_presets(args) -> int:
    for name, cfg in PRESETS.items():
        print(f"{name:10s} {cfg.pe_rows}x{cfg.pe_cols} PEs, {cfg.macs_per_pe} MAC/PE, "
              f"M={cfg.nm_m}, N_max={cfg.nm_n_max}, {cfg.data_width}-bit data, schedule memory "
              f"{cfg.sched_depth} words")
    return 0


# -- schedule --------------------------------------------------------------------------------

def cmd_schedule(args) -> int:
    """Compile ``--net`` at ``--batch`` for the configuration; report its size against the
    schedule memory and its largest tensor per on-chip buffer against the buffer
    (``schedule.check_fits``); ``-o`` writes the binary (only when both fit)."""
    from sparseforge.gen.network import load_network
    from sparseforge.gen.schedule import buffer_demand, build_schedule, check_fits, validate
    cfg = config_from_args(args)
    net = load_network(args.net, cfg, batch=args.batch)
    sched = build_schedule(net, cfg)
    binary = sched.encode()
    words = len(binary) // 4
    print(f"{net.name} batch {net.batch} on {cfg.name}: {len(sched.entries)} entries, "
          f"{words} words; schedule memory {cfg.sched_depth} words "
          f"({100 * words / cfg.sched_depth:.1f}%)")
    validate(binary, cfg)            # refuses a binary that does not fit (length error)
    check_fits(net, cfg)             # refuses tensors larger than the on-chip buffers
    need = buffer_demand(net)
    print("tensor buffers: " + ", ".join(
        f"{buf} {need[buf][0]}/{getattr(cfg, buf)}" for buf in cfg.tensor_mem_fields
        if buf in need))
    if args.output:
        Path(args.output).write_bytes(binary)
        print(f"wrote {args.output}")
    return 0


# -- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from sparseforge import __version__
    parser = OneLineParser(prog="sparseforge", description=__doc__.split("\n\n")[0],
                           epilog="Run 'sparseforge COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"sparseforge {__version__}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=OneLineParser)

    p = sub.add_parser("verilog", help="emit Verilog for blocks (make verilog)",
                       description="Emit Verilog for blocks into OUT/<config name>/ with a "
                                   "manifest.json (or one block into a .v file).")
    p.add_argument("blocks", nargs="*", metavar="BLOCK",
                   help=f"blocks to emit (default: all of {', '.join(sorted(_blocks.BLOCKS))})")
    add_config_args(p)
    p.add_argument("-o", "--output", default="build/verilog", metavar="DIR",
                   help="output folder (files go to DIR/<config name>/) or, for one block, a "
                        ".v file (default build/verilog)")
    g = p.add_argument_group("nm_selector / weight_pregen overrides (default: from the config)")
    g.add_argument("--m", type=int, default=None, help="N:M group size M")
    g.add_argument("--n-max", type=int, default=None, help="largest runtime N")
    g.add_argument("--width", type=int, default=None, help="value width in bits")
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("config", help="print the resolved configuration",
                       description="Print the configuration the other commands would use.")
    add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("presets", help="list the presets", description="List the presets.")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("schedule", help="compile a network to a schedule binary and check it "
                                        "fits the schedule memory",
                       description="Compile a network to the on-chip schedule binary and report "
                                   "its size against the configuration's sched_depth.")
    p.add_argument("--net", default="digits-cnn",
                   help="network name (gen/networks) or YAML/TOML file (default digits-cnn)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the network's own)")
    add_config_args(p)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the binary to FILE (little-endian 32-bit words)")
    p.set_defaults(func=cmd_schedule)

    for name, (_, _, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False,
                       description=f"{text} (run 'sparseforge {name} --help')")
    return parser


def _delegate(name, argv) -> int:
    module, command, _ = DELEGATED[name]
    mod = importlib.import_module(module)
    return mod.main(([command] if command else []) + list(argv))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return guarded(_delegate, argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
