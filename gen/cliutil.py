"""What every ``sparseforge`` command line shares: argument errors as one line, value types
that refuse nonsense before anything is written, and the guard that turns an expected failure
into ``sparseforge: error: ...`` with exit status 2 (never a traceback)."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

__all__ = ["PROG", "OneLineParser", "positive_float", "guarded", "error_line", "EXPECTED",
           "plain", "preset_name", "add_config_args", "config_from_args"]

PROG = "sparseforge"
#: Failures a command reports as one line: bad values and files (ValueError covers the
#: configuration, network and schedule errors, which subclass it), I/O, tool failures.
EXPECTED = (ValueError, TypeError, OSError, RuntimeError, subprocess.CalledProcessError,
            subprocess.TimeoutExpired)


def error_line(msg) -> str:
    """``sparseforge: error: msg`` on one line (newlines folded)."""
    return f"{PROG}: error: " + " ".join(str(msg).split())


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line ``sparseforge: error: ...`` and
    exit status 2 (argparse prints the usage first; ``--help`` still shows it)."""

    def error(self, message):
        sub = self.prog[len(PROG):].strip() if self.prog.startswith(PROG) else self.prog
        sys.stderr.write(error_line(f"{sub}: {message}" if sub else message) + "\n")
        sys.exit(2)


def add_config_args(p: argparse.ArgumentParser):
    """``--preset``, ``--config``, ``--set``: the configuration options every command that
    builds a configuration takes (read by :func:`config_from_args`)."""
    from sparseforge.gen.config import DEFAULT_PRESET, PRESETS
    p.add_argument("--preset", default=None,
                   help=f"base preset ({', '.join(sorted(PRESETS))}; default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TOML/YAML configuration file (a table of fields, optionally preset)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one configuration field (repeatable)")


def config_from_args(args):
    """The configuration of :func:`add_config_args`' options; ``--preset ''`` and a
    ``--preset`` that contradicts the file's own ``preset`` are errors."""
    from sparseforge.gen.config import DEFAULT_PRESET, ConfigError, load_config
    if args.preset is not None and not args.preset:
        raise ConfigError("--preset must name a preset, not ''")
    return load_config(args.config, base=DEFAULT_PRESET, preset=args.preset,
                       overrides=args.set)


def plain(doc: str) -> str:
    """A docstring as ``--help`` text: Sphinx roles (``:mod:`x``` -> ``x``) and double
    backticks removed."""
    import re
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def preset_name(text: str) -> str:
    """argparse type: a non-empty preset name (``--preset ""`` must not mean the default)."""
    if not text:
        raise argparse.ArgumentTypeError("must name a preset, not ''")
    return text


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``nan``, ``inf``, ``0``, ``-5`` refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text!r}")
    return v


def guarded(fn, *args, **kwargs) -> int:
    """Run ``fn``; an expected failure (:data:`EXPECTED`) prints one error line and gives 2;
    a closed stdout (``sparseforge config | head``) ends quietly."""
    try:
        rc = fn(*args, **kwargs)
        sys.stdout.flush()
        return 0 if rc is None else rc
    except BrokenPipeError:
        # the reader went away: send the rest of our output nowhere and stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except EXPECTED as exc:
        if isinstance(exc, subprocess.CalledProcessError):
            exc = f"{exc.cmd[0] if isinstance(exc.cmd, (list, tuple)) else exc.cmd} failed " \
                  f"with exit status {exc.returncode}"
        elif isinstance(exc, OSError) and exc.filename is not None:
            exc = f"{exc.strerror or exc}: {exc.filename}"
        sys.stderr.write(error_line(exc) + "\n")
        return 2
