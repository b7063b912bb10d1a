"""The evaluation results store and its units of work (file names: ``run_layout``).

Results never execute code on load: arrays are ``.npy`` read with ``allow_pickle=False``,
everything else JSON. Every file is written to a temporary name and renamed into place. A
unit of work (one model, one batch-size search, one timed run) is stored as soon as it is
done; a rerun skips stored units, so an interruption loses at most the unit in progress.

eval_mse.py's results describe themselves: beside each ``{preset}_s{seed}.npy`` (float64
``(11, N)``, unchanged) a ``{preset}_s{seed}.json`` holds the geometry it was made with::

    {"target_size": 192, "sr_rate": 4, "num_images": 1000, "output_crops": [0, 1, ..., 10]}

The JSON is written first and the array last, so a stored array always has its JSON; arrays
without one come from older versions (see :func:`load_sumsqs_results`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import presets
from catalog import find_output_crop_sumsqs
from cli import UserError
from eval_geometry import NUM_MASKS
from io_utils import atomic_path, atomic_write_json
from run_layout import TrainedModel, output_crop_sumsqs_metadata_path, output_crop_sumsqs_path

# ----------------------------------------------------------------------------------------------
# Arrays and JSON files


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """An array stored by :func:`save_array` (never unpickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable result file ({e}); delete it or rerun with --overwrite") from e


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or ``{}`` when there is no such file."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable JSON results ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of results")
    return data


def nested_get(data: Mapping, keys: Sequence[str], default: Any = None) -> Any:
    """``data[k0][k1]...`` or ``default`` when any level is missing."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


def update_json(path: str | os.PathLike, updates: Mapping[tuple[str, ...], Any]) -> dict:
    """Set ``data[k0][k1]... = value`` for each ``(k0, k1, ...): value`` of ``updates`` in the
    JSON results file ``path`` and write it atomically. The file is read just before, so
    results that another process stored in the meantime are kept."""
    data = read_json(path)
    for keys, value in updates.items():
        level = data
        for key in keys[:-1]:
            level = level.setdefault(key, {})
        level[keys[-1]] = value
    atomic_write_json(path, data)
    return data


# ----------------------------------------------------------------------------------------------
# eval_mse.py results and their metadata


@dataclasses.dataclass(frozen=True)
class SumsqsMetadata:
    """How an ``output_crop_sumsqs`` array was made: row k sums the squared error over the
    target region ``[sr k, T - sr k)`` (``T = target_size``) for each of ``num_images`` test
    images; ``output_crops`` lists the k of the rows."""

    target_size: int
    sr_rate: int
    num_images: int
    output_crops: tuple[int, ...] = tuple(range(NUM_MASKS))

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of the array it describes, ``(11, num_images)``."""
        return (len(self.output_crops), self.num_images)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "output_crops": list(self.output_crops)}

    @classmethod
    def from_json(cls, data: Any, path: Path) -> SumsqsMetadata:
        try:
            meta = cls(int(data["target_size"]), int(data["sr_rate"]), int(data["num_images"]),
                       tuple(int(k) for k in data["output_crops"]))  # fmt: skip
        except (TypeError, KeyError, ValueError) as e:
            raise UserError(
                f"{path}: not eval_mse.py metadata ({e!r}); delete it or rerun eval_mse.py with --overwrite"
            ) from e
        if meta.output_crops != tuple(range(NUM_MASKS)):
            raise UserError(f"{path}: output_crops {list(meta.output_crops)}, expected 0..{NUM_MASKS - 1}")
        return meta


@dataclasses.dataclass(frozen=True)
class SumsqsResult:
    """One model's stored eval_mse result: ``sumsqs`` float64 ``(11, N)`` and its metadata
    (None for results of older versions, which stored no JSON)."""

    sumsqs: np.ndarray
    metadata: SumsqsMetadata | None


