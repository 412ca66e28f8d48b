"""Top level (AXI4-Lite + AXI4-Stream router, PE array, pruner, pre-generation) through the host
driver: cocotb under Verilator with the tiny preset and under Icarus with a smaller array."""

import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.lib import wiring

from sparseforge.gen.config import preset
from sparseforge.sim.testkit.layer_cases import SMALL_TOP_CFG
from sparseforge.gen.schedule import config_hash, config_tag
from sparseforge.hdl import wire
from sparseforge.hdl.accelerator import Accelerator
from sparseforge.sim.host.driver import PacketCodec

TINY = preset("tiny")
SMALL = SMALL_TOP_CFG


def test_codec_roundtrip_and_errors():
    codec = PacketCodec(SMALL)
    pk = codec.packet("x_r0", [1, 2, 3])
    assert pk[0] >> 24 == codec.dest_id["x_r0"] and pk[0] & 0xFFFFFF == 3
    with pytest.raises(ValueError, match="does not fit"):
        codec.packet("x_r0", [1 << 40])
    with pytest.raises(ValueError, match="unknown CTRL fields"):
        codec.ctrl_packet(bogus=1)
    with pytest.raises(ValueError, match="unknown source"):
        codec.parse_output([0xFF000001, 0])


def test_codec_builds_no_hardware(monkeypatch):
    """The packet tables are pure functions of the configuration (hdl/wire.py): making a
    PacketCodec constructs no Component."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"PacketCodec constructed a {type(self).__name__}")
    monkeypatch.setattr(wiring.Component, "__init__", refuse)
    codec = PacketCodec(SMALL)
    assert codec.dests[wire.DEST_CTRL].name == "ctrl" and codec.dests[wire.DEST_END].name == "end"


@pytest.mark.parametrize("cfg", [SMALL, TINY], ids=lambda c: c.name)
def test_wire_tables_match_the_hardware(cfg):
    """Every destination and source of hdl/wire.py has the payload shape of the block port it
    reaches (PE array, pruner, pre-generation, schedule controller)."""
    acc = Accelerator(cfg, config_tag=config_tag(cfg), config_hash=config_hash(cfg))
    Fragment.get(acc, None)               # elaborates (and so uses) every block
    arr, ctl = acc.array, acc.ctl
    targets = {"x": arr.x, "taps": arr.taps, "dense": arr.dense, "drain": arr.drain,
               "prune": acc.pruner.i, "pregen": acc.pregen.i, "wbuf": acc.pregen.i,
               "sched": ctl.load, "step": ctl.step, "col": arr.o, "out_prune": acc.pruner.o,
               "out_pregen": acc.pregen.o}
    if acc.dp is not None:
        targets["dp"] = acc.dp.cmd
    if acc.tab is not None:          # the command table's call and entry streams
        targets.update(dpcall=acc.tab.call, dptab=acc.tab.tab)
        assert Shape.cast(acc.tab.cmd_out.payload.shape()) == \
            Shape.cast(acc.dp.cmd.payload.shape())

    def port(kind, index):
        p = targets[kind]
        for k in index:
            p = p[k]
        return p

    dests = wire.destinations(cfg)
    assert [d.id for d in dests] == list(range(len(dests)))
    for d in dests:
        if d.kind in ("ctrl", "pgctl", "end"):
            continue
        want = Shape.cast(port(d.kind, d.index).payload.shape())
        assert Shape.cast(d.shape) == want, d
    for s in wire.sources(cfg):
        kind = s.kind if s.kind == "col" else f"out_{s.kind}"
        assert Shape.cast(s.shape) == Shape.cast(port(kind, s.index).payload.shape()), s
        assert s.words == wire.packet_words(s.width)
    lay = wire.pe_layouts(cfg)
    assert lay["taps"] == arr.taps[0][0].payload.shape() and lay["x"] == arr.x[0].payload.shape()
    assert wire.split_header(wire.header(5, 7)) == (5, 7)
    with pytest.raises(ValueError, match="does not fit"):
        wire.header(2, 1 << 24)


@pytest.mark.parametrize("test", ["accelerator_layers", "accelerator_prune_and_pregen",
                                  "accelerator_errors_and_soft_reset",
                                  "accelerator_strict_framing",
                                  "accelerator_pregen_overlaps_wg", "accelerator_schedule"])
def test_accelerator_cocotb(sim, cocotb_run, test):
    cfg = TINY if sim == "verilator" else SMALL
    params = {"config": cfg.to_dict(), "seed": 900, "cin": 4, "cout": 4,
              "hw": 6 if sim == "verilator" else 5,
              "layers": [["fp", [2, 4], False], ["bp", None, True], ["wg", None, False]]}
    print(f"seed=900 sim={sim} config={cfg.name}")
    n = cocotb_run("accelerator", sim, "cocotb_accelerator", config=cfg, params=params,
                   testcase=test)
    assert n == 1


def test_router_timing_and_errors():
    """PacketRouter alone (amaranth-sim), words offered every cycle: a beat of ``w`` bits
    costs ``ceil(w / 32) + 1`` cycles (i.ready low in PRESENT) and reaches a registered
    destination one cycle after PRESENT; an unknown destination pulses ERR_BAD_DEST and the
    words up to tlast are discarded; tlast inside a packet pulses ERR_EARLY_TLAST."""
    from amaranth.sim import Simulator

    from sparseforge.hdl.router import PacketRouter
    codec = PacketCodec(SMALL)
    dut = PacketRouter(SMALL)
    x = codec.packet("x_r0", [5, 6])
    words = [(w, k == len(x) - 1) for k, w in enumerate(x)]
    words += [(0xEE000002, 0), (1, 0), (2, 1)]                       # bad destination
    words += [(x[0], 0), (x[1], 1)]                                  # 2 beats, tlast on 1st
    log = []

    async def bench(ctx):
        ctx.set(dut.x[0].ready, 1)
        k = 0
        for cycle in range(20):
            if k < len(words):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": words[k][0], "last": words[k][1]})
            else:
                ctx.set(dut.i.valid, 0)
            _, _, rdy, xv, xp, err, code = await ctx.tick().sample(
                dut.i.ready, dut.x[0].valid, dut.x[0].payload.as_value(), dut.err, dut.err_code)
            if rdy and k < len(words):
                k += 1
            log.append((cycle, rdy, xv, xp, err, code))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    ready = [c for c, r, *_ in log if r]
    # header 0, beat 5 word 1, PRESENT 2 (not ready), word 3, PRESENT 4, then the bad header 5
    assert ready[:4] == [0, 1, 3, 5], log
    assert [(c, p) for c, _, v, p, _, _ in log if v] == [(3, 5), (5, 6)], log
    errs = [(c, code) for c, *_, e, code in log if e]
    assert errs == [(5, wire.ERR_BAD_DEST), (9, wire.ERR_EARLY_TLAST)], log
