"""End-to-end training step (sim/e2e.py): golden backend vs the array mapping (pure Python, fast),
host operations, argument checks; and the step on the ``accelerator`` RTL (cocotb; Verilator:
tiny preset + digits CNN, batch 1; Icarus: a 1x2-PE config + tiny-cnn, batch 2)."""

import asyncio
import json

import numpy as np
import pytest

from sparseforge.gen.config import preset
from sparseforge.sim.host import e2e
from sparseforge.sim.reference import golden

TINY = preset("tiny")
# as tests/test_accelerator.py's Icarus config (the Icarus model is then built once a session)
SMALL = preset("tiny").replace(pe_rows=1, pe_cols=2, psum_buf_depth=64, act_buf_depth=256,
                               max_row_len=16, k_max=3, name="small")
SEED, PRUNE_SEED, LR_SHIFT = 2024, 77, 4


def _step(net, cfg, backend, seed=SEED):
    state = e2e.init_state(net, cfg, seed=seed)
    x, y = e2e.make_batch(net, cfg, seed=seed)
    return state, asyncio.run(e2e.train_step(net, cfg, state, x, y, backend, lr_shift=LR_SHIFT,
                                             base_seed=PRUNE_SEED))


@pytest.mark.parametrize("cfg,name,batch", [(TINY, "digits-cnn", 1), (TINY, "tiny-cnn", 2),
                                            (SMALL, "tiny-cnn", 2)],
                         ids=["tiny-digits-b1", "tiny-tinycnn-b2", "small-tinycnn-b2"])
def test_golden_step_equals_array_mapping(cfg, name, batch):
    """The whole step through map_array/execute/assemble and the pre-generation schedule
    equals the golden step bit for bit (every intermediate tensor)."""
    print(f"seed={SEED} prune_seed={PRUNE_SEED} config={cfg.name} network={name} b={batch}")
    net = e2e.load_net(name, cfg, batch=batch)
    _, gold = _step(net, cfg, e2e.GoldenBackend(cfg))
    model = e2e.ModelBackend(cfg)
    _, got = _step(net, cfg, model)
    assert e2e.compare(got, gold) == []
    print(e2e.cycle_table(model.log))
    phases = [(r["layer"], r["phase"]) for r in model.log]
    assert len([q for q in phases if q[1] in ("fp", "bp", "wg")]) == 3 * len(net.compute) - 1
    assert (net.compute[0].name, "bp") not in phases           # no BP for the first layer
    assert len([q for q in phases if q[1] == "prune"]) == sum(c.prune for c in net.compute)
    assert len([q for q in phases if q[1] == "pregen"]) == sum(c.bdwp for c in net.compute)


def test_step_definition_on_tiny_cnn():
    """Spot checks of the definition against direct golden calls."""
    cfg = TINY
    net = e2e.load_net("tiny-cnn", cfg, batch=2)
    state, r = _step(net, cfg, e2e.GoldenBackend(cfg))
    fb, dw = cfg.frac_bits, cfg.data_width
    c1 = r.fp["conv1"]
    fwd1 = state.masks["conv1"][0]
    assert fwd1.all()                                            # conv1 is dense (Cin = 2)
    assert np.array_equal(c1["z"], golden.writeback(golden.conv2d_forward(
        c1["x"], state.weights["conv1"], 1, 1), fb, dw))
    fc = r.fp["fc1"]
    w, (fwd, bwd) = state.weights["fc1"], state.masks["fc1"]
    a = r.fp["conv3"]["a"].reshape(2, -1)
    assert np.array_equal(fc["z"], golden.writeback(golden.fc_forward(a, w * fwd), fb, dw))
    onehot = np.zeros((2, 8), np.int64)
    x, y = e2e.make_batch(net, cfg, seed=SEED)
    onehot[np.arange(2), y] = 1 << fb
    assert np.array_equal(r.dlogits, np.clip(r.logits - onehot, -(1 << 15), (1 << 15) - 1))
    b = r.bp["fc1"]
    assert np.array_equal(b["dx"].reshape(2, -1), golden.writeback(golden.fc_backward_input(
        r.dlogits, w * bwd), fb, dw))
    assert np.array_equal(b["dw"], golden.writeback(golden.fc_backward_weight(a, r.dlogits),
                                                     fb, dw))
    assert np.array_equal(b["w_new"], np.clip(w - (b["dw"] >> LR_SHIFT), -(1 << 15),
                                              (1 << 15) - 1))
    f2, b2 = golden.bdwp_masks(b["w_new"], 2, 8)
    assert np.array_equal(b["fwd"], f2) and np.array_equal(b["bwd"], b2)
    assert np.array_equal(r.state.masks["fc1"][0], f2)
    # pruning of conv2's gradient: threshold and golden pruner with the layer's seed
    g = r.bp["conv2"]["g"]
    k_p, s = golden.prune_threshold_params(net.prune_p, g.size)
    tau = golden.prune_threshold_int(g, k_p, s, dw)
    assert r.bp["conv2"]["tau"] == tau
    assert np.array_equal(r.bp["conv2"]["g_pruned"], golden.stochastic_prune_int(
        g, tau, e2e.layer_seed(PRUNE_SEED, 1), dw)[0])
    assert "dx" not in r.bp["conv1"]
    # the state passed in is not modified
    assert not np.array_equal(r.state.weights["conv1"], state.weights["conv1"])


