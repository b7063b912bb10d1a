"""Training learns: on a tiny super-resolution task the trainer of train_utils (as job.py runs
it) brings the training and the test loss well below where they start.

A broken gradient (wrong sign, stopped, not applied), an optimizer that does not update the
model, or a learning-rate schedule stuck at zero leaves the loss where it starts, and this test
fails. The model is the paper's RVSR (zero-repl preset) narrowed to 4 hidden channels; the
data are a few piecewise-constant images (overlapping rectangles), which the model maps from
8x8 inputs to 32x32 outputs.
"""

from pathlib import Path

import numpy as np
import pytest

import presets
import run_layout
import train_utils

pytestmark = pytest.mark.slow  # every test here runs for tens of seconds or more

STEPS = 30


def rectangle_images(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 3, size, size)`` float32 in [-1, 1]: sums of random coloured rectangles."""
    images = np.zeros((count, 3, size, size), np.float32)
    for image in images:
        for _ in range(6):
            y, x = rng.integers(0, size, 2)
            height, width = rng.integers(3, size // 2, 2)
            image[:, y : y + height, x : x + width] += rng.uniform(-0.8, 0.8, (3, 1, 1))
    return np.clip(images, -1, 1)


def read_losses(path: Path) -> dict[int, float]:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return {int(row[0]): float(row[1]) for row in rows}


def test_training_reduces_train_and_test_loss(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rectangle_images(8, 40, rng))
    np.save(tmp_path / "test.npy", rectangle_images(4, 40, rng))  # other images
    hpars = presets.get_preset_hpars("zero-repl", 0)
    hpars["model_hpars"]["hidden_channels"] = 4
    hpars.update(
        folder=str(tmp_path / "run"),
        train_data_path=str(tmp_path / "train.npy"),
        test_data_path=str(tmp_path / "test.npy"),
        image_shape=[3, 32, 32],
        batch_size=4,
        train_steps=STEPS,
        checkpoint_steps=[],
        test_image_save_interval=0,
        # The paper's schedule warms up over 100 steps; here over 5, to a peak of 5e-3.
        learning_rate_schedule={
            "name": "piecewise_interpolate",
            "interpolate_type": "linear",
            "init_value": 1e-4,
            "boundaries_and_scales": [[5, 50]],
        },
    )
    ts = train_utils.train(hpars)
    assert ts.step == STEPS

    train_losses = read_losses(tmp_path / "run" / run_layout.TRAIN_HISTORY_FILENAME)
    assert sorted(train_losses) == list(range(1, STEPS + 1))
    assert all(np.isfinite(list(train_losses.values())))
    first = train_losses[1]
    last = np.mean([train_losses[step] for step in range(STEPS - 4, STEPS + 1)])
    assert last < 0.5 * first, (first, last)

    test_losses = read_losses(tmp_path / "run" / run_layout.TEST_HISTORY_FILENAME)
    assert sorted(test_losses) == [0, STEPS]
    assert test_losses[STEPS] < 0.5 * test_losses[0], test_losses
