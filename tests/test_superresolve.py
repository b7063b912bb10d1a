"""Tests of superresolve.py and tiling.py with real components: GeoTIFFs written and read by
rasterio, Zarr stores, a Dask scheduler with two workers started here, and real signals to a
running superresolve.py. The model is a tiny random-init RVSR (4 hidden channels) saved in the
published file format."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import cli
import presets
import run_layout
import rvsr
import superresolve
import tile_runner
import tiling
from dask_cluster import dask_cluster as dask_cluster_at
from dask_cluster import make_tls_files
from geotiffs import CRS, TRANSFORM, write_geotiff

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "superresolve.py"
HEIGHT, WIDTH, TILE = 40, 56, 16
SR = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-init models in the published layout, ``{preset}_s0.eqx``."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for i, preset in enumerate(["zero-repl", "lp2x3"]):
        hpars = dict(presets.get_preset_hpars(preset)["model_hpars"], hidden_channels=4)
        model, _ = rvsr.make_rvsr(hpars, key=jax.random.PRNGKey(i))
        paths[preset] = folder / f"{preset}_s0.eqx"
        rvsr.save_rvsr_weights(model, paths[preset])
    return paths


def scene(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """Smooth, satellite-like digital numbers (3, y, x) uint16."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    base = 1500 + 400 * np.sin(x / 5.0) * np.cos(y / 7.0)
    return np.stack([base + 100 * c + 50 * rng.standard_normal((height, width)) for c in range(3)]).astype(np.uint16)


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory) -> Path:
    return write_geotiff(tmp_path_factory.mktemp("input") / "scene.tif", scene())


def run_main(*args: object) -> int:
    return superresolve.main([str(a) for a in args] + ["--no-progress"])


def read(path: Path) -> np.ndarray:
    return superresolve.read_output(path)


def reference(model_path: Path, preset: str, x: np.ndarray, tile: int | None, halo: int = 0) -> np.ndarray:
    """The model's output for ``x`` (3, y, x) in model units, in one pass (tile None) or tiled."""
    model, state, sr = superresolve.load_model(superresolve.ModelSpec(str(model_path), preset, reparameterize=False))
    if tile is None:
        return tiling.batch_call(tiling.stateless(model, state), x[None])[0]
    return tiling.predict_raster(
        tiling.stateless(model, state), x, tile_size=tile, halo=halo, align=1, scale=sr, progress=False
    )


