"""Tests of tiling.predict_raster and what it measures, with user models of every kind: Equinox
modules, plain functions, a tiny RVSR; real GeoTIFFs (written and read by rasterio, checked
with GDAL), Zarr datasets (read by xarray and GDAL), interruptions, and a real Dask cluster
(``dask scheduler`` / ``dask worker`` processes) running models defined in this module."""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rasterio
import rasterio.shutil

import padding
import presets
import raster_io
import rvsr
import tile_runner
import tiling
from dask_cluster import dask_cluster
from geotiffs import CRS, TRANSFORM, write_geotiff

# ----------------------------------------------------------------------------------------------
# User models, defined here (Dask workers import this module to unpickle them)


class ConvStack(eqx.Module):
    """3x3 convolutions with the given dilations and ``padding`` (a paper method name)."""

    pads: list
    convs: list

    def __init__(self, bands: int, dilations: tuple[int, ...], method: str = "zero", *, seed: int = 0):
        keys = jax.random.split(jax.random.PRNGKey(seed), len(dilations))
        self.pads = [padding.make_padding_layer(method, ((d, d), (d, d))) for d in dilations]
        self.convs = [eqx.nn.Conv2d(bands, bands, 3, dilation=d, key=k) for d, k in zip(dilations, keys)]

    def __call__(self, x: jax.Array) -> jax.Array:
        for pad, conv in zip(self.pads, self.convs):
            x = jax.nn.gelu(conv(pad(x)))
        return x


class Upscale4(eqx.Module):
    """(C, h, w) -> (C, 4 h, 4 w): a replication-padded 3x3 convolution to 16 C channels, then
    depth to space."""

    pad: padding.Padding2dLayer
    conv: eqx.nn.Conv2d

    def __init__(self, bands: int):
        self.pad = padding.make_padding_layer("repl", ((1, 1), (1, 1)))
        self.conv = eqx.nn.Conv2d(bands, 16 * bands, 3, key=jax.random.PRNGKey(3))

    def __call__(self, x: jax.Array) -> jax.Array:
        c, h, w = x.shape
        y = self.conv(self.pad(x)).reshape(c, 4, 4, h, w)
        return y.transpose(0, 3, 1, 4, 2).reshape(c, 4 * h, 4 * w)


class TwoLevel(eqx.Module):
    """A two-level encoder-decoder (total stride 4): stride-2 convolutions down, transposed
    convolutions up, skip connections."""

    down1: eqx.nn.Conv2d
    down2: eqx.nn.Conv2d
    up2: eqx.nn.ConvTranspose2d
    up1: eqx.nn.ConvTranspose2d

    def __init__(self, bands: int):
        k = jax.random.split(jax.random.PRNGKey(4), 4)
        self.down1 = eqx.nn.Conv2d(bands, 4, 3, stride=2, padding=1, key=k[0])
        self.down2 = eqx.nn.Conv2d(4, 4, 3, stride=2, padding=1, key=k[1])
        self.up2 = eqx.nn.ConvTranspose2d(4, 4, 2, stride=2, key=k[2])
        self.up1 = eqx.nn.ConvTranspose2d(4, bands, 2, stride=2, key=k[3])

    def __call__(self, x: jax.Array) -> jax.Array:
        h1 = jax.nn.gelu(self.down1(x))
        h2 = jax.nn.gelu(self.down2(h1))
        return self.up1(jax.nn.gelu(self.up2(h2)) + h1) + x


_SMOOTH = eqx.nn.Conv2d(2, 3, 3, padding=1, key=jax.random.PRNGKey(5))


def plain_function_model(x: jax.Array) -> jax.Array:
    """A plain function: 3 class scores from 2 bands (zero padding, radius 1)."""
    return _SMOOTH(x)


TRACED: list[tuple[int, ...]] = []


def counting_model(x: jax.Array) -> jax.Array:
    """Records the shape of every trace (one per compilation) and returns a blur."""
    TRACED.append(tuple(x.shape))
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")[:, 1:-1, :-2] + x


def random_raster(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(bands, height, width)).astype(np.float32)


