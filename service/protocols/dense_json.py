"""A quick reading of the commonest TF Serving body: one dense array of numbers.

``{"instances": [[...], ...]}`` (or ``{"inputs": ...}``) of numbers is what nearly
every prediction request is, and reading it as nested Python lists costs most of the
request: orjson builds a list object per innermost row, and numpy then walks those
lists to find the shape and the dtype. Here the array's text is read flat instead:

- its brackets and commas, in order (the *skeleton*, ``[[,,],[,,]]``), give the
  shape, and must be exactly the skeleton of that shape: the array is rectangular;
  no slot is empty, which also keeps every number inside an innermost list;
- its numbers, with the brackets blanked out, are one flat JSON list for orjson,
  which checks each number as the general path's orjson would;
- strings, objects and ``true``/``false``/``null`` are left out by their first
  character, and ``NaN``/``Infinity`` by orjson.

The values then go through the same ``array_from_json`` as the general path. Anything
else (another key, a ragged or empty list, bad JSON) is not read here: ``read_dense``
answers None and the general decoder reads the body and gives its answer, so the
errors a client sees are the general path's, word for word
(``tests/service/test_dense_json.py`` compares the two on edited bodies).
"""

from __future__ import annotations

import math
import re

import numpy as np
import orjson

from service.protocols.codecs import array_from_json

_HEAD = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"(instances|inputs)"[ \t\n\r]*:[ \t\n\r]*(?=\[)')
"""The start of a body whose one key is ``instances`` or ``inputs``, up to its ``[``."""
_WHITESPACE = b" \t\n\r"
_NOT_NUMBERS = (b'"', b"{", b"t", b"f", b"n")
"""What strings, objects, true, false and null begin with: no number holds one."""
_OPEN, _CLOSE, _COMMA = b"[],"
MAX_DEPTH = 32
"""Deeper arrays are left to the general decoder (numpy allows 64 dimensions)."""
_EXACT_INTEGERS = 2.0**53
"""Below this, an integer converts to float64 exactly (so float64 then float32 is float32)."""


def read_dense(raw: bytes) -> tuple[str, list, tuple[int, ...]] | None:
    """``(key, values, shape)`` for a body that is one rectangular array of JSON numbers:
    ``values`` the numbers in row-major order as orjson reads them; None for any other
    body (which the general decoder then reads)."""
    head = _HEAD.match(raw)
    if head is None:
        return None
    body = raw.rstrip(_WHITESPACE)
    if not body.endswith(b"}"):
        return None
    text = body[head.end() : -1].rstrip(_WHITESPACE)
    if any(mark in text for mark in _NOT_NUMBERS):
        return None
    shape = _shape(_without_whitespace(text))
    if shape is None:
        return None
    # Blanked (not deleted) brackets keep "[1]2" two tokens, which orjson refuses.
    flat = b"[" + text.replace(b"[", b" ").replace(b"]", b" ") + b"]"
    try:
        values = orjson.loads(flat)
    except orjson.JSONDecodeError:  # a bad number, a missing comma, "1 2"
        return None
    if len(values) != math.prod(shape):
        return None
    return head.group(1).decode(), values, shape


def _without_whitespace(text: bytes) -> bytes:
    compact = text.replace(b" ", b"")
    if any(space in compact for space in (b"\t", b"\n", b"\r")):
        compact = compact.translate(None, _WHITESPACE)
    return compact


def _shape(compact: bytes) -> tuple[int, ...] | None:
    """The shape of the array written (without whitespace) in ``compact``, when its
    brackets and commas are those of a rectangular array with something in every slot;
    None otherwise (ragged, an empty list or slot, misplaced brackets, too deep)."""
    text = np.frombuffer(compact, np.uint8)
    marks_at = np.flatnonzero((text == _OPEN) | (text == _CLOSE) | (text == _COMMA))
    marks = text[marks_at]
    # An empty slot: "[" or "," right before "," or "]". A number outside an innermost
    # list ("[[1,]2]") leaves one, since the commas are where a rectangular array has them.
    opening = (marks[:-1] == _OPEN) | (marks[:-1] == _COMMA)
    closing = (marks[1:] == _COMMA) | (marks[1:] == _CLOSE)
    if (opening & closing & (np.diff(marks_at) == 1)).any():
        return None
    return _skeleton_shape(marks.tobytes())


def _skeleton_shape(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape of a rectangular array whose skeleton (its brackets and commas, in
    order) this is, or None when it is not one."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if not 0 < depth <= MAX_DEPTH:
        return None
    innermost_end = skeleton.find(b"]")
    if innermost_end <= depth - 1:  # "[]": an empty list
        return None
    sizes = [skeleton.count(b",", depth - 1, innermost_end) + 1]
    expected = b"[" + b"," * (sizes[0] - 1) + b"]"
    for level in range(depth - 1, 0, -1):
        # The first list at this level ends at the first run of its closing brackets.
        closers = b"]" * (depth - level + 1)
        end = skeleton.find(closers) + len(closers) if level > 1 else len(skeleton)
        count, remainder = divmod(end - (level - 1) - 1, len(expected) + 1)
        if count < 1 or remainder:
            return None
        sizes.append(count)
        expected = b"[" + b",".join([expected] * count) + b"]"
    if skeleton != expected:
        return None
    return tuple(reversed(sizes))


def dense_array(values: list, dtype: np.dtype, what: str) -> np.ndarray:
    """``array_from_json(values, dtype, what)`` for the flat ``values`` of ``read_dense``.

    For float32 and float64 the numbers are read straight into float64, which is what
    ``array_from_json`` does with them too, integers included while they are exact in
    float64 (and no integer that is can overflow float32); otherwise it is that call.
    """
    if dtype in (np.float32, np.float64):
        try:
            array = np.fromiter(values, np.float64, len(values))
        except (TypeError, OverflowError):  # an integer beyond float64
            return array_from_json(values, dtype, what)
        if np.abs(array).max() < _EXACT_INTEGERS:
            return array_from_json(array, dtype, what)
    return array_from_json(values, dtype, what)
