"""Figures and tables of the paper (SPEC 9), made from the results folder and trained models.

``make_figures_and_tables.ipynb`` calls ``run`` for each entry of ``STEPS`` (``make_all`` does
all of them); each ``make_*`` function here writes one figure (PDF and PNG) or one table (CSV,
Markdown, LaTeX) into the graphs folder and returns the paths it wrote. A piece whose inputs
are missing or unreadable raises ``MissingResults`` (or eval_common's ``EvalError``); ``run``
prints the reason and moves on, so partial results give the figures they can.

Inputs (SPEC 7 and 8; folders from ``paths_config``, overridable by ``LPPAD_*`` variables):

- ``results/output_crop_sumsqs/{preset}_s{seed}.npy``: float64 (11, N_test); row k is each
  image's squared error summed over the output without its ``k`` outermost 4-pixel shells,
- ``results/timing.json``, ``results/layer_nmse.json``,
- ``results/trained_models/{preset}_s{seed}.eqx`` and ``..._{train,test}_loss.parquet``,
- the test set ``dataset/test_data.npy`` (for the image figures).

Definitions used throughout. "Crop c" is the output without its ``c`` outermost shells, the
region a model trained with output crop ``oc = c`` predicts; "shell k" is the ring between
crop k and crop k + 1 (shell 10 is the whole remaining centre). A run succeeded when its
exported model exists and its last test loss is finite. Statistics over seeds: each seed's
mean over the test images, then the mean over seeds with a 95% percentile-bootstrap
confidence interval of that mean (resampling seeds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.linalg
from matplotlib import font_manager

import data_utils
import eval_common
import padding
import paths_config
import presets as presets_module

# ----------------------------------------------------------------------------------------------
# Constants of the paper's figures

SR_RATE = 4
NUM_CROPS = eval_common.NUM_MASKS  # crops / shells 0..10
PAPER_OUTPUT_SIZE = eval_common.DEFAULT_TARGET_SIZE  # evaluated outputs: 192x192 of 200x200 windows
PRESET_ORDER: tuple[str, ...] = tuple(presets_module.presets)
PANEL_CROPS = (0, 1, 5)
# The three paddings compared across output crops, and their preset at each crop.
COMPARED_PRESETS: dict[str, dict[int, str]] = {
    "lp2x3": {0: "lp2x3", 1: "lp2x3_oc1", 5: "lp2x3_oc5"},
    "repl": {0: "repl", 1: "repl_oc1", 5: "repl_oc5"},
    "zero": {0: "zero-repl", 1: "zero_oc1", 5: "zero_oc5"},
}
ZERO_BASELINE = COMPARED_PRESETS["zero"]
PADDING_SAMPLE_METHODS = (
    "lp1x1cs", "lp2x1", "lp2x1cs", "lp2x3", "lp2x5", "lp3x3", "lp4x5", "lp6x7", "zero", "repl", "extr2", "extr3",
)
THEORY_METHODS = ("zero", "repl", "extr2", "extr3", "lp1x1cs", "lp2x1", "lp3x1")
TILING_PADDINGS: tuple[str, ...] = tuple(COMPARED_PRESETS)
LAYER_NMSE_PRESETS = eval_common.LAYER_NMSE_PRESETS
LAYER_NMSE_PADDINGS = eval_common.LAYER_NMSE_PADDINGS
SAMPLE_TEST_IMAGES = (2, 7, 24, 36)  # a subset of the trainer's sample images
FONT_PREFERENCE = ("Times New Roman", "Liberation Serif")
PADDING_COLORS = {"lp2x3": "tab:blue", "repl": "tab:orange", "zero": "tab:green"}
CROP_COLORS = {0: "C0", 1: "C1", 5: "C2"}
CROP_MARKERS = {0: "o", 1: "s", 5: "^"}
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


class MissingResults(Exception):
    """The inputs of a figure or table are missing; the message says which."""


def preset_output_crop(preset: str) -> int:
    """The output crop ``oc`` a preset is trained with."""
    return presets_module.get_preset_hpars(preset)["model_hpars"]["output_crop"]


def preset_sort_key(preset: str) -> tuple[int, str]:
    """Paper order first, unknown names after, alphabetically."""
    return (PRESET_ORDER.index(preset), "") if preset in PRESET_ORDER else (len(PRESET_ORDER), preset)


# ----------------------------------------------------------------------------------------------
# Where things are


@dataclasses.dataclass(frozen=True)
class Context:
    """Input and output locations of the figures.

    ``output_size`` is the size T of the outputs that eval_mse.py evaluated (its
    ``--target-size``); None means its default, 192 or the largest that fits smaller test
    images. The sums of squares don't record it, and it turns them into means.
    """

    results_folder: Path
    trained_models_folder: Path
    graphs_folder: Path
    test_data_path: Path
    output_size: int | None = None

    @classmethod
    def from_paths(cls, paths: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> Context:
        """The locations of ``paths_config`` (with its ``LPPAD_*`` overrides); the output size
        from ``LPPAD_EVAL_TARGET_SIZE`` if set."""
        environ = os.environ if environ is None else environ
        paths = paths_config.get_paths(environ) if paths is None else paths
        output_size = environ.get("LPPAD_EVAL_TARGET_SIZE")
        return cls(
            Path(paths["results_folder"]),
            Path(paths["trained_models_folder"]),
            Path(paths["graphs_folder"]),
            Path(paths_config.test_data_path(paths)),
            None if output_size is None else int(output_size),
        )

    def evaluated_output_size(self) -> int:
        """T of the MSE results: ``output_size``, else eval_mse.py's default for the test set."""
        if self.output_size is not None:
            return self.output_size
        if not self.test_data_path.is_file():
            return PAPER_OUTPUT_SIZE
        shape = np.load(self.test_data_path, mmap_mode="r", allow_pickle=False).shape
        return eval_common.fit_target_size(shape, SR_RATE)

    @property
    def sumsqs_folder(self) -> Path:
        return self.results_folder / eval_common.OUTPUT_CROP_SUMSQS_FOLDER

    @property
    def timing_path(self) -> Path:
        return self.results_folder / eval_common.TIMING_FILENAME

    @property
    def layer_nmse_path(self) -> Path:
        return self.results_folder / eval_common.LAYER_NMSE_FILENAME