def predict(model, source, destination=None, **kwargs):
    return tiling.predict_raster(model, source, destination, progress=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# What a model needs, measured


@pytest.mark.parametrize("preset", ["zero-repl", "lp1x1cs"])
def test_receptive_field_of_rvsr_is_10(preset):
    # lp padding couples every pixel of a map through its fitted predictor, but the central
    # output's dependency cone does not reach the padding once the probe is big enough.
    hpars = dict(presets.get_preset_hpars(preset)["model_hpars"], hidden_channels=4)
    model, state = rvsr.make_rvsr(hpars, key=jax.random.PRNGKey(0))
    radius = tiling.receptive_field(tiling.stateless(rvsr.reparameterize(model), state), 3, align=1)
    assert radius == rvsr.MAX_OUTPUT_CROP == 10


def test_receptive_field_of_a_dilated_stack_is_the_sum_of_dilations():
    dilations = (1, 2, 3)
    model = ConvStack(2, dilations)
    assert tiling.alignment(model, 2) == 1
    assert tiling.receptive_field(model, 2) == sum(dilations)


@pytest.mark.slow
def test_a_jitted_apply_closure_is_a_model_too():
    # The form of a Flax model, `lambda x: module.apply(variables, x)`: parameters as a pytree
    # passed to a jitted function, here two lp-padded 3x3 convolutions (radius 2).
    def apply(params: dict, x: jax.Array) -> jax.Array:
        for kernel in params["kernels"]:
            padded = padding.linear_prediction_pad_channels(x, ((1, 1), (1, 1)), **padding.PAPER_METHODS["lp1x1cs"][1])
            x = jnp.tanh(jax.lax.conv(padded[None], kernel, (1, 1), "VALID")[0])
        return x

    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    params = {"kernels": [0.3 * jax.random.normal(k, (2, 2, 3, 3)) for k in keys]}
    model = jax.jit(lambda x: apply(params, x))
    assert tiling.receptive_field(model, 2) == 2
    x = random_raster(2, 30, 41)
    tiled = predict(model, x, tile_size=16, halo="auto")
    np.testing.assert_allclose(tiled[:, 2:-2, 2:-2], np.asarray(model(jnp.asarray(x)))[:, 2:-2, 2:-2], atol=1e-5)


def test_a_global_operation_has_no_receptive_field():
    def normalized(x):  # normalization over the whole map: every output depends on every input
        return x - x.mean(axis=(1, 2), keepdims=True)

    with pytest.raises(tiling.TilingError, match="depend on the whole input"):
        tiling.receptive_field(normalized, 1, align=1, max_probe_size=64)


def test_alignment_of_a_strided_model_and_tile_sizes_it_refuses(tmp_path):
    model = TwoLevel(2)
    assert tiling.alignment(model, 2) == 4
    x = random_raster(2, 40, 40)
    with pytest.raises(tiling.TilingError, match="tile size 18 is not a multiple of 4.*use 16 or 20"):
        predict(model, x, tile_size=18, halo=0)
    with pytest.raises(tiling.TilingError, match="tile size 3 is too small"):
        predict(model, x, tile_size=3, halo=0, align=1)


# ----------------------------------------------------------------------------------------------
# Geometry: one compiled shape, halo auto exact


def test_one_compiled_shape_per_run():
    # 40x57 in 16-pixel tiles with halo 3: edge tiles read full 22x22 windows shifted back inside
    # the raster, and the last batch (12 tiles, batch 5) is filled up.
    TRACED.clear()
    x = random_raster(2, 40, 57)
    y = predict(counting_model, x, tile_size=16, halo=3, align=1, scale=1, batch_size=5)
    assert TRACED == [(2, 22, 22)]
    np.testing.assert_allclose(y, np.asarray(counting_model(jnp.asarray(x))), atol=1e-6)
    # A raster smaller than a tile is one tile of its own size.
    TRACED.clear()
    assert predict(counting_model, x[:, :10, :13], tile_size=16, halo=3, align=1, scale=1).shape == (2, 10, 13)
    assert TRACED == [(2, 10, 13)]


@pytest.mark.parametrize("name", ["lp padding, scale 1", "scale 4", "stride 4"])
def test_halo_auto_equals_one_pass_away_from_the_outer_edge(name):
    model, bands, size = {
        "lp padding, scale 1": (ConvStack(2, (1, 2), "lp1x1cs"), 2, (50, 71)),
        "scale 4": (Upscale4(1), 1, (30, 37)),
        "stride 4": (TwoLevel(2), 2, (52, 68)),
    }[name]
    x = random_raster(bands, *size, seed=1)
    tiled = predict(model, x, tile_size=16, halo="auto")
    one_pass = tiling.batch_call(model, x[None])[0]
    scale = tiled.shape[-1] // x.shape[-1]
    radius = tiling.receptive_field(model, bands)  # measured as predict_raster did
    inner = (slice(None), slice(scale * radius, -scale * radius), slice(scale * radius, -scale * radius))
    np.testing.assert_allclose(tiled[inner], one_pass[inner], atol=1e-5 * np.abs(one_pass).max())
    # Without the halo the tiles' padding shows.
    seams = predict(model, x, tile_size=16, halo=0)
    assert np.abs(seams - one_pass)[inner].max() > 1e-3 * np.abs(one_pass).max()


# ----------------------------------------------------------------------------------------------
# Outputs


def test_postprocess_to_a_uint8_class_map_with_its_own_nodata(tmp_path):
    x = random_raster(2, 36, 44)
    x[:, 5:9, 30:40] = np.nan
    classes = predict(
        plain_function_model,
        x,
        tile_size=16,
        halo="auto",
        postprocess=lambda scores: scores.argmax(axis=0)[None].astype(np.uint8),
        out_nodata=255,
    )
    assert classes.dtype == np.uint8 and classes.shape == (1, 36, 44)
    invalid = np.isnan(x).any(axis=0)
    assert (classes[0, invalid] == 255).all() and (classes[0, ~invalid] <= 2).all()
    filled = x.copy()
    filled[:, invalid] = 0  # away from the hole the fill does not matter
    expected = np.asarray(plain_function_model(jnp.asarray(filled))).argmax(axis=0)
    away = np.ones_like(invalid)
    away[3:11, 28:42] = False
    assert (classes[0, away] == expected[away]).all()
    # As a GeoTIFF (big enough for overviews): nodata 255, overviews by the nearest class.
    x = random_raster(2, 520, 600)
    x[:, 5:9, 30:40] = np.nan
    path = predict(
        plain_function_model,
        write_geotiff(tmp_path / "in.tif", x),
        tmp_path / "classes.tif",
        tile_size=256,
        halo="auto",
        postprocess=lambda s: s.argmax(axis=0)[None],
        dtype="uint8",
        out_nodata=255,
    ).destination
    with rasterio.open(path) as src:
        assert src.nodata == 255 and src.dtypes == ("uint8",) and src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE")["OVERVIEW_RESAMPLING"] == "NEAREST"
        classes = src.read()
    assert (classes[0, 5:9, 30:40] == 255).all() and (classes[0, 20:] <= 2).all()


def test_integer_and_float16_outputs_are_rounded_and_clipped_clear_of_nodata(tmp_path):
    # Values around the ends of the ranges; the last pixel is invalid (NaN).
    values = np.array([-3.4, 0.5, 1.5, 2.5, 65534.6, 70000.0, -70000.0, np.nan], np.float32)
    x = np.tile(values, (1, 2, 1))  # (1, 2, 8)

    def identity(v):
        return v

    def run(**kwargs):
        return predict(identity, x, tile_size=8, halo=0, align=1, scale=1, **kwargs)[0, 0]

    # uint16: nodata 65535 by default, so valid outputs stop at 65534; half to even.
    np.testing.assert_array_equal(run(dtype="uint16"), [0, 0, 2, 2, 65534, 65534, 0, 65535])
    # Nodata 0 (as Sentinel-2 products use): valid outputs start at 1.
    np.testing.assert_array_equal(run(dtype="uint16", out_nodata=0), [1, 1, 2, 2, 65535, 65535, 1, 0])
    # float16: clipped to its finite range instead of overflowing to infinity; NaN nodata.
    half = run(dtype="float16")
    assert half.dtype == np.float16 and np.isnan(half[-1]) and np.isfinite(half[:-1]).all()
    np.testing.assert_array_equal(half[:-1], np.float16([-3.4, 0.5, 1.5, 2.5, 65504, 65504, -65504]))
    # Integers to a narrower integer type are clipped too (not wrapped around).
    classes = predict(
        identity,
        np.full((1, 8, 8), 300.0, np.float32),
        tile_size=8,
        halo=0,
        align=1,
        scale=1,
        postprocess=lambda v: v.astype(np.int64),
        dtype="uint8",
    )
    assert (classes == 254).all()
    # As files: a float16 COG (half floats) and a uint16 COG keep the values and the nodata.
    source = write_geotiff(tmp_path / "in.tif", np.tile(values, (1, 4, 1)))
    for dtype, nodata in (("float16", None), ("uint16", 65535)):
        out = predict(
            identity, source, tmp_path / f"{dtype}.tif", tile_size=8, halo=0, align=1, scale=1, dtype=dtype
        ).destination
        with rasterio.open(out) as src:
            assert src.dtypes == (dtype,)
            assert np.isnan(src.nodata) if nodata is None else src.nodata == nodata
            np.testing.assert_array_equal(src.read(1)[0], run(dtype=dtype))
    zarr_half = predict(
        identity, source, tmp_path / "half.zarr", tile_size=8, halo=0, align=1, scale=1, dtype="float16"
    ).destination
    import xarray as xr

    np.testing.assert_array_equal(xr.open_zarr(zarr_half)["data"].values[0, 0], half)


def test_geotiff_in_cloud_optimized_geotiff_out(tmp_path):
    # Output 600x680: big enough for an overview level of GDAL's 512-pixel COG tiles.
    x = random_raster(1, 150, 170)
    source = write_geotiff(tmp_path / "in.tif", x)
    summary = predict(Upscale4(1), source, tmp_path / "out.tif", tile_size=64, halo="auto", attrs={"model": "Upscale4"})
    assert summary.scale == 4 and summary.align == 1 and summary.halo == 1 and summary.tiles == 9
    with rasterio.open(tmp_path / "out.tif") as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["LAYOUT"] == "COG" and structure["COMPRESSION"] == "DEFLATE"
        assert src.overviews(1) == [2] and src.block_shapes == [(512, 512)]
        assert src.crs == rasterio.crs.CRS.from_string(CRS) and np.isnan(src.nodata)
        assert src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / 4))
        assert src.tags()["model"] == "Upscale4"
        got = src.read()
    np.testing.assert_allclose(got, predict(Upscale4(1), x, tile_size=64, halo="auto"), atol=1e-6)


