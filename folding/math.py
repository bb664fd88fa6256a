"""The BatchNormalization folding formulas, on plain numpy arrays.

At inference a BatchNormalization layer computes, per channel,

    y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta
      = x * scale + shift
    scale = gamma / sqrt(moving_variance + epsilon)
    shift = beta - moving_mean * scale

so it is an affine map that can be merged into the linear layer beside it.
Every function here takes arrays and returns new arrays; nothing is modified
in place. Arithmetic is done in float64 and the results keep the dtype of the
weights they replace. A missing bias is zeros, a missing gamma ones, a missing
beta zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchNormParams:
    """The four trained arrays of one BatchNormalization layer, plus epsilon."""

    moving_mean: np.ndarray
    moving_variance: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    epsilon: float

    @property
    def channels(self) -> int:
        return int(self.moving_mean.shape[0])

    def scale(self) -> np.ndarray:
        """``gamma / sqrt(moving_variance + epsilon)`` in float64."""
        gamma = _or(self.gamma, 1.0, self.channels)
        variance = self.moving_variance.astype(np.float64)
        return gamma / np.sqrt(variance + self.epsilon)

    def shift(self) -> np.ndarray:
        """``beta - moving_mean * scale`` in float64."""
        beta = _or(self.beta, 0.0, self.channels)
        return beta - self.moving_mean.astype(np.float64) * self.scale()


def _or(array: np.ndarray | None, fill: float, channels: int) -> np.ndarray:
    if array is None:
        return np.full(channels, fill, dtype=np.float64)
    return array.astype(np.float64)


def _bias_or_zeros(bias: np.ndarray | None, channels: int, dtype: np.dtype) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, dtype=dtype)
    return bias


def fold_into_preceding(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    bn: BatchNormParams,
    output_axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a BatchNormalization into the linear layer that feeds it.

    ``W' = W * scale`` along the kernel's output-channel axis and
    ``b' = (b - moving_mean) * scale + beta``.

    ``output_axis`` is the kernel axis that indexes output channels: -1 for
    Dense, Conv and the pointwise kernel of SeparableConv, -2 for the Keras
    ConvTranspose kernels ``(*spatial, out, in)``.
    """
    scale = bn.scale()
    if kernel.shape[output_axis] != scale.shape[0]:
        raise ValueError(
            f"kernel axis {output_axis} has {kernel.shape[output_axis]} channels; "
            f"the BatchNormalization has {scale.shape[0]}"
        )
    broadcast = [1] * kernel.ndim
    broadcast[output_axis] = -1
    folded_kernel = kernel.astype(np.float64) * scale.reshape(broadcast)
    bias = _bias_or_zeros(bias, scale.shape[0], kernel.dtype)
    beta = _or(bn.beta, 0.0, bn.channels)
    folded_bias = (bias.astype(np.float64) - bn.moving_mean.astype(np.float64)) * scale + beta
    return folded_kernel.astype(kernel.dtype), folded_bias.astype(bias.dtype)


