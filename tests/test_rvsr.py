"""Tests of rvsr.py: the reference outputs, tiling behaviour, shapes, parameter count, weight files."""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rvsr

DATA = Path(__file__).parent / "data"
REFERENCE_WEIGHTS = DATA / "rvsr_reference.eqx"
REFERENCE_OUTPUTS = DATA / "rvsr_reference.npz"

# Cheap padding for tests that are about structure, not padding: zero convolution padding
# and explicit zero padding in the upscale path (so both padding sites are exercised).
CHEAP_HPARS = {
    "hidden_channels": 16,
    "conv_padding_method": "zero",
    "upscale_padding_method": "zero",
    "padding_method_kwargs": {},
    "output_crop": 0,
}
LP2X3_HPARS = {
    "hidden_channels": 16,
    "conv_padding_method": "lp",
    "upscale_padding_method": "lp",
    "padding_method_kwargs": {"length": 2, "width": 3, "correlate_method": "direct"},
    "output_crop": 0,
}
ALL_OC = list(range(rvsr.MAX_OUTPUT_CROP + 1))


@pytest.fixture(autouse=True, scope="module")
def full_float32_precision():
    # GPUs may run float32 convolutions in TF32 by default, far above these tolerances.
    with jax.default_matmul_precision("highest"):
        yield


def leaves_of(model):
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))


def assert_same_leaves(a, b):
    la, lb = list(a), list(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@eqx.filter_jit
def predict(model, state, x):
    """x: (batch, 3, y, x) -> (batch, 3, 4 y', 4 x')."""
    return jax.vmap(lambda xi: model(xi, state)[0])(x)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE_OUTPUTS) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["index"] = json.loads(str(arrays.pop("index_json")))
    return arrays


@pytest.fixture(scope="module")
def cheap_models():
    """oc -> (model, state) with zero padding, all holding the same random weights."""
    base, _ = rvsr.make_rvsr(CHEAP_HPARS, key=jax.random.PRNGKey(7))
    # Random biases (zero-initialised would be too easy a case for the weight plumbing).
    leaves = [a + 0.01 * jax.random.normal(jax.random.PRNGKey(i), a.shape) for i, a in enumerate(leaves_of(base))]
    models = {}
    for oc in ALL_OC:
        model, state = rvsr.make_rvsr(CHEAP_HPARS, output_crop=oc, key=jax.random.PRNGKey(100 + oc))
        models[oc] = (rvsr.rvsr_from_oc0_leaves(model, leaves), state)
    return models


# --- the reference vectors -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("oc", [0, 5])
def test_shifted_tiles_agree_away_from_their_edges(oc):
    # Two overlapping tiles of one image, offset by (4, 6) input pixels. Every output pixel
    # depends on the input within 10 low-resolution pixels (head, 8 body blocks and the tail
    # RepConv: one 3x3 convolution each), so where that neighbourhood lies inside both tiles
    # the padding cannot reach, and the two outputs must be the same pixels, 4x as far apart.
    # Fails if padding (here lp2x3, whose predictor is fitted to the whole map) leaks into the
    # interior, or if an output crop, the pixel shuffle or the bilinear skip path is misaligned.
    radius, size, (dy, dx) = 10, 44, (4, 6)
    model, state = rvsr.make_rvsr(dict(LP2X3_HPARS, output_crop=oc), key=jax.random.PRNGKey(5))
    rng = np.random.default_rng(2)
    image = np.cumsum(rng.normal(0, 0.2, (3, size + dy, size + dx)), axis=2).astype(np.float32)
    tiles = jnp.asarray(np.stack([image[:, :size, :size], image[:, dy : dy + size, dx : dx + size]]))
    out_a, out_b = np.asarray(predict(model, state, tiles))
    assert out_a.shape == (3, 4 * (size - 2 * oc), 4 * (size - 2 * oc))

    def rows_cols(first, stop, tile_offset):
        # Output pixels of the tile at tile_offset covering image positions [first, stop).
        return slice(4 * (first - tile_offset - oc), 4 * (stop - tile_offset - oc))

    # Image positions whose neighbourhood is inside both tiles.
    y0, y1, x0, x1 = dy + radius, size - radius, dx + radius, size - radius
    interior_a = out_a[:, rows_cols(y0, y1, 0), rows_cols(x0, x1, 0)]
    interior_b = out_b[:, rows_cols(y0, y1, dy), rows_cols(x0, x1, dx)]
    assert interior_a.shape == (3, 4 * (y1 - y0), 4 * (x1 - x0))
    np.testing.assert_allclose(interior_b, interior_a, atol=2e-4, rtol=1e-4)
    # Not vacuous: the output varies, and where tile b's padding reaches, the tiles differ.
    assert interior_a.std() > 0.05
    edge_a = out_a[:, rows_cols(dy + oc, dy + oc + 2, 0), rows_cols(x0, x1, 0)]
    edge_b = out_b[:, rows_cols(dy + oc, dy + oc + 2, dy), rows_cols(x0, x1, dx)]
    assert np.abs(edge_a - edge_b).max() > 1e-2


