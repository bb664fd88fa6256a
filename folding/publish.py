"""The output directory: the files every fold writes, and writing it all at once (build it
beside its destination, then move it in)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FOLDED_FILE = "model.onnx"
UNFOLDED_FILE = "unfolded.onnx"
REPORT_FILE = "report.json"


def publish_directory(build: Callable[[Path], Any], destination: Path) -> Any:
    """Run ``build(tmp)`` in a fresh temporary directory beside ``destination``, then move
    its files into ``destination``; on any error nothing is left behind."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        result = build(staging)
        if not destination.exists():
            os.replace(staging, destination)
        else:
            for item in staging.iterdir():
                os.replace(item, destination / item.name)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
