"""Tests of figures.py and the pure modules it draws from (results_tables, theory), on small
synthetic results written here in the formats of the evaluation scripts."""

import json
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import eval_geometry
import eval_models
import figures
import presets
import results_store
import results_tables as rt
import run_layout
import rvsr
import theory
import tiling

SEEDS = (0, 1, 2)
OUTPUT_SIZE = 96  # evaluated outputs of the synthetic results (the paper's are 192)
IMAGE_SIZE = 104  # synthetic test images: 96x96 padding-sample crops and 2x2 tilings fit
NUM_TEST = 6
MSE_PRESETS = (
    "lp1x1cs",
    "lp2x3",
    "lp2x3_oc1",
    "lp2x3_oc5",
    "repl",
    "repl_oc1",
    "repl_oc5",
    "zero-repl",
    "zero_oc1",
    "zero_oc5",
)


def smooth_images(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Spatially correlated images in the paper's units (about -0.8..-0.2)."""
    noise = rng.normal(size=(count, 3, size, size))
    spectrum = np.fft.fft2(noise) / (1 + np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size))) * 40) ** 1.5
    images = np.real(np.fft.ifft2(spectrum))
    images = images / images.std() * 0.1 - 0.5
    return images.astype(np.float32)


def synthetic_sumsqs(rng: np.random.Generator, preset: str, num_images: int) -> np.ndarray:
    """Sums of squares (11, N) whose shell MSEs fall inwards and depend on the padding."""
    oc = eval_geometry.output_crop_of(preset)
    counts = eval_geometry.mask_areas(OUTPUT_SIZE, 4)
    ring_counts = counts - np.append(counts[1:], 0.0)
    edge_penalty = {"zero": 3.0, "repl": 2.0}.get(preset.split("_")[0].split("-")[0], 1.5)
    shell_mse = 0.002 * (1 + (edge_penalty - 1) * np.exp(-np.arange(11) / 1.5))
    shell_mse[:oc] *= 5  # shells a cropped model was not trained for
    per_image = rng.lognormal(0, 0.3, size=num_images)
    ring_sums = shell_mse[:, None] * ring_counts[:, None] * per_image[None, :]
    return np.cumsum(ring_sums[::-1], axis=0)[::-1]


def write_synthetic_results(root: Path, with_models: bool = True) -> figures.Context:
    """A results tree like the workflow's, small and fast to plot; returns its Context."""
    rng = np.random.default_rng(0)
    ctx = figures.Context(
        root / "results", root / "results" / "trained_models", root / "plots", root / "dataset" / "test_data.npy"
    )
    ctx.test_data_path.parent.mkdir(parents=True)
    np.save(ctx.test_data_path, smooth_images(rng, NUM_TEST, IMAGE_SIZE))
    metadata = results_store.SumsqsMetadata(OUTPUT_SIZE, 4, NUM_TEST)
    for preset in MSE_PRESETS:
        for seed in SEEDS:
            results_store.save_sumsqs(
                ctx.results_folder, preset, seed, synthetic_sumsqs(rng, preset, NUM_TEST), metadata
            )
    timing = {
        "largest_train_batch_sizes": {},
        "train_step_times": {},
        "largest_inference_batch_sizes": {},
        "inference_step_times": {},
    }
    for i, preset in enumerate(MSE_PRESETS):
        timing["largest_train_batch_sizes"][preset] = 8
        timing["train_step_times"][preset] = [5.0] + list(0.1 + 0.01 * i + rng.uniform(0, 0.001, 4))
        timing["largest_inference_batch_sizes"][preset] = 16
        timing["inference_step_times"][preset] = [3.0] + list(0.02 + 0.002 * i + rng.uniform(0, 0.001, 4))
    run_layout.timing_path(ctx.results_folder).write_text(json.dumps(timing))
    layer_nmse = {
        p: {
            pad: {str(s): list(rng.uniform(0.5, 2.0) * np.geomspace(0.5, 0.01, 11) * (1 + 0.1 * s)) for s in SEEDS}
            for pad in eval_models.LAYER_NMSE_PADDINGS
        }
        for p in presets.LAYER_NMSE_PRESETS
    }
    run_layout.layer_nmse_path(ctx.results_folder).write_text(json.dumps(layer_nmse))
    ctx.trained_models_folder.mkdir(parents=True)
    if with_models:
        # All presets share the oc 0 weight layout, so one random model serves them all.
        model, _ = rvsr.make_rvsr(presets.get_preset_hpars("repl")["model_hpars"], key=jax.random.PRNGKey(0))
        weights = root / "weights.eqx"
        rvsr.save_rvsr_weights(model, weights)
    steps = np.array([0, 1000, 2000, 5000, 10_000], dtype=np.int32)
    for preset in MSE_PRESETS:
        for seed in SEEDS:
            diverged = preset == "lp1x1cs" and seed == 2
            stem = ctx.trained_models_folder / f"{preset}_s{seed}"
            test_loss = 0.01 * (1 + steps / 1000.0) ** -0.5 * (1 + 0.1 * seed)
            if diverged:
                test_loss[-1] = np.nan
            pd.DataFrame({"step": steps, "test_loss": test_loss.astype(np.float16)}).to_parquet(
                f"{stem}_test_loss.parquet", compression="brotli"
            )
            pd.DataFrame({"step": steps, "train_loss": test_loss.astype(np.float16)}).to_parquet(
                f"{stem}_train_loss.parquet", compression="brotli"
            )
            if with_models and not diverged:
                shutil.copy(weights, f"{stem}.eqx")
    return ctx


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> figures.Context:
    return write_synthetic_results(tmp_path_factory.mktemp("figures"))


