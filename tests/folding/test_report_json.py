"""report.json is written as ``json.dumps(report, indent=2)`` writes it, character for
character, by a writer that joins strings instead of walking a generator per value."""

import json
import math

import numpy as np
import pytest

from folding.report import indented_json
from tests.folding.test_cli import fold

VALUES = [
    {},
    [],
    {"empty": [], "nested": {}},
    [1, 2.5, True, False, None, 'quote " and é and \n', -0.0, 1e-05, 1e300, 7],
    [math.nan, math.inf, -math.inf],
    {2: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    {"k": [[], [{}], [1.0, 2.0], (3, 4), [np.float64(0.1), 0.2]]},
    "just a string",
    3,
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_same_text_as_json_dumps(value):
    assert indented_json(value) == json.dumps(value, indent=2)


@pytest.mark.parametrize("value", [[np.float32(1.0)], {"a": object()}, {(1, 2): 3}])
def test_what_json_cannot_write_raises_type_error(value):
    with pytest.raises(TypeError):
        json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        indented_json(value)


def test_a_fold_report_reads_back_to_the_same_text(tmp_path):
    import keras

    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "small.keras")

    result = fold(tmp_path / "small.keras", "-o", tmp_path / "out", "--samples", "4")

    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "report.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2)
