"""The HTTP connection guard: bounds on what one connection may send, and how slowly.

uvicorn's httptools protocol puts no bound on a request's head: an endless header
line is accumulated (by repeated ``bytes`` concatenation, in quadratic time) for as
long as the client keeps sending, and a connection that sends nothing, or its body
one byte at a time, is held forever. ``GuardedHttpProtocol`` is that protocol with

- a head limit: the request line and headers together at most ``max_header_bytes``
  and ``max_headers`` header fields, else ``431`` and the connection is closed;
- a head deadline: the whole head within ``header_timeout`` seconds of the
  connection opening (first request) or of its first byte (later ones), else ``408``;
- a body deadline (Apache ``mod_reqtimeout``'s ``body=...,MinRate=...``): the body
  within ``body_timeout`` seconds of the head, extended by one second for every
  ``body_min_rate`` bytes received, else ``408``. Time the server itself does not
  read (the application has not asked for more of the body) does not count.

Every refusal is ``{"error": "..."}`` with ``Connection: close``. The protocol is
given to uvicorn as ``http=functools.partial(GuardedHttpProtocol, limits=...)``.

It also sends each response's head and body in one write (``ResponseWriter``) where
uvicorn writes them one after the other: one segment per small response instead of two,
and one wake-up of the client instead of two.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools

from service._compat import httptools_protocol_base
from service.protocols.codecs import to_json


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_rate: int = 1024


class _TooManyHeaders(Exception):
    """Raised inside the parser's header callback; it ends that ``feed_data``."""


class GuardedHttpProtocol(httptools_protocol_base()):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0

    # -- connection --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.stop_keepalive_timer()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.feed_parser(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _TooManyHeaders):
                self._refuse(431, f"request has more than {self.limits.max_headers} header fields")
                return
            self.refuse_bad_request()
            return
        except httptools.HttpParserError:
            self.refuse_bad_request()
            return
        except httptools.HttpParserUpgrade:
            self._cancel_timers()  # the connection is another protocol's from here on
            self.take_upgrade()
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                f"request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_deadline = self.loop.time() + self.limits.body_timeout
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._check_body)
        super().on_headers_complete()
        self.wrap_response_transport(lambda transport: ResponseWriter(transport, self.loop))

    def on_body(self, body: bytes) -> None:
        self._body_deadline += len(body) / self.limits.body_min_rate
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # -- deadlines -----------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(
                408, f"request headers not received within {self.limits.header_timeout:g} s"
            )

    def _check_body(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._in_head:
            return
        now = self.loop.time()
        if self.reading_paused():  # the application is not reading: not the client's doing
            self._body_deadline = max(self._body_deadline, now + self.limits.body_timeout)
        if now < self._body_deadline:
            self._body_timer = self.loop.call_later(self._body_deadline - now, self._check_body)
            return
        if self.response_complete():
            self.transport.close()  # answered already; the rest of the body is not wanted
            return
        self._refuse(
            408,
            f"request body not received in time (at least {self.limits.body_min_rate} bytes/s "
            f"after the first {self.limits.body_timeout:g} s)",
        )

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``{"error": message}`` and close the connection; an
        application still running on this request sees the client gone."""
        self._cancel_timers()
        answered = self.response_started() and not self.response_complete()
        self.tell_application_disconnected()
        if not answered:
            body = to_json({"error": message})
            head = self.response_head(status)
            head.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(head))
        self.transport.close()


JOIN_BYTES = 64 * 1024
"""Bodies up to this size go out joined to the head; larger ones after it (several
segments either way, and the join would copy them)."""


class ResponseWriter:
    """The transport as one request's response cycle sees it: the first write (uvicorn's
    response head) is held until the next one (the body, which a response sends in the same
    turn of the event loop) and goes out joined to it (a body up to ``JOIN_BYTES``); a head
    with no body by the end of that turn (a streamed response, a HEAD request) is sent on
    its own then. Closing sends what is held first. Everything else is the connection's
    transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self.flush)
            return
        if self._held is not None:
            held, self._held = self._held, None
            if len(data) > JOIN_BYTES:  # a large body: joining would copy it for nothing
                self._transport.write(held)
            else:
                data = held + data
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
