"""What the client prints: rich tables (as wide as the terminal; wide enough when piped),
the server's JSON as it came (``--json``), a fold report's summary and the stage progress."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from service.client.http import STAGES


def console(stderr: bool = False) -> Any:
    """A terminal's own width; piped output wide enough that tables keep every column."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, soft_wrap=False, width=200)
    return console


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(table)


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def when(timestamp: float | None) -> str:
    return (
        "" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    )


def print_report_summary(report: dict[str, Any]) -> None:
    rows = [
        [entry["bn"], f"folded {entry['direction']}", entry["into"]] for entry in report["folded"]
    ]
    rows += [[e["bn"], "kept", e["reason"]] for e in report["not_folded"]]
    rows += [[e["layer"], "removed", e["class_name"]] for e in report.get("removed", [])]
    if rows:
        table(None, ["layer", "action", "into / reason"], rows)
    verification = report.get("verification")
    if verification:
        print(
            f"verification {verification['verdict']}: fold error "
            f"{verification['fold_error']:.3g}, export error {verification['export_error']:.3g} "
            f"(relative to each output's scale)"
        )
    diagnostics = report.get("diagnostics_summary") or {}
    if diagnostics.get("flagged"):
        print(
            f"diagnostics: {diagnostics['flagged']} of {diagnostics['checked']} "
            "BatchNormalizations flagged"
        )
        for bn, flags in diagnostics.get("flags", {}).items():
            for flag in flags:
                print(f"  {bn}: {flag}")
    elif diagnostics:
        print(f"diagnostics: none of {diagnostics.get('checked', 0)} BatchNormalizations flagged")
    if report.get("variants"):
        from folding.precision import describe

        for variant in report["variants"]:
            print(describe(variant))


class Progress:
    """A progress bar through the fold stages on a terminal, one line per stage elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.console = console(stderr=True)
        self.bar: Any = None
        self.last_state: str | None = None

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                TextColumn("{task.fields[step]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("queued", total=len(STAGES), step="")
        return self

    def update(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        state = job["state"]
        if self.bar is not None:
            index = STAGES.index(state) if state in STAGES else len(STAGES)
            within = job.get("progress") or 0.0
            completed = len(STAGES) if state == "done" else index + min(max(within, 0.0), 1.0)
            step = f"{min(index + 1, len(STAGES))}/{len(STAGES)}"
            self.bar.update(self.task, completed=completed, description=state, step=step)
        elif state != self.last_state:
            print(f"{job.get('name')} v{job.get('version')}: {state}", file=sys.stderr)
        self.last_state = state

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
