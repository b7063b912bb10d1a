"""Tests of the evaluations (eval_geometry, eval_models, results_store, timing_search and the
eval_*.py scripts) on tiny data and models.

Compiling RVSR is slow on CPU, so the tests share a few tiny models (4 hidden channels) in
the published layout, three small test images (104 x 104, room for 96 x 96 targets) and
small target sizes; the jitted functions of eval_models are cached per model structure.
"""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bilinear_test
import catalog
import cli
import data_utils
import eval_geometry as geo
import eval_inference_time
import eval_layer_nmse
import eval_models as em
import eval_mse
import eval_train_time
import presets
import published_models
import results_store
import run_layout
import rvsr
import timing_search as ts

HIDDEN = 4
SR = 4
IMAGE_SIZE = 104


def make_model(preset: str, seed: int, zero_tail: bool = False) -> rvsr.RVSR:
    """A tiny model of ``preset`` with random weights; with ``zero_tail`` its residual branch
    outputs 0, so the model is the plain bilinear upscaling of its input."""
    model_hpars = {**presets.get_preset_hpars(preset)["model_hpars"], "hidden_channels": HIDDEN}
    model, _ = rvsr.make_rvsr(model_hpars, key=jax.random.PRNGKey(seed))
    if zero_tail:
        conv = model.tail.layers[1]
        model = eqx.tree_at(lambda m: (m.tail.layers[1].weight, m.tail.layers[1].bias), model,
                            (jnp.zeros_like(conv.weight), jnp.zeros_like(conv.bias)))  # fmt: skip
    return model


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A results folder with models in the published layout only (no run folders):
    repl_s0 (bilinear upscaling), repl_s1, zero_oc5_s0 and lp2x3_oc5_s0 (random weights)."""
    models = tmp_path_factory.mktemp("results") / "trained_models"
    models.mkdir()
    for preset, seed, zero_tail in [
        ("repl", 0, True),
        ("repl", 1, False),
        ("zero_oc5", 0, False),
        ("lp2x3_oc5", 0, False),
    ]:
        rvsr.save_rvsr_weights(make_model(preset, seed, zero_tail), models / f"{preset}_s{seed}.eqx")
    (models / "unknownpreset_s0.eqx").write_bytes(b"ignored")
    return models


@pytest.fixture(scope="module")
def test_data(tmp_path_factory) -> Path:
    """Three smooth random images (3, 3, 104, 104) in the paper's units."""
    rng = np.random.default_rng(0)
    steps = rng.normal(0, 0.05, (3, 3, IMAGE_SIZE, IMAGE_SIZE))
    images = np.cumsum(np.cumsum(steps, axis=-1), axis=-2) / 10
    path = tmp_path_factory.mktemp("data") / "test.npy"
    np.save(path, np.clip(images, -1, 1).astype(np.float32))
    return path


def mse_args(published: Path, results: Path, data: Path, *extra: str) -> list[str]:
    return ["--models-folder", str(published), "--results-folder", str(results), "--test-data", str(data),
            "--target-size", "24", "--batch-size", "2", *extra]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Command lines


def test_run_script_turns_user_errors_into_one_line(capsys):
    class ScriptError(cli.UserError):  # any module may derive its own
        pass

    def fails(error: Exception):
        def body() -> None:
            raise error

        return body

    assert cli.run_script("x.py", lambda: None) == 0
    assert cli.run_script("x.py", fails(ScriptError("bad\n   input"))) == 1
    assert capsys.readouterr().err == "x.py: error: bad input\n"
    assert cli.run_script("x.py", fails(run_layout.LayoutError("no folder"))) == 1
    assert capsys.readouterr().err == "x.py: error: no folder\n"
    with pytest.raises(KeyError):  # a bug is not an expected failure: it keeps its traceback
        cli.run_script("x.py", fails(KeyError("k")))


# ----------------------------------------------------------------------------------------------
# Geometry


def test_corner_windows():
    images = np.arange(2 * 3 * 7 * 9).reshape(2, 3, 7, 9)
    windows = geo.corner_windows(images, 4)
    assert windows.shape == (8, 3, 4, 4)
    for i in range(2):
        expected = [images[i, :, :4, :4], images[i, :, :4, 5:], images[i, :, 3:, :4], images[i, :, 3:, 5:]]
        for corner in range(4):
            np.testing.assert_array_equal(windows[4 * i + corner], expected[corner])