@pytest.mark.parametrize("variant", range(4))
@pytest.mark.slow
def test_reference_outputs(reference, variant):
    entry = reference["index"][variant]
    hpars = dict(entry["model_hpars"], hidden_channels=16)
    key = jax.random.PRNGKey(42)
    model, state = eqx.nn.make_with_state(rvsr.RVSR)(
        4,
        16,
        False,
        hpars["output_crop"],
        conv_padding_method=hpars["conv_padding_method"],
        upscale_padding_method=hpars["upscale_padding_method"],
        padding_method_kwargs=hpars["padding_method_kwargs"],
        key=key,
    )
    oc0_model, _ = rvsr.make_rvsr(hpars, 4, output_crop=0, key=key)
    model = rvsr.load_rvsr_weights(model, REFERENCE_WEIGHTS, oc0_model)
    out = np.asarray(predict(model, state, jnp.asarray(reference["input"])))
    expected = reference[f"v{entry['variant']}_output"]
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1e-4


def test_load_rvsr_helper_matches_manual_loading():
    hpars = dict(LP2X3_HPARS, output_crop=5)
    model, _ = rvsr.load_rvsr(REFERENCE_WEIGHTS, hpars)
    assert model.output_crop == 5
    manual, _ = rvsr.make_rvsr(hpars, key=jax.random.PRNGKey(3))
    manual = rvsr.load_rvsr_weights(manual, REFERENCE_WEIGHTS)
    assert_same_leaves(leaves_of(model), leaves_of(manual))
    as_oc10, _ = rvsr.load_rvsr(REFERENCE_WEIGHTS, hpars, output_crop=10)
    assert as_oc10.output_crop == 10 and as_oc10.body_spatial_reduction == 8


# --- structure ---------------------------------------------------------------------------


@pytest.mark.parametrize("oc", ALL_OC)
def test_parameter_count_and_output_size(oc):
    model, state = rvsr.make_rvsr(LP2X3_HPARS, output_crop=oc, key=jax.random.PRNGKey(0))
    assert rvsr.num_parameters(model) == 218_928
    assert model.output_crop == oc
    assert model.body_spatial_reduction == min(max(oc - 1, 0), 8)
    out = jax.eval_shape(lambda x: model(x, state)[0], jax.ShapeDtypeStruct((3, 48, 48), jnp.float32))
    assert out.shape == (3, 4 * (48 - 2 * oc), 4 * (48 - 2 * oc))
    # Non-square input: the y and x axes are not mixed up.
    out = jax.eval_shape(lambda x: model(x, state)[0], jax.ShapeDtypeStruct((3, 40, 56), jnp.float32))
    assert out.shape == (3, 4 * (40 - 2 * oc), 4 * (56 - 2 * oc))


