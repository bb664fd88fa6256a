"""Rows for ``predict`` and ``compare``: JSON text or a .json / .npy / .npz file, sent as
TF Serving's row (``instances``) or columnar (``inputs``) format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.client.http import EXIT_USAGE, ClientError


def load_rows(data: str | None, path: Path | None) -> Any:
    """Rows for ``instances``: JSON text, or a .json / .npy / .npz file (one input)."""
    if (data is None) == (path is None):
        raise ClientError("give the rows either as --data JSON or as --file PATH", EXIT_USAGE)
    if data is not None:
        try:
            return json.loads(data)
        except json.JSONDecodeError as error:
            raise ClientError(f"--data is not JSON: {error}", EXIT_USAGE) from None
    assert path is not None
    try:
        if path.suffix.lower() in (".npy", ".npz"):
            import numpy as np

            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                return {key: loaded[key].tolist() for key in loaded.files}
            return loaded.tolist()
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ClientError(f"cannot read {path}: {error}", EXIT_USAGE) from None


JSON_HEADERS = {"content-type": "application/json"}


def json_content(body: Any) -> bytes:
    """A request body as JSON; non-finite numbers as ``NaN`` / ``Infinity`` / ``-Infinity``,
    which TF Serving and foldserve read (httpx's ``json=`` refuses them)."""
    return json.dumps(body, allow_nan=True, separators=(",", ":")).encode()


def request_body(rows: Any) -> dict[str, Any]:
    """A list is the row format; an object of named columns (an .npz) the columnar one."""
    if isinstance(rows, dict) and "instances" not in rows and "inputs" not in rows:
        return {"inputs": rows}
    if isinstance(rows, dict):
        return rows
    return {"instances": rows}