def model_units(dn: np.ndarray) -> np.ndarray:
    return (dn.astype(np.float64) * 2 / 10000 - 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tiling.py


def test_tile_grid_covers_the_raster_once():
    tiles = tiling.tile_grid(HEIGHT, WIDTH, TILE, halo=3)
    cover = np.zeros((HEIGHT, WIDTH), int)
    for t in tiles:
        cover[t.core_y[0] : t.core_y[1], t.core_x[0] : t.core_x[1]] += 1
        # The read window holds the core and its halo (where the raster has one).
        assert t.read_y[0] <= max(0, t.core_y[0] - 3) and t.read_y[1] >= min(HEIGHT, t.core_y[1] + 3)
        assert t.read_x[0] <= max(0, t.core_x[0] - 3) and t.read_x[1] >= min(WIDTH, t.core_x[1] + 3)
        assert 0 <= t.read_y[0] and t.read_y[1] <= HEIGHT and 0 <= t.read_x[0] and t.read_x[1] <= WIDTH
    assert (cover == 1).all() and len(tiles) == 3 * 4
    # Every window has one shape: the edge tiles read a full window shifted back inside the raster.
    assert {t.read_shape for t in tiles} == {(22, 22)}
    assert {t.read_shape for t in tiling.tile_grid(HEIGHT, WIDTH, TILE)} == {(16, 16)}
    assert tiling.tile_grid(HEIGHT, WIDTH, TILE)[-1].read_x == (40, 56)


# ----------------------------------------------------------------------------------------------
# superresolve.py: output and geometry


@pytest.mark.slow
def test_geotiff_output_is_georeferenced_and_matches_the_tiled_model(tmp_path, models, geotiff):
    out = tmp_path / "out.tif"
    assert run_main(geotiff, out, "--model", models["zero-repl"], "--tile-size", TILE) == 0
    assert not (tmp_path / "out.tif.partial").exists()
    with rasterio.open(out) as src:
        assert src.count == 3 and (src.height, src.width) == (SR * HEIGHT, SR * WIDTH)
        assert src.dtypes == ("float32",) * 3
        assert src.crs == rasterio.crs.CRS.from_string(CRS)
        assert src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / SR))
        assert (src.transform.c, src.transform.f, src.transform.a) == (300_000, 7_000_000, 2.5)
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        got = src.read()
    with rasterio.open(geotiff) as src:
        x = model_units(src.read())
    # Digital numbers in and out; the tiled run of the training form gives the same.
    expected = (reference(models["zero-repl"], "zero-repl", x, TILE).astype(np.float64) + 1) * 5000
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_band_descriptions_and_provenance_tags(tmp_path, models, geotiff):
    # What made the output travels with it: model, preset, halo, tile size, units, software
    # version and commit, in the GeoTIFF's metadata and the Zarr dataset's attributes.
    import hashlib

    import xarray as xr

    args = ["--model", models["lp2x3"], "--tile-size", TILE, "--halo", 2]
    assert run_main(geotiff, tmp_path / "out.tif", *args) == 0
    assert run_main(geotiff, tmp_path / "out.zarr", *args) == 0
    with rasterio.open(tmp_path / "out.tif") as src:
        tags, descriptions = src.tags(), src.descriptions
    attrs = xr.open_zarr(tmp_path / "out.zarr").attrs
    digest = hashlib.sha256(models["lp2x3"].read_bytes()).hexdigest()
    for metadata in (tags, attrs):
        assert metadata["model"] == "lp2x3_s0.eqx" and metadata["model_sha256"] == digest
        assert metadata["preset"] == "lp2x3" and metadata["units"] == "dn"
        assert int(metadata["halo"]) == 2 and int(metadata["tile_size"]) == TILE and int(metadata["scale"]) == SR
        assert metadata["software"] == tile_runner.software_version()  # with the git commit in a checkout
    assert "(git " in tile_runner.software_version() or not (REPO / ".git").exists()
    # Band descriptions: the dataset's bands, or the input's own descriptions.
    assert descriptions == ("B04", "B03", "B02")
    assert list(xr.open_zarr(tmp_path / "out.zarr")["description"].values) == ["B04", "B03", "B02"]
    named = tmp_path / "named.tif"
    with rasterio.open(geotiff) as src, rasterio.open(named, "w", **src.profile) as dst:
        dst.write(src.read())
        dst.descriptions = ("red", "green", "blue")
    assert run_main(named, tmp_path / "named_x4.tif", *args) == 0
    with rasterio.open(tmp_path / "named_x4.tif") as src:
        assert src.descriptions == ("red", "green", "blue")


@pytest.mark.slow
def test_halo_auto_equals_one_tile(tmp_path, models):
    # 48x48 in 16x16 tiles: with halo 10 every read window is 36x36 (the edge tiles' shifted
    # back inside), one compilation per model.
    dn = scene(48, 48, seed=1)
    path = write_geotiff(tmp_path / "scene.tif", dn)
    x = model_units(dn)
    radius = SR * rvsr.MAX_OUTPUT_CROP  # RVSR's receptive field radius (tests/test_tiling.py measures it)
    inner = (slice(None), slice(radius, -radius), slice(radius, -radius))
    for preset in ("zero-repl", "lp2x3"):
        out = tmp_path / f"{preset}.tif"
        assert run_main(path, out, "--model", models[preset], "--tile-size", TILE, "--halo", "auto") == 0
        got = read(out).astype(np.float64) / 5000 - 1
        untiled = reference(models[preset], preset, x, None)
        scale = np.abs(untiled).max()
        if preset == "zero-repl":  # zero and replication padding are local: equal everywhere
            np.testing.assert_allclose(got, untiled, atol=2e-5 * scale)
        else:  # lp padding is fitted to the whole map: equal away from the raster's outer edge
            np.testing.assert_allclose(got[inner], untiled[inner], atol=2e-5 * scale)
            assert np.abs(got - untiled).max() > 1e-3 * scale
        # Without the halo the seams show.
        assert (
            run_main(path, tmp_path / "halo0.tif", "--model", models[preset], "--tile-size", TILE, "--overwrite") == 0
        )
        assert np.abs(read(tmp_path / "halo0.tif").astype(np.float64) / 5000 - 1 - untiled)[inner].max() > 1e-3 * scale