def test_shell_masks_and_sums_match_direct_computation():
    rng = np.random.default_rng(1)
    for size in (192, 24):
        masks = geo.shell_masks(size, SR)
        assert masks.shape == (11, size, size)
        maps = rng.uniform(0, 1, (3, size, size))
        sums = geo.shell_sums(maps, masks)
        for k in range(11):
            lo, hi = 4 * k, size - 4 * k
            expected = maps[:, lo:hi, lo:hi].sum(axis=(1, 2)) if hi > lo else np.zeros(3)
            np.testing.assert_allclose(sums[:, k], expected, rtol=1e-12)
            assert geo.mask_areas(size, SR)[k] == max(hi - lo, 0) ** 2 == masks[k].sum()
    # The paper's sizes: the region [4k, 192 - 4k) is what a model with output crop k predicts.
    assert geo.mask_areas(192, SR)[[0, 1, 5, 10]].tolist() == [192**2, 184**2, 152**2, 112**2]


def test_target_size_fits_the_images():
    assert geo.fit_target_size((1000, 3, 512, 512), SR) == 192
    assert geo.fit_target_size((5, 3, 104, 104), SR) == 96
    assert geo.fit_target_size((5, 3, 104, 104), SR, 24) == 24
    for bad in (100, 26):  # too large for 104-pixel images / not a multiple of 4
        with pytest.raises(cli.UserError, match="target size"):
            geo.fit_target_size((5, 3, 104, 104), SR, bad)
    assert geo.layer_nmse_center_size(192, SR) == 28
    with pytest.raises(cli.UserError, match="too small"):
        geo.layer_nmse_center_size(88, SR)


def test_find_models_and_hidden_channels(published, tmp_path):
    found = catalog.find_trained_models(published)
    assert [(m.preset, m.seed) for m in found] == [("lp2x3_oc5", 0), ("zero_oc5", 0), ("repl", 0), ("repl", 1)]
    assert [m.name for m in catalog.find_trained_models(published, ["repl"], [1])] == ["repl_s1"]
    assert published_models.read_hidden_channels(found[0].weights_path) == HIDDEN
    bad = tmp_path / "repl_s0.eqx"
    np.save(bad, np.zeros((2, 2)))
    with pytest.raises(cli.UserError, match="not an RVSR weights file"):
        published_models.read_hidden_channels(bad)
    with pytest.raises(run_layout.LayoutError, match="no trained models folder"):
        catalog.find_trained_models(tmp_path / "missing")


# ----------------------------------------------------------------------------------------------
# eval_mse


def direct_bilinear_sumsqs(images: np.ndarray, size: int) -> np.ndarray:
    """(11, N) mask sums of the squared error of plain bilinear upscaling, computed directly:
    window by window, mask by mask."""
    result = np.zeros((11, len(images)))
    for i, image in enumerate(images):
        errors = []
        for top in (0, IMAGE_SIZE - size - 8):
            for left in (0, IMAGE_SIZE - size - 8):
                window = image[None, :, top : top + size + 8, left : left + size + 8]
                inputs, targets = data_utils.preprocess_batch_for_superresolution_task(window, size, size, SR, False)
                upscaled = jax.image.resize(inputs, targets.shape, "bilinear")
                errors.append(
                    np.mean((np.asarray(upscaled, np.float64) - np.asarray(targets, np.float64)) ** 2, axis=(0, 1))
                )
        error = np.mean(errors, axis=0)
        for k in range(11):
            result[k, i] = error[4 * k : size - 4 * k, 4 * k : size - 4 * k].sum()
    return result


def test_eval_mse_matches_direct_computation(published, test_data, tmp_path, capsys):
    assert eval_mse.main(mse_args(published, tmp_path, test_data, "--presets", "repl", "--seeds", "0")) == 0
    sums = np.load(tmp_path / "output_crop_sumsqs" / "repl_s0.npy", allow_pickle=False)
    assert sums.dtype == np.float64 and sums.shape == (11, 3)
    expected = direct_bilinear_sumsqs(np.load(test_data), 24)
    np.testing.assert_allclose(sums, expected, rtol=2e-4, atol=1e-9)
    out = capsys.readouterr().out
    assert "repl" in out and "k=10" in out
    # The result describes itself: the geometry it was made with, beside the array.
    metadata = json.loads((tmp_path / "output_crop_sumsqs" / "repl_s0.json").read_text())
    assert metadata == {"target_size": 24, "sr_rate": 4, "num_images": 3, "output_crops": list(range(11))}


