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


def trusted_classes(config: Any) -> dict[str, type]:
    """The classes ``config`` (a model config, JSON-decoded) names by a ``module``
    inside one the operator imported, keyed by registered and class name, for
    ``keras.saving.custom_object_scope``. Nothing outside those modules is imported."""
    found: dict[str, type] = {}
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
            target = _defined_at_top(class_name)  # a Keras 2 file names the class only
            if target is not None:
                found.setdefault(class_name, target)
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


def _defined_at_top(class_name: str) -> type | None:
    """The class ``class_name`` that a module of the operator's packages defines (not
    imports), among those imported; None for a name Keras has itself."""
    import keras

    if not _IMPORTED or hasattr(keras.layers, class_name):
        return None
    packages = {name.split(".")[0] for name in _IMPORTED}
    for name, module in sorted(sys.modules.items()):
        if name.split(".")[0] not in packages:
            continue
        target = getattr(module, class_name, None)
        if (
            isinstance(target, type)
            and hasattr(target, "from_config")
            and getattr(target, "__module__", "") == name
        ):
            return target
    return None


def _inside_imported(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _IMPORTED)
