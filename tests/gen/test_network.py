"""Network descriptions: loading (YAML, TOML, dict), shape inference, validation errors."""

import pytest

from sparseforge.gen.config import preset
from sparseforge.gen.network import (BENCHMARKS, NetworkError, PoolSpec, examples, load_network,
                                     parse_network)
from sparseforge.study import train

CFG = preset("tiny")


def _net(layers, **top):
    d = {"name": "t", "input": [8, 8, 8], "batch": 2, "layers": layers}
    d.update(top)
    return d


def test_digits_cnn_matches_sim_train():
    """The shipped digits CNN is sim/train.py's NETWORK: shapes, pooling, ReLU, dense layers."""
    net = load_network("digits-cnn", CFG)
    assert [c.name for c in net.compute] == [s.name for s in train.NETWORK]
    for c, s in zip(net.compute, train.NETWORK):
        if s.type == "conv":
            assert (c.cin, c.cout, c.h, c.w, c.kh, c.padding, c.stride, c.ho, c.wo) == \
                   (s.cin, s.cout, s.h, s.w, s.k, s.padding, s.stride, s.ho, s.wo)
            assert c.pool == ((2, 2) if s.pool else None)
        else:
            assert (c.cin, c.cout, c.kh, c.kw, c.h, c.w) == (s.cin, s.cout, 1, 1, 1, net.batch)
        assert c.relu == s.relu
        assert c.bdwp == s.bdwp, c.name          # conv1 and fc2 dense, as train.py
        assert c.prune == s.prune, c.name
    assert net.compute[0].dense_reason == "Cin=1 is no multiple of M=8"
    assert net.compute[3].dense_reason == "Cout=10 is no multiple of M=8"
    assert net.output_shape == (10, 1, 1)
    assert net.input == (1, *train.INPUT_HW)


def test_examples_load_on_every_preset():
    """One folder: the accelerator's examples run on every preset; every network (the
    benchmark ones too) loads as a description."""
    assert {"digits-cnn", "tiny-cnn"} <= set(examples())
    assert set(examples()) == {"digits-cnn", "tiny-cnn", "digits-resnet", *BENCHMARKS}
    for p in ("tiny", "ecp5", "vcu1525"):
        for name in ("digits-cnn", "tiny-cnn"):
            net = load_network(name, preset(p))
            assert net.compute and net.layers[0].in_shape == net.input
    for name in examples():
        net = load_network(name)
        assert net.compute and net.layers[0].in_shape == net.input


def test_graph_keys_pools_and_tensor_kinds():
    d = _net([{"kind": "conv", "name": "a", "cout": 8, "padding": 1, "bn": True, "relu": True},
              {"kind": "maxpool", "name": "a.pool", "kernel": 3, "stride": 2, "padding": 1},
              {"kind": "conv", "name": "b", "cout": 8, "padding": 1, "relu": True},
              {"kind": "conv", "name": "s", "in": "a.pool", "cout": 8, "kernel": 1, "add": "b"},
              {"kind": "avgpool", "name": "s.pool", "global": True},
              {"kind": "fc", "name": "f", "cin": 8, "cout": 4}], batch=1)
    net = parse_network(d)
    a, b, sc, f = net.compute
    assert a.pool_spec == PoolSpec("max", 3, 2, 1) and a.out_shape == (8, 4, 4)
    assert (a.grad_kind, b.input_kind, b.grad_kind) == ("bn", "relu+maxpool", "relu")
    assert (sc.src, sc.add, net.producer(sc.src), sc.out_shape) == ("a.pool", "b", "a", (8, 1, 1))
    assert (sc.input_kind, sc.grad_kind, f.input_kind) == ("relu+maxpool", "none", "linear")
    assert (f.h, f.w, f.dense_macs(3)) == (1, 1, 3 * 4 * 8)
    assert not a.bdwp and a.dense_reason.startswith("no N:M")
    assert [c.bdwp for c in parse_network(dict(d, nm=[2, 4])).compute] == [True] * 4
    for bad, match in [({"add": "a"}, r"'s' \(conv\): residual 'a' has shape"),
                       ({"in": "f"}, r"'s' \(conv\): input 'f' is not")]:
        d2 = _net([dict(x, **bad) if x.get("name") == "s" else x for x in d["layers"]])
        with pytest.raises(NetworkError, match=match):
            parse_network(d2)
    for what in ("bn", "add", "in"):                  # the accelerator runs chains
        with pytest.raises(NetworkError, match=r"runs a chain|fuses only unpadded max-pools"):
            parse_network(d, CFG)
        d = _net([{k: v for k, v in x.items() if k != what} for x in d["layers"]])