def test_maxpool_ties_and_backward():
    a = np.array([[[[3, 3, 1, 0], [1, 2, 0, 0], [5, 1, 2, 7], [5, 9, 7, 7]]]])
    out, arg = e2e.maxpool_forward(a, 2, 2)
    assert out.tolist() == [[[[3, 1], [9, 7]]]]
    assert arg.tolist() == [[[[0, 0], [3, 1]]]]                 # first max on ties
    g = e2e.maxpool_backward(np.array([[[[1, 2], [3, 4]]]]), arg, a.shape, 2, 2, 16)
    assert g.tolist() == [[[[1, 0, 2, 0], [0, 0, 0, 0], [0, 0, 0, 4], [0, 3, 0, 0]]]]
    # overlapping windows add, then saturate to the data width
    a = np.zeros((1, 1, 3, 3), np.int64)
    a[0, 0, 1, 1] = 9
    out, arg = e2e.maxpool_forward(a, 2, 1)
    g = e2e.maxpool_backward(np.full((1, 1, 2, 2), 100), arg, a.shape, 2, 1, 8)
    assert g[0, 0, 1, 1] == 127 and np.count_nonzero(g) == 1


def test_compare_reports_differences():
    cfg = TINY
    net = e2e.load_net("tiny-cnn", cfg, batch=1)
    _, a = _step(net, cfg, e2e.GoldenBackend(cfg))
    _, b = _step(net, cfg, e2e.GoldenBackend(cfg))
    assert e2e.compare(a, b) == []
    b.bp["conv2"]["g_pruned"] = b.bp["conv2"]["g_pruned"].copy()
    b.bp["conv2"]["g_pruned"][0, 1, 2, 3] += 1
    bad = e2e.compare(a, b)
    assert len(bad) == 1 and bad[0].startswith("conv2.bp.g_pruned: 1 of 128 differ, first at "
                                               "(0, 1, 2, 3)")


def test_bad_arguments():
    cfg = TINY
    net = e2e.load_net("tiny-cnn", cfg, batch=1)
    state = e2e.init_state(net, cfg, seed=1)
    x, y = e2e.make_batch(net, cfg, seed=1)
    be = e2e.GoldenBackend(cfg)
    with pytest.raises(ValueError, match="lr_shift must be an integer in"):
        asyncio.run(e2e.train_step(net, cfg, state, x, y, be, lr_shift=-1))
    with pytest.raises(ValueError, match=r"x must have shape \(1, 2, 8, 8\)"):
        asyncio.run(e2e.train_step(net, cfg, state, x[:, :1], y, be))
    with pytest.raises(ValueError, match="labels must have shape"):
        asyncio.run(e2e.train_step(net, cfg, state, x, np.array([1, 2]), be))
    for bad in (-1, 8):                      # tiny-cnn: 8 classes
        with pytest.raises(ValueError, match=rf"labels must be class indices in \[0, 8\), "
                                             rf"not \[{bad}\]"):
            asyncio.run(e2e.train_step(net, cfg, state, x, np.array([bad]), be))
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        e2e.load_net("tiny-cnn", cfg, batch=0)
    with pytest.raises(ValueError, match="unknown network"):
        e2e.load_net("no-such-net", cfg)
    for s in (0, 1, 2**32 - 1, 12345):
        assert all(1 <= e2e.layer_seed(s, k) <= 2**32 - 1 for k in range(8))


def test_digits_batch2_runs_chunked():
    """At batch 2 the digits CNN's WG X scratchpad image per PE (conv1: 2 x 16 x 16 = 512
    words) exceeds the tiny preset's act_buf_depth of 256 (it used to raise): the WG phases are
    mapped in scratchpad chunks (gen/mapper/pe.wg_chunks) and the step through the array
    mapping equals the golden step bit for bit."""
    print(f"seed={SEED} prune_seed={PRUNE_SEED}")
    net = e2e.load_net("digits-cnn", TINY, batch=2)
    _, gold = _step(net, TINY, e2e.GoldenBackend(TINY))
    model = e2e.ModelBackend(TINY)
    _, got = _step(net, TINY, model)
    assert e2e.compare(got, gold) == []
    print(e2e.cycle_table(model.log))


