"""``make e2e`` / ``python -m sparseforge.e2e``: argument and feasibility errors as one line
with exit status 2; the report's schema from a run under Icarus (small array, tiny CNN)."""

import json
import shlex

import pytest

from sparseforge import e2e as run_e2e
from sparseforge.sim.host import e2e
from sparseforge.sim.testkit import runner

SMALL_SETS = ["--set", "pe_rows=1", "--set", "pe_cols=2", "--set", "psum_buf_depth=64",
              "--set", "act_buf_depth=256", "--set", "max_row_len=16", "--set", "k_max=3",
              "--set", "name=small"]


@pytest.mark.parametrize("argv,msg", [
    (["--batch", "0"], "--batch must be >= 1, not 0"),
    (["--steps", "0"], "--steps must be >= 1, not 0"),
    (["--lr-shift", "99"], "--lr-shift must be in [0, 62]"),
    (["--preset", ""], "--preset must name a preset"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--net", "no-such-net"], "unknown network"),
    # the WG scratchpad limit (docs/e2e.md): a larger input is chunked, but one input plane
    # must fit; refused before anything is built
    (["--set", "act_buf_depth=128"], "WG: one input plane (16x16 = 256 words) does not fit "
                                     "act_buf_depth=128"),
], ids=["batch0", "steps0", "lr", "preset-empty", "preset-unknown", "net", "unmappable"])
def test_e2e_refuses_bad_runs(argv, msg, tmp_path, capsys):
    assert run_e2e.main(argv + ["-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparseforge: error: ") and msg in err[0], err
    assert not (tmp_path / "out").exists()          # nothing was written


def test_report_entries_from_a_log():
    log = [{"layer": "c1", "phase": "fp", "io_cycles": 100, "model_cycles": 40, "cycles": 90,
            "words_in": 30, "words_out": 20},
           {"layer": "c1", "phase": "prune", "io_cycles": 50, "words_in": 11, "words_out": 10},
           {"layer": "c1", "phase": "wg", "io_cycles": 70, "model_cycles": 35, "cycles": 60,
            "words_in": 5, "words_out": 4}]
    s = e2e.report_step(log, tensors_compared=9, mismatched=["c1.fp.z: 1 of 4 differ"])
    assert s["tensors_compared"] == 9 and s["tensors_mismatched"] == 1
    assert (s["cycles"], s["array_cycles"], s["dma_cycles"]) == (220, 75, 0)
    assert (s["host_words_in"], s["host_words_out"], s["debug_words"]) == (46, 34, 0)
    assert s["phases"][1] == {"layer": "c1", "phase": "prune", "cycles": 50, "array_cycles": 0,
                              "dma_cycles": 0, "host_words_in": 11, "host_words_out": 10,
                              "debug_words": 0}
    assert s["phases"][0]["counter_cycles"] == 90
    assert s["phases"][0]["data_plane"] == "host-stream"
    # a phase through the data plane: its job's cycles, the exposed DMA, the card traffic
    dp = e2e.report_phase({"layer": "c1", "phase": "fp", "io_cycles": 100, "model_cycles": 40,
                           "cycles": 95, "words_in": 6, "words_out": 0, "data_plane": "dma",
                           "job_cycles": 60, "dma_cycles": 25, "card_words_in": 40,
                           "card_words_out": 16})
    assert (dp["cycles"], dp["dma_cycles"], dp["io_cycles"], dp["data_plane"]) == \
        (60, 25, 100, "dma")
    assert (dp["host_words_in"], dp["host_words_out"], dp["counter_cycles"]) == (46, 16, 95)
    # on-chip pruning (CMD_PRUNE): its job cycles, the exposed DMA, the threshold; an array
    # phase whose operands the buffers still held names them
    pr = e2e.report_phase({"layer": "c1", "phase": "prune", "io_cycles": 80, "words_in": 9,
                           "words_out": 0, "data_plane": "dma", "job_cycles": 30,
                           "dma_cycles": 40, "card_words_in": 16, "card_words_out": 16,
                           "tau_chip": 7})
    assert (pr["cycles"], pr["array_cycles"], pr["dma_cycles"], pr["tau"], pr["data_plane"]) \
        == (30, 0, 40, 7, "dma")
    assert (pr["host_words_in"], pr["host_words_out"]) == (25, 16) and "counter_cycles" not in pr
    dr = e2e.report_phase({"layer": "c1", "phase": "bp", "io_cycles": 100, "model_cycles": 40,
                           "cycles": 95, "data_plane": "dma", "job_cycles": 60, "dma_cycles": 5,
                           "card_words_in": 8, "card_words_out": 16, "resident": ["dy"]})
    assert dr["resident"] == ["dy"]
    with pytest.raises(ValueError, match="unknown phase code 'relu'"):
        e2e.report_phase({"layer": "c1", "phase": "relu", "io_cycles": 1})
    assert e2e.PHASE_CODES[:3] == ("fp", "bp", "wg")


@pytest.mark.cocotb
@pytest.mark.skipif(not runner.simulator_available("icarus"), reason="icarus not installed")
def test_e2e_run_writes_the_report(tmp_path, capsys):
    """A whole run as ``make e2e E2E_ARGS=...`` does it, under Icarus on a small array."""
    out = tmp_path / "e2e"
    argv = ["--net", "tiny-cnn", "--batch", "2", "--sim", "icarus", "-o", str(out)] + SMALL_SETS
    assert run_e2e.main(argv) == 0
    print(capsys.readouterr().out)
    rep = json.loads((out / "report.json").read_text())
    assert {k: rep[k] for k in ("schema_version", "preset", "network", "batch", "simulator")} \
        == {"schema_version": 1, "preset": "small", "network": "tiny-cnn", "batch": 2,
            "simulator": "icarus"}
    (step,) = rep["steps"]
    assert step["tensors_compared"] > 0 and step["tensors_mismatched"] == 0
    keys = {"layer", "phase", "cycles", "array_cycles", "dma_cycles", "host_words_in",
            "host_words_out", "debug_words"}
    assert step["phases"] and all(keys <= set(q) for q in step["phases"])
    assert step["cycles"] == sum(q["cycles"] for q in step["phases"])
    assert step["array_cycles"] == sum(q["array_cycles"] for q in step["phases"]) > 0
    assert rep["sim_cycles"] >= step["cycles"]
    assert rep["command"] == "python -m sparseforge e2e " + shlex.join(argv)
