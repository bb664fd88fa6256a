"""The HTTP ceiling: a bare FastAPI endpoint that answers with the body it got."""

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")
