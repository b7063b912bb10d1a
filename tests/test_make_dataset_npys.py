"""make_dataset_npys.py on small synthetic sets made by make_synthetic_dataset.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import make_dataset_npys
from make_synthetic_dataset import (
    make_synthetic_dataset,
    reflectance_to_dn,
    synthetic_file_name,
    synthetic_reflectance,
    write_s2_nc,
)
from sentinel2 import BANDS

REPO = Path(__file__).resolve().parent.parent
NUM_FILES, CROP = 7, 16
FILE_SHAPE = (20, 24)  # larger than the crop, and not square, so the crop's corner matters


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven synthetic files with two time steps; file 2 holds hand-picked extreme values."""
    folder = tmp_path_factory.mktemp("source")
    make_synthetic_dataset(folder, NUM_FILES, FILE_SHAPE, seed=3, num_times=2, progress=False)
    dn = np.full((2, 3, *FILE_SHAPE), 1234, dtype=np.uint16)
    dn[0, 0, 0, :4] = [0, 5000, 16384, 65535]  # 16384 and up would overflow 14-bit integer tricks
    dn[0, 2, CROP - 1, CROP - 1] = 20000  # the crop's last pixel
    dn[0, 1, CROP, CROP] = 9999  # just outside the crop
    dn[1] = 7  # time index 1 must not be used
    write_s2_nc(folder / synthetic_file_name(2), dn)
    return folder


