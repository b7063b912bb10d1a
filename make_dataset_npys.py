"""Convert the dataset's .nc files into ``train_data.npy`` and ``test_data.npy`` (docs/dataset.md).

Input: the files ``*NNNNNN.nc`` anywhere under the dataset folder (hidden folders skipped),
sorted by name and numbered consecutively, 10,000 of them. Each holds the variables ``B04``,
``B03``, ``B02`` (R, G, B) with dims (time, y, x); the conversion takes time index 0 and
the top-left 512x512 pixels, converts the raw digital numbers to floating point (they can
exceed 16383, so no integer arithmetic) and scales them as ``v * 2 / 10000 - 1`` (computed in
float64, rounded once to float32).

Order: the paper's fixed permutation (``paper_permutation.json``; ``permutation[i]`` is the
index, in sorted order, of the file that goes to position i). Positions 0..8999 form
``train_data.npy`` and 9000..9999 ``test_data.npy``, both float32 (N, 3, 512, 512).

Smaller synthetic sets: ``--num-train N --num-test M`` accepts exactly N + M files. Their
order is then the identity (the synthetic files are independent draws, so a shuffle would
add nothing), unless ``--permutation FILE`` gives one; ``--image-size`` sets a smaller crop.

Both outputs are written to temporary files, image by image (memory stays at one image),
read back and checked against checksums taken while writing, and only then renamed into
place. Existing outputs are kept unless ``--overwrite``. ``--delete-nc`` deletes the .nc
files, and only after both outputs are in place and verified.

Usage::

    python make_dataset_npys.py [--dataset-folder DIR] [--delete-nc] [--overwrite]
    python make_dataset_npys.py --dataset-folder smoke/dataset --num-train 100 --num-test 20 --image-size 64
"""

import argparse
import json
import os
import re
import shutil
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

import cli
from io_utils import atomic_path, partial_paths
from paths_config import get_paths
from sentinel2 import BANDS, dn_to_model_units

NUM_FILES = 10_000
NUM_TRAIN = 9_000
IMAGE_SIZE = 512
PAPER_PERMUTATION = Path(__file__).with_name("paper_permutation.json")
FILE_NAME = re.compile(r"(?<!\d)(\d{6})\.nc$")  # exactly six digits before ".nc"
FLUSH_EVERY = 256  # images; bounds the unwritten pages of the memory-mapped output

# Published statistics of the paper's test set, printed beside ours for comparison.
PAPER_TEST_CHANNEL_MEANS = (-0.2805, -0.3090, -0.2221)
PAPER_TEST_MEAN_VARIANCE = 0.0438


class ConversionError(cli.UserError):
    """An expected failure; ``main`` prints it as one line and exits with status 1."""


def find_nc_files(folder: Path) -> list[Path]:
    """The .nc files under ``folder``, sorted by name, after checking names and numbering."""
    if not folder.is_dir():
        raise ConversionError(f"dataset folder {folder} does not exist (run download_dataset.py first)")
    found = []
    for root, dirs, names in os.walk(folder):
        # Hidden folders hold download state and half-extracted zips, never dataset files.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / name for name in names if name.endswith(".nc") and not name.startswith(".")]
    if not found:
        raise ConversionError(f"no .nc files in {folder} (run download_dataset.py first)")
    found.sort(key=lambda path: (path.name, str(path)))
    numbers = []
    for path in found:
        match = FILE_NAME.search(path.name)
        if not match:
            raise ConversionError(f"misnamed file {path}: expected a name ending in a 6-digit number and .nc")
        numbers.append(int(match.group(1)))
    for previous, path, number, before in zip(found, found[1:], numbers[1:], numbers):
        if number == before:
            raise ConversionError(f"{previous} and {path} have the same number {number:06d}")
        if number != before + 1:
            hint = " (a file missing?)" if number > before + 1 else ""
            raise ConversionError(f"file numbering is not consecutive: {path.name} follows {previous.name}{hint}")
    return found