def test_parameter_count_formula():
    # The count follows from the layer list of rvsr.py for hidden channels n:
    # head 27n + n; RepConv 2 * (2n^2+2n + 36n^2+2n + 2n^2+n) + n^2+n + 9n^2+n; FFN 4n^2+3n;
    # tail 1x1 conv (n + 1) * 3 sr^2. (The model count is checked per output crop above.)
    def expected(n, sr=4):
        repconv = 2 * (2 * n * n + 2 * n + 36 * n * n + 2 * n + 2 * n * n + n) + (n * n + n) + (9 * n * n + n)
        ffn = 4 * n * n + 3 * n
        return 28 * n + 8 * (repconv + ffn) + repconv + (3 * sr * sr) * (n + 1)

    assert expected(16) == 218_928
    model, _ = rvsr.make_rvsr(CHEAP_HPARS, key=jax.random.PRNGKey(0))
    assert rvsr.num_parameters(model) == expected(16)


def test_field_order_and_leaf_layout():
    model, _ = rvsr.make_rvsr(CHEAP_HPARS, key=jax.random.PRNGKey(0))
    assert [f for f in model.__dataclass_fields__] == [
        "head",
        "tail",
        "upscale",
        "body_repvits_same_pad",
        "body_repvits_no_pad",
        "body_spatial_reduction",
    ]
    leaves = leaves_of(model)
    assert len(leaves) == 40
    assert leaves[0].shape == (16, 3, 3, 3)  # head conv weight comes first
    assert leaves[18].shape == (48, 16, 1, 1)  # the tail's 1x1 conv ends the head + tail part
    assert all(leaf.shape[0] == 8 for leaf in leaves[20:])  # then the 8-stacked body


@pytest.mark.slow
def test_body_equals_filter_vmap_construction():
    # The stacked body must be exactly what eqx.filter_vmap over the block constructor with
    # keys[1:9] gives (structure and values), as rvsr.RVSR builds it.
    hc, key = 16, jax.random.PRNGKey(5)
    model, _ = rvsr.make_rvsr(LP2X3_HPARS, key=key)
    keys = jax.random.split(key, 11)

    def block(k):
        return rvsr.RepViT(
            hc,
            inference=False,
            same_pad=True,
            conv_padding_method="lp",
            padding_method_kwargs=LP2X3_HPARS["padding_method_kwargs"],
            activation_function=jax.nn.gelu,
            key=k,
        )

    expected = eqx.filter_vmap(block)(keys[1:9])
    got = model.body_repvits_same_pad
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
    assert_same_leaves(leaves_of(got), leaves_of(expected))
    # Unpadded blocks get the keys of their positions.
    model5, _ = rvsr.make_rvsr(dict(LP2X3_HPARS, output_crop=5), key=key)
    assert_same_leaves(leaves_of(model5.body_repvits_no_pad[1]), [a[5] for a in leaves_of(expected)])
    assert model5.body_repvits_no_pad[1].layers.layers[0].padding is None


@pytest.mark.parametrize("oc", [0, 5, 10])
def test_properties_describe_the_model(oc):
    # What callers read from a model (superresolve.py the sr rate, reparameterize the rest),
    # for every body layout: all blocks stacked, stacked + unpadded, all unpadded.
    def build(inference):
        return eqx.filter_eval_shape(
            rvsr.RVSR,
            2,
            8,
            inference,
            oc,
            conv_padding_method="zero",
            upscale_padding_method=None,
            padding_method_kwargs={},
            activation_function=jax.nn.relu,
            key=jax.random.PRNGKey(0),
        )

    for inference in (False, True):
        model = build(inference)
        assert (model.sr_rate, model.hidden_channels, model.output_crop) == (2, 8, oc)
        assert model.inference is inference
        assert model.activation_function is jax.nn.relu


@pytest.mark.parametrize("oc", [-1, 11, 2.0, True])
def test_invalid_output_crop(oc):
    with pytest.raises(ValueError, match="output_crop"):
        rvsr.RVSR(
            4,
            16,
            output_crop=oc,
            conv_padding_method="zero",
            upscale_padding_method=None,
            padding_method_kwargs={},
            key=jax.random.PRNGKey(0),
        )


