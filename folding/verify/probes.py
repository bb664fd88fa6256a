"""Probe inputs for verification: what the model expects, where it says so.

Standard normal rows test nothing when a model expects pixels in [0, 255] (its
first Normalization or BatchNormalization then squashes them into a saturated
softmax). So, per input, the first layer that says what it expects decides:

* a ``Normalization`` layer: its mean and variance;
* a ``Rescaling`` layer: the range that it maps onto [0, 1], e.g. 0..255;
* a ``BatchNormalization`` straight on the input: its moving mean and variance;
* a linear ``Dense``/``Conv`` feeding a ``BatchNormalization``: rows scaled so
  that the BatchNormalization sees its moving variance (on average);
* an ``Embedding``: valid ids; other integer inputs: the dtype's small range.

Otherwise rows are standard normal. A user's ``.npy``/``.npz`` replaces all this.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from folding.errors import ModelLoadError, ProbeError
from folding.options import VerifyOptions
from folding.specs import InputSpec

if TYPE_CHECKING:  # the Keras graph; this module is also used without Keras (ONNX files)
    from folding.keras_graph.graph import Call, Graph

DEFAULT_SAMPLES = VerifyOptions.samples
DYNAMIC_DIM_PROBE = 64  # for a dimension the model leaves open: deep image nets need room
# and for an open dimension of an integer or boolean input (token ids, a padding mask): a
# sequence, which a position embedding bounds (keras-hub's text backbones: 512, tiny ones 8)
DYNAMIC_SEQUENCE_PROBE = 8
PROBE_BUDGET_MACS = 1e10  # multiply-accumulates per verification run
MIN_SAMPLES = 2


def sample_count(graph: Graph, requested: int) -> int:
    """``requested`` rows, fewer for a large network (but at least ``MIN_SAMPLES``)
    so that verifying it takes about as long as a small one."""
    return samples_within_budget(multiply_accumulates(graph), requested)


def samples_within_budget(macs: int, requested: int) -> int:
    """``requested`` rows, fewer when ``macs`` per row would take them over
    ``PROBE_BUDGET_MACS`` (but at least ``MIN_SAMPLES``)."""
    budget = int(PROBE_BUDGET_MACS // max(macs, 1))
    return max(min(requested, budget), min(requested, MIN_SAMPLES))


def multiply_accumulates(graph: Graph) -> int:
    """Rough per-row MACs of the Dense and convolution layers."""
    total = 0
    for call in graph.calls:
        kernel = getattr(call.layer, "kernel", None)
        if kernel is None:
            kernel = getattr(call.layer, "pointwise_kernel", None)
        if kernel is None or not call.outputs:
            continue
        out_shape = graph.shapes.get(call.outputs[0], ())
        positions = int(np.prod([d or DYNAMIC_DIM_PROBE for d in out_shape[1:-1]] or [1]))
        total += positions * int(np.prod(kernel.shape))
    return total


def probe_inputs(inputs: Sequence[InputSpec], **options: Any) -> list[np.ndarray]:
    """The probe arrays of ``make_probes`` (same options), without where they came from."""
    return make_probes(inputs, **options)[0]


def make_probes(
    inputs: Sequence[InputSpec],
    samples: int = DEFAULT_SAMPLES,
    user_path: Path | None = None,
    seed: int = 0,
    graph: Graph | None = None,
) -> tuple[list[np.ndarray], str]:
    """Probe arrays, one per input, and a few words on where they came from."""
    if user_path is not None:
        return load_user_probes(inputs, Path(user_path)), "user-supplied"
    rng = np.random.default_rng(seed)
    arrays, sources = [], []
    consumers = graph.consumers() if graph is not None else {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        open_size = DYNAMIC_DIM_PROBE if dtype.kind == "f" else DYNAMIC_SEQUENCE_PROBE
        shape = [samples] + [open_size if d is None else d for d in spec.shape[1:]]
        users = consumers.get(spec.id, [])
        array, source = _probe_for(spec, shape, users, graph, rng)
        arrays.append(array)
        sources.append(source)
    described = sorted(set(sources))
    return arrays, ", ".join(described)


def _probe_for(
    spec: InputSpec, shape: list[int], users: list[Call], graph: Graph | None, rng: Any
) -> tuple[np.ndarray, str]:
    from keras import layers

    dtype = np.dtype(spec.dtype)
    first = users[0].layer if len(users) == 1 else None
    embedding = next((u.layer for u in users if isinstance(u.layer, layers.Embedding)), None)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool), "random"
    if np.issubdtype(dtype, np.integer):
        if embedding is not None:  # valid ids (1 on: an all-zero row may be all padding)
            low = 1 if embedding.mask_zero and embedding.input_dim > 1 else 0
            ids = rng.integers(low, embedding.input_dim, size=shape)
            return ids.astype(dtype), "embedding ids"
        rows = _lookup_rows(users)
        if rows is not None:  # a traced-into embedding: ops.take(self.embeddings, ids)
            return rng.integers(0, rows, size=shape).astype(dtype), "embedding ids"
        high = 256 if dtype == np.uint8 else 2
        return rng.integers(0, high, size=shape).astype(dtype), "random integers"
    normal = rng.standard_normal(shape)
    if isinstance(first, layers.Normalization) and first.mean is not None:
        mean, variance = _array(first.mean), _array(first.variance)
        if first.invert:
            return normal.astype(dtype), "random"
        probe = mean + np.sqrt(np.maximum(variance, 0)) * normal
        return probe.astype(dtype), "Normalization statistics"
    if isinstance(first, layers.Rescaling):
        scale = float(np.max(np.abs(_array(first.scale)))) or 1.0
        return (rng.uniform(0.0, 1.0, size=shape) / scale).astype(dtype), "Rescaling input range"
    if isinstance(first, layers.BatchNormalization) and first.built:
        mean = np.asarray(first.moving_mean.numpy(), np.float64)
        std = np.sqrt(np.maximum(np.asarray(first.moving_variance.numpy(), np.float64), 0))
        if _channel_last(first, len(shape)):
            return (mean + std * normal).astype(dtype), "BatchNormalization statistics"
    if first is not None and graph is not None:
        factor = _scale_for_next_batch_norm(users[0], graph)
        if factor is not None:
            return (normal * factor).astype(dtype), "BatchNormalization statistics (mapped back)"
    return normal.astype(dtype), "random"


def _channel_last(bn: Any, rank: int) -> bool:
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) else bn.axis
    return axis % rank == rank - 1


def _lookup_rows(users: list[Call]) -> int | None:
    """The rows of the table a ``keras.ops.take`` of a constant (a layer's variable)
    looks the input up in, the fewest over such users; None without one."""
    from folding.keras_graph.graph import Ref

    rows = []
    for call in users:
        if type(call.layer).__name__ != "Take" or not call.args:
            continue
        table, axis = call.args[0], getattr(call.layer, "axis", None)
        if isinstance(table, Ref) or not hasattr(table, "shape") or axis is None:
            continue
        rows.append(int(table.shape[axis]))
    return min(rows) if rows else None


def _scale_for_next_batch_norm(call: Call, graph: Graph) -> float | None:
    """For x -> linear layer -> BatchNormalization: the std of x (i.i.d. zero-mean rows)
    that makes the BatchNormalization's input variance its moving variance on average."""
    import keras
    from keras import layers

    layer = call.layer
    kernel = getattr(layer, "kernel", None)
    if type(layer) not in (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D):
        return None
    if kernel is None or layer.activation is not keras.activations.linear:
        return None
    users = graph.consumers().get(call.outputs[0], [])
    if len(users) != 1 or not isinstance(users[0].layer, layers.BatchNormalization):
        return None
    bn = users[0].layer
    if not bn.built:
        return None
    weights = np.asarray(kernel.numpy(), np.float64)
    gain = float(np.mean(np.sum(weights.reshape(-1, weights.shape[-1]) ** 2, axis=0)))
    target = float(np.mean(np.asarray(bn.moving_variance.numpy(), np.float64)))
    if gain <= 0 or target <= 0:
        return None
    return float(np.sqrt(target / gain))


def _array(value: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value), np.float64)


