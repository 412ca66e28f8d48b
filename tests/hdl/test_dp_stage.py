"""StageUnit (hdl/dp_stage.py) in amaranth-sim against the golden step's between-layer stages
(``sim/host/e2e.py``: ReLU, ``maxpool_forward`` / ``maxpool_backward``, ``g = d * (z > 0)``, the
loss gradient ``sat(z - one * onehot)``): word-memory models serve its OUT and ACT read ports
and take its writes; after a FWD then a BWD (or a LOSS) the whole ACT / GRAD buffers are
compared (the written range equal to the golden tensors in their layouts, every other element
unchanged) and the busy cycles equal :func:`stage_cycles`. Seeds are fixed and printed."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.hdl.dp_stage import (STAGE_BWD, STAGE_FWD, STAGE_LOSS, StageUnit,
                                      stage_cycles, stage_lanes, stage_strides)
from sparseforge.sim.host.e2e import maxpool_backward, maxpool_forward


def z_layout(z, zfc):
    """``z`` (B, C, H, W) flattened in the unit's ``z`` layout."""
    return (z[:, :, 0, 0].T if zfc else z).reshape(-1)


def n_layout(a, nfc):
    """The pooled ``a`` (B, C, Ho, Wo) flattened in the next layer's input layout."""
    return (a.reshape(a.shape[0], -1).T if nfc else a).reshape(-1)


def golden_stages(z, d, lgk, relu, dw):
    """``(a, g)``: the golden FWD output and the BWD gradient for ``d`` (pooled shape)."""
    k = 1 << lgk
    r = np.maximum(z, 0) if relu else z
    if k > 1:
        a, arg = maxpool_forward(r, k, k)
        gd = maxpool_backward(d, arg, r.shape, k, k, dw)
    else:
        a, gd = r, d
    g = gd * (z > 0) if relu else gd
    return a, g


class Mem:
    """A word memory of ``epw`` signed ``dw``-bit lanes (element view ``e``)."""

    def __init__(self, elems, epw, dw):
        self.e = [int(v) for v in elems]
        self.epw, self.dw = epw, dw

    def word(self, a):
        w = 0
        for l in range(self.epw):
            idx = a * self.epw + l
            v = self.e[idx] if idx < len(self.e) else 0
            w |= (v & ((1 << self.dw) - 1)) << (l * self.dw)
        return w

    def write(self, a, data, en):
        for l in range(self.epw):
            if en >> l & 1:
                v = (data >> (l * self.dw)) & ((1 << self.dw) - 1)
                self.e[a * self.epw + l] = v - (1 << self.dw) if v >> (self.dw - 1) else v


def run_stages(unit, jobs, out, act, grad):
    """Run ``jobs`` (dicts of the unit's inputs) one after the other; returns each job's busy
    cycles and its ``bad_label``."""
    res = []

    async def bench(ctx):
        for job in jobs:
            for k, v in job.items():
                ctx.set(getattr(unit, k), v)
            ctx.set(unit.start, 1)
            await ctx.tick()
            ctx.set(unit.start, 0)
            busy = 0
            while True:
                oa, aa = ctx.get(unit.out_raddr), ctx.get(unit.act_raddr)
                en, wa, wd = ctx.get(unit.wr_en), ctx.get(unit.wr_addr), ctx.get(unit.wr_data)
                wact, wgrad = ctx.get(unit.wr_act), ctx.get(unit.wr_grad)
                b = ctx.get(unit.busy)
                await ctx.tick()
                ctx.set(unit.out_rdata, out.word(oa))
                ctx.set(unit.act_rdata, act.word(aa))
                if en:
                    assert wact != wgrad, "a write goes to exactly one buffer"
                    (act if wact else grad).write(wa, wd, en)
                if not b:
                    break
                busy += 1
                assert busy < 100_000, "the stage unit did not finish"
            res.append((busy, ctx.get(unit.bad_label)))

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res


def job_of(op, *, relu, lgk, b, c, h, w, zfc, nfc, src, dst, aux=0, keep=0, one=256):
    st = stage_strides(b, c, h, w, lgk, zfc, nfc)
    return {"op": op, "relu": int(relu), "lgk": lgk, "b": b, "c": c, "ho": h >> lgk,
            "wo": w >> lgk, "w": w, "src": src, "dst": dst, "aux": aux, "keep": keep,
            "one": one, "conv_layouts": int(not zfc and not nfc), **st}


def lanes_of(job, epw, zfc, nfc):
    return stage_lanes(job["op"], lgk=job["lgk"], w=job["w"], zfc=zfc, nfc=nfc,
                       src=job["src"], dst=job["dst"], keep=job["keep"], epw=epw)