def save_sumsqs(
    results_folder: str | os.PathLike, preset: str, seed: int, sumsqs: np.ndarray, metadata: SumsqsMetadata
) -> None:
    """Store one model's ``(11, N)`` array and its metadata (the JSON first; see the module doc)."""
    if sumsqs.shape != metadata.shape:
        raise ValueError(f"sums of shape {sumsqs.shape} do not match the metadata's {metadata.shape}")
    atomic_write_json(output_crop_sumsqs_metadata_path(results_folder, preset, seed), metadata.to_json())
    save_array(output_crop_sumsqs_path(results_folder, preset, seed), sumsqs)


def read_sumsqs_metadata(results_folder: str | os.PathLike, preset: str, seed: int) -> SumsqsMetadata | None:
    """The metadata of a stored result, or None when it has none (an older result)."""
    path = output_crop_sumsqs_metadata_path(results_folder, preset, seed)
    return SumsqsMetadata.from_json(read_json(path), path) if path.exists() else None


def is_sumsqs_stored(results_folder: str | os.PathLike, preset: str, seed: int, metadata: SumsqsMetadata) -> bool:
    """Whether the result of the run described by ``metadata`` is stored already. A stored
    result of another geometry (other ``--num-images`` or ``--target-size``) is an error, not
    silently kept or mixed in."""
    path = output_crop_sumsqs_path(results_folder, preset, seed)
    if not path.exists():
        return False
    stored = load_array(path)
    if stored.shape != metadata.shape:
        raise UserError(
            f"{path} has shape {stored.shape}, this run makes {metadata.shape}; use the same --num-images or --overwrite"
        )
    stored_metadata = read_sumsqs_metadata(results_folder, preset, seed)
    if stored_metadata is not None and stored_metadata != metadata:
        raise UserError(f"{path} was made with {stored_metadata.to_json()}, this run with {metadata.to_json()}; "
                        "use the same options or --overwrite")  # fmt: skip
    return True


def load_sumsqs_results(results_folder: str | os.PathLike) -> dict[tuple[str, int], SumsqsResult]:
    """``{(preset, seed): SumsqsResult}`` of every stored eval_mse result of a known preset,
    in table order."""
    found = find_output_crop_sumsqs(results_folder)
    return {
        (preset, seed): SumsqsResult(load_array(path), read_sumsqs_metadata(results_folder, preset, seed))
        for (preset, seed), path in sorted(found.items(), key=lambda item: presets.table_order(*item[0]))
    }


def load_output_crop_sumsqs(results_folder: str | os.PathLike) -> dict[str, dict[int, np.ndarray]]:
    """``{preset: {seed: (11, N) float64}}`` of every stored eval_mse result, arrays only."""
    results: dict[str, dict[int, np.ndarray]] = {}
    for (preset, seed), result in load_sumsqs_results(results_folder).items():
        results.setdefault(preset, {})[seed] = result.sumsqs
    return results


# ----------------------------------------------------------------------------------------------
# Units of work


@dataclasses.dataclass
class Unit:
    """A unit of work whose result is stored when it completes."""

    name: str
    is_done: Callable[[], bool]
    run: Callable[[], None]


def run_units(units: Sequence[Unit], desc: str, overwrite: bool = False) -> None:
    """Run the units not stored yet (all with ``overwrite``), with a progress bar."""
    todo = list(units) if overwrite else [u for u in units if not u.is_done()]
    if len(todo) < len(units):
        print(f"{desc}: {len(units) - len(todo)} of {len(units)} stored already (skipped; --overwrite recomputes)")
    with tqdm(todo, desc=desc, unit="unit") as bar:
        for unit in bar:
            bar.set_postfix_str(unit.name)
            unit.run()


def model_units(
    models: Sequence[TrainedModel], is_done: Callable[[TrainedModel], bool], run: Callable[[TrainedModel], None]
) -> list[Unit]:
    """One unit per model."""
    return [Unit(m.name, lambda m=m: is_done(m), lambda m=m: run(m)) for m in models]
