"""Every private framework API the service package uses, and nothing else.

ONNX Runtime's pybind exception classes, uvicorn's httptools protocol internals (the
connection guard is that protocol with bounds added) and argparse's sub-parser type (the
one of ``folding._compat``: the ``foldserve`` command is one parser) are reached only
through what is defined here. Each says what it does and which library
version it was written against; those versions are pinned exactly in pyproject.toml and
``WRITTEN_AGAINST`` names them, and ``tests/test_compat.py`` exercises each for real, so
that an upgrade that moves or changes one of these internals fails that test, not a
request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from folding._compat import Subparsers

__all__ = ["WRITTEN_AGAINST", "Subparsers", "httptools_protocol_base", "ort_invalid_argument"]

WRITTEN_AGAINST = {"onnxruntime": "1.31.1", "uvicorn": "0.54.0"}
"""The distributions whose internals this module uses, at the versions it was written
against (and that pyproject.toml pins; ONNX Runtime is the ``onnxruntime-gpu``
distribution on Linux x86-64, ``onnxruntime`` elsewhere)."""


def ort_invalid_argument() -> type[Exception]:
    """The exception ``InferenceSession.run`` raises for inputs that pass the signature
    check but not the graph (a wrong rank, a shape a Reshape cannot take). ONNX Runtime
    1.31.1 exports no name for it:
    ``onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument``."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    return InvalidArgument


@functools.cache
def httptools_protocol_base() -> type:
    """uvicorn's httptools HTTP/1.1 protocol class, with what a subclass needs of its
    internals behind named methods (made on first use: the client commands import this
    module and need no uvicorn)."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class HttpToolsProtocolBase(HttpToolsProtocol):
        """uvicorn's httptools HTTP/1.1 protocol, with what a subclass needs of its internals
        behind named methods. A subclass may also override the httptools parser callbacks
        (``on_message_begin``, ``on_header``, ``on_headers_complete``, ``on_body``,
        ``on_message_complete``) and ``connection_made`` / ``connection_lost`` (calling
        ``super()``), and use ``self.loop`` and ``self.transport``.

        uvicorn 0.54.0: ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` with its
        ``parser``, ``flow`` (``FlowControl``), ``cycle`` (``RequestResponseCycle``, and its
        ``transport``),
        ``server_state``, ``logger`` and the private ``_unset_keepalive_if_required``,
        ``_should_upgrade`` and ``_unsupported_upgrade_warning`` that its ``data_received``
        calls; ``STATUS_LINE``, the status lines it writes."""

        def stop_keepalive_timer(self) -> None:
            """Cancel the idle keep-alive timeout: bytes of a request have arrived."""
            self._unset_keepalive_if_required()

        def feed_parser(self, data: bytes) -> None:
            """Give ``data`` to the httptools parser (which calls the ``on_*`` callbacks and
            raises httptools' ``HttpParserError`` / ``HttpParserUpgrade``)."""
            self.parser.feed_data(data)

        def take_upgrade(self) -> None:
            """After ``HttpParserUpgrade``: hand the connection to the WebSocket protocol when
            it asks for one and one is installed, else log it as uvicorn does."""
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

        def refuse_bad_request(self) -> None:
            """uvicorn's answer to bytes that are not HTTP: a logged warning and a plain 400."""
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

        def reading_paused(self) -> bool:
            """The server has stopped reading the request body (the application has not asked
            for more of it yet)."""
            return bool(self.flow.read_paused)

        def response_started(self) -> bool:
            """The current request's response has begun (its head was sent)."""
            return self.cycle is not None and bool(self.cycle.response_started)

        def response_complete(self) -> bool:
            """The current request's response has been sent whole."""
            return self.cycle is not None and bool(self.cycle.response_complete)

        def tell_application_disconnected(self) -> None:
            """Make the application still running on this request see the client gone (its
            next ``receive()`` is ``http.disconnect``, its sends are dropped)."""
            cycle: Any = self.cycle
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

        def wrap_response_transport(self, wrap: Callable[[Any], Any]) -> None:
            """Have the response cycle just made (in ``on_headers_complete``) write through
            ``wrap(self.transport)`` instead of the transport itself (the cycle writes the
            response head, the body, ``100 Continue``, and closes the connection). A cycle
            already wrapped (none was made: an upgrade request) is left as it is."""
            cycle: Any = self.cycle
            if cycle is not None and cycle.transport is self.transport:
                cycle.transport = wrap(self.transport)

        def response_head(self, status: int) -> list[bytes]:
            """The status line of ``status`` and the server's default headers (``server``,
            ``date``), as uvicorn writes them: the start of a raw response."""
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            return head

    return HttpToolsProtocolBase