CASES = [
    # (seed, epw, b, c, h, w, lgk, relu, zfc, nfc, aligned) -- aligned: src, dst, keep and
    # the gradient on word boundaries (vector mode where the layout allows it)
    (301, 2, 1, 3, 4, 6, 1, True, False, False, False),   # conv -> conv, 2x2 pool, scalar
    (302, 2, 2, 2, 4, 4, 1, True, False, True, True),     # conv -> fc, batch 2 (scalar)
    (303, 4, 1, 2, 8, 8, 2, True, False, False, False),   # 4x4 pool, scalar
    (304, 1, 3, 5, 1, 1, 0, True, True, True, True),      # fc -> fc (ReLU only)
    (305, 2, 1, 2, 4, 4, 1, False, False, False, False),  # pool without ReLU
    (306, 2, 2, 3, 2, 2, 0, True, False, False, False),   # ReLU only, conv
    # vector mode: a word of epw elements per cycle
    (311, 2, 1, 3, 4, 6, 1, True, False, False, True),    # 2x2 pool, 2 lanes
    (312, 4, 2, 2, 4, 8, 1, True, False, False, True),    # 2x2 pool, 4 lanes, batch 2
    (313, 4, 1, 2, 8, 8, 2, True, False, False, True),    # 4x4 pool, 4 lanes
    (314, 4, 1, 3, 2, 8, 0, True, False, False, True),    # ReLU only, 4 lanes
    (315, 8, 1, 2, 4, 8, 1, False, False, False, True),   # 8 lanes, pool without ReLU
    (316, 2, 1, 2, 4, 4, 2, True, False, False, True),    # k = 4 > 2 lanes: scalar
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"seed{c[0]}")
def test_stage_fwd_bwd_matches_golden(case):
    seed, epw, B, C, H, W, lgk, relu, zfc, nfc, aligned = case
    dw = 16
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    k = 1 << lgk
    z = rng.integers(-300, 300, (B, C, H, W))
    z[rng.random(z.shape) < 0.2] = 0
    if k > 1:                             # ties inside windows: the first maximum wins
        z[:, :, 0, 1] = z[:, :, 0, 0]
    d = rng.integers(-(1 << 15), 1 << 15, (B, C, H // k, W // k))
    a, g = golden_stages(z, d, lgk, relu, dw)
    n, npool = z.size, a.size
    off = 0 if aligned else 1
    src, dst, dbase, keep = 2 * epw + off, 3 * epw + off, epw + n + off, 4 * epw + off
    out = Mem(np.concatenate([rng.integers(-9, 9, src), z_layout(z, zfc),
                              rng.integers(-9, 9, 64)]), epw, dw)
    # d (the next layer's BP result) sits elsewhere in OUT, in the next layer's layout
    dlay = n_layout(d, nfc)
    out.e += [0] * (-len(out.e) % epw + off)
    d_at = len(out.e)
    out.e += [int(v) for v in dlay] + [0] * (epw * 2)
    act = Mem(rng.integers(-9, 9, dst + npool + 16), epw, dw)
    grad = Mem(rng.integers(-9, 9, dbase + n + 16), epw, dw)
    act0, grad0 = list(act.e), list(grad.e)
    unit = StageUnit(epw=epw, data_width=dw, addr_width=12, keep_elems=256)
    geo = dict(relu=relu, lgk=lgk, b=B, c=C, h=H, w=W, zfc=zfc, nfc=nfc, keep=keep)
    jobs = [job_of(STAGE_FWD, src=src, dst=dst, **geo),
            job_of(STAGE_BWD, src=d_at, dst=dbase, **geo)]
    lanes = [lanes_of(j, epw, zfc, nfc) for j in jobs]
    print(f"lanes {lanes}")
    assert (lanes == [epw, epw]) == (case[0] > 310 and case[0] != 316 or epw == 1)
    res = run_stages(unit, jobs, out, act, grad)
    exp_act = list(act0)
    exp_act[dst:dst + npool] = [int(v) for v in n_layout(a, nfc)]
    assert act.e == exp_act
    exp_grad = list(grad0)
    exp_grad[dbase:dbase + n] = [int(v) for v in z_layout(g, zfc)]
    assert grad.e == exp_grad
    assert [r[0] for r in res] == [stage_cycles(STAGE_FWD, B, C, H, W, lanes[0]),
                                   stage_cycles(STAGE_BWD, B, C, H, W, lanes[1])]


@pytest.mark.parametrize("bad", [False, True])
def test_stage_loss_matches_golden(bad):
    seed, epw, dw, B, C, one = 311, 2, 16, 3, 10, 256
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    logits = rng.integers(-(1 << 15), 1 << 15, (B, C))
    logits[0, :] = -(1 << 15)                 # saturates at the label
    labels = rng.integers(0, C, B)
    if bad:
        labels[1] = C
    onehot = np.zeros((B, C), np.int64)
    for b_, l_ in enumerate(labels):
        if l_ < C:
            onehot[b_, l_] = one
    exp = np.clip(logits - onehot, -(1 << 15), (1 << 15) - 1)
    src, aux, dst = 4, 6, 2
    out = Mem([0] * src + list(logits.T.reshape(-1)) + [0] * 8, epw, dw)
    act = Mem([7] * aux + list(labels) + [0] * 8, epw, dw)
    grad = Mem(rng.integers(-9, 9, dst + B * C + 8), epw, dw)
    grad0 = list(grad.e)
    unit = StageUnit(epw=epw, data_width=dw, addr_width=10, keep_elems=16)
    res = run_stages(unit, [job_of(STAGE_LOSS, relu=False, lgk=0, b=B, c=C, h=1, w=1,
                                   zfc=True, nfc=True, src=src, dst=dst, aux=aux, one=one)],
                     out, act, grad)
    grad0[dst:dst + B * C] = [int(v) for v in exp.T.reshape(-1)]
    assert grad.e == grad0
    assert res == [(stage_cycles(STAGE_LOSS, B, C, 1, 1), int(bad))]
