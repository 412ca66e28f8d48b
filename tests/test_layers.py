"""The package's layer order, enforced on every module's imports (module level and inside
functions alike): a module may import only from its own layer or a lower one.

    0  sparseforge.hdl      hardware (and the root package, which only holds ``__version__``)
    1  sparseforge.gen      config, networks, number formats, tiler, offline mapper, schedule,
                            Verilog emission
    2  sparseforge.sim      reference model, performance model, host driver, e2e, test kit
    2  sparseforge.boards   FPGA platforms and flows (siblings: sim and boards never import
                            each other)
    3  front-ends           every other ``sparseforge.*`` module: the CLI, bench, simulator
                            benchmark, training study, formal runner

One import spelling: absolute (``from sparseforge.x import y``); relative imports are refused.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sparseforge

REPO = Path(__file__).resolve().parents[1]
#: folder -> package, as pyproject's package-dir maps them
FOLDERS = {"hdl": "sparseforge.hdl", "gen": "sparseforge.gen", "sim": "sparseforge.sim",
           "boards": "sparseforge.boards", "sparseforge": "sparseforge"}
LAYERS = {"sparseforge.hdl": 0, "sparseforge.gen": 1, "sparseforge.sim": 2,
          "sparseforge.boards": 2}
#: same-rank packages that must not import each other
SIBLINGS = {("sparseforge.sim", "sparseforge.boards"), ("sparseforge.boards", "sparseforge.sim")}


def layer_of(module: str) -> tuple[int, str]:
    """``(rank, layer package)`` of a dotted ``sparseforge`` module name."""
    if module == "sparseforge":
        return 0, "sparseforge"
    for pkg, rank in LAYERS.items():
        if module == pkg or module.startswith(pkg + "."):
            return rank, pkg
    return 3, "front-end"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, filename: str = "<src>"):
    """``(line, imported module, relative?)`` for every import statement, at any depth."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, node.module or ".", True
            else:
                # ``from sparseforge import gen`` imports the subpackage: judge the full name
                # (``from sparseforge import __version__`` is the root package itself)
                for a in node.names:
                    sub = node.module == "sparseforge" and not a.name.startswith("__")
                    yield node.lineno, (f"sparseforge.{a.name}" if sub else node.module), False


def violations(module: str, source: str, filename: str = "<src>") -> list[str]:
    """Every upward, sideways-sibling or relative import of ``module`` (its source text)."""
    rank, pkg = layer_of(module)
    out = []
    for line, target, relative in imports_of(source, filename):
        if relative:
            out.append(f"{filename}:{line}: relative import ({target}); write it absolute")
            continue
        if target != "sparseforge" and not target.startswith("sparseforge."):
            continue
        trank, tpkg = layer_of(target)
        if module == "sparseforge" and target != "sparseforge":
            out.append(f"{filename}:{line}: the root package imports {target}")
        elif trank > rank or (pkg, tpkg) in SIBLINGS:
            out.append(f"{filename}:{line}: {module} ({pkg}, layer {rank}) imports {target} "
                       f"({tpkg}, layer {trank})")
    return out


def package_files():
    for folder in FOLDERS:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_every_package_module_is_checked():
    mods = {module_name(p) for p in package_files()}
    # a sample of each layer, so a folder missing from FOLDERS cannot pass silently
    for m in ("sparseforge.hdl.pe", "sparseforge.gen.config", "sparseforge.sim.reference.golden",
              "sparseforge.boards.flows", "sparseforge.cli"):
        assert m in mods, m


@pytest.mark.parametrize("path", list(package_files()), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_follow_the_layers(path):
    assert violations(module_name(path), path.read_text(), str(path.relative_to(REPO))) == []


@pytest.mark.parametrize("module, source, expect", [
    ("sparseforge.hdl.pe", "from sparseforge.gen.config import preset\n", "layer 1"),
    ("sparseforge.hdl.pe", "def f():\n    import sparseforge.sim.reference.golden\n", "layer 2"),
    ("sparseforge.gen.schedule", "def f():\n    from sparseforge.sim.reference import golden\n",
     "layer 2"),
    ("sparseforge.gen.blocks", "from sparseforge import cli\n", "front-end"),
    ("sparseforge.sim.host.driver", "from sparseforge.boards import flows\n", "sparseforge.boards"),
    ("sparseforge.boards.flows", "from sparseforge.sim.host import e2e\n", "sparseforge.sim"),
    ("sparseforge.gen.config", "from ..hdl import pe\n", "relative import"),
    ("sparseforge", "from sparseforge.hdl import pe\n", "root package"),
])
def test_layer_check_fails_on_an_upward_import(module, source, expect):
    found = violations(module, source)
    assert len(found) == 1 and expect in found[0], found


@pytest.mark.parametrize("module, source", [
    ("sparseforge.gen.mapper.pe", "from sparseforge.hdl.pe import pe_params\n"),
    ("sparseforge.sim.perf.model", "from sparseforge.gen.config import AcceleratorConfig\n"),
    ("sparseforge.boards.flows", "def f():\n    from sparseforge.gen import blocks\n"),
    ("sparseforge.cli", "from sparseforge.boards import flows\nfrom sparseforge.sim import perf\n"),
    ("sparseforge.gen.verilog", "from sparseforge import __version__\n"),
])
def test_layer_check_allows_downward_imports(module, source):
    assert violations(module, source) == []