@pytest.mark.parametrize("test", ["e2e_training_step"])
def test_e2e_cocotb(sim, cocotb_run, test, tmp_path):
    cfg, name, batch = (TINY, "digits-cnn", 1) if sim == "verilator" else (SMALL, "tiny-cnn", 2)
    log_path = tmp_path / "e2e_log.json"
    params = {"config": cfg.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED,
              "lr_shift": LR_SHIFT, "network": name, "batch": batch, "log_path": str(log_path)}
    print(f"seed={SEED} prune_seed={PRUNE_SEED} sim={sim} config={cfg.name} network={name} "
          f"batch={batch}")
    assert cocotb_run("accelerator", sim, "cocotb_e2e", config=cfg, params=params,
                      testcase=test) == 1
    res = json.loads(log_path.read_text())
    (run,) = res["steps"]
    print(e2e.cycle_table(run["log"]))
    print(f"simulated cycles {res['sim_cycles']}, RTL step {res['wall_s']:.1f} s wall")
    arr = [r for r in run["log"] if r["phase"] in ("fp", "bp", "wg")]
    assert arr and all(r["busy_mac0"] == r["model_busy_mac0"] and r["nnz0"] == r["model_nnz0"]
                       for r in arr)
    # the report entry (build/e2e/report.json's steps[]) made from the same log
    step = e2e.report_step(run["log"], tensors_compared=run["tensors_compared"],
                           mismatched=run["mismatched"])
    assert step["tensors_mismatched"] == 0 and step["tensors_compared"] > 0
    net = e2e.load_net(name, cfg, batch=batch)
    assert [(q["layer"], q["phase"]) for q in step["phases"]] == \
        [(r["layer"], r["phase"]) for r in run["log"]]
    for q in step["phases"]:
        assert q["phase"] in e2e.PHASE_CODES
        assert (q["array_cycles"] > 0) == (q["phase"] in ("fp", "bp", "wg"))
        if q["phase"] == "pregen" and q.get("beside"):
            # on chip beside the next WG job: its traffic and transfers are in that WG's row,
            # its cycles the part neither the job nor a transfer hid
            assert q["busy_cycles"] > q["cycles"] >= 0 and q["array_cycles"] == 0
            assert q["host_words_in"] == q["host_words_out"] == q["dma_cycles"] == 0
            continue
        if q["phase"] == "prune" and q.get("beside"):
            # pruning sent after a backward stage in the next WG job's packet: its cycles the
            # part the job did not hide (PRUNE_EXPOSED); its result read back with the
            # stage's; host traffic only its schedule step
            assert q["busy_cycles"] >= q["cycles"] >= 0 and q["busy_cycles"] > 0
            assert q["host_words_out"] == q["dma_cycles"] == q["debug_words"] == 0
            assert q["beside"].endswith(" wg")
            continue
        if q["phase"] == "stage" and q.get("beside"):
            # a backward stage sent in the next WG job's packet: its cycles are the part the
            # job did not hide (STAGE_EXPOSED), its result read back for checking only
            assert q["busy_cycles"] >= q["cycles"] >= 0 and q["busy_cycles"] > 0
            assert q["host_words_in"] == q["host_words_out"] == q["dma_cycles"] == 0
            assert q["debug_words"] > 0 and q["beside"].endswith(" wg")
            continue
        assert q["cycles"] > 0 and q["host_words_in"] > 0
        # a result either crosses the bus or stays on chip and is read back for checking only
        on_chip = q["host_words_out"] == 0
        assert on_chip == (q["debug_words"] > 0), q
        if q.get("update") or q["phase"] == "stage" or \
                (q["phase"] == "prune" and q.get("data_plane") == "dma"):
            # dW and W' of a WG job with the update, a stage's output, the pruned gradient
            assert on_chip, q
    assert any(q.get("update") for q in step["phases"])          # the weights stayed on chip
    # the between-layer stages ran on chip (issue 17 item 1); the logits cross the bus
    assert {q.get("op") for q in step["phases"] if q["phase"] == "stage"} == \
        {"fwd", "bwd", "loss"}
    assert [q for q in step["phases"] if q["phase"] == "fp"][-1]["host_words_out"] > 0
    assert step["array_cycles"] == sum(r["model_cycles"] for r in arr)
    # a data-plane phase reports its job cycles (JOB_CYCLES), a host-fed one its io cycles
    assert step["cycles"] == sum(q["cycles"] for q in step["phases"])
    assert step["cycles"] == sum(r["job_cycles"] if r.get("data_plane") == "dma" else
                                 r["io_cycles"] for r in run["log"])
    # the model array cycles of a phase are those of map_array for the same layer
    assert len(arr) == 3 * len(net.compute) - 1