def test_halo_zero_differs_only_near_seams(tmp_path, models, capsys):
    x = model_units(scene())
    np.save(tmp_path / "scene.npy", x)
    out = tmp_path / "out.tif"
    assert (
        run_main(
            tmp_path / "scene.npy",
            out,
            "--model",
            models["zero-repl"],
            "--tile-size",
            TILE,
            "--units",
            "model",
            "--compare-untiled",
            "--compare-output",
            tmp_path / "seams.npz",
        )
        == 0
    )
    got = read(out)
    untiled = reference(models["zero-repl"], "zero-repl", x, None)
    scale = np.abs(untiled).max()
    tiles = tiling.tile_grid(HEIGHT, WIDTH, TILE)
    near = tiling.seam_mask(tiles, got.shape[1:], SR, width=SR * rvsr.MAX_OUTPUT_CROP)
    deviation = np.abs(got - untiled).max(axis=0)
    assert deviation[~near].max() <= 2e-5 * scale
    assert deviation[tiling.seam_mask(tiles, got.shape[1:], SR, width=4)].max() > 1e-3 * scale
    summary = tiling.deviation_summary(got, untiled, tiling.seam_mask(tiles, got.shape[1:], SR))
    assert summary["seam_mean"] > summary["mean"] > 0
    # --compare-untiled printed and saved the same numbers (its one pass is the reparameterized form).
    saved = np.load(tmp_path / "seams.npz")
    printed = capsys.readouterr().out
    for key in ("mean", "max", "seam_mean", "seam_max"):
        assert float(saved[key]) == pytest.approx(summary[key], rel=1e-3, abs=1e-5 * float(scale))
    assert f"max {float(saved['seam_max']):.3g}" in printed and "within 4 output pixels of seams" in printed
    import figures

    written = figures.draw_superresolve_seams([tmp_path / "seams.npz"], tmp_path)
    assert {p.suffix for p in written} == {".pdf", ".png"} and all(p.stat().st_size > 0 for p in written)


def test_compare_untiled_memory_is_bounded_and_its_limit_checked_first(tmp_path, models, monkeypatch, capsys):
    # The comparison reads the tiled output a few rows at a time: no whole-output float64
    # copies (numpy's allocations, as tracemalloc sees them, stay well below one float32
    # output; reading it whole as float64 took 2 of them).
    import tracemalloc

    x = model_units(scene(64, 48))
    np.save(tmp_path / "scene.npy", x)
    out = tmp_path / "out.tif"
    assert (
        run_main(tmp_path / "scene.npy", out, "--model", models["zero-repl"], "--tile-size", TILE, "--units", "model")
        == 0
    )
    summary = tile_runner.RunSummary(out, 12, 12, 64 * 48, 0.0, None, (64, 48), TILE, (TILE, TILE), SR, 0, 1)
    spec = superresolve.ModelSpec(str(models["zero-repl"]), "zero-repl")
    source = superresolve.raster_io.SourceSpec(str(tmp_path / "scene.npy"))
    superresolve.compare_untiled(spec, source, None, summary, out, None)  # compiled outside the measurement
    monkeypatch.setattr(superresolve, "COMPARE_ROWS", 4)
    tracemalloc.start()
    try:
        result = superresolve.compare_untiled(spec, source, None, summary, out, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    untiled = reference(models["zero-repl"], "zero-repl", x, None)
    tiled = read(out)
    expected = tiling.deviation_summary(
        tiled, untiled, tiling.seam_mask(tiling.tile_grid(64, 48, TILE), tiled.shape[1:], SR, superresolve.SEAM_WIDTH)
    )
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-3, abs=1e-6)
    assert peak < 0.5 * untiled.nbytes, (peak, untiled.nbytes)
    # A raster over the limit is refused in one line before any tile is processed.
    monkeypatch.setattr(superresolve, "MAX_COMPARE_PIXELS", 64 * 48 - 1)
    capsys.readouterr()
    assert (
        run_main(
            tmp_path / "scene.npy",
            tmp_path / "big.tif",
            "--model",
            models["zero-repl"],
            "--units",
            "model",
            "--compare-untiled",
        )
        == cli.EXIT_ERROR
    )
    err = capsys.readouterr().err
    assert "too big for one pass" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "big.tif").exists() and not (tmp_path / "big.tif.partial").exists()


