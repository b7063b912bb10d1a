"""Worked example: your own Equinox segmentation network with linear prediction padding, run
over a large georeferenced raster in tiles.

    python examples/segmentation_unet.py [--size full|tiny] [--padding lp2x3] [--out-dir DIR] [--overwrite]

What it does, one short function per step:

1. A synthetic task where a pixel's class needs context: a one-band image of regions, each
   filled with waves of one of four orientations, plus noise. One pixel says nothing about its
   class; a neighbourhood of a few wavelengths does.
2. A small two-level U-Net in Equinox whose 3x3 convolutions are padded by
   `padding.make_padding_layer`, trained twice with Optax the same way (same initial weights,
   same batches): once with zero padding, once with the paper's lp2x3 (``--padding``).
3. `tiling.receptive_field` and `tiling.alignment` measure how far an output pixel sees and
   the network's total stride (two 2x2 poolings: tiles must start at multiples of 4).
4. A large synthetic GeoTIFF, run through each network with `tiling.predict_raster` into
   ``uint8`` class-map GeoTIFFs, with halo 0 (the paper's case: every tile edge is padded) and
   with halo "auto" (tiles overlap by the receptive field, rounded up to the alignment).
5. The seam table: each tiled class map against one pass of the same network over the whole
   raster, near the tile seams and everywhere.

Why padding matters here: with halo 0 the pixels near a tile edge see padding instead of their
neighbours. The data average about 1, not 0 (like reflectances), so zero padding shows the
network a dark border that the scene never has; linear prediction padding continues the waves
(Niemitalo et al. 2025, arXiv:2502.12300, section 2). With halo "auto" every output pixel sees
its whole receptive field inside its tile, so the tiles agree with the one-pass run exactly,
except near the raster's outer edge (closer than the auto halo), where the one-pass run pads
as well but fits its linear predictors to the whole raster instead of one tile.

``--size tiny`` runs everything small (tests/test_examples.py does); ``--size full`` is the
run that examples/README.md shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

# padding.py and tiling.py live in the repository root, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cli
import padding
import tiling

# One plain-dict configuration per --size. Sizes in pixels; steps are Adam steps of one batch.
SIZES = {
    "full": {
        "raster_size": 3072,
        "tile_size": 256,
        "train_size": 1024,
        "patch_size": 64,
        "batch_size": 8,
        "steps": 600,
        "widths": (8, 16, 32),
    },
    # 200 is no multiple of the tile size: the last tiles of each row and column are partial.
    "tiny": {
        "raster_size": 200,
        "tile_size": 64,
        "train_size": 96,
        "patch_size": 32,
        "batch_size": 4,
        "steps": 3,
        "widths": (4, 8, 8),
    },
}
NUM_CLASSES = 4
WAVELENGTH = 6.0  # pixels; several wavelengths fit in the receptive field
REGION_SCALE = 40.0  # pixels; regions are larger than the receptive field
BRIGHTNESS = 1.0  # the scene's mean
NOISE = 0.5  # standard deviation of white noise added to the unit-variance waves
LEARNING_RATE = 3e-3
SEAM_WIDTH = 4  # pixels on each side of a seam counted as "near the seam"
CLASS_NODATA = 255  # the class maps' nodata value (no class has it)
CRS = "EPSG:3067"  # any projected CRS will do; ETRS-TM35FIN with 10 m pixels
PIXEL_SIZE = 10.0
ORIGIN = (300000.0, 7000000.0)  # (x, y) of the raster's top left corner
SEED = 0


# ----------------------------------------------------------------------------------------------
# 1. The synthetic task


def region_labels(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size)`` uint8 classes: the argmax of ``NUM_CLASSES`` smooth random fields, which
    gives blobby regions about ``REGION_SCALE`` pixels across."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    lowpass = np.exp(-2 * (np.pi * REGION_SCALE / 4) ** 2 * (fy**2 + fx**2))
    fields = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((NUM_CLASSES, size, size))) * lowpass, s=(size, size))
    return np.argmax(fields, axis=0).astype(np.uint8)


def oriented_waves(rng: np.random.Generator, size: int, angle: float) -> np.ndarray:
    """``(size, size)`` float32 of unit variance: white noise band-passed around the spatial
    frequency ``1 / WAVELENGTH`` in the direction ``angle`` (radians from the x axis): waves of
    slowly varying phase and amplitude, crests across that direction."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    cy, cx = np.sin(angle) / WAVELENGTH, np.cos(angle) / WAVELENGTH
    bandwidth = 0.25 / WAVELENGTH  # some irregularity; the orientation stays clear
    # Both signs of the frequency: the real part of a wave has both.
    band = np.exp(-((fy - cy) ** 2 + (fx - cx) ** 2) / (2 * bandwidth**2)) + np.exp(
        -((fy + cy) ** 2 + (fx + cx) ** 2) / (2 * bandwidth**2)
    )
    waves = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * band, s=(size, size))
    return (waves / waves.std()).astype(np.float32)


