"""Configuration and network files that cannot be used are refused with one clear error that
names the file (and the line for syntax errors) -- never a parser traceback, never a silent
default (issue 19); names that become file names are checked; baselines belong to the
presets as shipped and no user string writes outside its folder."""

import pytest

from sparseforge.boards import flows
from sparseforge.gen.config import ConfigError, load_config, preset
from sparseforge.gen.network import NetworkError, load_network
from sparseforge.gen.paths import inside


@pytest.mark.parametrize("content,suffix,match", [
    ("pe_rows: 2\npe_rows: 3\n", ".yaml", r"c\.yaml:2: invalid YAML: duplicate key 'pe_rows' "
                                          r"\(first on line 1\)"),
    ("pe_rows: [1, 2\n", ".yaml", r"c\.yaml:2: invalid YAML: "),
    ("a: !!python/object:os.system {}\n", ".yaml",
     r"c\.yaml:1: invalid YAML: could not determine a constructor for the tag "
     r"'tag:yaml.org,2002:python/object:os.system'"),
    ("", ".yaml", r"c\.yaml: the configuration file is empty"),
    ("# only a comment\n", ".yaml", r"the configuration file is empty"),
    ("", ".toml", r"c\.toml: the configuration file is empty"),
    ("accelerator: {}\n", ".yaml", r"the configuration file is empty"),
    ("pe_rows = \n", ".toml", r"c\.toml: invalid TOML: .*line 1"),
    ("pe_rows = 1\npe_rows = 2\n", ".toml", r"c\.toml: invalid TOML: .*line 2"),
    ("just text\n", ".yaml", r"must hold a table of keys, not a str"),
], ids=["dup-key", "syntax", "python-tag", "empty", "comment-only", "empty-toml",
        "empty-table", "toml-syntax", "toml-dup", "scalar"])
def test_bad_config_files(tmp_path, content, suffix, match):
    f = tmp_path / f"c{suffix}"
    f.write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(f)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


@pytest.mark.parametrize("content,match", [
    ("name: n\nname: m\n", r"n\.yaml:2: invalid YAML: duplicate key 'name'"),
    ("layers: [\n", r"n\.yaml:2: invalid YAML"),
    ("", r"n\.yaml: the network file is empty"),
    ("- 1\n", r"must hold a table of keys, not a list"),
    ("x: !!python/name:os.system\n", r"n\.yaml:1: invalid YAML: could not determine a "
                                     r"constructor"),
], ids=["dup-key", "syntax", "empty", "list", "python-tag"])
def test_bad_network_files(tmp_path, content, match):
    f = tmp_path / "n.yaml"
    f.write_text(content)
    with pytest.raises(NetworkError, match=match):
        load_network(f)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "", ".", "..", "sp ace", "x;y"])
def test_config_names_that_would_become_bad_paths(name):
    with pytest.raises((ValueError, TypeError), match="name must"):
        preset("tiny").replace(name=name)
    assert preset("tiny").replace(name="my-core_v1.2").name == "my-core_v1.2"


def test_baselines_only_for_the_presets_as_shipped(tmp_path):
    cfg = preset("tiny").replace(pe_rows=3)                       # still named "tiny"
    assert not flows.preset_matches(cfg) and flows.preset_matches(preset("tiny"))
    entry = {"block": "demo", "preset": "tiny", "config_key": cfg.key(), "params": {}}
    with pytest.raises(ValueError, match="is not the preset 'tiny'"):
        flows.write_baseline(entry, tmp_path)
    assert list(tmp_path.iterdir()) == []                          # nothing written
    entry["config_key"] = preset("tiny").key()
    assert flows.write_baseline(entry, tmp_path).parent == tmp_path.resolve()


def test_paths_stay_inside_their_folder(tmp_path):
    assert inside(tmp_path, "a", "b.json") == (tmp_path / "a" / "b.json").resolve()
    for bad in ("../x.json", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="would leave the folder"):
            inside(tmp_path, bad)
    with pytest.raises(ValueError, match="would leave the folder"):
        flows.load_baseline("demo", "/../../../escape", tmp_path)
