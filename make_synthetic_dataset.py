"""Synthetic stand-in for the Sentinel-2 dataset: .nc files in exactly the real format.

Each file holds the variables ``B04``, ``B03``, ``B02`` (red, green, blue) with dimensions
``(time, y, x)`` and dtype uint16, the Sentinel-2 Level-1C digital numbers
(top-of-atmosphere reflectance times 10000). File names end in a 6-digit number, as the real
ones do, so ``make_dataset_npys.py`` and every later step run on them unchanged.

Content: per band a Gaussian random field with a power-law spectrum (power ~ 1/k^beta, beta
between 2 and 3.2 like natural images), the three bands sharing most of their structure
(correlation 0.8 to 0.97), a per-image brightness, and in some images a bright, white,
cloud-like layer. Reflectances are mostly 0..0.4; clouds reach about 1.2 (DN 12000).

Every file is drawn from its own generator seeded with ``(seed, file number)``, so a file's
content does not depend on how many files are made or in what order.

Usage::

    python make_synthetic_dataset.py --count 120 --size 64 --folder smoke/dataset
    python make_synthetic_dataset.py --count 10 --size 32 --folder /tmp/s2 --zip /tmp/s2.zip
"""

import argparse
import os
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

import cli
from io_utils import atomic_path
from paths_config import get_paths
from sentinel2 import BANDS, DN_PER_REFLECTANCE

DEFAULT_PREFIX = "s2_l1c_rgb_"

__all__ = [
    "power_law_field",
    "synthetic_reflectance",
    "reflectance_to_dn",
    "synthetic_file_name",
    "write_s2_nc",
    "make_scene",
    "make_synthetic_dataset",
    "zip_files",
    "main",
]


def power_law_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Gaussian random field of ``shape`` (H, W) with power spectrum ~ 1 / |k|^beta.

    White noise filtered in the Fourier domain; returned with zero mean and unit standard
    deviation, float64 of shape (H, W).
    """
    height, width = shape
    ky = np.fft.fftfreq(height)[:, None]
    kx = np.fft.rfftfreq(width)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0  # avoid 0 ** negative; the mean is removed below anyway
    amplitude = k ** (-beta / 2)
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * amplitude, s=shape)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def synthetic_reflectance(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """One satellite-like RGB image: top-of-atmosphere reflectance, float64 (3, H, W).

    Channel order R, G, B (``BANDS``). Values are mostly 0..0.4 and never negative.
    """
    beta = rng.uniform(2.0, 3.2)
    common = power_law_field(rng, shape, beta)
    rho = rng.uniform(0.8, 0.97)  # how much structure the bands share
    brightness = rng.uniform(0.05, 0.3)
    # Blue is lifted by atmospheric scattering in top-of-atmosphere data.
    band_means = np.array([brightness, 0.95 * brightness + 0.01, 0.9 * brightness + 0.04])
    contrast = rng.uniform(0.02, 0.08)
    bands = []
    for mean in band_means:
        own = power_law_field(rng, shape, beta)
        bands.append(mean + contrast * (rho * common + np.sqrt(1 - rho**2) * own))
    reflectance = np.stack(bands)
    if rng.uniform() < 0.3:
        # A soft-edged white cloud layer over part of the image.
        cloud_shape = power_law_field(rng, shape, 3.0)
        threshold = rng.uniform(0.3, 1.5)
        cover = np.clip((cloud_shape - threshold) * 2.0, 0.0, 1.0)
        reflectance = reflectance + rng.uniform(0.3, 0.9) * cover[None]
    return np.clip(reflectance, 0.0, None)


def reflectance_to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Level-1C digital numbers: ``round(reflectance * 10000)`` as uint16, same shape."""
    dn = np.rint(np.asarray(reflectance, dtype=np.float64) * DN_PER_REFLECTANCE)
    return np.clip(dn, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def synthetic_file_name(number: int, prefix: str = DEFAULT_PREFIX) -> str:
    """The file name for file ``number``: ``{prefix}{number:06d}.nc``."""
    if not 0 <= number <= 999_999:
        raise ValueError(f"file number {number} does not fit in 6 digits")
    return f"{prefix}{number:06d}.nc"


def write_s2_nc(path: str | os.PathLike, dn: np.ndarray, first_day: int = 0) -> None:
    """Write digital numbers ``dn`` (time, 3, H, W) to ``path`` in the dataset's .nc format.

    ``dn[:, c]`` becomes variable ``BANDS[c]`` with dims (time, y, x), stored as uint16 with
    no fill value or scale factor. Coordinates: daily ``time`` from 2015-07-01 plus
    ``first_day``, and 10 m ``y``/``x`` grids in metres. Written atomically.
    """
    import xarray as xr  # imported here so that importing this module stays light

    dn = np.asarray(dn)
    if dn.ndim != 4 or dn.shape[1] != len(BANDS):
        raise ValueError(f"dn must have shape (time, {len(BANDS)}, H, W), got {dn.shape}")
    if dn.dtype != np.uint16:
        raise ValueError(f"dn must be uint16, got {dn.dtype}")
    num_times, _, height, width = dn.shape
    times = np.datetime64("2015-07-01", "ns") + np.arange(first_day, first_day + num_times).astype("timedelta64[D]")
    coords = {
        "time": times,
        "y": 7_000_000.0 - 10.0 * np.arange(height),  # north-up: y decreases downwards
        "x": 300_000.0 + 10.0 * np.arange(width),
    }
    data_vars = {
        band: (("time", "y", "x"), dn[:, c], {"long_name": f"Sentinel-2 L1C {band}, reflectance x 10000"})
        for c, band in enumerate(BANDS)
    }
    dataset = xr.Dataset(data_vars, coords=coords, attrs={"title": "synthetic Sentinel-2 L1C RGB stand-in"})
    encoding = {band: {"dtype": "uint16", "_FillValue": None, "zlib": True, "complevel": 1} for band in BANDS}
    encoding |= {"y": {"_FillValue": None}, "x": {"_FillValue": None}}
    with atomic_path(path) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)