# ----------------------------------------------------------------------------------------------
# Statistics and theory


def test_theory_nmse_closed_forms():
    sigma = 1.3
    k1 = math.exp(-1 / (2 * sigma**2))
    k2 = math.exp(-4 / (2 * sigma**2))
    assert theory.one_step_nmse("zero", sigma) == pytest.approx(1.0)
    assert theory.one_step_nmse("repl", sigma) == pytest.approx(2 - 2 * k1)
    assert theory.one_step_nmse("extr2", sigma) == pytest.approx(6 - 8 * k1 + 2 * k2)
    assert theory.one_step_nmse("lp1x1cs", sigma) == pytest.approx(1 - k1**2)
    # Optimal predictors improve with order and beat the fixed ones of the same order.
    lp = [theory.one_step_nmse(m, sigma) for m in ("lp1x1cs", "lp2x1", "lp3x1")]
    assert lp[0] > lp[1] > lp[2] > 0
    assert lp[0] <= theory.one_step_nmse("repl", sigma) and lp[1] <= theory.one_step_nmse("extr2", sigma)
    # White noise: nothing beats predicting the mean; extr3 amplifies the noise 1 + 9 + 9 + 1 times.
    assert theory.one_step_nmse("lp3x1", 0.05) == pytest.approx(1.0)
    assert theory.one_step_nmse("extr3", 0.05) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="unknown"):
        theory.one_step_nmse("lp2x3", sigma)


def test_bootstrap_ci():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    low, high = rt.bootstrap_ci(values)
    assert low < values.mean() < high
    assert values.min() <= low and high <= values.max()
    assert rt.bootstrap_ci(values) == (low, high)  # reproducible
    assert all(math.isnan(v) for v in rt.bootstrap_ci([1.0]))


def test_crop_and_shell_mse():
    # Squared error 2 at every output pixel: every crop and shell has MSE 2.
    areas = eval_geometry.mask_areas(OUTPUT_SIZE, 4)
    crop_mse, shell_mse = eval_geometry.crop_and_shell_mse(np.repeat(2 * areas[:, None], 3, axis=1), OUTPUT_SIZE, 4)
    np.testing.assert_allclose(crop_mse, 2.0)
    np.testing.assert_allclose(shell_mse, 2.0)
    # Error only in the outermost shell: crop 1 and inwards have none.
    sumsqs = np.zeros((11, 2))
    sumsqs[0] = areas[0] - areas[1]
    crop_mse, shell_mse = eval_geometry.crop_and_shell_mse(sumsqs, OUTPUT_SIZE, 4)
    assert shell_mse[0] == 1.0 and not shell_mse[1:].any() and not crop_mse[1:].any()
    # Outputs of 64 pixels have no crops beyond 7: NaN, not an error.
    crop_mse, shell_mse = eval_geometry.crop_and_shell_mse(np.ones((11, 2)), 64, 4)
    assert np.isnan(crop_mse[8:]).all() and np.isfinite(crop_mse[:8]).all() and np.isnan(shell_mse[8:]).all()