def test_make_rvsr_rejects_bad_hpars():
    with pytest.raises(ValueError, match="unknown"):
        rvsr.make_rvsr(dict(CHEAP_HPARS, hiden_channels=3), key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="missing"):
        rvsr.make_rvsr({"hidden_channels": 16}, key=jax.random.PRNGKey(0))


# --- layers ------------------------------------------------------------------------------


def test_pixel_shuffle_layout():
    f, c, h, w = 3, 2, 4, 5
    x = jax.random.normal(jax.random.PRNGKey(0), (c * f * f, h, w))
    out = np.asarray(rvsr.PixelShuffle(f)(x))
    assert out.shape == (c, h * f, w * f)
    xn = np.asarray(x)
    for ci in range(c):
        for b1 in range(f):
            for b2 in range(f):
                # (c b1 b2) h w -> c (h b1) (w b2)
                np.testing.assert_array_equal(out[ci, b1::f, b2::f], xn[ci * f * f + b1 * f + b2])


def test_bilinear_upscale_crops_match_the_full_resize():
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 24, 30))
    full = rvsr.BilinearUpscaleLayer(4, 0)(x)
    assert full.shape == (3, 96, 120)
    for oc in (1, 4, 10):
        out = rvsr.BilinearUpscaleLayer(4, oc, "lp")(x)  # the method is ignored with oc > 0
        n = 4 * oc
        np.testing.assert_allclose(out, full[:, n:-n, n:-n], atol=1e-5)


def test_bilinear_upscale_pads_implicitly_by_replication():
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 16, 16))
    plain = rvsr.BilinearUpscaleLayer(4, 0)(x)
    replicated = rvsr.BilinearUpscaleLayer(4, 0, "repl")(x)
    zero = rvsr.BilinearUpscaleLayer(4, 0, "zero")(x)
    np.testing.assert_allclose(replicated, plain, atol=1e-5)
    assert np.abs(np.asarray(zero - plain)).max() > 0.1  # the padding method does act
    np.testing.assert_allclose(zero[:, 4:-4, 4:-4], plain[:, 4:-4, 4:-4], atol=1e-5)


def test_repconv_forms():
    # 16 channels: shares the compiled initialisers with the model builds.
    kw = dict(conv_padding_method="zero", padding_method_kwargs={}, key=jax.random.PRNGKey(0))
    inf_zero = rvsr.RepConv(16, inference=True, same_pad=True, **kw)
    assert inf_zero.padding is None and inf_zero.layers[0].padding == ((1, 1), (1, 1))
    inf_valid = rvsr.RepConv(16, inference=True, same_pad=False, **kw)
    assert inf_valid.padding is None and inf_valid.layers[0].padding == ((0, 0), (0, 0))
    inf_repl = rvsr.RepConv(16, inference=True, same_pad=True, **dict(kw, conv_padding_method="repl"))
    assert inf_repl.padding is not None and inf_repl.layers[0].padding == ((0, 0), (0, 0))
    train = rvsr.RepConv(16, inference=False, same_pad=True, **kw)
    assert train.padding is not None and len(train.layers) == 4
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 10, 12))
    assert inf_zero(x).shape == (16, 10, 12) and inf_repl(x).shape == (16, 10, 12)
    assert inf_valid(x).shape == (16, 8, 10)
    # Training form with zero padding vs. the same 3x3 paths applied with built-in padding.
    branch_1, branch_2, res_1x1, res_3x3 = train.layers
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))
    expected = branch_1(p) + branch_2(p) + x + res_1x1(x) + res_3x3(p)
    np.testing.assert_allclose(train(x), expected, atol=1e-5)
    valid = rvsr.RepConv(16, inference=False, same_pad=False, **kw)  # same key, same weights
    assert_same_leaves(leaves_of(valid), leaves_of(train))
    np.testing.assert_allclose(valid(x), train(x)[:, 1:-1, 1:-1], atol=1e-5)