def choose_split(num_files: int, num_train: int | None, num_test: int | None) -> tuple[int, int]:
    """(train, test) sizes: the paper's 9000 + 1000, or an explicit split of all files."""
    if num_train is None and num_test is None:
        if num_files != NUM_FILES:
            raise ConversionError(
                f"found {num_files} .nc files, expected {NUM_FILES} (missing or extra files?); "
                "for a smaller synthetic set pass --num-train and --num-test"
            )
        return NUM_TRAIN, NUM_FILES - NUM_TRAIN
    if num_train is None or num_test is None:
        raise ConversionError("--num-train and --num-test go together")
    if num_train < 1 or num_test < 1:
        raise ConversionError("--num-train and --num-test must be at least 1")
    if num_train + num_test != num_files:
        raise ConversionError(
            f"--num-train {num_train} + --num-test {num_test} = {num_train + num_test}, but found {num_files} .nc files"
        )
    return num_train, num_test


def load_permutation(path: Path | None, num_files: int) -> np.ndarray:
    """The file order, int64 (num_files,): from ``path``, else the paper's for 10,000 files,
    else the identity."""
    if path is None:
        if num_files != NUM_FILES:
            return np.arange(num_files)
        path = PAPER_PERMUTATION
    try:
        permutation = np.asarray(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as error:
        raise ConversionError(f"cannot read the permutation {path}: {error}") from None
    if (
        permutation.shape != (num_files,)
        or permutation.dtype.kind not in "iu"
        or not np.array_equal(np.sort(permutation), np.arange(num_files))
    ):
        raise ConversionError(f"{path} is not a permutation of 0..{num_files - 1}")
    return permutation.astype(np.int64)


def read_image(path: Path, size: int) -> np.ndarray:
    """The scaled top-left ``size`` x ``size`` crop of time index 0: float32 (3, size, size)."""
    import xarray as xr  # imported here so that importing this module stays light

    try:
        # mask_and_scale=False: the raw digital numbers, whatever attributes the file carries.
        with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False, decode_times=False, cache=False) as ds:
            channels = []
            for band in BANDS:
                if band not in ds.data_vars:
                    raise ConversionError(f"{path}: variable {band} is missing")
                variable = ds[band]
                if variable.ndim != 3 or variable.shape[0] < 1 or min(variable.shape[1:]) < size:
                    raise ConversionError(
                        f"{path}: {band} has shape {variable.shape}, "
                        f"expected (time, y, x) of at least (1, {size}, {size})"
                    )
                if variable.dtype.kind not in "iuf":
                    raise ConversionError(f"{path}: {band} has non-numeric dtype {variable.dtype}")
                raw = variable[0, :size, :size].values
                channels.append(dn_to_model_units(raw))
    except ConversionError:
        raise
    except Exception as error:  # any reader failure means a malformed file; name it
        raise ConversionError(f"{path}: not a readable netCDF file ({type(error).__name__}: {error})") from None
    image = np.stack(channels).astype(np.float32)
    bad = ~np.isfinite(image)
    if bad.any():  # caught here, not as a NaN training loss days later
        band, y, x = np.argwhere(bad)[0]
        raise ConversionError(
            f"{path}: {int(bad.sum())} non-finite values (NaN or infinity), the first in "
            f"{BANDS[band]} at y={y}, x={x}; is the file damaged?"
        )
    return image


def write_images(out_path: Path, files: Sequence[Path], size: int, bar: tqdm) -> tuple[list[int], np.ndarray]:
    """Write the images of ``files`` in order to a new .npy at ``out_path``, float32
    (len(files), 3, size, size). Returns per-image CRC-32s and per-image statistics
    float64 (len(files), 2, 3): channel means and channel variances."""
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(len(files), 3, size, size))
    crcs, stats = [], np.empty((len(files), 2, 3))
    for k, path in enumerate(files):
        try:
            image = read_image(path, size)
        except ConversionError as error:
            raise ConversionError(f"{out_path.name.split('.partial-')[0]}.npy image {k}: {error}") from None
        out[k] = image
        crcs.append(zlib.crc32(image))
        stats[k] = image.mean(axis=(1, 2), dtype=np.float64), image.var(axis=(1, 2), dtype=np.float64)
        bar.update()
        if (k + 1) % FLUSH_EVERY == 0:
            out.flush()
    out.flush()
    del out  # closes the map before the file is read back
    return crcs, stats