def test_cog_blocks_are_written_once_and_bigtiff_chosen_by_a_safe_bound(tmp_path, monkeypatch):
    # Tiles of 24 fit no TIFF block size: a writer that wrote each tile's window into a
    # compressed GeoTIFF rewrote blocks and left the old copies as dead space. GDAL's own
    # rewrite of the output is the reference size.
    x = random_raster(2, 300, 300)  # incompressible, so dead space would show
    out = predict(
        ConvStack(2, (1,)), write_geotiff(tmp_path / "in.tif", x), tmp_path / "out.tif", tile_size=24, halo=0, align=1
    ).destination
    rasterio.shutil.copy(out, tmp_path / "rewritten.tif", driver="COG", compress="DEFLATE", predictor="YES")
    assert out.stat().st_size <= 1.01 * (tmp_path / "rewritten.tif").stat().st_size
    assert out.read_bytes()[:4] == b"II*\x00"  # classic TIFF
    # BigTIFF when the image with overviews could pass 4 GiB: 3 GiB of floats is too much already.
    assert raster_io.needs_bigtiff(3 * 2**30) and not raster_io.needs_bigtiff(2 * 2**30)
    monkeypatch.setattr(raster_io, "TIFF_LIMIT", 1000)
    big = predict(ConvStack(2, (1,)), x[:, :40, :40], tmp_path / "big.tif", tile_size=24, halo=0, align=1).destination
    assert big.read_bytes()[:4] == b"II+\x00"  # BigTIFF


