"""Tests of data_utils.py: sRGB conversion, loading, batching, cropping, preprocessing."""

import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data_utils


def srgb_code(v: float) -> int:
    """The sRGB standard's curve, written out independently, truncated to an 8-bit code."""
    s = 12.92 * v if v <= 0.0031308 else 1.055 * math.pow(v, 1 / 2.4) - 0.055
    return int(min(max(s, 0.0), 1.0) * 255)


def inverse_srgb(s: float) -> float:
    return s / 12.92 if s <= 0.04045 else math.pow((s + 0.055) / 1.055, 2.4)


# --- np_linear_to_srgb -------------------------------------------------------------------


def test_srgb_known_points():
    v = np.array([0.0, 0.001, 0.0031308, 0.0031309, 0.01, 0.18, 0.214041, 0.5, 0.9, 1.0])
    out = data_utils.np_linear_to_srgb(v)
    assert out.dtype == np.uint8 and out.shape == v.shape
    assert out.tolist() == [srgb_code(float(x)) for x in v]
    # Well-known anchors: black, mid grey 0.5 -> 0.7354 (187.5), 0.214 -> 0.5 (127.5).
    assert out[0] == 0 and out[7] == 187 and out[6] == 127
    # White: 1.055 * 1 - 0.055 is 0.99999... in floating point, so truncation gives 254.
    assert out[-1] in (254, 255)
    # The two branches meet at the threshold (both give code 10).
    assert out[2] == out[3] == 10


def test_srgb_clips_and_truncates():
    v = np.array([-1.0, -1e-9, 1.0 + 1e-9, 2.0, 1e6])
    out = data_utils.np_linear_to_srgb(v)
    assert out.tolist() == [0, 0, 255, 255, 255]
    # Values just below a code boundary are truncated, not rounded.
    for code in (1, 50, 100, 200, 254):
        v = inverse_srgb((code + 0.9) / 255)
        assert data_utils.np_linear_to_srgb(np.array([v]))[0] == code
        assert data_utils.np_linear_to_srgb(np.array([inverse_srgb((code + 0.1) / 255)]))[0] == code


