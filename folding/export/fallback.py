"""The general exporter's fold: a Keras model through tf2onnx once, folded on its ONNX graph.

What it does, for a model the direct exporter cannot write (or ``--exporter tf2onnx``):

1. the unfolded Keras model is converted once (``export_onnx``: every BN still its own
   ops, see ``folding.export.tf2onnx_convert``): that is ``unfolded.onnx``;
2. ``model.onnx`` is that ONNX graph folded by the ONNX folder (``folding.onnx_graph``).
   The folded Keras model is never built nor converted.

The ONNX fold is the one applied, so the report is built from it, in the Keras
model's terms. Each ONNX BN (a ``BatchNormalization`` node or a Mul + Add pair) is
matched to the Keras BatchNormalization it came from: by its per-channel scale
(``gamma / sqrt(moving_variance + epsilon)``, which tf2onnx writes as the Mul's
constant), ties between BNs with equal numbers broken by the layer's name in the
TensorFlow name scope, then by order. Then, per Keras BN:

* folded on the ONNX graph and by the Keras rules: the Keras entry (its statistics,
  diagnostics and the layer it folds into);
* folded on the ONNX graph though the Keras rules keep it (a BN inside a custom layer
  the Keras tracer could not enter, say): folded, into the layer the ONNX node
  belongs to;
* kept on the ONNX graph though the Keras rules fold it: kept, with the ONNX
  folder's reason;
* kept by both: the Keras reason;
* found in no form the ONNX folder reads: kept, saying so (or with the Keras reason
  where the Keras rules keep it too).

Scale/shift pairs the ONNX folder folds that are no BN of the model (a ``Rescaling``,
say) are folded too (the verification covers them) but are not counted as BNs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from folding.errors import ExportError
from folding.export.exporters import check_onnx, export_onnx
from folding.keras_graph.fold import FoldResult
from folding.onnx_graph import OnnxFoldResult, fold_onnx
from folding.report import BatchNormStats, FoldedEntry, NotFoldedEntry
from folding.sources.onnx.model import OnnxModel

SCALE_RTOL = 1e-3
"""How near an ONNX BN's per-channel scale must be to a Keras BN's to be that BN
(both are float32 roundings of the same quotient)."""


@dataclass(frozen=True)
class GeneralExport:
    folded: OnnxModel
    unfolded: OnnxModel
    folded_entries: list[FoldedEntry]
    not_folded_entries: list[NotFoldedEntry]


def export_general(
    call: Callable[[list[Any]], list[Any]],
    result: FoldResult,
    opset: int,
    reason: object | None,
    on_traced: Callable[[Callable[[list[Any]], list[Any]]], None] | None = None,
) -> GeneralExport:
    """``call`` (the unfolded model as a flat function) through tf2onnx, folded on its
    ONNX graph; the entries are ``result``'s, reconciled with what that fold did.
    ``reason``: why the direct exporter could not (None: the general one was asked for).
    ``on_traced``: as for ``export_onnx``."""
    try:
        unfolded = export_onnx(
            call, result.inputs, result.output_names, opset, check=False, on_traced=on_traced
        )
        unfolded_data = unfolded.SerializeToString()
        check_onnx(unfolded_data)
    except ExportError as error:
        if reason is None:
            raise ExportError(f"the general exporter (tf2onnx) failed: {error}") from None
        raise ExportError(
            f"cannot export {reason}; the general exporter failed too: {error}"
        ) from None
    onnx_fold = fold_onnx(unfolded, describe=False)  # the numbers are the Keras fold's
    folded_entries, not_folded_entries = reconcile(result, onnx_fold, layer_classes(result.source))
    return GeneralExport(
        OnnxModel(onnx_fold.model, onnx_fold.model.SerializeToString()),
        OnnxModel(unfolded, unfolded_data),
        folded_entries,
        not_folded_entries,
    )


@dataclass
class _OnnxBn:
    path: str  # the ONNX node's name scope, e.g. "functional_1/bn1_1/batchnorm"
    scale: np.ndarray | None  # its per-channel scale
    folded: FoldedEntry | None
    reason: str | None


def reconcile(
    result: FoldResult, onnx_fold: OnnxFoldResult, classes: dict[str, str]
) -> tuple[list[FoldedEntry], list[NotFoldedEntry]]:
    """The report's folded and kept lists: every Keras BN of ``result`` once, as the
    ONNX fold left it (see the module docstring)."""
    keras_entries: list[FoldedEntry | NotFoldedEntry] = [*result.folded, *result.not_folded]
    scales = onnx_fold.scales
    onnx_bns = [_OnnxBn(_path(e.bn), scales.get(e.bn), e, None) for e in onnx_fold.folded]
    onnx_bns += [
        _OnnxBn(_path(e.bn), scales.get(e.bn), None, e.reason) for e in onnx_fold.not_folded
    ]
    matched = _match(keras_entries, onnx_bns)
    folded: list[FoldedEntry] = []
    kept: list[NotFoldedEntry] = []
    for entry in keras_entries:
        onnx_bn = matched.get(entry.bn)
        if onnx_bn is None:
            kept.append(_kept(entry, _not_found(entry)))
        elif onnx_bn.folded is not None:
            folded.append(_folded(entry, onnx_bn.folded, classes, onnx_fold))
        else:
            kept.append(_kept(entry, _kept_reason(entry, onnx_bn.reason)))
    return folded, kept


def _match(
    keras_entries: list[FoldedEntry | NotFoldedEntry], onnx_bns: list[_OnnxBn]
) -> dict[str, _OnnxBn]:
    """Keras BN name -> the ONNX BN it became, each ONNX BN taken once."""
    matched: dict[str, _OnnxBn] = {}
    free = list(keras_entries)
    for onnx_bn in onnx_bns:
        near = [entry for entry in free if _same_numbers(entry.stats, onnx_bn.scale)]
        if not near:
            continue
        named = [entry for entry in near if _named_in(entry.bn, onnx_bn.path)]
        chosen = (named or near)[0]
        matched[chosen.bn] = onnx_bn
        free.remove(chosen)
    return matched


def _same_numbers(keras: BatchNormStats | None, onnx_scale: np.ndarray | None) -> bool:
    if keras is None or onnx_scale is None or keras.channels != onnx_scale.size:
        return False
    if keras.per_channel is not None:
        expected, found = np.asarray(keras.per_channel.scale), onnx_scale
    else:
        expected = np.asarray([keras.scale.min, keras.scale.max])
        found = np.asarray([onnx_scale.min(), onnx_scale.max()])
    return bool(np.allclose(found, expected, rtol=SCALE_RTOL, atol=1e-7))


def _path(onnx_name: str) -> str:
    """The name scope in an ONNX report entry's name ("scope (Mul + Add)")."""
    return onnx_name.split(" (")[0]


