"""Figures and tables of arXiv:2502.12300, drawn from the results folder and trained models.

``make_figures_and_tables.ipynb`` calls :func:`run` for each entry of :data:`STEPS`
(:func:`make_all` does all of them); each ``make_*`` function writes one figure (PDF and PNG)
or one table (CSV, Markdown, LaTeX) into the graphs folder and returns the paths it wrote. A
piece whose inputs are missing or unreadable raises a ``cli.UserError`` (``MissingResults``
names the script that makes them) or ``run_layout.LayoutError``; :func:`run` prints the reason and moves on, so partial
results give the figures they can.

This module only draws. The numbers come from the pure modules: ``results_tables`` (MSE,
shell, throughput, main and success tables, bootstrap intervals), ``theory`` (the Gaussian
autocorrelation curves), ``sample_images`` (padding samples, inputs and targets),
``timing_search`` (throughput formulas) and ``eval_geometry`` (crops and shells). The tiling
figure runs trained models through ``tiling.two_by_two``.

Inputs (folders from ``paths_config``, overridable by ``LPPAD_*`` variables; names in
``run_layout``):

- ``results/output_crop_sumsqs/{preset}_s{seed}.npy``: float64 (11, N_test); row k is each
  image's squared error summed over the output without its ``k`` outermost shells, with
  ``{preset}_s{seed}.json`` beside it (target size, sr rate, image count; see ``results_store``),
- ``results/timing.json``, ``results/layer_nmse.json``,
- ``results/trained_models/{preset}_s{seed}.eqx`` and ``..._{train,test}_loss.parquet``,
- the test set ``dataset/test_data.npy`` (for the image figures).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.backend_bases import RendererBase

import eval_models
import paths_config
import presets
import published_models
import results_tables as rt
import run_layout
import tiling
from cli import UserError
from eval_geometry import NUM_MASKS, fit_target_size, output_crop_of, output_side
from eval_models import LAYER_NMSE_PADDINGS
from presets import LAYER_NMSE_PRESETS
from results_tables import COMPARED_PRESETS, PANEL_CROPS, MissingResults
from run_layout import LayoutError, TrainedModel, layer_nmse_path, timing_path
from sample_images import PADDING_SAMPLE_METHODS, centre_crops, image_to_srgb, inputs_and_targets, padding_sample_tiles
from theory import THEORY_METHODS, one_step_nmse

SR_RATE: int = presets.hpars["sr_rate"]  # of every preset; the image figures use it
TILING_PADDINGS: tuple[str, ...] = tuple(COMPARED_PRESETS)
FIGURE_SAMPLE_IMAGES = run_layout.SAMPLE_TEST_IMAGES[:4]  # test images of the image figures
FONT_PREFERENCE = ("Times New Roman", "Liberation Serif")
PADDING_COLORS = {"lp2x3": "tab:blue", "repl": "tab:orange", "zero": "tab:green"}
CROP_COLORS = {0: "C0", 1: "C1", 5: "C2"}
CROP_MARKERS = {0: "o", 1: "s", 5: "^"}
CI_TEXT = f"{rt.CONFIDENCE:.0%} bootstrap interval".replace("%", " %")  # "95 % bootstrap interval"


# ----------------------------------------------------------------------------------------------
# Where things are


@dataclasses.dataclass(frozen=True)
class Context:
    """Input and output locations of the figures. The MSE results say themselves which
    target size they were evaluated at (their metadata JSON)."""

    results_folder: Path
    trained_models_folder: Path
    graphs_folder: Path
    test_data_path: Path

    @classmethod
    def from_paths(cls, paths: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> Context:
        """The locations of ``paths_config`` (with its ``LPPAD_*`` overrides from ``environ``)."""
        paths = paths_config.get_paths(environ) if paths is None else paths
        return cls(
            Path(paths["results_folder"]),
            Path(paths["trained_models_folder"]),
            Path(paths["graphs_folder"]),
            Path(paths_config.test_data_path(paths)),
        )

    def mse_results(self) -> dict[tuple[str, int], rt.SumsqsResult]:
        """Every stored eval_mse result with its metadata (``results_tables.load_sumsqs``)."""
        return rt.load_sumsqs(self.results_folder, self.test_data_path)

    def mse_table(self) -> pd.DataFrame:
        return rt.mse_table(self.mse_results())

    def timing(self, required: bool = True) -> dict:
        """The contents of timing.json; ``{}`` with a message when missing and not ``required``."""
        try:
            return rt.load_json(timing_path(self.results_folder), "eval_train_time.py and eval_inference_time.py")
        except MissingResults as e:
            if required:
                raise
            print(f"without timings: {e}")
            return {}

    def run_status(self) -> dict[tuple[str, int], bool]:
        return rt.run_status(self.trained_models_folder)

    def test_images(self, min_size: int) -> np.ndarray:
        """The test set ``(N, 3, H, W)`` (memory-mapped), which must be at least ``min_size`` pixels."""
        if not self.test_data_path.is_file():
            raise MissingResults(f"test data {self.test_data_path} not found (run make_dataset_npys.py)")
        data = eval_models.load_test_images(self.test_data_path)
        if min(data.shape[2:]) < min_size:
            raise MissingResults(f"test data of shape {data.shape}: need (N, 3, H, W) with H, W >= {min_size}")
        return data


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
    })  # fmt: skip
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


# ----------------------------------------------------------------------------------------------
# Image figures


def make_theory_nmse(ctx: Context) -> list[Path]:
    """The paper's theory figure: NMSE of one-step extrapolation of a process with a Gaussian
    autocorrelation vs its sigma, for zero, repl, extr2, extr3, lp1x1cs, lp2x1 and lp3x1
    (``theory``)."""
    sigmas = np.geomspace(0.1, 10.0, 241)
    fig, ax = plt.subplots(figsize=(3.4, 2.6))
    styles = {"zero": "k-", "repl": "C1-", "extr2": "C3--", "extr3": "C4--",
              "lp1x1cs": "C0-", "lp2x1": "C2-", "lp3x1": "C5-"}  # fmt: skip
    for method in THEORY_METHODS:
        ax.plot(sigmas, [one_step_nmse(method, s) for s in sigmas], styles[method], lw=1.2, label=method)
    ax.set(xscale="log", yscale="log", xlabel=r"Gaussian blur $\sigma$ (pixels)",
           ylabel="NMSE of one-step extrapolation", xlim=(sigmas[0], sigmas[-1]))  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(ncol=2, loc="lower left", frameon=False)
    return save_figure(fig, "theory_nmse_vs_blur", ctx.graphs_folder)


def make_padding_samples(ctx: Context, count: int = 10, size: int = 96) -> list[Path]:
    """The paper's padding-samples figure: 48x48 centres of ``count`` test crops (96x96,
    centred in test images 0, 1, ...) padded by 24 with every method; the crops themselves
    (the target) in the first row."""
    data = ctx.test_images(size)
    crops = centre_crops(data[: min(count, len(data))], size)
    tiles = padding_sample_tiles(crops, PADDING_SAMPLE_METHODS)
    mosaic = np.concatenate([np.concatenate([image_to_srgb(t) for t in row], axis=1) for row in tiles], axis=0)
    height, width = mosaic.shape[:2]
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for row, label in enumerate(("Target",) + tuple(PADDING_SAMPLE_METHODS)):
        ax.text(4, row * size + 4, label, va="top", ha="left", fontsize=9,
                bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.75))  # fmt: skip
    return save_figure(fig, "padding_samples", ctx.graphs_folder)


def make_inputs_and_targets(ctx: Context, indices: Sequence[int] = FIGURE_SAMPLE_IMAGES) -> list[Path]:
    """Low-res inputs (top) and high-res targets (bottom) of a few test images, centre crops
    as in the test loss (48x48 and 192x192 for full-size data, eval_mse.py's default size)."""
    data = ctx.test_images(4 * SR_RATE)
    target_size = fit_target_size(data.shape, SR_RATE)
    indices = [i for i in indices if i < len(data)] or list(range(min(4, len(data))))
    inputs, targets = inputs_and_targets(data[indices], target_size, SR_RATE)
    fig, axes = plt.subplots(2, len(indices), figsize=(1.6 * len(indices), 3.4), squeeze=False)
    for column, index in enumerate(indices):
        axes[0, column].imshow(image_to_srgb(inputs[column]), interpolation="nearest")
        axes[1, column].imshow(image_to_srgb(targets[column]), interpolation="nearest")
        axes[0, column].set_title(f"Test image {index}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel(f"Input {inputs.shape[-1]}×{inputs.shape[-1]}")
    axes[1, 0].set_ylabel(f"Target {target_size}×{target_size}")
    fig.tight_layout()
    return save_figure(fig, "inputs_and_targets", ctx.graphs_folder)


# ----------------------------------------------------------------------------------------------
# Tiling figure (its computation moves to tiling.py)


def _centre_window(image: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` window of ``image`` (..., y, x), or all of it if smaller."""
    half = min(size, image.shape[-1]) // 2
    centre = image.shape[-1] // 2
    return image[..., centre - half : centre + half, centre - half : centre + half]


def make_tiled_outputs(ctx: Context, image_index: int = FIGURE_SAMPLE_IMAGES[0], window: int = 96) -> list[Path]:
    """The paper's tiling figure: outputs stitched from 2x2 tiles, around the tile corner (the image centre), and their
    absolute deviation from the untiled output (mean over channels), for the paddings of
    ``TILING_PADDINGS`` at output crops 0, 1 and 5; one trained model (the lowest successful
    seed) each. The first column shows the target of the same area."""
    status = ctx.run_status()
    chosen = {}
    for padding_name in TILING_PADDINGS:
        for crop, preset in COMPARED_PRESETS[padding_name].items():
            seeds = sorted(s for (p, s), ok in status.items() if ok and p == preset)
            if seeds:
                chosen[(padding_name, crop)] = (preset, seeds[0])
    if not chosen:
        raise MissingResults(f"no trained {' / '.join(TILING_PADDINGS)} models at output crops {PANEL_CROPS}")
    data = ctx.test_images(4 * SR_RATE)
    image = np.asarray(data[min(image_index, len(data) - 1)])
    results, targets = {}, {}
    for (padding_name, crop), (preset, seed) in chosen.items():
        tile = tiling.two_by_two_tile_size(min(image.shape[1:]), crop, SR_RATE)
        if tile - 2 * crop < 2:
            print(f"leaving out {preset}: test images too small for a 2x2 tiling at output crop {crop}")
            continue
        inputs, target = inputs_and_targets(image[None], SR_RATE * (2 * tile - 2 * crop), SR_RATE)
        model, state = published_models.load_trained_model(TrainedModel(preset, seed, ctx.trained_models_folder), crop)
        stitched, untiled = tiling.two_by_two(model, state, inputs[0], tile, crop, SR_RATE)
        deviation = np.abs(stitched - untiled).mean(axis=0)
        results[(padding_name, crop)] = (
            preset,
            seed,
            _centre_window(stitched, window),
            _centre_window(deviation, window),
        )
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
        axes[row, 0].imshow(image_to_srgb(targets[crop]), interpolation="nearest")
        axes[row, 0].set_title("Target", fontsize=7)
        axes[row, 0].set_ylabel(f"Output crop {crop}")
        for column, padding_name in enumerate(paddings):
            out_ax, dev_ax = axes[row, 1 + 2 * column], axes[row, 2 + 2 * column]
            if (padding_name, crop) in results:
                preset, seed, out, deviation = results[(padding_name, crop)]
                out_ax.imshow(image_to_srgb(out), interpolation="nearest")
                deviation_artist = dev_ax.imshow(deviation, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
                out_ax.set_title(f"{preset} (seed {seed})", fontsize=7)
                dev_ax.set_title("|tiled − untiled|", fontsize=7)
            else:
                out_ax.text(
                    0.5,
                    0.5,
                    f"no {COMPARED_PRESETS[padding_name][crop]}\nmodel",
                    ha="center",
                    va="center",
                    transform=out_ax.transAxes,
                    fontsize=7,
                    color="0.4",
                )
                out_ax.axis("off")
                dev_ax.set_visible(False)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout(w_pad=0.3, h_pad=1.0)
    if deviation_artist is not None:
        clipped = any(float(r[3].max()) > vmax for r in results.values())  # the scale ends at the 99.5th percentile
        bar = fig.colorbar(
            deviation_artist,
            ax=axes.ravel().tolist(),
            shrink=0.7,
            pad=0.015,
            fraction=0.02,
            extend="max" if clipped else "neither",
        )
        bar.set_label("Absolute deviation (mean over RGB)")
    return save_figure(fig, "tiled_outputs", ctx.graphs_folder)


# ----------------------------------------------------------------------------------------------
# Result figures


def make_layer_nmse(ctx: Context) -> list[Path]:
    """The paper's feature-map padding figure: padding NMSE per feature map (#0 input .. #10
    output, log scale) of the oc 5 models run fully unpadded, for each padding: the mean over
    seeds (line) and each seed (points)."""
    path = layer_nmse_path(ctx.results_folder)
    nmse = rt.load_json(path, "eval_layer_nmse.py")
    if not any(nmse.values()):
        raise MissingResults(f"{path} holds no results")
    # The paper's two panels always, a missing one saying why; then any other presets measured.
    train_presets = list(LAYER_NMSE_PRESETS) + sorted(p for p in nmse if p not in LAYER_NMSE_PRESETS and nmse[p])
    fig, axes = plt.subplots(1, len(train_presets), figsize=(3.4 * len(train_presets), 2.6), squeeze=False)
    for ax, train_preset in zip(axes[0], train_presets):
        if not nmse.get(train_preset):
            ax.text(
                0.5,
                0.5,
                f"no results for {train_preset}:\nno trained {train_preset} model was evaluated\n(eval_layer_nmse.py)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=7,
                color="0.4",
            )
            ax.set(title=f"Trained as {train_preset}", xticks=[], yticks=[])
            continue
        by_padding = nmse[train_preset]
        paddings = [p for p in LAYER_NMSE_PADDINGS if p in by_padding] + sorted(
            set(by_padding) - set(LAYER_NMSE_PADDINGS)
        )
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
    drawn = [ax for ax in axes[0] if ax.lines]
    drawn[0].set_ylabel("NMSE of 1-pixel padding")
    drawn[0].legend(frameon=False)
    low, high = min(ax.get_ylim()[0] for ax in drawn), max(ax.get_ylim()[1] for ax in drawn)
    for ax in drawn:  # one scale for all panels, as the paper's figure has
        ax.set_ylim(low, high)
    fig.tight_layout()
    return save_figure(fig, "layer_padding_nmse", ctx.graphs_folder)


def make_loss_histories(ctx: Context) -> list[Path]:
    """The paper's test-loss-history figure: test loss during training (log-log) for lp2x3,
    repl and zero padding, one panel per output crop 0, 1, 5, averaged over the seeds that
    succeeded for every plotted preset."""
    histories = rt.load_test_loss_histories(ctx.trained_models_folder)
    status = ctx.run_status()
    wanted = [
        p for by_crop in COMPARED_PRESETS.values() for p in by_crop.values() if any(run[0] == p for run in histories)
    ]
    if not wanted:
        raise MissingResults("no test loss histories of the lp2x3, repl and zero presets")
    seeds = rt.common_successful_seeds(status, wanted)
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
    fig.suptitle(f"Mean over seeds {', '.join(map(str, seeds))}", fontsize=8, y=0.99)
    fig.tight_layout()
    return save_figure(fig, "test_loss_history", ctx.graphs_folder)


def _crop_panel_presets(table: pd.DataFrame, crop: int) -> list[str]:
    """Presets shown at evaluation crop ``crop``: those trained with output crop <= crop,
    the ones trained for exactly this crop first, each group in table order."""
    names = [p for p in table.index.get_level_values("preset").unique() if output_crop_of(p) <= crop]
    return sorted(names, key=lambda p: (-output_crop_of(p), presets.table_order(p)))


def make_mse_per_seed(ctx: Context) -> list[Path]:
    """The paper's per-seed test MSE figure: every preset and seed (dots), the mean over seeds
    (bar) and its 95 % bootstrap interval (line); one panel per evaluated output crop 0, 1, 5,
    each showing the presets trained with that or a smaller output crop."""
    results = ctx.mse_results()
    table = rt.mse_table(results)
    sizes = rt.target_sizes(results)
    panels = [(c, _crop_panel_presets(table, c)) for c in PANEL_CROPS]
    panels = [(c, p) for c, p in panels if p]
    heights = [len(p) + 1.5 for _, p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(3.6, 0.17 * sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, (crop, names) in zip(axes[:, 0], panels):
        for y, preset in enumerate(names):
            values = table.loc[preset, f"crop_{crop}"].to_numpy()
            low, high = rt.bootstrap_ci(values)
            oc = output_crop_of(preset)
            ax.plot(values, np.full(len(values), y), CROP_MARKERS.get(oc, "D"), ms=2.5, mfc="none",
                    color=CROP_COLORS.get(oc, "C3"), alpha=0.8, lw=0)  # fmt: skip
            ax.plot([values.mean()] * 2, [y - 0.35, y + 0.35], "-", color="k", lw=1.5)
            if math.isfinite(low):
                ax.plot([low, high], [y, y], "-", color="k", lw=0.8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.set_ylim(len(names) - 0.5, -0.5)
        title = f"Output crop {crop}"
        if len(sizes) == 1:
            side = output_side(next(iter(sizes)), SR_RATE, crop)
            title += f" ({side}×{side} output pixels)"
        ax.set_title(title)
        ax.grid(True, axis="x", alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3), useMathText=True)
    axes[-1, 0].set_xlabel("Test MSE")
    trained_crops = sorted({output_crop_of(p) for _, names in panels for p in names})
    handles = [plt.Line2D([], [], ls="", marker=CROP_MARKERS.get(c, "D"), mfc="none", color=CROP_COLORS.get(c, "C3"),
                          ms=3, label=f"seed, trained with oc {c}") for c in trained_crops]  # fmt: skip
    handles += [plt.Line2D([], [], ls="", marker="|", color="k", ms=7, mew=1.5, label="mean over seeds"),
                plt.Line2D([], [], color="k", lw=0.8, label=CI_TEXT)]  # fmt: skip
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=7)
    return save_figure(fig, "test_mse_per_seed", ctx.graphs_folder)


def main_table(ctx: Context) -> pd.DataFrame:
    """The paper's main table (``results_tables.main_table``) of the results in ``ctx``."""
    return rt.main_table(ctx.mse_table(), ctx.timing(required=False))


def make_main_table(ctx: Context) -> list[Path]:
    """The paper's main table: per preset, grouped by output crop, the largest batch sizes,
    throughputs (images/s, 10^6 output px/s), test MSE and its difference to zero padding of
    the same output crop; blank cells are marked and explained below the table."""
    table = main_table(ctx)
    blanks, notes = rt.main_table_notes(table)
    return rt.write_table(table, "main_table", ctx.graphs_folder, rt.MAIN_TABLE_FORMATS, rt.MAIN_TABLE_LABELS,
                          blanks, notes)  # fmt: skip


# Where a point's label may go, in points from the point: eight directions at growing distances,
# nearest first; from LEADER_FROM points out a thin line leads back to the point. The sign of
# an offset sets the label's alignment (it grows away from the point).
LABEL_OFFSETS = [
    (round(r * math.cos(math.radians(a)), 1), round(r * math.sin(math.radians(a)), 1))
    for r in (4, 10, 17, 25)
    for a in (30, -30, 150, -150, 90, -90, 0, 180)
]
LEADER_FROM = 8


def _label_at(ax: plt.Axes, text: str, x: float, y: float, dx: float, dy: float) -> matplotlib.text.Annotation:
    leader = math.hypot(dx, dy) >= LEADER_FROM
    return ax.annotate(
        text,
        (x, y),
        xytext=(dx, dy),
        textcoords="offset points",
        fontsize=6,
        ha="left" if dx > 0.5 else "right" if dx < -0.5 else "center",
        va="bottom" if dy > 0.5 else "top" if dy < -0.5 else "center",
        arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5", shrinkA=1, shrinkB=2) if leader else None,
    )


def _text_extent(label: matplotlib.text.Annotation, renderer: "RendererBase") -> matplotlib.transforms.Bbox:
    """The extent of an annotation's text alone, without its leader line."""
    label.update_positions(renderer)
    return matplotlib.text.Text.get_window_extent(label, renderer)


def _label_points(ax: plt.Axes, points: Sequence[tuple[str, float, float]], marker_size: float = 4) -> None:
    """Label each ``(text, x, y)`` beside its point at the first place of ``LABEL_OFFSETS``
    where the label stays inside the axes and covers neither another label, another point's
    marker (``marker_size`` points wide) nor the legend; where no place is free, at the place
    inside the axes that covers the least. Crowded points are labelled first. Call it once the
    figure's layout and the axis limits are final."""
    ax.figure.canvas.draw()  # places the legend ("best" looks at the data only, so it stays there)
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points_to_pixels = ax.figure.dpi / 72
    half = marker_size / 2 * points_to_pixels
    margin = 2 * points_to_pixels  # text extents at the saving resolution differ a little from these
    centres = ax.transData.transform([(x, y) for _, x, y in points]) if points else np.zeros((0, 2))
    markers = [
        matplotlib.transforms.Bbox.from_extents(cx - half, cy - half, cx + half, cy + half) for cx, cy in centres
    ]
    distances = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    crowding = (distances < 30 * points_to_pixels).sum(axis=1)
    placed = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() is not None else []

    def covered(box: matplotlib.transforms.Bbox, others: list) -> float:
        return sum(
            max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0)) * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0))
            for o in others
        )

    for i in sorted(range(len(points)), key=lambda i: (-crowding[i], i)):
        text, x, y = points[i]
        obstacles = placed + markers[:i] + markers[i + 1 :]
        best = None
        for dx, dy in LABEL_OFFSETS:
            label = _label_at(ax, text, x, y, dx, dy)
            box = _text_extent(label, renderer).padded(margin)
            label.remove()
            if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                continue
            cost = covered(box, obstacles)
            if best is None or cost < best[0]:
                best = (cost, dx, dy, box)
            if cost == 0:
                break
        _, dx, dy, box = best if best is not None else (0, *LABEL_OFFSETS[0], None)
        label = _label_at(ax, text, x, y, dx, dy)
        placed.append(box if box is not None else _text_extent(label, renderer).padded(margin))


def mse_vs_throughput_figure(table: pd.DataFrame) -> plt.Figure:
    """Mean test MSE (top) and outermost-shell MSE (bottom) of a :func:`main_table` against
    training throughput (left) and inference throughput (right), one labelled point per preset."""
    panels = [("train_throughput", "Training throughput (images/s)"),
              ("inference_throughput", r"Inference throughput ($10^6$ output px/s)")]  # fmt: skip
    panels = [(c, label) for c, label in panels if table[c].notna().any()]
    if not panels:
        raise MissingResults("no timings (run eval_train_time.py and eval_inference_time.py)")
    rows = [("mse", "Test MSE (predicted area)"), ("outer_shell_mse", "Outermost-shell MSE")]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.4 * len(panels), 5.0), squeeze=False)
    labels = {}
    for r, (y_column, y_label) in enumerate(rows):
        for c, (x_column, x_label) in enumerate(panels):
            ax = axes[r, c]
            points = []
            for crop in sorted(table["oc"].unique()):
                part = table[(table["oc"] == crop) & table[x_column].notna()]
                ax.plot(part[x_column], part[y_column], CROP_MARKERS.get(crop, "D"), ms=4, mfc="none",
                        label=f"output crop {crop}")  # fmt: skip
                points += [(preset, row[x_column], row[y_column]) for preset, row in part.iterrows()]
            labels[ax] = points
            ax.margins(0.08)
            ax.autoscale_view()
            ax.set(xlabel=x_label, ylabel=y_label)
            ax.grid(True, alpha=0.3)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useMathText=True)
    axes[0, 0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    for ax, points in labels.items():  # placed last: where a label fits depends on the final layout
        _label_points(ax, points)
    return fig


def make_mse_vs_throughput(ctx: Context) -> list[Path]:
    """The paper's MSE-vs-throughput figure (see :func:`mse_vs_throughput_figure`)."""
    table = rt.main_table(ctx.mse_table(), ctx.timing())
    return save_figure(mse_vs_throughput_figure(table), "mse_vs_throughput", ctx.graphs_folder)


def make_shell_table(ctx: Context) -> list[Path]:
    """Mean test MSE per output shell (0 = outermost 4 pixels) for every preset, over seeds."""
    means, _, _ = rt.shell_summary(ctx.mse_table())
    return rt.write_table(means, "shell_mse_table", ctx.graphs_folder, {c: ".5f" for c in means.columns})


def bar_offsets(count: int, width: float) -> np.ndarray:
    """Offsets ``(count,)`` of ``count`` bars of ``width`` side by side, centred on their tick."""
    return (np.arange(count) - (count - 1) / 2) * width


def shell_bars_figure(means: pd.DataFrame, lows: pd.DataFrame, highs: pd.DataFrame) -> plt.Figure:
    """Per-shell test MSE of lp2x3, repl and zero padding from a ``shell_summary``: bars are
    the means over seeds, error bars their 95 % bootstrap intervals (said on the figure); one
    panel per output crop 0, 1, 5, its bars centred on the shell ticks."""
    crops = [c for c in PANEL_CROPS if any(by_crop[c] in means.index for by_crop in COMPARED_PRESETS.values())]
    if not crops:
        raise MissingResults("no MSE results of the lp2x3, repl and zero presets")
    fig, axes = plt.subplots(
        len(crops), 1, figsize=(6.8, 1.8 * len(crops) + 0.6), squeeze=False, sharex=True, sharey=True
    )
    shells = np.arange(NUM_MASKS)
    width = 0.8 / len(COMPARED_PRESETS)
    for ax, crop in zip(axes[:, 0], crops):
        shown = [(name, by_crop[crop]) for name, by_crop in COMPARED_PRESETS.items() if by_crop[crop] in means.index]
        for offset, (padding_name, preset) in zip(bar_offsets(len(shown), width), shown):
            mean = means.loc[preset].to_numpy(np.float64)
            bounds = np.vstack([lows.loc[preset].to_numpy(np.float64), highs.loc[preset].to_numpy(np.float64)])
            ax.bar(shells + offset, mean, width, color=PADDING_COLORS[padding_name], label=preset)
            # No interval exists with fewer than two seeds: no error bar rather than one of zero length.
            known = np.isfinite(bounds).all(axis=0)
            ax.errorbar(shells[known] + offset, mean[known], yerr=np.abs(bounds - mean)[:, known], fmt="none",
                        ecolor="k", elinewidth=0.8, capsize=1.5)  # fmt: skip
        ax.set_title(f"Output crop {crop}")
        ax.set_ylabel("Test MSE")
        ax.grid(True, axis="y", alpha=0.3)
        if crop > 0:
            ax.text((crop - 1) / 2, 0.5, "cropped away", transform=ax.get_xaxis_transform(), ha="center",
                    va="center", fontsize=7, color="0.4")  # fmt: skip
    axes[0, 0].set_ylim(0, axes[0, 0].get_ylim()[1] * 1.2)  # room for the legends above the bars (shared y)
    for ax in axes[:, 0]:
        ax.legend(frameon=False, ncol=3, fontsize=7, loc="upper right")
    axes[-1, 0].set_xticks(shells)
    axes[-1, 0].set_xticklabels([str(k) for k in shells[:-1]] + ["10\n(centre)"])
    axes[-1, 0].set_xlabel(f"Output shell ({SR_RATE} pixels wide, 0 = outermost)")
    fig.tight_layout()
    fig.text(0.5, 0.0, f"Bars: mean over seeds. Error bars: {CI_TEXT}s of that mean (seeds resampled; none "
             "where fewer than two seeds).", ha="center", va="top", fontsize=7)  # fmt: skip
    return fig


def make_shell_bars(ctx: Context) -> list[Path]:
    """The paper's per-shell MSE figure (see :func:`shell_bars_figure`)."""
    return save_figure(shell_bars_figure(*rt.shell_summary(ctx.mse_table())), "shell_mse_bars", ctx.graphs_folder)


def success_table(ctx: Context) -> pd.DataFrame:
    """Which training runs succeeded (``results_tables.success_table``)."""
    return rt.success_table(ctx.run_status())


def make_success_table(ctx: Context) -> list[Path]:
    """Presets x seeds: ✓ trained, ✗ failed (no final model or non-finite last test loss)."""
    return rt.write_table(success_table(ctx), "success_table", ctx.graphs_folder)


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
            # Mean-of-empty and similar warnings carry no news here: NaN cells are shown marked or empty.
            warnings.simplefilter("ignore", RuntimeWarning)
            written = STEPS[name](ctx)
    except (UserError, LayoutError) as e:
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
        caption.append(
            f"{preset}: seams mean {float(run['seam_mean']):.3g}, max {float(run['seam_max']):.3g}; "
            f"overall mean {float(run['mean']):.2g}"
        )
    fig.subplots_adjust(left=0.02, right=0.88, bottom=0.3, top=0.9, wspace=0.06)
    # The scale ends at the 99.5th percentile; the arrow says that brighter pixels go beyond it.
    clipped = any(float(np.nanmax(run["deviation"])) > vmax for run in runs)
    bar = fig.colorbar(artist, cax=fig.add_axes((0.9, 0.3, 0.015, 0.6)), extend="max" if clipped else "neither")
    bar.set_label("|tiled − untiled| (mean over RGB)", fontsize=7)
    # Right under the panels (saving crops the empty rest of the figure below it).
    fig.text(
        0.01,
        0.27,
        "Absolute deviation from a one-tile run, within 4 output pixels of tile seams:\n" + "\n".join(caption),
        fontsize=6,
        va="top",
    )
    return save_figure(fig, name, folder)
