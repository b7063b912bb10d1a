"""Draws docs/padding_samples.png, the README's figure: the 48x48 centres of synthetic
satellite-like 96x96 crops padded back by 24 pixels per side with zero, replication and linear
prediction padding (lp1x1cs, lp2x3, lp6x7), the crops themselves in the first column.

The crops are synthetic (`make_synthetic_dataset.synthetic_reflectance`), not the paper's
Sentinel-2 test images, so that the figure can be redrawn without the dataset:

    python docs/make_readme_figure.py
"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

REPOSITORY = Path(__file__).resolve().parent.parent

METHODS = ("zero", "repl", "lp1x1cs", "lp2x3", "lp6x7")
SEEDS = (6, 3, 2)
SIZE = 96
IMAGE_SIZE = 512
OUTPUT = Path(__file__).resolve().parent / "padding_samples.png"


def main() -> None:
    sys.path.insert(0, str(REPOSITORY))  # the repository's modules, when run as a script from anywhere
    from make_synthetic_dataset import synthetic_reflectance
    from sample_images import centre_crops, image_to_srgb, padding_sample_tiles

    # Reflectance r is 2 r - 1 in the paper's units (digital numbers v: v * 2 / 10000 - 1).
    # Centres of larger images: more of the power-law spectrum's large-scale structure.
    images = [synthetic_reflectance(np.random.default_rng(seed), (IMAGE_SIZE, IMAGE_SIZE)) * 2 - 1 for seed in SEEDS]
    crops = centre_crops(np.stack(images), SIZE)
    tiles = padding_sample_tiles(crops.astype(np.float32), METHODS)  # (1 + methods, crops, 3, y, x)
    gap = 4
    white_column = np.full((SIZE, gap, 3), 255, np.uint8)
    rows = [np.concatenate([part for column in tiles[:, crop] for part in (image_to_srgb(column), white_column)][:-1], axis=1)
            for crop in range(len(SEEDS))]  # fmt: skip
    white_row = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    mosaic = np.concatenate([part for row in rows for part in (row, white_row)][:-1], axis=0)
    label_height = 18
    height, width = mosaic.shape[:2]
    fig = Figure(figsize=(width / 100, (height + label_height) / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, height / (height + label_height)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for column, label in enumerate(("crop",) + METHODS):
        fig.text((column * (SIZE + gap) + SIZE / 2) / width, 1 - 2 / (height + label_height), label,
                 ha="center", va="top", fontsize=9)  # fmt: skip
    fig.savefig(OUTPUT, dpi=100)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