def fold_into_preceding_depthwise(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    bn: BatchNormParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a BatchNormalization into a depthwise convolution before it.

    The Keras depthwise kernel is ``(*spatial, in_channels, multiplier)`` and
    output channel ``i * multiplier + j`` comes from ``kernel[..., i, j]``.
    """
    in_channels, multiplier = kernel.shape[-2], kernel.shape[-1]
    if in_channels * multiplier != bn.channels:
        raise ValueError(
            f"depthwise kernel makes {in_channels * multiplier} channels; "
            f"the BatchNormalization has {bn.channels}"
        )
    scale = bn.scale().reshape(in_channels, multiplier)
    folded_kernel = kernel.astype(np.float64) * scale
    flat_kernel = kernel.reshape(*kernel.shape[:-2], in_channels * multiplier)
    _, folded_bias = fold_into_preceding(flat_kernel, bias, bn, output_axis=-1)
    return folded_kernel.astype(kernel.dtype), folded_bias


def fold_affine_into_following(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    input_axis: int = -2,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a BatchNormalization into the linear layer that consumes it.

    With ``x' = x * scale + shift`` (``BatchNormParams.scale()`` / ``.shift()``)
    feeding ``y = x' K + b``: ``K' = diag(scale) K`` and ``b' = b + shift K``.

    ``input_axis`` is the kernel's input-channel axis (-2 for Dense and Conv).
    For a Conv kernel the shift is summed over every spatial tap, which is
    exact only with ``valid`` padding. When a Flatten sits between the two
    layers, ``scale`` and ``shift`` are given per flattened element.
    """
    if kernel.shape[input_axis] != scale.shape[0]:
        raise ValueError(
            f"kernel axis {input_axis} has {kernel.shape[input_axis]} input channels; "
            f"the BatchNormalization gives {scale.shape[0]}"
        )
    output_channels = kernel.shape[-1]
    wide_kernel = kernel.astype(np.float64)
    broadcast = [1] * kernel.ndim
    broadcast[input_axis] = -1
    folded_kernel = wide_kernel * scale.reshape(broadcast)
    moved = np.moveaxis(wide_kernel, input_axis, -2)
    taps = moved.reshape(-1, moved.shape[-2], output_channels)
    bias = _bias_or_zeros(bias, output_channels, kernel.dtype)
    folded_bias = bias.astype(np.float64) + np.einsum("tio,i->o", taps, shift)
    return folded_kernel.astype(kernel.dtype), folded_bias.astype(bias.dtype)


def affine_as_batch_norm(scale: np.ndarray, shift: np.ndarray) -> BatchNormParams:
    """A per-channel ``y = x * scale + shift`` (an exporter's Mul / Add / Sub) as the
    BatchNormalization that computes it: mean 0, variance 1, epsilon 0, so that
    ``BatchNormParams.scale()`` is ``scale`` and ``.shift()`` is ``shift`` exactly."""
    scale = np.asarray(scale, np.float64)
    return BatchNormParams(
        np.zeros_like(scale), np.ones_like(scale), scale, np.asarray(shift, np.float64), 0.0
    )


def channel_slice(bn: BatchNormParams, start: int, stop: int) -> BatchNormParams:
    """The BatchNormalization of channels ``start:stop`` only (a BN after a Concat is
    one BN per concatenated input)."""

    def part(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[start:stop]

    return BatchNormParams(
        bn.moving_mean[start:stop],
        bn.moving_variance[start:stop],
        part(bn.gamma),
        part(bn.beta),
        bn.epsilon,
    )


def fold_into_preceding_grouped_transpose(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    bn: BatchNormParams,
    groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a BatchNormalization into the ONNX ``ConvTranspose`` before it.

    Its kernel is ``(in, out / groups, *k)``: output channel ``g * out/groups + j``
    comes from ``kernel[g-th block of in, j]``, so the kernel is viewed as
    ``(in / groups, groups * out/groups, *k)`` and folded along axis 1.
    """
    inputs, per_group, *taps = kernel.shape
    blocks = kernel.reshape(groups, inputs // groups, per_group, *taps)
    flat = np.moveaxis(blocks, 0, 1).reshape(inputs // groups, groups * per_group, *taps)
    folded, folded_bias = fold_into_preceding(flat, bias, bn, output_axis=1)
    unflat = folded.reshape(inputs // groups, groups, per_group, *taps)
    return np.moveaxis(unflat, 1, 0).reshape(kernel.shape), folded_bias


def fold_identity_branch(
    kernel: np.ndarray,
    bias: np.ndarray | None,
    bn: BatchNormParams,
    groups: int,
    centre: tuple[int, ...],
    sign: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge a BatchNormalization of a convolution's own input into that convolution,
    where the two are added (RepVGG's identity branch: ``conv(x) + bn(x)``; ``sign``
    -1: subtracted, FastViT's ``mixer(x) - norm(x)``).

    ``bn(x) = x * scale + shift`` is a convolution whose kernel is ``scale`` on the
    channel's own tap ``centre`` and zero elsewhere, so ``W'[c, c % (C / groups),
    *centre] = W[c, c % (C / groups), *centre] + sign * scale[c]`` and
    ``b' = b + sign * shift``. ``kernel``: ``[out, in / groups, *k]`` with ``out == in``."""
    scale, shift = sign * bn.scale(), sign * bn.shift()
    channels = kernel.shape[0]
    per_group = channels // groups
    folded_kernel = kernel.astype(np.float64)
    for channel in range(channels):
        folded_kernel[(channel, channel % per_group, *centre)] += scale[channel]
    bias = _bias_or_zeros(bias, channels, kernel.dtype)
    folded_bias = bias.astype(np.float64) + shift
    return folded_kernel.astype(kernel.dtype), folded_bias.astype(bias.dtype)
