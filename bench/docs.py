"""Writing a bench's table into a page of docs/: one ``## `` section, replaced in place."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, section: str, title: str = "# Benchmarks") -> None:
    """Put ``section`` (starting with ``heading``) where ``heading`` stands in ``path``, up
    to the next ``## `` heading; at the end of the page when it is not there yet."""
    text = path.read_text() if path.exists() else f"{title}\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section.rstrip("\n") + "\n" + ("" if end < 0 else text[end:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