def test_zarr_output_equals_geotiff_and_zarr_input_works(tmp_path, models, geotiff):
    tif, zarr_out = tmp_path / "out.tif", tmp_path / "out.zarr"
    for out in (tif, zarr_out):
        assert run_main(geotiff, out, "--model", models["zero-repl"], "--tile-size", TILE, "--halo", 2) == 0
    import xarray as xr
    import zarr

    # An xarray dataset (tests/test_tiling.py checks GDAL reads it too), chunked like the tiles.
    dataset = xr.open_zarr(zarr_out)
    assert dataset["data"].dims == ("band", "y", "x") and dataset["data"].dtype == np.float32
    assert zarr.open_group(str(zarr_out), mode="r")["data"].chunks == (1, SR * TILE, SR * TILE)
    np.testing.assert_array_equal(dataset["data"].values, read(tif))
    assert dataset.attrs["units"] == "dn" and dataset.attrs["preset"] == "zero-repl"
    assert float(dataset["x"][0]) == 300_000 + 2.5 / 2 and float(dataset["y"][0]) == 7_000_000 - 2.5 / 2
    wkt = dataset["spatial_ref"].attrs["crs_wkt"]
    assert rasterio.crs.CRS.from_wkt(wkt) == rasterio.crs.CRS.from_string(CRS)
    # A Zarr array (band, y, x) with georeferencing attributes is an input too.
    source = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=(3, HEIGHT, WIDTH), dtype="uint16")
    with rasterio.open(geotiff) as src:
        source[...] = src.read()
    source.attrs.update({"crs": wkt, "transform": list(TRANSFORM)[:6]})
    assert (
        run_main(
            tmp_path / "in.zarr",
            tmp_path / "again.tif",
            "--model",
            models["zero-repl"],
            "--tile-size",
            TILE,
            "--halo",
            2,
        )
        == 0
    )
    with rasterio.open(tmp_path / "again.tif") as src:
        np.testing.assert_array_equal(src.read(), read(tif))
        assert src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / SR))
    # So is a Zarr output (a dataset): its georeferencing carries over.
    assert (
        run_main(
            zarr_out,
            tmp_path / "from_zarr.tif",
            "--model",
            models["zero-repl"],
            "--tile-size",
            4 * TILE,
            "--units",
            "model",
        )
        == 0
    )
    with rasterio.open(tmp_path / "from_zarr.tif") as src:
        assert src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / SR**2))
        assert src.crs == rasterio.crs.CRS.from_string(CRS)


def test_netcdf_input_reads_the_dataset_bands(tmp_path, models, geotiff):
    from make_synthetic_dataset import write_s2_nc

    with rasterio.open(geotiff) as src:
        dn = src.read()
    write_s2_nc(tmp_path / "scene.nc", dn[None])
    assert (
        run_main(tmp_path / "scene.nc", tmp_path / "nc.tif", "--model", models["zero-repl"], "--tile-size", TILE) == 0
    )
    assert run_main(geotiff, tmp_path / "tif.tif", "--model", models["zero-repl"], "--tile-size", TILE) == 0
    np.testing.assert_array_equal(read(tmp_path / "nc.tif"), read(tmp_path / "tif.tif"))
    with rasterio.open(tmp_path / "nc.tif") as src:  # the file's 10 m grid from 300 km E, 7000 km N
        assert src.transform.almost_equals(from_origin(300_000 - 5, 7_000_000 + 5, 2.5, 2.5))


@pytest.mark.slow
def test_nodata(tmp_path, models):
    # lp padding fits its predictor to all of a map: without the fill, one nodata pixel would
    # make the padded border of its tile NaN.
    dn = scene(32, 32)  # 2x2 tiles of 16x16: one compilation
    dn[:, 3:9, 20:27] = 0  # part of tile r0_c1
    dn[:, 16:, 16:] = 0  # all of tile r1_c1
    dn[1, 20, 5] = 0  # one band of one pixel
    path = write_geotiff(tmp_path / "holes.tif", dn, nodata=0)
    out = tmp_path / "out.tif"
    assert run_main(path, out, "--model", models["lp2x3"], "--tile-size", TILE) == 0
    with rasterio.open(out) as src:
        assert np.isnan(src.nodata)  # float output: NaN, never a value a valid output can take
        got = src.read()
    invalid = (dn == 0).any(axis=0)
    invalid_out = np.repeat(np.repeat(invalid, SR, axis=0), SR, axis=1)
    assert np.isnan(got[:, invalid_out]).all()
    assert np.isfinite(got[:, ~invalid_out]).all()
    # NaN marks invalid pixels of float inputs too.
    x = model_units(scene(32, 32))
    x[:, 3:9, 20:27] = np.nan
    np.save(tmp_path / "holes.npy", x)
    assert (
        run_main(
            tmp_path / "holes.npy",
            tmp_path / "nan.tif",
            "--model",
            models["lp2x3"],
            "--tile-size",
            TILE,
            "--units",
            "model",
        )
        == 0
    )
    got = read(tmp_path / "nan.tif")
    nan_out = np.repeat(np.repeat(np.isnan(x).any(axis=0), SR, axis=0), SR, axis=1)
    assert np.isnan(got[:, nan_out]).all() and np.isfinite(got[:, ~nan_out]).all()


