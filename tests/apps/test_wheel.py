"""The non-editable wheel works outside the checkout (issue 19): it carries the network
descriptions and the synthesis baselines, and the installed command emits Verilog.

The wheel is built from this checkout (no download: ``--no-build-isolation``) and installed
with ``--no-deps`` into a fresh virtual environment in a temporary folder; the dependencies
come from the project's ``.venv`` through a ``.pth`` path line (a plain path line does not run
the editable install's finder, so the checkout's own ``sparseforge`` stays invisible -- the
test checks that the imported package is the installed one)."""

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("sparseforge-*.whl")
    return whl


def test_wheel_carries_data_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "sparseforge/gen/networks/digits-cnn.yaml" in names
    assert any(n.startswith("sparseforge/boards/baselines/") and n.endswith(".json")
               for n in names)
    assert "sparseforge/sim/perf/digits_stats.json" in names
    assert "sparseforge/sim/perf/bn_stats.json" in names
    assert "sparseforge/gen/networks/digits-resnet.yaml" in names
    # the fast engine's C++ harness (compiled on first use: sparseforge e2e --engine cpp)
    assert "sparseforge/sim/fastsim/harness.cpp" in names
    assert "sparseforge/sim/fastsim/sim.py" in names
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = lambda *a: subprocess.run([str(py), *a], cwd=work, capture_output=True,  # noqa: E731
                                    text=True, env={"PATH": str(env_dir / "bin")})
    r = run("-c", "import sparseforge, sys; print(sparseforge.__file__)")
    assert r.returncode == 0 and r.stdout.strip().startswith(str(site)), r.stdout + r.stderr
    r = run("-m", "sparseforge", "verilog", "compressor", "--preset", "tiny", "-o", "v")
    assert r.returncode == 0, r.stderr
    assert (work / "v" / "tiny" / "compressor.v").is_file()
    code = ("from sparseforge.gen.network import load_network; "
            "from sparseforge.gen.config import preset; "
            "from sparseforge.boards.flows import load_baseline; "
            "n = load_network('digits-cnn', preset('tiny'), batch=1); "
            "b = load_baseline('compressor', 'tiny'); "
            "print(n.name, len(n.compute), b['block'])")
    r = run("-c", code)
    assert r.returncode == 0 and r.stdout.split() == ["digits-cnn", "4", "compressor"], r.stderr
