"""What the bench scripts share: foldserve on 127.0.0.1 for the length of a block (the
tests' own server, started the same way), a scratch directory with Keras imported quietly,
a fold timed into a table row, and the Markdown table."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import answers_200, free_port, wait_until  # noqa: E402
from tests.service.conftest import (  # noqa: E402
    DEMO_SOURCE,
    make_repository,
    serving,
    serving_grpc,
)

__all__ = [
    "DEMO_SOURCE",
    "ROOT",
    "answers_200",
    "free_port",
    "keras_scratch",
    "make_repository",
    "markdown_table",
    "serving",
    "serving_grpc",
    "timed_fold",
    "wait_until",
]


@contextlib.contextmanager
def keras_scratch() -> Iterator[Path]:
    """A scratch directory, removed afterwards, with Keras imported (and quietened)."""
    from folding.quiet import import_keras

    import_keras()
    with tempfile.TemporaryDirectory() as scratch:
        yield Path(scratch)


def timed_fold(model, out: Path, row: dict, seconds: str, error_width: int):
    """``fold_to_directory(model, out)``, its seconds put in ``row[seconds]`` and the first
    line of a failure (cut at ``error_width``) in ``row["error"]``; the report, or None
    where a failure has none."""
    from folding.errors import FoldingError
    from folding.pipeline import fold_to_directory

    started = time.perf_counter()
    try:
        report = fold_to_directory(model, out)
    except FoldingError as error:
        row["error"] = str(error).splitlines()[0][:error_width]
        report = getattr(error, "report", None)
    row[seconds] = time.perf_counter() - started
    return report


def markdown_table(header: str, rows: Iterable[dict], line: Callable[[dict], str]) -> str:
    """``header``, its rule, and one ``line(row)`` a row."""
    rule = "|" + "---|" * (header.count("|") - 1)
    return "\n".join([header, rule, *map(line, rows)])
