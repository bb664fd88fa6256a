"""The quick reading of a dense TF Serving body answers exactly as the general decoder.

``tfserving.read_request`` reads ``{"instances": [[...]]}`` of numbers without nested
lists (``service.protocols.dense_json``); every body here is also read the general way
(``parse_json`` then ``parse_request``) and the two answers, arrays or errors, must be
the same. A last test does the same through a real server.
"""

from __future__ import annotations

import json
import warnings

import httpx
import numpy as np
import pytest

from service.errors import InvalidInput
from service.http_api.bodies import TensorSpec
from service.protocols import tfserving
from service.protocols.codecs import parse_json
from service.protocols.dense_json import read_dense

ROWS = [TensorSpec("x", np.dtype(np.float32), (-1, 2))]


def answer(read, raw: bytes, specs) -> tuple:
    try:
        with warnings.catch_warnings():  # numpy's, casting huge numbers to small integers
            warnings.simplefilter("ignore", RuntimeWarning)
            inputs, row_format = read(raw, specs)
    except InvalidInput as error:
        return ("error", str(error))
    return (
        "ok",
        row_format,
        {name: (array.dtype.str, array.shape, array.tobytes()) for name, array in inputs.items()},
    )


def general(raw: bytes, specs):
    return tfserving.parse_request(parse_json(raw), specs)


def same_answer(raw: bytes, specs=ROWS) -> tuple:
    quick = answer(tfserving.read_request, raw, specs)
    assert quick == answer(general, raw, specs), raw
    return quick


READ_QUICKLY = [
    b'{"instances": [[1, 2], [3, 4]]}',  # integers
    b'{"instances": [[1.5e3, -2E-2], [3e+1, 0.25]]}',  # exponents
    b'{"instances": [[-0.0, 0.0], [-0, 0]]}',  # negative zero, as float and as integer
    b' \n{ "inputs" :\t[ [ 1 , 2 ] ,\r\n[ 3 , 4 ] ] }\n',  # whitespace everywhere
    b'{"instances": [[0.1, 0.30000000000000004]]}',  # float64 text rounded to float32
    b'{"instances": [[16777217, 9007199254740993]]}',  # integers float32 cannot hold
    b'{"instances": [[1e38, -3.4028235e38]]}',
    b'{"instances": [[1e39, 1]]}',  # beyond float32: the general path's 400
    b'{"instances": [[1, 2, 3]]}',  # the dataplane, not the decoder, checks the shape
    b'{"instances": [1, 2]}',
    b'{"instances": [[[1]], [[2]]]}',
]

LEFT_TO_THE_GENERAL_PATH = [
    b'{"instances": [[1, 2], [3]]}',  # ragged
    b'{"instances": [[1, 2], 3]}',
    b'{"instances": [[1, 2], [3, [4]]]}',
    b'{"instances": [[1,]3, [4, 5]]}',  # a number outside its innermost list
    b'{"instances": [[1], []5]}',
    b'{"instances": [5[1, 2]]}',
    b'{"instances": [[1, 2]5]}',
    b'{"instances": [[1 2]]}',  # whitespace inside a number
    b'{"instances": [[- 1, 2]]}',
    b'{"instances": [[1, 2],]}',
    b'{"instances": [[1,, 2]]}',
    b'{"instances": [[]]}',
    b'{"instances": []}',
    b'{"instances": [[NaN, 1]]}',  # TF Serving's non-finite literals: the json module's
    b'{"instances": [[Infinity, -Infinity]]}',
    b'{"instances": [[1e400, 1]]}',
    b'{"instances": [["1", 2]]}',  # strings, literals, objects
    b'{"instances": [[true, 2]]}',
    b'{"instances": [[null, 2]]}',
    b'{"instances": [{"x": [1, 2]}]}',
    b'{"instances": [{"b64": "AAAA"}]}',
    b'{"instances": [[01, 2]]}',  # JSON has no leading zeros
    b'{"instances": [[1., 2]]}',
    b'{"instances": [[.5, 2]]}',
    b'{"instances": [[+1, 2]]}',
    b'{"instances": [[0x10, 2]]}',
    b'{"instances": [[1, 2]]] }',
    b'{"instances": [[1, 2]], "signature_name": "serving_default"}',
    b'{"signature_name": "other", "instances": [[1, 2]]}',
    b'{"instances": [[1, 2]], "inputs": [[1, 2]]}',
    b'{"instances": [[1, 2]]',
    b'{"instances": [[1, 2]]}}',
    b'{"instances": 5}',
    b"[[1, 2]]",
    b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",  # deeper than numpy allows
    b'{"instances": ' + b"[" * 2000 + b"1" + b"]" * 2000 + b"}",  # deeper than orjson allows
]


