"""What every gRPC servicer of foldserve shares: the API token check and the one way a
``ServingError`` becomes a gRPC status (its HTTP status mapped to the gRPC code by
``service.errors.STATUSES``)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from service.errors import ServingError, Unauthorized, error_code
from service.settings import Settings

logger = logging.getLogger("foldserve.grpc")

Reply = TypeVar("Reply")


class Servicer:
    """Base of the servicers: ``answer`` runs a handler behind the token check."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def answer(
        self,
        context: grpc.aio.ServicerContext,
        handler: Callable[[], Awaitable[Reply]],
        authenticated: bool = True,
    ) -> Reply:
        try:
            if authenticated:
                self.authorize(context)
            return await handler()
        except ServingError as error:
            code = grpc.StatusCode[error_code(error.status_code, default="INTERNAL")]
            await context.abort(code, error.message)
        except Exception as error:  # never a traceback to the client
            logger.exception("unhandled error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        raise AssertionError("context.abort returns only by raising")

    def authorize(self, context: grpc.aio.ServicerContext) -> None:
        token = self.settings.api_token
        if not token:
            return
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if (
            scheme.lower() != "bearer"
            or not given
            or not any(
                allowed and hmac.compare_digest(given.encode(), allowed.encode())
                for allowed in (token, self.settings.admin_token)
            )
        ):
            raise Unauthorized("this call needs the metadata 'authorization: Bearer <api token>'")