def test_sumsqs_metadata_round_trip_and_checks(tmp_path):
    meta = results_store.SumsqsMetadata(target_size=32, sr_rate=4, num_images=2)
    sums = np.arange(22, dtype=np.float64).reshape(11, 2)
    results_store.save_sumsqs(tmp_path, "repl_oc1", 3, sums, meta)
    loaded = results_store.load_sumsqs_results(tmp_path)[("repl_oc1", 3)]
    np.testing.assert_array_equal(loaded.sumsqs, sums)
    assert loaded.metadata == meta
    assert results_store.is_sumsqs_stored(tmp_path, "repl_oc1", 3, meta)
    assert not results_store.is_sumsqs_stored(tmp_path, "repl_oc1", 4, meta)
    with pytest.raises(cli.UserError, match="--overwrite"):  # same shape, another target size
        results_store.is_sumsqs_stored(tmp_path, "repl_oc1", 3, results_store.SumsqsMetadata(24, 4, 2))
    with pytest.raises(ValueError, match="metadata"):
        results_store.save_sumsqs(tmp_path, "repl", 0, sums, results_store.SumsqsMetadata(32, 4, 5))
    # Older results have no JSON: loaded with metadata None; a malformed JSON is an error.
    run_layout.output_crop_sumsqs_metadata_path(tmp_path, "repl_oc1", 3).unlink()
    assert results_store.load_sumsqs_results(tmp_path)[("repl_oc1", 3)].metadata is None
    run_layout.output_crop_sumsqs_metadata_path(tmp_path, "repl_oc1", 3).write_text('{"target_size": 32}')
    with pytest.raises(cli.UserError, match="not eval_mse.py metadata"):
        results_store.load_sumsqs_results(tmp_path)


def test_perfect_prediction_gives_zero_error(published, tmp_path):
    # Constant images: the targets are constant and so is the bilinear upscaling of the input.
    constant = np.broadcast_to(np.array([0.1, -0.2, 0.3], np.float32)[None, :, None, None], (2, 3, 40, 40))
    np.save(tmp_path / "constant.npy", np.ascontiguousarray(constant))
    args = mse_args(published, tmp_path, tmp_path / "constant.npy", "--presets", "repl", "--seeds", "0")
    assert eval_mse.main(args) == 0
    np.testing.assert_allclose(np.load(tmp_path / "output_crop_sumsqs" / "repl_s0.npy"), 0, atol=1e-9)


