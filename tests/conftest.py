"""Fixtures that several test files share: tiny image data, the hyperparameters of a tiny
training run, tiny random-init models in the published format, and the environment of the
scripts that tests start as subprocesses. (Markers, e.g. ``slow``, are registered in pytest.ini.)

Each fixture is a factory where test files differ in sizes or seeds, so that every file keeps
its own data while the recipe lives here once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the scripts the tests start: this repository importable, JAX on the
    CPU with one persistent compilation cache for the whole session (a configuration compiles
    once, whichever process needs it first), no ``LPPAD_*`` folders of the caller, unbuffered
    output."""
    cache = tmp_path_factory.mktemp("jax_cache")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LPPAD_")}
    environ.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONUNBUFFERED="1",
    )
    return environ


@pytest.fixture(scope="session")
def write_tiny_images() -> Callable[..., dict[str, Path]]:
    """``write(folder, counts, size, seed=0) -> {name: path}``: for each ``name, count`` of
    ``counts`` (in order, from one generator) ``{folder}/{name}.npy`` with ``count`` smooth
    images ``(count, 3, size, size)`` float32 in [-1, 1] (random walks along x, so that the
    padding methods see structure)."""

    def write(folder: Path, counts: Mapping[str, int], size: int, seed: int = 0) -> dict[str, Path]:
        rng = np.random.default_rng(seed)
        paths = {}
        for name, count in counts.items():
            images = np.cumsum(rng.normal(0, 0.1, (count, 3, size, size)), axis=-1)
            paths[name] = Path(folder) / f"{name}.npy"
            np.save(paths[name], np.clip(images, -1, 1).astype(np.float32))
        return paths

    return write


@pytest.fixture(scope="session")
def tiny_hpars() -> Callable[..., dict]:
    """``make(preset, folder, data=None, **overrides) -> hpars``: a tiny training run of
    ``preset`` (seed 0) in ``folder``: 4 hidden channels, 16x16 targets, batch 2, 3 steps with a
    checkpoint at step 2, no sample images; ``data`` gives the ``train`` and ``test`` files.
    Runs of one preset share their compiled steps (``train_utils`` caches them per configuration)."""
    import presets

    def make(preset: str, folder: Path, data: Mapping[str, str | Path] | None = None, **overrides) -> dict:
        hpars = presets.get_preset_hpars(preset, 0)
        hpars["model_hpars"]["hidden_channels"] = 4
        hpars.update(folder=str(folder), image_shape=[3, 16, 16], batch_size=2, train_steps=3, checkpoint_steps=[2],
                     test_image_save_interval=0)  # fmt: skip
        if data is not None:
            hpars.update(train_data_path=str(data["train"]), test_data_path=str(data["test"]))
        hpars.update(overrides)
        return hpars

    return make


@pytest.fixture(scope="session")
def write_tiny_models() -> Callable[..., dict[tuple[str, int], Path]]:
    """``write(folder, runs, hidden_channels=4, key_offset=0) -> {(preset, seed): path}``:
    random-init models of each ``(preset, seed)`` of ``runs`` (key ``seed + key_offset``) saved
    as ``{folder}/{preset}_s{seed}.eqx`` in the published format."""
    import jax

    import presets
    import run_layout
    import rvsr

    def write(folder: Path, runs: Iterable[tuple[str, int]], hidden_channels: int = 4,
              key_offset: int = 0) -> dict[tuple[str, int], Path]:  # fmt: skip
        Path(folder).mkdir(parents=True, exist_ok=True)
        paths = {}
        for preset, seed in runs:
            model_hpars = {**presets.get_preset_hpars(preset)["model_hpars"], "hidden_channels": hidden_channels}
            model, _ = rvsr.make_rvsr(model_hpars, 4, key=jax.random.PRNGKey(seed + key_offset))
            paths[(preset, seed)] = run_layout.TrainedModel(preset, seed, Path(folder)).weights_path
            rvsr.save_rvsr_weights(model, paths[(preset, seed)])
        return paths

    return write