# ----------------------------------------------------------------------------------------------
# Matplotlib set-up and output


def choose_font(preference: Sequence[str] = FONT_PREFERENCE) -> str | None:
    """The first installed font family of ``preference``, or None (use matplotlib's default)."""
    for family in preference:
        try:
            font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except (ValueError, RuntimeError):
            continue
        return family
    return None


def setup_matplotlib(preference: Sequence[str] = FONT_PREFERENCE) -> str:
    """Paper style: a Times-like serif (Times New Roman, else Liberation Serif, else the
    default serif) with STIX maths. Never fails; returns the family in use."""
    family = choose_font(preference)
    serif = list(plt.rcParams["font.serif"])
    plt.rcParams.update({
        "font.family": "serif",
        "font.serif": ([family] if family else []) + [f for f in serif if f != family],
        "mathtext.fontset": "stix",  # Times-like maths, shipped with matplotlib
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "savefig.dpi": 200,
        "pdf.fonttype": 42,  # embed TrueType, so the PDF text stays text
    })
    chosen = family or "default serif"
    print(f"font: {chosen}")
    return chosen


def save_figure(fig: plt.Figure, name: str, folder: Path) -> list[Path]:
    """Write ``{folder}/{name}.pdf`` and ``.png``. The figure is closed unless a notebook
    (inline backend) will display it."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".pdf", ".png"):
        path = folder / f"{name}{suffix}"
        fig.savefig(path, bbox_inches="tight")
        written.append(path)
    if "inline" not in matplotlib.get_backend():
        plt.close(fig)
    return written


def _latex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "✓": r"\checkmark", "✗": r"$\times$", "±": r"$\pm$"}
    return "".join(replacements.get(c, c) for c in text)


def _format_cell(value: Any, fmt: str | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if fmt == "d":
        return str(int(value))  # pandas rows hold integers as floats
    return format(value, fmt) if fmt else str(value)


def write_table(table: pd.DataFrame, name: str, folder: Path, formats: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None) -> list[Path]:
    """Write ``table`` as ``{name}.csv`` (full precision, column names as they are), and for
    reading as ``.md`` and ``.tex`` (booktabs) with headers from ``labels`` and numbers
    formatted by ``formats`` (column -> format spec); NaN gives an empty cell."""
    formats, labels = formats or {}, labels or {}
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, tex_path = (folder / f"{name}{s}" for s in (".csv", ".md", ".tex"))
    table.to_csv(csv_path)
    header = [str(table.index.name or "")] + [labels.get(c, str(c)) for c in table.columns]
    rows = [[str(index)] + [_format_cell(v, formats.get(c)) for c, v in row.items()] for index, row in table.iterrows()]
    md = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * len(table.columns)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    tex = [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
           " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    tex += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in rows]
    tex += [r"\bottomrule", r"\end{tabular}"]
    tex_path.write_text("\n".join(tex) + "\n", encoding="utf-8")
    return [csv_path, md_path, tex_path]


# ----------------------------------------------------------------------------------------------
# Loading results


def _runs_in(folder: Path, suffix: str) -> dict[tuple[str, int], Path]:
    """``{(preset, seed): path}`` of the files ``{preset}_s{seed}{suffix}`` in ``folder``."""
    found = {}
    for path in folder.glob(f"*_s*{suffix}") if folder.is_dir() else []:
        parsed = eval_common.parse_model_stem(path.name[: -len(suffix)])
        if parsed is not None:
            found[parsed] = path
    return found


def load_sumsqs(ctx: Context) -> dict[tuple[str, int], np.ndarray]:
    """``{(preset, seed): sums of squares (11, N)}`` from ``output_crop_sumsqs``; files of the
    wrong shape are left out with a message."""
    sumsqs = {}
    for preset, by_seed in eval_common.load_output_crop_sumsqs(ctx.results_folder).items():
        for seed, array in by_seed.items():
            if array.ndim != 2 or array.shape[0] != NUM_CROPS or array.shape[1] == 0:
                print(f"leaving out {preset} seed {seed}: sums of squares of shape {array.shape}, expected ({NUM_CROPS}, N)")
                continue
            sumsqs[(preset, seed)] = array.astype(np.float64)
    if not sumsqs:
        raise MissingResults(f"no MSE results in {ctx.sumsqs_folder} (run eval_mse.py)")
    return sumsqs


def load_json(path: Path, producer: str) -> dict:
    """A results JSON file, or ``MissingResults`` naming the script that makes it."""
    if not path.is_file():
        raise MissingResults(f"{path} not found (run {producer})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_test_loss_histories(ctx: Context) -> dict[tuple[str, int], pd.Series]:
    """``{(preset, seed): test loss (float64) indexed by step}`` from the exported files."""
    histories = {}
    for run, path in _runs_in(ctx.trained_models_folder, "_test_loss.parquet").items():
        steps, losses = eval_common.read_loss_history(path, "test")
        histories[run] = pd.Series(losses.astype(np.float64), index=steps.astype(np.int64))
    if not histories:
        raise MissingResults(f"no test loss histories in {ctx.trained_models_folder} (run export_trained_models.py)")
    return histories


def run_status(ctx: Context) -> dict[tuple[str, int], bool]:
    """``{(preset, seed): succeeded}`` for every exported run: success means a model file and,
    where the test loss history exists, a finite last test loss."""
    models = _runs_in(ctx.trained_models_folder, ".eqx")
    histories = _runs_in(ctx.trained_models_folder, "_test_loss.parquet")
    status = {}
    for run in set(models) | set(histories) | set(_runs_in(ctx.trained_models_folder, "_train_loss.parquet")):
        ok = run in models
        if ok and run in histories:
            _, losses = eval_common.read_loss_history(histories[run], "test")
            ok = len(losses) > 0 and bool(np.isfinite(losses[-1]))
        status[run] = ok
    if not status:
        raise MissingResults(f"no exported runs in {ctx.trained_models_folder} (run export_trained_models.py)")
    return status


def load_test_images(ctx: Context, min_size: int) -> np.ndarray:
    """The test set ``(N, 3, H, W)`` (memory-mapped), which must be at least ``min_size`` pixels."""
    if not ctx.test_data_path.is_file():
        raise MissingResults(f"test data {ctx.test_data_path} not found (run make_dataset_npys.py)")
    data = np.load(ctx.test_data_path, mmap_mode="r", allow_pickle=False)
    if data.ndim != 4 or data.shape[1] != 3 or min(data.shape[2:]) < min_size:
        raise MissingResults(f"test data of shape {data.shape}: need (N, 3, H, W) with H, W >= {min_size}")
    return data


# ----------------------------------------------------------------------------------------------
# Statistics


def bootstrap_ci(values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``; NaNs for fewer
    than two values. Fixed ``seed``, so figures are reproducible."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def crop_and_shell_mse(sumsqs: np.ndarray, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Test MSE over crop k and over shell k (k = 0..10) from one run's sums of squares
    (11, N): means over images of per-image MSEs (all images weigh the same). NaN where a
    crop or shell is empty (small smoke-run outputs)."""
    areas = eval_common.mask_areas(output_size, SR_RATE)
    mean_sums = sumsqs.mean(axis=1)
    ring_sums = mean_sums - np.append(mean_sums[1:], 0.0)
    ring_areas = areas - np.append(areas[1:], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(areas > 0, mean_sums / areas, np.nan), np.where(ring_areas > 0, ring_sums / ring_areas, np.nan)


def mse_table(sumsqs: Mapping[tuple[str, int], np.ndarray], output_size: int) -> pd.DataFrame:
    """One row per (preset, seed): columns ``crop_0..10`` and ``shell_0..10`` (MSEs), and
    ``oc`` (the preset's output crop). Runs with non-finite errors are left out, with a message."""
    rows = []
    for (preset, seed), array in sumsqs.items():
        crop_mse, shell_mse = crop_and_shell_mse(array, output_size)
        if not np.isfinite(crop_mse[0]):
            print(f"leaving out {preset} seed {seed}: non-finite errors")
            continue
        row = {"preset": preset, "seed": seed, "oc": preset_output_crop(preset)}
        row.update({f"crop_{k}": v for k, v in enumerate(crop_mse)})
        row.update({f"shell_{k}": v for k, v in enumerate(shell_mse)})
        rows.append(row)
    if not rows:
        raise MissingResults("no finite MSE results")
    table = pd.DataFrame(rows)
    table["order"] = table["preset"].map(preset_sort_key)
    return table.sort_values(["order", "seed"]).drop(columns="order").set_index(["preset", "seed"])


def _step_times(value: float | Sequence[float]) -> list[float]:
    """Step times of a timing entry, which SPEC 8 allows to be a list of step times or one
    value, an already averaged time. The averages skip the first step, so a single value
    becomes two copies of itself."""
    return [float(value)] * 2 if isinstance(value, (int, float)) else [float(t) for t in value]


def throughput_table(timing: Mapping[str, Any]) -> pd.DataFrame:
    """Per preset: largest batch sizes and throughputs as eval_common defines them. Training
    in images/s; inference in 10^6 output pixels (of one channel) per second."""
    rows: dict[str, dict[str, float]] = {}
    for mode in ("train", "inference"):
        size_key, times_key, target_key = eval_common.TIMING_KEYS[mode]
        for preset, times in timing.get(times_key, {}).items():
            batch = timing.get(size_key, {}).get(preset)
            if batch is None or preset not in presets_module.presets:
                continue
            if mode == "train":
                throughput = eval_common.train_throughput(batch, _step_times(times))
            else:
                target = timing.get(target_key, {}).get(preset, PAPER_OUTPUT_SIZE)
                throughput = eval_common.inference_throughput(
                    batch, _step_times(times), preset_output_crop(preset), target, SR_RATE) / 1e6
            rows.setdefault(preset, {}).update({f"{mode}_batch": float(batch), f"{mode}_throughput": throughput})
    columns = ["train_batch", "train_throughput", "inference_batch", "inference_throughput"]
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)


