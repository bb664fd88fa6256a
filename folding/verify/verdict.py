"""Does the folded model answer like the original, and if not, whose fault is it?

Three float32 models answer the same probe inputs: the original Keras model,
the unfolded ONNX export, the folded ONNX export. Per output:

* **fold error**: folded ONNX vs unfolded ONNX (what folding changed),
* **export error**: unfolded ONNX vs Keras (what exporting changed),
* **total**: folded ONNX vs Keras;

each as ``max |a - b|`` over the output's scale (its largest magnitude).

Float32 results differ by rounding alone, and a deep network can amplify that
past any fixed tolerance. So each check also gets a **noise floor**: the
unfolded graph is run again with every weight moved by one float32 ulp in a
random direction, which is the size of change folding makes to a weight (one
rounding of ``W * scale``). A check fails only when its error is over its
tolerance *and* over ``NOISE_FACTOR`` times that floor. (The floor is measured
only when an error is over its plain tolerance: otherwise it cannot change the
verdict, and it costs a third run.) When the unfolded graph
can run in float64 (ONNX Runtime has double kernels for every operator in
it), its float64 answer is reported too, saying which float32 graph is closer
to exact.

Verification is **inconclusive** when the outputs barely vary across probes
(a saturated softmax answers the same to everything): passing then proves little.
It is inconclusive too when the noise floor itself is over ``UNSTABLE_NOISE``
of an output's scale: a model whose answers move that much when its weights
move one ulp cannot be checked in float32 on these probes (random deep
networks with exploding activations do this; trained ones rarely do), and
neither folding nor exporting is blamed for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from folding.errors import FoldingError, VerificationError
from folding.options import DEFAULT_EXPORT_RTOL, VerifyOptions
from folding.report import OutputCheck, Verification
from folding.sources.onnx.external import refuse_external_data, refuse_external_file
from folding.sources.onnx.model import OnnxModel
from folding.verify.difference import max_difference
from folding.verify.fusions import ALWAYS_DISABLED_OPTIMIZERS, UNFOLDED_DISABLED_OPTIMIZERS

DEFAULT_RTOL = VerifyOptions.rtol
NOISE_FACTOR = VerifyOptions.noise_factor
INCONCLUSIVE_SPREAD = 1e-3
UNSTABLE_NOISE = 1e-2


@dataclass(frozen=True)
class Answers:
    """Every model's outputs on the same probes, in output order."""

    keras: list[np.ndarray]
    unfolded: list[np.ndarray]
    folded: list[np.ndarray]
    perturbed: list[np.ndarray] | None = None
    exact: list[np.ndarray] | None = None


Source = Path | bytes | onnx.ModelProto | OnnxModel


def session(model: Source, *, unfolded: bool = False):
    """An ONNX Runtime CPU session; for the unfolded model, with the fusions that
    would fold its BatchNormalizations disabled. An exported model (``OnnxModel``:
    proto and bytes) is checked on its proto and loaded from its bytes, neither
    serialised nor parsed again."""
    import onnxruntime

    if isinstance(model, OnnxModel):
        refuse_external_data(model.proto, model.proto.graph.name or "the model")
        source: str | bytes = model.data
    elif isinstance(model, onnx.ModelProto):
        refuse_external_data(model, model.graph.name or "the model")
        source = model.SerializeToString()
    elif isinstance(model, bytes):
        refuse_external_data(onnx.ModelProto.FromString(model), "the model")
        source = model
    else:
        refuse_external_file(Path(model), Path(model).name)
        source = str(model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    disabled = UNFOLDED_DISABLED_OPTIMIZERS if unfolded else ALWAYS_DISABLED_OPTIMIZERS
    return onnxruntime.InferenceSession(
        source, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled)
    )


def run_onnx(
    path: Source,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    *,
    unfolded: bool = False,
) -> list[np.ndarray]:
    runner = session(path, unfolded=unfolded)
    return runner.run(None, dict(zip(names, arrays, strict=True)))


def half_precision(proto: onnx.ModelProto) -> bool:
    """Whether most of ``proto``'s weights are float16 (``model.half()`` exported): a
    float32 model holding a float16 constant or two is not."""
    sizes = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}
    for tensor in proto.graph.initializer:
        if tensor.data_type in sizes:
            sizes[tensor.data_type] += int(np.prod(tensor.dims))
    return sizes[TensorProto.FLOAT16] > max(sizes[TensorProto.FLOAT], 1)


