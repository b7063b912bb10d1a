"""Tests of export_trained_models.py: run folders (also under compat names) to the published
layout, histories-only exports, no silent overwrites, and evaluation of the published files
without any run folder.

Run folders are made directly with the trainer's checkpoint writer (no training, so nothing
is compiled); the models are tiny (4 hidden channels).
"""

import shutil
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

import catalog
import checkpoints
import cli
import eval_mse
import export_trained_models
import presets
import published_models
import results_store
import run_layout
import rvsr
import train_state


def make_run(runs: Path, folder_name: str, preset: str, seed: int, steps_done: int | None, train_steps: int,
             num_train_rows: int) -> train_state.TrainState | None:  # fmt: skip
    """A run folder as the trainer leaves it: histories and, unless ``steps_done`` is None,
    a checkpoint at that step."""
    folder = runs / folder_name
    folder.mkdir(parents=True)
    hpars = presets.get_preset_hpars(preset, seed)
    hpars["model_hpars"]["hidden_channels"] = 4
    hpars.update(folder=str(folder), train_steps=train_steps, image_shape=[3, 16, 16])
    rows = [(step, 0.5 / step, 1e-3) for step in range(1, num_train_rows + 1)]
    (folder / "train_history.csv").write_text(
        "step,loss,learning_rate\n" + "".join(f"{s},{l!r},{r!r}\n" for s, l, r in rows)
    )
    (folder / "test_history.csv").write_text("step,test_loss\n0,0.75\n" + f"{num_train_rows},{0.25!r}\n")
    if steps_done is None:
        return None
    ts = train_state.init_train_state(hpars, train_state.make_optimizer(hpars))
    ts.step = steps_done
    checkpoints.save_checkpoint(folder, ts, hpars, {"train": num_train_rows, "test": 2})
    return ts


@pytest.fixture
def runs(tmp_path) -> tuple[Path, train_state.TrainState]:
    """``repl_el1_s3``: repl_oc1 seed 3 under its compat name, finished at step 2 of 2;
    ``zero_s5``: zero-repl seed 5 (compat name), stopped at step 1 of 4; ``lp2x3_s1``:
    no checkpoint yet; ``other_s0``: not a preset."""
    runs = tmp_path / "runs"
    final = make_run(runs, "repl_el1_s3", "repl_oc1", 3, steps_done=2, train_steps=2, num_train_rows=2)
    make_run(runs, "zero_s5", "zero-repl", 5, steps_done=1, train_steps=4, num_train_rows=1)
    make_run(runs, "lp2x3_s1", "lp2x3", 1, steps_done=None, train_steps=4, num_train_rows=3)
    (runs / "other_s0").mkdir()
    return runs, final


def leaves(model) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]