def common_successful_seeds(status: Mapping[tuple[str, int], bool], presets: Iterable[str]) -> list[int]:
    """Seeds for which every one of ``presets`` trained successfully."""
    seed_sets = [{s for (p, s), ok in status.items() if ok and p == preset} for preset in presets]
    return sorted(set.intersection(*seed_sets)) if seed_sets else []


# ----------------------------------------------------------------------------------------------
# Theory: one-step extrapolation of a process with a Gaussian autocorrelation


def gaussian_autocorrelation(lag: np.ndarray, sigma: float) -> np.ndarray:
    """``k(d) = exp(-d^2 / (2 sigma^2))``: the normalised autocorrelation of the process."""
    return np.exp(-np.square(lag) / (2.0 * sigma**2))


def prediction_error_filter(method: str, sigma: float) -> np.ndarray:
    """``a`` with ``a[0] = -1`` (the predicted sample) and ``a[i]`` the weight of the sample
    ``i`` steps back from it, so that the prediction error is ``sum_i a_i x_i``.

    zero predicts 0, repl the nearest sample, extrN the polynomial through the N nearest
    (the padding library's weights), and lpNx1 (lp1x1cs = lp1x1) the optimal linear
    predictor of order N: the normal equations ``sum_j r_ij c_j = r_0i`` with ``r_ij = k(j - i)``.
    """
    if method == "zero":
        return np.array([-1.0])
    if method == "repl":
        return np.array([-1.0, 1.0])
    if match := re.fullmatch(r"extr(\d+)", method):
        weights = np.asarray(padding.make_extr_pad_weights(1, int(match[1]))[:, 0], dtype=np.float64)
        return np.concatenate([[-1.0], weights[::-1]])  # the library orders farthest first
    if match := re.fullmatch(r"lp(\d+)x1(cs)?", method):
        order = int(match[1])
        lags = np.arange(order + 1)
        r = gaussian_autocorrelation(lags, sigma)
        system = scipy.linalg.toeplitz(r[:order])
        coefs = scipy.linalg.solve(system, r[1:], assume_a="pos")
        return np.concatenate([[-1.0], coefs])
    raise ValueError(f"unknown extrapolation method {method!r}")


