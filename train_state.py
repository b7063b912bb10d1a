"""What a training run's state is and how it is built from the hyperparameters: the model
(``rvsr.py``), Adam with the scheduled learning rate (Optax, described by ``presets``'s plain
data), and the random number generators, at step 0 of a run.

The trainer (``train_utils``) steps this state; ``checkpoints`` writes and reads it.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import numpy as np
import optax

import rvsr
from cli import UserError


def build_model(hpars: dict, key: jax.Array, *, inference: bool = False) -> tuple[rvsr.RVSR, eqx.nn.State]:
    """``(model, state)`` of ``hpars["model_hpars"]``; the model maps one image ``(3, h, w)``
    to ``(3, sr * (h - 2 oc), sr * (w - 2 oc))``."""
    return rvsr.make_rvsr(hpars["model_hpars"], hpars["sr_rate"], inference=inference, key=key)


def make_schedule(hpars: dict) -> optax.Schedule:
    """The learning-rate schedule described by ``hpars["learning_rate_schedule"]``."""
    spec = hpars["learning_rate_schedule"]
    if spec["name"] != "piecewise_interpolate":
        raise UserError(f"bad hyperparameter: unknown learning_rate_schedule {spec['name']!r}")
    return optax.piecewise_interpolate_schedule(
        spec["interpolate_type"],
        init_value=spec["init_value"],
        boundaries_and_scales={int(step): scale for step, scale in spec["boundaries_and_scales"]},
    )


def make_optimizer(hpars: dict) -> optax.GradientTransformation:
    """Adam with the scheduled learning rate, its hyperparameters kept in the optimizer state
    (``optax.inject_hyperparams``) so the learning rate of every update can be logged."""
    spec = dict(hpars["optimizer"])
    if spec.pop("name") != "adam":
        raise UserError(f"bad hyperparameter: unknown optimizer {hpars['optimizer']['name']!r}")
    return optax.inject_hyperparams(optax.adam, static_args=("nesterov",))(learning_rate=make_schedule(hpars), **spec)


def trainable(model: eqx.Module) -> eqx.Module:
    """The parameters of ``model`` that the optimizer updates (its floating-point arrays)."""
    return eqx.filter(model, eqx.is_inexact_array)


@dataclasses.dataclass
class TrainState:
    """Everything that determines the rest of a training run."""

    step: int
    model: eqx.Module
    model_state: eqx.nn.State
    opt_state: optax.OptState
    key: jax.Array  # the running raw uint32 key, shape (2,)
    rng: np.random.Generator  # draws the training batches


def init_train_state(hpars: dict, optimizer: optax.GradientTransformation) -> TrainState:
    """Step 0 of a run; random keys in the paper's code's order (numpy generator first, then
    the model's initialisation key)."""
    key = jax.random.PRNGKey(hpars["seed"])
    key, sub = jax.random.split(key)
    rng = np.random.default_rng(seed=np.array(sub))
    key, sub = jax.random.split(key)
    model, model_state = build_model(hpars, sub)
    return TrainState(0, model, model_state, optimizer.init(trainable(model)), key, rng)