def verify_images(path: Path, crcs: Sequence[int], size: int) -> None:
    """Read ``path`` back and check shape, dtype and every image's CRC-32."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise ConversionError(f"verification of {path} failed: {error}") from None
    if array.shape != (len(crcs), 3, size, size) or array.dtype != np.float32:
        raise ConversionError(f"verification of {path} failed: shape {array.shape} dtype {array.dtype}")
    for k, crc in enumerate(crcs):
        if zlib.crc32(np.ascontiguousarray(array[k])) != crc:
            raise ConversionError(f"verification of {path} failed at image {k}: it differs from what was written")


def convert(
    files: Sequence[Path],
    permutation: np.ndarray,
    num_train: int,
    size: int,
    train_path: Path,
    test_path: Path,
    progress: bool = True,
) -> np.ndarray:
    """Write ``files[permutation[:num_train]]`` to ``train_path`` and the rest to ``test_path``.

    Both outputs appear together, verified, or not at all (but for an interruption between
    the two final renames). Returns the test set's per-image statistics (see write_images).
    """
    with (
        atomic_path(train_path) as train_tmp,
        atomic_path(test_path) as test_tmp,
        tqdm(total=len(files), desc="images", unit="img", disable=not progress) as bar,
    ):
        test_stats = None
        for tmp, positions in ((train_tmp, permutation[:num_train]), (test_tmp, permutation[num_train:])):
            crcs, stats = write_images(tmp, [files[i] for i in positions], size, bar)
            verify_images(tmp, crcs, size)
            test_stats = stats
    return test_stats


def check_outputs(train_path: Path, test_path: Path, overwrite: bool, needed_bytes: int) -> None:
    """Refuse to replace outputs without ``overwrite``; clear stale temporaries; check disk space."""
    existing = [str(path) for path in (train_path, test_path) if path.exists()]
    if existing and not overwrite:
        raise ConversionError(f"{' and '.join(existing)} already exist; pass --overwrite to replace them")
    for path in (train_path, test_path):
        for stale in partial_paths(path):
            print(f"removing {stale}, left by an interrupted run", file=sys.stderr)
            stale.unlink()
    free = shutil.disk_usage(train_path.parent).free
    if free < needed_bytes:
        raise ConversionError(
            f"the outputs need {needed_bytes / 1e9:.1f} GB but {train_path.parent} has {free / 1e9:.1f} GB free"
        )


def main(argv: Sequence[str] | None = None) -> int:
    paths = get_paths()
    parser = cli.ArgumentParser(prog="make_dataset_npys.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset-folder",
        default=paths["dataset_folder"],
        help="folder with the .nc files and for the outputs (default: %(default)s)",
    )
    parser.add_argument("--num-train", type=int, help="explicit train size for a smaller (synthetic) set")
    parser.add_argument("--num-test", type=int, help="explicit test size for a smaller (synthetic) set")
    parser.add_argument(
        "--permutation",
        type=Path,
        help="JSON list giving the file order (default: the paper's for 10,000 files, else identity)",
    )
    parser.add_argument(
        "--image-size", type=cli.positive_int, default=IMAGE_SIZE, help="crop size (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing .npy outputs")
    parser.add_argument(
        "--delete-nc", action="store_true", help="delete the .nc files after both outputs are written and verified"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def body(args: argparse.Namespace) -> None:
        folder = Path(args.dataset_folder)
        train_path = folder / paths["train_data_filename"]
        test_path = folder / paths["test_data_filename"]
        files = find_nc_files(folder)
        num_train, num_test = choose_split(len(files), args.num_train, args.num_test)
        permutation = load_permutation(args.permutation, len(files))
        check_outputs(train_path, test_path, args.overwrite, needed_bytes=len(files) * 3 * args.image_size**2 * 4)
        test_stats = convert(
            files, permutation, num_train, args.image_size, train_path, test_path, progress=not args.no_progress
        )
        if args.delete_nc:
            for path in files:
                path.unlink()
        print(
            f"wrote {train_path} ({num_train} images) and {test_path} ({num_test} images)"
            + (f"; deleted {len(files)} .nc files" if args.delete_nc else "")
        )
        means = test_stats[:, 0].mean(axis=0)
        print(
            f"test set channel means {np.array2string(means, precision=4)} (paper: {list(PAPER_TEST_CHANNEL_MEANS)}), "
            f"mean per-image channel variance {test_stats[:, 1].mean():.4f} (paper: {PAPER_TEST_MEAN_VARIANCE})"
        )

    return cli.run_main(
        parser,
        body,
        argv,
        statuses={OSError: 1},
        interrupted="interrupted; the outputs were not changed (rerun to start over)",
    )


if __name__ == "__main__":
    sys.exit(main())