def test_cog_is_written_with_a_block_cache_of_megabytes(tmp_path, monkeypatch):
    # rasterio passes an int GDAL_CACHEMAX to GDAL as bytes: 256 meant a 256-byte cache, with
    # which GDAL flushed half-done overview blocks and wrote them again (its temporary overview
    # file twice as big, the assembly slower). GDAL itself is asked what cache it has.
    seen = []
    copy = rasterio.shutil.copy

    def copy_and_check(*args, **kwargs):
        seen.append(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
        return copy(*args, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", copy_and_check)
    predict(ConvStack(1, (1,)), random_raster(1, 24, 24), tmp_path / "out.tif", tile_size=8, halo=0, align=1)
    assert len(seen) == 1 and seen[0] >= 64 * 2**20


def test_float_output_nodata_is_nan_not_the_input_nodata(tmp_path):
    # A uint16 input with nodata 0 and a model whose valid outputs are exactly 0.
    dn = np.full((1, 32, 32), 1000, np.uint16)
    dn[0, :8, :8] = 0
    out = predict(
        lambda v: v * 0.0,
        write_geotiff(tmp_path / "in.tif", dn, nodata=0),
        tmp_path / "out.tif",
        tile_size=16,
        halo=0,
        align=1,
    ).destination
    with rasterio.open(out) as src:
        assert np.isnan(src.nodata)
        masked = src.read(masked=True)
    invalid = dn[0] == 0
    assert masked.mask[0, invalid].all() and not masked.mask[0, ~invalid].any()
    assert (masked.data[0, ~invalid] == 0).all()


@pytest.mark.parametrize("mask", ["internal mask", "alpha band"])
def test_gdal_mask_bands_mark_invalid_pixels(tmp_path, mask):
    # A masked pixel is invalid like nodata: its value (here huge) never reaches the model, and
    # its output is nodata. An alpha band is a mask, not data: not read by default.
    x = (random_raster(3, 40, 40) * 100 + 1000).astype(np.uint16)
    valid = np.ones((40, 40), bool)
    valid[5:12, 20:33] = False
    valid[30:, :8] = False
    x[:, ~valid] = 60000
    path = tmp_path / "masked.tif"
    profile = {"driver": "GTiff", "width": 40, "height": 40, "dtype": "uint16", "crs": CRS, "transform": TRANSFORM}
    if mask == "internal mask":
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", count=3, **profile) as dst:
            dst.write(x)
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    else:
        with rasterio.open(path, "w", count=4, photometric="RGB", alpha="YES", **profile) as dst:
            dst.write(np.concatenate([x, np.where(valid, 65535, 0)[None].astype(np.uint16)]))
    with rasterio.open(path) as src:
        assert src.count == 3 + (mask == "alpha band") and src.nodata is None
        assert rasterio.enums.MaskFlags.per_dataset in src.mask_flag_enums[0]
    model = ConvStack(3, (1, 2))
    as_nan = x.astype(np.float32)
    as_nan[:, ~valid] = np.nan
    expected = predict(model, as_nan, tile_size=16, halo="auto")
    got = predict(model, path, tile_size=16, halo="auto")
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[:, ~valid]).all() and np.isfinite(got[:, valid]).all()
    with rasterio.open(predict(model, path, tmp_path / "out.tif", tile_size=16, halo="auto").destination) as src:
        masked = src.read(masked=True)
    assert (masked.mask == ~valid).all()


def test_zarr_output_is_a_dataset_that_xarray_and_gdal_open(tmp_path):
    import xarray as xr

    x = random_raster(1, 40, 50)
    source = write_geotiff(tmp_path / "in.tif", x)
    out = predict(
        Upscale4(1),
        source,
        tmp_path / "out.zarr",
        tile_size=16,
        halo="auto",
        attrs={"model": "Upscale4"},
        band_descriptions=["elevation"],
    ).destination
    expected = predict(Upscale4(1), x, tile_size=16, halo="auto")
    dataset = xr.open_zarr(out)
    assert dataset["data"].dims == ("band", "y", "x") and dataset.attrs["model"] == "Upscale4"
    assert dataset["description"].values.tolist() == ["elevation"] and dataset.attrs["halo"] == 1
    np.testing.assert_allclose(dataset["data"].values, expected, atol=1e-6)
    np.testing.assert_allclose(dataset["x"].values[:2], [300_000 + 1.25, 300_000 + 3.75])
    np.testing.assert_allclose(dataset["y"].values[:2], [7_000_000 - 1.25, 7_000_000 - 3.75])
    crs = rasterio.crs.CRS.from_wkt(dataset[dataset["data"].attrs["grid_mapping"]].attrs["crs_wkt"])
    assert crs == rasterio.crs.CRS.from_string(CRS)
    with rasterio.open(out) as src:  # GDAL's Zarr driver
        assert src.crs == crs and src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / 4))
        assert np.isnan(src.nodata)
        np.testing.assert_allclose(src.read(), expected, atol=1e-6)
    # And it is an input: the georeferencing carries over.
    again = predict(
        Upscale4(1), out, tmp_path / "again.tif", tile_size=64, halo=0, band_descriptions=["elevation x16"]
    ).destination
    with rasterio.open(again) as src:
        assert src.transform.almost_equals(TRANSFORM @ rasterio.Affine.scale(1 / 16)) and src.crs == crs
        assert src.descriptions == ("elevation x16",) and src.tags()["software"].startswith("lp-padding ")
    with pytest.raises(tiling.TilingError, match="2 band descriptions for 1 output bands"):
        predict(Upscale4(1), x, tile_size=16, halo=0, band_descriptions=["a", "b"])