@pytest.mark.parametrize("test", ["e2e_reset_mid_step_rerun", "e2e_step_before_network_loaded"])
def test_e2e_bad_step_cocotb(sim, cocotb_run, test):
    """Issue 17, bad input under both simulators (the cocotb tests assert it): a reset in
    the middle of a step (host gone after three phases, then a soft reset while a data-plane
    phase runs), Driver.recover(), the rerun equals the golden step; a step before the
    network's schedule is loaded -> ERROR_CODE 0x20, no hang, then an exact step. Icarus: the
    1x2 config and tiny-cnn at batch 2, as test_e2e_cocotb."""
    cfg, name, batch = (TINY, "tiny-cnn", 1) if sim == "verilator" else (SMALL, "tiny-cnn", 2)
    params = {"config": cfg.to_dict(), "seed": SEED, "prune_seed": PRUNE_SEED,
              "lr_shift": LR_SHIFT, "network": name, "batch": batch}
    print(f"seed={SEED} prune_seed={PRUNE_SEED} sim={sim} config={cfg.name} network={name} "
          f"batch={batch}")
    assert cocotb_run("accelerator", sim, "cocotb_e2e", config=cfg, params=params,
                      testcase=test) == 1



def test_graph_step_bn_resnet_golden_equals_array_model():
    """The graph step (sim/host/e2e_graph.py) of ``digits-resnet`` at batch 2: the array
    model's phases give the golden step bit for bit; the structure is the network's (BN
    parameters updated, the gradient of a block input summed over its readers, the global
    average pool's gradient spread); bad arguments are refused."""
    from sparseforge.sim.host import e2e_graph
    net = e2e_graph.load_graph_net("digits-resnet", batch=2)
    assert e2e_graph.is_graph_net(net)
    assert not e2e_graph.is_graph_net(e2e.load_net("digits-cnn", TINY, batch=1))
    state = e2e_graph.init_graph_state(net, TINY, seed=SEED)
    assert set(state.bn) == {lay.name for lay in net.compute if lay.bn}
    x, y = e2e.make_batch(net, TINY, seed=SEED)
    kw = dict(lr_shift=LR_SHIFT, base_seed=PRUNE_SEED)
    gold = asyncio.run(e2e_graph.train_step_graph(net, TINY, state, x, y,
                                                  e2e.GoldenBackend(TINY), **kw))
    model = asyncio.run(e2e_graph.train_step_graph(net, TINY, state, x, y,
                                                   e2e.ModelBackend(TINY), **kw))
    assert e2e.compare(gold, model) == []
    t = gold.tensors()
    assert len(t) == 134 * 1 and gold.logits.shape == (2, 10)
    # BN: per channel, the normalised output has mean ~beta (0) before the add / ReLU
    y1 = gold.fp["conv1"]["y"]
    assert np.abs(y1.mean(axis=(0, 2, 3))).max() < 4          # LSB: rounding of mu, xhat
    for lay in net.compute:
        b = gold.bp[lay.name]
        if lay.bn:
            g0, be0 = state.bn[lay.name]
            assert np.array_equal(b["gamma_new"], np.clip(
                g0 - (np.clip(b["dgamma"], -32768, 32767) >> LR_SHIFT), -32768, 32767))
            assert np.array_equal(gold.state.bn[lay.name][1], b["beta_new"])
        assert ("dx" in b) == (lay.src != "input")
    # block1.conv2's output feeds block2.down and block2.conv1: its gradient is their dx summed
    d = gold.bp["block1.conv2"]["d"]
    want = np.clip(gold.bp["block2.down"]["dx"] + gold.bp["block2.conv1"]["dx"], -32768, 32767)
    assert np.array_equal(d, want)
    # the add in block2.conv2 passes its gradient to block2.down's output unchanged
    assert gold.fp["block2.conv2"]["s"].shape == gold.fp["block2.down"]["a"].shape
    # the stem's output (pool1) feeds block1.conv1 and block1.conv2's add
    assert np.array_equal(gold.bp["conv1"]["d"].shape, gold.fp["conv1"]["a"].shape)
    with pytest.raises(ValueError, match="no BN parameters"):
        asyncio.run(e2e_graph.train_step_graph(net, TINY, e2e.init_state(net, TINY, seed=1), x,
                                               y, e2e.GoldenBackend(TINY), **kw))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\), not "
                       r"\[1\d"):
        asyncio.run(e2e_graph.train_step_graph(net, TINY, state, x, y + 10,
                                               e2e.GoldenBackend(TINY), **kw))
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        e2e_graph.load_graph_net("nope", batch=1)