def test_toml_yaml_and_dict_agree(tmp_path):
    toml = tmp_path / "n.toml"
    toml.write_text('name = "t"\ninput = [8, 8, 8]\nbatch = 2\n'
                    '[[layers]]\nkind = "conv"\ncout = 16\nkernel = [3, 5]\npadding = 2\nstride = 2\n'
                    '[[layers]]\nkind = "relu"\n'
                    '[[layers]]\nkind = "maxpool"\nkernel = 2\n'
                    '[[layers]]\nkind = "fc"\ncout = 8\n')
    yaml_ = tmp_path / "n.yaml"
    yaml_.write_text("name: t\ninput: [8, 8, 8]\nbatch: 2\nlayers:\n"
                     "  - {kind: conv, cout: 16, kernel: [3, 5], padding: 2, stride: 2}\n"
                     "  - {kind: relu}\n  - {kind: maxpool, kernel: 2}\n  - {kind: fc, cout: 8}\n")
    d = _net([{"kind": "conv", "cout": 16, "kernel": [3, 5], "padding": 2, "stride": 2},
              {"kind": "relu"}, {"kind": "maxpool", "kernel": 2}, {"kind": "fc", "cout": 8}])
    a, b, c = load_network(toml, CFG), load_network(yaml_, CFG), parse_network(d, CFG)
    assert a == b == c
    conv = a.compute[0]
    # (8 + 4 - 3) // 2 + 1 = 5 rows, (8 + 4 - 5) // 2 + 1 = 4 columns; pool 2 -> 2 x 2.
    assert (conv.ho, conv.wo, conv.relu, conv.pool) == (5, 4, True, (2, 2))
    assert [lay.out_shape for lay in a.layers] == [(16, 5, 4), (16, 5, 4), (16, 2, 2), (8, 1, 1)]
    assert a.compute[1].cin == 64