def perturbed(proto: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``proto`` whose float32 weights (float16 ones in a half-precision
    model) each moved one ulp of their own type up or down."""
    rng = np.random.default_rng(seed)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    moved_type = TensorProto.FLOAT16 if half_precision(proto) else TensorProto.FLOAT
    for index, tensor in enumerate(copy.graph.initializer):
        if tensor.data_type != moved_type:
            continue
        array = numpy_helper.to_array(tensor)
        if array.size <= 1:
            continue
        direction = np.where(rng.random(array.shape) < 0.5, -np.inf, np.inf).astype(array.dtype)
        moved = np.nextafter(array, direction).astype(array.dtype)
        copy.graph.initializer[index].CopyFrom(numpy_helper.from_array(moved, tensor.name))
    return copy


def in_double(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` computing in float64 (inputs and outputs too), for a reference answer."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    keep_float = {node.input[2] for node in graph.node if node.op_type == "Resize"}
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in keep_float:
            array = numpy_helper.to_array(tensor).astype(np.float64)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.DOUBLE
    return copy


DOUBLE_KERNELS = frozenset(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "Exp",
        "Sqrt",
        "Abs",
        "Neg",
        "Min",
        "Max",
        "Clip",
        "MatMul",
        "Gemm",
        "BatchNormalization",
        "LayerNormalization",
        "Identity",
        "Cast",
        "Flatten",
        "Reshape",
        "Transpose",
        "Concat",
        "MaxPool",
        "Pad",
        "Slice",
        "Gather",
        "Elu",
        "Selu",
        "Softplus",
        "LeakyRelu",
        "Sum",
        "Reciprocal",
        "Where",
        "GreaterOrEqual",
        "Shape",
        "Unsqueeze",
        "Tile",
        "ReduceSum",
    ]
)


def exact_answers(
    proto: onnx.ModelProto,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    over: Callable[..., list[np.ndarray]] | None = None,
) -> list[np.ndarray] | None:
    """The unfolded graph's answer in float64, or None when ONNX Runtime has no
    double kernel for one of its operators (Conv, pooling, Erf, ... have none).
    ``over(run, arrays)``: how to run it over the rows (``Chunks.map``); at once if None."""
    if any(node.op_type not in DOUBLE_KERNELS for node in proto.graph.node):
        return None
    feeds = [a.astype(np.float64) if a.dtype == np.float32 else a for a in arrays]
    try:
        runner = session(in_double(proto), unfolded=True)

        def run(chunk: list[np.ndarray]) -> list[np.ndarray]:
            return runner.run(None, dict(zip(names, chunk, strict=True)))

        return over(run, feeds) if over is not None else run(feeds)
    except Exception:  # ONNX Runtime: NOT_IMPLEMENTED for a double kernel
        return None


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, max abs error / scale, scale), as ``folding.verify.difference``
    measures it; outputs of different shapes are a ``FoldingError``."""
    want, got = np.shape(reference), np.shape(candidate)
    if want != got:
        raise FoldingError(f"output has shape {list(got)}; reference has {list(want)}")
    max_abs, scale = max_difference(reference, candidate)
    return max_abs, max_abs / scale, scale


def spread(output: np.ndarray) -> float:
    """How much an output varies across probe rows, relative to its scale."""
    values = np.asarray(output, np.float64)
    if values.shape[0] < 2 or not values.size:
        return 0.0
    scale = float(np.max(np.abs(values))) or 1.0
    return float(np.max(values.max(axis=0) - values.min(axis=0))) / scale


def judge(
    names: Sequence[str],
    answers: Answers,
    *,
    rtol: float = DEFAULT_RTOL,
    export_rtol: float = DEFAULT_EXPORT_RTOL,
    compared_dtype: str = "float32",
    probes: str = "random",
    noise_factor: float = NOISE_FACTOR,
) -> Verification:
    """Judge ``answers`` (see the module docstring); ``noise_factor`` 0 makes the
    tolerances strict, with no allowance for float32 noise."""
    checks = []
    for index, name in enumerate(names):
        keras_out = answers.keras[index]
        unfolded = answers.unfolded[index]
        folded = answers.folded[index]
        fold_abs, fold_rel, scale = relative_error(unfolded, folded)
        _, export_rel, _ = relative_error(keras_out, unfolded)
        total_abs, total_rel, _ = relative_error(keras_out, folded)
        noise = 0.0
        if answers.perturbed is not None:
            _, noise, _ = relative_error(unfolded, answers.perturbed[index])
        folded_exact = unfolded_exact = None
        if answers.exact is not None:
            _, folded_exact, _ = relative_error(answers.exact[index], folded)
            _, unfolded_exact, _ = relative_error(answers.exact[index], unfolded)
        agreement = None
        want = np.asarray(keras_out)
        if want.ndim == 2 and want.shape[1] > 1:
            agreement = float(np.mean(want.argmax(axis=1) == np.asarray(folded).argmax(axis=1)))
        checks.append(
            OutputCheck(
                name=name,
                shape=list(np.shape(keras_out)),
                scale=scale,
                fold_error=fold_rel,
                export_error=export_rel,
                total_error=total_rel,
                noise=noise if answers.perturbed is not None else None,
                fold_limit=max(rtol, noise_factor * noise),
                export_limit=max(export_rtol, noise_factor * noise),
                folded_vs_float64=folded_exact,
                unfolded_vs_float64=unfolded_exact,
                spread=spread(keras_out),
                max_abs_error=total_abs,
                max_rel_error=total_rel,
                fold_abs_error=fold_abs,
                argmax_agreement=agreement,
            )
        )
    unstable = [c for c in checks if c.noise is not None and c.noise > UNSTABLE_NOISE]
    judged = [c for c in checks if c not in unstable]
    fold_ok = all(c.fold_error <= c.fold_limit for c in judged)
    export_ok = all(c.export_error <= c.export_limit for c in judged)
    reason = None
    if unstable:
        names = ", ".join(f"'{c.name}' ({c.noise:.2g})" for c in unstable)
        reason = (
            f"outputs {names} move by more than {UNSTABLE_NOISE:g} of their scale when the "
            f"weights move one ulp: {compared_dtype} cannot check them on these probes"
        )
    elif checks and all(c.spread < INCONCLUSIVE_SPREAD for c in checks):
        reason = (
            f"every output varies across the probes by less than {INCONCLUSIVE_SPREAD:g} of "
            "its scale (saturated?): pass real inputs as probes"
        )
    failure = None if export_ok and fold_ok else ("export" if not export_ok else "fold")
    return Verification(
        samples=int(np.shape(answers.keras[0])[0]) if answers.keras else 0,
        rtol=rtol,
        export_rtol=export_rtol,
        passed=failure is None,
        failure=failure,
        inconclusive=reason is not None,
        inconclusive_reason=reason,
        compared_dtype=compared_dtype,
        probes=probes,
        outputs=checks,
    )


def compare(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    rtol: float = DEFAULT_RTOL,
) -> Verification:
    """A plain two-way check (candidate vs reference), judged against ``rtol`` only."""
    answers = Answers(keras=list(reference), unfolded=list(reference), folded=list(candidate))
    return judge(names, answers, rtol=rtol, export_rtol=rtol)


def failure_error(
    verification: Verification,
    report: object,
    *,
    reference: str,
    noise_factor: float,
) -> VerificationError | None:
    """The error a failed ``verification`` raises, blaming what ``judge`` found at
    fault: folding (``failure == "fold"``) or the unfolded export, which already
    differs from ``reference`` ("the Keras model", ...) (``failure == "export"``).
    None when it passed. Every fold path raises through here."""
    failure = verification.failure
    if failure not in ("fold", "export"):
        return None

    def over_limit(check: OutputCheck) -> float:
        if failure == "fold":
            return check.fold_error / check.fold_limit
        return check.export_error / check.export_limit

    worst = max(verification.outputs, key=over_limit)
    if failure == "fold":
        message = (
            f"folding changed output '{worst.name}': the folded model differs from the "
            f"unfolded one by {worst.fold_error:.3g} of the output's scale, over rtol "
            f"{verification.rtol:g} and over {noise_factor:g}x the model's float32 noise "
            f"({worst.noise or 0:.2g})"
        )
    else:
        message = (
            f"export problem, not a folding one: the unfolded ONNX export differs from "
            f"{reference} on output '{worst.name}' by {worst.export_error:.3g} of its scale "
            f"(export rtol {verification.export_rtol:g}; folding itself changed it by "
            f"{worst.fold_error:.3g})"
        )
    return VerificationError(message, report)
