"""Keras 2 (``tf.keras`` / ``tf_keras``) model configs, translated for Keras 3.

Keras 3 reads most of a Keras 2 file itself; this module fixes the places
where it refuses one: options Keras 2 writes with their default value but
Keras 3 does not accept (``groups=1`` on a DepthwiseConv2D, the BatchNorm
renorm options), layer and model names containing ``/`` (renamed, every
reference with them), and the ``tf_keras`` module paths of a ``.keras``
archive's Functional / Sequential model. An option that Keras 3 has no form
for, at a value that changes what the layer computes (``renorm=True``), is
refused with its layer named, never dropped.

The translation works on the JSON config only; nothing in it is executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from folding._compat import KERAS3_MODEL_MODULES, keras3_module
from folding.errors import ModelLoadError
from folding.sources.keras.known_lambdas import known_function

ANY = object()
"""A Keras 2 option dropped whatever its value (it does not change inference)."""

_SEPARABLE = {
    "groups": 1,
    "kernel_initializer": ANY,
    "kernel_regularizer": ANY,
    "kernel_constraint": ANY,
}  # unused by Keras 2's separable convolutions
_RECURRENT = {"time_major": False}
KERAS2_ONLY_OPTIONS: dict[str, dict[str, Any]] = {
    "DepthwiseConv1D": {"groups": 1},
    "DepthwiseConv2D": {"groups": 1},
    "Conv1DTranspose": {"groups": 1},
    "Conv2DTranspose": {"groups": 1},
    "Conv3DTranspose": {"groups": 1},
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "SpatialDropout1D": {"trainable": ANY, "noise_shape": ANY},  # identity at inference
    "SpatialDropout2D": {"trainable": ANY, "noise_shape": ANY},
    "SpatialDropout3D": {"trainable": ANY, "noise_shape": ANY},
    "LSTM": _RECURRENT,
    "GRU": _RECURRENT,
    "SimpleRNN": _RECURRENT,
    "MultiHeadAttention": {
        "query_shape": ANY,  # build shapes: the layer is built where the model calls it
        "key_shape": ANY,
        "value_shape": ANY,
        "softmax_robust_masking": False,
    },
    "BatchNormalization": {
        "renorm": False,
        "renorm_clipping": None,
        "renorm_momentum": ANY,
        "fused": ANY,
        "virtual_batch_size": None,
        "adjustment": None,
    },
}
"""Per layer class: the options Keras 2 writes that Keras 3 refuses, and the value
at which leaving them out computes the same thing."""

MODEL_CLASSES = set(KERAS3_MODEL_MODULES)
OP_LAYERS = {"TFOpLambda", "SlicingOpLambda"}  # folding.sources.keras.tf_ops translates them
APPLICATION_LAYERS = {
    "LayerScale",
    "StochasticDepth",
    "CustomScaleLayer",
    "Custom>CustomScaleLayer",
}
"""Layers Keras 2's applications define themselves (folding.sources.keras.tf_ops)."""
LIBRARY_DROPOUTS = {"FixedDropout": {"rate", "noise_shape", "seed"}}
"""Dropout subclasses of Keras 2 model libraries (efficientnet's FixedDropout, also in
segmentation_models' EfficientNet backbones) by their options: Dropout at inference,
the identity."""
_BASE_OPTIONS = {"name", "trainable", "dtype"}


@dataclass
class Translation:
    """What changed between the Keras 2 config and the one Keras 3 loads."""

    renamed: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # "... left out" -> layer count
    modules: int = 0
    built_sequentials: set[str] = field(default_factory=set)  # nested, with an input shape

    def describe(self) -> str:
        parts = []
        if self.renamed:
            parts.append(f"{_count(len(self.renamed), 'name')} containing '/' renamed with '_'")
        parts.extend(f"{key}: {_count(count, 'layer')}" for key, count in self.dropped.items())
        if self.modules:
            parts.append(f"{_count(self.modules, 'tf_keras module path')} mapped to Keras 3")
        return "; ".join(parts) or "no changes needed"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def is_keras2(keras_version: str | None, config: Any) -> bool:
    """A file written by Keras 2: its recorded version, else its model's module path."""
    if keras_version:
        return str(keras_version).startswith(("1.", "2."))
    module = config.get("module", "") if isinstance(config, dict) else ""
    return str(module).startswith("tf_keras")