def test_output_dtype_uint16_digital_numbers_and_float16(tmp_path, models):
    # A Sentinel-2-like uint16 input with nodata 0: uint16 output keeps nodata 0, and valid
    # outputs are the float32 run's digital numbers rounded and clipped to 1..65535.
    dn = scene(32, 32)
    dn[:, 3:9, 20:27] = 0
    dn[:, 0, :4] = 65000  # bright enough that the model's outputs pass 65535 and get clipped
    path = write_geotiff(tmp_path / "in.tif", dn, nodata=0)
    args = ["--model", models["zero-repl"], "--tile-size", TILE]
    assert run_main(path, tmp_path / "f32.tif", *args) == 0
    reference_dn = read(tmp_path / "f32.tif")
    invalid = np.isnan(reference_dn)
    assert invalid.any() and np.nanmax(reference_dn) > 65535 and np.nanmin(reference_dn) < 1
    for dtype, nodata, expected in (
        ("uint16", 0, np.clip(np.rint(reference_dn), 1, 65535)),
        ("float16", None, np.clip(reference_dn, -65504, 65504).astype(np.float16)),
    ):
        out = tmp_path / f"{dtype}.tif"
        assert run_main(path, out, *args, "--dtype", dtype) == 0
        with rasterio.open(out) as src:
            assert src.dtypes == (dtype,) * 3
            assert np.isnan(src.nodata) if nodata is None else src.nodata == nodata
            got = src.read()
        if nodata is not None:
            assert (got[invalid] == nodata).all()
            np.testing.assert_array_equal(got[~invalid], expected[~invalid])
        else:
            np.testing.assert_array_equal(got, expected)
    # Without a nodata value at an end of uint16's range, nodata is 65535 and outputs stop at 65534.
    assert (
        run_main(write_geotiff(tmp_path / "plain.tif", dn), tmp_path / "plain_u16.tif", *args, "--dtype", "uint16") == 0
    )
    with rasterio.open(tmp_path / "plain_u16.tif") as src:
        assert src.nodata == 65535 and src.read().max() == 65534


def test_sentinel2_baseline_04_offset(tmp_path, models):
    # Products of processing baseline 04.00 and later store DN = 10000 reflectance + 1000
    # (BOA_ADD_OFFSET -1000). With --add-offset -1000 the model sees the same reflectance as
    # from the dataset's DN = 10000 reflectance, and the output is in the input's convention.
    import sentinel2

    dn = scene(32, 32)
    assert (
        run_main(
            write_geotiff(tmp_path / "old.tif", dn),
            tmp_path / "old_x4.tif",
            "--model",
            models["zero-repl"],
            "--tile-size",
            TILE,
        )
        == 0
    )
    shifted = write_geotiff(tmp_path / "l2a.tif", dn + 1000)
    assert (
        run_main(
            shifted,
            tmp_path / "l2a_x4.tif",
            "--model",
            models["zero-repl"],
            "--tile-size",
            TILE,
            "--add-offset",
            sentinel2.BASELINE_04_ADD_OFFSET,
        )
        == 0
    )
    np.testing.assert_allclose(read(tmp_path / "l2a_x4.tif"), read(tmp_path / "old_x4.tif") + 1000, atol=2e-3)
    with rasterio.open(tmp_path / "l2a_x4.tif") as src:
        assert float(src.tags()["add_offset"]) == -1000 and float(src.tags()["quantification_value"]) == 10000
    # Without it the model sees a brighter scene.
    assert run_main(shifted, tmp_path / "as_dataset.tif", "--model", models["zero-repl"], "--tile-size", TILE) == 0
    assert np.abs(read(tmp_path / "as_dataset.tif") - read(tmp_path / "l2a_x4.tif")).max() > 10
    # The scaling, one place: the defaults are the dataset's v * 2 / 10000 - 1, bit for bit.
    v = np.array([0, 1, 1234, 9999, 10000, 16383, 20000], np.uint16)
    np.testing.assert_array_equal(sentinel2.dn_to_model_units(v), v.astype(np.float64) * 2 / 10000 - 1)
    np.testing.assert_allclose(
        sentinel2.model_units_to_dn(sentinel2.dn_to_model_units(v + 1000, 10000, -1000), 10000, -1000),
        v + 1000,
        rtol=1e-12,
    )
    np.testing.assert_allclose(sentinel2.dn_to_model_units(v + 1000, 10000, -1000), sentinel2.dn_to_model_units(v))