@pytest.mark.parametrize("raw", READ_QUICKLY)
def test_dense_bodies_are_read_quickly_to_the_same_arrays(raw):
    assert read_dense(raw) is not None
    same_answer(raw)


@pytest.mark.parametrize("raw", LEFT_TO_THE_GENERAL_PATH)
def test_other_bodies_get_the_general_answer(raw):
    assert read_dense(raw) is None
    same_answer(raw)


def test_errors_of_a_dense_body_name_the_culprit():
    kind, message = same_answer(b'{"instances": [[1e39, 1]]}')
    assert kind == "error" and "input 'x'" in message
    assert "float32" in message and "1e+39" in message
    kind, message = same_answer(b'{"instances": [[1, 2], [3]]}')
    assert kind == "error" and "ragged" in message


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8]
)
def test_every_dtype_converts_as_the_general_path_does(dtype):
    specs = [TensorSpec("x", np.dtype(dtype), (-1, 3))]
    for raw in [
        b'{"instances": [[1, 2, 3]]}',
        b'{"instances": [[1.5, -2.5, 300]]}',
        b'{"instances": [[70000, 1e5, -1]]}',  # over float16 and the small integers
        b'{"instances": [[9223372036854775807, 18446744073709551615, 1]]}',
        b'{"instances": [[18446744073709551616, 1, 2]]}',
        b'{"instances": [[100000000000000000000000, 1, 2]]}',
    ]:
        same_answer(raw, specs)


def test_a_model_with_several_inputs_is_left_to_the_general_path():
    specs = [TensorSpec("a", np.dtype(np.float32), (-1, 2)), TensorSpec("b", ROWS[0].dtype, (-1,))]
    kind, message = same_answer(b'{"instances": [[1, 2]]}', specs)
    assert kind == "error" and "2 inputs" in message


ALPHABET = b"[],0123456789.-+eE \n"


def test_random_edits_of_dense_bodies_get_the_same_answer_both_ways():
    """Bodies one to three edits away from a dense one (characters inserted, deleted or
    replaced from the text of numbers and arrays): 3,000 of them, fast path or not."""
    rng = np.random.default_rng(21)
    seeds = [
        json.dumps({"instances": rng.normal(size=shape).round(3).tolist()}).encode()
        for shape in [(2, 2), (1, 3, 2), (3,), (2, 1, 1)]
    ] + [b'{"instances": [[1,2],[3,4]]}', b'{"inputs":[[[1],[2]],[[3],[4]]]}']
    quick = 0
    for _ in range(3000):
        raw = bytearray(seeds[rng.integers(len(seeds))])
        for _ in range(rng.integers(1, 4)):
            start = raw.find(b"[") + 1 or len(raw) // 2
            position = int(rng.integers(start, len(raw) - 1))
            character = ALPHABET[rng.integers(len(ALPHABET))]
            edit = rng.integers(3)
            if edit == 0:
                raw.insert(position, character)
            elif edit == 1:
                del raw[position]
            else:
                raw[position] = character
        body = bytes(raw)
        specs = [TensorSpec("x", np.dtype(np.float32), (-1,))]
        quick += read_dense(body) is not None
        same_answer(body, specs)
    assert quick > 100  # the fast path was taken, not only the fallback


def test_through_the_server_a_dense_body_answers_as_the_general_path(server, digits):
    """The same rows as a dense body and with a ``signature_name`` (which the quick
    reading leaves to the general decoder): the same status and the same JSON."""
    rows = digits.data[:3].tolist()
    url = f"{server.url}/v1/models/digits:predict"
    cases = [
        rows,
        [[int(value) for value in row] for row in rows],
        [[1e39, *row[1:]] for row in rows],  # beyond float32
        [row[:63] for row in rows],
    ]
    for instances in cases:
        dense = json.dumps({"instances": instances})
        named = json.dumps({"instances": instances, "signature_name": "serving_default"})
        assert read_dense(dense.encode()) is not None and read_dense(named.encode()) is None
        quick = httpx.post(url, content=dense, headers={"content-type": "application/json"})
        slow = httpx.post(url, content=named, headers={"content-type": "application/json"})
        assert (quick.status_code, quick.json()) == (slow.status_code, slow.json())
    overflow = httpx.post(url, content=json.dumps({"instances": cases[2]}))
    assert overflow.status_code == 400 and "float32" in overflow.json()["error"]