def test_throughput_table():
    timing = {
        "largest_train_batch_sizes": {"repl_oc5": 10, "zero_oc1": 3},
        "train_step_times": {"repl_oc5": [9.0, 2.0], "zero_oc1": 0.5},
        "largest_inference_batch_sizes": {"repl_oc5": 4, "zero_oc1": 2},
        "inference_step_times": {"repl_oc5": 0.5, "zero_oc1": [7.0, 0.1, 0.3]},
        "inference_target_sizes": {"zero_oc1": 64},
    }
    table = rt.throughput_table(timing)
    assert table.loc["repl_oc5", "train_throughput"] == 5.0  # the first (compiling) step left out
    assert table.loc["zero_oc1", "train_throughput"] == 6.0  # a single value is a mean already
    assert table.loc["repl_oc5", "inference_throughput"] == pytest.approx(4 * (192 - 40) ** 2 / 0.5 / 1e6)
    assert table.loc["zero_oc1", "inference_throughput"] == pytest.approx(2 * (64 - 8) ** 2 / 0.2 / 1e6)
    assert list(rt.throughput_table({}).columns) == [
        "train_batch",
        "train_throughput",
        "inference_batch",
        "inference_throughput",
    ]


def test_common_successful_seeds():
    status = {("a", 0): True, ("a", 1): True, ("b", 0): True, ("b", 1): False, ("b", 2): True}
    assert rt.common_successful_seeds(status, ["a", "b"]) == [0]
    assert rt.common_successful_seeds(status, []) == []


# ----------------------------------------------------------------------------------------------
# Tables


def test_success_table(results):
    table = figures.success_table(results)
    assert list(table.columns) == ["s0", "s1", "s2", "succeeded"]
    assert table.index[0] == "lp1x1cs"  # paper order
    assert table.loc["lp1x1cs", "s2"] == "✗" and table.loc["lp1x1cs", "succeeded"] == 2
    assert table.loc["repl", "succeeded"] == 3


def test_main_table_baselines(results):
    table = figures.main_table(results)
    assert table.loc["zero-repl", "mse_vs_zero_pct"] == pytest.approx(0.0)
    assert table.loc["zero_oc5", "outer_shell_mse_vs_zero_pct"] == pytest.approx(0.0)
    # The synthetic zero padding has the largest edge error, so the others improve on it.
    assert table.loc["lp2x3", "outer_shell_mse_vs_zero_pct"] < table.loc["repl", "outer_shell_mse_vs_zero_pct"] < 0
    assert table.loc["repl_oc5", "oc"] == 5 and table.loc["repl", "train_batch"] == 8
    assert table["inference_throughput"].notna().all()


def test_write_table_formats(tmp_path):
    table = pd.DataFrame(
        {"mse": [0.0012345, math.nan], "ok": ["✓", "✗"]}, index=pd.Index(["lp2x3", "zero_oc1"], name="preset")
    )
    paths = rt.write_table(table, "t", tmp_path, {"mse": ".4f"})
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    md = paths[1].read_text(encoding="utf-8")
    assert "| lp2x3 | 0.0012 | ✓ |" in md and "| zero_oc1 |  | ✗ |" in md
    tex = paths[2].read_text(encoding="utf-8")
    assert r"zero\_oc1 &  & $\times$ \\" in tex and r"\checkmark" in tex
    assert pd.read_csv(paths[0], index_col=0).loc["lp2x3", "mse"] == 0.0012345


# ----------------------------------------------------------------------------------------------
# Figures


@pytest.mark.slow
def test_every_step_writes_its_files(results, capsys, monkeypatch):
    # Models with lp padding and all twelve padding methods take long to compile on a CPU;
    # the smoke run (reproduce.py --smoke) makes the full figures.
    monkeypatch.setattr(figures, "TILING_PADDINGS", ("zero",))
    monkeypatch.setattr(figures, "PADDING_SAMPLE_METHODS", ("lp2x3", "zero", "repl", "extr3"))
    written = figures.make_all(results)
    names = {p.name for p in written}
    figure_names = [
        "theory_nmse_vs_blur",
        "padding_samples",
        "inputs_and_targets",
        "tiled_outputs",
        "layer_padding_nmse",
        "test_loss_history",
        "test_mse_per_seed",
        "mse_vs_throughput",
        "shell_mse_bars",
    ]
    for name in figure_names:
        assert {f"{name}.pdf", f"{name}.png"} <= names, name
    for name in ("success_table", "shell_mse_table", "main_table"):
        assert {f"{name}.csv", f"{name}.md", f"{name}.tex"} <= names, name
    assert all(p.stat().st_size > 0 for p in written)
    assert "skipped" not in capsys.readouterr().out