def _read_arrays(path: Path) -> Any:
    """``np.load`` of an untrusted file without pickles, and without allocating what its
    header merely declares: a ``.npy`` is memory-mapped (a shape larger than the file is
    refused, not allocated), and the members of an ``.npz`` may inflate to at most what a
    ``.keras`` archive may (``folding.sources.keras.loading.check_inflation``)."""
    from folding.sources.keras.loading import DEFAULT_LIMITS, check_inflation

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                entries = archive.infolist()
                total = sum(entry.file_size for entry in entries)
                try:
                    check_inflation(total, path.stat().st_size, path.name, DEFAULT_LIMITS)
                except ModelLoadError as error:
                    raise ProbeError(f"probe file {error}") from None
                for entry in entries:
                    _check_declared_size(archive, entry, path.name)
            return np.load(path, allow_pickle=False)
        return np.array(np.load(path, allow_pickle=False, mmap_mode="r"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ProbeError(f"probe file '{path.name}' is not a readable .npy/.npz: {error}") from None


def _check_declared_size(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, label: str) -> None:
    """Refuse an ``.npz`` member whose header declares more bytes than it holds (numpy
    would allocate the declared array before reading it)."""
    with archive.open(entry) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        return  # np.load refuses it (allow_pickle=False), naming why
    declared = dtype.itemsize
    for size in shape:
        declared *= size
    if declared > entry.file_size:
        raise ProbeError(
            f"probe file '{label}': array '{entry.filename}' declares shape {list(shape)} "
            f"({declared} bytes) but holds {entry.file_size} bytes"
        )


def load_user_probes(inputs: Sequence[InputSpec], path: Path) -> list[np.ndarray]:
    """The user's ``.npy`` (single-input models) or ``.npz`` (one array per input name)."""
    loaded = _read_arrays(path)
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(spec.name for spec in inputs)
            raise ProbeError(f"model has {len(inputs)} inputs ({names}); give an .npz by name")
        arrays = [loaded]
    else:
        missing = [spec.name for spec in inputs if spec.name not in loaded.files]
        if missing:
            raise ProbeError(f"probe file '{path.name}' lacks inputs: {', '.join(missing)}")
        arrays = []
        for spec in inputs:
            try:
                arrays.append(loaded[spec.name])
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                raise ProbeError(
                    f"probe file '{path.name}': array '{spec.name}' is not readable: {error}"
                ) from None
    result = []
    for spec, array in zip(inputs, arrays, strict=True):
        expected = list(spec.shape[1:])
        if array.ndim != len(spec.shape) or any(
            want is not None and got != want
            for got, want in zip(array.shape[1:], expected, strict=True)
        ):
            raise ProbeError(
                f"probe input '{spec.name}' has shape {list(array.shape)}; "
                f"model expects {[-1 if d is None else d for d in spec.shape]}"
            )
        if array.shape[0] == 0:
            raise ProbeError(f"probe input '{spec.name}' has no rows")
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise ProbeError(f"probe input '{spec.name}' has non-numeric dtype {array.dtype}")
        result.append(array.astype(np.dtype(spec.dtype)))
    return result