def make_scene(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene ``(1, size, size)`` float32 and its true classes ``(size, size)`` uint8; class k
    holds waves at ``k * 45`` degrees."""
    rng = np.random.default_rng(seed)
    labels = region_labels(rng, size)
    image = BRIGHTNESS + NOISE * rng.standard_normal((size, size), dtype=np.float32)
    for k in range(NUM_CLASSES):
        image += np.where(labels == k, oriented_waves(rng, size, k * np.pi / NUM_CLASSES), 0)
    return image[None], labels


# ----------------------------------------------------------------------------------------------
# 2. The network


class PaddedConv(eqx.Module):
    """A 3x3 convolution of the padded input, then ReLU: ``(c_in, h, w) -> (c_out, h, w)``."""

    pad: padding.Padding2dLayer
    conv: eqx.nn.Conv2d

    def __init__(self, c_in: int, c_out: int, padding_method: str, key: jax.Array):
        # The padding is a layer of its own, so the convolution itself pads nothing.
        self.pad = padding.make_padding_layer(padding_method, ((1, 1), (1, 1)))
        self.conv = eqx.nn.Conv2d(c_in, c_out, 3, key=key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.conv(self.pad(x)))


class UNet(eqx.Module):
    """A two-level U-Net: ``(in_bands, h, w) -> (NUM_CLASSES, h, w)`` class logits, for ``h`` and
    ``w`` multiples of 4 (two 2x2 poolings).

    Six padded 3x3 convolutions: one per level on the way down and up, two at the bottom, where
    each reaches 4 input pixels. By hand count an output pixel sees up to 17 input pixels away;
    `tiling.receptive_field` measures it. Kept small because every linear prediction padding
    layer adds to XLA's compile time. No normalization layer: batch or group statistics over a
    tile would make every output depend on the whole tile, and no halo could then make the
    tiles agree with a one-pass run.
    """

    down0: PaddedConv
    down1: PaddedConv
    bottom0: PaddedConv
    bottom1: PaddedConv
    up1: eqx.nn.ConvTranspose2d
    dec1: PaddedConv
    up0: eqx.nn.ConvTranspose2d
    dec0: PaddedConv
    head: eqx.nn.Conv2d
    pool: eqx.nn.MaxPool2d

    def __init__(self, in_bands: int, widths: tuple[int, int, int], padding_method: str, key: jax.Array):
        w0, w1, w2 = widths
        keys = jax.random.split(key, 9)
        self.down0 = PaddedConv(in_bands, w0, padding_method, keys[0])
        self.down1 = PaddedConv(w0, w1, padding_method, keys[1])
        self.bottom0 = PaddedConv(w1, w2, padding_method, keys[2])
        self.bottom1 = PaddedConv(w2, w2, padding_method, keys[3])
        # 2x2 transposed convolutions with stride 2 upsample and need no padding.
        self.up1 = eqx.nn.ConvTranspose2d(w2, w1, 2, stride=2, key=keys[4])
        self.dec1 = PaddedConv(2 * w1, w1, padding_method, keys[5])
        self.up0 = eqx.nn.ConvTranspose2d(w1, w0, 2, stride=2, key=keys[6])
        self.dec0 = PaddedConv(2 * w0, w0, padding_method, keys[7])
        self.head = eqx.nn.Conv2d(w0, NUM_CLASSES, 1, key=keys[8])
        self.pool = eqx.nn.MaxPool2d(2, 2)

    def __call__(self, x: jax.Array) -> jax.Array:
        skip0 = self.down0(x)  # full resolution
        skip1 = self.down1(self.pool(skip0))  # 1/2
        y = self.bottom1(self.bottom0(self.pool(skip1)))  # 1/4
        y = self.dec1(jnp.concatenate([self.up1(y), skip1]))
        y = self.dec0(jnp.concatenate([self.up0(y), skip0]))
        return self.head(y)


# ----------------------------------------------------------------------------------------------
# Training


def random_patches(
    rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, count: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random crops: images ``(count, bands, size, size)``, labels ``(count, size, size)``."""
    ys = rng.integers(0, labels.shape[0] - size + 1, count)
    xs = rng.integers(0, labels.shape[1] - size + 1, count)
    return (
        np.stack([image[:, y : y + size, x : x + size] for y, x in zip(ys, xs)]),
        np.stack([labels[y : y + size, x : x + size] for y, x in zip(ys, xs)]),
    )


def loss_fn(model: UNet, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy of the per-pixel class logits; images ``(n, bands, y, x)``, labels ``(n, y, x)``."""
    logits = jax.vmap(model)(images)  # (n, class, y, x)
    return optax.softmax_cross_entropy_with_integer_labels(jnp.moveaxis(logits, 1, -1), labels).mean()


def train(model: UNet, image: np.ndarray, labels: np.ndarray, config: dict, seed: int) -> tuple[UNet, float]:
    """``config["steps"]`` Adam steps on random patches of ``image``; returns the model and the
    last batch's loss. The patches depend only on ``seed``: two paddings see the same batches.
    Training on patches pads their edges as tiles are padded later, so the network learns what
    its padding looks like."""
    optimizer = optax.adam(LEARNING_RATE)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, images, labels):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    loss = jnp.nan
    for _ in range(config["steps"]):
        images, batch_labels = random_patches(rng, image, labels, config["batch_size"], config["patch_size"])
        model, opt_state, loss = step(model, opt_state, images, batch_labels)
    return model, float(loss)


# ----------------------------------------------------------------------------------------------
# GeoTIFF in, class maps out


def write_geotiff(path: Path, image: np.ndarray) -> None:
    """Write ``image`` ``(bands, y, x)`` float32 as a tiled, georeferenced GeoTIFF."""
    import rasterio
    from rasterio.transform import from_origin

    bands, height, width = image.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=bands,
        dtype="float32",
        crs=CRS,
        transform=from_origin(*ORIGIN, PIXEL_SIZE, PIXEL_SIZE),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        dst.write(image)


def read_class_map(path: Path) -> np.ndarray:
    """A class-map GeoTIFF's band ``(y, x)``."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def to_classes(logits: np.ndarray) -> np.ndarray:
    """`predict_raster`'s post-processing hook, run on each tile's core on the host: logits
    ``(class, h, w)`` -> class map ``(1, h, w)`` uint8. Only the small class map is stored."""
    return np.argmax(logits, axis=0)[None].astype(np.uint8)


def predict_tiled(model: UNet, source: Path, destination: Path, tile_size: int, halo: int | str, overwrite: bool):
    """Run ``model`` over the raster at ``source`` in tiles into a class-map GeoTIFF; returns
    `predict_raster`'s summary (the halo and read window it used, times)."""
    return tiling.predict_raster(
        model,
        source,
        destination,
        tile_size=tile_size,
        halo=halo,
        dtype=np.uint8,
        postprocess=to_classes,
        out_nodata=CLASS_NODATA,
        overwrite=overwrite,
        progress=False,
    )


def predict_one_pass(model: UNet, image: np.ndarray) -> np.ndarray:
    """The reference: ``model`` over the whole raster ``(bands, y, x)`` in one call; the class
    map ``(y, x)``. Holds every feature map of the whole raster in memory at once."""
    return np.argmax(np.asarray(eqx.filter_jit(model)(jnp.asarray(image))), axis=0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Seam metrics


def distance_to_seams(size: int, tile_size: int) -> np.ndarray:
    """Along one axis of ``size`` pixels, each pixel's distance to the nearest seam between tile
    cores (at the multiples of ``tile_size``): 0 on either side of a seam; ``size`` without one."""
    index = np.arange(size)[:, None]
    seams = np.arange(tile_size, size, tile_size)[None, :]
    if seams.size == 0:
        return np.full(size, size)
    # The seam at s lies between pixels s - 1 and s.
    return np.min(np.where(index >= seams, index - seams, seams - 1 - index), axis=1)


def distance_to_edge(size: int) -> np.ndarray:
    """Along one axis of ``size`` pixels, each pixel's distance to the raster's outer edge."""
    index = np.arange(size)
    return np.minimum(index, size - 1 - index)


def seam_comparison(
    tiled: np.ndarray, reference: np.ndarray, truth: np.ndarray, tile_size: int, radius: int, inside: int
) -> dict[str, float]:
    """A tiled class map ``(y, x)`` against the one-pass class map ``reference`` ``(y, x)``:

    - ``differ_near_seams``, ``differ_near_r``, ``differ_all``: percent of the pixels less than
      ``SEAM_WIDTH`` from a seam, less than ``radius`` from one, and of all, whose class differs;
    - ``differ_inside``: the number of differing pixels at least ``inside`` from the outer edge;
    - ``accuracy_near_seams``, ``accuracy``: percent of pixels near seams, and of all, whose
      class in the tiled map is the true class ``truth``.
    """
    seam_y, seam_x = (distance_to_seams(n, tile_size) for n in tiled.shape)
    seam = np.minimum(seam_y[:, None], seam_x[None, :])
    edge = np.minimum(distance_to_edge(tiled.shape[0])[:, None], distance_to_edge(tiled.shape[1])[None, :])
    differs, correct = tiled != reference, tiled == truth
    near = seam < SEAM_WIDTH
    return {
        "differ_near_seams": 100 * float(differs[near].mean()),
        "differ_near_r": 100 * float(differs[seam < radius].mean()),
        "differ_all": 100 * float(differs.mean()),
        "differ_inside": int(np.count_nonzero(differs & (edge >= inside))),
        "accuracy_near_seams": 100 * float(correct[near].mean()),
        "accuracy": 100 * float(correct.mean()),
    }


def print_seam_table(rows: list[tuple[str, str, dict[str, float]]]) -> None:
    """One line per tiled run: padding, halo, then the `seam_comparison` numbers."""
    print(
        f"{'padding':8} {'halo':>7} {'differ<4px':>10} {'differ<R':>9} {'differ all':>10} {'inside':>6}"
        f" {'acc<4px':>8} {'acc all':>8}"
    )
    for method, halo, m in rows:
        print(
            f"{method:8} {halo:>7} {m['differ_near_seams']:9.3f}% {m['differ_near_r']:8.3f}%"
            f" {m['differ_all']:9.3f}% {m['differ_inside']:6d} {m['accuracy_near_seams']:7.2f}%"
            f" {m['accuracy']:7.2f}%"
        )


# ----------------------------------------------------------------------------------------------
# The run


def lp_method(name: str) -> str:
    """argparse type: a padding method of the paper other than zero."""
    if name not in padding.PAPER_METHODS or name == "zero":
        raise argparse.ArgumentTypeError(
            f"{name!r} is none of {', '.join(m for m in padding.PAPER_METHODS if m != 'zero')}"
        )
    return name


def make_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="segmentation_unet.py",
        description="Train a small U-Net with zero and lp padding and run it over a "
        "synthetic GeoTIFF in tiles (examples/README.md).",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="problem size (default: %(default)s)")
    parser.add_argument(
        "--padding",
        type=lp_method,
        default="lp2x3",
        help="the padding compared with zero padding (default: %(default)s)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("segmentation_example"),
        help="folder for the scene and the class maps (default: %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the GeoTIFFs of an earlier run")
    return parser


def output_paths(out_dir: Path, methods: tuple[str, ...]) -> list[Path]:
    """The files a run writes: the scene, then one class map per padding method and halo."""
    return [out_dir / "scene.tif"] + [
        class_map_path(out_dir, method, halo) for method in methods for halo in (0, "auto")
    ]


def class_map_path(out_dir: Path, method: str, halo: int | str) -> Path:
    return out_dir / f"classes_{method}_halo_{halo}.tif"


def train_models(in_bands: int, methods: tuple[str, ...], config: dict) -> dict[str, UNet]:
    """One trained `UNet` per padding method, all trained the same way."""
    image, labels = make_scene(SEED, config["train_size"])
    models = {}
    for method in methods:
        model = UNet(in_bands, config["widths"], method, jax.random.PRNGKey(SEED))
        start = time.perf_counter()
        models[method], loss = train(model, image, labels, config, SEED)
        print(
            f"trained {method:7}: {config['steps']} steps of {config['batch_size']} patches of"
            f" {config['patch_size']}x{config['patch_size']} in {time.perf_counter() - start:.1f} s"
            f" (compiling included), last loss {loss:.3f}"
        )
    return models


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(make_parser(), run, argv)


def run(args: argparse.Namespace) -> int:
    existing = [path for path in output_paths(args.out_dir, ("zero", args.padding)) if path.exists()]
    if existing and not args.overwrite:
        raise cli.UsageError(f"{existing[0]} exists (from an earlier run?); pass --overwrite to replace it")
    config = SIZES[args.size]
    methods = ("zero", args.padding)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    scene_path = output_paths(args.out_dir, methods)[0]

    # The scene to segment comes from another seed than the training scene.
    scene, truth = make_scene(SEED + 1, config["raster_size"])
    write_geotiff(scene_path, scene)
    print(f"scene: {scene_path}, {scene.shape[2]} x {scene.shape[1]} pixels, {CRS}")

    models = train_models(scene.shape[0], methods, config)
    start = time.perf_counter()
    align = tiling.alignment(models[args.padding], scene.shape[0])
    radius = tiling.receptive_field(models[args.padding], scene.shape[0], align=align)
    print(
        f"receptive field: {radius} input pixels; alignment: {align} pixels"
        f" (measured on the {args.padding} model in {time.perf_counter() - start:.1f} s)"
    )

    rows = []
    for method, model in models.items():
        start = time.perf_counter()
        reference = predict_one_pass(model, scene)
        print(
            f"one pass {method:7}: {time.perf_counter() - start:.1f} s, accuracy"
            f" {100 * np.mean(reference == truth):.2f}%"
        )
        summaries = {}
        for halo in (0, "auto"):
            path = class_map_path(args.out_dir, method, halo)
            summaries[halo] = summary = predict_tiled(
                model, scene_path, path, config["tile_size"], halo, args.overwrite
            )
            print(
                f"tiled {method:7} halo {halo:>4} (= {summary.halo:2d}): {summary.tiles} tiles, read window"
                f" {summary.window[0]}x{summary.window[1]}, {summary.seconds:.1f} s"
                f" + {summary.compile_seconds:.1f} s compiling -> {path}"
            )
        # Exact from the auto halo (the receptive field rounded up to the alignment) inwards:
        # there a pixel's tile sees its whole receptive field, and so does the one-pass run
        # without reaching the raster's edge.
        for halo, summary in summaries.items():
            label = "0" if halo == 0 else f"auto={summary.halo}"
            rows.append(
                (
                    method,
                    label,
                    seam_comparison(
                        read_class_map(summary.destination),
                        reference,
                        truth,
                        config["tile_size"],
                        radius,
                        inside=summaries["auto"].halo,
                    ),
                )
            )

    print(
        f"\nSeams: {config['tile_size']}-pixel tiles against one pass over the whole raster; R = {radius}.\n"
        f"differ: % of the pixels < 4 px from a seam, < R px from one, and of all, whose class differs.\n"
        f"inside: differing pixels at least the auto halo from the outer edge. acc: accuracy against the truth."
    )
    print_seam_table(rows)
    exact = all(m["differ_inside"] == 0 for _, halo, m in rows if halo.startswith("auto"))
    print(f"halo auto exact (no pixel at least the auto halo from the outer edge differs): {'yes' if exact else 'NO'}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