def test_partial_results_skip_with_reasons(tmp_path, capsys):
    ctx = figures.Context(
        tmp_path / "results",
        tmp_path / "results" / "trained_models",
        tmp_path / "plots",
        tmp_path / "dataset" / "test_data.npy",
    )
    written = figures.make_all(ctx)
    # The theory figure needs no results; everything else says what is missing.
    assert {p.name for p in written} == {"theory_nmse_vs_blur.pdf", "theory_nmse_vs_blur.png"}
    out = capsys.readouterr().out
    assert "skipped padding samples: test data" in out and "make_dataset_npys.py" in out
    assert "skipped layer padding NMSE:" in out and "eval_layer_nmse.py" in out
    assert "skipped main table: no MSE results" in out
    assert out.count("skipped") == len(figures.STEPS) - 1


def test_results_without_models_or_timing(tmp_path, capsys):
    ctx = write_synthetic_results(tmp_path, with_models=False)
    run_layout.timing_path(ctx.results_folder).unlink()
    figures.setup_matplotlib()
    assert figures.run("main table", ctx)
    assert figures.run("MSE vs throughput", ctx) == []
    assert figures.run("tiled outputs", ctx) == []
    out = capsys.readouterr().out
    assert "without timings" in out
    assert "skipped MSE vs throughput" in out and "skipped tiled outputs: no trained" in out
    main = pd.read_csv(ctx.graphs_folder / "main_table.csv", index_col=0)
    assert main["train_throughput"].isna().all() and main["mse"].notna().all()


@pytest.mark.slow
def test_tiling_is_exact_without_padding_effects(results):
    # A model whose padding cannot matter at the seams is one whose tiles see all they need:
    # with output crop 10 every layer is unpadded, so tiled and untiled outputs agree.
    hpars = presets.get_preset_hpars("zero_oc5")
    model, state = rvsr.make_rvsr(hpars["model_hpars"], output_crop=10, key=jax.random.PRNGKey(1))
    tile = 24
    inputs = np.random.default_rng(0).normal(size=(3, 2 * tile - 20, 2 * tile - 20)).astype(np.float32)
    stitched, untiled = tiling.two_by_two(model, state, inputs, tile, 10, 4)
    assert stitched.shape == untiled.shape == (3, 8 * (tile - 20), 8 * (tile - 20))
    np.testing.assert_allclose(stitched, untiled, atol=1e-5)


def test_tile_size():
    assert tiling.two_by_two_tile_size(512, 0, 4) == 48 and tiling.two_by_two_tile_size(512, 5, 4) == 48
    assert tiling.two_by_two_tile_size(104, 0, 4) == 12 and tiling.two_by_two_tile_size(104, 5, 4) == 17
    # The region 4 (2 tile - 2 oc) + 8 fits the image.
    assert 4 * (2 * tiling.two_by_two_tile_size(104, 5, 4) - 10) + 8 <= 104


def test_font_fallback(monkeypatch):
    assert figures.choose_font(["No Such Font Family 123"]) is None
    assert figures.setup_matplotlib(["No Such Font Family 123"]) == "default serif"

    def broken(*args, **kwargs):
        raise ValueError("font cache unavailable")

    monkeypatch.setattr(figures.font_manager, "findfont", broken)
    assert figures.setup_matplotlib() == "default serif"


def test_context_from_environment():
    env = {"LPPAD_RESULTS_FOLDER": "/r", "LPPAD_GRAPHS_FOLDER": "/g", "LPPAD_DATASET_FOLDER": "/d"}
    ctx = figures.Context.from_paths(environ=env)
    assert ctx.trained_models_folder == Path("/r/trained_models") and ctx.graphs_folder == Path("/g")
    assert ctx.test_data_path == Path("/d/test_data.npy")


