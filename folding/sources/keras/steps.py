"""A Keras 3 ``.keras`` file loaded in two steps that can report how far they got.

``keras.models.load_model`` is one call that says nothing while it runs: for ResNet50
(103 MB) about 4 to 6 s on a busy 2-core machine, half of it building the layers from
the config (each variable created and filled by its initializer), half reading the
weights into them. Here the same two steps are made through Keras's public API:

1. ``keras.saving.deserialize_keras_object(config, safe_mode=True)`` builds the model
   (``compile_config`` dropped, as ``load_model(..., compile=False)`` does; outside
   Keras's object-sharing scope, so an object a config marks as shared is made once per
   use: layers shared in a functional model are shared by name and stay shared);
2. ``model.load_weights(weights)`` fills it from ``model.weights.h5``, read out of the
   archive into memory (as ``load_model`` itself does when memory allows) and handed to
   h5py as a ``BytesIO`` that counts the bytes h5py reads from it.

``progress(fraction)`` hears 0.0 first; while the model is built, up to ``BUILT`` in
proportion to the variables created so far (counted by ``tf.variable_creator_scope``)
of the arrays the weights file holds; then, while h5py reads the weights, the rest in
proportion to the bytes of the weights file read so far; 1.0 at the end (at most
``1 / STEP`` reports in all).

Only a plain archive (config, metadata and weights, no assets) whose weights are at most
``MAX_WEIGHTS_BYTES`` is loaded this way; ``in_steps(path)`` says whether a file is one.
Anything else goes to ``load_model``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLAIN_ENTRIES = {"config.json", "metadata.json", "model.weights.h5"}
WEIGHTS = "model.weights.h5"
MAX_WEIGHTS_BYTES = 2 * 1024**3
"""Larger weights are left to ``load_model`` (which then reads them from a copy on disk)."""
BUILT = 0.5
"""The progress reported once the layers are built (about half of the load's time)."""
STEP = 0.005
"""Least change of progress worth reporting while the weights are read."""

Progress = Callable[[float], None]


def in_steps(path: Path) -> bool:
    """Whether ``path`` is a ``.keras`` archive of config, metadata and weights only."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            weights = archive.getinfo(WEIGHTS) if WEIGHTS in names else None
    except (zipfile.BadZipFile, OSError):
        return False
    return names <= PLAIN_ENTRIES and weights is not None and weights.file_size <= MAX_WEIGHTS_BYTES


def load_in_steps(path: Path, config: dict[str, Any], progress: Progress) -> Any:
    """The model stored at ``path`` (whose parsed config is ``config``, left unchanged),
    built, then filled with its weights, with ``progress`` told how far it got."""
    import keras

    progress(0.0)
    with zipfile.ZipFile(path) as archive, archive.open(WEIGHTS) as member:
        data = member.read()
    config = {**copy.deepcopy(config), "compile_config": None}  # Keras pops from it
    with _counting_variables(_stored_arrays(data), _reporter(progress, 0.0, BUILT)):
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    progress(BUILT)
    with CountingWeights(data, _reporter(progress, BUILT, 1.0)) as weights:
        model.load_weights(weights)
    progress(1.0)
    return model


def _reporter(progress: Progress, start: float, end: float) -> Callable[[float], None]:
    """``progress`` told of a step's progress (a fraction) as the load's, from ``start``
    to ``end``, whenever it has moved by ``STEP`` at least."""
    reported = start

    def on_step(done: float) -> None:
        nonlocal reported
        fraction = start + (end - start) * min(1.0, done)
        if fraction - reported >= STEP:
            reported = fraction
            progress(fraction)

    return on_step


def _stored_arrays(data: bytes) -> int:
    """How many arrays (h5 datasets) a ``.weights.h5`` file holds: about how many
    variables building the model creates."""
    import h5py

    found = 0

    def visit(_: str, item: Any) -> None:
        nonlocal found
        found += isinstance(item, h5py.Dataset)

    with h5py.File(io.BytesIO(data), "r") as handle:
        handle.visititems(visit)
    return found


def _counting_variables(
    expected: int, on_step: Callable[[float], None]
) -> contextlib.AbstractContextManager:
    """A scope in which each variable TensorFlow creates calls ``on_step(created /
    expected)`` (``tf.variable_creator_scope``); on another backend, nothing."""
    import keras

    if keras.backend.backend() != "tensorflow" or expected == 0:
        return contextlib.nullcontext()
    import tensorflow as tf

    created = 0

    def creator(next_creator: Callable[..., Any], **kwargs: Any) -> Any:
        nonlocal created
        variable = next_creator(**kwargs)
        created += 1
        on_step(created / expected)
        return variable

    return tf.variable_creator_scope(creator)


class CountingWeights(io.BytesIO):
    """A ``.weights.h5`` file in memory that calls ``on_read(fraction read so far)`` as
    h5py reads it. Its ``str()`` ends in ``.weights.h5``: how Keras's ``load_weights``
    tells a weights file from a ``.keras`` archive (it hands a ``BytesIO`` to h5py)."""

    def __init__(self, data: bytes, on_read: Callable[[float], None]) -> None:
        super().__init__(data)
        self._size = max(1, len(data))
        self._on_read = on_read
        self.total = 0

    def __str__(self) -> str:
        return "model.weights.h5"

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._count(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self._count(count)
        return count

    def _count(self, count: int) -> None:
        self.total += count
        self._on_read(self.total / self._size)