def test_progress_reads_well_in_a_log(tmp_path, models, geotiff, capsys):
    # stderr is not a terminal here (as in a Slurm log): plain lines, no carriage returns, one
    # per 5 % of the 35 tiles (19) and a last one, then the GeoTIFF's assembly by GDAL.
    out = tmp_path / "out.tif"
    assert (
        superresolve.main(
            [str(geotiff), str(out), "--model", str(models["zero-repl"]), "--tile-size", "8", "--batch-size", "1"]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "\r" not in err and "Traceback" not in err
    lines = err.splitlines()
    counts = [line for line in lines if line.startswith("zero-repl x4: ") and " tiles (" in line]
    assert len(counts) == 20 and counts[-1].startswith("zero-repl x4: 35/35 tiles (100 %), ")
    assert "about " in counts[0] and " left" in counts[0]
    assembly = lines[lines.index(counts[-1]) + 1 :]
    assert assembly[0] == "zero-repl x4: writing out.tif from the store (GDAL's COG driver: tiles, overviews)"
    assert re.fullmatch(r"zero-repl x4: \d+ MB of GeoTIFF written, done in \d+ s", assembly[-1])


def test_progress_lines_and_heartbeat():
    import io

    import progress

    log = io.StringIO()
    bar = progress.Progress(200, initial=20, label="run", stream=log, terminal=False, seconds=3600)
    for _ in range(180):
        bar.update(1)
    bar.close()
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines[0] == "run: 20/200 tiles (10 %), 0 s; resumed with 20 done before"
    assert [line.split(" tiles")[0] for line in lines[1:]] == [f"run: {10 * k}/200" for k in range(3, 21)]
    terminal = io.StringIO()
    bar = progress.Progress(10, stream=terminal, terminal=True)
    bar.update(10)
    bar.close()
    assert "\r" in terminal.getvalue()  # a tqdm bar
    beats = io.StringIO()
    with progress.heartbeat("copying", lambda: "3 MB written", label="job", stream=beats, seconds=0.05):
        time.sleep(0.3)
    lines = beats.getvalue().splitlines()
    assert lines[0] == "job: copying" and lines[-1] == "job: 3 MB written, done in 0 s"
    assert len(lines) >= 4 and all(line == "job: 3 MB written, 0 s so far" for line in lines[1:-1])
    assert progress.duration(3725) == "1 h 02 min" and progress.duration(65) == "1 min 05 s"


def test_all_nodata_input_says_so_in_one_line(tmp_path, models, capsys):
    nodata = write_geotiff(tmp_path / "nodata.tif", np.full((3, 16, 24), 7, np.uint16), nodata=7)
    out = tmp_path / "out.tif"
    assert run_main(nodata, out, "--model", models["zero-repl"], "--tile-size", TILE) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input pixel is valid" in err[0] and "the nodata value 7" in err[0], err
    assert f"{out} holds only nodata (nan)" in err[0]
    assert np.isnan(read(out)).all()
    # A raster with a valid pixel gets no such line.
    some = np.full((3, 16, 24), 7, np.uint16)
    some[:, 3, 20] = 1000
    assert (
        run_main(
            write_geotiff(tmp_path / "some.tif", some),
            tmp_path / "some_x4.tif",
            "--model",
            models["zero-repl"],
            "--tile-size",
            TILE,
        )
        == 0
    )
    assert capsys.readouterr().err == ""


def test_fill_invalid():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    invalid = np.zeros((3, 4), bool)
    invalid[1, 1] = True
    filled = tile_runner.fill_invalid(x, invalid)
    assert np.isfinite(filled).all() and (filled[:, ~invalid] == x[:, ~invalid]).all()
    assert filled[0, 1, 1] in (x[0, 0, 1], x[0, 1, 0], x[0, 1, 2], x[0, 2, 1])
    assert tile_runner.fill_invalid(x, np.ones((3, 4), bool)) is None


# ----------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing overwritten


def test_a_preset_contradicting_the_model_is_refused(tmp_path, models, geotiff, capsys):
    # The case: an lp2x3_oc5 file run with --preset zero-repl would pad wrongly.
    published = tmp_path / "lp2x3_oc5_s0.eqx"
    shutil.copy(models["lp2x3"], published)
    out = tmp_path / "out.tif"
    assert run_main(geotiff, out, "--model", published, "--preset", "zero-repl") == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--preset says zero-repl" in err, err
    assert "the file name lp2x3_oc5_s0.eqx says lp2x3_oc5" in err
    assert not out.exists() and not (tmp_path / "out.tif.partial").exists()
    # The preset recorded beside the weights (as export_trained_models.py writes it) is checked
    # too, and names the preset of a renamed file.
    run_layout.write_model_metadata(published, "zero-repl", 0)
    with pytest.raises(superresolve.UserError, match="lp2x3_oc5_s0.eqx.json says zero-repl"):
        superresolve.resolve_preset(str(published), None)
    renamed = tmp_path / "my model.eqx"
    shutil.copy(models["lp2x3"], renamed)
    run_layout.write_model_metadata(renamed, "lp2x3", 0)
    assert (
        superresolve.resolve_preset(str(renamed), None) == superresolve.resolve_preset(str(renamed), "lp2x3") == "lp2x3"
    )
    with pytest.raises(superresolve.UserError, match="my model.eqx.json says lp2x3"):
        superresolve.resolve_preset(str(renamed), "repl")
    # A file named after no known preset takes --preset as it is.
    assert superresolve.resolve_preset(str(tmp_path / "scene_model_s2.eqx"), "repl") == "repl"


def test_bad_input(tmp_path, models, geotiff, capsys):
    two_bands = write_geotiff(tmp_path / "two.tif", scene()[:2])
    not_weights = tmp_path / "zero-repl_s0.eqx"
    not_weights.write_bytes(b"not a model" * 100)
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"keep me")
    out = tmp_path / "out.tif"
    cases = {
        "does not exist": [tmp_path / "missing.tif", out, "--model", models["zero-repl"]],
        "has 2 band(s)": [two_bands, out, "--model", models["zero-repl"]],
        "not usable RVSR weights": [geotiff, out, "--model", not_weights],
        "unknown preset 'nope'": [geotiff, out, "--model", models["zero-repl"], "--preset", "nope"],
        "model file": [geotiff, out, "--model", tmp_path / "missing_s0.eqx", "--preset", "repl"],
        "exists; pass --overwrite": [geotiff, existing, "--model", models["zero-repl"]],
        "must end in": [geotiff, tmp_path / "out.png", "--model", models["zero-repl"]],
        "it needs --units dn": [geotiff, out, "--model", models["zero-repl"], "--dtype", "uint16", "--units", "model"],
        "tile size 3 is too small": [geotiff, out, "--model", models["zero-repl"], "--tile-size", 3],
        "--add-offset scale digital numbers": [
            geotiff,
            out,
            "--model",
            models["zero-repl"],
            "--add-offset",
            -1000,
            "--units",
            "model",
        ],
        "folder": [geotiff, tmp_path / "no such folder" / "out.tif", "--model", models["zero-repl"]],
    }
    for message, args in cases.items():
        assert run_main(*args) == cli.EXIT_ERROR, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert existing.read_bytes() == b"keep me" and not out.exists()
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "no such folder").exists()


