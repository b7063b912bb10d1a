"""The checkpoint format of training runs: writing, verification, listing, loading, and which
checkpoint a run resumes from.

A checkpoint is the folder ``{step:08d}/`` of a run folder (names in ``run_layout``) with
``model.eqx``, ``model_state.eqx``, ``opt_state.eqx`` (``eqx.tree_serialise_leaves`` of the
``train_state.TrainState``) and ``checkpoint.json``: step, random number generator states,
history lengths, the experiment ``config`` and run ``options`` (``presets.split_hpars``), and
the size and SHA-256 of each array file, plus a SHA-256 of checkpoint.json's own other fields
(format 2). Nothing is pickled, so loading a checkpoint never executes code. Format 1
checkpoints (one ``hpars`` field, no checksums) still load: every array must deserialise with
nothing left over.

Faults: a checkpoint is written into a temporary folder, fsynced and renamed into place, so a
kill or a full disk leaves the earlier checkpoints as they were. ``resume_checkpoint=-1``
resumes from the newest checkpoint that fully loads (JSON, checksums, arrays, the history rows
it counts), saying which newer ones it skipped and why; when there are checkpoints but none
loads it stops without changing anything (``protect_existing=False`` starts over).

The trainer (``train_utils``), ``export_trained_models.py`` and ``slurm_train.py --status``
use this module; none of them needs the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import presets
import run_layout
from cli import UserError, one_line
from io_utils import atomic_write_json, fsync_dir, fsync_file
from train_state import TrainState, build_model, make_optimizer, trainable

# 1: checkpoint.json with "hpars"; 2: "config" and "options" apart, plus the size and SHA-256
# of every array file and a checksum of checkpoint.json itself.
CHECKPOINT_FORMAT_VERSION = 2
READABLE_CHECKPOINT_VERSIONS = (1, 2)
CHECKPOINT_INFO_FILENAME = "checkpoint.json"
CHECKPOINT_FILES = (CHECKPOINT_INFO_FILENAME, "model.eqx", "model_state.eqx", "opt_state.eqx")
# Hyperparameters a resumed run must share with its checkpoint: the experiment config
# (presets.CONFIG_KEYS) without its labels. Run options (train_steps, paths, ...) may change
# between sessions.
RESUME_INVARIANT_HPARS = presets.RESULT_KEYS


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or belongs to other hyperparameters."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (full disk, quota, I/O error); earlier checkpoints
    are untouched."""


# ----------------------------------------------------------------------------------------------
# Listing


def list_checkpoints(folder: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint folders ``{folder}/{step:08d}/``, ascending, whatever their
    content (temporary folders excluded; :func:`latest_checkpoint` and
    :func:`newest_usable_checkpoint` say which are usable)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and run_layout.is_checkpoint_folder_name(p.name))


def complete_checkpoint_steps(folder: str | os.PathLike) -> list[int]:
    """Steps of the checkpoint folders that have their ``checkpoint.json`` (what a cheap look,
    e.g. a status table, counts as written; loading verifies the rest)."""
    return [
        step
        for step in list_checkpoints(folder)
        if (run_layout.checkpoint_folder(folder, step) / CHECKPOINT_INFO_FILENAME).is_file()
    ]


# ----------------------------------------------------------------------------------------------
# Writing and reading


def _to_json_data(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(value))


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _json_sha256(info: dict) -> str:
    """The checksum ``checkpoint.json`` carries of its own other fields (a bit flip that still
    parses as JSON is caught too)."""
    rest = {k: v for k, v in info.items() if k != "json_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _write_checkpoint_files(tmp: Path, ts: TrainState, hpars: dict, history_rows: dict[str, int]) -> None:
    """The array files, then ``checkpoint.json`` with their sizes and SHA-256 read back from
    disk (so the checksums describe what was written, not what was meant to be)."""
    arrays = {"model.eqx": ts.model, "model_state.eqx": ts.model_state, "opt_state.eqx": ts.opt_state}
    files = {}
    for name, tree in arrays.items():
        eqx.tree_serialise_leaves(tmp / name, tree)
        fsync_file(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256_of_file(tmp / name)}
    config, options = presets.split_hpars(_to_json_data(hpars))
    info = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": ts.step,
        "jax_key": np.asarray(ts.key).tolist(),
        "numpy_rng_state": ts.rng.bit_generator.state,
        "history_rows": history_rows,
        "config": config,
        "options": options,
        "files": files,
    }
    info["json_sha256"] = _json_sha256(info)
    atomic_write_json(tmp / CHECKPOINT_INFO_FILENAME, info)