_UNIQUIFIED = re.compile(r"^(.*)_\d+$")


def _scope_names(path: str) -> Iterator[str]:
    """The names a component of a TensorFlow name scope may stand for: itself and, as
    TensorFlow appends ``_N`` to a scope used twice, itself without that suffix."""
    for component in path.split("/"):
        yield component
        plain = _UNIQUIFIED.match(component)
        if plain:
            yield plain.group(1)


def _named_in(keras_name: str, path: str) -> bool:
    """Whether the Keras layer name (``outer_inner`` for a nested model's layer, or
    ``layer/inner`` for one inside a custom layer) appears in the scope ``path``."""
    last = re.split(r"[/]", keras_name)[-1]
    return any(name == last or keras_name.endswith(f"_{name}") for name in _scope_names(path))


def _folded(
    entry: Any, onnx_entry: FoldedEntry, classes: dict[str, str], onnx_fold: OnnxFoldResult
) -> FoldedEntry:
    if isinstance(entry, FoldedEntry):
        return entry
    into, into_class = _keras_layer(onnx_entry, classes)
    stats, diagnostics = entry.stats, entry.diagnostics
    if stats is None or diagnostics is None:  # the ONNX fold's numbers, in full
        onnx_stats, onnx_diagnostics = onnx_fold.describe(onnx_entry.bn)
        stats, diagnostics = stats or onnx_stats, diagnostics or onnx_diagnostics
    return FoldedEntry(entry.bn, into, into_class, onnx_entry.direction, stats, diagnostics)


def _keras_layer(onnx_entry: FoldedEntry, classes: dict[str, str]) -> tuple[str, str]:
    """The Keras layer (name, class) an ONNX fold target belongs to, read off its name
    scope; the ONNX node's own when none is named there."""
    names = [
        name
        for target in onnx_entry.into.split(", ")
        for name in reversed(list(_scope_names(target)))
        if name in classes
    ]
    if not names:
        return onnx_entry.into, onnx_entry.into_class
    return names[0], classes[names[0]]


def _kept(entry: Any, reason: str) -> NotFoldedEntry:
    if isinstance(entry, NotFoldedEntry):
        return replace(entry, reason=reason)
    return NotFoldedEntry(entry.bn, reason, entry.stats, entry.diagnostics)


def _kept_reason(entry: Any, onnx_reason: str | None) -> str:
    if isinstance(entry, NotFoldedEntry):
        return entry.reason
    return f"on the general exporter's (tf2onnx) graph, {onnx_reason}"


def _not_found(entry: Any) -> str:
    if isinstance(entry, NotFoldedEntry):
        return entry.reason
    return (
        "the general exporter (tf2onnx) wrote it in no form the ONNX folder reads as a "
        "BatchNormalization (or Mul + Add), so it is kept as written"
    )


def layer_classes(model: Any) -> dict[str, str]:
    """Every layer's name (nested models' and custom layers' too) -> its class name."""
    classes: dict[str, str] = {}
    stack = [model]
    while stack:
        layer = stack.pop()
        for inner in getattr(layer, "_layers", None) or getattr(layer, "layers", None) or []:
            if inner.name not in classes:
                classes[inner.name] = type(inner).__name__
                stack.append(inner)
    return classes