# --- whole-model behaviour ---------------------------------------------------------------


@pytest.mark.slow
def test_output_crops_are_center_crops_of_the_oc0_output(cheap_models):
    # Dropping the padding of the last layers only removes the output pixels that the
    # padding of those layers reached, so with the same weights the oc k output is the oc 0
    # output without 4k pixels per side (at oc 10, the part no padding reaches at all).
    # This pins the mapping of stacked / unpadded blocks to file positions for every body
    # layout: full stack (1), stack + unpadded (2, 5, 8), unpadded only (9, 10).
    x = jax.random.normal(jax.random.PRNGKey(3), (1, 3, 26, 26))
    full = np.asarray(predict(*cheap_models[0], x))
    assert full.shape == (1, 3, 104, 104)
    for oc in (1, 2, 5, 8, 9, 10):
        out = np.asarray(predict(*cheap_models[oc], x))
        n = 4 * oc
        assert out.shape == (1, 3, 104 - 2 * n, 104 - 2 * n)
        np.testing.assert_allclose(out, full[..., n:-n, n:-n], atol=2e-4, rtol=1e-4, err_msg=f"oc {oc}")


@pytest.mark.parametrize("oc", ALL_OC)
def test_save_load_round_trip(cheap_models, tmp_path, oc):
    model, _ = cheap_models[oc]
    path = tmp_path / f"oc{oc}.eqx"
    rvsr.save_rvsr_weights(model, path)
    fresh, _ = rvsr.make_rvsr(CHEAP_HPARS, output_crop=oc, key=jax.random.PRNGKey(999))
    fresh0, _ = rvsr.make_rvsr(CHEAP_HPARS, output_crop=0, key=jax.random.PRNGKey(999))
    assert_same_leaves(leaves_of(rvsr.load_rvsr_weights(fresh, path, fresh0)), leaves_of(model))
    assert_same_leaves(leaves_of(rvsr.load_rvsr_weights(fresh, path)), leaves_of(model))
    loaded0 = rvsr.load_rvsr_weights(fresh0, path, fresh0)
    assert_same_leaves(leaves_of(loaded0), leaves_of(cheap_models[0][0]))
    # Saving the oc 0 model again gives the same file: the format does not depend on oc.
    path0 = tmp_path / "again.eqx"
    rvsr.save_rvsr_weights(loaded0, path0)
    assert path0.read_bytes() == path.read_bytes()


