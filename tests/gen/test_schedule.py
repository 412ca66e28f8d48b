"""Offline schedule: compiler (tiling, phase order, buffers), binary round trip, validation."""

import struct
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseforge.gen.config import preset
from sparseforge.gen.network import NetworkError, load_network, parse_network
from sparseforge.gen.schedule import (buffer_demand, check_fits, ENTRY_WORDS, ERR, HEADER_WORDS, MAGIC, Entry, Flag, Op,
                                      Schedule, ScheduleError, build_schedule, config_hash, decode,
                                      encode, validate)
from sparseforge.hdl.wire import ENTRY_LAYOUT
from sparseforge.sim.reference import golden

# psum_buf_depth pinned at 256: the expected tilings below are worked out for it
CFG = preset("tiny").replace(psum_buf_depth=256)


def _cdiv(a, b):
    return -(-a // b)


# -- coverage checker: every output of every phase computed exactly once, every tile fits ------

def check_schedule(sched, net, cfg, sparse=True):
    D = cfg.psum_buf_depth
    by = {}
    for e in sched.entries:
        by.setdefault((e.opcode, e.layer), []).append(e)
        assert e.psum_words <= D
        assert e.weight_base + e.weight_words <= cfg.weight_buf_depth
        assert e.act_base + e.act_words <= cfg.act_buf_depth
        assert e.psum_base in (0, D) or e.opcode in (Op.PRUNE, Op.PREGEN, Op.END)
    assert sched.entries[-1].opcode == Op.END
    for lay in net.compute:
        for op in (Op.FP, Op.BP):
            ents = by.get((op, lay.id), [])
            if op == Op.BP and lay.id == 0:
                assert not ents, "the first layer has no BP"
                continue
            n_out, n_red, per_ch, row_len = ((lay.cout, lay.cin, lay.ho, lay.wo) if op == Op.FP
                                             else (lay.cin, lay.cout, lay.h, lay.w))
            ncol, nred = _cdiv(n_out, cfg.pe_cols), _cdiv(n_red, cfg.pe_rows)
            seen = Counter()
            for e in ents:
                assert e.weight_words == e.nch * nred * lay.kh * lay.kw
                assert e.psum_words == e.nr * row_len
                assert e.flags & Flag.FIRST and e.flags & Flag.LAST
                for r in range(e.r0, e.r0 + e.nr):
                    assert r < lay.batch * e.nch * per_ch
                    seen[(e.ch0, e.nch, r)] += 1
            groups = sorted({(c0, n) for c0, n, _ in seen})
            assert [c for c0, n in groups for c in range(c0, c0 + n)] == list(range(ncol))
            for c0, n in groups:
                assert all(seen[(c0, n, r)] == 1 for r in range(lay.batch * n * per_ch))
            assert sum(seen.values()) == sum(lay.batch * n * per_ch for _, n in groups)
            assert [e.tile for e in ents] == list(range(len(ents)))
            assert all(e.n_tiles == len(ents) for e in ents)
        # WG: every (local c, n, b) once; FIRST/LAST bracket the batch chunks of one psum tile.
        ents = by[(Op.WG, lay.id)]
        ncol = _cdiv(lay.cin, cfg.pe_cols)
        seen = Counter()
        open_tile = None
        for e in ents:
            assert e.psum_words == e.nch * e.nr * lay.kh * lay.kw
            assert e.act_words == e.nb * e.nch * lay.h * lay.w
            key = (e.ch0, e.nch, e.r0, e.nr)
            if e.flags & Flag.FIRST:
                assert open_tile is None
                open_tile = key
            assert open_tile == key
            if e.flags & Flag.LAST:
                open_tile = None
            for c in range(e.ch0, e.ch0 + e.nch):
                for n in range(e.r0, e.r0 + e.nr):
                    for b in range(e.b0, e.b0 + e.nb):
                        seen[(c, n, b)] += 1
        assert open_tile is None
        assert set(seen) == {(c, n, b) for c in range(ncol) for n in range(lay.cout)
                             for b in range(lay.batch)}
        assert set(seen.values()) == {1}
        # PRUNE / PREGEN.
        bdwp = sparse and lay.bdwp and net.nm is not None
        prune = sparse and lay.prune and net.prune_p > 0
        pg = by.get((Op.PREGEN, lay.id), [])
        assert sum(e.nr for e in pg) == (2 * lay.weight_words // cfg.nm_m if bdwp else 0)
        assert all(e.nr <= cfg.weight_buf_depth and e.weight_words == e.nr for e in pg)
        assert len(by.get((Op.PRUNE, lay.id), [])) == int(prune)
        for e in by.get((Op.FP, lay.id), []) + ents:
            assert bool(e.flags & Flag.BDWP) == bdwp
            assert bool(e.flags & Flag.PRUNE) == prune
            assert bool(e.flags & Flag.SKIP_ZERO) == sparse
            if bdwp:
                assert (e.nm_n, e.nm_m) == net.nm
            if prune:
                assert (e.prune_kp, e.prune_shift) == golden.prune_threshold_params(
                    net.prune_p, lay.batch * lay.cout * lay.ho * lay.wo, shift=e.prune_shift)


def _order(sched):
    return [(op, layer) for op, layer, _ in sched.phases()]


def test_digits_cnn_schedule():
    # at its default batch (64) the digits CNN needs 9,849 words: more than tiny's 4,096-word
    # schedule memory (test_schedule_must_fit_the_schedule_memory); a core with a larger one
    cfg = CFG.replace(sched_depth=1 << 14)
    net = load_network("digits-cnn", cfg)
    s = build_schedule(net, cfg)
    check_schedule(s, net, cfg)
    print(s.phases())
    # FP of every layer; then backwards: PRUNE (conv layers, p = 0.9), BP (not conv1), WG,
    # PREGEN (BDWP layers conv2 and fc1 only).
    assert _order(s) == [
        ("FP", 0), ("FP", 1), ("FP", 2), ("FP", 3),
        ("BP", 3), ("WG", 3),
        ("BP", 2), ("WG", 2), ("PREGEN", 2),
        ("PRUNE", 1), ("BP", 1), ("WG", 1), ("PREGEN", 1),
        ("PRUNE", 0), ("WG", 0),
        ("END", 0)]
    # conv1 FP on the 2x2 tiny array: 8 output channels -> 4 local per column, 64 x 4 x 16 rows
    # of 16 words; a 256-word bank holds 16 rows -> 256 tiles, psum banks alternating.
    fp0 = [e for e in s.entries if e.opcode == Op.FP and e.layer == 0]
    assert len(fp0) == 256 and {e.nr for e in fp0} == {16}
    assert [e.psum_base for e in fp0[:4]] == [0, 256, 0, 256]
    assert fp0[0].flags & Flag.WLOAD and not fp0[1].flags & Flag.WLOAD
    assert (fp0[0].cin, fp0[0].cout, fp0[0].h, fp0[0].w, fp0[0].kh, fp0[0].kw, fp0[0].padding,
            fp0[0].pool_k, fp0[0].pool_s) == (1, 8, 16, 16, 3, 3, 1, 2, 2)
    assert fp0[0].flags & Flag.RELU and fp0[0].flags & Flag.POOL and fp0[0].flags & Flag.INTERLEAVED
    pregen = [e for e in s.entries if e.opcode == Op.PREGEN]
    # PREGEN: 2 * weights / M groups per layer, in chunks of at most weight_buf_depth groups
    by_layer = {}
    for e in pregen:
        assert e.flags & Flag.OVERLAP and e.nr <= CFG.weight_buf_depth
        assert e.r0 == sum(x.nr for x in by_layer.get(e.layer, []))
        by_layer.setdefault(e.layer, []).append(e)
    assert [lay for lay in by_layer] == [2, 1]
    assert [sum(e.nr for e in v) for v in by_layer.values()] == [2 * 256 * 32 // 8,
                                                                 2 * 16 * 8 * 9 // 8]
    assert all([e.tile for e in v] == list(range(len(v))) and
               {e.n_tiles for e in v} == {len(v)} for v in by_layer.values())
    assert decode(encode(s), cfg) == s


def test_schedule_must_fit_the_schedule_memory():
    """validate() with a configuration refuses a binary longer than its sched_depth (the
    controller's length error), before any other check."""
    tiny = preset("tiny")
    net = load_network("digits-cnn", tiny)
    data = encode(build_schedule(net, tiny))
    assert len(data) // 4 == 9849 > tiny.sched_depth == 4096
    with pytest.raises(ScheduleError, match=r"length error \(code 1\): 9849 words do not fit "
                                            r"the schedule memory \(sched_depth=4096 words of "
                                            r"tiny\)"):
        validate(data, tiny)
    assert validate(data)[0] == MAGIC                     # without a configuration: no limit
    small = load_network("digits-cnn", tiny, batch=1)
    assert len(validate(encode(build_schedule(small, tiny)), tiny)) == 989
    with pytest.raises(ValueError, match=r"sched_depth must be in \[16, 1048576\], not 8"):
        tiny.replace(sched_depth=8)


@pytest.mark.parametrize("p", ["tiny", "ecp5", "vcu1525"])
@pytest.mark.parametrize("name", ["digits-cnn", "tiny-cnn"])
@pytest.mark.parametrize("mapping,sparse", [("interleaved", True), ("in-order", False)])
def test_example_schedules_cover_and_fit(p, name, mapping, sparse):
    # the examples at their default batch; the digits CNN at batch 64 needs a larger schedule
    # memory than the presets' 4,096 words (test_schedule_must_fit_the_schedule_memory)
    cfg = preset(p).replace(sched_depth=1 << 16)
    net = load_network(name, cfg)
    s = build_schedule(net, cfg, mapping=mapping, sparse=sparse)
    check_schedule(s, net, cfg, sparse=sparse)
    assert all(bool(e.flags & Flag.INTERLEAVED) == (mapping == "interleaved")
               for e in s.entries if e.opcode != Op.END)
    assert decode(encode(s), cfg) == s


def test_initial_pregen_and_dense_baseline():
    net = load_network("tiny-cnn", CFG)
    s = build_schedule(net, CFG, initial_pregen=True)
    assert _order(s)[:2] == [("PREGEN", 1), ("PREGEN", 2)] and _order(s)[3] == ("FP", 0)
    d = build_schedule(net, CFG, sparse=False)
    assert not any(e.opcode in (Op.PREGEN, Op.PRUNE) for e in d.entries)
    assert not any(e.flags & (Flag.SKIP_ZERO | Flag.BDWP | Flag.PRUNE) for e in d.entries)


def test_tiles_that_cannot_fit_name_the_layer():
    net = {"name": "t", "input": [8, 8, 8], "batch": 2,
           "layers": [{"kind": "conv", "name": "big", "cout": 8, "kernel": 7, "padding": 3}]}
    cfg = CFG.replace(weight_buf_depth=16, act_buf_depth=1024)
    with pytest.raises(NetworkError, match=r"layer 0 'big' \(conv\): FP: one output channel's "
                                           r"kernel taps per PE \(4 channels x 7x7 = 196 words\) "
                                           r"exceed weight_buf_depth=16"):
        build_schedule(parse_network(net, cfg), cfg)
    cfg = CFG.replace(max_row_len=64, psum_buf_depth=32)
    net2 = dict(net, input=[8, 2, 40], layers=[{"kind": "conv", "name": "wide", "cout": 8,
                                                "kernel": 1}])
    with pytest.raises(NetworkError, match=r"layer 0 'wide' \(conv\): FP: an output row of 40 "
                                           r"words does not fit psum_buf_depth=32"):
        build_schedule(parse_network(net2, cfg), cfg)
    cfg = CFG.replace(act_buf_depth=32)
    net3 = dict(net, layers=[{"kind": "conv", "name": "wg", "cout": 8, "kernel": 3}])
    with pytest.raises(NetworkError, match=r"layer 0 'wg' \(conv\): WG: one input plane \(8x8 = 64 "
                                           r"words\) does not fit act_buf_depth=32"):
        build_schedule(parse_network(net3, cfg), cfg)
    cfg = CFG.replace(psum_buf_depth=16, k_max=7)
    net4 = dict(net, input=[8, 8, 8], layers=[{"kind": "conv", "name": "k", "cout": 8,
                                                "kernel": [3, 7], "padding": 3}])
    with pytest.raises(NetworkError, match=r"layer 0 'k' \(conv\): WG: one kernel \(3x7\) does "
                                           r"not fit psum_buf_depth=16"):
        build_schedule(parse_network(net4, cfg), cfg)


def test_build_schedule_bad_arguments():
    net = load_network("tiny-cnn", CFG)
    with pytest.raises(ValueError, match="mapping must be 'interleaved' or 'in-order'"):
        build_schedule(net, CFG, mapping="random")
    with pytest.raises(TypeError, match="net must be a Network"):
        build_schedule({}, CFG)
    with pytest.raises(TypeError, match="cfg must be an AcceleratorConfig"):
        build_schedule(net, None)


# -- random networks: compile, then the coverage checker -------------------------------------

@st.composite
def networks(draw):
    c = draw(st.integers(1, 20))
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    layers = []
    for k in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "fc"] if k == 0 else
                                    ["conv", "conv", "fc", "maxpool", "relu"]))
        if kind == "conv":
            layers.append({"kind": "conv", "cout": draw(st.integers(1, 20)),
                           "kernel": [draw(st.integers(1, 4)), draw(st.integers(1, 4))],
                           "stride": draw(st.sampled_from([1, 2])),
                           "padding": draw(st.integers(0, 2))})
        elif kind == "fc":
            layers.append({"kind": "fc", "cout": draw(st.integers(1, 24))})
        elif kind == "maxpool":
            layers.append({"kind": "maxpool", "kernel": draw(st.integers(1, 3))})
        else:
            layers.append({"kind": "relu"})
    return {"name": "h", "input": [c, h, w], "batch": draw(st.integers(1, 5)),
            "prune_p": draw(st.sampled_from([0.0, 0.5])),
            "nm": draw(st.sampled_from([None, [2, 8]])), "layers": layers}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.sampled_from([(1, 1), (2, 3), (4, 2)]), st.sampled_from([16, 32, 256]),
       st.sampled_from([16, 64, 1024]), st.sampled_from([16, 100, 256]),
       st.sampled_from(["interleaved", "in-order"]), st.booleans())