def test_mse_results_use_their_own_metadata(tmp_path, capsys):
    ctx = write_synthetic_results(tmp_path, with_models=False)
    # Squared error 2 everywhere, evaluated at T = 64: only the stored metadata says so (the
    # 104-pixel test images would suggest 96).
    areas = eval_geometry.mask_areas(64, 4)
    results_store.save_sumsqs(
        ctx.results_folder,
        "repl",
        0,
        np.repeat(2 * areas[:, None], NUM_TEST, axis=1),
        results_store.SumsqsMetadata(64, 4, NUM_TEST),
    )
    table = ctx.mse_table()
    crops = table.loc[("repl", 0), [f"crop_{k}" for k in range(11)]].to_numpy(np.float64)
    np.testing.assert_allclose(crops[:8], 2.0)
    assert np.isnan(crops[8:]).all()  # nothing is left of 64 pixels at crop 8
    np.testing.assert_allclose(table.loc[("repl", 0), "shell_7"], 2.0)
    assert "note:" not in capsys.readouterr().out
    # An older result without its JSON: the size is inferred from the test images, with a note.
    run_layout.output_crop_sumsqs_metadata_path(ctx.results_folder, "repl", 0).unlink()
    table = ctx.mse_table()
    assert "note: repl seed 0 has no metadata JSON" in capsys.readouterr().out
    assert table.loc[("repl", 0), "crop_0"] == pytest.approx(2.0 * 64**2 / 96**2)  # read as T = 96


def test_main_table_says_why_cells_are_blank(tmp_path):
    ctx = write_synthetic_results(tmp_path, with_models=False)
    for seed in SEEDS:  # no zero-padding baseline at output crop 1
        run_layout.output_crop_sumsqs_path(ctx.results_folder, "zero_oc1", seed).unlink()
    timing = json.loads(run_layout.timing_path(ctx.results_folder).read_text())
    for key in timing:
        timing[key].pop("repl_oc5", None)
    run_layout.timing_path(ctx.results_folder).write_text(json.dumps(timing))
    figures.setup_matplotlib()
    csv, md, tex = figures.run("main table", ctx)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.read_text(encoding="utf-8").splitlines()}
    assert rows["lp2x3_oc1"].count(rt.NO_BASELINE_MARK) == 2
    assert rt.NO_BASELINE_MARK not in rows["lp2x3"] and rt.NOT_TIMED_MARK in rows["repl_oc5"]
    text = md.read_text(encoding="utf-8")
    assert "zero_oc1 (oc 1)" in text and "not timed" in text
    assert "zero\\_oc1 (oc 1)" in tex.read_text(encoding="utf-8")
    # Rows compared with the same baseline stand together, grouped by output crop.
    table = pd.read_csv(csv, index_col=0)
    assert list(table["oc"]) == sorted(table["oc"])
    assert list(table.index[table["oc"] == 0]) == ["lp1x1cs", "lp2x3", "zero-repl", "repl"]
    # Batch sizes are integers in the CSV, an empty field where not timed.
    lines = {line.split(",")[0]: line.split(",") for line in csv.read_text().splitlines()}
    column = lines["preset"].index("train_batch")
    assert lines["repl"][column] == "8" and lines["repl_oc5"][column] == ""


def test_shell_bars_centred_and_labelled(results):
    means, lows, highs = rt.shell_summary(results.mse_table())
    fig = figures.shell_bars_figure(means.drop(["repl_oc1", "zero_oc1"]), lows, highs)
    try:
        texts = [t.get_text() for t in fig.texts]
        assert any("95 % bootstrap interval" in t for t in texts)
        crop0, crop1 = fig.axes[0], fig.axes[1]
        assert crop1.get_title() == "Output crop 1"
        centres = sorted(p.get_x() + p.get_width() / 2 for p in crop1.patches)
        np.testing.assert_allclose(centres, np.arange(11), atol=1e-9)  # only lp2x3_oc1: bars on the ticks
        centres = np.sort([p.get_x() + p.get_width() / 2 for p in crop0.patches]).reshape(11, 3)
        np.testing.assert_allclose(centres.mean(axis=1), np.arange(11), atol=1e-9)  # three bars around each tick
    finally:
        plt.close(fig)


