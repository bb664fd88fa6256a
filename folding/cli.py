"""``foldserve fold MODEL_PATH -o OUT_DIR``: the command line over the folding package."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from folding._compat import Subparsers
from folding.errors import FoldingError, InvalidOption
from folding.options import (
    DEFAULT_EXPORT_RTOL,
    DEFAULT_SIGNATURE,
    HALF_PRECISION_EXPORT_RTOL,
    FoldOptions,
    VerifyOptions,
)
from folding.publish import FOLDED_FILE, REPORT_FILE, UNFOLDED_FILE

DEFAULTS = FoldOptions()


def add_fold_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "fold",
        help="fold a Keras model's BatchNormalization layers and export it to ONNX",
        description="Writes OUT_DIR/model.onnx (folded), OUT_DIR/unfolded.onnx and "
        "OUT_DIR/report.json; exits non-zero and writes nothing on failure.",
    )
    parser.add_argument(
        "model_path",
        type=Path,
        help=".keras, .h5 or .onnx model file, a TensorFlow SavedModel directory, or a "
        ".zip/.tar.gz of one",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--opset", type=int, default=DEFAULTS.opset, help=f"ONNX opset (default {DEFAULTS.opset})"
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=DEFAULTS.verify.rtol,
        help="allowed max error relative to each output's scale (default %(default)g)",
    )
    parser.add_argument(
        "--export-rtol",
        type=float,
        default=None,
        help="allowed difference between the unfolded ONNX export and the Keras model, "
        f"relative to each output's scale (default {DEFAULT_EXPORT_RTOL:g}; "
        f"{HALF_PRECISION_EXPORT_RTOL:g} for float16 compute)",
    )
    parser.add_argument(
        "--noise-factor",
        type=float,
        default=DEFAULTS.verify.noise_factor,
        help="tolerances are raised to this many times the model's own float32 noise "
        f"(default {DEFAULTS.verify.noise_factor:g}; 0 = strict tolerances)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULTS.verify.samples,
        help="probe rows for verification, at most (large networks use fewer; "
        f"default {DEFAULTS.verify.samples})",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        default=None,
        help=".npy (one input) or .npz (by input name) probe data used instead of random rows",
    )
    parser.add_argument(
        "--recalibrate",
        type=Path,
        default=None,
        metavar="DATA",
        help=".npy/.npz (as --probe): re-estimate every BatchNormalization's moving mean and "
        "variance on DATA in inference mode before folding",
    )
    parser.add_argument(
        "--signature",
        default=None,
        help=f"a SavedModel's signature to fold (default {DEFAULT_SIGNATURE})",
    )
    parser.add_argument(
        "--exporter",
        choices=["auto", "tf2onnx"],
        default=DEFAULTS.exporter,
        help="a Keras model's ONNX exporter: auto (the direct one, tf2onnx for a model it "
        "cannot write; default) or tf2onnx",
    )
    parser.add_argument(
        "--custom-objects",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (trusted code; repeat or comma-separate) before loading a Keras "
        "model: the custom layers it registers with keras.saving.register_keras_serializable "
        "can then be loaded",
    )
    parser.add_argument(
        "--precision",
        default="",
        metavar="LIST",
        help="also write reduced-precision variants beside model.onnx, each verified against "
        "it: fp16, int8 or fp16,int8 (model.fp16.onnx, model.int8.onnx)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="ROWS",
        help=".npy/.npz (as --probe): rows of the model's own data that calibrate the int8 "
        "ranges and judge every variant (default: the random probes, weakly grounded)",
    )
    parser.add_argument(
        "--equalize",
        action="store_true",
        help="before int8, equalize consecutive Conv pairs whose channel ranges spread "
        "(cross-layer equalization); the report gives agreement with and without",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.98,
        metavar="FRACTION",
        help="top-1 agreement with float32 a classifier's variant must keep (default 0.98)",
    )
    parser.set_defaults(handler=run_fold)


def run_fold(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise FoldingError(f"--samples must be at least 1, got {args.samples}")
    if args.rtol <= 0:
        raise FoldingError(f"--rtol must be positive, got {args.rtol}")
    if args.export_rtol is not None and args.export_rtol <= 0:
        raise FoldingError(f"--export-rtol must be positive, got {args.export_rtol}")
    if args.noise_factor < 0:
        raise FoldingError(f"--noise-factor must be 0 or more, got {args.noise_factor}")
    from folding.precision import parse_precisions

    args.precisions = parse_precisions(args.precision)
    if args.calibration is not None and not args.precisions:
        raise FoldingError("--calibration calibrates the --precision variants; give --precision")
    if not 0 <= args.min_agreement <= 1:
        raise FoldingError(f"--min-agreement must be within 0..1, got {args.min_agreement}")
    if args.equalize and "int8" not in args.precisions:
        raise FoldingError("--equalize applies to the int8 variant; give --precision int8")
    from folding.pipeline import fold_to_directory
    from folding.sources import ONNX, format_of, open_source

    options = FoldOptions(
        verify=VerifyOptions(
            rtol=args.rtol,
            export_rtol=args.export_rtol,
            noise_factor=args.noise_factor,
            samples=args.samples,
            probes=args.probe,
        ),
        opset=args.opset,
        exporter=args.exporter,
        recalibrate=args.recalibrate,
        signature=args.signature,
        custom_objects=",".join(args.custom_objects),
    )
    with tempfile.TemporaryDirectory(prefix="foldserve-unpacked-") as scratch:
        try:  # an archive's SavedModel is unpacked into scratch, for as long as the fold runs
            source = open_source(
                args.model_path,
                options,
                unpack_into=Path(scratch) / "saved_model",
                external_data=True,  # the operator's own files, beside the model
            )
        except InvalidOption as error:
            raise FoldingError(f"--{error.option} {error.reason}") from None
        unfolded = UNFOLDED_FILE
        if format_of(args.model_path) == ONNX:
            unfolded += " (the original)"
        return _publish(args, lambda staging: fold_to_directory(source, staging, options), unfolded)


def _publish(args: argparse.Namespace, fold, unfolded: str = UNFOLDED_FILE) -> int:
    """Fold into a staging directory, move it to ``--output``, print the summary."""
    from folding.publish import publish_directory

    def build(staging: Path):
        report = fold(staging)
        if getattr(args, "precisions", ()):
            from folding.precision import add_variants

            add_variants(
                staging,
                args.precisions,
                args.calibration,
                args.equalize,
                min_agreement=args.min_agreement,
            )
        return report

    report = publish_directory(build, args.output)
    print(report.summary())
    if getattr(args, "precisions", ()):
        from folding.precision import variants_summary

        print(variants_summary(args.output))
    print(f"wrote {args.output}/{FOLDED_FILE}, {unfolded}, {REPORT_FILE}")
    return 0


def run(argv: list[str] | None, register: list, description: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="foldserve", description=description or __doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in register:
        add(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except FoldingError as error:
        print(f"foldserve: error: {error}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return run(argv, [add_fold_command])


if __name__ == "__main__":
    sys.exit(main())