def translate_config(config: Any, label: str) -> tuple[Any, Translation]:
    """``config`` (a Keras 2 model config, JSON-decoded) as Keras 3 loads it.

    Raises ModelLoadError naming the layer when one uses a Keras 2 option at a
    value Keras 3 cannot express."""
    translation = Translation()
    _collect_renames(config, translation.renamed)
    translation.built_sequentials = _built_sequentials(config)
    translated = _translate(config, translation, label)
    return translated, translation


def _dicts_in(config: Any) -> Iterator[dict]:
    """Every dict nested anywhere in ``config`` (lists and dicts), ``config`` too."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _collect_renames(config: Any, renames: dict[str, str]) -> None:
    names: set[str] = set()
    for item in _dicts_in(config):
        inner = item.get("config")
        if "class_name" in item and isinstance(inner, dict) and isinstance(inner.get("name"), str):
            names.add(inner["name"])
    for name in sorted(names):
        if "/" not in name:
            continue
        new = base = name.replace("/", "_")
        suffix = 1
        while new in names or new in renames.values():
            new = f"{base}_{suffix}"
            suffix += 1
        renames[name] = new


def _built_sequentials(config: Any) -> set[str]:
    """Names of the Sequential models with a known input shape. Keras 2 gives such a
    model a node of its own, so a Functional model that calls it refers to node 1
    for its first call; Keras 3 does that for Functional models only."""
    names: set[str] = set()
    for item in _dicts_in(config):
        inner = item.get("config")
        if isinstance(inner, list):  # Keras 2.0 / 2.1: the list of layers, no name
            inner = {"name": item.get("name", "sequential"), "layers": inner}
        if item.get("class_name") == "Sequential" and isinstance(inner, dict):
            layers = inner.get("layers") or [{}]
            first = layers[0] if isinstance(layers[0], dict) else {}
            first_config = first.get("config") if isinstance(first.get("config"), dict) else {}
            if first.get("class_name") == "InputLayer" or "batch_input_shape" in first_config:
                names.add(str(inner.get("name")))
    return names


def _translate(item: Any, translation: Translation, label: str) -> Any:
    if isinstance(item, list):
        return [_translate(value, translation, label) for value in item]
    if not isinstance(item, dict):
        return item
    result = {key: _translate(value, translation, label) for key, value in item.items()}
    class_name = result.get("class_name")
    if class_name == "Sequential" and isinstance(result.get("config"), list):
        # Keras 2.0 / 2.1 wrote a Sequential model's config as its list of layers
        name = result.get("name", "sequential")  # the entry's, in a functional model's list
        result["config"] = {"name": name, "layers": result["config"]}
        _note(translation, "Sequential config of Keras 2.1 (a list of layers) given its name")
    if class_name == "Merge":
        class_name = _merge_layer(result, label)
        _note(translation, f"Keras 1 Merge layer written as {class_name}")
    inner = result.get("config")
    if isinstance(class_name, str) and isinstance(inner, dict):
        dropped = _drop_options(class_name, inner, translation, label)
        _refuse_changed_activations(class_name, inner, label)
        if class_name == "MultiHeadAttention" and "query_shape" in dropped:
            result["build_config"] = {
                "shapes_dict": {
                    f"{key}_shape": dropped.get(f"{key}_shape") for key in ("query", "value", "key")
                }
            }
        if class_name == "Sequential":
            _input_layer_first(inner)
        elif class_name != "InputLayer" and "batch_input_shape" in inner:
            inner.pop("batch_input_shape")  # an input shape only an InputLayer may carry
        if "name" in inner:
            inner["name"] = translation.renamed.get(inner["name"], inner["name"])
        if class_name in MODEL_CLASSES:
            for key in ("input_layers", "output_layers"):
                if key in inner:
                    inner[key] = _rename_references(inner[key], translation)
        module = result.get("module")
        if isinstance(module, str) and module.startswith("tf_keras"):
            result["module"] = keras3_module(module, class_name)
            translation.modules += 1
    if "name" in result and isinstance(result["name"], str):
        result["name"] = translation.renamed.get(result["name"], result["name"])
    if "inbound_nodes" in result:
        nodes = _rename_references(result["inbound_nodes"], translation)
        result["inbound_nodes"] = nodes
        if class_name not in OP_LAYERS and isinstance(nodes, list):
            result["inbound_nodes"] = [_tensor_keywords(node, translation) for node in nodes]
    if class_name in OP_LAYERS or class_name in APPLICATION_LAYERS or class_name == "Lambda":
        from folding.sources.keras.tf_ops import (
            translate_application_layer,
            translate_known_lambda,
            translate_op_layer,
        )

    if isinstance(inner, dict):
        _policy_names(inner, translation)
        if class_name in WRAPPERS:
            _wrapped_modules(inner, translation)
    if _library_dropout(result):
        _note(translation, f"{class_name} layer loaded as Dropout (the identity at inference)")
    known = known_function(result) if class_name == "Lambda" else None
    if known is not None:
        library = str(result["config"]["module"]).split(".")[0]
        result = translate_known_lambda(result, known.function)
        _note(translation, f"Lambda layer of {library} recognised and computed here, not run")
    elif class_name in OP_LAYERS:
        result = translate_op_layer(result, label)
        _note(translation, "TensorFlow call layer (TFOpLambda) computed with keras.ops")
    elif class_name in APPLICATION_LAYERS and translate_application_layer(result):
        _note(translation, f"Keras 2 {class_name} layer mapped to its Keras 3 form")
    return result


MERGE_MODES = {
    "concat": "Concatenate",
    "sum": "Add",
    "mul": "Multiply",
    "ave": "Average",
    "max": "Maximum",
}
"""Keras 1's ``Merge(mode=...)`` (kept by Keras 2.0 as a legacy layer), by mode: the
Keras 2 merge layer computing the same."""


def _merge_layer(layer: dict, label: str) -> str:
    config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
    mode = config.get("mode")
    if mode not in MERGE_MODES or config.get("mode_type", "raw") != "raw":
        raise ModelLoadError(
            f"'{label}': layer '{config.get('name', '?')}' is a Keras 1 Merge layer of mode "
            f"{mode!r}; only the modes {', '.join(MERGE_MODES)} have a Keras 3 form"
        )
    new = {key: config[key] for key in ("name", "trainable", "dtype") if key in config}
    if mode == "concat":
        new["axis"] = config.get("concat_axis", -1)
    layer["class_name"], layer["config"] = MERGE_MODES[mode], new
    return MERGE_MODES[mode]


POLICIES = {"Policy", "PolicyV1", "DTypePolicy"}
WRAPPERS = {"TimeDistributed", "Bidirectional", "Wrapper"}
WRAPPED_KEYS = ("layer", "forward_layer", "backward_layer")


def _policy_names(config: dict, translation: Translation) -> None:
    """A layer's dtype written as Keras 2's mixed-precision ``Policy`` dict (``PolicyV1``
    with a loss scale before TF 2.4) as the policy's name, which Keras 3 takes."""
    dtype = config.get("dtype")
    if not (isinstance(dtype, dict) and dtype.get("class_name") in POLICIES):
        return
    policy = dtype.get("config") if isinstance(dtype.get("config"), dict) else {}
    name = policy.get("name")
    if not isinstance(name, str):
        return
    config["dtype"] = "float32" if name == "_infer" else name  # _infer: the input's, float32
    _note(translation, f"dtype policy {name} written as its name")