def test_mse_vs_throughput_labels_inside_axes(results):
    figures.setup_matplotlib()
    fig = figures.mse_vs_throughput_figure(figures.main_table(results))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        labels = 0
        for ax in fig.axes:
            box = ax.get_window_extent(renderer)
            for text in ax.texts:
                labels += 1
                extent = text.get_window_extent(renderer)
                assert box.x0 - 0.5 <= extent.x0 and extent.x1 <= box.x1 + 0.5, text.get_text()
                assert box.y0 - 0.5 <= extent.y0 and extent.y1 <= box.y1 + 0.5, text.get_text()
                assert text.get_fontfamily() == plt.rcParams["font.family"]
        assert labels == 4 * len(MSE_PRESETS)
    finally:
        plt.close(fig)


def text_extent(label, renderer):
    """An annotation's text alone, without its leader line."""
    label.update_positions(renderer)
    return matplotlib.text.Text.get_window_extent(label, renderer)


def test_mse_vs_throughput_labels_of_crowded_points_do_not_overlap(results):
    # As in a smoke run, where zero_oc1 and lp2x3_oc5 fell on almost the same spot.
    figures.setup_matplotlib()
    table = figures.main_table(results)
    for column in ("train_throughput", "inference_throughput", "mse", "outer_shell_mse"):
        table.loc["zero_oc1", column] = table.loc["lp2x3_oc5", column] * 1.004
    fig = figures.mse_vs_throughput_figure(table)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            frame = ax.get_window_extent(renderer)
            boxes = {text.get_text(): text_extent(text, renderer) for text in ax.texts}
            assert len(boxes) == len(MSE_PRESETS)
            for name, box in boxes.items():
                assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name
                for other, other_box in boxes.items():
                    assert other == name or not box.overlaps(other_box), (name, other)
    finally:
        plt.close(fig)


def test_layer_nmse_shows_both_presets_or_says_why(tmp_path, monkeypatch):
    ctx = write_synthetic_results(tmp_path, with_models=False)
    path = run_layout.layer_nmse_path(ctx.results_folder)
    nmse = json.loads(path.read_text())
    del nmse["zero_oc5"]
    path.write_text(json.dumps(nmse))
    figures.setup_matplotlib()
    shown = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, name, folder: shown.append(fig) or [])
    figures.make_layer_nmse(ctx)
    try:
        missing, present = shown[0].axes
        assert [ax.get_title() for ax in (missing, present)] == ["Trained as zero_oc5", "Trained as lp2x3_oc5"]
        assert not missing.lines and "no results for zero_oc5" in missing.texts[0].get_text()
        assert len(present.lines) > 0 and present.get_ylabel() and present.get_legend() is not None
    finally:
        plt.close(shown[0])


def test_seams_colour_bar_shows_its_clipped_end(tmp_path, monkeypatch):
    deviation = np.full((32, 32), 1e-4)
    deviation[:, 15:17] = 1e-3  # a seam
    shown = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, name, folder: shown.append(fig) or [])
    for peak, extend in ((1e-3, "neither"), (0.05, "max")):  # a hot spot beyond the 99.5th percentile, or none
        deviation[3, 3] = peak
        np.savez(
            tmp_path / "zero_seams.npz", deviation=deviation, preset="zero", seam_mean=1e-3, seam_max=peak, mean=2e-4
        )
        figures.draw_superresolve_seams([tmp_path / "zero_seams.npz"], tmp_path)
        fig = shown.pop()
        try:
            assert fig.axes[0].images[0].colorbar.extend == extend
            caption = fig.texts[0]
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            gap = fig.axes[0].get_window_extent(renderer).y0 - caption.get_window_extent(renderer).y1
            assert 0 <= gap < 12 * fig.dpi / 72  # right under the panels, not an empty band lower down
        finally:
            plt.close(fig)


def test_unreadable_results_are_skipped_with_a_reason(tmp_path, capsys):
    ctx = write_synthetic_results(tmp_path, with_models=False)
    run_layout.output_crop_sumsqs_path(ctx.results_folder, "repl", 0).write_bytes(b"not an array")
    assert figures.run("main table", ctx) == []
    assert "skipped main table:" in capsys.readouterr().out


def test_committed_notebook_runs_every_step_and_has_no_outputs():
    notebook = json.loads((Path(__file__).parent.parent / "make_figures_and_tables.ipynb").read_text(encoding="utf-8"))
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(
        not cell.get("outputs") and cell.get("execution_count") is None
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    )
    assert [f'figures.run("{name}", ctx);' for name in figures.STEPS] == code[1:]
