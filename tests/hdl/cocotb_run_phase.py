"""cocotb: the documented one-phase call ``Driver.run_phase`` (docs/accelerator.md, "Running one
layer phase from host tensors") on the ``accelerator`` Verilog -- FP with a forward N:M mask,
BP with the backward mask, WG, stride 1 and 2, write-back and raw, and a WG phase (batch 2) whose
input exceeds the PE scratchpad (chunked, reloaded during the job) -- each result equal to the
golden model's phase; bad calls raise before anything is sent."""

import cocotb
import numpy as np

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.sim.host.driver import Driver
from sparseforge.sim.reference import golden
from sparseforge.sim.testkit.cocotb_streams import env_params


def _case(rng, cfg, cin, cout, hw, k, nm):
    lim = 1 << (cfg.data_width - 4)
    x = rng.integers(-lim, lim, (1, cin, hw, hw)) * (rng.random((1, cin, hw, hw)) < 0.5)
    w = rng.integers(-lim, lim, (cout, cin, k, k))
    if nm is None:
        fwd = bwd = np.ones(w.shape, bool)
    else:
        fwd, bwd = golden.bdwp_masks(w, nm[0], nm[1])
    return x, w, fwd, bwd


@cocotb.test()
async def run_phase_equals_golden(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    drv = await Driver.start(dut, cfg)
    rng = np.random.default_rng(p["seed"])
    dut._log.info(f"seed={p['seed']} config={cfg.name}")
    wb = lambda a: golden.writeback(a, cfg.frac_bits, cfg.data_width)      # noqa: E731
    for stride, pad, raw in ((1, 1, False), (2, 1, False), (1, 0, True)):
        x, w, fwd, bwd = _case(rng, cfg, p["cin"], p["cout"], p["hw"], 3, (2, 4))
        y = await drv.run_phase("fp", x=x, w=w, mask=fwd, stride=stride, padding=pad, raw=raw)
        ref = golden.conv2d_forward(x, w * fwd, stride, pad)
        assert np.array_equal(y, ref if raw else wb(ref)), f"fp stride {stride} raw {raw}"
        lp = drv.last_phase
        assert lp["phase"] == "fp" and lp["cycles"] > 0 and lp["array_cycles"] > 0
        # write-back results run through the on-chip data plane when the core has one (the
        # host sends one dp packet; the tensors go through the card memory); raw ones (wider
        # than a buffer element) through the host-fed streams
        dma = cfg.data_plane == "dma" and not raw
        assert lp["data_plane"] == ("dma" if dma else "host-stream"), lp
        if dma:
            assert lp["words_out"] == 0 and lp["card_words_out"] > 0 and lp["dma_beats"] > 0
            # each operand (x, w, the mask packed data_width bits per element) written to
            # the card memory once
            n_mask = -(-w.size // cfg.data_width)
            assert lp["card_words_in"] == sum(-(-n * cfg.data_width // 32)
                                              for n in (x.size, w.size, n_mask))
        else:
            assert lp["words_out"] > 0
        assert lp["words_in"] > 0
        dy = rng.integers(-2000, 2000, y.shape) * (rng.random(y.shape) < 0.4)
        dx = await drv.run_phase("bp", dy=dy, w=w, mask=bwd, x_shape=x.shape, stride=stride,
                                 padding=pad, raw=raw)
        ref = golden.conv2d_backward_input(dy, w * bwd, x.shape, stride, pad)
        assert np.array_equal(dx, ref if raw else wb(ref)), f"bp stride {stride} raw {raw}"
        dw = await drv.run_phase("wg", x=x, dy=dy, w_shape=w.shape, stride=stride, padding=pad,
                                 raw=raw)
        ref = golden.conv2d_backward_weight(x, dy, w.shape, stride, pad)
        assert np.array_equal(dw, ref if raw else wb(ref)), f"wg stride {stride} raw {raw}"
        dut._log.info(f"stride {stride} pad {pad} raw {raw}: fp/bp/wg equal the golden model "
                      f"(last: {lp['cycles']} cycles, array model {lp['array_cycles']})")
    # WG whose scratchpad image exceeds act_buf_depth (batch 2): mapped as chunks of whole
    # planes, each reloaded through its dense packet while the job runs
    from sparseforge.gen.mapper import array as am
    cpc = -(-p["cin"] // cfg.pe_cols)                  # channels per PE column
    hw = p["chunk_hw"]
    assert 2 * cpc * hw * hw > cfg.act_buf_depth >= hw * hw
    for stride, pad in ((1, 1), (2, 0)):
        xb = rng.integers(-2000, 2000, (2, p["cin"], hw, hw)) * (rng.random((2, p["cin"], hw, hw))
                                                                < 0.6)
        ho = (hw + 2 * pad - 3) // stride + 1
        dyb = rng.integers(-2000, 2000, (2, p["cout"], ho, ho)) * (rng.random((2, p["cout"], ho,
                                                                               ho)) < 0.5)
        wsh = (p["cout"], p["cin"], 3, 3)
        job = am.map_array("wg", cfg=cfg, x=xb, dy=dyb, w_shape=wsh, stride=stride, padding=pad)
        chunks = len(job.grid[0][0][0].chunks)
        assert chunks > 1
        dw = await drv.run_phase("wg", x=xb, dy=dyb, w_shape=wsh, stride=stride, padding=pad)
        ref = golden.conv2d_backward_weight(xb, dyb, wsh, stride, pad)
        assert np.array_equal(dw, wb(ref)), f"chunked wg stride {stride}"
        lp = drv.last_phase
        assert lp["array_cycles"] == am.cycles(job).cycles and lp["cycles"] > lp["array_cycles"]
        # the hardware mapper does not chunk: such a phase takes the host-fed path
        assert lp["data_plane"] == "host-stream" and "dma_cycles" not in lp
        dut._log.info(f"chunked WG (batch 2, {hw}x{hw}, {chunks} chunks) stride {stride}: equal "
                      f"to the golden model ({lp['cycles']} cycles, array model "
                      f"{lp['array_cycles']})")
    if cfg.data_plane == "dma":
        # on-chip pruning (CMD_PRUNE): the threshold from g on chip, then g pruned in place
        from sparseforge.gen.numfmt import prune_threshold_params
        for shape, p_rate in (((1, 4, 5, 5), 0.9), ((1, 3, 1, 7), 0.5)):
            g = (rng.normal(0, 400, shape).round().astype(np.int64) *
                 (rng.random(shape) < 0.6))
            k_p, sh = prune_threshold_params(p_rate, g.size)
            seed = int(rng.integers(1, 1 << 32))
            got, tau = await drv.prune_onchip(g, k_p, sh, seed)
            want_tau = golden.prune_threshold_int(g, k_p, sh, cfg.data_width)
            assert tau == want_tau, (tau, want_tau)
            want, _ = golden.stochastic_prune_int(g, want_tau, seed, cfg.data_width)
            assert np.array_equal(got, want), f"prune {shape}"
            lp = drv.last_prune
            from sparseforge.hdl.dp_prune import prune_job_cycles
            # g was loaded right before: its |g| summed on the way in, one pass
            assert lp["summed"]
            assert lp["cycles"] == prune_job_cycles(g.size, cfg.dma_width // cfg.data_width,
                                                    cfg.data_width, summed=True)
            assert lp["elements"] == g.size
            dut._log.info(f"prune_onchip {shape} p={p_rate}: tau {tau}, equal to the golden "
                          f"model ({lp['cycles']} prune cycles, {lp['dma_cycles']} DMA)")
    # bad calls: refused before any packet is sent
    sent = drv.words_in
    for phase, kw, msg in (("xx", {}, "phase must be"),
                           ("fp", {"x": x}, "missing: w"),
                           ("bp", {"dy": dy, "w": w}, "missing: x_shape"),
                           ("wg", {"x": x}, "missing: dy, w_shape")):
        try:
            await drv.run_phase(phase, **kw)
        except ValueError as exc:
            assert msg in str(exc), str(exc)
        else:
            raise AssertionError(f"run_phase({phase!r}, {sorted(kw)}) did not raise")
    assert drv.words_in == sent