def save_checkpoint(folder: str | os.PathLike, ts: TrainState, hpars: dict, history_rows: dict[str, int]) -> Path:
    """Write ``{folder}/{step:08d}/``: written into a temporary folder first and renamed into
    place, so a checkpoint folder is always complete. An existing checkpoint of the same step
    (from a resumed run, hence identical) is replaced only after the new one is written.
    ``CheckpointWriteError`` (after removing the temporary folder) when the disk refuses."""
    folder = Path(folder)
    final = run_layout.checkpoint_folder(folder, ts.step)
    token = secrets.token_hex(4)
    tmp = run_layout.partial_checkpoint_folder(folder, ts.step, token)
    try:
        tmp.mkdir(parents=True)
        _write_checkpoint_files(tmp, ts, hpars, history_rows)
        if final.exists():
            old = run_layout.replaced_checkpoint_folder(folder, ts.step, token)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        fsync_dir(folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointWriteError(
                f"could not write the checkpoint of step {ts.step} in {folder} ({e}); the earlier checkpoints are "
                "intact: fix the cause and rerun with resume_checkpoint=-1"
            ) from e
        raise
    return final


def read_checkpoint_info(path: str | os.PathLike) -> dict:
    """The ``checkpoint.json`` of checkpoint folder ``path``, with ``hpars`` (config and run
    options merged, as every format version reads); ``CheckpointError`` if the folder is
    incomplete, the file unreadable or its own checksum wrong. The array files are not read
    (``load_checkpoint`` verifies them)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint {path}")
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing)})")
    try:
        info = json.loads((path / CHECKPOINT_INFO_FILENAME).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: unreadable checkpoint.json ({e})") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"checkpoint {path}: checkpoint.json is not a JSON object")
    version = info.get("format_version")
    if version not in READABLE_CHECKPOINT_VERSIONS:
        raise CheckpointError(f"checkpoint {path}: unknown format_version {version!r}")
    if version >= 2:
        if info.get("json_sha256") != _json_sha256(info):
            raise CheckpointError(f"checkpoint {path}: checkpoint.json does not match its checksum (corrupted)")
        info["hpars"] = {**info["config"], **info["options"]}
    if not isinstance(info.get("hpars"), dict) or not isinstance(info.get("step"), int):
        raise CheckpointError(f"checkpoint {path}: checkpoint.json lacks step or hyperparameters")
    return info


def verify_checkpoint_files(path: str | os.PathLike, info: dict) -> None:
    """``CheckpointError`` unless every array file has the size and SHA-256 recorded when it
    was written (format 2). Format 1 checkpoints recorded none; ``load_checkpoint`` then
    relies on every array deserialising to the expected shapes with nothing left over."""
    path = Path(path)
    for name, expected in info.get("files", {}).items():
        file = path / name
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(
                f"checkpoint {path}: {name} has {size} bytes, {expected['bytes']} were written (truncated?)"
            )
        if _sha256_of_file(file) != expected["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its SHA-256 (corrupted)")


def _deserialise_exactly(file: Path, like: Any) -> Any:
    """The tree in ``file`` shaped like ``like``; trailing bytes are an error too."""
    with open(file, "rb") as f:
        tree = eqx.tree_deserialise_leaves(f, like)
        if f.read(1):
            raise ValueError(f"{file.name} has data after its last array")
    return tree


def load_checkpoint(path: str | os.PathLike, hpars: dict | None = None) -> tuple[TrainState, dict]:
    """``(train_state, info)`` from checkpoint folder ``path``; ``info`` is its
    ``checkpoint.json`` (``step``, ``hpars``, ``history_rows``, ...). The model is built from
    ``hpars`` (default: the checkpoint's own) and must match the stored arrays. Checksums are
    verified first; ``CheckpointError`` names what is wrong."""
    path = Path(path)
    info = read_checkpoint_info(path)
    verify_checkpoint_files(path, info)
    if "files" not in info:
        print(f"note: checkpoint {path} is format 1 (no checksums): verified by loading every array")
    hpars = info["hpars"] if hpars is None else hpars
    optimizer = make_optimizer(hpars)
    # Shapes only: the stored arrays replace every array leaf.
    model_like, state_like = eqx.filter_eval_shape(build_model, hpars, jax.random.PRNGKey(0))
    opt_state_like = eqx.filter_eval_shape(lambda m: optimizer.init(trainable(m)), model_like)
    try:
        model = _deserialise_exactly(path / "model.eqx", model_like)
        model_state = _deserialise_exactly(path / "model_state.eqx", state_like)
        opt_state = _deserialise_exactly(path / "opt_state.eqx", opt_state_like)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path}: arrays unreadable or not of the model's shapes ({one_line(e)})"
        ) from e
    try:
        rng = np.random.default_rng()
        rng.bit_generator.state = info["numpy_rng_state"]
        key = jnp.asarray(np.array(info["jax_key"], dtype=np.uint32))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: bad random number generator state ({e})") from e
    return TrainState(info["step"], model, model_state, opt_state, key, rng), info


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``folder`` whose checkpoint.json reads and whose array files
    match their checksums, or None. (Cheap: arrays are not deserialised; ``load_checkpoint``
    does that.)"""
    for step in reversed(list_checkpoints(folder)):
        path = run_layout.checkpoint_folder(folder, step)
        try:
            verify_checkpoint_files(path, read_checkpoint_info(path))
        except (CheckpointError, OSError):
            continue
        return path
    return None


def check_resume_hpars(hpars: dict, stored: dict, path: Path) -> None:
    current, stored = _to_json_data(hpars), _to_json_data(stored)
    for name in RESUME_INVARIANT_HPARS:
        if current.get(name) != stored.get(name):
            raise CheckpointError(
                f"cannot resume from {path}: {name} differs (checkpoint {stored.get(name)!r}, now {current.get(name)!r})"
            )


def history_rows_present(folder: Path, history_rows: dict[str, int]) -> None:
    """``CheckpointError`` unless the run's history files hold the rows a checkpoint counts
    (a history lost or cut short cannot be redone from that checkpoint)."""
    for kind, rows in history_rows.items():
        path = run_layout.history_csv_path(folder, kind)
        have = len(path.read_text(errors="replace").splitlines()[1:]) if path.is_file() else 0
        if have < rows:
            raise CheckpointError(f"{path.name} has {have} rows, the checkpoint counts {rows}")


# ----------------------------------------------------------------------------------------------
# Resuming


@dataclasses.dataclass
class Resume:
    """The checkpoint a run continues from, and the newer ones passed over (step, why)."""

    path: Path
    train_state: TrainState
    info: dict
    skipped: list[tuple[int, str]]


def newest_usable_checkpoint(hpars: dict) -> tuple[Resume | None, list[tuple[int, str]]]:
    """``(resume, rejected)``: the newest checkpoint of ``hpars["folder"]`` that fully loads
    (JSON, every array file, checksums, the history rows it counts) for ``hpars``, and the
    ``(step, why)`` of each newer checkpoint that did not. Reads only; changes nothing.

    A usable checkpoint of other hyperparameters is not skipped: ``CheckpointError``."""
    folder = Path(hpars["folder"])
    rejected: list[tuple[int, str]] = []
    for step in reversed(list_checkpoints(folder)):
        path = run_layout.checkpoint_folder(folder, step)
        try:
            info = read_checkpoint_info(path)
        except CheckpointError as e:
            rejected.append((step, one_line(e)))
            continue
        check_resume_hpars(hpars, info["hpars"], path)
        try:
            ts, info = load_checkpoint(path, hpars)
            if hpars["save"]:
                history_rows_present(folder, info["history_rows"])
        except (CheckpointError, OSError) as e:
            rejected.append((step, one_line(e)))
            continue
        return Resume(path, ts, info, rejected), rejected
    return None, rejected


def restore_replaced_checkpoints(folder: Path) -> None:
    """A kill between the two renames of ``save_checkpoint`` leaves a complete older copy of
    a step in ``.replaced-{step}-*`` and no ``{step}``: move it back (it is the same data)."""
    for path in sorted(folder.glob(f"{run_layout.REPLACED_CHECKPOINT_PREFIX}*")):
        step_text = path.name[len(run_layout.REPLACED_CHECKPOINT_PREFIX) :].split("-")[0]
        if path.is_dir() and step_text.isdigit():
            final = run_layout.checkpoint_folder(folder, int(step_text))
            if not final.exists():
                os.rename(path, final)


def remove_partial_checkpoints(folder: Path) -> None:
    """Temporary folders of checkpoints that a killed run never finished (never read)."""
    for path in folder.glob(f"{run_layout.PARTIAL_CHECKPOINT_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path)


def _no_usable_checkpoint_message(folder: str, rejected: list[tuple[int, str]]) -> str:
    reasons = "; ".join(f"step {step}: {why}" for step, why in rejected)
    return (
        f"run folder {folder} has checkpoints but none is usable ({reasons}); nothing was changed; "
        "to start over anyway rerun with protect_existing=False"
    )


def select_resume_checkpoint(hpars: dict) -> Resume | None:
    """The checkpoint to resume from, per ``resume_checkpoint``; None to start fresh. Never
    discards: with -1 and checkpoints that are all unusable, ``CheckpointError`` unless
    ``protect_existing`` is False."""
    resume = hpars["resume_checkpoint"]
    if resume is None:
        return None
    if not hpars["folder"]:
        raise CheckpointError("resume_checkpoint needs a folder")
    if resume != -1:
        path = run_layout.checkpoint_folder(hpars["folder"], resume)
        check_resume_hpars(hpars, read_checkpoint_info(path)["hpars"], path)
        ts, info = load_checkpoint(path, hpars)
        if hpars["save"]:
            history_rows_present(Path(hpars["folder"]), info["history_rows"])
        return Resume(path, ts, info, [])
    found, rejected = newest_usable_checkpoint(hpars)
    if found is None and rejected:
        if hpars["protect_existing"]:
            raise CheckpointError(_no_usable_checkpoint_message(hpars["folder"], rejected))
        print(
            f"warning: {_no_usable_checkpoint_message(hpars['folder'], rejected)}; starting over (protect_existing=False)"
        )
    for step, why in rejected if found is not None else []:
        print(f"warning: skipping checkpoint of step {step} ({why}); resuming from step {found.info['step']}")
    return found
