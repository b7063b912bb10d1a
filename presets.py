"""The experiment plan: default training hyperparameters, the paper's 22 presets and seeds.

Importing this module has no side effects (in particular it reads no environment variables:
data and run folders come from a ``paths`` dict that the command-line entry points build with
``paths_config.get_paths()``; without one the default relative folders are used).
Everything here is plain JSON-serialisable data (checkpoints store it as JSON); the optimizer
and learning-rate schedule are described by parameters and built by
``train_state.make_optimizer``.

Use ``get_preset_hpars(preset, seed)`` for the full hyperparameters of one training run. They
fall into two parts (``split_hpars``): the experiment *config* (``CONFIG_KEYS``: what changes
the results; stored with every checkpoint and compared on resume) and the run *options*
(``RUN_OPTION_KEYS``: how long, where and how a run goes).

The plan of the paper (Niemitalo et al. 2025, arXiv:2502.12300): every preset with seeds
0..11 except extr1, extr2 and lp6x7 with seeds 0..2, 237 runs (``plan()``).
"""

import argparse
import copy
import re
from collections.abc import Sequence

import paths_config
import run_layout
from cli import UserError
from padding import PAPER_METHODS

REPLACE = "<replace>"
"""A dict in a preset that contains this key replaces the default dict whole instead of merging."""

CHECKPOINT_STEPS: list[int] = (
    [0]
    + [multiple * 10**exponent for exponent in range(2, 5) for multiple in range(1, 10)]
    + list(range(100_000, 1_500_001, 100_000))
)
"""0, 100, ..., 900, 1000, ..., 90_000, 100_000, 200_000, ..., 1_500_000."""


def default_hpars(paths: dict | None = None) -> dict:
    """The default hyperparameters; data paths come from ``paths`` (default: the default
    folders of ``paths_config``, not the environment)."""
    paths = paths_config.default_paths() if paths is None else paths
    return {
        "preset": None,
        "compat_preset": None,
        "folder": None,
        "sr_rate": 4,
        "model_type": "RVSR",
        "model_hpars": {
            "hidden_channels": 16,
            "conv_padding_method": "lp",
            "upscale_padding_method": "lp",
            "padding_method_kwargs": {
                "length": 4,
                "width": 5,
                "apodization": "tukey",
                "correlate_method": "fft",
                "cholesky_stab": 1e-7,
            },
            "output_crop": 0,
        },
        "image_shape": [3, 192, 192],
        "batch_size": 64,
        "shuffle_train_data": True,
        # optax.inject_hyperparams(optax.adam)(learning_rate=schedule, **optimizer minus "name")
        "optimizer": {"name": "adam", "b1": 0.9, "b2": 0.999, "eps": 1e-3, "eps_root": 0.0, "nesterov": False},
        # optax.piecewise_interpolate_schedule; pairs instead of a dict because JSON keys are strings.
        # 5e-6 rising linearly to 0.014 at step 100, held to 1M, down to 0 at 1.5M.
        "learning_rate_schedule": {
            "name": "piecewise_interpolate",
            "interpolate_type": "linear",
            "init_value": 5e-6,
            "boundaries_and_scales": [[100, 2800], [1_000_000, 1], [1_500_000, 0]],
        },
        "train_image_save_interval": 0,
        "test_image_save_interval": 1000,
        "checkpoint_steps": list(CHECKPOINT_STEPS),
        "seed": 0,
        "train_steps": 1_500_000,
        "resume_checkpoint": None,
        "protect_existing": True,
        "save": True,
        "timing_filename": None,
        "inference_steps": None,
        "inference_data_path": None,
        "cooldown": 0.0,
        "train_data_path": paths_config.train_data_path(paths),
        "test_data_path": paths_config.test_data_path(paths),
        # Where batch_size="max" finds the largest batch sizes (results/timing.json).
        "results_folder": paths["results_folder"],
    }


hpars: dict = default_hpars()
"""Default hyperparameters, with the default (relative) data folders."""