def one_step_nmse(method: str, sigma: float) -> float:
    """Normalised mean square error of one-step extrapolation: ``sum_ij a_i a_j k(j - i)``."""
    a = prediction_error_filter(method, sigma)
    lags = np.arange(len(a))
    return float(a @ gaussian_autocorrelation(lags[None, :] - lags[:, None], sigma) @ a)


# ----------------------------------------------------------------------------------------------
# Figures


def _image_to_srgb(x: np.ndarray) -> np.ndarray:
    """A (3, y, x) image in the paper's units -> (y, x, 3) uint8 sRGB with reflectance 0.8 white."""
    return data_utils.np_linear_to_srgb((np.moveaxis(np.asarray(x), 0, -1) * 0.5 + 0.5) / 0.8)


def make_theory_nmse(ctx: Context) -> list[Path]:
    """NMSE of one-step extrapolation vs the Gaussian sigma, for the SPEC 9 methods."""
    sigmas = np.geomspace(0.1, 10.0, 241)
    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    styles = {"zero": "k-", "repl": "C1-", "extr2": "C3--", "extr3": "C4--",
              "lp1x1cs": "C0-", "lp2x1": "C2-", "lp3x1": "C5-"}
    for method in THEORY_METHODS:
        ax.plot(sigmas, [one_step_nmse(method, s) for s in sigmas], styles[method], lw=1.2, label=method)
    ax.set(xscale="log", yscale="log", xlabel=r"Gaussian blur $\sigma$ (pixels)",
           ylabel="NMSE of one-step extrapolation", xlim=(sigmas[0], sigmas[-1]))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(ncol=2, loc="lower left", frameon=False)
    return save_figure(fig, "theory_nmse_vs_blur", ctx.graphs_folder)


def padding_sample_tiles(crops: np.ndarray, methods: Sequence[str]) -> np.ndarray:
    """Rows of tiles: the crops ``(n, 3, 2m, 2m)`` themselves, then for each method their
    ``m x m`` centres padded back to ``2m x 2m``: ``(1 + len(methods), n, 3, 2m, 2m)``."""
    size = crops.shape[-1]
    margin = size // 4
    centres = np.asarray(crops[:, :, margin:size - margin, margin:size - margin], dtype=np.float32)
    rows = [np.asarray(crops, dtype=np.float32)]
    for method in methods:
        layer = padding.make_padding_layer(method, ((margin, margin), (margin, margin)))
        rows.append(np.asarray(jax.jit(jax.vmap(layer))(centres)))
    return np.stack(rows)


def make_padding_samples(ctx: Context, count: int = 10, size: int = 96) -> list[Path]:
    """48x48 centres of ``count`` test crops (96x96, centred in test images 0, 1, ...) padded
    by 24 with every method; the crops themselves (the target) in the first row."""
    data = load_test_images(ctx, size)
    count = min(count, len(data))
    top, left = (data.shape[2] - size) // 2, (data.shape[3] - size) // 2
    crops = np.asarray(data[:count, :, top:top + size, left:left + size])
    tiles = padding_sample_tiles(crops, PADDING_SAMPLE_METHODS)
    mosaic = np.concatenate([np.concatenate([_image_to_srgb(t) for t in row], axis=1) for row in tiles], axis=0)
    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for row, label in enumerate(("Target",) + PADDING_SAMPLE_METHODS):
        ax.text(4, row * size + 4, label, va="top", ha="left", fontsize=9,
                family="monospace" if row else None,
                bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.75))
    return save_figure(fig, "padding_samples", ctx.graphs_folder)


