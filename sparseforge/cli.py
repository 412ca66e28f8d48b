"""``sparseforge`` command-line interface.

    sparseforge verilog [BLOCK ...] [--preset P] [--config FILE] [--set FIELD=VALUE ...] [-o DIR]
    sparseforge config  [--preset P] [--config FILE] [--set FIELD=VALUE ...]
    sparseforge presets
"""

from __future__ import annotations

import argparse
import sys
import time

from sparseforge.gen import blocks as _blocks
from sparseforge.gen.config import DEFAULT_PRESET, PRESETS, load_config


def _add_config_args(p: argparse.ArgumentParser):
    p.add_argument("--preset", default=None,
                   help=f"base preset ({', '.join(sorted(PRESETS))}; default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, metavar="FILE", help="TOML/YAML configuration file")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one configuration field (repeatable)")


def _config(args):
    base = args.preset if args.preset is not None else (None if args.config else DEFAULT_PRESET)
    return load_config(args.config, base=base or DEFAULT_PRESET, overrides=args.set)


def cmd_verilog(args) -> int:
    from sparseforge.gen.verilog import write_verilog
    cfg = _config(args)
    names = args.blocks or sorted(_blocks.BLOCKS)
    for name in names:
        t0 = time.perf_counter()
        component, params = _blocks.build_block(name, cfg, **_block_overrides(args, name))
        path = write_verilog(component, name, args.output, config=cfg, params=params)
        print(f"wrote {path} ({time.perf_counter() - t0:.2f} s)")
    return 0


def _block_overrides(args, name) -> dict:
    """Block-specific CLI flags (only those given) as constructor parameters."""
    out = {}
    for flag, param in getattr(args, "_block_flags", {}).get(name, []):
        v = getattr(args, flag, None)
        if v is not None:
            out[param] = v
    return out


def cmd_config(args) -> int:
    cfg = _config(args)
    for k, v in cfg.to_dict().items():
        print(f"{k} = {v!r}")
    return 0


def cmd_presets(args) -> int:
    for name, cfg in PRESETS.items():
        print(f"{name:10s} {cfg.pe_rows}x{cfg.pe_cols} PEs, {cfg.macs_per_pe} MAC/PE, "
              f"M={cfg.nm_m}, N_max={cfg.nm_n_max}, {cfg.data_width}-bit data")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseforge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verilog", help="emit Verilog for blocks")
    p.add_argument("blocks", nargs="*", metavar="BLOCK",
                   help=f"blocks to emit (default: all of {', '.join(sorted(_blocks.BLOCKS))})")
    _add_config_args(p)
    p.add_argument("-o", "--output", default="build/verilog", metavar="DIR", help="output folder")
    g = p.add_argument_group("nm_selector / weight_pregen overrides (default: from the config)")
    g.add_argument("--m", type=int, default=None, help="N:M group size M")
    g.add_argument("--n-max", type=int, default=None, help="largest runtime N")
    g.add_argument("--width", type=int, default=None, help="value width in bits")
    nm_flags = [("m", "m"), ("n_max", "n_max"), ("width", "width")]
    p.set_defaults(func=cmd_verilog, _block_flags={"nm_selector": nm_flags, "weight_pregen": nm_flags})

    p = sub.add_parser("config", help="print the resolved configuration")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"sparseforge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