def test_export_writes_the_published_layout(runs, tmp_path, capsys):
    runs_folder, final = runs
    out = tmp_path / "results" / "trained_models"
    assert export_trained_models.main(["--runs-folder", str(runs_folder), "--output-folder", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "repl_oc1_s3.eqx",
            "repl_oc1_s3.eqx.json",
            "repl_oc1_s3_train_loss.parquet",
            "repl_oc1_s3_test_loss.parquet",
            "zero-repl_s5_train_loss.parquet",
            "zero-repl_s5_test_loss.parquet",
            "lp2x3_s1_train_loss.parquet",
            "lp2x3_s1_test_loss.parquet",
        ]  # fmt: skip
    )
    log = capsys.readouterr().out
    assert "zero-repl_s5" in log and "histories only (newest checkpoint is step 1 of 4)" in log
    assert "lp2x3_s1" in log and "histories only (no checkpoint)" in log

    # Parquet: the column names and dtypes of the published layout, brotli-compressed, values as in the CSVs.
    for kind, column, expected in (("train", "train_loss", [0.5, 0.25]), ("test", "test_loss", [0.75, 0.25])):
        path = out / f"repl_oc1_s3_{kind}_loss.parquet"
        table = pq.read_table(path)
        assert table.column_names == ["step", column]
        assert str(table.schema.field("step").type) == "int32" and str(table.schema.field(column).type) == "halffloat"
        assert pq.ParquetFile(path).metadata.row_group(0).column(1).compression == "BROTLI"
        steps, losses = run_layout.read_loss_history(path, kind)
        assert steps.dtype == np.int32 and losses.dtype == np.float16
        np.testing.assert_array_equal(losses, np.array(expected, np.float16))

    # The weights load into an RVSR at any output crop and equal the final checkpoint's.
    model, _ = published_models.load_trained_model(run_layout.TrainedModel("repl_oc1", 3, out), output_crop=1)
    assert isinstance(model, rvsr.RVSR) and model.output_crop == 1
    for a, b in zip(leaves(model), leaves(final.model), strict=True):
        np.testing.assert_array_equal(a, b)
    oc0, _ = published_models.load_trained_model(run_layout.TrainedModel("repl_oc1", 3, out), output_crop=0)
    for a, b in zip(rvsr.rvsr_to_oc0_leaves(oc0), rvsr.rvsr_to_oc0_leaves(final.model), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_records_the_preset_beside_the_weights(runs, tmp_path):
    runs_folder, _ = runs
    out = tmp_path / "models"
    assert export_trained_models.main(["--runs-folder", str(runs_folder), "--output-folder", str(out)]) == 0
    published = run_layout.TrainedModel("repl_oc1", 3, out)
    assert run_layout.read_model_metadata(published.weights_path) == {"preset": "repl_oc1", "seed": 3}
    # Models exported before the metadata existed get it on the next export.
    published.metadata_path.unlink()
    assert export_trained_models.main(["--runs-folder", str(runs_folder), "--output-folder", str(out)]) == 0
    assert run_layout.read_model_metadata(published.weights_path)["preset"] == "repl_oc1"
    # A file whose recorded preset contradicts its name is not loaded with the name's preset.
    shutil.copy(published.weights_path, out / "zero_oc1_s3.eqx")
    shutil.copy(published.metadata_path, out / "zero_oc1_s3.eqx.json")
    with pytest.raises(cli.UserError, match="holds a repl_oc1 model"):
        published_models.load_trained_model(run_layout.TrainedModel("zero_oc1", 3, out), output_crop=0)
    (out / "zero_oc1_s3.eqx.json").write_text("{")
    with pytest.raises(run_layout.LayoutError, match="unreadable model metadata"):
        published_models.load_trained_model(run_layout.TrainedModel("zero_oc1", 3, out), output_crop=0)


def test_export_keeps_existing_files_unless_overwrite(runs, tmp_path, capsys):
    runs_folder, _ = runs
    out = tmp_path / "models"
    args = ["--runs-folder", str(runs_folder), "--output-folder", str(out), "--presets", "repl_oc1", "lp2x3"]
    assert export_trained_models.main(args) == 0
    (out / "repl_oc1_s3.eqx").write_bytes(b"kept")
    capsys.readouterr()
    assert export_trained_models.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert (out / "repl_oc1_s3.eqx").read_bytes() == b"kept"

    # A history that the run has since extended replaces the shorter export.
    with open(runs_folder / "lp2x3_s1" / "train_history.csv", "a") as f:
        f.write("4,0.125,0.001\n")
    assert export_trained_models.main(args) == 0
    assert len(run_layout.read_loss_history(out / "lp2x3_s1_train_loss.parquet", "train")[0]) == 4

    assert export_trained_models.main([*args, "--overwrite"]) == 0
    assert (out / "repl_oc1_s3.eqx").read_bytes() != b"kept"
    assert not list(out.glob("*.partial-*"))


def test_seed_comes_from_the_folder_and_preset_name_wins(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("repl_el50_s7", "repl_oc5_s7", "zero_el50_s11"):
        make_run(runs, name, "repl_oc5", 7, steps_done=None, train_steps=4, num_train_rows=1)
    found = catalog.find_run_folders(runs)
    assert [(r.preset, r.seed, r.path.name) for r in found] == [
        ("zero_oc5", 11, "zero_el50_s11"),
        ("repl_oc5", 7, "repl_oc5_s7"),
    ]
    assert "using" in capsys.readouterr().out
    assert [r.seed for r in catalog.find_run_folders(runs, only_seeds=[11])] == [11]


def test_export_bad_input(tmp_path, capsys):
    assert export_trained_models.main(["--runs-folder", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.startswith("export_trained_models.py: error: no runs folder")
    (tmp_path / "runs" / "other_s0").mkdir(parents=True)
    assert export_trained_models.main(["--runs-folder", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no run folders" in err


def test_published_models_evaluate_without_run_folders(runs, tmp_path):
    runs_folder, _ = runs
    results = tmp_path / "results"
    assert (
        export_trained_models.main(
            ["--runs-folder", str(runs_folder), "--output-folder", str(results / "trained_models")]
        )
        == 0
    )
    shutil.rmtree(runs_folder)  # only the published layout is left
    rng = np.random.default_rng(3)
    np.save(tmp_path / "test.npy", rng.uniform(-0.5, 0.5, (2, 3, 40, 40)).astype(np.float32))
    args = ["--models-folder", str(results / "trained_models"), "--results-folder", str(results),
            "--test-data", str(tmp_path / "test.npy"), "--target-size", "24"]  # fmt: skip
    assert eval_mse.main(args) == 0
    assert sorted(p.name for p in (results / "output_crop_sumsqs").iterdir()) == ["repl_oc1_s3.json", "repl_oc1_s3.npy"]
    sums = results_store.load_output_crop_sumsqs(results)["repl_oc1"][3]
    assert sums.shape == (11, 2) and np.all(np.isfinite(sums)) and np.all(sums[0] > 0)


def test_damaged_final_checkpoint_is_an_error_not_a_fallback(runs, tmp_path, capsys):
    runs_folder, _ = runs
    model_file = runs_folder / "repl_el1_s3" / "00000002" / "model.eqx"
    model_file.write_bytes(model_file.read_bytes()[:-10])
    out = tmp_path / "models"
    assert export_trained_models.main(["--runs-folder", str(runs_folder), "--output-folder", str(out)]) == 1
    err = capsys.readouterr().err
    assert "repl_el1_s3" in err and "model.eqx" in err and "truncated" in err
    assert not (out / "repl_oc1_s3.eqx").exists()
    assert (out / "zero-repl_s5_train_loss.parquet").exists()  # the other runs are exported


def test_truncated_published_model_fails_loudly(runs, tmp_path):
    runs_folder, _ = runs
    out = tmp_path / "models"
    assert export_trained_models.main(["--runs-folder", str(runs_folder), "--output-folder", str(out)]) == 0
    weights = out / "repl_oc1_s3.eqx"
    data = weights.read_bytes()
    # Cut at a record boundary too: the file then looks like fewer, complete records.
    with open(weights, "rb") as f:
        np.load(f)
        boundary = f.tell()
    for cut in (len(data) - 1, len(data) // 2, boundary):
        weights.write_bytes(data[:cut])
        with pytest.raises(cli.UserError, match=f"truncated RVSR weights file \\({cut} bytes of {len(data)}\\)"):
            published_models.load_trained_model(run_layout.TrainedModel("repl_oc1", 3, out), output_crop=0)
