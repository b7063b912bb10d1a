"""What of the experiment plan is on disk, found by name: run folders (under a preset's own name
or its older compat name), published models, loss histories and stored MSE results, each in
the plan's table order (``presets.table_order``). Files and folders of names that are no
preset of the plan are ignored.

The names and paths themselves are ``run_layout``'s; this module adds what needs the preset
table, so that ``run_layout`` stays below the plan.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import presets
from checkpoints import complete_checkpoint_steps
from run_layout import (
    WEIGHTS_SUFFIX,
    LayoutError,
    TrainedModel,
    model_stem,
    output_crop_sumsqs_folder,
    parse_model_stem,
    run_folder,
)


def known_model_stem(stem: str) -> tuple[str, int] | None:
    """``(preset, seed)`` of a stem whose preset is one of the paper's, or None."""
    parsed = parse_model_stem(stem)
    return parsed if parsed is not None and parsed[0] in presets.presets else None


def compat_name(preset: str) -> str | None:
    """The preset's older run-folder name (``compat_preset``, e.g. ``zero_el50``), or None."""
    return presets.presets[preset].get("compat_preset")


def run_folder_candidates(runs_folder: str | os.PathLike, preset: str, seed: int) -> list[Path]:
    """Where a run of ``preset`` and ``seed`` may live: its own folder, then the folder under
    the preset's older name (runs of the paper's time used those names)."""
    folders = [run_folder(runs_folder, preset, seed)]
    compat = compat_name(preset)
    if compat:
        folders.append(Path(runs_folder) / model_stem(compat, seed))
    return folders


def preset_of_folder_name(name: str) -> str | None:
    """The preset whose name or older (compat) name is ``name``, or None."""
    table = presets.presets
    if name in table:
        return name
    return next((p for p, overrides in table.items() if overrides.get("compat_preset") == name), None)


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A training run folder found on disk: ``path`` holds ``preset`` with ``seed``."""

    preset: str
    seed: int
    path: Path


def run_of_folder(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(preset, seed)`` of a run folder named ``{preset or compat name}_s{seed}``, or None."""
    parsed = parse_model_stem(Path(path).name)
    preset = None if parsed is None else preset_of_folder_name(parsed[0])
    return None if preset is None else (preset, parsed[1])


def find_run_folders(
    runs_folder: str | os.PathLike, only_presets: Iterable[str] | None = None, only_seeds: Iterable[int] | None = None
) -> list[RunFolder]:
    """The run folders of known presets in ``runs_folder``, in preset-table order then by seed.
    Where a run exists under both names, the preset's own name wins (with a note printed)."""
    runs_folder = Path(runs_folder)
    if not runs_folder.is_dir():
        raise LayoutError(f"no runs folder {runs_folder}")
    wanted_presets = None if only_presets is None else set(only_presets)
    wanted_seeds = None if only_seeds is None else set(only_seeds)
    candidates: dict[tuple[str, int], list[Path]] = {}
    for path in sorted(p for p in runs_folder.iterdir() if p.is_dir()):
        run = run_of_folder(path)
        if run is None:
            continue
        preset, seed = run
        if (wanted_presets is None or preset in wanted_presets) and (wanted_seeds is None or seed in wanted_seeds):
            candidates.setdefault(run, []).append(path)
    found = []
    for (preset, seed), paths in candidates.items():
        paths.sort(key=lambda p: p.name != model_stem(preset, seed))  # the preset's own name first
        if len(paths) > 1:
            print(f"{preset} seed {seed}: using {paths[0]}, not {', '.join(map(str, paths[1:]))}")
        found.append(RunFolder(preset, seed, paths[0]))
    return sorted(found, key=lambda r: presets.table_order(r.preset, r.seed))


def is_run_finished(runs_folder: str | os.PathLike, preset: str, seed: int, train_steps: int) -> bool:
    """Whether the run has its final checkpoint (in its folder or under its older name)."""
    return any(train_steps in complete_checkpoint_steps(f) for f in run_folder_candidates(runs_folder, preset, seed))


def find_loss_histories(folder: str | os.PathLike, kind: str) -> dict[tuple[str, int], Path]:
    """``{(preset, seed): path}`` of the ``kind`` loss histories of known presets in ``folder``."""
    suffix = f"_{kind}_loss.parquet"
    found = {}
    for path in Path(folder).glob(f"*{suffix}"):
        parsed = known_model_stem(path.name[: -len(suffix)])
        if parsed is not None:
            found[parsed] = path
    return found


def find_trained_models(
    folder: str | os.PathLike, only_presets: Iterable[str] | None = None, only_seeds: Iterable[int] | None = None
) -> list[TrainedModel]:
    """The models ``{preset}_s{seed}.eqx`` in ``folder``, in preset-table order then by seed,
    optionally only those of ``only_presets`` / ``only_seeds``. Files of unknown presets are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"no trained models folder {folder} (export models with export_trained_models.py)")
    wanted_presets = None if only_presets is None else set(only_presets)
    wanted_seeds = None if only_seeds is None else set(only_seeds)
    found = []
    for path in folder.glob(f"*{WEIGHTS_SUFFIX}"):
        parsed = known_model_stem(path.stem)
        if parsed is None:
            continue
        preset, seed = parsed
        if (wanted_presets is None or preset in wanted_presets) and (wanted_seeds is None or seed in wanted_seeds):
            found.append(TrainedModel(preset, seed, folder))
    return sorted(found, key=lambda m: presets.table_order(m.preset, m.seed))


def find_output_crop_sumsqs(results_folder: str | os.PathLike) -> dict[tuple[str, int], Path]:
    """``{(preset, seed): path}`` of the stored eval_mse results of known presets."""
    found = {}
    for path in output_crop_sumsqs_folder(results_folder).glob("*.npy"):
        parsed = known_model_stem(path.stem)
        if parsed is not None:
            found[parsed] = path
    return found
