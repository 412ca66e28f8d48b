"""AcceleratorConfig: presets, validation messages, file and CLI loading."""

import dataclasses

import pytest

from sparseforge.gen.config import PRESETS, AcceleratorConfig, load_config, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_named(name):
    cfg = preset(name)
    assert cfg.name == name
    assert AcceleratorConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.col_width >= 1 and cfg.nm_index_width == (cfg.nm_m - 1).bit_length()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").pe_rows = 3


@pytest.mark.parametrize("changes,exc,match", [
    ({"pe_rows": 0}, ValueError, r"pe_rows must be in \[1, 64\], not 0"),
    ({"pe_cols": 65}, ValueError, r"pe_cols must be in \[1, 64\], not 65"),
    ({"pe_rows": 2.0}, TypeError, r"pe_rows must be an integer, not 2.0"),
    ({"pe_rows": True}, TypeError, r"pe_rows must be an integer"),
    ({"macs_per_pe": 0}, ValueError, r"macs_per_pe must be in \[1, 16\]"),
    ({"k_max": 12}, ValueError, r"k_max must be in \[1, 11\]"),
    ({"nm_m": 3}, ValueError, r"nm_m must be one of \(2, 4, 8, 16\), not 3"),
    ({"nm_n_max": 9}, ValueError, r"nm_n_max must be in \[1, 8\], not 9"),
    ({"nm_n_max": 0}, ValueError, r"nm_n_max must be in \[1, 8\], not 0"),
    ({"data_width": 1}, ValueError, r"data_width must be in \[2, 32\], not 1"),
    ({"data_width": 0}, ValueError, r"data_width must be in"),
    ({"frac_bits": 16}, ValueError, r"frac_bits must be in \[0, 15\], not 16"),
    ({"acc_width": 31}, ValueError, r"acc_width must be in \[32, 64\], not 31"),
    ({"act_buf_depth": 8}, ValueError, r"act_buf_depth must be in \[16, 1048576\]"),
    ({"prng_width": 16}, ValueError, r"prng_width must be 32"),
    ({"strides": (3,)}, ValueError, r"strides must be a subset of \(1, 2\)"),
    ({"strides": ()}, TypeError, r"strides must be a non-empty tuple"),
    ({"max_row_len": 4, "k_max": 7}, ValueError, r"max_row_len must be >= k_max"),
    ({"name": ""}, TypeError, r"name must be a non-empty string"),
    ({"pregen_lanes": 17}, ValueError, r"pregen_lanes must be in \[0, 16\], not 17"),
    ({"pregen_lanes": -1}, ValueError, r"pregen_lanes must be in \[0, 16\], not -1"),
    ({"keep_mem_elems": 8}, ValueError, r"keep_mem_elems must be in \[16, 16777216\], not 8"),
])
def test_config_rejects_bad_fields(changes, exc, match):
    with pytest.raises(exc, match=match):
        preset("tiny").replace(**changes)


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; known presets: \['ecp5', 'tiny', 'vcu1525'\]"):
        preset("huge")


def test_reduction_overflow_check():
    cfg = preset("tiny")                     # 16-bit data, 48-bit acc: 2**47 // 2**30 = 131071 terms
    assert cfg.max_reduction() == (2**47 - 1) // 2**30
    cfg.check_reduction(64 * 9 * 32, "3x3 conv over 64 channels")
    with pytest.raises(ValueError, match="could overflow the 48-bit accumulator"):
        cfg.check_reduction(cfg.max_reduction() + 1, "huge FC")


def test_load_toml_yaml_and_overrides(tmp_path):
    t = tmp_path / "c.toml"
    t.write_text('preset = "ecp5"\ndata_width = 12\nfrac_bits = 6\nstrides = [1]\n')
    cfg = load_config(t)
    assert (cfg.name, cfg.data_width, cfg.frac_bits, cfg.strides, cfg.pe_rows) == ("ecp5", 12, 6, (1,), 2)
    y = tmp_path / "c.yaml"
    y.write_text("accelerator:\n  preset: tiny\n  nm_m: 4\n  nm_n_max: 2\n")
    cfg = load_config(y, overrides=["nm_n_max=1", "acc_width=0x30"])
    assert (cfg.nm_m, cfg.nm_n_max, cfg.acc_width) == (4, 1, 48)
    assert load_config(base="vcu1525") == preset("vcu1525")


@pytest.mark.parametrize("content,suffix,match", [
    ("bogus = 1\n", ".toml", r"unknown configuration field\(s\) \['bogus'\]"),
    ("data_width = 99\n", ".toml", r"data_width must be in \[2, 32\], not 99"),
    ("x: 1\n", ".json", r"must end in .toml, .yaml or .yml"),
    ("- 1\n- 2\n", ".yaml", r"must hold a table of keys, not a list"),
])
def test_load_bad_files(tmp_path, content, suffix, match):
    f = tmp_path / f"c{suffix}"
    f.write_text(content)
    with pytest.raises((ValueError, TypeError), match=match):
        load_config(f)


def test_load_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="field=value"):
        load_config(base="tiny", overrides=["pe_rows"])
    with pytest.raises(TypeError, match="pe_rows must be an integer, not 'x'"):
        load_config(base="tiny", overrides=["pe_rows=x"])
    with pytest.raises(ValueError, match="unknown configuration field 'bogus'"):
        load_config(base="tiny", overrides=["bogus=1"])


def test_pregen_lanes_effective():
    """``pregen_lanes_eff``: 0 means the mapper's weight ports (``pe_rows * pe_cols``); never
    more than ``nm_m`` (a group has M weights)."""
    t = preset("tiny")
    assert t.pregen_lanes == 8 and t.pregen_lanes_eff == 8
    assert t.replace(pregen_lanes=0).pregen_lanes_eff == 4            # 2x2 PEs
    assert t.replace(nm_m=4, nm_n_max=2).pregen_lanes_eff == 4
    assert preset("ecp5").pregen_lanes_eff == 4 and preset("vcu1525").pregen_lanes_eff == 8