# ----------------------------------------------------------------------------------------------
# Runs: resume, overwrite, Dask


def test_resume_after_interruption_and_settings_that_must_match(tmp_path):
    x = random_raster(2, 48, 48)
    calls = []

    def interrupt_after_three(y):  # Ctrl-C while the fourth tile is being processed
        if y.shape[1:] == (16, 16):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
        return y

    out = tmp_path / "out.zarr"
    kwargs = {"tile_size": 16, "halo": 2, "align": 1, "batch_size": 1}
    with pytest.raises(tile_runner.RunInterrupted) as info:
        predict(plain_function_model, x, out, postprocess=interrupt_after_three, **kwargs)
    assert (info.value.done, info.value.total) == (3, 9) and not out.exists()
    assert len(os.listdir(tmp_path / "out.zarr.partial" / "done")) == 3
    # Another model (or other settings) does not continue it by accident; the message names
    # what differs, the partial run's value and this run's.
    with pytest.raises(
        tiling.TilingError,
        match=r"other settings: bands_out was 3, now 2; model was \w{12}, "
        r"now \w{12}; postprocess was \w{12}, now \w{12}; rerun",
    ):
        predict(ConvStack(2, (1,)), x, out, **kwargs)
    with pytest.raises(tiling.TilingError, match="other settings: halo was 2, now 4; tile_size was 16, now 24; rerun"):
        predict(
            plain_function_model, x, out, postprocess=interrupt_after_three, **{**kwargs, "tile_size": 24, "halo": 4}
        )
    summary = predict(plain_function_model, x, out, postprocess=interrupt_after_three, **kwargs)
    assert summary.processed == 6 and not (tmp_path / "out.zarr.partial").exists()
    np.testing.assert_array_equal(raster_io.read_raster(out), predict(plain_function_model, x, **kwargs))
    # An existing output is replaced only when asked.
    with pytest.raises(tiling.TilingError, match="exists; overwrite"):
        predict(plain_function_model, x, out, **kwargs)
    # A destination in a folder that does not exist (a typo?) is refused, not made.
    with pytest.raises(tiling.TilingError, match="the output's folder .*typo does not exist; create it first"):
        predict(plain_function_model, x, tmp_path / "typo" / "out.zarr", **kwargs)
    assert not (tmp_path / "typo").exists()
    predict(ConvStack(2, (1,)), x, out, overwrite=True, **kwargs)
    np.testing.assert_array_equal(raster_io.read_raster(out), predict(ConvStack(2, (1,)), x, **kwargs))


