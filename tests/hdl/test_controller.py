"""Schedule controller (hdl/controller.py) in amaranth-sim: the on-chip check of a schedule
binary gives exactly :func:`sparseforge.gen.schedule.validate`'s verdict (every error kind,
random bit flips, random idle gaps in the load stream), and running a compiled schedule drives
the phase controls, the pruner rule and the pre-generation runs of every entry; bad steps
raise their error codes and never hang. The accelerator-level and Verilog (cocotb) checks are
in tests/cocotb_accelerator.py (``accelerator_schedule``) and tests/cocotb_e2e.py."""

import random
import struct
import zlib

import pytest
from amaranth.sim import Simulator

from sparseforge.gen import schedule as gs
from sparseforge.gen.config import preset
from sparseforge.sim.testkit.layer_cases import SMALL_TOP_CFG
from sparseforge.hdl import controller as hc
from sparseforge.hdl import wire
from sparseforge.hdl.wire import STEP_DATA_PLANE
from sparseforge.sim.host import e2e

SMALL = SMALL_TOP_CFG
SEED = 4242


def _words(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def _fix_crc(words):
    body = struct.pack(f"<{len(words) - 1}I", *words[:-1])
    return words[:-1] + [zlib.crc32(body)]


def _code(words, cfg):
    try:
        gs.validate(words, cfg)
    except gs.ScheduleError as e:
        return e.code
    return 0


def _controller(cfg, depth=1024):
    return hc.ScheduleController(depth=depth, config_tag=gs.config_tag(cfg),
                                 config_hash=gs.config_hash(cfg))


def _schedule(cfg=SMALL, name="tiny-cnn", batch=2):
    return gs.build_schedule(e2e.load_net(name, cfg, batch=batch), cfg)


def test_one_home_for_the_binary_format():
    """The controller and the compiler read the format from hdl/wire.py: the same objects."""
    assert (hc.MAGIC, hc.VERSION, hc.HEADER_WORDS, hc.ENTRY_WORDS) == \
        (gs.MAGIC, gs.VERSION, gs.HEADER_WORDS, gs.ENTRY_WORDS) == \
        (wire.SCHED_MAGIC, wire.SCHED_VERSION, wire.SCHED_HEADER_WORDS, wire.SCHED_ENTRY_WORDS)
    assert gs.Op is wire.SchedOp and gs.Flag is wire.SchedFlag
    assert [(o.name, int(o)) for o in gs.Op] == \
        [("FP", 1), ("BP", 2), ("WG", 3), ("PREGEN", 4), ("PRUNE", 5), ("END", 15)]
    assert gs.ERR == {"length": 1, "magic": 2, "version": 3, "checksum": 4, "config": 5,
                      "opcode": 6, "entry": 7}
    assert (hc.ERR_SCHED, hc.ERR_NO_SCHEDULE, hc.ERR_SCHED_END, hc.ERR_SCHED_MISMATCH) == \
        (0x10, 0x20, 0x21, 0x22)
    assert gs.Op.name_of(4) == "PREGEN" and gs.Op.name_of(9) == "op9"
    assert gs.Op.known(15) and not gs.Op.known(0)


def test_crc32_word_is_zlib():
    rng = random.Random(SEED)
    for n in (1, 2, 7, 40):
        words = [rng.getrandbits(32) for _ in range(n)]
        crc = 0xFFFFFFFF
        for w in words:
            crc = hc.crc32_word(crc, w)
        assert crc ^ 0xFFFFFFFF == zlib.crc32(struct.pack(f"<{n}I", *words))


def test_bad_parameters():
    with pytest.raises(ValueError, match="depth"):
        hc.ScheduleController(depth=8, config_tag=0, config_hash=0)
    with pytest.raises(ValueError, match="config_hash"):
        hc.ScheduleController(depth=64, config_tag=0, config_hash=1 << 32)


def _corruptions(words, cfg):
    """(label, words) cases covering every error kind (CRC recomputed where the check under
    test comes after it), plus random single bit flips."""
    n = words[2]
    H, E = gs.HEADER_WORDS, gs.ENTRY_WORDS
    out = [("valid", list(words)), ("empty", []), ("one word", words[:1]),
           ("header only", words[:H]), ("truncated", words[:-1]),
           ("extra word", _fix_crc(words[:-1] + [0, 0])),
           ("magic", [words[0] ^ 1] + words[1:]), ("version", _fix_crc([words[0], 2] + words[2:])),
           ("entry size", _fix_crc(words[:3] + [21] + words[4:])),
           ("total", _fix_crc(words[:4] + [words[4] + 1] + words[5:])),
           ("count", _fix_crc(words[:2] + [n + 1] + words[3:])),
           ("crc", words[:-1] + [words[-1] ^ 0x80000000]),
           ("config tag", _fix_crc(words[:5] + [words[5] ^ 0x100] + words[6:])),
           ("config hash", _fix_crc(words[:6] + [words[6] ^ 1] + words[7:])),
           ("header w7", _fix_crc(words[:7] + [1] + words[8:]))]

    def entry_edit(k, wi, f):
        w = list(words)
        w[H + k * E + wi] = f(w[H + k * E + wi])
        return _fix_crc(w)

    out += [("opcode 0", entry_edit(0, 0, lambda v: v & ~0xFF)),
            ("opcode 9", entry_edit(1, 0, lambda v: (v & ~0xFF) | 9)),
            ("reserved w11", entry_edit(1, 11, lambda v: v | 1 << 30)),
            ("reserved w19", entry_edit(0, 19, lambda v: v | 4)),
            ("flag bit 13", entry_edit(1, 0, lambda v: v | 1 << 29)),
            ("END early", entry_edit(0, 0, lambda v: (v & ~0xFF) | 15)),
            ("END missing", entry_edit(n - 1, 0, lambda v: (v & ~0xFF) | 1)),
            # two bad entries: the first one's code wins (7 before a later opcode 6)
            ("first entry wins", _fix_crc(entry_edit(0, 19, lambda v: 1)[:H + E] +
                                          entry_edit(1, 0, lambda v: v & ~0xFF)[H + E:]))]
    rng = random.Random(SEED)
    for _ in range(24):
        k = rng.randrange(len(words))
        w = list(words)
        w[k] ^= 1 << rng.randrange(32)
        out.append((f"flip word {k}", w))
    return out


def test_load_verdicts_equal_validate():
    """Every corruption: the hardware's ERROR_CODE (0x10 | code) or ``loaded`` equals the
    software ``validate`` verdict; loads arrive with random idle gaps."""
    cfg = SMALL
    full = _schedule(cfg)
    small = gs.Schedule(entries=full.entries[:3] + full.entries[-1:],
                        config_tag=full.config_tag, config_hash=full.config_hash)
    words = _words(small.encode())
    cases = _corruptions(words, cfg)
    cases.append(("too long for the memory", _words(full.encode())))
    dut = _controller(cfg, depth=256)
    expect = [(lab, w, 1 if lab == "too long for the memory" else _code(w, cfg))
              for lab, w in cases]
    assert {c for _, _, c in expect} == {0, 1, 2, 3, 4, 5, 6, 7}
    print(f"seed={SEED}: {len(expect)} binaries, codes "
          f"{sorted({c for _, _, c in expect})}")
    got = []

    async def tb(ctx):
        rng = random.Random(SEED)
        for lab, w, _ in expect:
            ctx.set(dut.load_begin, 1)
            ctx.set(dut.load_len, len(w))
            await ctx.tick()
            ctx.set(dut.load_begin, 0)
            errs = []
            for v in w:
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.load.valid, 1)
                ctx.set(dut.load.payload, v)
                await ctx.tick()
                ctx.set(dut.load.valid, 0)
                if ctx.get(dut.err):
                    errs.append(ctx.get(dut.err_code))
            for _ in range(3):
                await ctx.tick()
                if ctx.get(dut.err):
                    errs.append(ctx.get(dut.err_code))
            got.append((lab, ctx.get(dut.loaded), errs))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    bad = []
    for (lab, w, code), (_, loaded, errs) in zip(expect, got):
        want = (1, []) if code == 0 else (0, [hc.ERR_SCHED | code])
        if (loaded, errs) != want:
            bad.append(f"{lab}: loaded={loaded} errors={errs}, validate code {code}")
    assert not bad, "\n".join(bad)


