"""Tests of the presets and of the ``job.py`` command line."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import job
import presets

REPO = Path(__file__).resolve().parent.parent

PRESET_NAMES = [
    "lp1x1cs", "lp1x1cs_oc1", "lp2x1", "lp2x1cs", "lp2x1cs_oc1", "lp2x3", "lp2x3_oc1", "lp2x3_oc5",
    "lp2x5", "lp3x3", "lp4x5", "lp6x7", "zero-repl", "zero_oc1", "zero_oc5", "zero-zero",
    "repl", "repl_oc1", "repl_oc5", "extr1", "extr2", "extr3",
]  # fmt: skip


def run_job(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "job.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_presets_table():
    assert list(job.presets) == PRESET_NAMES
    lp1x1cs = presets.get_preset_hpars("lp1x1cs_oc1", 3)["model_hpars"]
    assert lp1x1cs == {
        "hidden_channels": 16,
        "conv_padding_method": "lp",
        "upscale_padding_method": "lp",
        "padding_method_kwargs": {
            "length": 1, "width": 1, "apodization": None, "correlate_method": "cov_stab", "cholesky_stab": 1e-7,
        },
        "output_crop": 1,
    }  # fmt: skip
    lp2x3 = presets.get_preset_hpars("lp2x3")["model_hpars"]["padding_method_kwargs"]
    assert (lp2x3["length"], lp2x3["width"], lp2x3["correlate_method"], lp2x3["apodization"]) == (
        2,
        3,
        "direct",
        "tukey",
    )
    lp6x7 = presets.get_preset_hpars("lp6x7")["model_hpars"]["padding_method_kwargs"]
    assert (lp6x7["length"], lp6x7["width"], lp6x7["correlate_method"]) == (6, 7, "fft")
    zero = presets.get_preset_hpars("zero_oc5")
    assert zero["compat_preset"] == "zero_el50"
    assert (
        zero["model_hpars"]["conv_padding_method"] == "zero" and zero["model_hpars"]["upscale_padding_method"] is None
    )
    assert zero["model_hpars"]["padding_method_kwargs"] == job.hpars["model_hpars"]["padding_method_kwargs"]
    # extr presets replace the padding kwargs whole.
    assert presets.get_preset_hpars("extr2")["model_hpars"]["padding_method_kwargs"] == {"num_predictors": 2}
    assert presets.get_preset_hpars("lp2x3")["compat_preset"] is None
    for name in PRESET_NAMES:
        json.dumps(presets.get_preset_hpars(name))


def test_preset_folder_seed_and_defaults():
    hpars = presets.get_preset_hpars("lp2x3", 7, paths={**presets.paths_config.get_paths(), "train_runs_folder": "R"})
    assert hpars["folder"] == str(Path("R") / "lp2x3_s7") and hpars["seed"] == 7 and hpars["preset"] == "lp2x3"
    assert presets.get_preset_hpars("repl")["folder"].endswith("repl_s0")
    steps = job.CHECKPOINT_STEPS
    assert steps[:3] == [0, 100, 200] and 9000 in steps and 10_000 in steps and 90_000 in steps
    assert steps[-3:] == [1_300_000, 1_400_000, 1_500_000] and len(steps) == 43
    assert (job.hpars["batch_size"], job.hpars["train_steps"], job.hpars["image_shape"]) == (
        64,
        1_500_000,
        [3, 192, 192],
    )


def test_merge_rule():
    base = {"a": {"x": 1, "y": {"z": 2}}, "b": 3}
    merged = presets.merge_hpars(base, {"a": {"y": {"w": 4}}, "c": 5})
    assert merged == {"a": {"x": 1, "y": {"z": 2, "w": 4}}, "b": 3, "c": 5}
    assert presets.merge_hpars(base, {"a": {"<replace>": True, "q": 1}}) == {"a": {"q": 1}, "b": 3}
    assert base == {"a": {"x": 1, "y": {"z": 2}}, "b": 3}  # not modified


def test_import_has_no_side_effects(tmp_path):
    # Importing job.py prints nothing, writes nothing and starts no computation (JAX is imported,
    # through padding.PAPER_METHODS, but no backend is initialised).
    code = "import sys; sys.path.insert(0, sys.argv[1]); import job, jax; print(len(jax._src.xla_bridge._backends))"
    result = subprocess.run([sys.executable, "-c", code, str(REPO)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "0\n" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_parse_args():
    args = job.parse_args(
        ["preset=lp2x3", "seed=3", "resume_checkpoint=-1", "save=False", "protect_existing=true",
         "checkpoint_steps=[1,2,3]", "batch_size=8", "timing_filename=None", "cooldown=1.5", "image_shape=[3,96,96]"]
    )  # fmt: skip
    assert args == {
        "preset": "lp2x3", "seed": 3, "resume_checkpoint": -1, "save": False, "protect_existing": True,
        "checkpoint_steps": [1, 2, 3], "batch_size": 8, "timing_filename": None, "cooldown": 1.5,
        "image_shape": [3, 96, 96],
    }  # fmt: skip
    hpars = job.job_hpars(args)
    assert hpars["folder"].endswith("lp2x3_s3") and hpars["batch_size"] == 8
    assert job.parse_args(["preset=repl", "batch_size=max"])["batch_size"] == "max"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["seed=0"],
        ["preset=nonexistent"],
        ["preset=lp2x3", "colour=blue"],
        ["preset=lp2x3", "seed=-1"],
        ["preset=lp2x3", "seed=zero"],
        ["preset=lp2x3", "save=maybe"],
        ["preset=lp2x3", "batch_size=0"],
        ["preset=lp2x3", "checkpoint_steps=1,2"],
        ["preset=lp2x3", "image_shape=[3,96]"],
        ["preset=lp2x3", "cooldown=-1"],
        ["preset=lp2x3", "seed=1", "seed=2"],
        ["preset=lp2x3", "train_steps"],
    ],
)
def test_bad_command_line_exits_2(args, tmp_path):
    result = run_job(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stderr.startswith("job.py: error:")
    assert list(tmp_path.iterdir()) == []


def test_missing_data_exits_nonzero(tmp_path):
    result = run_job("preset=zero-repl", f"folder={tmp_path / 'run'}", f"train_data_path={tmp_path / 'no.npy'}")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "train data file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "dtype, bad_value, complaint",
    [
        (np.float16, 0.0, "has dtype float16; expected float32"),
        (np.float32, np.nan, "image 1 holds NaN or infinite values"),
    ],
)
def test_bad_data_exits_with_one_line(tmp_path, dtype, bad_value, complaint):
    images = np.zeros((3, 3, 208, 208), dtype)
    images[1, 2, 3, 4] = bad_value
    np.save(tmp_path / "train.npy", images)
    result = run_job("preset=zero-repl", f"folder={tmp_path / 'run'}", f"train_data_path={tmp_path / 'train.npy'}",
                     f"test_data_path={tmp_path / 'train.npy'}", "batch_size=2")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.count("\n") == 1 and complaint in result.stderr and str(tmp_path / "train.npy") in result.stderr
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_job_main_trains_then_protects_folder(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        np.save(tmp_path / f"{name}.npy", rng.uniform(-1, 1, (3, 3, 208, 208)).astype(np.float32))
    args = [
        "preset=zero-repl", "seed=1", f"folder={tmp_path / 'run'}", f"train_data_path={tmp_path / 'train.npy'}",
        f"test_data_path={tmp_path / 'test.npy'}", "train_steps=2", "batch_size=2", "image_shape=[3,16,16]",
        "checkpoint_steps=[1]", "test_image_save_interval=0",
    ]  # fmt: skip
    assert job.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.isdigit()) == ["00000001", "00000002"]
    stored = json.loads((tmp_path / "run" / "00000002" / "checkpoint.json").read_text())["config"]
    assert (stored["preset"], stored["seed"], stored["image_shape"]) == ("zero-repl", 1, [3, 16, 16])
    capsys.readouterr()

    assert job.main(args) == 1  # the run folder exists
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "protect_existing=False" in err


def test_exit_status_of_stopped_and_out_of_memory_runs(monkeypatch, capsys):
    import train_utils

    def stopped(config, options=None):
        raise train_utils.TrainingInterrupted(signal.SIGUSR1, 7)

    monkeypatch.setattr(train_utils, "run_job", stopped)
    assert job.main(["preset=repl"]) == 128 + signal.SIGUSR1
    assert capsys.readouterr().err == "job.py: stopped by SIGUSR1 at step 7; checkpoint written\n"

    def out_of_memory(config, options=None):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes.")

    monkeypatch.setattr(train_utils, "run_job", out_of_memory)
    assert job.main(["preset=repl"]) == 3
    assert capsys.readouterr().err.startswith("job.py: out of memory: RESOURCE_EXHAUSTED")


def test_preset_padding_settings_match_the_papers_methods():
    """Each preset named after a paper method pads as padding.PAPER_METHODS defines it."""
    import padding

    checked = 0
    for name in presets.presets:
        method = name.split("_oc")[0]
        if method not in padding.PAPER_METHODS:
            continue  # zero-repl, zero-zero: the mode alone
        mode, kwargs = padding.PAPER_METHODS[method]
        model_hpars = presets.get_preset_hpars(name)["model_hpars"]
        assert model_hpars["conv_padding_method"] == mode, name
        assert {k: model_hpars["padding_method_kwargs"].get(k) for k in kwargs} == kwargs, name
        checked += 1
    assert checked == 20