def _wrapped_modules(config: dict, translation: Translation) -> None:
    """The layer a Keras 2.2 TimeDistributed / Bidirectional wraps, written without a
    module path, with Keras's (Keras 3 looks a wrapped layer up by it)."""
    import keras

    for key in WRAPPED_KEYS:
        wrapped = config.get(key)
        if not isinstance(wrapped, dict) or "module" in wrapped:
            continue
        if hasattr(keras.layers, str(wrapped.get("class_name"))):
            wrapped.update(module="keras.layers", registered_name=None)
            _note(translation, "wrapped layer given its Keras module path")


def _library_dropout(layer: dict) -> bool:
    """Point a library's Dropout subclass at Keras's Dropout (in place); True if it was one."""
    options = LIBRARY_DROPOUTS.get(layer.get("class_name"))
    config = layer.get("config")
    if options is None or not isinstance(config, dict) or set(config) - _BASE_OPTIONS != options:
        return False
    layer["class_name"] = "Dropout"
    if "module" in layer:
        layer.update(module="keras.layers", registered_name=None)
    return True


def _is_reference(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], str)
        and all(isinstance(index, int) for index in item[1:])
    )


def _tensor(reference: list) -> dict:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": list(reference)},
    }


def _tensor_keywords(node: Any, translation: Translation) -> Any:
    """A Keras 2 node that passes a tensor by keyword (``attention(q, value=v)``: the
    keyword's value a ``[layer, node, tensor]`` reference) in Keras 3's
    ``{"args", "kwargs"}`` form, where Keras 3 turns references into tensors; in its
    list form Keras 3 passes the reference on as a list."""
    if not (isinstance(node, list) and node and all(isinstance(item, list) for item in node)):
        return node
    if not all(len(item) == 4 and isinstance(item[3], dict) for item in node):
        return node
    kwargs = node[-1][3]
    if not any(_is_reference(value) for value in kwargs.values()):
        return node
    tensors = [_tensor(item[:3]) for item in node]
    _note(translation, "tensor passed by keyword written in Keras 3's node form")
    return {
        "args": [tensors[0] if len(tensors) == 1 else tensors],
        "kwargs": {
            key: _tensor(value) if _is_reference(value) else value for key, value in kwargs.items()
        },
    }