LABEL_KEYS = ("preset", "compat_preset")
"""Which experiment a config is; names only, so a run under an older name still resumes."""
RESULT_KEYS = (
    "sr_rate",
    "model_type",
    "model_hpars",
    "image_shape",
    "batch_size",
    "shuffle_train_data",
    "optimizer",
    "learning_rate_schedule",
    "seed",
)
"""Hyperparameters that change the trained model: a resumed run must share them."""
CONFIG_KEYS = LABEL_KEYS + RESULT_KEYS
"""The experiment config: stored with every checkpoint, compared on resume (``RESULT_KEYS``)."""
RUN_OPTION_KEYS = tuple(name for name in hpars if name not in CONFIG_KEYS)
"""How and where a run goes: folder, train_steps, checkpoint_steps, resume_checkpoint,
protect_existing, save, timing, data paths, test-loss interval, ... (free to change on resume)."""


def split_hpars(hpars: dict) -> tuple[dict, dict]:
    """``(config, options)`` of a full hyperparameter dict (keys outside both lists are
    options too, so nothing is dropped)."""
    config = {name: hpars[name] for name in CONFIG_KEYS if name in hpars}
    options = {name: value for name, value in hpars.items() if name not in CONFIG_KEYS}
    return config, options


def _lp(method: str) -> dict:
    """The padding options of one of the paper's lp methods, as ``padding.PAPER_METHODS`` defines them."""
    return dict(PAPER_METHODS[method][1])


def _model(conv: str, upscale: str | None, kwargs: dict | None = None, output_crop: int = 0) -> dict:
    model_hpars = {"conv_padding_method": conv, "upscale_padding_method": upscale, "output_crop": output_crop}
    if kwargs is not None:
        model_hpars["padding_method_kwargs"] = kwargs
    return {"model_hpars": model_hpars}


def _with_compat(preset: dict, compat_preset: str) -> dict:
    return {**preset, "compat_preset": compat_preset}


_LP1X1CS = _lp("lp1x1cs")
_LP2X1CS = _lp("lp2x1cs")
_LP2X3 = _lp("lp2x3")

presets: dict[str, dict] = {
    "lp1x1cs": _model("lp", "lp", _LP1X1CS),
    "lp1x1cs_oc1": _with_compat(_model("lp", "lp", _LP1X1CS, 1), "lp1x1cs_el1"),
    "lp2x1": _model("lp", "lp", _lp("lp2x1")),
    "lp2x1cs": _model("lp", "lp", _LP2X1CS),
    "lp2x1cs_oc1": _with_compat(_model("lp", "lp", _LP2X1CS, 1), "lp2x1cs_el1"),
    "lp2x3": _model("lp", "lp", _LP2X3),
    "lp2x3_oc1": _with_compat(_model("lp", "lp", _LP2X3, 1), "lp2x3_el1"),
    "lp2x3_oc5": _with_compat(_model("lp", "lp", _LP2X3, 5), "lp2x3_el50"),
    "lp2x5": _model("lp", "lp", _lp("lp2x5")),
    "lp3x3": _model("lp", "lp", _lp("lp3x3")),
    "lp4x5": _model("lp", "lp", _lp("lp4x5")),
    "lp6x7": _model("lp", "lp", _lp("lp6x7")),
    "zero-repl": _with_compat(_model("zero", None), "zero"),
    "zero_oc1": _with_compat(_model("zero", None, output_crop=1), "zero_el1"),
    "zero_oc5": _with_compat(_model("zero", None, output_crop=5), "zero_el50"),
    "zero-zero": _with_compat(_model("zero", "zero"), "zerozero"),
    "repl": _model("repl", None),
    "repl_oc1": _with_compat(_model("repl", None, output_crop=1), "repl_el1"),
    "repl_oc5": _with_compat(_model("repl", None, output_crop=5), "repl_el50"),
    **{f"extr{n}": _model("extr", "extr", {REPLACE: True, **PAPER_METHODS[f"extr{n}"][1]}) for n in (1, 2, 3)},
}
"""Preset name -> overrides of the default hyperparameters (merged with ``merge_hpars``)."""


def table_order(preset: str, seed: int = 0) -> tuple[int, int]:
    """Sort key of runs, models and table rows: the preset's position in ``presets``, then the seed."""
    return list(presets).index(preset), seed


