"""The general exporter (tf2onnx) on both of its paths: load vs fold + export + verify.

    .venv/bin/python bench/fallback_speed.py [--repeats 2] [--models ResNet50,MobileNetV2]

Each keras.applications model (random weights, randomised BN statistics) is saved to
a .keras file and exported as a SavedModel (``model.export``). Then, ``--repeats``
times, interleaved so that drift of the machine falls on all alike:

* ``keras direct`` and ``keras tf2onnx``: ``keras.models.load_model`` of the .keras
  file (the load), then ``fold_to_directory`` of the loaded model through the direct
  exporter and through tf2onnx (``exporter="tf2onnx"``, the Keras fallback);
* ``savedmodel``: ``load_saved_model`` (the scan and ``tf.saved_model.load``: the
  load), then the signature's conversion (``SavedModelSource``) and
  ``fold_to_directory``.

Prints the machine's load average before and after, then medians: the load,
fold+export+verify, their ratio (the issue's target: 3x for both tf2onnx paths), the
same ratio in CPU seconds of this process
(``time.process_time``, all its threads; on a shared machine the wall seconds swing
with the other load, the CPU seconds less), the stages (``convert`` is the
SavedModel's conversion, which is part of opening it; fold, export and verify are the
report's ``timings``), the probe rows verified on and the BN count of each
unfolded.onnx (BatchNormalization + Mul ops over the model's BN layers: every BN is
still there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.quiet import import_keras  # noqa: E402

PATHS = ("keras direct", "keras tf2onnx", "savedmodel")
STAGES = ("convert", "fold", "export", "verify")


def unfolded_bn_ops(directory: Path) -> int:
    import onnx

    graph = onnx.load(str(directory / "unfolded.onnx")).graph
    counts = Counter(node.op_type for node in graph.node)
    return counts["BatchNormalization"] + counts["Mul"]


def timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall s, CPU s of the process)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


class Runs:
    """Each path's seconds over the repeats."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.stages: dict[str, dict[str, list[float]]] = {}
        self.facts: dict[str, tuple[str, int]] = {}

    def add(self, key: str, wall: float, cpu: float, stages: dict[str, float] | None = None):
        self.wall.setdefault(key, []).append(wall)
        self.cpu.setdefault(key, []).append(cpu)
        for stage, seconds in (stages or {}).items():
            self.stages.setdefault(key, {}).setdefault(stage, []).append(seconds)

    def median(self, key: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu if cpu else self.wall)[key])

    def stage(self, key: str, stage: str) -> float | None:
        values = self.stages.get(key, {}).get(stage)
        return statistics.median(values) if values else None


def fold_keras(loaded: Any, out: Path, exporter: str, runs: Runs) -> None:
    from folding.options import FoldOptions
    from folding.pipeline import fold_to_directory

    options = FoldOptions(exporter="auto" if exporter == "direct" else exporter)
    report, wall, cpu = timed(lambda: fold_to_directory(loaded, out, options))
    assert report.exporter == exporter and report.verification.passed, report.summary()
    runs.add(f"keras {exporter}", wall, cpu, _stages(report))
    runs.facts[f"keras {exporter}"] = (str(report.verification.samples), unfolded_bn_ops(out))


def fold_saved_model(directory: Path, name: str, out: Path, runs: Runs) -> None:
    from folding.options import FoldOptions
    from folding.pipeline import fold_to_directory
    from folding.sources.saved_model.source import SavedModelSource, load_saved_model

    serving, wall, cpu = timed(lambda: load_saved_model(directory))
    runs.add("savedmodel load", wall, cpu)
    options = FoldOptions()
    source, convert_wall, convert_cpu = timed(
        lambda: SavedModelSource(serving, directory, name, options.opset)
    )
    report, wall, cpu = timed(lambda: fold_to_directory(source, out, options))
    assert report.verification.passed, report.summary()
    stages = {"convert": convert_wall, **_stages(report)}
    runs.add("savedmodel", convert_wall + wall, convert_cpu + cpu, stages)
    runs.facts["savedmodel"] = (str(report.verification.samples), unfolded_bn_ops(out))


def _stages(report: Any) -> dict[str, float]:
    return {stage: report.timings[f"{stage}_s"] for stage in ("fold", "export", "verify")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="ResNet50,MobileNetV2")
    args = parser.parse_args()
    import_keras()
    import keras

    from tests import zoo

    load_before = _load_average()
    with tempfile.TemporaryDirectory() as scratch:
        rows = measure(keras, zoo, Path(scratch), args)
    print(f"load average (1 min) {load_before} before, {_load_average()} after")
    print_table(rows, args.repeats)


def _load_average() -> str:
    """The machine's 1-minute load average: how many others shared its cores."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # not on this platform
        return "unknown"


def measure(keras: Any, zoo: Any, workdir: Path, args: Any) -> list[tuple]:
    rows = []
    for name in args.models.split(","):
        model = getattr(keras.applications, name)(weights=None)
        batch_norms = sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
        source = workdir / f"{name}.keras"
        saved_model = workdir / f"{name}-savedmodel"
        zoo.randomize_batch_norms(model, seed=1).save(source)
        model.export(str(saved_model), verbose=False)
        del model
        runs = Runs()
        for repeat in range(args.repeats):
            loaded, wall, cpu = timed(
                lambda path=source: keras.models.load_model(path, compile=False)
            )
            runs.add("keras load", wall, cpu)
            for exporter in ("direct", "tf2onnx"):
                out = workdir / f"{name}-{exporter}-{repeat}"
                out.mkdir()
                fold_keras(loaded, out, exporter, runs)
                shutil.rmtree(out)  # ~0.2 GB each for ResNet50
            del loaded
            out = workdir / f"{name}-savedmodel-{repeat}"
            out.mkdir()
            fold_saved_model(saved_model, name, out, runs)
            shutil.rmtree(out)
        for path in PATHS:
            load_key = "savedmodel load" if path == "savedmodel" else "keras load"
            load, load_cpu = runs.median(load_key), runs.median(load_key, cpu=True)
            total, total_cpu = runs.median(path), runs.median(path, cpu=True)
            stages = " / ".join(
                "-" if runs.stage(path, s) is None else f"{runs.stage(path, s):.2f}" for s in STAGES
            )
            samples, bn_ops = runs.facts[path]
            ratios = (total / load, total_cpu / load_cpu)
            rows.append(
                (name, path, load, total, *ratios, stages, samples, f"{bn_ops}/{batch_norms}")
            )
    return rows


def print_table(rows: list[tuple], repeats: int) -> None:
    print(f"{repeats} interleaved repeats, medians (seconds):")
    header = (
        f"| {'model':<12} | {'path':<13} | {'load':>6} | {'fold+export+verify':>18} "
        f"| {'ratio':>6} | {'CPU ratio':>9} | {'convert / fold / export / verify':>32} "
        f"| {'probes':>6} | {'BN ops in unfolded':>18} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for name, path, load, total, ratio, cpu_ratio, stages, samples, bns in rows:
        print(
            f"| {name:<12} | {path:<13} | {load:>6.2f} | {total:>18.2f} | {ratio:>5.1f}x "
            f"| {cpu_ratio:>8.1f}x | {stages:>32} | {samples:>6} | {bns:>18} |"
        )


if __name__ == "__main__":
    main()
