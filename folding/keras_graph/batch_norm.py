"""A Keras BatchNormalization's numbers, as ``folding.math`` and the report take them."""

from __future__ import annotations

import numpy as np
from keras import layers

from folding import math
from folding.report import BatchNormStats


def batch_norm_params(bn: layers.BatchNormalization) -> math.BatchNormParams:
    return math.BatchNormParams(
        moving_mean=np.asarray(bn.moving_mean.numpy()),
        moving_variance=np.asarray(bn.moving_variance.numpy()),
        gamma=np.asarray(bn.gamma.numpy()) if bn.scale else None,
        beta=np.asarray(bn.beta.numpy()) if bn.center else None,
        epsilon=float(bn.epsilon),
    )


def batch_norm_stats(params: math.BatchNormParams) -> BatchNormStats:
    return BatchNormStats.of(params, params.scale())