def _note(translation: Translation, key: str) -> None:
    translation.dropped[key] = translation.dropped.get(key, 0) + 1


def _input_layer_first(config: dict) -> None:
    """A Sequential model whose first layer carries its input shape starts with an
    InputLayer of that shape instead (Keras 3 takes the shape from there only)."""
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        return
    first = layers[0].get("config")
    if layers[0].get("class_name") == "InputLayer" or not isinstance(first, dict):
        return
    shape = first.pop("batch_input_shape", None)
    if shape is None:
        return
    entry = {
        "class_name": "InputLayer",
        "config": {"batch_shape": shape, "dtype": first.get("dtype", "float32")},
    }
    if "module" in layers[0]:
        entry.update(module="keras.layers", registered_name=None)
    layers.insert(0, entry)


CHANGED_ACTIVATIONS = {
    "hard_sigmoid": "Keras 2's is clip(0.2 x + 0.5, 0, 1), Keras 3's relu6(x + 3) / 6",
}


def _refuse_changed_activations(class_name: str, config: dict, label: str) -> None:
    for key in ("activation", "recurrent_activation"):
        value = config.get(key)
        if isinstance(value, str) and value in CHANGED_ACTIVATIONS:
            raise ModelLoadError(
                f"'{label}': layer '{config.get('name', '?')}' ({class_name}) uses the "
                f"activation '{value}', which Keras 3 computes differently "
                f"({CHANGED_ACTIVATIONS[value]})"
            )


def _drop_options(class_name: str, config: dict, translation: Translation, label: str) -> dict:
    axis = config.get("axis")
    if class_name == "BatchNormalization" and isinstance(axis, list):
        if len(axis) != 1:
            raise ModelLoadError(
                f"'{label}': layer '{config.get('name', '?')}' (BatchNormalization) normalises "
                f"over the axes {axis}; Keras 3 takes one axis"
            )
        config["axis"] = axis[0]
        key = "BatchNormalization axis list written as one int"
        translation.dropped[key] = translation.dropped.get(key, 0) + 1
    dropped: dict[str, Any] = {}
    for option, harmless in KERAS2_ONLY_OPTIONS.get(class_name, {}).items():
        if option not in config:
            continue
        value = dropped[option] = config.pop(option)
        if harmless is not ANY and value != harmless:
            raise ModelLoadError(
                f"'{label}': layer '{config.get('name', '?')}' ({class_name}) uses the Keras 2 "
                f"option {option}={value!r}, which Keras 3 has no form for"
            )
        value_text = "" if harmless is ANY else f"={harmless!r}"
        key = f"{class_name} {option}{value_text} left out"
        translation.dropped[key] = translation.dropped.get(key, 0) + 1
    return dropped


def _rename_references(item: Any, translation: Translation) -> Any:
    """Layer references in inbound nodes and a model's input/output lists:
    ``[name, node, tensor(, kwargs)]`` lists and ``keras_history`` entries."""
    if isinstance(item, list):
        if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
            name, node = item[0], item[1]
            if name in translation.built_sequentials and node >= 1:
                node -= 1
            rest = [_rename_references(value, translation) for value in item[2:]]
            return [translation.renamed.get(name, name), node, *rest]
        return [_rename_references(value, translation) for value in item]
    if isinstance(item, dict):
        return {key: _rename_references(value, translation) for key, value in item.items()}
    return item