@pytest.mark.parametrize("layers,top,match", [
    ([{"kind": "conv", "cout": 8, "cin": 4}], {}, r"layer 0 'conv0' \(conv\): expects cin=4 .* do not chain"),
    ([{"kind": "conv", "cout": 8}, {"kind": "fc", "name": "head", "cout": 4, "cin": 100}], {},
     r"layer 1 'head' \(fc\): expects cin=100 .* 288 features: shapes do not chain"),
    ([{"kind": "conv", "cout": 8, "kernel": [9, 3], "padding": 0}], {"input": [8, 8, 12]},
     r"layer 0 'conv0' \(conv\): kernel 9x3 is larger than the padded input 8x12"),
    ([{"kind": "conv", "cout": 8, "stride": 3}], {}, r"layer 0 'conv0' \(conv\): unsupported stride 3"),
    ([{"kind": "conv", "cout": 8, "kernel": [1, 9]}], {"input": [8, 16, 16]},
     r"layer 0 'conv0' \(conv\): kernel row length 9 exceeds k_max=7"),
    ([{"kind": "conv", "cout": 8, "kernel": 1}], {"input": [8, 2, 65]},
     r"layer 0 'conv0' \(conv\): input row length 65 exceeds max_row_len=64"),
    ([{"kind": "fc", "cout": 8}], {"batch": 65}, r"layer 0 'fc0' \(fc\): batch \(FC row\) row length 65"),
    ([{"kind": "conv", "name": "c1", "cout": 8, "bdwp": True}], {"input": [3, 8, 8]},
     r"layer 0 'c1' \(conv\): bdwp requested but Cin=3 is no multiple of M=8"),
    ([{"kind": "conv", "cout": 10, "bdwp": True}], {}, r"Cout=10 is no multiple of M=8"),
    ([{"kind": "conv", "cout": 8, "padding": 8}], {}, r"layer 0 'conv0' \(conv\): padding must be in \[0, 7\]"),
    ([{"kind": "conv", "cout": 8, "kernal": 3}], {}, r"layer 0 'conv0' \(conv\): unknown key\(s\) \['kernal'\]"),
    ([{"kind": "pool"}], {}, r"layer 0: kind must be one of"),
    ([{"kind": "relu"}], {}, r"layer 0 'relu0' \(relu\): a ReLU must follow a conv or fc"),
    ([{"kind": "maxpool"}], {}, r"layer 0 'maxpool0' \(maxpool\): a max-pool must follow"),
    ([{"kind": "conv", "cout": 8}, {"kind": "maxpool", "kernel": 9}], {},
     r"layer 1 'maxpool1' \(maxpool\): pool window 9x9 is larger than its input 6x6"),
    ([{"kind": "conv", "cout": 8}, {"kind": "maxpool"}, {"kind": "maxpool", "kernel": 1}], {},
     r"layer 2 'maxpool2' \(maxpool\): 'conv0' already has a max-pool"),
    ([{"kind": "conv", "name": "a", "cout": 8}, {"kind": "conv", "name": "a", "cout": 8}], {},
     r"layer 1 'a' \(conv\): duplicate layer name"),
    ([{"kind": "conv", "cout": 0}], {}, r"layer 0 'conv0' \(conv\): cout must be in \[1, inf|>= 1"),
    ([{"kind": "conv", "cout": 8, "relu": 1}], {}, r"relu must be true or false"),
    ([{"kind": "conv", "cout": 8}], {"input": [8, 8]}, r"network: input must be \[C, H, W\]"),
    ([{"kind": "conv", "cout": 8}], {"batch": 0}, r"network: batch must be in >= 1"),
    ([], {}, r"layers must be a non-empty list"),
    ([{"kind": "conv", "cout": 8}], {"nm": [2, 4]}, r"nm\[1\] \(M\) must equal cfg.nm_m=8"),
    ([{"kind": "conv", "cout": 8}], {"nm": [5, 8]}, r"nm\[0\] \(N\) must be in \[1, 4\]"),
    ([{"kind": "conv", "cout": 8}], {"prune_p": 1.0}, r"prune_p must be a number in \[0, 1\)"),
    ([{"kind": "conv", "cout": 8}], {"optimiser": "sgd"}, r"network: unknown key\(s\) \['optimiser'\]"),
])
def test_errors_name_the_layer(layers, top, match):
    with pytest.raises(NetworkError, match=match):
        parse_network(_net(layers, **top), CFG)


def test_reduction_overflow_names_the_layer():
    cfg = CFG.replace(acc_width=32)          # max_reduction = 2**31 // 2**30 = 1 product
    with pytest.raises(NetworkError, match=r"layer 0 'conv0' \(conv\): FP output: 72 products could overflow"):
        parse_network(_net([{"kind": "conv", "cout": 8}]), cfg)


def test_bdwp_policy_auto_and_off():
    net = parse_network(_net([{"kind": "conv", "cout": 16}, {"kind": "conv", "cout": 12},
                              {"kind": "conv", "cout": 8, "bdwp": False}]), CFG)
    assert [c.bdwp for c in net.compute] == [True, False, False]
    assert net.compute[1].dense_reason == "Cout=12 is no multiple of M=8"
    assert net.compute[2].dense_reason == "bdwp: false"


def test_bad_sources(tmp_path):
    with pytest.raises(NetworkError, match="no such file or example"):
        load_network(tmp_path / "nope.yaml", CFG)
    bad = tmp_path / "n.json"
    bad.write_text("{}")
    with pytest.raises(NetworkError, match="must end in .toml, .yaml or .yml"):
        load_network(bad, CFG)
    with pytest.raises(TypeError, match="network must be"):
        load_network(3, CFG)
    with pytest.raises(TypeError, match="cfg must be an AcceleratorConfig"):
        parse_network(_net([{"kind": "relu"}]), {"pe_rows": 2})
