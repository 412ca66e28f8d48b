"""cocotb smoke test of the emitted ``array_mapper``: one random layer (FP or WG) run by the
mapper against Python memory models of its read ports (Verilog ``act_rd__{i}__*``,
``dense_rd__{j}__*``, ``w_rd__{i}__{j}__*``, ``m_rd__{i}__{j}__*``: ``data`` one cycle after an
``en`` cycle, held otherwise); every output stream (``x__{i}``, ``taps__{i}__{j}``,
``dense__{i}__{j}``, ``drain__{j}``) is taken under a back-pressure pattern, and the collected
beats must equal the reference mapper's (``reference_streams`` of
tests/hdl/test_array_mapper.py) beat for beat; every read address must lie inside the
memory image."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from sparseforge.gen.config import AcceleratorConfig
from sparseforge.hdl.array_mapper import job_layout
from sparseforge.sim.testkit.amaranth_streams import pack_beats
from sparseforge.sim.testkit.cocotb_streams import env_params
from sparseforge.sim.testkit.patterns import make_pattern
from test_array_mapper import make_layer, reference_streams


@cocotb.test()
async def array_mapper_layer(dut):
    p = env_params()
    cfg = AcceleratorConfig.from_dict(p["config"])
    seed = p["seed"]
    job, _, fields, mems, _ = make_layer(p["mode"], cfg, **p["layer"], seed=seed)
    want = reference_streams(job)
    R, C = cfg.pe_rows, cfg.pe_cols
    name = {("x", i): f"x__{i}" for i in range(R)}
    name.update({("taps", i, j): f"taps__{i}__{j}" for i in range(R) for j in range(C)})
    name.update({("drain", j): f"drain__{j}" for j in range(C)})
    name.update({("dense", i, j): f"dense__{i}__{j}" for i in range(R) for j in range(C)})
    reads = [(f"act_rd__{i}", "act") for i in range(R)]
    reads += [(f"dense_rd__{j}", "act") for j in range(C)]
    reads += [(f"{k}_rd__{i}__{j}", k) for k in ("w", "m") for i in range(R) for j in range(C)]
    image = {k: dict((b + n, int(v)) for n, v in enumerate(vals))
             for k, (b, vals) in mems.items()}
    widths = {k: (cfg.data_width if k != "m" else 1) for k in mems}

    Clock(dut.clk, 10, unit="ns").start()
    dut.start.value = 0
    # A synchronous read port's data register holds its last value while ``en`` is low and
    # starts at 0 (amaranth.lib.memory.ReadPort): model that, else Icarus reads 'z' from
    # these undriven inputs until each port's first read.
    for port, _ in reads:
        getattr(dut, f"{port}__data").value = 0
    for k in want:
        getattr(dut, f"{name[k]}__ready").value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.job.value = pack_beats(job_layout(len(dut.act_rd__0__addr)), [fields])[0]
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0

    pats = {k: make_pattern(p["sink"], seed + n) for n, k in enumerate(want)}
    got = {k: [] for k in want}
    pending = []                 # (port, value) reads to present after the coming edge
    oob = []
    n = 0
    while True:
        for port, v in pending:
            getattr(dut, f"{port}__data").value = v
        rdy = {k: next(pats[k]) for k in want}
        for k in want:
            getattr(dut, f"{name[k]}__ready").value = int(rdy[k])
        await Timer(1, unit="ns")                        # let the combinational paths settle
        pending = []
        for port, mem in reads:
            if int(getattr(dut, f"{port}__en").value):
                addr = int(getattr(dut, f"{port}__addr").value)
                if addr not in image[mem]:
                    oob.append((port, addr))
                v = image[mem].get(addr, 0) & ((1 << widths[mem]) - 1)
                pending.append((port, v))
        for k in want:
            if rdy[k] and int(getattr(dut, f"{name[k]}__valid").value):
                v = getattr(dut, f"{name[k]}__payload").value
                if not v.is_resolvable:
                    raise AssertionError(f"cycle {n}: {name[k]} payload {v} has X/Z bits")
                got[k].append(int(v))
        busy = int(dut.busy.value)
        await FallingEdge(dut.clk)
        n += 1
        if not busy and n > 2:
            break
        assert n < 100_000, "timeout"
    assert oob == [], f"reads outside the tensors: {oob[:5]}"
    for k in want:
        assert got[k] == want[k], f"{name[k]}: {len(got[k])} beats, reference {len(want[k])}"
    dut._log.info(f"seed={seed} {p['mode']}: streams equal the reference "
                  f"({sum(len(v) for v in want.values())} beats, {n} cycles)")
