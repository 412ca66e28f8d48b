"""PregenUnit (hdl/dp_pregen.py) in amaranth-sim against ``golden.bdwp_masks``: a weight
memory model serves its element read ports (data the cycle after ``en``), a word memory takes
its mask writes; after the job both packed masks (forward from ``mf_word``, backward right
after it) equal the golden masks bit for bit, every other mask word is unchanged, no word is
written twice, ``overflow`` stays 0, and the cycles stay within ``pregen_job_cycles``. Seeds
are fixed and printed."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from sparseforge.hdl.dp_pregen import PregenUnit, kk_values, pregen_job_cycles
from sparseforge.sim.reference import golden


def run_unit(w, n, *, m=8, lanes=4, word_bits=32, k_max=3, w_base=5, mf_word=3, depth=None,
             seed=0):
    cout, cin, kh, kw = w.shape
    numel = w.size
    words = -(-numel // word_bits)
    depth = depth or mf_word + 2 * words + 4
    unit = PregenUnit(m=m, n_max=m, data_width=16, lanes=lanes, addr_width=16,
                      mask_word_width=max(1, (depth - 1).bit_length()), word_bits=word_bits,
                      k_max=k_max)
    rng = np.random.default_rng(seed)
    wmem = list(rng.integers(-30000, 30000, w_base + numel + 8))
    wmem[w_base:w_base + numel] = [int(v) for v in w.ravel()]
    init = [int(v) for v in rng.integers(0, 1 << word_bits, depth, dtype=np.uint64)]
    mmem = list(init)
    writes = {}
    res = {}

    async def bench(ctx):
        for name, v in (("w_base", w_base), ("cout", cout), ("cin", cin), ("kk", kh * kw),
                        ("n", n), ("mf_word", mf_word)):
            ctx.set(getattr(unit, name), v)
        ctx.set(unit.start, 1)
        await ctx.tick()
        ctx.set(unit.start, 0)
        cycles = 1
        pending = [None] * unit.lanes
        while True:
            for p in range(unit.lanes):
                ctx.set(unit.rd_data[p], pending[p] if pending[p] is not None else 0)
            en = [ctx.get(unit.rd_en[p]) for p in range(unit.lanes)]
            addr = [ctx.get(unit.rd_addr[p]) for p in range(unit.lanes)]
            we, wa, wd = ctx.get(unit.wr_en), ctx.get(unit.wr_addr), ctx.get(unit.wr_data)
            busy = ctx.get(unit.busy)
            await ctx.tick()
            for p in range(unit.lanes):
                if en[p]:
                    assert 0 <= addr[p] < len(wmem), addr[p]
                    pending[p] = int(wmem[addr[p]])
            if we:
                assert wa < depth, wa
                writes[wa] = writes.get(wa, 0) + 1
                mmem[wa] = wd
            if not busy:
                break
            cycles += 1
            assert cycles < 20 * numel + 2000, "the pregen unit did not finish"
        res["cycles"] = cycles - 1
        res["overflow"] = ctx.get(unit.overflow)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return unit, init, mmem, writes, res, words


def unpack(mmem, word, nbits, word_bits):
    bits = []
    for k in range(-(-nbits // word_bits)):
        v = mmem[word + k]
        bits += [(v >> b) & 1 for b in range(word_bits)]
    return np.array(bits[:nbits], bool), bits[nbits:]


CASES = [  # (cout, cin, kh, kw), n, m, lanes, word_bits, k_max, seed
    ((32, 256, 1, 1), 2, 8, 4, 32, 3, 1),      # the digits CNN's fc1
    ((16, 8, 3, 3), 2, 8, 4, 32, 3, 2),        # its conv2
    ((16, 16, 3, 3), 1, 8, 2, 32, 3, 3),
    ((8, 8, 2, 3), 3, 4, 1, 32, 3, 4),
    ((16, 64, 1, 1), 2, 4, 8, 64, 3, 5),       # a row exactly one word
    ((8, 16, 5, 5), 2, 8, 4, 32, 5, 6),
    ((16, 8, 2, 2), 4, 8, 3, 32, 3, 7),
    ((32, 256, 1, 1), 2, 8, 8, 32, 3, 8),      # fc1 with a group per cycle (tiny's 8 lanes)
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-n{c[1]}m{c[2]}-lanes{c[3]}-wb{c[4]}"
                                              for c in CASES])
def test_pregen_unit_matches_golden(case):
    shape, n, m, lanes, wb, k_max, seed = case
    print(f"seed={seed} shape={shape} {n}:{m} lanes={lanes} word_bits={wb}")
    assert shape[1] * shape[2] * shape[3] >= wb          # the backward rows' rule
    rng = np.random.default_rng(seed)
    w = rng.integers(-3000, 3000, shape)
    w[rng.random(shape) < 0.1] = 0                       # ties among zeros
    w.ravel()[:4] = [-32768, 32767, 5, -5]               # extremes and a magnitude tie
    mf = 3
    unit, init, mmem, writes, res, words = run_unit(w, n, m=m, lanes=lanes, word_bits=wb,
                                                    k_max=k_max, mf_word=mf, seed=seed)
    fwd, bwd = golden.bdwp_masks(w, n, m)
    got_f, pad_f = unpack(mmem, mf, w.size, wb)
    got_b, pad_b = unpack(mmem, mf + words, w.size, wb)
    assert np.array_equal(got_f, fwd.ravel()), "forward mask"
    assert np.array_equal(got_b, bwd.ravel()), "backward mask"
    assert not any(pad_f) and not any(pad_b)            # bits past the tensor: zero
    region = range(mf, mf + 2 * words)
    assert sorted(writes) == list(region), "every mask word written once, nothing else"
    assert all(v == 1 for v in writes.values())
    assert all(mmem[k] == init[k] for k in range(len(mmem)) if k not in region)
    assert res["overflow"] == 0
    assert res["cycles"] <= pregen_job_cycles(w.size, m, unit.lanes)
    print(f"{w.size} weights: {res['cycles']} cycles (bound "
          f"{pregen_job_cycles(w.size, m, unit.lanes)})")


def test_kk_values():
    assert kk_values(3) == [1, 2, 3, 4, 6, 9]
    assert kk_values(1) == [1]
