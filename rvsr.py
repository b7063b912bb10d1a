"""RVSR super-resolution model (Conde et al. 2024), reimplemented in Equinox.

Every module acts on a single image of shape ``(channel, y, x)``; vmap over a batch.
The model is built with ``eqx.nn.make_with_state(RVSR)(...)`` and called as
``out, state = model(x, state)``.

The order of the array leaves of ``RVSR`` is the file format of the published trained
models (``save_rvsr_weights`` / ``load_rvsr_weights``), so field declaration order and the
use of the random keys must not change.

Output crop ``oc`` (0..10) trades padding for shrinking: with ``oc`` the model pads fewer
layers, so its output for a 48x48 input is ``4 * (48 - 2 * oc)`` pixels wide. At ``oc = 10``
no layer is padded and the output is exactly the part of the ``oc = 0`` output that the
padding cannot reach.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from padding import Padding2dLayer

MAX_OUTPUT_CROP = 10
NUM_BODY_BLOCKS = 8
# Array leaves in one RepViT block (training form): 6 + 6 + 2 + 2 in RepConv, 4 in FFN.
LEAVES_PER_BLOCK = 20
# Array leaves of the head conv (2) and the tail (RepConv 16 + 1x1 conv 2).
NUM_HEAD_TAIL_LEAVES = 20
NUM_SAVED_LEAVES = NUM_HEAD_TAIL_LEAVES + LEAVES_PER_BLOCK

MODEL_HPARS_KEYS = (
    "hidden_channels",
    "conv_padding_method",
    "upscale_padding_method",
    "padding_method_kwargs",
    "output_crop",
)

_SAME_PAD_1 = ((1, 1), (1, 1))


def _conv(in_channels: int, out_channels: int, kernel_size: int, key: PRNGKeyArray, padding: Any = 0) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, key=key)


def _crop(x: Array, n: int) -> Array:
    """``x`` of shape ``(channel, y, x)`` without ``n`` pixels on each side."""
    if n == 0:
        return x
    return x[:, n:-n, n:-n]


class RepConv(eqx.Module):
    """Re-parameterisable 3x3 convolution block; ``(n_feats, y, x) -> (n_feats, y', x')``.

    With ``same_pad`` the spatial size is kept (the 3x3 convolutions see the input padded by
    one pixel with ``conv_padding_method``); without, it shrinks by one pixel per side.
    The inference form is a single 3x3 convolution of the same receptive field; built
    directly it has fresh weights (the paper times inference with it), and
    :func:`reparameterize` gives it the folded weights of a trained model.
    """

    same_pad: bool = eqx.field(static=True)
    padding: Padding2dLayer | None
    layers: tuple
    inference: bool = eqx.field(static=True)

    def __init__(
        self,
        n_feats: int,
        ratio: int = 2,
        *,
        inference: bool,
        same_pad: bool,
        conv_padding_method: str | None,
        padding_method_kwargs: Mapping[str, Any],
        key: PRNGKeyArray,
    ):
        self.same_pad = same_pad
        self.inference = inference
        if (conv_padding_method == "zero" and inference) or not same_pad:
            # Zero padding in the inference form is folded into the convolution itself.
            self.padding = None
        else:
            self.padding = Padding2dLayer(_SAME_PAD_1, conv_padding_method, padding_method_kwargs)
        if inference:
            conv_padding = _SAME_PAD_1 if (conv_padding_method == "zero" and same_pad) else 0
            self.layers = (_conv(n_feats, n_feats, 3, key, conv_padding),)
        else:
            n, m = n_feats, n_feats * ratio
            k = jax.random.split(key, 8)
            branch_1 = eqx.nn.Sequential([_conv(n, m, 1, k[0]), _conv(m, m, 3, k[1]), _conv(m, n, 1, k[2])])
            branch_2 = eqx.nn.Sequential([_conv(n, m, 1, k[3]), _conv(m, m, 3, k[4]), _conv(m, n, 1, k[5])])
            res_conv1x1 = _conv(n, n, 1, k[7])
            res_conv3x3 = eqx.nn.Sequential([_conv(n, n, 3, k[6])])
            self.layers = (branch_1, branch_2, res_conv1x1, res_conv3x3)

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """``x``: ``(n_feats, y, x)`` -> ``(n_feats, y, x)`` or ``(n_feats, y - 2, x - 2)``."""
        if self.inference:
            if self.padding is not None:
                x = self.padding(x)
            return self.layers[0](x)
        branch_1, branch_2, res_conv1x1, res_conv3x3 = self.layers
        if self.same_pad:
            p = self.padding(x)
            return branch_1(p) + branch_2(p) + x + res_conv1x1(x) + res_conv3x3(p)
        # Unpadded: the 1x1 and identity paths are cut to the 3x3 paths' valid region.
        s = _crop(x, 1)
        return branch_1(x) + branch_2(x) + s + res_conv1x1(s) + res_conv3x3(x)


class FFN(eqx.Module):
    """Pointwise feed-forward block with a residual; ``(N, y, x) -> (N, y, x)``."""

    layers: eqx.nn.Sequential

    def __init__(self, N: int, activation_function: Callable[[Array], Array], key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.layers = eqx.nn.Sequential(
            [_conv(N, 2 * N, 1, k1), eqx.nn.Lambda(activation_function), _conv(2 * N, N, 1, k2)]
        )

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """``x``: ``(N, y, x)`` -> ``(N, y, x)``."""
        return self.layers(x) + x


class RepViT(eqx.Module):
    """One body block: RepConv then FFN; ``(N, y, x) -> (N, y, x)`` (same_pad) or
    ``(N, y - 2, x - 2)``."""

    layers: eqx.nn.Sequential

    def __init__(
        self,
        N: int,
        *,
        inference: bool,
        same_pad: bool,
        conv_padding_method: str | None,
        padding_method_kwargs: Mapping[str, Any],
        activation_function: Callable[[Array], Array],
        key: PRNGKeyArray,
    ):
        k1, k2 = jax.random.split(key)
        self.layers = eqx.nn.Sequential(
            [
                RepConv(
                    N,
                    inference=inference,
                    same_pad=same_pad,
                    conv_padding_method=conv_padding_method,
                    padding_method_kwargs=padding_method_kwargs,
                    key=k1,
                ),
                FFN(N, activation_function, k2),
            ]
        )

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """``x``: ``(N, y, x)`` -> ``(N, y, x)`` or ``(N, y - 2, x - 2)``."""
        return self.layers(x)


def _bilinear_resize(x: Array, factor: int) -> Array:
    c, h, w = x.shape
    return jax.image.resize(x, (c, h * factor, w * factor), method="bilinear")


class BilinearUpscaleLayer(eqx.Module):
    """Bilinear upscaling by ``factor`` (the model's skip path);
    ``(channel, y, x) -> (channel, factor * (y - 2 * output_crop), factor * (x - 2 * output_crop))``.

    Bilinear resizing pads implicitly by edge replication. With ``output_crop > 0`` that
    edge is never used: ``output_crop - 1`` input pixels are cut per side, and after
    resizing the ``factor`` output pixels per side that would depend on the edge handling.
    With ``output_crop == 0`` and a padding method, the input is padded by one pixel with it
    instead and the same ``factor`` output pixels are cut.
    """

    factor: int = eqx.field(static=True)
    output_crop: int = eqx.field(static=True)
    padding: Padding2dLayer | None

    def __init__(
        self,
        factor: int,
        output_crop: int,
        upscale_padding_method: str | None = None,
        padding_method_kwargs: Mapping[str, Any] = {},
    ):
        self.factor = factor
        self.output_crop = output_crop
        if output_crop == 0 and upscale_padding_method is not None:
            self.padding = Padding2dLayer(_SAME_PAD_1, upscale_padding_method, padding_method_kwargs)
        else:
            self.padding = None

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """``x``: ``(channel, y, x)``; see the class docstring for the output shape."""
        if self.output_crop > 0:
            return _crop(_bilinear_resize(_crop(x, self.output_crop - 1), self.factor), self.factor)
        if self.padding is None:
            return _bilinear_resize(x, self.factor)
        return _crop(_bilinear_resize(self.padding(x), self.factor), self.factor)


class PixelShuffle(eqx.Module):
    """Depth to space: ``(c * f * f, y, x) -> (c, y * f, x * f)``, i.e.
    ``(c b1 b2) h w -> c (h b1) (w b2)``."""

    factor: int = eqx.field(static=True)

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        """``x``: ``(c * factor**2, y, x)`` -> ``(c, y * factor, x * factor)``."""
        f = self.factor
        cff, h, w = x.shape
        if cff % (f * f):
            raise ValueError(f"PixelShuffle: channels {cff} not divisible by factor**2 = {f * f}")
        c = cff // (f * f)
        return x.reshape(c, f, f, h, w).transpose(0, 3, 1, 4, 2).reshape(c, h * f, w * f)


def _array_leaves(model: eqx.Module) -> list[Array]:
    """The array leaves of ``model`` in pytree order."""
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))


def _is_array_or_struct(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _with_array_leaves(module: Any, leaves: Sequence[Array], context: str = "") -> Any:
    """``module`` with its array (or shape-struct) leaves replaced by ``leaves``, in order."""
    params, static = eqx.partition(module, _is_array_or_struct)
    old, treedef = jax.tree_util.tree_flatten(params)
    if len(old) != len(leaves):
        raise ValueError(f"{context}the model has {len(old)} array leaves, got {len(leaves)}")
    for i, (o, n) in enumerate(zip(old, leaves)):
        if o.shape != n.shape:
            raise ValueError(f"{context}leaf {i} has shape {n.shape}, the model expects {o.shape}")
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, list(leaves)), static)


def _num_unpadded_blocks(output_crop: int) -> int:
    return min(max(output_crop - 1, 0), NUM_BODY_BLOCKS)


class RVSR(eqx.Module):
    """The RVSR model; ``(3, y, x) -> (3, sr_rate * (y - 2 * output_crop), sr_rate * (x - 2 * output_crop))``.

    Head conv, 8 RepViT blocks with a long residual, tail (RepConv, 1x1 conv, pixel
    shuffle) plus a bilinear upscale of the input. The same-padded body blocks are stored
    stacked (leading axis = block) and run with an unrolled ``jax.lax.scan``; the unpadded
    blocks differ in spatial size and are kept as a list.
    """

    head: eqx.nn.Sequential | eqx.nn.Conv2d
    tail: eqx.nn.Sequential
    upscale: BilinearUpscaleLayer
    body_repvits_same_pad: RepViT | None
    body_repvits_no_pad: list
    body_spatial_reduction: int = eqx.field(static=True)

    def __init__(
        self,
        sr_rate: int,
        hidden_channels: int,
        inference: bool = False,
        output_crop: int = 0,
        *,
        conv_padding_method: str | None,
        upscale_padding_method: str | None,
        padding_method_kwargs: Mapping[str, Any],
        activation_function: Callable[[Array], Array] = jax.nn.gelu,
        key: PRNGKeyArray,
    ):
        if (
            isinstance(output_crop, bool)
            or not isinstance(output_crop, int)
            or not (0 <= output_crop <= MAX_OUTPUT_CROP)
        ):
            raise ValueError(f"output_crop must be an int in 0..{MAX_OUTPUT_CROP}, got {output_crop!r}")
        keys = jax.random.split(key, 11)
        hc = hidden_channels
        if output_crop == MAX_OUTPUT_CROP:
            self.head = _conv(3, hc, 3, keys[0])
        else:
            self.head = eqx.nn.Sequential(
                [Padding2dLayer(_SAME_PAD_1, conv_padding_method, padding_method_kwargs), _conv(3, hc, 3, keys[0])]
            )

        def make_block(same_pad: bool, block_key: PRNGKeyArray) -> RepViT:
            return RepViT(
                hc,
                inference=inference,
                same_pad=same_pad,
                conv_padding_method=conv_padding_method,
                padding_method_kwargs=padding_method_kwargs,
                activation_function=activation_function,
                key=block_key,
            )

        num_no_pad = _num_unpadded_blocks(output_crop)
        num_same_pad = NUM_BODY_BLOCKS - num_no_pad
        body_keys = keys[1 : 1 + NUM_BODY_BLOCKS]
        # The stacked structure is what eqx.filter_vmap over the block constructor gives; it
        # is only traced here. The weights are initialised block by block and stacked, which
        # gives identical values (vmapped initialisation is elementwise) while sharing the
        # eager op compilations with the unbatched tail RepConv: building a model is then
        # several times faster than vmapped eager or jitted initialisation on a CPU.
        body_leaves = [jnp.stack(leaves) for leaves in zip(*(_array_leaves(make_block(True, k)) for k in body_keys))]
        if num_same_pad > 0:
            stack = eqx.filter_eval_shape(eqx.filter_vmap(lambda k: make_block(True, k)), body_keys[:num_same_pad])
            self.body_repvits_same_pad = _with_array_leaves(stack, [a[:num_same_pad] for a in body_leaves])
        else:
            self.body_repvits_same_pad = None
        self.body_repvits_no_pad = []
        for i in range(num_same_pad, NUM_BODY_BLOCKS):
            block = eqx.filter_eval_shape(make_block, False, body_keys[i])
            self.body_repvits_no_pad.append(_with_array_leaves(block, [a[i] for a in body_leaves]))
        self.body_spatial_reduction = num_no_pad

        self.tail = eqx.nn.Sequential(
            [
                RepConv(
                    hc,
                    inference=inference,
                    same_pad=(output_crop == 0),
                    conv_padding_method=conv_padding_method,
                    padding_method_kwargs=padding_method_kwargs,
                    key=keys[9],
                ),
                _conv(hc, 3 * sr_rate**2, 1, keys[10]),
                PixelShuffle(sr_rate),
            ]
        )
        self.upscale = BilinearUpscaleLayer(sr_rate, output_crop, upscale_padding_method, padding_method_kwargs)

    @property
    def output_crop(self) -> int:
        """The output crop ``oc`` this model was built with."""
        return self.upscale.output_crop

    @property
    def sr_rate(self) -> int:
        """The super-resolution factor: output pixels per input pixel along each axis."""
        return self.upscale.factor

    @property
    def hidden_channels(self) -> int:
        """The number of feature maps between the head and the tail."""
        return self.tail.layers[1].in_channels

    @property
    def inference(self) -> bool:
        """Whether the model is in the inference form (each RepConv one 3x3 convolution, as
        :func:`reparameterize` gives or ``make_rvsr(..., inference=True)`` builds)."""
        return self.tail.layers[0].inference

    @property
    def activation_function(self) -> Callable[[Array], Array]:
        """The activation function of the body blocks' feed-forward parts."""
        # RepViT -> Sequential[RepConv, FFN]; FFN -> Sequential[conv, Lambda(activation), conv].
        block = self.body_repvits_same_pad if self.body_repvits_same_pad is not None else self.body_repvits_no_pad[0]
        return block.layers.layers[1].layers.layers[1].fn

    def _run_same_pad_body(self, h: Array) -> Array:
        if self.body_repvits_same_pad is None:
            return h
        params, static = eqx.partition(self.body_repvits_same_pad, eqx.is_array)

        def step(carry: Array, block_params: Any) -> tuple[Array, None]:
            return eqx.combine(block_params, static)(carry), None

        # Unrolled: on XLA:CPU a convolution inside a loop body takes a slow generic path (the
        # inference form ran about 4 times slower as a rolled scan, the training gradient 2
        # times); unrolled, each block's convolutions get the fast kernels. Compile time stayed
        # about the same, as the stacked blocks still share one traced body.
        out, _ = jax.lax.scan(step, h, params, unroll=True)
        return out

    def __call__(
        self,
        x: Array,
        state: eqx.nn.State,
        key: PRNGKeyArray | None = None,
        get_intermediates: bool = False,
    ) -> tuple[Array, eqx.nn.State] | tuple[Array, eqx.nn.State, list[Array]]:
        """``x``: ``(3, y, x)`` -> ``(out, state)`` with ``out`` of shape
        ``(3, sr * (y - 2 oc), sr * (x - 2 oc))``.

        With ``get_intermediates`` (needs ``output_crop >= 2``) returns
        ``(out, state, maps)`` where ``maps`` are the head output ``(hc, y', x')``, the outputs
        of all unpadded body blocks but the last, and the body output after the long
        residual; with ``oc = 10`` and 48x48 input that is 9 maps of sizes 46, 44, ..., 30.
        ``key`` is accepted for interface compatibility; the model is deterministic.
        """
        if x.ndim != 3:
            raise ValueError(f"RVSR expects x of shape (channel, y, x), got shape {x.shape}")
        if get_intermediates and not self.body_repvits_no_pad:
            raise ValueError("get_intermediates needs unpadded body blocks (output_crop >= 2)")
        h = self.head(x)
        b = self._run_same_pad_body(h)
        intermediates = [h]
        for block in self.body_repvits_no_pad:
            b = block(b)
            intermediates.append(b)
        b = b + _crop(h, self.body_spatial_reduction)
        out = self.tail(b) + self.upscale(x)
        if get_intermediates:
            # The last unpadded block's output is replaced by the body output b.
            return out, state, intermediates[:-1] + [b]
        return out, state


def predict(model: eqx.Module, state: eqx.nn.State, inputs: Array, key: PRNGKeyArray | None = None) -> Array:
    """``model`` applied to each image of the batch ``inputs`` ``(B, 3, h, w)``: its outputs
    ``(B, 3, h', w')`` (the state is shared, not updated: RVSR has none to update)."""
    return jax.vmap(lambda x: model(x, state, key=key)[0])(inputs)


def num_parameters(model: eqx.Module) -> int:
    """Total number of array elements (parameters) in ``model``."""
    return sum(int(leaf.size) for leaf in _array_leaves(model))


def _split_leaves(model: RVSR) -> tuple[list[Array], list[Array] | None, list[list[Array]]]:
    """Array leaves of ``model`` as (head and tail, stacked same-pad blocks, unpadded blocks)."""
    leaves = _array_leaves(model)
    num_no_pad = len(model.body_repvits_no_pad)
    num_stacked = 0 if model.body_repvits_same_pad is None else LEAVES_PER_BLOCK
    expected = NUM_HEAD_TAIL_LEAVES + num_stacked + LEAVES_PER_BLOCK * num_no_pad
    if len(leaves) != expected:
        raise ValueError(
            f"RVSR weights: expected {expected} array leaves, found {len(leaves)}; not an RVSR in the training form"
        )
    head_tail = leaves[:NUM_HEAD_TAIL_LEAVES]
    stacked = leaves[NUM_HEAD_TAIL_LEAVES : NUM_HEAD_TAIL_LEAVES + num_stacked] or None
    rest = leaves[NUM_HEAD_TAIL_LEAVES + num_stacked :]
    blocks = [rest[i * LEAVES_PER_BLOCK : (i + 1) * LEAVES_PER_BLOCK] for i in range(num_no_pad)]
    return head_tail, stacked, blocks


def rvsr_to_oc0_leaves(model: RVSR) -> list[Array]:
    """The 40 array leaves of ``model`` in the layout of an ``oc = 0`` model (the file format):
    head and tail leaves, then the 20 body leaves stacked over all 8 blocks."""
    if model.inference:
        raise ValueError("RVSR weights: the inference form has no file format")
    head_tail, stacked, blocks = _split_leaves(model)
    body = []
    for i in range(LEAVES_PER_BLOCK):
        parts = ([] if stacked is None else [stacked[i]]) + [block[i][None] for block in blocks]
        body.append(jnp.concatenate(parts, axis=0))
    return head_tail + body


def rvsr_from_oc0_leaves(target_model: RVSR, leaves: Sequence[Array]) -> RVSR:
    """``target_model`` (any output crop) with its weights replaced by ``leaves`` in the
    ``oc = 0`` layout of :func:`rvsr_to_oc0_leaves`."""
    if len(leaves) != NUM_SAVED_LEAVES:
        raise ValueError(f"RVSR weights: expected {NUM_SAVED_LEAVES} leaves, got {len(leaves)}")
    head_tail, body = list(leaves[:NUM_HEAD_TAIL_LEAVES]), list(leaves[NUM_HEAD_TAIL_LEAVES:])
    num_no_pad = len(target_model.body_repvits_no_pad)
    num_same_pad = NUM_BODY_BLOCKS - num_no_pad
    new_leaves = list(head_tail)
    if target_model.body_repvits_same_pad is not None:
        new_leaves += [leaf[:num_same_pad] for leaf in body]
    for j in range(num_no_pad):
        new_leaves += [leaf[num_same_pad + j] for leaf in body]
    return _with_array_leaves(target_model, new_leaves, "RVSR weights: ")


def save_rvsr_weights(model: RVSR, path: str | Path) -> None:
    """Write the weights of ``model`` (any output crop) as if it had ``oc = 0``: the 40 leaves
    of :func:`rvsr_to_oc0_leaves`, with ``eqx.tree_serialise_leaves``."""
    eqx.tree_serialise_leaves(path, rvsr_to_oc0_leaves(model))


def load_rvsr_weights(target_model: RVSR, path: str | Path, oc0_model: RVSR | None = None) -> RVSR:
    """``target_model`` (any output crop) with the weights read from ``path`` (written by
    :func:`save_rvsr_weights`). ``oc0_model`` (same hyperparameters, ``oc = 0``) gives the
    expected leaf shapes; when omitted they are derived from ``target_model``.
    Raises ``ValueError`` when the file does not hold exactly such weights."""
    if oc0_model is None:
        like = rvsr_to_oc0_leaves(target_model)
    else:
        like = _array_leaves(oc0_model)
        if len(like) != NUM_SAVED_LEAVES:
            raise ValueError("load_rvsr_weights: oc0_model must be an oc 0 RVSR in the training form")
    expected_size = _serialised_size(like)
    size = os.path.getsize(path)
    if size < expected_size:
        raise ValueError(
            f"{path}: truncated RVSR weights file ({size} bytes of {expected_size}); an incomplete download or copy? "
            "fetch or export it again"
        )
    with open(path, "rb") as f:
        try:
            leaves = eqx.tree_deserialise_leaves(f, like)
        except Exception as e:  # numpy and equinox raise several types for a malformed file
            raise ValueError(f"{path}: not RVSR weights of the expected shapes ({type(e).__name__}: {e})") from e
        if f.read(1):
            raise ValueError(f"{path}: trailing data after the RVSR weights; wrong model file?")
    return rvsr_from_oc0_leaves(target_model, leaves)


def _serialised_size(leaves: list) -> int:
    """The exact size of a file of ``leaves`` written by :func:`save_rvsr_weights` (one .npy
    record per array), found by writing them to memory: the weights are about 1 MB, and this
    way the size follows whatever header layout numpy writes. A complete file ends right
    after its last record."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, leaves)
    return buffer.tell()


def make_rvsr(
    model_hpars: Mapping[str, Any],
    sr_rate: int = 4,
    *,
    inference: bool = False,
    output_crop: int | None = None,
    key: PRNGKeyArray,
) -> tuple[RVSR, eqx.nn.State]:
    """Build ``(model, state)`` from a ``model_hpars`` dict (as ``presets.py`` writes it): keys
    ``conv_padding_method``, ``upscale_padding_method``, ``padding_method_kwargs`` (required),
    ``hidden_channels`` (default 16) and ``output_crop`` (default 0). ``output_crop``, when
    given, overrides the dict's value (e.g. to build the ``oc = 0`` form of an ``oc`` preset)."""
    unknown = set(model_hpars) - set(MODEL_HPARS_KEYS)
    if unknown:
        raise ValueError(f"model_hpars: unknown keys {sorted(unknown)}; allowed {list(MODEL_HPARS_KEYS)}")
    missing = {"conv_padding_method", "upscale_padding_method", "padding_method_kwargs"} - set(model_hpars)
    if missing:
        raise ValueError(f"model_hpars: missing keys {sorted(missing)}")
    oc = model_hpars.get("output_crop", 0) if output_crop is None else output_crop
    return eqx.nn.make_with_state(RVSR)(
        sr_rate,
        model_hpars.get("hidden_channels", 16),
        inference,
        oc,
        conv_padding_method=model_hpars["conv_padding_method"],
        upscale_padding_method=model_hpars["upscale_padding_method"],
        padding_method_kwargs=dict(model_hpars["padding_method_kwargs"]),
        key=key,
    )


def load_rvsr(
    path: str | Path,
    model_hpars: Mapping[str, Any],
    sr_rate: int = 4,
    *,
    output_crop: int | None = None,
    key: PRNGKeyArray | None = None,
) -> tuple[RVSR, eqx.nn.State]:
    """``(model, state)`` with the weights of a published / exported model file, built at
    ``output_crop`` (default: the one in ``model_hpars``). Any output crop can load any file,
    since files are stored in the ``oc = 0`` layout; e.g. evaluations load oc presets as oc 0
    or oc 10 models. ``key`` only seeds the (overwritten) initial weights."""
    key = jax.random.PRNGKey(0) if key is None else key
    model, state = make_rvsr(model_hpars, sr_rate, output_crop=output_crop, key=key)
    oc0_model, _ = make_rvsr(model_hpars, sr_rate, output_crop=0, key=key)
    return load_rvsr_weights(model, path, oc0_model), state


# ----------------------------------------------------------------------------------------------
# Re-parameterisation: the fast inference form with the trained weights

# Array leaves of one RepConv block in the training form, in pytree order: branch_1 (three
# convolutions, weight and bias each), branch_2 (the same), res_conv1x1, res_conv3x3.
_REPCONV_LEAVES = 16


def _fold_repconv_leaves(leaves: Sequence[Array]) -> tuple[Array, Array]:
    """The single 3x3 convolution ``(weight (n, n, 3, 3), bias (n, 1, 1))`` equal to a
    training-form RepConv given by its 16 array leaves (see ``RepConv``). Leaves may carry
    leading block axes (the stacked body), which the result keeps.

    Every path of the block is linear up to its sum, so it is one 3x3 convolution:
    a branch ``1x1 (W1, b1) -> 3x3 (W3, b3) -> 1x1 (W2, b2)`` is the 3x3 kernel
    ``W2 W3 W1`` with bias ``W2 (sum over taps of W3 b1 + b3) + b2``. The bias ``b1`` of
    the first 1x1 convolution is present at every position the 3x3 sees, padded positions
    included (the 1x1 convolution acts on the already padded map), so folding it into the
    bias is exact for every padding method, zero padding too. The 1x1 residual and the
    identity add to the centre tap. Computed in float64, returned in the leaves' dtype.
    """
    as64 = [np.asarray(leaf, dtype=np.float64) for leaf in leaves]
    dtype = leaves[0].dtype
    weight = 0.0
    bias = 0.0
    for start in (0, 6):  # branch_1, branch_2
        w1, b1, w3, b3, w2, b2 = as64[start : start + 6]
        # w1: (..., m, n, 1, 1), w3: (..., m, m, 3, 3), w2: (..., n, m, 1, 1); biases (..., c, 1, 1).
        weight = weight + np.einsum("...ob,...bayx,...ai->...oiyx", w2[..., 0, 0], w3, w1[..., 0, 0])
        inner_bias = np.einsum("...bayx,...a->...b", w3, b1[..., 0, 0]) + b3[..., 0, 0]
        bias = bias + np.einsum("...ob,...b->...o", w2[..., 0, 0], inner_bias) + b2[..., 0, 0]
    w_res1, b_res1, w_res3, b_res3 = as64[12:16]
    n = w_res1.shape[-3]
    centre = w_res1[..., 0, 0] + np.eye(n)  # the 1x1 residual and the identity
    weight = weight + w_res3
    weight[..., 1, 1] += centre
    bias = bias + b_res1[..., 0, 0] + b_res3[..., 0, 0]
    return jnp.asarray(weight, dtype=dtype), jnp.asarray(bias[..., None, None], dtype=dtype)


def _model_padding_options(model: RVSR) -> tuple[str | None, dict[str, Any], str | None]:
    """``(conv_padding_method, padding_method_kwargs, upscale_padding_method)`` of a
    training-form model, read from its padding layers (an ``oc = 10`` model has none in its
    convolutions, and then the convolution padding method is irrelevant)."""
    conv_layer = None
    if isinstance(model.head, eqx.nn.Sequential):
        conv_layer = model.head.layers[0]
    upscale_layer = model.upscale.padding
    layer = conv_layer or upscale_layer
    kwargs = {} if layer is None else dict(layer.padding_method_kwargs)
    return (
        (None if conv_layer is None else conv_layer.mode),
        kwargs,
        (None if upscale_layer is None else upscale_layer.mode),
    )


def reparameterize(model: RVSR) -> RVSR:
    """The inference form of a training-form ``model`` (as ``make_rvsr(..., inference=True)``
    builds it) with every RepConv block folded into its one 3x3 convolution; the other
    weights are copied. Its outputs equal ``model``'s up to float rounding, at any output crop;
    it has about half the convolutions to run (see ``bench_superresolve.py``).

    This is RVSR's structural re-parameterisation (Conde et al. 2024), used by the paper's
    timing runs in its inference form; here the form also gets the trained weights.
    """
    if model.inference:
        raise ValueError("reparameterize: the model is already in the inference form")
    head_tail, stacked, blocks = _split_leaves(model)
    conv_method, kwargs, upscale_method = _model_padding_options(model)
    skeleton = eqx.filter_eval_shape(
        RVSR,
        model.sr_rate,
        model.hidden_channels,
        True,
        model.output_crop,
        conv_padding_method=conv_method or "zero",
        upscale_padding_method=upscale_method,
        padding_method_kwargs=kwargs,
        activation_function=model.activation_function,
        key=jax.random.PRNGKey(0),
    )

    def block_leaves(leaves: Sequence[Array]) -> list[Array]:
        # RepConv (16 leaves) folded to 2, then the FFN's 4 leaves unchanged.
        return [*_fold_repconv_leaves(leaves[:_REPCONV_LEAVES]), *leaves[_REPCONV_LEAVES:]]

    # Training leaf order: head (2), tail RepConv (16), tail 1x1 (2), stacked body, unpadded blocks.
    new_leaves = [
        *head_tail[:2],
        *_fold_repconv_leaves(head_tail[2 : 2 + _REPCONV_LEAVES]),
        *head_tail[2 + _REPCONV_LEAVES :],
    ]
    if stacked is not None:
        new_leaves += block_leaves(stacked)
    for block in blocks:
        new_leaves += block_leaves(block)
    return _with_array_leaves(skeleton, new_leaves, "reparameterize: ")