# ----------------------------------------------------------------------------------------------
# Interruption and resumption, with real signals to a running superresolve.py


def wait_for_markers(work_dir: Path, process: subprocess.Popen, timeout: float = 120) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = work_dir / "done"
        if done.is_dir() and len(os.listdir(done)) >= 2:
            return len(os.listdir(done))
        if process.poll() is not None:
            raise AssertionError(f"superresolve.py ended early: {process.communicate()}")
        time.sleep(0.005)
    raise AssertionError("no tile finished in time")


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume(tmp_path, models, capsys):
    # 96x96 pixels in 8x8 tiles, one per call: 144 tiles, long enough to stop half-way.
    x = model_units(scene(96, 96, seed=3))
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.tif"
    args = [
        tmp_path / "in.npy",
        out,
        "--model",
        models["zero-repl"],
        "--tile-size",
        8,
        "--batch-size",
        1,
        "--units",
        "model",
    ]
    command = [sys.executable, str(SCRIPT), *map(str, args), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    work_dir = tmp_path / "out.tif.partial"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_markers(work_dir, process)
            process.send_signal(sig)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
        if sig == signal.SIGTERM:
            assert process.returncode == cli.EXIT_INTERRUPTED, err
            assert "rerun the same command" in err and "Traceback" not in err
        else:
            assert process.returncode == -signal.SIGKILL
        assert not out.exists()
        done = len(os.listdir(work_dir / "done"))
        assert 0 < done < 144
    assert run_main(*args) == 0
    assert not work_dir.exists()
    uninterrupted = tmp_path / "uninterrupted.tif"
    assert run_main(*args[:1], uninterrupted, *args[2:]) == 0
    np.testing.assert_array_equal(read(out), read(uninterrupted))
    # A partial run with other settings is not continued by accident.
    (tmp_path / "other.tif.partial" / "done").mkdir(parents=True)
    (tmp_path / "other.tif.partial" / "settings.json").write_text('{"tile_size": 99}')
    capsys.readouterr()
    assert run_main(*args[:1], tmp_path / "other.tif", *args[2:]) == cli.EXIT_ERROR
    err = capsys.readouterr().err  # which settings differ, with the partial run's and this run's values
    assert len(err.splitlines()) == 1 and "tile_size was 99, now 8;" in err and "halo was (not recorded), now 0" in err


# ----------------------------------------------------------------------------------------------
# Dask: a real scheduler and two workers, started as docs/superresolve.md says


@pytest.mark.slow
def test_documented_dask_recipe_output_equals_local(tmp_path, models):
    # The scheduler runs without this repository on PYTHONPATH, in a folder of its own; the
    # workers run in the repository with PYTHONPATH=$PWD; the documented command runs from a
    # third folder with relative paths. 2x2 tiles of one shape, one per task.
    write_geotiff(tmp_path / "scene.tif", scene(32, 32, seed=2))
    (tmp_path / "model.eqx").symlink_to(models["zero-repl"])
    args = [
        "scene.tif",
        "--model",
        "model.eqx",
        "--preset",
        "zero-repl",
        "--tile-size",
        TILE,
        "--batch-size",
        1,
        "--no-progress",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"JAX_PLATFORMS": "cpu"}
    with dask_cluster_at(tmp_path / "dask", worker_cwd=REPO) as address:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), args[0], "cluster.tif", *map(str, args[1:]), "--scheduler", address],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        from dask.distributed import Client

        with Client(address) as client:  # both workers took part, each loading the model once
            loads = client.run(lambda: sum(1 for k in tile_runner._CACHE if k[0] == "loader"))
    assert sorted(loads.values()) == [1, 1]
    assert run_main(tmp_path / "scene.tif", tmp_path / "local.tif", "--model", models["zero-repl"], *args[3:]) == 0
    np.testing.assert_array_equal(read(tmp_path / "cluster.tif"), read(tmp_path / "local.tif"))


