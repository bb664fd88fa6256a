"""The general exporter skips tf2onnx's loop and recurrent-cell rewriters only where a
graph has no loop: a Keras LSTM (a TensorFlow while loop) still becomes ONNX's LSTM
node, and a convolutional network, which skips them, still converts whole."""

import json
from collections import Counter

import keras
import onnx

from tests.folding.test_cli import fold


def op_counts(path):
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_an_lstm_still_becomes_an_onnx_lstm(tmp_path):
    inputs = keras.Input((5, 3), name="sequence")
    x = keras.layers.LSTM(4, return_sequences=True)(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lstm.keras")

    result = fold(tmp_path / "lstm.keras", "-o", tmp_path / "out", "--exporter", "tf2onnx")

    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exporter"] == "tf2onnx" and report["verification"]["passed"]
    assert op_counts(tmp_path / "out" / "unfolded.onnx")["LSTM"] == 1


def test_a_convnet_without_loops_converts_with_every_bn(tmp_path):
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "convnet.keras")

    result = fold(tmp_path / "convnet.keras", "-o", tmp_path / "out", "--exporter", "tf2onnx")

    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verification"]["passed"] and len(report["folded"]) == 2
    counts = op_counts(tmp_path / "out" / "unfolded.onnx")
    assert counts["BatchNormalization"] + counts["Mul"] >= 2
    assert "Loop" not in counts and "LSTM" not in counts
