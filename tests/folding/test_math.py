"""The folding formulas against a float64 reference of BatchNormalization itself."""

import numpy as np
import pytest

from folding import math

RNG = np.random.default_rng(0)


def make_bn(channels, gamma=True, beta=True, epsilon=1e-3, variance=(0.1, 2.0)):
    return math.BatchNormParams(
        moving_mean=RNG.normal(0, 2, channels).astype(np.float32),
        moving_variance=RNG.uniform(*variance, channels).astype(np.float32),
        gamma=RNG.normal(1, 0.5, channels).astype(np.float32) if gamma else None,
        beta=RNG.normal(0, 1, channels).astype(np.float32) if beta else None,
        epsilon=epsilon,
    )


def batch_norm(x, bn, axis=-1):
    shape = [1] * x.ndim
    shape[axis] = -1
    gamma = np.ones(bn.channels) if bn.gamma is None else bn.gamma.astype(np.float64)
    beta = np.zeros(bn.channels) if bn.beta is None else bn.beta.astype(np.float64)
    mean = bn.moving_mean.astype(np.float64).reshape(shape)
    variance = bn.moving_variance.astype(np.float64).reshape(shape)
    return gamma.reshape(shape) * (x - mean) / np.sqrt(variance + bn.epsilon) + beta.reshape(shape)


@pytest.mark.parametrize("gamma", [True, False])
@pytest.mark.parametrize("beta", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_backward(gamma, beta, with_bias):
    bn = make_bn(5, gamma, beta, epsilon=1e-2)
    kernel = RNG.normal(size=(7, 5)).astype(np.float32)
    bias = RNG.normal(size=5).astype(np.float32) if with_bias else None
    x = RNG.normal(size=(11, 7))
    expected = batch_norm(x @ kernel + (0 if bias is None else bias), bn)
    new_kernel, new_bias = math.fold_into_preceding(kernel, bias, bn)
    assert new_kernel.dtype == np.float32 and new_bias.dtype == np.float32
    np.testing.assert_allclose(x @ new_kernel + new_bias, expected, rtol=1e-5, atol=1e-5)


def test_inputs_are_not_modified():
    bn = make_bn(3)
    kernel = RNG.normal(size=(2, 3)).astype(np.float32)
    bias = RNG.normal(size=3).astype(np.float32)
    before = kernel.copy(), bias.copy()
    math.fold_into_preceding(kernel, bias, bn)
    np.testing.assert_array_equal(kernel, before[0])
    np.testing.assert_array_equal(bias, before[1])


def test_transpose_kernel_scales_axis_minus_two():
    bn = make_bn(4)
    kernel = RNG.normal(size=(3, 3, 4, 6)).astype(np.float64)  # (kh, kw, out, in)
    new_kernel, _ = math.fold_into_preceding(kernel, None, bn, output_axis=-2)
    np.testing.assert_allclose(new_kernel, kernel * bn.scale()[None, None, :, None])


def test_depthwise_channel_order_is_i_times_multiplier_plus_j():
    bn = make_bn(6)
    kernel = RNG.normal(size=(3, 3, 2, 3))  # in=2, multiplier=3
    new_kernel, new_bias = math.fold_into_preceding_depthwise(kernel, None, bn)
    scale = bn.scale()
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(new_kernel[..., i, j], kernel[..., i, j] * scale[i * 3 + j])
    np.testing.assert_allclose(new_bias, bn.shift(), rtol=1e-6)


def test_depthwise_without_bias_keeps_the_kernel_dtype():
    bn = make_bn(6)
    kernel = RNG.normal(size=(3, 3, 2, 3)).astype(np.float32)
    new_kernel, new_bias = math.fold_into_preceding_depthwise(kernel, None, bn)
    assert new_kernel.dtype == np.float32 and new_bias.dtype == np.float32
    np.testing.assert_allclose(new_bias, bn.shift(), rtol=1e-6)


def test_dense_forward():
    bn = make_bn(7)
    kernel = RNG.normal(size=(7, 4)).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)
    x = RNG.normal(size=(9, 7))
    expected = batch_norm(x, bn) @ kernel + bias
    new_kernel, new_bias = math.fold_affine_into_following(kernel, bias, bn.scale(), bn.shift())
    np.testing.assert_allclose(x @ new_kernel + new_bias, expected, rtol=1e-5, atol=1e-5)


def test_forward_through_flatten_tiles_in_channels_last_order():
    bn = make_bn(3)
    kernel = RNG.normal(size=(2 * 2 * 3, 5))
    x = RNG.normal(size=(4, 2, 2, 3))
    expected = batch_norm(x, bn).reshape(4, -1) @ kernel
    new_kernel, new_bias = math.fold_affine_into_following(
        kernel, None, np.tile(bn.scale(), 4), np.tile(bn.shift(), 4)
    )
    np.testing.assert_allclose(x.reshape(4, -1) @ new_kernel + new_bias, expected, atol=1e-9)


def test_valid_conv_forward_sums_the_shift_over_every_tap():
    bn = make_bn(2)
    kernel = RNG.normal(size=(3, 2, 4))  # (k, in, out): a 1-D valid conv
    x = RNG.normal(size=(5, 2))

    def conv(inputs, weights, bias):
        return np.stack(
            [np.einsum("ki,kio->o", inputs[t : t + 3], weights) + bias for t in range(3)]
        )

    expected = conv(batch_norm(x, bn), kernel, np.zeros(4))
    new_kernel, new_bias = math.fold_affine_into_following(kernel, None, bn.scale(), bn.shift())
    np.testing.assert_allclose(conv(x, new_kernel, new_bias), expected, atol=1e-9)


def test_scale_reads_like_the_formula():
    bn = make_bn(4, epsilon=1e-5, variance=(1e-12, 1e-10))
    expected = bn.gamma.astype(np.float64) / np.sqrt(bn.moving_variance.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(bn.scale(), expected)


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match="channels"):
        math.fold_into_preceding(np.ones((3, 4)), None, make_bn(5))
