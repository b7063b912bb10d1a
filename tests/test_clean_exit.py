"""A pytest run that calls superresolve.py's main in-process (as tests/test_superresolve.py does)
ends cleanly: no input file stays open until the interpreter's final garbage collection, where
rasterio's closing of it fails and Python prints "Error in sys.excepthook" after the summary."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a pytest run of its own: tens of seconds

REPO = Path(__file__).resolve().parent.parent

# Run by a pytest of its own in a subprocess, so that its interpreter's exit can be watched.
INNER_TEST = """
import jax
import pytest

import presets
import rvsr
import superresolve
from make_synthetic_dataset import make_scene


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "zero-repl_s0.eqx"
    hpars = dict(presets.get_preset_hpars("zero-repl")["model_hpars"], hidden_channels=4)
    rvsr.save_rvsr_weights(rvsr.make_rvsr(hpars, key=jax.random.PRNGKey(0))[0], path)
    return path


def test_run(tmp_path, model):
    make_scene(tmp_path / "scene.tif", 32)
    assert superresolve.main([str(tmp_path / "scene.tif"), str(tmp_path / "out.tif"), "--model", str(model),
                              "--tile-size", "16", "--batch-size", "1", "--no-progress"]) == 0
"""


def test_pytest_run_of_superresolve_ends_cleanly(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path / "test_inner.py")], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PATH": "", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Error in sys.excepthook" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]
