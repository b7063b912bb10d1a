"""Trained model files in the published format, loaded for use: the weights of ``rvsr.py``'s
file format (as the paper's authors published them and export_trained_models.py writes them),
built with their preset's hyperparameters at any output crop.

The evaluations, the figures and superresolve.py load models from here; the file names and
folder layout are ``run_layout``'s (``TrainedModel``).
"""

from __future__ import annotations

import os

import equinox as eqx
import numpy as np

import presets
import run_layout
import rvsr
from cli import UserError
from run_layout import TrainedModel


def read_hidden_channels(path: str | os.PathLike) -> int:
    """The hidden channel count of an RVSR weights file (``rvsr.save_rvsr_weights`` format).

    The file is a sequence of .npy records; the first is the head convolution's weight
    ``(hidden_channels, 3, 3, 3)``. Reading it lets models of any width (tiny smoke-run models,
    the paper's 16) load without extra metadata.
    """
    try:
        with open(path, "rb") as f:
            first = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not an RVSR weights file ({e})") from e
    if first.ndim != 4 or first.shape[1:] != (3, 3, 3):
        raise UserError(f"{path}: not an RVSR weights file (first array has shape {first.shape})")
    return int(first.shape[0])


def load_trained_model(model: TrainedModel, output_crop: int) -> tuple[rvsr.RVSR, eqx.nn.State]:
    """``(model, state)`` with the published weights, built at ``output_crop`` (any of 0..10,
    whatever the preset was trained with: the file holds every layer's weights). Refused when
    the preset recorded beside the weights (``run_layout.read_model_metadata``) is another."""
    recorded = run_layout.read_model_metadata(model.weights_path)
    if recorded is not None and recorded["preset"] != model.preset:
        raise UserError(
            f"{model.weights_path.name} holds a {recorded['preset']} model (recorded in "
            f"{model.metadata_path.name}), not {model.preset}"
        )
    hpars = presets.get_preset_hpars(model.preset)
    model_hpars = {**hpars["model_hpars"], "hidden_channels": read_hidden_channels(model.weights_path)}
    try:
        return rvsr.load_rvsr(model.weights_path, model_hpars, hpars["sr_rate"], output_crop=output_crop)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load {model.weights_path}: {e}") from e