def make_scene(path: str | os.PathLike, size: int | tuple[int, int], seed: int = 0) -> None:
    """A ``size`` x ``size`` (or ``(height, width)``) georeferenced GeoTIFF of the same synthetic
    digital numbers (uint16, bands R, G, B; UTM 35N, 10 m pixels, the grid of
    :func:`write_s2_nc`): a raster for superresolve.py, its tests and its benchmark."""
    import rasterio  # imported here so that importing this module stays light
    from rasterio.transform import from_origin

    height, width = (size, size) if isinstance(size, int) else size
    dn = reflectance_to_dn(synthetic_reflectance(np.random.default_rng(seed), (height, width)))
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=len(BANDS),
        dtype="uint16",
        crs="EPSG:32635",
        transform=from_origin(300_000, 7_000_000, 10, 10),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)


def make_synthetic_dataset(
    folder: str | os.PathLike,
    count: int,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    *,
    start_number: int = 0,
    prefix: str = DEFAULT_PREFIX,
    num_times: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Write ``count`` synthetic .nc files into ``folder``; return their paths in order.

    ``size`` is the image size (square if an int, else (H, W)); files are numbered from
    ``start_number``. With ``num_times > 1`` each file has extra, different time steps after
    the first (the conversion uses only the first). Existing files of the same names are
    replaced.
    """
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if num_times < 1:
        raise ValueError(f"num_times must be at least 1, got {num_times}")
    shape = (size, size) if isinstance(size, int) else tuple(size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"bad image size {size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in tqdm(range(start_number, start_number + count), desc="synthetic files", disable=not progress):
        rng = np.random.default_rng([seed, number])
        dn = np.stack([reflectance_to_dn(synthetic_reflectance(rng, shape)) for _ in range(num_times)])
        path = folder / synthetic_file_name(number, prefix)
        write_s2_nc(path, dn, first_day=number)
        paths.append(path)
    return paths


def zip_files(files: Iterable[str | os.PathLike], zip_path: str | os.PathLike) -> Path:
    """Store ``files`` (by base name, uncompressed) in a new zip at ``zip_path``, atomically."""
    zip_path = Path(zip_path)
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for file in files:
                archive.write(file, arcname=Path(file).name)
    return zip_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="make_synthetic_dataset.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=get_paths()["dataset_folder"], help="output folder (default: %(default)s)")
    parser.add_argument("--count", type=int, default=100, help="number of files (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="image height and width (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--start-number", type=int, default=0, help="number of the first file (default: %(default)s)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="file name prefix (default: %(default)s)")
    parser.add_argument("--num-times", type=int, default=1, help="time steps per file (default: %(default)s)")
    parser.add_argument("--zip", metavar="PATH", help="also store the files in a zip at PATH")

    def body(args: argparse.Namespace) -> None:
        paths = make_synthetic_dataset(
            args.folder,
            args.count,
            args.size,
            args.seed,
            start_number=args.start_number,
            prefix=args.prefix,
            num_times=args.num_times,
        )
        if args.zip:
            zip_files(paths, args.zip)
        print(f"wrote {len(paths)} files to {args.folder}" + (f" and {args.zip}" if args.zip else ""))

    # make_synthetic_dataset checks its arguments with ValueError (a bad --count, --size, ...).
    return cli.run_main(parser, body, argv, statuses={ValueError: 1, OSError: 1})


if __name__ == "__main__":
    sys.exit(main())
