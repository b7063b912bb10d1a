"""Export final weights and loss histories out of training runs (SPEC 7).

For each run folder ``runs/{name}_s{seed}`` whose name is a preset or a preset's compat name
(``zero_el1_s3`` is ``zero_oc1`` seed 3), write into ``results/trained_models/``:

- ``{preset}_s{seed}.eqx``: the weights of the final checkpoint (the one at the run's
  ``train_steps``) in the published format (SPEC 3, ``rvsr.save_rvsr_weights``);
- ``{preset}_s{seed}_train_loss.parquet``: ``step`` int32, ``train_loss`` float16;
- ``{preset}_s{seed}_test_loss.parquet``: ``step`` int32, ``test_loss`` float16;

both Parquet files brotli-compressed. The seed is the run folder's own. A run without a final
checkpoint (unfinished or diverged) gets its histories only. Files are written atomically and
existing exports are kept unless ``--overwrite``; only a history that the run has since
extended (an earlier export of an unfinished run) is replaced by the longer one.

Usage::

    python export_trained_models.py [--runs-folder runs] [--output-folder results/trained_models]
        [--presets P ...] [--seeds S ...] [--overwrite]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import eval_common as ec
import paths_config
import presets
import rvsr
import train_utils
from io_utils import atomic_path

HISTORY_FILES = {"train": train_utils.TRAIN_HISTORY_FILENAME, "test": train_utils.TEST_HISTORY_FILENAME}


@dataclasses.dataclass(frozen=True)
class RunFolder:
    preset: str
    seed: int
    path: Path


def preset_of_folder_name(name: str) -> str | None:
    """The preset whose name or compat name is ``name``, or None."""
    if name in presets.presets:
        return name
    return next((p for p, overrides in presets.presets.items() if overrides.get("compat_preset") == name), None)


def find_run_folders(
    runs_folder: str | Path, only_presets: Iterable[str] | None = None, only_seeds: Iterable[int] | None = None
) -> list[RunFolder]:
    """The run folders of known presets in ``runs_folder``, in preset-table order then by seed.
    Where a run exists under both names, the preset name wins (with a note)."""
    runs_folder = Path(runs_folder)
    if not runs_folder.is_dir():
        raise ec.EvalError(f"no runs folder {runs_folder}")
    wanted_presets = None if only_presets is None else set(only_presets)
    wanted_seeds = None if only_seeds is None else set(only_seeds)
    candidates: dict[tuple[str, int], list[Path]] = {}
    for path in sorted(p for p in runs_folder.iterdir() if p.is_dir()):
        parsed = ec.parse_model_stem(path.name)
        preset = None if parsed is None else preset_of_folder_name(parsed[0])
        if preset is None:
            continue
        seed = parsed[1]
        if (wanted_presets is None or preset in wanted_presets) and (wanted_seeds is None or seed in wanted_seeds):
            candidates.setdefault((preset, seed), []).append(path)
    runs = []
    for (preset, seed), paths in candidates.items():
        paths.sort(key=lambda p: p.name != ec.model_stem(preset, seed))  # the preset's own name first
        if len(paths) > 1:
            print(f"{preset} seed {seed}: using {paths[0]}, not {', '.join(map(str, paths[1:]))}")
        runs.append(RunFolder(preset, seed, paths[0]))
    return sorted(runs, key=lambda r: ec.table_order(r.preset, r.seed))


def final_checkpoint(run_folder: Path) -> tuple[Path | None, str]:
    """``(checkpoint, note)``: the newest checkpoint if it is at the run's ``train_steps``,
    else ``(None, why not)``."""
    path = train_utils.latest_checkpoint(run_folder)
    if path is None:
        return None, "no checkpoint"
    info = train_utils.read_checkpoint_info(path)
    if info["step"] != info["hpars"]["train_steps"]:
        return None, f"newest checkpoint is step {info['step']} of {info['hpars']['train_steps']}"
    return path, f"step {info['step']}"


def read_history_csv(path: Path) -> tuple[list[int], list[float]]:
    """``(steps, losses)`` from a trainer history CSV (columns step, loss, ...)."""
    if not path.is_file():
        return [], []
    lines = path.read_text().splitlines()[1:]
    try:
        rows = [line.split(",") for line in lines if line.strip()]
        return [int(r[0]) for r in rows], [float(r[1]) for r in rows]
    except (IndexError, ValueError) as e:
        raise ec.EvalError(f"{path}: malformed history ({e})") from e


def _history_outdated(path: Path, rows: int, overwrite: bool) -> bool:
    """Whether to write a history of ``rows`` rows to ``path``."""
    if overwrite or not path.exists():
        return True
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows < rows
    except (OSError, ValueError) as e:
        raise ec.EvalError(f"{path}: unreadable export ({e}); rerun with --overwrite to replace it") from e


def export_run(run: RunFolder, output_folder: Path, overwrite: bool = False) -> str:
    """Export one run; returns what was done, for the log."""
    target = ec.TrainedModel(run.preset, run.seed, output_folder)
    written = []
    checkpoint, note = final_checkpoint(run.path)
    if checkpoint is not None and (overwrite or not target.weights_path.exists()):
        try:
            train_state, _ = train_utils.load_checkpoint(checkpoint)
        except train_utils.CheckpointError as e:
            raise ec.EvalError(str(e)) from e
        with atomic_path(target.weights_path) as tmp:
            rvsr.save_rvsr_weights(train_state.model, tmp)
        written.append("model")
    for kind, filename in HISTORY_FILES.items():
        steps, losses = read_history_csv(run.path / filename)
        path = target.history_path(kind)
        if steps and _history_outdated(path, len(steps), overwrite):
            ec.write_loss_history(path, kind, steps, losses)
            written.append(f"{kind} loss ({len(steps)} rows)")
    status = "" if checkpoint is not None else f"; histories only ({note})"
    return f"{target.name} from {run.path}: " + (", ".join(written) or "up to date") + status


def main(argv: Sequence[str] | None = None) -> int:
    paths = paths_config.get_paths()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-folder", default=paths["train_runs_folder"], help="default: %(default)s")
    parser.add_argument("--output-folder", default=paths["trained_models_folder"], help="default: %(default)s")
    parser.add_argument("--presets", nargs="+", type=ec.preset_name, metavar="PRESET", help="default: all")
    parser.add_argument("--seeds", nargs="+", type=ec.non_negative_int, metavar="SEED", help="default: all")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports")
    args = parser.parse_args(argv)

    def body() -> None:
        runs = find_run_folders(args.runs_folder, args.presets, args.seeds)
        if not runs:
            raise ec.EvalError(f"no run folders of the requested presets / seeds in {args.runs_folder}")
        for run in runs:
            print(export_run(run, Path(args.output_folder), args.overwrite))

    return ec.run_script("export_trained_models.py", body)


if __name__ == "__main__":
    sys.exit(main())
