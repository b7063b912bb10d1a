"""Export final weights and loss histories out of training runs (the published layout of the
paper's repository, Niemitalo et al. 2025, arXiv:2502.12300; file names in ``run_layout``).

For each run folder (``catalog.find_run_folders``: a preset's name or its older compat name
and the seed, e.g. ``zero_el1_s3`` is ``zero_oc1`` seed 3), write into
``results/trained_models/`` the files of ``run_layout.TrainedModel``:

- the weights (``.eqx``) of the final checkpoint (the one at the run's ``train_steps``) in
  the published format (``rvsr.save_rvsr_weights``), and beside them their preset and seed
  (``.eqx.json``), which tools check against the file name and the user's options;
- the train and test loss histories (``_train_loss.parquet``, ``_test_loss.parquet``):
  ``step`` int32 and ``train_loss`` / ``test_loss`` float16;

both Parquet files brotli-compressed. The seed is the run folder's own. A run without a final
checkpoint (unfinished or diverged) gets its histories only. A newest checkpoint that fails its
checksums is an error for that run (the other runs are still exported; exit status 1), never
a silent fallback to an older one. Files are written atomically and existing exports are kept
unless ``--overwrite``; only a history that the run has since extended (an earlier export of
an unfinished run) is replaced by the longer one.

Usage::

    python export_trained_models.py [--runs-folder runs] [--output-folder results/trained_models]
        [--presets P ...] [--seeds S ...] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import checkpoints
import cli
import paths_config
import presets
import run_layout
import rvsr
from catalog import RunFolder, find_run_folders
from io_utils import atomic_path

__all__ = ["final_checkpoint", "export_run", "main"]


def final_checkpoint(run_folder: Path) -> tuple[Path | None, str]:
    """``(checkpoint, note)``: the newest checkpoint if it is at the run's ``train_steps``,
    else ``(None, why not)``. ``UserError`` when the newest checkpoint is damaged (its
    checkpoint.json or checksums): exporting an older one instead would hide the damage."""
    steps = checkpoints.list_checkpoints(run_folder)
    if not steps:
        return None, "no checkpoint"
    path = run_layout.checkpoint_folder(run_folder, steps[-1])
    try:
        info = checkpoints.read_checkpoint_info(path)
        checkpoints.verify_checkpoint_files(path, info)
    except checkpoints.CheckpointError as e:
        raise cli.UserError(f"{e}; rerun its training with resume_checkpoint=-1 to redo it") from e
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
        raise cli.UserError(f"{path}: malformed history ({e})") from e


def _history_outdated(path: Path, rows: int, overwrite: bool) -> bool:
    """Whether to write a history of ``rows`` rows to ``path``."""
    if overwrite or not path.exists():
        return True
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows < rows
    except (OSError, ValueError) as e:
        raise cli.UserError(f"{path}: unreadable export ({e}); rerun with --overwrite to replace it") from e


def export_run(run: RunFolder, output_folder: Path, overwrite: bool = False) -> str:
    """Export one run; returns what was done, for the log."""
    target = run_layout.TrainedModel(run.preset, run.seed, output_folder)
    written = []
    checkpoint, note = final_checkpoint(run.path)
    if checkpoint is not None and (overwrite or not target.weights_path.exists()):
        train_state, _ = checkpoints.load_checkpoint(checkpoint)  # a CheckpointError is one line too
        with atomic_path(target.weights_path) as tmp:
            rvsr.save_rvsr_weights(train_state.model, tmp)
        written.append("model")
    if target.weights_path.exists() and (overwrite or not target.metadata_path.exists()):
        run_layout.write_model_metadata(target.weights_path, run.preset, run.seed)
        written.append("metadata")
    for kind in run_layout.LOSS_HISTORY_KINDS:
        steps, losses = read_history_csv(run_layout.history_csv_path(run.path, kind))
        path = target.history_path(kind)
        if steps and _history_outdated(path, len(steps), overwrite):
            run_layout.write_loss_history(path, kind, steps, losses)
            written.append(f"{kind} loss ({len(steps)} rows)")
    status = "" if checkpoint is not None else f"; histories only ({note})"
    return f"{target.name} from {run.path}: " + (", ".join(written) or "up to date") + status


def main(argv: Sequence[str] | None = None) -> int:
    paths = paths_config.get_paths()
    parser = cli.ArgumentParser(prog="export_trained_models.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-folder", default=paths["train_runs_folder"], help="default: %(default)s")
    parser.add_argument("--output-folder", default=paths["trained_models_folder"], help="default: %(default)s")
    parser.add_argument("--presets", nargs="+", type=presets.preset_name, metavar="PRESET", help="default: all")
    parser.add_argument("--seeds", nargs="+", type=cli.non_negative_int, metavar="SEED", help="default: all")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports")

    def body(args: argparse.Namespace) -> None:
        runs = find_run_folders(args.runs_folder, args.presets, args.seeds)
        if not runs:
            raise cli.UserError(f"no run folders of the requested presets / seeds in {args.runs_folder}")
        failed = []
        for run in runs:
            try:
                print(export_run(run, Path(args.output_folder), args.overwrite))
            except cli.UserError as e:  # one damaged run must not stop the others' export
                print(f"{run.path}: error: {cli.one_line(e)}", file=sys.stderr)
                failed.append(run.path.name)
        if failed:
            raise cli.UserError(f"{len(failed)} run(s) not exported: {', '.join(failed)} (see above)")

    return cli.run_main(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