def test_load_rejects_wrong_files(cheap_models, tmp_path):
    model, _ = cheap_models[0]
    good = tmp_path / "good.eqx"
    rvsr.save_rvsr_weights(model, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.eqx"
    truncated.write_bytes(data[: len(data) // 2])
    trailing = tmp_path / "trailing.eqx"
    trailing.write_bytes(data + data[:100])
    for path in (truncated, trailing):
        with pytest.raises(ValueError):
            rvsr.load_rvsr_weights(model, path)
    # A file of the right length whose first leaf has another shape (another width).
    leaves = rvsr.rvsr_to_oc0_leaves(model)
    reshaped = tmp_path / "reshaped.eqx"
    eqx.tree_serialise_leaves(reshaped, [leaves[0].reshape(8, 6, 3, 3)] + leaves[1:])
    assert reshaped.stat().st_size == good.stat().st_size
    with pytest.raises(ValueError):
        rvsr.load_rvsr_weights(model, reshaped)
    with pytest.raises(ValueError, match="leaves"):
        rvsr.rvsr_from_oc0_leaves(model, leaves[:-1])


def test_get_intermediates(cheap_models):
    model, state = cheap_models[10]
    x48 = jax.ShapeDtypeStruct((3, 48, 48), jnp.float32)
    _, _, maps = jax.eval_shape(lambda x: model(x, state, get_intermediates=True), x48)
    assert [m.shape for m in maps] == [(16, s, s) for s in range(46, 29, -2)]

    @eqx.filter_jit
    def run(model, x):
        out, _, maps = model(x, state, get_intermediates=True)
        return out, maps, model.head(x), model.tail(maps[-1]) + model.upscale(x)

    x = jax.random.normal(jax.random.PRNGKey(3), (1, 3, 26, 26))
    out, maps, head, continued = run(model, x[0])
    assert len(maps) == 9
    np.testing.assert_array_equal(maps[0], head)
    # The last map is the body output after the long residual: the tail continues from it.
    np.testing.assert_allclose(out, continued, atol=1e-5)
    np.testing.assert_allclose(out, predict(model, state, x)[0], atol=1e-4)
    # oc 5: head (48), 3 of the 4 unpadded blocks (46, 44, 42), body output (40).
    model5, state5 = cheap_models[5]
    _, _, maps5 = jax.eval_shape(lambda x: model5(x, state5, get_intermediates=True), x48)
    assert [m.shape[-1] for m in maps5] == [48, 46, 44, 42, 40]
    for oc in (0, 1):
        m, s = cheap_models[oc]
        with pytest.raises(ValueError, match="get_intermediates"):
            jax.eval_shape(lambda x: m(x, s, get_intermediates=True), x48)


@pytest.mark.parametrize("method", ["zero", "lp"])
def test_inference_form_builds_and_runs(method):
    hpars = dict(LP2X3_HPARS, conv_padding_method=method)
    model, state = rvsr.make_rvsr(hpars, inference=True, key=jax.random.PRNGKey(0))
    # One 3x3 conv per RepConv: head 28n, 8 x (9n^2 + n + FFN 4n^2 + 3n), tail 9n^2 + n + 48(n + 1).
    n = 16
    assert rvsr.num_parameters(model) == 28 * n + 8 * (13 * n * n + 4 * n) + 9 * n * n + n + 48 * (n + 1)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 24, 24))
    out = predict(model, state, x)
    assert out.shape == (1, 3, 96, 96)
    assert bool(jnp.all(jnp.isfinite(out)))
    for oc in (1, 5, 10):
        model, state = rvsr.make_rvsr(hpars, inference=True, output_crop=oc, key=jax.random.PRNGKey(0))
        out = jax.eval_shape(lambda x: model(x, state)[0], jax.ShapeDtypeStruct((3, 48, 48), jnp.float32))
        assert out.shape == (3, 4 * (48 - 2 * oc), 4 * (48 - 2 * oc))
    with pytest.raises(ValueError, match="inference"):
        rvsr.rvsr_to_oc0_leaves(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "hpars, crops", [(CHEAP_HPARS, (0, 2, 9)), (LP2X3_HPARS, (0, 1, 5, 10))], ids=["zero", "lp2x3"]
)
def test_reparameterize_matches_training_form(hpars, crops):
    # Output crops covering every body and tail layout (all stacked, stacked + unpadded, all
    # unpadded; padded and unpadded tail) for both kinds of padding (zero folded into the
    # convolution, lp as a layer), with the reference weights so that all branches carry
    # real, distinct values. Every crop is a compilation; these fit the test-time budget.
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 3, 24, 24), minval=-1.0, maxval=0.2)
    for oc in crops:
        model, state = rvsr.load_rvsr(REFERENCE_WEIGHTS, hpars, output_crop=oc)
        fast = rvsr.reparameterize(model)
        assert fast.inference and not model.inference and len(leaves_of(fast)) < len(leaves_of(model))
        expected = np.asarray(predict(model, state, x))
        got = np.asarray(predict(fast, state, x))
        assert got.shape == expected.shape == (2, 3, 4 * (24 - 2 * oc), 4 * (24 - 2 * oc))
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * max(scale, 1.0), err_msg=f"oc {oc}")
    with pytest.raises(ValueError, match="already in the inference form"):
        rvsr.reparameterize(fast)
