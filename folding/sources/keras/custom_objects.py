"""Operator-trusted modules that register custom Keras layers.

A ``.keras`` file names its layers by registered name; a custom layer loads
(in safe mode) only when the class is registered, which importing its module
does (``keras.saving.register_keras_serializable``). The modules come from the
operator: ``foldserve fold --custom-objects MODULE`` or the server's
``FOLDSERVE_CUSTOM_OBJECTS``; an upload can never name one outside them.

A model library that does not register its classes (kimm) is trusted the way
Keras trusts keras_hub: a class the file names by a module path inside a module
the operator imported is looked up there (``trusted_classes``). A Keras 2 file
records no module for its classes, only their names: a class of a name Keras does
not have, defined at the top level of a module (already imported) of a package the
operator imported a module of, is taken from there.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

from folding.errors import FoldingError

MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IMPORTED: list[str] = []
"""The operator's modules imported in this process, in order."""


def module_names(spec: str | None) -> list[str]:
    """``"a.b, c"`` as ``["a.b", "c"]``; a name that is not a dotted module path is refused."""
    names = [part.strip() for part in (spec or "").split(",") if part.strip()]
    for name in names:
        if not MODULE_PATTERN.fullmatch(name):
            raise FoldingError(f"custom objects: {name!r} is not a module name")
    return names


def import_modules(spec: str | None) -> list[str]:
    """Import each module of ``spec`` (comma-separated) so that its layers register."""
    names = module_names(spec)
    if names:
        from folding.quiet import import_keras

        import_keras()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # the operator's module failed: say which and why
            raise FoldingError(
                f"custom objects module '{name}' could not be imported: "
                f"{type(error).__name__}: {error}"
            ) from None
        if name not in _IMPORTED:
            _IMPORTED.append(name)
    return names


def trusted_classes(config: Any, by_name: bool = False) -> dict[str, type]:
    """The classes ``config`` (a model config, JSON-decoded) names by a ``module``
    inside one the operator imported, keyed by registered and class name, for
    ``keras.saving.custom_object_scope``. Nothing outside those modules is imported.
    With ``by_name`` (a Keras 2 file, whose entries name no module), a layer class named
    without a module is looked up among the layers the operator's packages define."""
    found: dict[str, type] = {}
    layers_by_name: dict[str, type] | None = None
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        stack.extend(item.values())
        module, class_name = item.get("module"), item.get("class_name")
        if isinstance(class_name, str) and module is None and isinstance(item.get("config"), dict):
            if by_name:
                if layers_by_name is None:
                    layers_by_name = _layers_defined()
                if class_name in layers_by_name:
                    found.setdefault(class_name, layers_by_name[class_name])
            continue
        if not (isinstance(module, str) and isinstance(class_name, str)):
            continue
        if not MODULE_PATTERN.fullmatch(module) or not _inside_imported(module):
            continue
        try:
            target = getattr(importlib.import_module(module), class_name, None)
        except Exception:  # not a module of the package after all: Keras says what is missing
            continue
        # defined there, not imported into it (a re-exported keras.layers.Lambda, say)
        defined_in = getattr(target, "__module__", "")
        if (
            isinstance(target, type)
            and hasattr(target, "from_config")
            and _inside_imported(defined_in)
        ):
            found.setdefault(class_name, target)
            registered = item.get("registered_name")
            if isinstance(registered, str):
                found.setdefault(registered, target)
    return found


def _layers_defined() -> dict[str, type]:
    """The Keras layer classes that the imported modules of the operator's packages
    define (not import), by name; one pass over the modules, reading each one's
    namespace (no attribute hooks run). A name Keras has itself is left out, so
    a package cannot stand in for ``Model`` or ``Dense``."""
    import keras

    if not _IMPORTED:
        return {}
    packages = {name.split(".")[0] for name in _IMPORTED}
    found: dict[str, type] = {}
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] not in packages:
            continue
        for attribute, target in list(getattr(module, "__dict__", {}).items()):
            if (
                attribute not in found
                and isinstance(target, type)
                and issubclass(target, keras.layers.Layer)
                and getattr(target, "__module__", "") == name
                and not _keras_has(keras, attribute)
            ):
                found[attribute] = target
    return found


def _keras_has(keras: Any, name: str) -> bool:
    return name == "Functional" or any(
        hasattr(namespace, name) for namespace in (keras, keras.layers, keras.models)
    )


def _inside_imported(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _IMPORTED)