PAPER_SEEDS = range(12)
FEW_SEED_PRESETS = {"extr1": range(3), "extr2": range(3), "lp6x7": range(3)}
"""The paper trained these three presets with seeds 0..2 only."""
LAYER_NMSE_PRESETS = ("zero_oc5", "lp2x3_oc5")
"""The models whose feature-map padding NMSE the paper measures (``eval_layer_nmse.py``)."""

Run = tuple[str, int]  # (preset, seed)


class PlanError(UserError, ValueError):
    """A ``--presets`` / ``--seeds`` selection that names no valid runs (a ``cli.UserError``)."""


def plan(selected_presets: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[Run]:
    """Runs in preset-then-seed order. Unset presets: all of them; unset seeds: the paper's
    seeds of each preset (0..11, or 0..2 for extr1, extr2 and lp6x7): 237 runs in all."""
    runs = []
    for preset in presets if selected_presets is None else selected_presets:
        preset_seeds = FEW_SEED_PRESETS.get(preset, PAPER_SEEDS) if seeds is None else seeds
        runs.extend((preset, seed) for seed in preset_seeds)
    return runs


def parse_presets(text: str) -> list[str]:
    """``"lp2x3,repl"`` -> ``["lp2x3", "repl"]``; ``"all"`` is every preset."""
    if text.strip() == "all":
        return list(presets)
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in presets:
            raise PlanError(f"unknown preset {name!r} in --presets; choose from {', '.join(presets)}")
    if len(set(names)) != len(names):
        raise PlanError(f"--presets names a preset twice: {text}")
    return names


def parse_seeds(text: str) -> list[int]:
    """``"0-11"``, ``"0,3,5"`` or ``"0-2,7"`` -> a sorted list of distinct non-negative seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise PlanError(f"bad --seeds part {part!r}; expected seeds like 0-11 or 0,3,5")
        first = int(match[1])
        last = first if match[2] is None else int(match[2])
        if last < first:
            raise PlanError(f"bad --seeds range {part.strip()!r}: the end is below the start")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def preset_name(text: str) -> str:
    """argparse type: one of the paper's presets (``presets``)."""
    if text not in presets:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; known: {', '.join(presets)}")
    return text


def preset_list(text: str) -> list[str]:
    """argparse type of ``--presets``: comma-separated presets, or ``all`` (:func:`parse_presets`)."""
    try:
        return parse_presets(text)
    except PlanError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seed_list(text: str) -> list[int]:
    """argparse type of ``--seeds``: seeds like ``0-11`` or ``0,3,5`` (:func:`parse_seeds`)."""
    try:
        return parse_seeds(text)
    except PlanError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def merge_hpars(base: dict, overrides: dict) -> dict:
    """A deep copy of ``base`` updated by ``overrides``; nested dicts merge key by key.

    A nested override dict containing the key ``"<replace>"`` replaces the base dict whole
    (without the marker key).
    """
    merged = copy.deepcopy(base)
    for name, value in overrides.items():
        if isinstance(value, dict) and REPLACE in value:
            merged[name] = {k: copy.deepcopy(v) for k, v in value.items() if k != REPLACE}
        elif isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = merge_hpars(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def run_folder(preset: str, seed: int, paths: dict | None = None) -> str:
    """The run folder of ``preset`` and ``seed`` in ``train_runs_folder`` (``run_layout.run_folder``), as a string."""
    paths = paths_config.default_paths() if paths is None else paths
    return str(run_layout.run_folder(paths["train_runs_folder"], preset, seed))


def get_preset_hpars(preset: str, seed: int | None = None, *, paths: dict | None = None) -> dict:
    """The full hyperparameters of ``preset`` for ``seed`` (default: the default seed 0).

    Sets ``preset``, ``seed`` and ``folder`` (``run_folder``); folders come from
    ``paths`` (default: ``paths_config``'s defaults; command lines pass
    ``paths_config.get_paths()`` to honour ``LPPAD_*``). Raises ``KeyError`` for an unknown
    preset.
    """
    if preset not in presets:
        raise KeyError(f"unknown preset {preset!r}; known presets: {', '.join(presets)}")
    merged = merge_hpars(default_hpars(paths), presets[preset])
    merged["preset"] = preset
    if seed is not None:
        merged["seed"] = seed
    merged["folder"] = run_folder(preset, merged["seed"], paths)
    return merged
