"""Every folder and file name of the workflow, in one dict.

Folders can be moved without editing this file: an environment variable
``LPPAD_<KEY>`` (the key in upper case, for example ``LPPAD_DATASET_FOLDER=/scratch/s2``)
overrides the default of that key. ``trained_models_folder`` follows ``results_folder``
unless it is overridden itself. Scripts that take folder options on their command line
use these values as their defaults.
"""

import os

_DEFAULTS = {
    "temp_folder": "temp",
    "dataset_folder": "dataset",
    "train_data_filename": "train_data.npy",
    "test_data_filename": "test_data.npy",
    "train_runs_folder": "runs",
    "results_folder": "results",
    "trained_models_folder": None,  # derived from results_folder below
    "eval_results_filename": "eval_results.json",
    "graphs_folder": "plots",
}

ENV_PREFIX = "LPPAD_"


def default_paths() -> dict[str, str]:
    """The paths dict without environment overrides (what library code uses when a caller
    passes no paths)."""
    return get_paths({})


def get_paths(environ: dict | None = None) -> dict[str, str]:
    """The paths dict with environment overrides applied (pure given ``environ``). Called by
    command-line entry points; library functions take a paths dict instead."""
    environ = os.environ if environ is None else environ
    paths = {key: environ.get(ENV_PREFIX + key.upper(), value) for key, value in _DEFAULTS.items()}
    if paths["trained_models_folder"] is None:
        paths["trained_models_folder"] = os.path.join(paths["results_folder"], "trained_models")
    return paths


def train_data_path(paths: dict | None = None) -> str:
    paths = get_paths() if paths is None else paths
    return os.path.join(paths["dataset_folder"], paths["train_data_filename"])


def test_data_path(paths: dict | None = None) -> str:
    paths = get_paths() if paths is None else paths
    return os.path.join(paths["dataset_folder"], paths["test_data_filename"])