def test_random_networks_schedule_covers_and_fits(desc, shape, psum, wbuf, abuf, mapping, sparse):
    cfg = CFG.replace(pe_rows=shape[0], pe_cols=shape[1], psum_buf_depth=psum,
                      weight_buf_depth=wbuf, act_buf_depth=abuf, sched_depth=1 << 20)
    try:
        net = parse_network(desc, cfg)
        s = build_schedule(net, cfg, mapping=mapping, sparse=sparse)
    except NetworkError as e:
        assert "layer" in str(e)          # every rejection names the layer (or the network)
        return
    check_schedule(s, net, cfg, sparse=sparse)
    assert decode(encode(s), cfg) == s


# -- binary: round trip and every error path -------------------------------------------------

def _field_values():
    return {name: st.integers(0, (1 << width) - 1) for name, _, _, width in ENTRY_LAYOUT
            if name not in ("opcode", "flags")}


@st.composite
def schedules(draw):
    body = st.builds(Entry, opcode=st.sampled_from([Op.FP, Op.BP, Op.WG, Op.PREGEN, Op.PRUNE]),
                     flags=st.integers(0, Flag.ALL), **_field_values())
    entries = draw(st.lists(body, max_size=6))
    end = draw(st.builds(Entry, opcode=st.just(Op.END), flags=st.integers(0, Flag.ALL),
                         **_field_values()))
    return Schedule(entries=tuple(entries) + (end,), config_tag=draw(st.integers(0, 2**32 - 1)),
                    config_hash=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_round_trip(s):
    b = encode(s)
    assert len(b) == 4 * (HEADER_WORDS + ENTRY_WORDS * len(s.entries) + 1)
    assert decode(b) == s
    words = list(struct.unpack(f"<{len(b) // 4}I", b))
    assert decode(words) == s
    assert words[0] == MAGIC and b[:4] == b"SFSC"


@settings(max_examples=200, deadline=None)
@given(schedules(), st.data())
def test_any_single_bit_flip_is_rejected(s, data):
    b = bytearray(encode(s))
    bit = data.draw(st.integers(0, 8 * len(b) - 1))
    b[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ScheduleError):
        validate(bytes(b))


def _resign(words):
    """Recompute the CRC word (to reach the checks after the checksum)."""
    body = struct.pack(f"<{len(words) - 1}I", *words[:-1])
    return body + struct.pack("<I", zlib.crc32(body))


def _words(s):
    b = encode(s)
    return list(struct.unpack(f"<{len(b) // 4}I", b))


def _good():
    net = load_network("tiny-cnn", CFG)
    return build_schedule(net, CFG)


@pytest.mark.parametrize("mutate,kind", [
    (lambda w: w[:-1], "length"),                                     # truncated
    (lambda w: w + [0], "length"),                                    # one word too many
    (lambda w: w[:1], "length"),                                      # no header
    (lambda w: w[:HEADER_WORDS + 1], "length"),
    (lambda w: [0x12345678] + w[1:], "magic"),
    (lambda w: w[:1] + [2] + w[2:], "version"),
    (lambda w: w[:2] + [w[2] + 1] + w[3:], "length"),                 # entry count
    (lambda w: w[:3] + [16] + w[4:], "length"),                       # entry size
    (lambda w: w[:4] + [w[4] - 1] + w[5:], "length"),                 # total words
    (lambda w: w[:-1] + [w[-1] ^ 1], "checksum"),
    (lambda w: w[:HEADER_WORDS] + [w[HEADER_WORDS] ^ 0x100] + w[HEADER_WORDS + 1:], "checksum"),
])
def test_validate_errors(mutate, kind):
    w = mutate(_words(_good()))
    with pytest.raises(ScheduleError) as ei:
        validate(struct.pack(f"<{len(w)}I", *w), CFG)
    assert ei.value.kind == kind and ei.value.code == ERR[kind], str(ei.value)


def _patch_entry(words, k, word, value):
    w = list(words)
    w[HEADER_WORDS + k * ENTRY_WORDS + word] = value
    return _resign(w)


@pytest.mark.parametrize("op", [0, 6, 14, 255])
def test_unknown_opcode(op):
    w = _words(_good())
    first = w[HEADER_WORDS]
    with pytest.raises(ScheduleError, match=f"entry 0: unknown opcode {op}") as ei:
        validate(_patch_entry(w, 0, 0, (first & ~0xFF) | op))
    assert ei.value.code == ERR["opcode"]


def test_entry_errors():
    s = _good()
    w = _words(s)
    n = len(s.entries)
    with pytest.raises(ScheduleError, match="reserved bits 0x1 of word 19") as ei:
        validate(_patch_entry(w, 1, 19, 1))
    assert ei.value.code == ERR["entry"]
    with pytest.raises(ScheduleError, match="reserved bits 0x1000000 of word 11"):
        validate(_patch_entry(w, 1, 11, w[HEADER_WORDS + ENTRY_WORDS + 11] | 1 << 24))
    with pytest.raises(ScheduleError, match="undefined flag bits 0x8000"):
        validate(_patch_entry(w, 0, 0, w[HEADER_WORDS] | 1 << 31))
    with pytest.raises(ScheduleError, match="entry 2: END must be the last entry"):
        validate(_patch_entry(w, 2, 0, Op.END))
    with pytest.raises(ScheduleError, match=f"entry {n - 1}: END must be the last entry"):
        validate(_patch_entry(w, n - 1, 0, Op.FP))
    ww = list(w)
    ww[7] = 5
    with pytest.raises(ScheduleError, match="header word 7 is reserved"):
        validate(_resign(ww))


def test_config_mismatch():
    b = encode(_good())
    assert validate(b, CFG)
    assert validate(b, CFG.replace(name="renamed"))          # the name is not hardware
    with pytest.raises(ScheduleError, match="compiled for configuration") as ei:
        validate(b, CFG.replace(pe_cols=4))
    assert ei.value.code == ERR["config"]
    with pytest.raises(ScheduleError, match="compiled for configuration"):
        validate(b, CFG.replace(psum_buf_depth=512))
    assert config_hash(CFG) != config_hash(CFG.replace(psum_buf_depth=512))


def test_validate_bad_types_and_partial_words():
    with pytest.raises(TypeError, match="schedule must be bytes"):
        validate("SFSC")
    with pytest.raises(ScheduleError, match="not a whole number of 32-bit words") as ei:
        validate(encode(_good()) + b"\0")
    assert ei.value.code == ERR["length"]


def test_entry_field_range_errors():
    with pytest.raises(ValueError, match=r"entry field cin must be an integer in \[0, 65535\], not 65536"):
        Entry(opcode=Op.FP, cin=65536).words()
    with pytest.raises(ValueError, match="entry field flags"):
        Entry(opcode=Op.FP, flags=-1).words()


# -- the tensor buffers (issue 16): check_fits / buffer_demand ------------------------------------

def _tensor_net(batch):
    return parse_network({"name": "t", "input": [4, 8, 8], "batch": batch, "layers": [
        {"name": "a", "kind": "conv", "cin": 4, "cout": 8, "kernel": 3, "stride": 1,
         "padding": 1, "relu": True},
        {"name": "b", "kind": "conv", "cin": 8, "cout": 16, "kernel": 3, "stride": 2,
         "padding": 1}]}, preset("tiny"))


def test_buffer_demand_is_the_largest_tensor_per_buffer():
    net = _tensor_net(3)
    a, b = net.compute
    xa, ya = 3 * 4 * 8 * 8, 3 * 8 * 8 * 8                 # a: x, y (= b's x)
    yb, wb = 3 * 16 * b.ho * b.wo, 16 * 8 * 9
    assert (b.ho, b.wo) == (4, 4)
    got = buffer_demand(net)
    assert got["act_mem_elems"] == (ya, b.label, "FP", "x")
    assert got["grad_mem_elems"] == (ya, a.label, "WG", "dy")
    assert got["wgt_mem_elems"] == (wb, b.label, "FP", "w")
    assert got["out_mem_elems"] == (ya, a.label, "FP", "y")
    assert xa < ya and yb < ya


@pytest.mark.parametrize("field,msg", [
    ("act_mem_elems", "layer 1 'b' (conv): FP tensor x has 1536 elements > act_mem_elems=1472 "
                      "(the activation buffer; batch 3, configuration tiny)"),
    ("grad_mem_elems", "layer 0 'a' (conv): WG tensor dy has 1536 elements > "
                       "grad_mem_elems=1472 (the output-gradient buffer"),
    ("wgt_mem_elems", "layer 1 'b' (conv): FP tensor w has 1152 elements > wgt_mem_elems=1088 "
                      "(the weight buffer"),
    ("out_mem_elems", "layer 0 'a' (conv): FP tensor y has 1536 elements > out_mem_elems=1472 "
                      "(the result buffer")])
def test_check_fits_names_layer_tensor_and_buffer(field, msg):
    """Each buffer one 64-element step below the network's largest tensor for it: refused with
    a one-line message naming the layer, phase, tensor, sizes and buffer; exactly the demand
    fits."""
    net = _tensor_net(3)
    need = buffer_demand(net)
    fits = preset("tiny").replace(**{f: max(64, -(-n // 64) * 64) for f, (n, *_) in need.items()})
    check_fits(net, fits)
    n = need[field][0]
    assert n % 64 == 0
    bad = fits.replace(**{field: n - 64})
    with pytest.raises(NetworkError) as e:
        check_fits(net, bad)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_check_fits_presets_hold_the_digits_cnn():
    """The acceptance's cases: digits CNN at batch 1 on tiny, at batch 4 on ecp5 and vcu1525;
    batch 4 exceeds tiny (batch 2 fits since its GRAD / OUT doubled), batch 8 exceeds ecp5."""
    for name, batch in (("tiny", 1), ("tiny", 2), ("ecp5", 4), ("vcu1525", 4)):
        cfg = preset(name)
        check_fits(load_network("digits-cnn", cfg, batch=batch), cfg)
    for name, batch in (("tiny", 4), ("ecp5", 8)):
        cfg = preset(name)
        with pytest.raises(NetworkError, match=f"> .*_mem_elems=.*batch {batch}, configuration {name}"):
            check_fits(load_network("digits-cnn", cfg, batch=batch), cfg)
    with pytest.raises(TypeError):
        check_fits("digits-cnn", preset("tiny"))