def _expected_steps(sched):
    """(opcode, first entry index) of every step the host takes: one per phase, one per
    PREGEN chunk entry."""
    steps, k = [], 0
    while sched.entries[k].opcode != gs.Op.END:
        e = sched.entries[k]
        steps.append((e.opcode, k))
        k += 1 if e.opcode == gs.Op.PREGEN else max(1, e.n_tiles)
    return steps


@pytest.mark.parametrize("name,cfg,batch", [("tiny-cnn", SMALL, 2), ("digits-cnn",
                                                                       preset("tiny"), 1)])
def test_run_schedule(name, cfg, batch):
    """Start, then every step of the compiled schedule: the controls equal the entry's fields,
    PREGEN pulses pg_go with its chunk's groups and waits while pg_busy; a step waits for
    dp_idle; wrong opcode, a step at END and a step with nothing running raise their codes
    and are consumed. Every other PREGEN step and every PRUNE step carry STEP_DATA_PLANE (the
    data plane runs them): they advance the same way, but such a PREGEN pulses no pg_go."""
    sched = _schedule(cfg, name, batch)
    steps = _expected_steps(sched)
    phases = [p for p in sched.phases() if p[0] != "END"]
    assert [gs.Op.name_of(o) for o, _ in steps if o != gs.Op.PREGEN] == \
        [p[0] for p in phases if p[0] != "PREGEN"]
    words = _words(sched.encode())
    dut = _controller(cfg, depth=1024)
    log = []

    async def wait_err(ctx, n=30):
        for _ in range(n):
            await ctx.tick()
            if ctx.get(dut.err):
                return ctx.get(dut.err_code)
        return None

    async def do_step(ctx, op, *, busy_cycles=0, idle_delay=0):
        """Present a step; returns (cycles until accepted, error code or None)."""
        ctx.set(dut.step.valid, 1)
        ctx.set(dut.step.payload, op)
        ctx.set(dut.dp_idle, idle_delay == 0)
        ctx.set(dut.pg_busy, busy_cycles > 0)
        n, err = 0, None
        while True:
            if n == idle_delay:
                ctx.set(dut.dp_idle, 1)
            if n == busy_cycles:
                ctx.set(dut.pg_busy, 0)
            _, _, ready = await ctx.tick().sample(dut.step.ready)
            if ctx.get(dut.err):
                err = ctx.get(dut.err_code)
            n += 1
            if ready:
                break
            assert n < 200, "step never accepted"
        ctx.set(dut.step.valid, 0)
        await ctx.tick()
        if ctx.get(dut.err):
            err = ctx.get(dut.err_code)
        return n, err

    async def tb(ctx):
        # a step before any schedule: consumed, ERR_NO_SCHEDULE
        assert await do_step(ctx, gs.Op.FP) == (1, hc.ERR_NO_SCHEDULE)
        ctx.set(dut.start, 1)                       # start with nothing loaded
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.err) and ctx.get(dut.err_code) == hc.ERR_NO_SCHEDULE
        ctx.set(dut.load_begin, 1)
        ctx.set(dut.load_len, len(words))
        await ctx.tick()
        ctx.set(dut.load_begin, 0)
        for v in words:
            ctx.set(dut.load.valid, 1)
            ctx.set(dut.load.payload, v)
            await ctx.tick()
        ctx.set(dut.load.valid, 0)
        assert await wait_err(ctx, 3) is None and ctx.get(dut.loaded)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick()
        assert ctx.get(dut.running) and ctx.get(dut.pc) == 0 and not ctx.get(dut.at_end)
        # the host out of step: a wrong opcode is refused, the position stays
        wrong = gs.Op.WG if steps[0][0] != gs.Op.WG else gs.Op.BP
        assert (await do_step(ctx, wrong))[1] == hc.ERR_SCHED_MISMATCH
        assert ctx.get(dut.pc) == 0
        pg_seen = 0
        for k, (op, idx) in enumerate(steps):
            e = sched.entries[idx]
            busy = 15 if op == gs.Op.PREGEN else 0   # longer than the fetch
            idle_delay = 5 if k % 3 == 1 else 0
            flag = (op == gs.Op.PRUNE) or (op == gs.Op.PREGEN and k % 2 == 0)
            if flag and op == gs.Op.PREGEN:
                dp_pregen.append(idx)
            n, err = await do_step(ctx, op | (STEP_DATA_PLANE if flag else 0),
                                   busy_cycles=busy, idle_delay=idle_delay)
            assert err is None, (k, op, hex(err))
            assert n >= 11 + idle_delay and n > busy, (k, n)
            if op in (gs.Op.FP, gs.Op.BP, gs.Op.WG):
                got = {f: ctx.get(getattr(dut, f)) for f in
                       ("mode", "stride2", "pad", "out_len", "in_len", "skip_zero")}
                want = {"mode": op - 1, "stride2": int(e.stride == 2), "pad": e.padding,
                        "out_len": e.w if op == gs.Op.BP else e.wo, "in_len": e.w,
                        "skip_zero": int(bool(e.flags & gs.Flag.SKIP_ZERO))}
                assert got == want, (k, e)
            elif op == gs.Op.PRUNE:
                assert (ctx.get(dut.k_p), ctx.get(dut.shift)) == (e.prune_kp, e.prune_shift)
            else:
                pg_seen += 1
                assert (ctx.get(dut.nm_n), ctx.get(dut.pg_count)) == (e.nm_n, e.nr)
            nxt = steps[k + 1][1] if k + 1 < len(steps) else len(sched.entries) - 1
            assert ctx.get(dut.pc) == nxt
            log.append((gs.Op.name_of(op), e.layer, n))
        assert ctx.get(dut.at_end)
        assert (await do_step(ctx, gs.Op.FP))[1] == hc.ERR_SCHED_END
        assert pg_seen == sum(1 for e in sched.entries if e.opcode == gs.Op.PREGEN)

    # count pg_go pulses independently of the step loop
    pulses = []
    dp_pregen = []                # entries of PREGEN steps the data plane ran (no pulse)

    async def watch(ctx):
        async for _, _, go, cnt in ctx.tick().sample(dut.pg_go, dut.pg_count):
            if go:
                pulses.append(cnt)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert dp_pregen and pulses == [e.nr for k, e in enumerate(sched.entries)
                                    if e.opcode == gs.Op.PREGEN and k not in dp_pregen]
    print(f"{name} on {cfg.name}: {len(steps)} steps over {len(sched.entries)} entries "
          f"({len(words)} words); cycles per step {[n for *_, n in log]}")
