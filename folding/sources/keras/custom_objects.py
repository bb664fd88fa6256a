"""Operator-trusted modules that register custom Keras layers.

A ``.keras`` file names its layers by registered name; a custom layer loads
(in safe mode) only when the class is registered, which importing its module
does (``keras.saving.register_keras_serializable``). The modules come from the
operator: ``foldserve fold --custom-objects MODULE`` or the server's
``FOLDSERVE_CUSTOM_OBJECTS``; an upload can never name one.
"""

from __future__ import annotations

import importlib
import re

from folding.errors import FoldingError

MODULE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


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
    return names