@pytest.mark.slow
def test_dask_over_tls_on_loopback(tmp_path, models, capsys, monkeypatch):
    # A scheduler and a worker speaking only TLS on 127.0.0.1, with a CA and a certificate made
    # here; superresolve.py connects with the same --tls-* options they take.
    tls = make_tls_files(tmp_path / "tls")
    geotiff = write_geotiff(tmp_path / "scene.tif", scene(16, 32, seed=4))
    args = ["--model", models["zero-repl"], "--tile-size", TILE, "--batch-size", 1]
    assert run_main(geotiff, tmp_path / "local.tif", *args) == 0
    with dask_cluster_at(tmp_path / "dask", workers=1, tls=tls) as address:
        assert address.startswith("tls://127.0.0.1:")
        capsys.readouterr()
        # Without the TLS files, or TLS files with a plain address: one line each, nothing written.
        assert run_main(geotiff, tmp_path / "tls.tif", *args, "--scheduler", address) == cli.EXIT_ERROR
        plain = address.replace("tls://", "tcp://")
        assert run_main(geotiff, tmp_path / "tls.tif", *args, "--scheduler", plain, *tls.dask_options()) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and "--tls-ca-file" in err[0] and "not tls://" in err[1], err
        assert not (tmp_path / "tls.tif.partial").exists()
        assert run_main(geotiff, tmp_path / "tls.tif", *args, "--scheduler", address, *tls.dask_options()) == 0
    np.testing.assert_array_equal(read(tmp_path / "tls.tif"), read(tmp_path / "local.tif"))
    # A local cluster (--workers) listens on 127.0.0.1, and with the TLS options speaks TLS.
    addresses = []
    make_cluster = tile_runner._local_cluster

    def spy(workers, security):
        cluster = make_cluster(workers, security)
        addresses.append([cluster.scheduler_address, *(w["host"] for w in cluster.scheduler_info["workers"].values())])
        return cluster

    monkeypatch.setattr(tile_runner, "_local_cluster", spy)
    assert run_main(geotiff, tmp_path / "local_tls.tif", *args, "--workers", 1, *tls.dask_options()) == 0
    np.testing.assert_array_equal(read(tmp_path / "local_tls.tif"), read(tmp_path / "local.tif"))
    assert addresses[0][0].startswith("tls://127.0.0.1:") and addresses[0][1:] == ["127.0.0.1"]
