"""The worked examples in examples/: each runs end to end at its tiny size, and the pieces they
teach (synthetic data, seam metrics, command line) do what they say.

examples/segmentation_unet.py trains a U-Net with zero and linear prediction padding, runs it
over a GeoTIFF with `tiling.predict_raster` and prints a seam table; the end-to-end test runs
it as a user would (a subprocess) and checks what it prints and the class-map GeoTIFFs it
writes. It uses lp1x1cs instead of the example's default lp2x3: the same code path, and XLA
compiles it about twice as fast (every lp padding layer adds to the compile time).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "segmentation_unet.py"


def load_example():
    spec = importlib.util.spec_from_file_location("segmentation_unet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Equinox modules look their defining module up
    spec.loader.exec_module(module)
    return module


seg = load_example()


# ----------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The example at its tiny size: (stdout, output folder)."""
    out_dir = tmp_path_factory.mktemp("segmentation")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--size", "tiny", "--padding", "lp1x1cs", "--out-dir", str(out_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, out_dir


def table_rows(stdout: str) -> dict[tuple[str, str], list[float]]:
    """The seam table: (padding, halo) -> the numbers of its row, in print order."""
    rows = {}
    pattern = r"^(zero|lp1x1cs)\s+(0|auto=\d+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)%\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%$"
    for match in re.finditer(pattern, stdout, re.MULTILINE):
        rows[match[1], match[2]] = [float(v) for v in match.groups()[2:]]
    return rows


@pytest.mark.slow
def test_prints_receptive_field_and_alignment(tiny_run):
    stdout, _ = tiny_run
    match = re.search(r"receptive field: (\d+) input pixels; alignment: (\d+) pixels", stdout)
    assert match, stdout
    radius, align = int(match[1]), int(match[2])
    assert align == 4  # two 2x2 poolings
    # More than RVSR's 10; at most 17, where the last output pixel of a 4x4 block reaches.
    assert 10 < radius <= 17


@pytest.mark.slow
def test_seam_table_has_four_rows_of_numbers(tiny_run):
    stdout, _ = tiny_run
    rows = table_rows(stdout)
    assert [key[0] for key in rows] == ["zero", "zero", "lp1x1cs", "lp1x1cs"], stdout
    for values in rows.values():
        percentages = values[:3] + values[4:]
        assert all(0 <= p <= 100 for p in percentages)
        assert values[3] == int(values[3]) >= 0  # a count of pixels


@pytest.mark.slow
def test_halo_zero_leaves_seams_and_halo_auto_is_exact(tiny_run):
    stdout, _ = tiny_run
    for (method, halo), (differ_near, _, _, inside, _, _) in table_rows(stdout).items():
        if halo == "0":
            assert differ_near > 0 and inside > 0, (method, stdout)
        else:
            assert halo == "auto=16" and inside == 0, (method, stdout)  # 15 rounded up to the alignment
    assert "halo auto exact (no pixel at least the auto halo from the outer edge differs): yes" in stdout


@pytest.mark.slow
def test_writes_georeferenced_uint8_class_maps(tiny_run):
    import rasterio

    _, out_dir = tiny_run
    with rasterio.open(out_dir / "scene.tif") as scene:
        crs, transform, shape = scene.crs, scene.transform, scene.shape
    assert crs.to_epsg() == 3067 and shape == (200, 200)
    for method in ("zero", "lp1x1cs"):
        for halo in ("0", "auto"):
            with rasterio.open(out_dir / f"classes_{method}_halo_{halo}.tif") as src:
                assert (src.count, src.dtypes[0], src.shape) == (1, "uint8", shape)
                assert src.crs == crs and src.transform == transform
                assert src.nodata == seg.CLASS_NODATA
                classes = src.read(1)
            # The scene has no nodata, so every pixel has a class.
            assert classes.max() < seg.NUM_CLASSES


# ----------------------------------------------------------------------------------------------
# The pieces


def test_distance_to_seams():
    # Seams at 4 and 8 (between pixels 3|4 and 7|8).
    assert seg.distance_to_seams(10, 4).tolist() == [3, 2, 1, 0, 0, 1, 1, 0, 0, 1]
    assert seg.distance_to_seams(4, 8).tolist() == [4, 4, 4, 4]  # one tile: no seam


def test_distance_to_edge():
    assert seg.distance_to_edge(5).tolist() == [0, 1, 2, 1, 0]


def test_seam_comparison_counts_zones():
    truth = np.zeros((16, 16), np.uint8)
    reference = truth.copy()
    tiled = truth.copy()
    tiled[7, 2] = 1  # next to the seam at 8, 2 from the outer edge
    tiled[10, 10] = 1  # 2 from the seam at 8, 5 from the outer edge
    m = seg.seam_comparison(tiled, reference, truth, tile_size=8, radius=3, inside=4)
    near = 16 * 16 - 8 * 8  # rows and columns 4..11 are < 4 from the seam; the rest is the 4 corners
    assert m["differ_near_seams"] == pytest.approx(100 * 2 / near)
    assert m["differ_near_r"] == pytest.approx(100 * 2 / (16 * 16 - 10 * 10))
    assert m["differ_all"] == pytest.approx(100 * 2 / 256)
    assert m["differ_inside"] == 1
    assert m["accuracy"] == pytest.approx(100 * 254 / 256)


def test_scene_is_deterministic_and_needs_context():
    image, labels = seg.make_scene(3, 128)
    again, labels_again = seg.make_scene(3, 128)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert image.shape == (1, 128, 128) and image.dtype == np.float32
    assert set(np.unique(labels)) == set(range(seg.NUM_CLASSES))
    # One pixel says little about its class: each class has about the same mean and spread.
    for k in range(seg.NUM_CLASSES):
        values = image[0][labels == k]
        assert abs(values.mean() - seg.BRIGHTNESS) < 0.2 and abs(values.std() - np.hypot(1, seg.NOISE)) < 0.2


@pytest.mark.parametrize("k", range(4))
def test_waves_have_their_class_orientation(k):
    size = 96
    angle = k * np.pi / 4
    power = np.abs(np.fft.fft2(seg.oriented_waves(np.random.default_rng(k), size, angle))) ** 2
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    # Power-weighted mean squares of the frequency along the angle and across it.
    along = np.sum(power * (fx * np.cos(angle) + fy * np.sin(angle)) ** 2) / power.sum()
    across = np.sum(power * (fy * np.cos(angle) - fx * np.sin(angle)) ** 2) / power.sum()
    assert along > 5 * across  # 45 degrees off would make them about equal
    assert np.sqrt(along) == pytest.approx(1 / seg.WAVELENGTH, rel=0.1)


def test_unet_maps_bands_to_class_logits():
    import equinox as eqx
    import jax

    # Built and called on shapes only: traced, not compiled, so it takes no time.
    model = eqx.filter_eval_shape(seg.UNet, 2, (2, 2, 2), "lp2x3", jax.random.PRNGKey(0))
    out = eqx.filter_eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 12, 20), np.float32))
    assert out.shape == (seg.NUM_CLASSES, 12, 20)


def test_refuses_to_overwrite_an_earlier_run(tmp_path, capsys):
    (tmp_path / "scene.tif").write_bytes(b"earlier")
    assert seg.main(["--size", "tiny", "--out-dir", str(tmp_path)]) == 2
    assert "scene.tif exists" in capsys.readouterr().err
    assert (tmp_path / "scene.tif").read_bytes() == b"earlier"


def test_rejects_an_unknown_padding(capsys):
    assert seg.main(["--padding", "lp9x9"]) == 2
    assert "lp9x9" in capsys.readouterr().err
