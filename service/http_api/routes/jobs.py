"""Upload jobs: list, read, follow (server-sent events), cancel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query
from starlette.responses import StreamingResponse

from service.errors import NotFound
from service.http_api.deps import AdminAuth, ApiAuth, DataPlaneDep, JSONResponse
from service.jobs.store import is_terminal, public
from service.jobs.uploads import Uploads
from service.protocols.codecs import to_json
from service.protocols.schemas_models import Job, JobList

router = APIRouter(tags=["Upload jobs"])

EVENT_POLL_S = 0.2
KEEP_ALIVE_S = 15.0


@router.get("/v1/jobs", dependencies=[ApiAuth], response_model=JobList)
async def list_jobs(dataplane: DataPlaneDep, limit: int = Query(50, ge=1, le=1000)) -> JSONResponse:
    """The upload jobs of this repository, newest first."""
    return JSONResponse({"jobs": [public(job) for job in await dataplane.uploads.jobs(limit)]})


@router.get("/v1/jobs/{job_id}", dependencies=[ApiAuth], response_model=Job)
async def get_job(job_id: str, dataplane: DataPlaneDep) -> JSONResponse:
    return JSONResponse(public(await dataplane.uploads.read(job_id)))


@router.delete("/v1/jobs/{job_id}", dependencies=[AdminAuth], response_model=Job)
async def cancel_job(job_id: str, dataplane: DataPlaneDep) -> JSONResponse:
    """Cancel a queued or running job (nothing is stored): the job, now cancelled; 409
    once it has finished."""
    return JSONResponse(public(await dataplane.uploads.cancel(job_id)))


@router.get(
    "/v1/jobs/{job_id}/events",
    dependencies=[ApiAuth],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: 'event: job' with the job JSON at once and on "
            "every change, ': keep-alive' every 15 s; ends after done, failed or cancelled",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def job_events(job_id: str, dataplane: DataPlaneDep) -> StreamingResponse:
    """``text/event-stream``: ``event: job`` with the job at once and on every change,
    a ``: keep-alive`` comment every 15 s; the stream ends after a finished state."""
    first = await dataplane.uploads.read(job_id)  # 404 before the stream starts
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        _events(dataplane.uploads, job_id, first), media_type="text/event-stream", headers=headers
    )


async def _events(uploads: Uploads, job_id: str, job: dict) -> AsyncIterator[bytes]:
    last = b""
    quiet_since = time.monotonic()
    while True:
        data = to_json(public(job))
        if data != last:
            yield b"event: job\ndata: " + data + b"\n\n"
            last, quiet_since = data, time.monotonic()
            if is_terminal(job):
                return
        elif time.monotonic() - quiet_since >= KEEP_ALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(EVENT_POLL_S)
        try:
            job = await uploads.read(job_id)
        except NotFound:  # pruned meanwhile
            return