def _preprocess(images: np.ndarray, target_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-cropped low-res inputs and high-res targets with ``target_size`` (SPEC 4)."""
    inputs, targets = data_utils.preprocess_batch_for_superresolution_task(
        np.asarray(images, dtype=np.float32), target_size, target_size, SR_RATE, random_crop=False)
    return np.asarray(inputs), np.asarray(targets)


def make_inputs_and_targets(ctx: Context, indices: Sequence[int] = SAMPLE_TEST_IMAGES) -> list[Path]:
    """Low-res inputs (top) and high-res targets (bottom) of a few test images, centre crops
    as in the test loss (48x48 and 192x192 for full-size data)."""
    data = load_test_images(ctx, 4 * SR_RATE)
    target_size = min(PAPER_OUTPUT_SIZE, (min(data.shape[2:]) - 2 * SR_RATE) // SR_RATE * SR_RATE)
    indices = [i for i in indices if i < len(data)] or list(range(min(4, len(data))))
    inputs, targets = _preprocess(data[indices], target_size)
    fig, axes = plt.subplots(2, len(indices), figsize=(1.6 * len(indices), 3.4), squeeze=False)
    for column, index in enumerate(indices):
        axes[0, column].imshow(_image_to_srgb(inputs[column]), interpolation="nearest")
        axes[1, column].imshow(_image_to_srgb(targets[column]), interpolation="nearest")
        axes[0, column].set_title(f"Test image {index}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel(f"Input {inputs.shape[-1]}×{inputs.shape[-1]}")
    axes[1, 0].set_ylabel(f"Target {target_size}×{target_size}")
    fig.tight_layout()
    return save_figure(fig, "inputs_and_targets", ctx.graphs_folder)


def tiled_and_untiled(model, state, inputs: np.ndarray, tile: int, output_crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's output for ``inputs`` (3, R, R), ``R = 2 tile - 2 oc``: stitched from the
    four ``tile x tile`` input tiles of a 2x2 tiling (overlapping by ``2 oc`` so that their
    outputs abut), and in one piece. Both are (3, 8 step, 8 step), ``step = tile - 2 oc``."""
    import tiling  # the tiling computation superresolve.py uses too

    step = tile - 2 * output_crop
    if inputs.shape[-1] != tile + step:
        raise ValueError(f"inputs of size {inputs.shape[-1]} do not match tile {tile} and output crop {output_crop}")
    apply = tiling.make_batch_apply(model, state)
    untiled = apply(np.asarray(inputs)[None])[0]
    # Cores of `step` pixels starting at oc: the read windows are the four tile x tile squares.
    stitched = tiling.stitch(apply, np.asarray(inputs), step, halo=0, output_crop=output_crop, sr_rate=SR_RATE)
    return stitched, np.asarray(untiled)


def tile_size(image_size: int, output_crop: int, paper_tile: int = 48) -> int:
    """The paper's 48-pixel input tile, or the largest that fits ``image_size`` (smaller test
    images): the 2x2 tiling of ``R = 2 tile - 2 oc`` input pixels needs ``4 R + 8`` pixels."""
    fitting = ((image_size - 2 * SR_RATE) // SR_RATE + 2 * output_crop) // 2
    return min(paper_tile, fitting)


def _centre_window(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` window of ``image`` (..., y, x), or all of it if smaller."""
    half = min(size, image.shape[-1]) // 2
    centre = image.shape[-1] // 2
    return image[..., centre - half:centre + half, centre - half:centre + half]


def make_tiled_outputs(ctx: Context, image_index: int = SAMPLE_TEST_IMAGES[0], window: int = 96) -> list[Path]:
    """Outputs stitched from 2x2 tiles, around the tile corner (the image centre), and their
    absolute deviation from the untiled output (mean over channels), for the paddings of
    ``TILING_PADDINGS`` at output crops 0, 1 and 5; one trained model (the lowest successful
    seed) each. The first column shows the target of the same area."""
    status = run_status(ctx)
    chosen = {}
    for padding_name in TILING_PADDINGS:
        for crop, preset in COMPARED_PRESETS[padding_name].items():
            seeds = sorted(s for (p, s), ok in status.items() if ok and p == preset)
            if seeds:
                chosen[(padding_name, crop)] = (preset, seeds[0])
    if not chosen:
        raise MissingResults(f"no trained {' / '.join(TILING_PADDINGS)} models at output crops {PANEL_CROPS}")
    data = load_test_images(ctx, 4 * SR_RATE)
    image = np.asarray(data[min(image_index, len(data) - 1)])
    results, targets = {}, {}
    for (padding_name, crop), (preset, seed) in chosen.items():
        tile = tile_size(min(image.shape[1:]), crop)
        if tile - 2 * crop < 2:
            print(f"leaving out {preset}: test images too small for a 2x2 tiling at output crop {crop}")
            continue
        inputs, target = _preprocess(image[None], SR_RATE * (2 * tile - 2 * crop))
        model, state = eval_common.load_trained_model(
            eval_common.TrainedModel(preset, seed, ctx.trained_models_folder), crop)
        stitched, untiled = tiled_and_untiled(model, state, inputs[0], tile, crop)
        deviation = np.abs(stitched - untiled).mean(axis=0)
        results[(padding_name, crop)] = (preset, seed, _centre_window(stitched, window), _centre_window(deviation, window))
        targets[crop] = _centre_window(target[0], min(window, stitched.shape[-1]))
    if not results:
        raise MissingResults("test images too small for the tiling figure")
    crops = sorted(targets)
    paddings = [p for p in TILING_PADDINGS if any((p, c) in results for c in crops)]
    vmax = max(float(np.quantile(r[3], 0.995)) for r in results.values()) or 1.0
    columns = 1 + 2 * len(paddings)
    fig, axes = plt.subplots(len(crops), columns, figsize=(1.2 * columns + 0.6, 1.3 * len(crops) + 0.3), squeeze=False)
    deviation_artist = None
    for row, crop in enumerate(crops):
        axes[row, 0].imshow(_image_to_srgb(targets[crop]), interpolation="nearest")
        axes[row, 0].set_title("Target", fontsize=7)
        axes[row, 0].set_ylabel(f"Output crop {crop}")
        for column, padding_name in enumerate(paddings):
            out_ax, dev_ax = axes[row, 1 + 2 * column], axes[row, 2 + 2 * column]
            if (padding_name, crop) in results:
                preset, seed, out, deviation = results[(padding_name, crop)]
                out_ax.imshow(_image_to_srgb(out), interpolation="nearest")
                deviation_artist = dev_ax.imshow(deviation, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
                out_ax.set_title(f"{preset} (seed {seed})", fontsize=7)
                dev_ax.set_title("|tiled − untiled|", fontsize=7)
            else:
                out_ax.text(0.5, 0.5, f"no {COMPARED_PRESETS[padding_name][crop]}\nmodel", ha="center", va="center",
                            transform=out_ax.transAxes, fontsize=7, color="0.4")
                out_ax.axis("off")
                dev_ax.set_visible(False)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout(w_pad=0.3, h_pad=1.0)
    if deviation_artist is not None:
        bar = fig.colorbar(deviation_artist, ax=axes.ravel().tolist(), shrink=0.7, pad=0.015, fraction=0.02)
        bar.set_label("Absolute deviation (mean over RGB)")
    return save_figure(fig, "tiled_outputs", ctx.graphs_folder)


def make_layer_nmse(ctx: Context) -> list[Path]:
    """Padding NMSE per feature map (#0 input .. #10 output) of the oc 5 models run fully
    unpadded, for each padding: the mean over seeds (line) and each seed (points)."""
    nmse = load_json(ctx.layer_nmse_path, "eval_layer_nmse.py")
    train_presets = [p for p in LAYER_NMSE_PRESETS if nmse.get(p)] + sorted(p for p in nmse if p not in LAYER_NMSE_PRESETS and nmse[p])
    if not train_presets:
        raise MissingResults(f"{ctx.layer_nmse_path} holds no results")
    fig, axes = plt.subplots(1, len(train_presets), figsize=(3.4 * len(train_presets), 2.6), squeeze=False, sharey=True)
    for ax, train_preset in zip(axes[0], train_presets):
        by_padding = nmse[train_preset]
        paddings = [p for p in LAYER_NMSE_PADDINGS if p in by_padding] + sorted(set(by_padding) - set(LAYER_NMSE_PADDINGS))
        for i, padding_name in enumerate(paddings):
            values = np.array([v for _, v in sorted(by_padding[padding_name].items())], dtype=np.float64)
            layers = np.arange(values.shape[1])
            ax.plot(layers, values.mean(axis=0), "-", color=f"C{i}", lw=1.2, label=padding_name)
            for seed_values in values:
                ax.plot(layers, seed_values, ".", color=f"C{i}", ms=3, alpha=0.5)
        ax.set(yscale="log", xlabel="Feature map", title=f"Trained as {train_preset}")
        ax.set_xticks(layers)
        ax.set_xticklabels(["in"] + [str(i) for i in layers[1:-1]] + ["out"])
        ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].set_ylabel("NMSE of 1-pixel padding")
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    return save_figure(fig, "layer_padding_nmse", ctx.graphs_folder)


def make_loss_histories(ctx: Context) -> list[Path]:
    """Test loss during training (log-log) for lp2x3, repl and zero padding, one panel per
    output crop, averaged over the seeds that succeeded for every plotted preset."""
    histories = load_test_loss_histories(ctx)
    status = run_status(ctx)
    wanted = [p for by_crop in COMPARED_PRESETS.values() for p in by_crop.values()
              if any(run[0] == p for run in histories)]
    if not wanted:
        raise MissingResults("no test loss histories of the lp2x3, repl and zero presets")
    seeds = common_successful_seeds(status, wanted)
    if not seeds:
        raise MissingResults(f"no seed succeeded for all of {', '.join(wanted)}")
    crops = [c for c in PANEL_CROPS if any(by_crop[c] in wanted for by_crop in COMPARED_PRESETS.values())]
    fig, axes = plt.subplots(1, len(crops), figsize=(2.4 * len(crops) + 0.4, 2.5), squeeze=False, sharey=True)
    for ax, crop in zip(axes[0], crops):
        for padding_name, by_crop in COMPARED_PRESETS.items():
            if by_crop[crop] not in wanted:
                continue
            mean = pd.concat([histories[(by_crop[crop], s)] for s in seeds], axis=1).mean(axis=1, skipna=False)
            mean = mean[mean.index > 0]  # step 0 has no place on a log axis
            ax.plot(mean.index, mean.to_numpy(), color=PADDING_COLORS[padding_name], lw=1.0, label=by_crop[crop])
        ax.set(xscale="log", yscale="log", xlabel="Training step", title=f"Output crop {crop}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(frameon=False)
    axes[0, 0].set_ylabel("Test loss (MSE)")
    seed_text = ", ".join(map(str, seeds))
    fig.suptitle(f"Mean over seeds {seed_text}", fontsize=8, y=0.99)
    fig.tight_layout()
    return save_figure(fig, "test_loss_history", ctx.graphs_folder)


def _crop_panel_presets(table: pd.DataFrame, crop: int) -> list[str]:
    """Presets shown at evaluation crop ``crop``: those trained with output crop <= crop,
    the ones trained for exactly this crop first, each group in paper order."""
    presets = [p for p in table.index.get_level_values("preset").unique() if preset_output_crop(p) <= crop]
    return sorted(presets, key=lambda p: (-preset_output_crop(p), preset_sort_key(p)))


def make_mse_per_seed(ctx: Context) -> list[Path]:
    """Test MSE of every preset and seed (dots), the mean over seeds (bar) and its 95%
    bootstrap CI (line); one panel per evaluated output crop 0, 1, 5, each showing the
    presets trained with that or a smaller output crop."""
    output_size = ctx.evaluated_output_size()
    table = mse_table(load_sumsqs(ctx), output_size)
    panels = [(c, _crop_panel_presets(table, c)) for c in PANEL_CROPS]
    panels = [(c, p) for c, p in panels if p]
    heights = [len(p) + 1.5 for _, p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(3.6, 0.17 * sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (crop, presets) in zip(axes[:, 0], panels):
        column = f"crop_{crop}"
        for y, preset in enumerate(presets):
            values = table.loc[preset, column].to_numpy()
            low, high = bootstrap_ci(values)
            oc = preset_output_crop(preset)
            ax.plot(values, np.full(len(values), y), CROP_MARKERS.get(oc, "D"), ms=2.5, mfc="none",
                    color=CROP_COLORS.get(oc, "C3"), alpha=0.8, lw=0)
            ax.plot([values.mean()] * 2, [y - 0.35, y + 0.35], "-", color="k", lw=1.5)
            if math.isfinite(low):
                ax.plot([low, high], [y, y], "-", color="k", lw=0.8)
        ax.set_yticks(range(len(presets)))
        ax.set_yticklabels(presets, family="monospace", fontsize=7)
        ax.set_ylim(len(presets) - 0.5, -0.5)
        side = output_size - 2 * SR_RATE * crop
        ax.set_title(f"Output crop {crop} ({side}×{side} output pixels)")
        ax.grid(True, axis="x", alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3), useMathText=True)
    axes[-1, 0].set_xlabel("Test MSE")
    trained_crops = sorted({preset_output_crop(p) for _, presets in panels for p in presets})
    handles = [plt.Line2D([], [], ls="", marker=CROP_MARKERS.get(c, "D"), mfc="none", color=CROP_COLORS.get(c, "C3"),
                          ms=3, label=f"seed, trained with oc {c}") for c in trained_crops]
    handles += [plt.Line2D([], [], ls="", marker="|", color="k", ms=7, mew=1.5, label="mean over seeds"),
                plt.Line2D([], [], color="k", lw=0.8, label="95% bootstrap CI")]
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=7)
    return save_figure(fig, "test_mse_per_seed", ctx.graphs_folder)


def main_table(ctx: Context) -> pd.DataFrame:
    """Per preset: largest batch sizes and throughputs (where timed), mean test MSE over
    its own output crop, and the differences in % to the zero-padding baseline of the same
    output crop, over the whole predicted area and over its outermost shell."""
    table = mse_table(load_sumsqs(ctx), ctx.evaluated_output_size())
    rows = {}
    for preset in table.index.get_level_values("preset").unique():
        oc = preset_output_crop(preset)
        runs = table.loc[preset]
        rows[preset] = {"oc": oc, "seeds": len(runs), "mse": runs[f"crop_{oc}"].mean(),
                        "outer_shell_mse": runs[f"shell_{oc}"].mean()}
    result = pd.DataFrame.from_dict(rows, orient="index")
    for column in ("mse", "outer_shell_mse"):
        baseline = [rows[ZERO_BASELINE[oc]][column] if ZERO_BASELINE.get(oc) in rows else math.nan for oc in result["oc"]]
        result[f"{column}_vs_zero_pct"] = 100 * (result[column] / np.asarray(baseline) - 1)
    try:
        timing = throughput_table(load_json(ctx.timing_path, "eval_train_time.py and eval_inference_time.py"))
    except MissingResults as e:
        print(f"main table without timings: {e}")
        timing = throughput_table({})
    result = result.join(timing, how="left")
    result.index.name = "preset"
    columns = ["oc", "seeds", "train_batch", "train_throughput", "inference_batch", "inference_throughput",
               "mse", "mse_vs_zero_pct", "outer_shell_mse", "outer_shell_mse_vs_zero_pct"]
    return result[columns]


MAIN_TABLE_FORMATS = {"oc": "d", "seeds": "d", "train_batch": ".0f", "train_throughput": ".1f", "inference_batch": ".0f",
                      "inference_throughput": ".3g", "mse": ".5f", "mse_vs_zero_pct": "+.2f", "outer_shell_mse": ".5f",
                      "outer_shell_mse_vs_zero_pct": "+.2f"}


MAIN_TABLE_LABELS = {"oc": "oc", "seeds": "Seeds", "train_batch": "Max train batch",
                     "train_throughput": "Train img/s", "inference_batch": "Max inference batch",
                     "inference_throughput": "Inference Mpx/s", "mse": "MSE", "mse_vs_zero_pct": "vs zero (%)",
                     "outer_shell_mse": "Outer-shell MSE", "outer_shell_mse_vs_zero_pct": "Outer shell vs zero (%)"}


def make_main_table(ctx: Context) -> list[Path]:
    """The main table (see ``main_table``); throughputs in images/s and 10^6 output px/s."""
    return write_table(main_table(ctx), "main_table", ctx.graphs_folder, MAIN_TABLE_FORMATS, MAIN_TABLE_LABELS)


def make_mse_vs_throughput(ctx: Context) -> list[Path]:
    """Mean test MSE (top) and outermost-shell MSE (bottom) against training throughput
    (left) and inference throughput (right), one labelled point per preset."""
    table = main_table(ctx)
    panels = [("train_throughput", "Training throughput (images/s)"),
              ("inference_throughput", r"Inference throughput ($10^6$ output px/s)")]
    panels = [(c, label) for c, label in panels if table[c].notna().any()]
    if not panels:
        raise MissingResults(f"no timings in {ctx.timing_path} (run eval_train_time.py and eval_inference_time.py)")
    rows = [("mse", "Test MSE (predicted area)"), ("outer_shell_mse", "Outermost-shell MSE")]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels), 5.0), squeeze=False)
    for r, (y_column, y_label) in enumerate(rows):
        for c, (x_column, x_label) in enumerate(panels):
            ax = axes[r, c]
            for crop in sorted(table["oc"].unique()):
                part = table[(table["oc"] == crop) & table[x_column].notna()]
                ax.plot(part[x_column], part[y_column], CROP_MARKERS.get(crop, "D"), ms=4, mfc="none",
                        label=f"output crop {crop}")
                for preset, row in part.iterrows():
                    ax.annotate(preset, (row[x_column], row[y_column]), xytext=(3, 2), textcoords="offset points",
                                fontsize=5.5, family="monospace")
            ax.set(xlabel=x_label, ylabel=y_label)
            ax.grid(True, alpha=0.3)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useMathText=True)
    axes[0, 0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, "mse_vs_throughput", ctx.graphs_folder)


def shell_summary(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per preset and shell 0..10: mean MSE over seeds and the bootstrap CI bounds (NaN for
    shells outside a preset's output crop)."""
    table = mse_table(load_sumsqs(ctx), ctx.evaluated_output_size())
    means, lows, highs = {}, {}, {}
    for preset in table.index.get_level_values("preset").unique():
        oc = preset_output_crop(preset)
        runs = table.loc[preset]
        stats = [bootstrap_ci(runs[f"shell_{k}"]) if k >= oc else (math.nan, math.nan) for k in range(NUM_CROPS)]
        means[preset] = [runs[f"shell_{k}"].mean() if k >= oc else math.nan for k in range(NUM_CROPS)]
        lows[preset], highs[preset] = [s[0] for s in stats], [s[1] for s in stats]
    frames = [pd.DataFrame.from_dict(d, orient="index", columns=[f"shell {k}" for k in range(NUM_CROPS)])
              for d in (means, lows, highs)]
    for frame in frames:
        frame.index.name = "preset"
    return frames[0], frames[1], frames[2]


def make_shell_table(ctx: Context) -> list[Path]:
    """Mean test MSE per output shell (0 = outermost 4 pixels) for every preset."""
    means, _, _ = shell_summary(ctx)
    return write_table(means, "shell_mse_table", ctx.graphs_folder, {c: ".5f" for c in means.columns})


def make_shell_bars(ctx: Context) -> list[Path]:
    """Per-shell test MSE (bars: mean over seeds, lines: 95% bootstrap CI) for lp2x3, repl
    and zero padding; one panel per output crop 0, 1, 5."""
    means, lows, highs = shell_summary(ctx)
    crops = [c for c in PANEL_CROPS if any(by_crop[c] in means.index for by_crop in COMPARED_PRESETS.values())]
    if not crops:
        raise MissingResults("no MSE results of the lp2x3, repl and zero presets")
    fig, axes = plt.subplots(len(crops), 1, figsize=(6.8, 1.8 * len(crops) + 0.4), squeeze=False, sharex=True, sharey=True)
    shells = np.arange(NUM_CROPS)
    width = 0.27
    for ax, crop in zip(axes[:, 0], crops):
        for i, (padding_name, by_crop) in enumerate(COMPARED_PRESETS.items()):
            preset = by_crop[crop]
            if preset not in means.index:
                continue
            mean = means.loc[preset].to_numpy(np.float64)
            error = np.abs(np.vstack([lows.loc[preset].to_numpy(np.float64), highs.loc[preset].to_numpy(np.float64)]) - mean)
            ax.bar(shells + (i - 1) * width, mean, width, color=PADDING_COLORS[padding_name], label=preset,
                   yerr=np.where(np.isfinite(error), error, 0), error_kw={"lw": 0.8, "capsize": 1.5})
        ax.set_title(f"Output crop {crop}")
        ax.set_ylabel("Test MSE")
        ax.grid(True, axis="y", alpha=0.3)
        if crop > 0:
            ax.text((crop - 1) / 2, 0.5, "cropped away", transform=ax.get_xaxis_transform(), ha="center",
                    va="center", fontsize=7, color="0.4")
        ax.legend(frameon=False, ncol=3, fontsize=7)
    axes[-1, 0].set_xticks(shells)
    axes[-1, 0].set_xticklabels([str(k) for k in shells[:-1]] + ["10\n(centre)"])
    axes[-1, 0].set_xlabel(f"Output shell ({SR_RATE} pixels wide, 0 = outermost)")
    fig.tight_layout()
    return save_figure(fig, "shell_mse_bars", ctx.graphs_folder)


def success_table(ctx: Context) -> pd.DataFrame:
    """Presets x seeds: ✓ trained, ✗ failed (no final model or non-finite last test loss),
    empty where no run was exported."""
    status = run_status(ctx)
    presets = sorted({p for p, _ in status}, key=preset_sort_key)
    seeds = sorted({s for _, s in status})
    table = pd.DataFrame([[{True: "✓", False: "✗"}.get(status.get((p, s)), "") for s in seeds] for p in presets],
                         index=pd.Index(presets, name="preset"), columns=[f"s{s}" for s in seeds])
    table["succeeded"] = [sum(status.get((p, s), False) for s in seeds) for p in presets]
    return table


def make_success_table(ctx: Context) -> list[Path]:
    """Which training runs succeeded (see ``success_table``)."""
    return write_table(success_table(ctx), "success_table", ctx.graphs_folder)


# ----------------------------------------------------------------------------------------------
# Running everything

STEPS: dict[str, Callable[[Context], list[Path]]] = {
    "theory NMSE vs blur": make_theory_nmse,
    "padding samples": make_padding_samples,
    "inputs and targets": make_inputs_and_targets,
    "tiled outputs": make_tiled_outputs,
    "layer padding NMSE": make_layer_nmse,
    "test loss history": make_loss_histories,
    "test MSE per seed": make_mse_per_seed,
    "MSE vs throughput": make_mse_vs_throughput,
    "shell MSE bars": make_shell_bars,
    "success table": make_success_table,
    "shell MSE table": make_shell_table,
    "main table": make_main_table,
}
"""Every figure and table, in the order of the notebook."""


def run(name: str, ctx: Context) -> list[Path]:
    """Make one figure or table of ``STEPS``; print what was written, or why it was skipped."""
    try:
        with warnings.catch_warnings():
            # Mean-of-empty and similar warnings carry no news here: NaN cells are shown empty.
            warnings.simplefilter("ignore", RuntimeWarning)
            written = STEPS[name](ctx)
    except (MissingResults, eval_common.EvalError) as e:
        print(f"skipped {name}: {e}")
        return []
    print(f"{name}: wrote {', '.join(str(p) for p in written)}")
    return written


def make_all(ctx: Context | None = None) -> list[Path]:
    """Every figure and table that the available results allow."""
    ctx = Context.from_paths() if ctx is None else ctx
    setup_matplotlib()
    return [path for name in STEPS for path in run(name, ctx)]


def draw_superresolve_seams(paths: Sequence[Path], folder: Path, name: str = "superresolve_seams") -> list[Path]:
    """|tiled − untiled| of ``superresolve.py --compare-untiled --compare-output`` runs side by
    side (mean over RGB, model units, one shared colour scale), with the deviations within 4
    output pixels of the tile seams and overall in the caption. ``paths``: the ``.npz`` files."""
    runs = [np.load(path) for path in paths]
    if not runs:
        raise MissingResults("no superresolve.py deviation maps")
    vmax = max(float(np.quantile(run["deviation"][np.isfinite(run["deviation"])], 0.995)) for run in runs) or 1.0
    fig, axes = plt.subplots(1, len(runs), figsize=(2.2 * len(runs) + 0.6, 2.9), squeeze=False)
    caption = []
    for ax, run in zip(axes[0], runs):
        preset = str(run["preset"])
        artist = ax.imshow(run["deviation"], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(preset, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        caption.append(f"{preset}: seams mean {float(run['seam_mean']):.3g}, max {float(run['seam_max']):.3g}; "
                       f"overall mean {float(run['mean']):.2g}")
    fig.subplots_adjust(left=0.02, right=0.88, bottom=0.3, top=0.9, wspace=0.06)
    bar = fig.colorbar(artist, cax=fig.add_axes((0.9, 0.3, 0.015, 0.6)))
    bar.set_label("|tiled − untiled| (mean over RGB)", fontsize=7)
    fig.text(0.01, 0.01, "Absolute deviation from a one-tile run, within 4 output pixels of tile seams:\n"
             + "\n".join(caption), fontsize=6, va="bottom")
    return save_figure(fig, name, folder)