@pytest.fixture
def dataset(source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "dataset"
    shutil.copytree(source, folder)
    return folder


def convert(folder: Path, *extra: str, split: bool = True) -> int:
    args = ["--dataset-folder", str(folder), "--image-size", str(CROP), "--no-progress", *extra]
    if split:
        args += ["--num-train", "5", "--num-test", "2"]
    return make_dataset_npys.main(args)


def expected_image(path: Path) -> np.ndarray:
    """The conversion rule, computed with netCDF4 directly (not the code under test): (3, CROP, CROP)."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        raw = np.stack([nc.variables[band][0, :CROP, :CROP] for band in ("B04", "B03", "B02")])
    return (raw.astype(np.float64) * 2 / 10000 - 1).astype(np.float32)


def nc_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.nc"))


def assert_failed_cleanly(folder: Path, capsys: pytest.CaptureFixture, *fragments: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make_dataset_npys.py: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not list(folder.glob("*.npy")), "no output, complete or partial, may be left"


def test_values_and_order_follow_the_permutation(dataset, tmp_path):
    permutation = [4, 0, 6, 2, 1, 5, 3]
    (tmp_path / "perm.json").write_text(json.dumps(permutation))
    assert convert(dataset, "--permutation", str(tmp_path / "perm.json")) == 0
    train = np.load(dataset / "train_data.npy")
    test = np.load(dataset / "test_data.npy")
    assert train.dtype == test.dtype == np.float32
    assert train.shape == (5, 3, CROP, CROP) and test.shape == (2, 3, CROP, CROP)
    files = nc_paths(dataset)
    for position, index in enumerate(permutation):
        got = train[position] if position < 5 else test[position - 5]
        np.testing.assert_array_equal(got, expected_image(files[index]))
    # File 2 sits at position 3; its hand-picked values, written out.
    np.testing.assert_array_equal(train[3, 0, 0, :4], np.float32([-1.0, 0.0, 2.2768, 12.107]))
    assert train[3, 2, CROP - 1, CROP - 1] == np.float32(3.0)
    assert np.all(train[3, 1] == np.float32(1234 * 2 / 10000 - 1))  # 9999 lay outside the crop
    assert len(nc_paths(dataset)) == NUM_FILES  # kept without --delete-nc


def test_identity_order_without_permutation_for_a_small_set(dataset):
    assert convert(dataset) == 0
    data = np.concatenate([np.load(dataset / "train_data.npy"), np.load(dataset / "test_data.npy")])
    np.testing.assert_array_equal(data, np.stack([expected_image(path) for path in nc_paths(dataset)]))


def test_paper_permutation_is_used_for_10000_files():
    permutation = make_dataset_npys.load_permutation(None, 10_000)
    assert np.array_equal(permutation, json.loads((REPO / "paper_permutation.json").read_text()))
    assert np.array_equal(np.sort(permutation), np.arange(10_000))
    assert np.array_equal(make_dataset_npys.load_permutation(None, 7), np.arange(7))


def test_hidden_folders_and_other_files_are_ignored(dataset):
    (dataset / ".download_state").mkdir()
    (dataset / ".download_state" / "part_a.zip.json").write_text("{}")
    (dataset / ".extracting-part_b").mkdir()
    (dataset / ".extracting-part_b" / synthetic_file_name(7)).write_bytes(b"half a file")
    (dataset / "README.txt").write_text("not data")
    assert convert(dataset) == 0


def test_refuses_to_overwrite_without_flag(dataset, capsys):
    assert convert(dataset) == 0
    before = (dataset / "train_data.npy").read_bytes()
    capsys.readouterr()
    assert convert(dataset) == 1
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err
    assert (dataset / "train_data.npy").read_bytes() == before
    # A temporary left by a killed run is cleaned up by the next run.
    (dataset / "train_data.partial-deadbeef.npy").write_bytes(b"junk")
    assert convert(dataset, "--overwrite") == 0
    assert sorted(path.name for path in dataset.glob("*.npy")) == ["test_data.npy", "train_data.npy"]


def test_delete_nc_only_after_success(dataset, capsys):
    (dataset / synthetic_file_name(6)).write_bytes(b"not netCDF")  # the last file, read last
    assert convert(dataset, "--delete-nc") == 1
    assert_failed_cleanly(dataset, capsys, synthetic_file_name(6), "not a readable netCDF file")
    assert len(nc_paths(dataset)) == NUM_FILES

    make_synthetic_dataset(dataset, 1, FILE_SHAPE, start_number=6, progress=False)
    assert convert(dataset, "--delete-nc") == 0
    assert nc_paths(dataset) == []
    assert np.load(dataset / "test_data.npy").shape == (2, 3, CROP, CROP)


def _remove_file_3(folder: Path) -> None:
    (folder / synthetic_file_name(3)).unlink()


def _add_file_7(folder: Path) -> None:
    make_synthetic_dataset(folder, 1, FILE_SHAPE, start_number=7, progress=False)


def _add_misnamed(folder: Path) -> None:
    shutil.copy(folder / synthetic_file_name(0), folder / "s2_l1c_rgb_0000007.nc")


def _drop_b03(folder: Path) -> None:
    path = folder / synthetic_file_name(4)
    with netCDF4.Dataset(path) as nc:
        bands = {band: nc.variables[band][:] for band in ("B04", "B02")}
    path.unlink()
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in zip(("time", "y", "x"), (2, *FILE_SHAPE)):
            nc.createDimension(name, size)
        for band, values in bands.items():
            nc.createVariable(band, "u2", ("time", "y", "x"))[:] = values


def _too_small(folder: Path) -> None:
    write_s2_nc(folder / synthetic_file_name(5), np.zeros((1, 3, CROP, CROP - 1), dtype=np.uint16))


def _no_time_dim(folder: Path) -> None:
    path = folder / synthetic_file_name(1)
    path.unlink()
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("y", FILE_SHAPE[0])
        nc.createDimension("x", FILE_SHAPE[1])
        for band in ("B04", "B03", "B02"):
            nc.createVariable(band, "u2", ("y", "x"))[:] = 1000


def _nan_pixel(folder: Path) -> None:
    """Float bands (the reader accepts them) with one NaN: the value that would reach training."""
    path = folder / synthetic_file_name(2)
    path.unlink()
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in zip(("time", "y", "x"), (1, *FILE_SHAPE)):
            nc.createDimension(name, size)
        for band in ("B04", "B03", "B02"):
            values = np.full((1, *FILE_SHAPE), 1000.0, dtype=np.float32)
            if band == "B03":
                values[0, 3, 5] = np.nan
            nc.createVariable(band, "f4", ("time", "y", "x"))[:] = values


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (_remove_file_3, ["not consecutive", synthetic_file_name(4), "missing"]),
        (_add_file_7, ["--num-test 2 = 7", "found 8"]),
        (_add_misnamed, ["misnamed file", "s2_l1c_rgb_0000007.nc"]),
        (_drop_b03, [synthetic_file_name(4), "variable B03 is missing"]),
        (_too_small, [synthetic_file_name(5), "has shape (1, 16, 15)"]),
        (_no_time_dim, [synthetic_file_name(1), "has shape (20, 24)"]),
        (_nan_pixel, [synthetic_file_name(2), "1 non-finite values", "B03 at y=3, x=5", "image"]),
    ],
)
def test_bad_input_fails_cleanly(dataset, capsys, damage, fragments):
    damage(dataset)
    count = len(nc_paths(dataset))
    assert convert(dataset, "--delete-nc") == 1
    assert_failed_cleanly(dataset, capsys, *fragments)
    assert len(nc_paths(dataset)) == count  # nothing deleted


def test_wrong_count_without_split_and_bad_split(dataset, tmp_path, capsys):
    assert convert(dataset, split=False) == 1
    assert_failed_cleanly(dataset, capsys, "found 7 .nc files, expected 10000", "--num-train")
    assert make_dataset_npys.main(["--dataset-folder", str(dataset), "--num-train", "7"]) == 1
    assert_failed_cleanly(dataset, capsys, "go together")
    (tmp_path / "perm.json").write_text(json.dumps([0, 1, 2, 3, 4, 5, 5]))
    assert convert(dataset, "--permutation", str(tmp_path / "perm.json")) == 1
    assert_failed_cleanly(dataset, capsys, "not a permutation of 0..6")


def test_missing_folder_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "make_dataset_npys.py"), "--dataset-folder", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().startswith("make_dataset_npys.py: error: dataset folder")
        and "\n" not in result.stderr.strip()
    )


def test_synthetic_files_are_deterministic_and_satellite_like(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", 3, 64, seed=5, progress=False)
    second = make_synthetic_dataset(tmp_path / "b", 2, 64, seed=5, start_number=1, progress=False)
    assert [path.name for path in first] == [synthetic_file_name(i) for i in range(3)]
    for a, b in zip(first[1:], second):
        np.testing.assert_array_equal(expected_image(a), expected_image(b))  # a file depends on (seed, number) only
    with netCDF4.Dataset(first[0]) as nc:
        for band in BANDS:
            assert nc.variables[band].dimensions == ("time", "y", "x")
            assert nc.variables[band].dtype == np.uint16
    reflectance = np.stack([synthetic_reflectance(np.random.default_rng(i), (64, 64)) for i in range(20)])
    assert reflectance.min() >= 0 and np.mean(reflectance < 0.4) > 0.8
    assert np.corrcoef(reflectance[:, 0].ravel(), reflectance[:, 2].ravel())[0, 1] > 0.5  # bands correlate
    assert reflectance_to_dn(np.array([0.0, 0.1234, 7.0])).tolist() == [0, 1234, 65535]
