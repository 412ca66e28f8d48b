"""The one command line (issue 19): every flow a subcommand, options with help, one-line
errors (never a traceback), per-preset Verilog folders with a manifest, flag conflicts, the
schedule size check, and values refused before anything is written."""

import argparse
import hashlib
import json
import subprocess
import sys

import pytest

from sparseforge import __version__
from sparseforge.cli import DELEGATED, build_parser, main

SUBCOMMANDS = ["verilog", "config", "presets", "schedule", "bitstream", "synth-report",
               "bench", "e2e", "train", "train-stats", "formal"]


def _run(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "sparseforge", *argv], capture_output=True,
                          text=True, **kw)


def _one_error_line(err, msg):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sparseforge: error: ") and msg in lines[0], lines[0]
    assert "Traceback" not in err


def _parsers():
    """Every parser behind the command line: the top level's, its own subcommands', and the
    delegated tools'."""
    import importlib
    top = build_parser()
    out = [top]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += [p for name, p in action.choices.items() if name not in DELEGATED]
    for name, (module, command, _) in DELEGATED.items():
        mod = importlib.import_module(module)
        p = mod.build_parser()
        if command:
            sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
            p = sub.choices[command]
        out.append(p)
    return out


def test_every_flow_is_a_subcommand():
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name):
    r = _run(name, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: sparseforge"), r.stderr
    # no Sphinx/RST markup in help text
    for mark in (":func:", ":class:", ":mod:", ":data:", "``"):
        assert mark not in r.stdout, (name, mark)


def test_every_option_has_help():
    missing = []
    for p in _parsers():
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not a.help or a.help is argparse.SUPPRESS:
                missing.append(f"{p.prog} {'/'.join(a.option_strings) or a.dest}")
            for mark in (":func:", ":class:", "``"):
                assert mark not in (a.help or ""), (p.prog, a.dest)
    assert missing == []


def test_version():
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sparseforge {__version__}"


def test_verilog_per_preset_folder_and_manifest(tmp_path, capsys):
    assert main(["verilog", "compressor", "skid", "--preset", "ecp5", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] compressor ..." in out and "[2/2] skid ..." in out
    folder = tmp_path / "ecp5"
    man = json.loads((folder / "manifest.json").read_text())
    assert man["sparseforge"] == __version__ and man["config"]["name"] == "ecp5"
    assert man["config"]["fields"]["macs_per_pe"] == 4
    assert [b["block"] for b in man["blocks"]] == ["compressor", "skid"]
    for b in man["blocks"]:
        assert hashlib.sha256((folder / b["file"]).read_bytes()).hexdigest() == b["sha256"]
    # one block into a named file
    assert main(["verilog", "compressor", "-o", str(tmp_path / "one.v")]) == 0
    assert "module compressor(" in (tmp_path / "one.v").read_text()


@pytest.mark.parametrize("argv,msg", [
    (["verilog", "-o", "{tmp}/x.v"], "names one file but"),
    (["verilog", "compressor", "--m", "6", "-o", "{tmp}/o"],
     "--m applies only to nm_selector, weight_pregen, not to compressor"),
    (["config", "--preset", ""], "--preset must name a preset, not ''"),
    (["config", "--preset", "ecp5", "--config", "{tmp}/c.toml"],
     "--preset ecp5 contradicts preset = 'tiny' in"),
    (["config", "--set", "name=../x"], "name must match [A-Za-z0-9_.-]+"),
    (["verilog", "compressor", "-o", "/proc/forbidden"], "/proc/forbidden"),
    (["schedule", "--net", "digits-cnn"], "9849 words do not fit the schedule memory "
                                          "(sched_depth=4096 words of tiny)"),
    (["schedule", "--net", "no-such-net"], "unknown network 'no-such-net'"),
    (["schedule", "--net", "digits-cnn", "--batch", "8", "--preset", "ecp5", "-o", "{tmp}/o"],
     "layer 0 'conv1' (conv): FP tensor y has 16384 elements > out_mem_elems=8192 (the result "
     "buffer; batch 8, configuration ecp5)"),
    (["bitstream", "--board", "ecpix5", "--clock-mhz", "nan", "-o", "{tmp}/bs"],
     "argument --clock-mhz: must be a finite number > 0, not 'nan'"),
    (["bitstream", "--board", "ecpix5", "--clock-mhz", "-5", "-o", "{tmp}/bs"],
     "must be a finite number > 0, not '-5'"),
    (["bitstream", "--board", "vcu1525", "--block", "accelerator", "--core-mhz", "inf",
      "-o", "{tmp}/bs"], "argument --core-mhz: must be a finite number > 0, not 'inf'"),
    (["synth-report", "--set", "pe_rows=3", "--update-baselines", "-o", "{tmp}/s"],
     "--update-baselines: the configuration is not the preset 'tiny' as shipped"),
    (["bench", "--batch", "0"], "--batch must be >= 1, not 0"),
    (["bench", "--wg-load-words", "0"], "--wg-load-words must be >= 1, not 0"),
    (["bitstream", "--board", "ecpix5", "--preset", "", "-o", "{tmp}/bs"],
     "argument --preset: must name a preset, not ''"),
    (["synth-report", "--preset", "", "-o", "{tmp}/s"], "argument --preset: must name a preset"),
    (["nope"], "invalid choice: 'nope'"),
], ids=["one-file-many-blocks", "inapplicable-flag", "empty-preset", "preset-conflict",
        "bad-name", "unwritable", "schedule-too-long", "unknown-net", "tensor-beyond-buffer",
        "clock-nan",
        "clock-negative", "core-inf", "baseline-of-changed-preset", "bench-batch", "bench-wg-load-words",
        "bitstream-empty-preset",
        "synth-empty-preset", "unknown"])
def test_errors_are_one_line_and_write_nothing(argv, msg, tmp_path):
    (tmp_path / "c.toml").write_text('preset = "tiny"\npe_rows = 1\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    r = _run(*argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    _one_error_line(r.stderr, msg)
    for d in ("o", "bs", "s"):
        assert not (tmp_path / d).exists(), d


def test_schedule_fits_and_writes_the_binary(tmp_path, capsys):
    out = tmp_path / "s.bin"
    assert main(["schedule", "--net", "digits-cnn", "--batch", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "49 entries, 989 words; schedule memory 4096 words (24.1%)" in text
    assert ("tensor buffers: act_mem_elems 512/2048, grad_mem_elems 2048/4096, "
            "wgt_mem_elems 8192/16384, out_mem_elems 8192/16384") in text
    from sparseforge.gen.config import preset
    from sparseforge.gen.schedule import validate
    assert len(validate(out.read_bytes(), preset("tiny"))) == 989


def test_broken_pipe_is_quiet():
    """`sparseforge config | head -1`: the reader leaves early; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "sparseforge", "config"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("mhz", [float("nan"), float("inf"), 0, -5])
def test_bitstream_api_refuses_bad_clocks_before_writing(mhz, tmp_path):
    from sparseforge.boards import flows
    with pytest.raises(ValueError, match="clock_mhz must be a finite number > 0"):
        flows.bitstream("ecpix5", "compressor", None, tmp_path / "bs", clock_mhz=mhz)
    assert not (tmp_path / "bs").exists()
