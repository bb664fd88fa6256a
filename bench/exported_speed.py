"""foldserve's model.onnx against the other ONNX files a Keras user could serve.

    .venv/bin/python bench/exported_speed.py [--families MobileNetV2 ResNet50 ...] [--all]
        [--batches 1 8] [--repeats 20] [--write]

For each keras.applications family (random weights, 224x224, nothing
downloaded) three files, timed side by side in one run on ONNX Runtime's CPU
provider with ORT_ENABLE_ALL and one intra-op thread:

* **foldserve**: ``model.onnx`` from ``fold_to_directory``, in a session made as
  the service makes it (``Pad_Fusion`` off, see ``folding.verify.fusions``);
* **keras export**: Keras's own ``model.export(path, format="onnx")`` (tf2onnx),
  after one call of the model; where it fails or writes a file that cannot be
  served on the model's inputs alone, the table says so;
* **ORT fused**: foldserve's ``unfolded.onnx`` with every ONNX Runtime fusion on
  (so ORT merges the BatchNormalizations itself at session load).

The sessions run in interleaved rounds (one run of each per round, the order
rotating from round to round) after a warm-up, so a machine busy with other
work slows all three alike; each figure is a median over ``--repeats`` rounds.
``ratio`` is foldserve's median over the best alternative's (< 1 is faster);
the last column is the interquartile range of foldserve's own runs over their
median, the noise a ratio must be read against. With ``--write`` the table
replaces its section in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from folding.quiet import import_keras  # noqa: E402

DEFAULT_FAMILIES = [
    "MobileNetV2",
    "ResNet50",
    "EfficientNetB0",
    "MobileNetV3Small",
    "ConvNeXtTiny",
    "DenseNet121",
]
SIZE = 224
SECTION = "## Exported graphs against other exporters"


def all_families() -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    from applications import FAMILIES

    return list(FAMILIES)


def make_session(data: bytes, disabled: tuple[str, ...] = ()) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    kwargs = {"disabled_optimizers": list(disabled)} if disabled else {}
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"], **kwargs)


def keras_export(model: object, workdir: Path) -> tuple[bytes | None, str]:
    """Keras's own ONNX export, or None and why it cannot be served."""
    import onnx

    path = workdir / "keras_export.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model.export(str(path), format="onnx", verbose=False)
    except Exception as error:  # whatever the exporter raises
        first = (str(error).strip().splitlines() or [""])[0][:120]
        return None, f"export fails: {type(error).__name__}: {first}"
    proto = onnx.load(str(path))
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value.name for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        return None, f"unusable: {len(inputs)} graph inputs (captured constants became inputs)"
    return path.read_bytes(), ""


def time_interleaved(
    sessions: dict[str, object], batch: np.ndarray, repeats: int
) -> dict[str, float]:
    feeds = {name: {s.get_inputs()[0].name: batch} for name, s in sessions.items()}
    for _ in range(3):
        for name, session in sessions.items():
            session.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for round_ in range(repeats):
        for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
            started = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()} | {
        f"{name}_iqr": float(np.subtract(*np.percentile(values, [75, 25]))) * 1000
        for name, values in times.items()
    }


def run_family(family: str, batches: list[int], repeats: int, workdir: Path) -> list[dict]:
    import_keras()
    import keras

    from folding.pipeline import FOLDED_FILE, UNFOLDED_FILE, fold_to_directory
    from folding.verify.fusions import ALWAYS_DISABLED_OPTIMIZERS

    model = getattr(keras.applications, family)(weights=None, input_shape=(SIZE, SIZE, 3))
    directory = workdir / family
    directory.mkdir()
    report = fold_to_directory(model, directory)
    model(np.zeros((1, SIZE, SIZE, 3), np.float32))
    exported, why = keras_export(model, workdir)
    sessions = {
        "foldserve": make_session(
            (directory / FOLDED_FILE).read_bytes(), ALWAYS_DISABLED_OPTIMIZERS
        ),
        "ort_fused": make_session((directory / UNFOLDED_FILE).read_bytes()),
    }
    if exported is not None:
        try:
            sessions["keras_export"] = make_session(exported)
        except Exception as error:  # ONNX Runtime refuses the file
            why = f"ORT cannot load it: {(str(error).splitlines() or [''])[0][:100]}"
    rows = []
    rng = np.random.default_rng(0)
    for size in batches:
        batch = rng.uniform(-1, 1, (size, SIZE, SIZE, 3)).astype(np.float32)
        medians = time_interleaved(sessions, batch, repeats)
        alternatives = [medians[k] for k in ("keras_export", "ort_fused") if k in medians]
        rows.append(
            {
                "family": family,
                "batch": size,
                "exporter": report.exporter,
                "foldserve": medians["foldserve"],
                "keras_export": medians.get("keras_export"),
                "keras_note": why,
                "ort_fused": medians["ort_fused"],
                "ratio": medians["foldserve"] / min(alternatives),
                "spread": medians["foldserve_iqr"] / medians["foldserve"],
            }
        )
    return rows


def format_row(row: dict) -> str:
    keras_cell = f"{row['keras_export']:.2f} ms" if row["keras_export"] else row["keras_note"]
    return (
        f"| {row['family']} | {row['batch']} | {row['foldserve']:.2f} ms | {keras_cell} | "
        f"{row['ort_fused']:.2f} ms | {row['ratio']:.2f}x | {100 * row['spread']:.0f}% |"
    )


HEADER = [
    "| model | batch | foldserve model.onnx | Keras export (tf2onnx) "
    "| ORT fusions on unfolded.onnx | foldserve / best other | foldserve IQR / median |",
    "|---|---|---|---|---|---|---|",
]


def write_doc(lines: list[str], arguments: str) -> None:
    from bench.docs import replace_section

    path = ROOT / "docs" / "benchmarks.md"
    section = "\n".join(
        [
            SECTION,
            "",
            f"`python bench/exported_speed.py {arguments}` on {platform.machine()} "
            f"({platform.python_version()}): ONNX Runtime CPU, ORT_ENABLE_ALL, one intra-op "
            f"thread, {SIZE}x{SIZE}, random weights, medians of interleaved rounds. The CPU "
            "was shared with other work while this ran: interleaving keeps the ratios fair, "
            "the absolute figures are noisier than on an idle machine.",
            "",
            *HEADER,
            *lines,
            "",
            "How to read it: after ONNX Runtime's own graph optimisations, foldserve's "
            "model.onnx and ORT's fused unfolded.onnx are the same graph on these families "
            "(equal op counts: Conv+Clip and Conv+activation fused, gelu as one Gelu, no Pad "
            "or layout transposes left over), so a ratio off 1.0 by less than the IQR column "
            "is timing noise, not the file. Keras's own export is unusable where its file has "
            "more graph inputs than the model (captured constants turned into inputs).",
            "",
        ]
    )
    replace_section(path, SECTION, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES)
    parser.add_argument("--all", action="store_true", help="every keras.applications family")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    families = all_families() if args.all else args.families
    print("\n".join(HEADER), flush=True)
    lines = []
    for family in families:
        with tempfile.TemporaryDirectory() as workdir:
            try:
                rows = run_family(family, args.batches, args.repeats, Path(workdir))
            except Exception as error:  # one family failing must not stop the table
                line = (
                    f"| {family} | - | failed: {type(error).__name__}: {str(error)[:100]} | | | |"
                )
                print(line, flush=True)
                lines.append(line)
                continue
        for row in rows:
            lines.append(format_row(row))
            print(lines[-1], flush=True)
    if args.write:
        write_doc(lines, " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
