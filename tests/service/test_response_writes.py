"""A response's head and body leave the server in one write (``ResponseWriter``).

Raw sockets against a real server on 127.0.0.1: a small response arrives whole in the
first read; a response with no body (HEAD) still arrives, and so does a large one (written
after its head); pipelined requests get their answers in order; ``Expect: 100-continue``
is answered before the body is sent.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tests.service.conftest import serving
from tests.service.test_limits import QUIET, onnx_repository


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with serving(onnx_repository(tmp_path_factory.mktemp("writes")), QUIET) as server:
        yield server


def predict_request(body: bytes, *extra: bytes) -> bytes:
    head = [
        b"POST /v1/models/mlp:predict HTTP/1.1",
        b"Host: x",
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n"


def body_of_rows(rows: int) -> bytes:
    values = np.random.default_rng(0).standard_normal((rows, 64)).round(3)
    return json.dumps({"instances": values.tolist()}).encode()


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One response (head, body) off ``sock``, and what followed it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        data += receive(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(header(head, b"content-length") or 0)
    while len(rest) < length:
        rest += receive(sock)
    return head, rest[:length], rest[length:]


def receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed the connection"
    return chunk


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def test_a_small_response_arrives_whole_in_the_first_read(running):
    body = body_of_rows(1)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        for _ in range(5):  # each on the same kept-alive connection
            sock.sendall(predict_request(body) + body)
            first = receive(sock)
            head, _, answer = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), first
            assert len(answer) == int(header(head, b"content-length")), first
            assert len(json.loads(answer)["predictions"][0]) == 10


def test_a_response_without_a_body_still_arrives(running):
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += receive(sock)
        head, _, after = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 "), data
        assert after == b""
        # and the connection still serves the next request
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        head, answer, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and json.loads(answer) == {"ready": True}


def test_pipelined_requests_are_answered_in_order(running):
    one, many = body_of_rows(1), body_of_rows(3)
    requests = [
        predict_request(one) + one,
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        predict_request(many) + many,
        b"GET /v1/models/missing HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        answers, rest = [], b""
        for _ in requests:
            head, answer, rest = read_response(sock, rest)
            answers.append((int(head.split(b" ")[1]), json.loads(answer)))
    assert [status for status, _ in answers] == [200, 200, 200, 404]
    assert len(answers[0][1]["predictions"]) == 1
    assert answers[1][1] == {"live": True}
    assert len(answers[2][1]["predictions"]) == 3
    assert "missing" in answers[3][1]["error"]


def test_expect_100_continue_is_answered_before_the_body(running):
    body = body_of_rows(2)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(predict_request(body, b"Expect: 100-continue"))
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += receive(sock)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        _, _, rest = interim.partition(b"\r\n\r\n")
        sock.sendall(body)
        head, answer, _ = read_response(sock, rest)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert len(json.loads(answer)["predictions"]) == 2


def test_a_large_response_arrives_whole_after_its_head(running):
    body = body_of_rows(1000)  # about 100 KB of predictions: beyond what is joined to the head
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(predict_request(body) + body)
        head, answer, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert len(answer) > 64 * 1024 and rest == b""
        assert len(json.loads(answer)["predictions"]) == 1000
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        head, answer, _ = read_response(sock)
        assert json.loads(answer) == {"live": True}
