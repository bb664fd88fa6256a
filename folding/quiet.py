"""Import TensorFlow and Keras without their start-up chatter on stderr."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null (C++ logging writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras(first_op: bool = True) -> None:
    """Import TensorFlow and Keras once, quietly. Later imports are free.

    ``first_op=False`` runs no TensorFlow op: the process stays single-threaded (TensorFlow
    starts its thread pools with the first op), as ``folding.confine`` needs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules:
        return
    with silenced_stderr():
        import keras  # noqa: F401
        import tensorflow as tf

        if first_op:
            tf.constant(0.0) + 1.0  # first op: triggers the remaining one-time log lines
