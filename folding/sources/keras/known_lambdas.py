"""The ``Lambda`` layers of Keras 2 model libraries, recognised without running them.

A Keras 2 ``Lambda`` layer stores its function as marshalled Python bytecode; that
code is never unmarshalled nor run here. A few model libraries put small, fixed
functions in Lambda layers of every model they build (qubvel's classification_models,
and so segmentation_models' SE-ResNet / ResNeXt / SENet backbones: a channel slice
for grouped convolutions and an ``expand_dims`` in squeeze-excite; their Inception-
ResNet blocks' scaled residual sum). Such a layer is recognised by what its config
says in plain JSON: the module the function was defined in, the function's name
(found in the code's bytes as the marshalled name string, without decoding the
code), its bound ``arguments`` and no captured variables. It is then computed by
foldserve's own implementation of that library function
(``folding.sources.keras.tf_ops.LibraryFunction``). Any other Lambda is refused.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KnownFunction:
    modules: tuple[str, ...]
    name: str  # the function's __name__ in its module
    arguments: frozenset[str]  # the keywords the layer binds (Lambda's ``arguments``)
    function: str  # its name in tf_ops.LIBRARY_FUNCTIONS


_CLASSIFIERS = ("classification_models.models._common_blocks",)
_CLASSIFIERS_3D = ("classification_models_3D.models._common_blocks",)
_INCEPTION_RESNET = (
    "segmentation_models.backbones.inception_resnet_v2",
    "classification_models_3D.models.inception_resnet_v2",
)
KNOWN_FUNCTIONS = (
    KnownFunction(_CLASSIFIERS, "slice_tensor", frozenset({"start", "stop", "axis"}), "slice"),
    KnownFunction(_CLASSIFIERS_3D, "slice_tensor", frozenset({"start", "stop", "axis"}), "slice"),
    KnownFunction(_CLASSIFIERS, "expand_dims", frozenset({"channels_axis"}), "expand_2d"),
    KnownFunction(_CLASSIFIERS_3D, "expand_dims", frozenset({"channels_axis"}), "expand_3d"),
    KnownFunction(_INCEPTION_RESNET, "<lambda>", frozenset({"scale"}), "scaled_sum"),
)


def known_function(layer: Any) -> KnownFunction | None:
    """What a Keras 2 ``Lambda`` layer entry computes, when it is one of
    :data:`KNOWN_FUNCTIONS` (by its config alone); None for any other layer."""
    if not isinstance(layer, dict) or layer.get("class_name") != "Lambda":
        return None
    config = layer.get("config")
    if not isinstance(config, dict) or config.get("function_type") != "lambda":
        return None
    function, arguments = config.get("function"), config.get("arguments")
    if not (isinstance(function, list) and len(function) == 3 and isinstance(arguments, dict)):
        return None
    code, _defaults, closure = function
    if closure is not None or not isinstance(code, str):  # captured values: not the library's
        return None
    try:
        raw = base64.b64decode(code.encode("ascii"), validate=False)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    for known in KNOWN_FUNCTIONS:
        if config.get("module") not in known.modules or set(arguments) != known.arguments:
            continue
        name = known.name.encode()
        if bytes([len(name)]) + name in raw:  # marshal's short string: length, then bytes
            return known
    return None