@pytest.mark.slow
def test_dask_cluster_runs_user_models_from_relative_paths(tmp_path, monkeypatch):
    # The workers run in another folder: every path must reach them absolute. One user model is
    # a plain function, one an Equinox module made here and sent once per worker.
    from dask.distributed import Client

    x = random_raster(2, 40, 40, seed=2)
    write_geotiff(tmp_path / "in.tif", x)
    monkeypatch.chdir(tmp_path)
    local = predict(ConvStack(2, (1, 2)), x, tile_size=16, halo="auto")
    with dask_cluster(tmp_path / "dask") as address:
        summary = predict(
            plain_function_model, "in.tif", "function.tif", tile_size=16, halo="auto", scheduler=address, batch_size=1
        )
        assert summary.compile_seconds is None and summary.processed == 9
        np.testing.assert_allclose(
            raster_io.read_raster("function.tif"),
            predict(plain_function_model, x, tile_size=16, halo="auto"),
            atol=1e-6,
        )
        with Client(address) as client:
            module = predict(
                ConvStack(2, (1, 2)), "in.tif", "module.zarr", tile_size=16, halo="auto", client=client, batch_size=1
            )
            np.testing.assert_allclose(raster_io.read_raster(module.destination), local, atol=1e-6)
            # To an array, with the model sent once to each worker.
            np.testing.assert_allclose(
                predict(ConvStack(2, (1, 2)), x, tile_size=16, halo="auto", client=client, batch_size=1),
                local,
                atol=1e-6,
            )
            # Both workers ran batches of the last run (each keeps that run's reader and store).
            ran = client.run(lambda: any(k[0] == "run" for k in tile_runner._CACHE))
    assert list(ran.values()) == [True, True]