def test_eval_mse_resumes_after_interruption(published, test_data, tmp_path, monkeypatch):
    args = ["--presets", "repl"]
    assert eval_mse.main(mse_args(published, tmp_path / "whole", test_data, *args)) == 0

    calls = []
    original = em.output_crop_sumsqs

    def interrupted_at_second_model(*a, **k):
        calls.append(k["desc"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(em, "output_crop_sumsqs", interrupted_at_second_model)
    with pytest.raises(KeyboardInterrupt):
        eval_mse.main(mse_args(published, tmp_path / "parts", test_data, *args))
    stored = sorted(p.name for p in (tmp_path / "parts" / "output_crop_sumsqs").iterdir())
    # The interrupted unit left nothing, not even a partial file or its metadata.
    assert stored == ["repl_s0.json", "repl_s0.npy"]

    calls.clear()
    assert eval_mse.main(mse_args(published, tmp_path / "parts", test_data, *args)) == 0
    assert calls == ["repl_s1"]  # only the missing model was evaluated
    for name in ("repl_s0.npy", "repl_s1.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "parts" / "output_crop_sumsqs" / name),
                                      np.load(tmp_path / "whole" / "output_crop_sumsqs" / name))  # fmt: skip


def test_eval_mse_bad_input(published, test_data, tmp_path, capsys):
    def error_line(args) -> str:
        assert eval_mse.main(args) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    assert "cannot read test data" in error_line(mse_args(published, tmp_path, tmp_path / "none.npy"))
    assert "no trained models" in error_line(mse_args(published, tmp_path, test_data, "--presets", "lp6x7"))
    assert "only 3 images" in error_line(mse_args(published, tmp_path, test_data, "--num-images", "7"))
    # A stored result of another number of test images is not silently mixed in.
    (tmp_path / "output_crop_sumsqs").mkdir()
    np.save(tmp_path / "output_crop_sumsqs" / "repl_s0.npy", np.zeros((11, 5)))
    assert "--overwrite" in error_line(mse_args(published, tmp_path, test_data, "--presets", "repl", "--seeds", "0"))
    # Nor one of another target size (same shape: only the metadata tells them apart).
    assert (
        eval_mse.main(mse_args(published, tmp_path, test_data, "--presets", "repl", "--seeds", "0", "--overwrite")) == 0
    )
    capsys.readouterr()
    other_size = [*mse_args(published, tmp_path, test_data, "--presets", "repl", "--seeds", "0"), "--target-size", "16"]
    assert "--overwrite" in error_line(other_size)
    assert eval_mse.main(["--presets", "nonsense"]) == 2
    assert "eval_mse.py: error: argument --presets: unknown preset 'nonsense'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Layer NMSE


def test_ring_padding_errors_on_a_ramp():
    # A constant-gradient field: extr3 (and any polynomial extrapolation) continues it exactly,
    # repl misses by the slope on the sides and by both slopes at the corners.
    y, x = np.mgrid[0:10, 0:10].astype(np.float64)
    field = np.stack([0.5 * y + 0.25 * x, -0.1 * y + 2.0]).astype(np.float32)  # (2, 10, 10)
    paddings = ("zero", "repl", "extr3", "lp2x3")
    errors, deviations = jax.jit(lambda f: em.ring_padding_errors(f, 6, paddings))(field)
    true = field[:, 1:9, 1:9]
    ring = np.ones((8, 8), bool)
    ring[1:-1, 1:-1] = False
    true_ring = true[:, ring]
    np.testing.assert_allclose(errors[0], np.sum(true_ring**2), rtol=1e-5)  # zero
    # repl misses channel 0 by 0.5 on the top and bottom sides, 0.25 on the left and right,
    # 0.75 at the top-left and bottom-right corners, 0.25 at the other two; channel 1 by 0.1
    # on the top and bottom rows (corners included).
    repl = (12 * 0.5**2 + 12 * 0.25**2 + 2 * 0.75**2 + 2 * 0.25**2) + 16 * 0.1**2
    np.testing.assert_allclose(errors[1], repl, rtol=1e-4)
    assert errors[2] < 1e-8 * repl  # extr3
    assert np.isfinite(errors[3])
    expected_deviations = np.sum((true_ring - true_ring.mean(axis=1, keepdims=True)) ** 2)
    np.testing.assert_allclose(deviations, expected_deviations, rtol=1e-5)


@pytest.mark.slow
def test_eval_layer_nmse_end_to_end(published, test_data, tmp_path, monkeypatch):
    args = ["--models-folder", str(published), "--results-folder", str(tmp_path), "--test-data", str(test_data),
            "--target-size", "96", "--num-images", "2", "--batch-size", "2"]  # fmt: skip
    assert eval_layer_nmse.main(args) == 0
    stored = json.loads((tmp_path / "layer_nmse.json").read_text())
    assert sorted(stored) == ["lp2x3_oc5", "zero_oc5"]
    for by_padding in stored.values():
        assert list(by_padding) == list(em.LAYER_NMSE_PADDINGS)
        for by_seed in by_padding.values():
            assert list(by_seed) == ["0"] and len(by_seed["0"]) == 11 and np.all(np.isfinite(by_seed["0"]))

    # Zero and repl padding checked directly on the model's feature maps.
    model, state = published_models.load_trained_model(
        run_layout.TrainedModel("zero_oc5", 0, published), output_crop=10
    )
    windows = geo.corner_windows(np.load(test_data)[:2], 104)
    inputs, _ = em.inputs_and_targets(windows, SR)
    sums = np.zeros((3, 11))  # zero errors, repl errors, deviations
    outs, intermediates = eqx.filter_jit(jax.vmap(lambda x: model(x, state, get_intermediates=True)[::2]))(inputs)
    for i, x in enumerate(inputs):
        for layer, fmap in enumerate([x, *(m[i] for m in intermediates), outs[i]]):
            fmap = np.asarray(fmap, np.float64)
            o = (fmap.shape[-1] - 4) // 2  # center 96 / 4 - 20 = 4 pixels
            true = fmap[:, o - 1 : o + 5, o - 1 : o + 5]
            repl = np.pad(true[:, 1:-1, 1:-1], ((0, 0), (1, 1), (1, 1)), mode="edge")
            ring = np.ones((6, 6), bool)
            ring[1:-1, 1:-1] = False
            sums[0, layer] += np.sum(true[:, ring] ** 2)
            sums[1, layer] += np.sum((repl - true)[:, ring] ** 2)
            sums[2, layer] += np.sum((true[:, ring] - true[:, ring].mean(axis=1, keepdims=True)) ** 2)
    np.testing.assert_allclose(stored["zero_oc5"]["zero"]["0"], sums[0] / sums[2], rtol=1e-3)
    np.testing.assert_allclose(stored["zero_oc5"]["repl"]["0"], sums[1] / sums[2], rtol=1e-3)

    # A rerun skips the stored models.
    monkeypatch.setattr(em, "layer_nmse", lambda *a, **k: pytest.fail("recomputed a stored model"))
    assert eval_layer_nmse.main(args) == 0
    assert json.loads((tmp_path / "layer_nmse.json").read_text()) == stored


# ----------------------------------------------------------------------------------------------
# Timing


def test_largest_batch_size_search():
    def search(limit: int, start: int, maximum: int) -> tuple[int, list[int]]:
        tried = []

        def runs(size: int) -> bool:
            tried.append(size)
            return size <= limit

        return ts.largest_batch_size(runs, start, maximum), tried

    assert search(700, 512, 8192) == (700, [512, 1024, 768, 640, 704, 672, 688, 696, 700, 702, 701])
    assert search(300, 512, 8192)[0] == 300  # the start fails: bisect below it
    assert search(10**6, 512, 2000) == (2000, [512, 1024, 2000])  # capped
    assert search(1, 4, 100) == (1, [4, 2, 1])
    with pytest.raises(cli.UserError, match="batch size 1"):
        search(0, 4, 100)


class FakeJob:
    """Stands in for job.py: runs out of memory (exit 3) above ``limit`` (``timed_limit`` for
    timed runs); writes step times like job.py."""

    def __init__(self, limit: int, timed_limit: int | None = None, fail_preset: str | None = None):
        self.limit, self.timed_limit, self.fail_preset = limit, timed_limit or limit, fail_preset
        self.calls: list[dict] = []

    def __call__(self, args: list[str]) -> ts.JobResult:
        values = dict(arg.split("=", 1) for arg in args)
        self.calls.append(values)
        if values["preset"] == self.fail_preset:
            return ts.JobResult(1, "job.py: error: test data file not found: x.npy")
        batch = int(values["batch_size"])
        timed = "timing_filename" in values
        if batch > (self.timed_limit if timed else self.limit):
            return ts.JobResult(3, "job.py: out of memory: RESOURCE_EXHAUSTED")
        if timed:
            steps = int(values.get("train_steps") or values["inference_steps"])
            Path(values["timing_filename"]).write_text(json.dumps({"step_times": [2.0] + [0.5] * (steps - 1)}))
        return ts.JobResult(0, "")


def test_inference_timing_with_fake_jobs(tmp_path, monkeypatch, capsys):
    fake = FakeJob(limit=37, timed_limit=35)
    monkeypatch.setattr(ts, "subprocess_job_runner", lambda memory_limit_gb=None: fake)
    args = ["--results-folder", str(tmp_path), "--presets", "zero-repl", "repl_oc5", "--start-batch-size", "8",
            "--steps", "4", "--cooldown", "1.5", "--target-size", "48"]  # fmt: skip
    assert eval_inference_time.main(args) == 0
    timing = json.loads((tmp_path / "timing.json").read_text())
    # Search finds 37; the timed run fails at 37 and 36 and runs at 35.
    assert timing["largest_inference_batch_sizes"] == {"zero-repl": 35, "repl_oc5": 35}
    assert timing["inference_step_times"]["zero-repl"] == [2.0, 0.5, 0.5, 0.5]
    assert timing["inference_target_sizes"] == {"zero-repl": 48, "repl_oc5": 48}
    timed_calls = [c for c in fake.calls if "timing_filename" in c]
    assert {c["cooldown"] for c in timed_calls} == {"1.5"} and {c["inference_steps"] for c in timed_calls} == {"4"}
    assert all(c["image_shape"] == "[3,48,48]" for c in fake.calls)
    # Throughput: batch x (T - 8 oc)^2 / mean time without the first step.
    rows = {t.preset: t for t in ts.throughputs(timing, "inference")}
    assert rows["zero-repl"].throughput == pytest.approx(35 * 48**2 / 0.5)
    assert rows["repl_oc5"].throughput == pytest.approx(35 * (48 - 8 * 5) ** 2 / 0.5)
    assert rows["repl_oc5"].batch_size == 35 and rows["repl_oc5"].mean_step_time == 0.5
    assert "throughput" in capsys.readouterr().out

    # A rerun skips the presets done.
    fake.calls.clear()
    assert eval_inference_time.main(args) == 0
    assert fake.calls == []

    # A fixed size (start = maximum) is not searched: the timed run tries it and smaller ones.
    fixed = [
        *args[2:],
        "--results-folder",
        str(tmp_path / "fixed"),
        "--start-batch-size",
        "37",
        "--max-batch-size",
        "37",
    ]
    assert eval_inference_time.main(fixed) == 0
    assert all("timing_filename" in c for c in fake.calls)
    assert (
        json.loads((tmp_path / "fixed" / "timing.json").read_text())["largest_inference_batch_sizes"]["repl_oc5"] == 35
    )


def test_train_timing_interrupted_resumes_and_reports_errors(test_data, tmp_path, monkeypatch, capsys):
    fake = FakeJob(limit=2)
    monkeypatch.setattr(ts, "subprocess_job_runner", lambda memory_limit_gb=None: fake)
    args = ["--results-folder", str(tmp_path), "--presets", "repl", "lp2x3", "--start-batch-size", "1",
            "--steps", "3", "--test-data", str(test_data), "--target-size", "24"]  # fmt: skip

    def interrupt_at_lp2x3(values_args):
        if "preset=lp2x3" in values_args:
            raise KeyboardInterrupt
        return FakeJob.__call__(fake, values_args)

    monkeypatch.setattr(ts, "subprocess_job_runner", lambda memory_limit_gb=None: interrupt_at_lp2x3)
    with pytest.raises(KeyboardInterrupt):
        eval_train_time.main(args)
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing == {"largest_train_batch_sizes": {"repl": 2}, "train_target_sizes": {"repl": 24},
                      "train_step_times": {"repl": [2.0, 0.5, 0.5]}}  # fmt: skip
    probe = next(c for c in fake.calls if "timing_filename" not in c)
    assert (probe["save"], probe["train_steps"], probe["train_data_path"]) == ("False", "5", str(test_data))

    monkeypatch.setattr(ts, "subprocess_job_runner", lambda memory_limit_gb=None: fake)
    fake.calls.clear()
    assert eval_train_time.main(args) == 0
    assert {c["preset"] for c in fake.calls} == {"lp2x3"}
    # The 3 test images cap the batch size (each batch draws distinct images).
    fake.limit = fake.timed_limit = 100
    assert eval_train_time.main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "timing.json").read_text())["largest_train_batch_sizes"] == {"repl": 3, "lp2x3": 3}
    capsys.readouterr()

    # A failure other than out of memory stops with job.py's message.
    fake.fail_preset = "repl"
    assert eval_train_time.main([*args, "--overwrite"]) == 1
    err = capsys.readouterr().err  # progress bars, then the error line
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert (
        last.startswith("eval_train_time.py: error: repl")
        and "exit status 1" in last
        and "test data file not found" in last
    )


# The child process only calls setrlimit between fork and exec, which is safe in a process
# that runs JAX threads.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_real_job_out_of_memory_is_detected(tmp_path):
    """job.py under an address-space limit: a batch too large exits 3, which the search
    reads as "too large"."""
    runner = ts.subprocess_job_runner(memory_limit_gb=3)
    options = ts.TimingOptions("inference", 1, 1, 2, 0.0, target_size=32)
    result = runner(ts.timing_job_args("zero-repl", 10**6, 2, options))
    assert result.returncode == 3 and "out of memory" in result.message


# ----------------------------------------------------------------------------------------------
# bilinear_test.py


def test_bilinear_upscaling_replicates_edges(capsys):
    assert bilinear_test.main([]) == 0
    out = capsys.readouterr().out
    assert "JAX: max abs difference" in out and "NOT" not in out
    assert "PyTorch" in out and "OpenCV" in out
    assert jnp.asarray(1.0).dtype == jnp.float32  # float64 stayed inside the JAX check
