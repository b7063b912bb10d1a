"""Tables and statistics of the results, without plotting: what figures.py draws and writes.

Inputs are the stored results (``results_store``, file names in ``run_layout``) and the
published loss histories. Statistics over seeds follow arXiv:2502.12300: each seed's mean over
the test images, then the mean over seeds with a 95 % percentile-bootstrap confidence
interval of that mean (resampling seeds). A run succeeded when its exported model exists and
its last test loss is finite.

Tables (pandas DataFrames indexed by preset, or by preset and seed):

- :func:`mse_table`: test MSE over every crop and shell, per preset and seed;
- :func:`shell_summary`: per-shell MSE with bootstrap intervals (the paper's shell bars);
- :func:`throughput_table`: largest batch sizes and throughputs (``timing_search``);
- :func:`main_table`: the paper's main table, batch sizes, throughputs and MSE vs zero padding;
- :func:`success_table`: which training runs succeeded.

:func:`write_table` writes a table as CSV (full precision), Markdown and LaTeX.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import presets
from catalog import find_loss_histories, find_trained_models
from cli import UserError
from eval_geometry import NUM_MASKS, crop_and_shell_mse, fit_target_size, output_crop_of, sr_rate_of
from results_store import SumsqsMetadata, SumsqsResult, load_sumsqs_results, read_json
from run_layout import output_crop_sumsqs_folder, read_loss_history
from timing_search import MODES, throughputs

PANEL_CROPS = (0, 1, 5)  # the output crops the paper compares
COMPARED_PRESETS: dict[str, dict[int, str]] = {
    "lp2x3": {0: "lp2x3", 1: "lp2x3_oc1", 5: "lp2x3_oc5"},
    "repl": {0: "repl", 1: "repl_oc1", 5: "repl_oc5"},
    "zero": {0: "zero-repl", 1: "zero_oc1", 5: "zero_oc5"},
}
"""The three paddings compared across output crops, and their preset at each crop."""
ZERO_BASELINE = COMPARED_PRESETS["zero"]
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


class MissingResults(UserError):
    """The inputs of a figure or table are missing; the message says which and what makes them."""


# ----------------------------------------------------------------------------------------------
# Loading


def load_sumsqs(
    results_folder: str | os.PathLike, test_data_path: str | os.PathLike
) -> dict[tuple[str, int], SumsqsResult]:
    """Every stored eval_mse result with its metadata, in table order.

    Results of older versions carry no metadata; theirs is inferred as eval_mse.py's defaults
    would have made it (the target size that fits the test set at ``test_data_path``, 192
    without one; the preset's sr rate), with a printed note. Arrays of the wrong shape are
    left out with a message.
    """
    results = {}
    for (preset, seed), result in load_sumsqs_results(results_folder).items():
        array, meta = result.sumsqs, result.metadata
        if array.ndim != 2 or array.shape[0] != NUM_MASKS or array.shape[1] == 0:
            print(
                f"leaving out {preset} seed {seed}: sums of squares of shape {array.shape}, expected ({NUM_MASKS}, N)"
            )
            continue
        if meta is None:
            meta = _inferred_metadata(array, sr_rate_of(preset), Path(test_data_path))
            print(f"note: {preset} seed {seed} has no metadata JSON (an older eval_mse.py result); assuming "
                  f"target size {meta.target_size} and sr rate {meta.sr_rate}")  # fmt: skip
        elif meta.shape != array.shape:
            print(f"leaving out {preset} seed {seed}: array of shape {array.shape}, its metadata says {meta.shape}")
            continue
        results[(preset, seed)] = SumsqsResult(array.astype(np.float64), meta)
    if not results:
        raise MissingResults(f"no MSE results in {output_crop_sumsqs_folder(results_folder)} (run eval_mse.py)")
    return results


def _inferred_metadata(array: np.ndarray, sr_rate: int, test_data_path: Path) -> SumsqsMetadata:
    """What eval_mse.py's default target size would have been for the test set at hand."""
    if test_data_path.is_file():
        shape = np.load(test_data_path, mmap_mode="r", allow_pickle=False).shape
        target_size = fit_target_size(shape, sr_rate)
    else:
        target_size = fit_target_size((512, 512), sr_rate)  # the paper's test images
    return SumsqsMetadata(target_size, sr_rate, array.shape[1])


def load_json(path: Path, producer: str) -> dict:
    """A results JSON file, or ``MissingResults`` naming the script that makes it."""
    if not path.is_file():
        raise MissingResults(f"{path} not found (run {producer})")
    return read_json(path)


def load_test_loss_histories(models_folder: str | os.PathLike) -> dict[tuple[str, int], pd.Series]:
    """``{(preset, seed): test loss (float64) indexed by step}`` from the exported files."""
    histories = {}
    for run, path in find_loss_histories(models_folder, "test").items():
        steps, losses = read_loss_history(path, "test")
        histories[run] = pd.Series(losses.astype(np.float64), index=steps.astype(np.int64))
    if not histories:
        raise MissingResults(f"no test loss histories in {models_folder} (run export_trained_models.py)")
    return histories


def run_status(models_folder: str | os.PathLike) -> dict[tuple[str, int], bool]:
    """``{(preset, seed): succeeded}`` for every exported run: success means a model file and,
    where the test loss history exists, a finite last test loss."""
    models = {(m.preset, m.seed) for m in find_trained_models(models_folder)} if Path(models_folder).is_dir() else set()
    histories = find_loss_histories(models_folder, "test")
    status = {}
    for run in models | set(histories) | set(find_loss_histories(models_folder, "train")):
        ok = run in models
        if ok and run in histories:
            _, losses = read_loss_history(histories[run], "test")
            ok = len(losses) > 0 and bool(np.isfinite(losses[-1]))
        status[run] = ok
    if not status:
        raise MissingResults(f"no exported runs in {models_folder} (run export_trained_models.py)")
    return status


# ----------------------------------------------------------------------------------------------
# Statistics


def bootstrap_ci(
    values: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` ``(n,)``; NaNs for
    fewer than two values. Fixed ``seed``, so figures are reproducible."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def common_successful_seeds(status: Mapping[tuple[str, int], bool], preset_names: Iterable[str]) -> list[int]:
    """Seeds for which every one of ``preset_names`` trained successfully."""
    seed_sets = [{s for (p, s), ok in status.items() if ok and p == preset} for preset in preset_names]
    return sorted(set.intersection(*seed_sets)) if seed_sets else []


def target_sizes(results: Mapping[tuple[str, int], SumsqsResult]) -> set[int]:
    """The evaluated target sizes T among ``results`` (one, unless results were mixed)."""
    return {r.metadata.target_size for r in results.values()}


# ----------------------------------------------------------------------------------------------
# Tables


def mse_table(results: Mapping[tuple[str, int], SumsqsResult]) -> pd.DataFrame:
    """One row per (preset, seed) in table order: columns ``oc`` (the preset's output crop),
    ``crop_0..10`` and ``shell_0..10`` (test MSEs, from each result's own geometry). Runs with
    non-finite errors are left out, with a message."""
    rows = []
    for (preset, seed), result in results.items():
        crop_mse, shell_mse = crop_and_shell_mse(result.sumsqs, result.metadata.target_size, result.metadata.sr_rate)
        if not np.isfinite(crop_mse[0]):
            print(f"leaving out {preset} seed {seed}: non-finite errors")
            continue
        row = {"preset": preset, "seed": seed, "oc": output_crop_of(preset)}
        row.update({f"crop_{k}": v for k, v in enumerate(crop_mse)})
        row.update({f"shell_{k}": v for k, v in enumerate(shell_mse)})
        rows.append(row)
    if not rows:
        raise MissingResults("no finite MSE results")
    rows.sort(key=lambda row: presets.table_order(row["preset"], row["seed"]))
    return pd.DataFrame(rows).set_index(["preset", "seed"])


def throughput_table(timing: Mapping[str, Any]) -> pd.DataFrame:
    """Per timed preset: ``{train,inference}_batch`` (integers; missing where not timed) and
    ``{train,inference}_throughput`` in images/s and 10^6 output pixels (of one channel) per
    second, as ``timing_search`` defines them."""
    columns: dict[str, dict[str, Any]] = {}
    scale = {"train": 1.0, "inference": 1e-6}
    for mode in MODES:
        rows = throughputs(timing, mode)
        columns[f"{mode}_batch"] = {t.preset: t.batch_size for t in rows}
        columns[f"{mode}_throughput"] = {t.preset: t.throughput * scale[mode] for t in rows}
    table = pd.DataFrame(columns)
    for mode in MODES:
        table[f"{mode}_batch"] = table[f"{mode}_batch"].astype("Int64")  # integers with gaps, not floats
    return table


MAIN_TABLE_COLUMNS = (
    "oc",
    "seeds",
    "train_batch",
    "train_throughput",
    "inference_batch",
    "inference_throughput",
    "mse",
    "mse_vs_zero_pct",
    "outer_shell_mse",
    "outer_shell_mse_vs_zero_pct",
)
MAIN_TABLE_FORMATS = {
    "oc": "d",
    "seeds": "d",
    "train_batch": "d",
    "train_throughput": ".1f",
    "inference_batch": "d",
    "inference_throughput": ".3g",
    "mse": ".5f",
    "mse_vs_zero_pct": "+.2f",
    "outer_shell_mse": ".5f",
    "outer_shell_mse_vs_zero_pct": "+.2f",
}
MAIN_TABLE_LABELS = {
    "oc": "oc",
    "seeds": "Seeds",
    "train_batch": "Max train batch",
    "train_throughput": "Train img/s",
    "inference_batch": "Max inference batch",
    "inference_throughput": "Inference Mpx/s",
    "mse": "MSE",
    "mse_vs_zero_pct": "vs zero (%)",
    "outer_shell_mse": "Outer-shell MSE",
    "outer_shell_mse_vs_zero_pct": "Outer shell vs zero (%)",
}
NO_BASELINE_MARK = "n/a*"
NOT_TIMED_MARK = "–"


def main_table(table: pd.DataFrame, timing: Mapping[str, Any]) -> pd.DataFrame:
    """The paper's main table from an :func:`mse_table` and timing.json's contents: per preset
    (grouped by output crop, then in table order) the largest batch sizes and throughputs
    (where timed), the mean test MSE over its own output crop, and the differences in % to the
    zero-padding preset of the same output crop (``ZERO_BASELINE``), over the whole predicted
    area and over its outermost shell; NaN where that baseline has no results."""
    rows = {}
    for preset in table.index.get_level_values("preset").unique():
        oc = output_crop_of(preset)
        runs = table.loc[preset]
        rows[preset] = {"oc": oc, "seeds": len(runs), "mse": runs[f"crop_{oc}"].mean(),
                        "outer_shell_mse": runs[f"shell_{oc}"].mean()}  # fmt: skip
    result = pd.DataFrame.from_dict(rows, orient="index")
    for column in ("mse", "outer_shell_mse"):
        baseline = [
            rows[ZERO_BASELINE[oc]][column] if ZERO_BASELINE.get(oc) in rows else math.nan for oc in result["oc"]
        ]
        result[f"{column}_vs_zero_pct"] = 100 * (result[column] / np.asarray(baseline) - 1)
    result = result.join(throughput_table(timing), how="left")
    # Rows compared with the same baseline stand together: grouped by output crop.
    result = result.loc[sorted(result.index, key=lambda p: (output_crop_of(p), presets.table_order(p)))]
    result.index.name = "preset"
    return result[list(MAIN_TABLE_COLUMNS)]


def main_table_notes(table: pd.DataFrame) -> tuple[dict[str, str], list[str]]:
    """Marks for the blank cells of a :func:`main_table` and the notes that explain them:
    ``({column: mark}, [note lines])``."""
    marks, notes = {}, []
    missing_baselines = sorted({int(oc) for oc in table.loc[table["mse_vs_zero_pct"].isna(), "oc"]})
    if missing_baselines:
        marks.update({"mse_vs_zero_pct": NO_BASELINE_MARK, "outer_shell_mse_vs_zero_pct": NO_BASELINE_MARK})
        names = ", ".join(f"{ZERO_BASELINE.get(oc, 'none defined')} (oc {oc})" for oc in missing_baselines)
        notes.append(
            f"{NO_BASELINE_MARK} no baseline: no MSE results of the zero-padding model of that output crop: {names}."
        )
    timing_columns = ("train_batch", "train_throughput", "inference_batch", "inference_throughput")
    if table[list(timing_columns)].isna().any().any():
        marks.update({c: NOT_TIMED_MARK for c in timing_columns})
        notes.append(
            f"{NOT_TIMED_MARK} not timed: no entry in timing.json (run eval_train_time.py / eval_inference_time.py)."
        )
    return marks, notes


def shell_summary(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per preset and shell 0..10 of an :func:`mse_table`: mean MSE over seeds and the 95 %
    bootstrap interval bounds, three frames ``(presets, 11)``; NaN for the shells a preset's
    output crop removes."""
    means, lows, highs = {}, {}, {}
    for preset in table.index.get_level_values("preset").unique():
        oc = output_crop_of(preset)
        runs = table.loc[preset]
        stats = [bootstrap_ci(runs[f"shell_{k}"]) if k >= oc else (math.nan, math.nan) for k in range(NUM_MASKS)]
        means[preset] = [runs[f"shell_{k}"].mean() if k >= oc else math.nan for k in range(NUM_MASKS)]
        lows[preset], highs[preset] = [s[0] for s in stats], [s[1] for s in stats]
    frames = [pd.DataFrame.from_dict(d, orient="index", columns=[f"shell {k}" for k in range(NUM_MASKS)])
              for d in (means, lows, highs)]  # fmt: skip
    for frame in frames:
        frame.index.name = "preset"
    return frames[0], frames[1], frames[2]


def success_table(status: Mapping[tuple[str, int], bool]) -> pd.DataFrame:
    """Presets x seeds: ✓ trained, ✗ failed (no final model or non-finite last test loss),
    empty where no run was exported; and the number that succeeded."""
    preset_names = sorted({p for p, _ in status}, key=presets.table_order)
    seeds = sorted({s for _, s in status})
    table = pd.DataFrame([[{True: "✓", False: "✗"}.get(status.get((p, s)), "") for s in seeds] for p in preset_names],
                         index=pd.Index(preset_names, name="preset"), columns=[f"s{s}" for s in seeds])  # fmt: skip
    table["succeeded"] = [sum(status.get((p, s), False) for s in seeds) for p in preset_names]
    return table


# ----------------------------------------------------------------------------------------------
# Writing


def _latex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "✓": r"\checkmark", "✗": r"$\times$", "±": r"$\pm$", "–": "--"}  # fmt: skip
    return "".join(replacements.get(c, c) for c in text)


def _format_cell(value: Any, fmt: str | None, blank: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return blank
    if fmt == "d":
        return str(int(value))
    return format(value, fmt) if fmt else str(value)


def write_table(
    table: pd.DataFrame,
    name: str,
    folder: Path,
    formats: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    blanks: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write ``table`` as ``{name}.csv`` (full precision, column names as they are, missing
    values empty), and for reading as ``.md`` and ``.tex`` (booktabs) with headers from
    ``labels``, numbers formatted by ``formats`` (column -> format spec), missing values shown
    as ``blanks[column]`` (default empty) and ``notes`` below the table."""
    formats, labels, blanks = formats or {}, labels or {}, blanks or {}
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, tex_path = (folder / f"{name}{s}" for s in (".csv", ".md", ".tex"))
    table.to_csv(csv_path)
    header = [str(table.index.name or "")] + [labels.get(c, str(c)) for c in table.columns]
    rows = [[str(index)] + [_format_cell(v, formats.get(c), blanks.get(c, "")) for c, v in row.items()]
            for index, row in table.astype(object).iterrows()]  # fmt: skip
    md = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * len(table.columns)) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        md += [""] + [f"{note}  " for note in notes]  # two trailing spaces: a line break
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    tex = [r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule",
           " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]  # fmt: skip
    tex += [" & ".join(_latex_escape(c) for c in r) + r" \\" for r in rows]
    tex += [r"\bottomrule", r"\end{tabular}"]
    tex += [r"\par\smallskip{\footnotesize " + _latex_escape(note) + r"}\par" for note in notes]
    tex_path.write_text("\n".join(tex) + "\n", encoding="utf-8")
    return [csv_path, md_path, tex_path]