def test_srgb_float32_input_is_converted_in_float32():
    v = np.linspace(0, 1, 1001)
    v32 = v.astype(np.float32)
    s32 = np.where(v32 <= 0.0031308, 12.92 * v32, 1.055 * np.power(np.maximum(v32, 0.0031308), 1 / 2.4) - 0.055)
    expected = (np.clip(s32, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(data_utils.np_linear_to_srgb(v32), expected)
    assert np.abs(data_utils.np_linear_to_srgb(v).astype(int) - expected).max() <= 1


def test_srgb_keeps_shape_and_is_quiet_for_negative_input():
    x = np.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = data_utils.np_linear_to_srgb(x * 0.5 + 0.5)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotonic


# --- load_data_array ---------------------------------------------------------------------


def test_load_data_array(tmp_path, capsys):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    path = tmp_path / "d.npy"
    np.save(path, data)
    loaded = data_utils.load_data_array(path, "train")
    np.testing.assert_array_equal(loaded, data)
    printed = capsys.readouterr().out
    assert "train" in printed and "(2, 3, 4, 5)" in printed and "float32" in printed
    mapped = data_utils.load_data_array(path, "test", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, data)


def test_load_data_array_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        data_utils.load_data_array(tmp_path / "missing.npy", "train")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        data_utils.load_data_array(objects, "train")


# --- ImageBatcher ------------------------------------------------------------------------


def ids(n: int) -> np.ndarray:
    """n 'images' whose content is their index: (n, 1, 1, 1)."""
    return np.arange(n).reshape(n, 1, 1, 1)


def test_shuffled_batches_hold_distinct_images_and_repeat_across_batches():
    data = ids(20)
    batcher = data_utils.ImageBatcher(8, True, rng=np.random.default_rng(1))
    seen = []
    for _ in range(50):
        batch = batcher(data)
        assert batch.shape == (8, 1, 1, 1)
        drawn = batch.ravel().tolist()
        assert len(set(drawn)) == 8  # no image twice within a batch
        seen.append(drawn)
    assert len({tuple(b) for b in seen}) > 40  # independent draws
    counts = np.bincount(np.concatenate(seen), minlength=20)
    assert counts.min() > 0
    # No epochs: with epochs, batches 0 and 1 of 8 from 20 images would be disjoint;
    # independent draws of 8 overlap the previous batch with probability > 0.99.
    overlapping = sum(len(set(seen[i]) & set(seen[i + 1])) > 0 for i in range(49))
    assert overlapping >= 45


def test_shuffled_batches_follow_the_generator():
    data = ids(30)
    a = data_utils.ImageBatcher(5, True, rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    for _ in range(5):
        expected = rng.choice(data, size=5, replace=False, shuffle=False)
        np.testing.assert_array_equal(a(data), expected)


def test_sequential_batches_wrap_around():
    data = ids(10)
    batcher = data_utils.ImageBatcher(4, False)
    got = [batcher(data).ravel().tolist() for _ in range(4)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5]]
    assert batcher.position == 6
    batcher.position = 9
    assert batcher(data).ravel().tolist() == [9, 0, 1, 2]
    whole = data_utils.ImageBatcher(10, False)
    assert whole(data).ravel().tolist() == list(range(10))
    assert whole(data).ravel().tolist() == list(range(10))


def test_batcher_rejects_batches_larger_than_the_data():
    for shuffle in (True, False):
        with pytest.raises(ValueError, match="batch_size"):
            data_utils.ImageBatcher(11, shuffle, rng=np.random.default_rng(0))(ids(10))


# --- cropping ----------------------------------------------------------------------------


def coded_batch(b: int, c: int, ny: int, nx: int) -> np.ndarray:
    """Every pixel holds a unique code from which its (image, channel, y, x) follows."""
    return np.arange(b * c * ny * nx, dtype=np.int32).reshape(b, c, ny, nx)


def offsets_of(crops: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, c, ny, nx = batch.shape
    corner = crops[..., 0, 0, 0]  # the top-left pixel of channel 0
    within = corner % (ny * nx)
    return within // nx, within % nx


def test_random_crop_offsets_and_content():
    b, c, ny, nx, h, w = 6, 2, 12, 15, 5, 7
    batch = coded_batch(b, c, ny, nx)
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    crops = np.asarray(jax.jit(jax.vmap(lambda k: data_utils.random_crop_jax(jnp.asarray(batch), h, w, k)))(keys))
    assert crops.shape == (300, b, c, h, w)
    tops, lefts = offsets_of(crops, batch)
    # The offsets span the whole range, both ends included.
    assert tops.min() == 0 and tops.max() == ny - h
    assert lefts.min() == 0 and lefts.max() == nx - w
    for k in range(0, 300, 37):
        # Each image is cut at its own offsets ...
        assert len(set(zip(tops[k].tolist(), lefts[k].tolist()))) > 1
        for i in range(b):
            t, l = tops[k, i], lefts[k, i]
            np.testing.assert_array_equal(crops[k, i], batch[i, :, t : t + h, l : l + w])
        # ... drawn as the paper's code does, from the two halves of the key.
        ky, kx = jax.random.split(keys[k])
        np.testing.assert_array_equal(tops[k], np.asarray(jax.random.randint(ky, (b,), 0, ny - h + 1)))
        np.testing.assert_array_equal(lefts[k], np.asarray(jax.random.randint(kx, (b,), 0, nx - w + 1)))


def test_random_crop_of_the_full_size_is_the_identity():
    batch = coded_batch(3, 2, 6, 8)
    out = data_utils.random_crop_jax(jnp.asarray(batch), 6, 8, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(out, batch)
    with pytest.raises(ValueError):
        data_utils.random_crop_jax(jnp.asarray(batch), 7, 8, jax.random.PRNGKey(3))


def test_center_crop_offsets():
    batch = coded_batch(2, 3, 12, 15)
    for h, w in [(5, 7), (12, 15), (1, 1), (6, 8)]:
        out = data_utils.center_crop(batch, h, w)
        t, l = (12 - h) // 2, (15 - w) // 2
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, batch[:, :, t : t + h, l : l + w])
        np.testing.assert_array_equal(data_utils.center_crop(jnp.asarray(batch), h, w), out)
    with pytest.raises(ValueError):
        data_utils.center_crop(batch, 13, 15)


# --- preprocessing -----------------------------------------------------------------------


def ramp_batch(b: int, ny: int, nx: int) -> np.ndarray:
    """Images a*y + b*x + c, different per image and channel: (b, 3, ny, nx)."""
    rng = np.random.default_rng(0)
    coef = rng.uniform(-1, 1, size=(b, 3, 3))
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    images = coef[..., 0, None, None] * y + coef[..., 1, None, None] * x + coef[..., 2, None, None]
    return images.astype(np.float32) / 100


@pytest.mark.parametrize("random_crop", [False, True])
def test_superresolution_shapes_and_alignment(random_crop):
    # On a linear ramp, area-weighted (antialiased) bilinear downscaling gives the ramp's
    # value at each low-res pixel's center, so the inputs show exactly where they sit
    # relative to the targets: input pixel (i, j) covers target pixels 4i..4i+3, 4j..4j+3,
    # whose center is at target coordinate 4i + 1.5. The border inputs are exact too,
    # which needs the 1-pixel margin that preprocessing cuts off.
    batch = ramp_batch(2, 211, 206)
    key = jax.random.PRNGKey(5) if random_crop else None
    inputs, targets = data_utils.preprocess_batch_for_superresolution_task(
        jnp.asarray(batch), 192, 192, 4, random_crop, key=key
    )
    assert inputs.shape == (2, 3, 48, 48) and targets.shape == (2, 3, 192, 192)
    targets = np.asarray(targets, dtype=np.float64)
    # The targets are a crop of the batch (recover its offset from the ramp).
    for i in range(2):
        found = False
        for t in range(211 - 192 + 1):
            for l in range(206 - 192 + 1):
                if np.allclose(targets[i], batch[i, :, t : t + 192, l : l + 192], atol=1e-6):
                    found = True
                    if not random_crop:
                        assert (t, l) == ((211 - 200) // 2 + 4, (206 - 200) // 2 + 4)
        assert found
    # The value at target coordinate (4i + 1.5, 4j + 1.5), from the ramp's gradients.
    gy = targets[:, :, 1:2, :1] - targets[:, :, :1, :1]
    gx = targets[:, :, :1, 1:2] - targets[:, :, :1, :1]
    pos = 4 * np.arange(48) + 1.5
    expected = targets[:, :, :1, :1] + gy * pos[:, None] + gx * pos[None, :]
    np.testing.assert_allclose(np.asarray(inputs), expected, atol=2e-5)


def test_random_crops_follow_random_crop_jax():
    batch = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 220, 230)).astype(np.float32))
    key = jax.random.PRNGKey(11)
    fn = jax.jit(lambda b, k: data_utils.preprocess_batch_for_superresolution_task(b, 96, 64, 4, True, key=k))
    inputs, targets = fn(batch, key)
    crop = data_utils.random_crop_jax(batch, 104, 72, key)
    np.testing.assert_array_equal(targets, crop[:, :, 4:-4, 4:-4])
    assert inputs.shape == (3, 3, 24, 16)
    # Constant images stay constant.
    const = jnp.full((2, 3, 60, 60), 0.25)
    inputs, _ = data_utils.preprocess_batch_for_superresolution_task(const, 48, 48, 4, False)
    np.testing.assert_allclose(inputs, 0.25, atol=1e-6)


def test_downscaling_is_antialiased():
    # A pattern of period sr averages to its mean under the antialiasing (triangle) filter,
    # whatever its phase; point-sampling bilinear interpolation would give 0.5 or 0 here.
    x = np.arange(200)
    stripes = np.broadcast_to((x % 4 == 1).astype(np.float32), (1, 3, 200, 200))
    inputs, _ = data_utils.preprocess_batch_for_superresolution_task(jnp.asarray(stripes), 192, 192, 4, False)
    np.testing.assert_allclose(inputs, 0.25, atol=1e-6)


def test_preprocessing_rejects_bad_arguments():
    batch = jnp.zeros((1, 3, 60, 60))
    with pytest.raises(ValueError, match="multiple"):
        data_utils.preprocess_batch_for_superresolution_task(batch, 50, 48, 4, False)
    with pytest.raises(ValueError, match="key"):
        data_utils.preprocess_batch_for_superresolution_task(batch, 48, 48, 4, True)
    with pytest.raises(ValueError):
        data_utils.preprocess_batch_for_superresolution_task(batch, 56, 48, 4, False)


def test_first_non_finite_image_reads_in_chunks(tmp_path):
    data = np.zeros((9, 3, 4, 4), np.float32)
    path = tmp_path / "d.npy"
    np.save(path, data)
    mapped = np.load(path, mmap_mode="r")
    assert data_utils.first_non_finite_image(mapped, chunk_bytes=1) is None
    for index, value in ((0, np.nan), (5, np.inf), (8, -np.inf)):
        bad = data.copy()
        bad[index, 2, 3, 3] = value
        bad[-1, 0, 0, 0] = np.nan  # a later one too: the first is reported
        np.save(path, bad)
        for chunk_bytes in (1, 3 * 4 * 4 * 4 * 2, 1 << 20):  # one image, two, everything
            assert data_utils.first_non_finite_image(np.load(path, mmap_mode="r"), chunk_bytes) == index


def test_finite_check_reads_each_version_of_a_file_once(tmp_path, monkeypatch, capsys):
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((5, 3, 4, 4), np.float32))
    scans = []
    scan = data_utils.first_non_finite_image
    monkeypatch.setattr(data_utils, "first_non_finite_image", lambda data: scans.append(1) or scan(data))

    def check():
        return data_utils.first_non_finite_image_of_file(path, np.load(path, mmap_mode="r"))

    assert check() is None and len(scans) == 1
    assert json.loads(data_utils.finite_stamp_path(path).read_text()) == data_utils.file_identity(path)
    assert check() is None and len(scans) == 1  # the stamp matches: the data is not read again
    # Rewritten with a NaN (same size, same header): read again, refused, and never stamped.
    bad = np.zeros((5, 3, 4, 4), np.float32)
    bad[3, 1, 2, 2] = np.nan
    np.save(path, bad)
    assert check() == 3 and check() == 3 and len(scans) == 3
    # A stamp that differs from the file's identity in any one part is not trusted.
    np.save(path, np.zeros((5, 3, 4, 4), np.float32))
    assert check() is None and len(scans) == 4
    identity = data_utils.file_identity(path)
    for key in identity:
        data_utils.finite_stamp_path(path).write_text(json.dumps({**identity, key: 0}))
        assert check() is None
    assert len(scans) == 4 + len(identity)
    # Where no stamp can be written the check still runs, every time, with a note.
    data_utils.finite_stamp_path(path).unlink()

    def refuse(*args):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(data_utils, "atomic_write_json", refuse)
    capsys.readouterr()
    assert check() is None and check() is None and len(scans) == 6 + len(identity)
    assert "could not record the finite-values check" in capsys.readouterr().out


def test_file_identity_sees_the_far_end_of_a_large_file(tmp_path):
    # Beyond the first MiB: the last MiB is hashed too (a change there that keeps size and
    # times, e.g. a file restored with its old times, is still seen).
    path = tmp_path / "big.npy"
    data = np.zeros((3, 1 << 18), np.float32)  # 3 MiB
    np.save(path, data)
    before = data_utils.file_identity(path)
    data[2, -1] = 1.0
    np.save(path, data)
    os.utime(path, ns=(before["mtime_ns"], before["mtime_ns"]))
    after = data_utils.file_identity(path)
    assert after["mtime_ns"] == before["mtime_ns"] and after["ends_sha256"] != before["ends_sha256"]
