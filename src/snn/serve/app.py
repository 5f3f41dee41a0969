"""The web application of `snn serve`: four pages and the JSON API they read.

    /                              the runs                  GET /api/runs
    /runs/{name}                   one run                   GET /api/runs/{name}
                                                             GET /api/runs/{name}/inspection
                                                             GET /api/runs/{name}/weights/{i}.png
    /runs/{name}/live              a run as it goes          GET /api/runs/{name}/events (SSE)
                                                             GET /api/machine
    /predict                       classify a picture        POST /api/runs/{name}/predict

The pages are static files; their scripts fetch the API. Every asset is served from the
package (no CDN), and the Content-Security-Policy allows nothing else. Nothing is written:
each run folder is only read (see `snn.serve.runs`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from snn.errors import SnnError
from snn.serve.machine import read_graph
from snn.serve.runs import RunError
from snn.serve.views import Server, best_model, clean, text

HERE = Path(__file__).parent
POLL_SECONDS = 0.5  # how often a live page's stream looks at progress.json
KEEP_ALIVE_SECONDS = 15.0
MAX_STREAMS = 32  # live pages open at once; each holds a connection and its last state
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": text(message)}, status_code=status, headers=headers)


class Headers:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                names = {k.lower() for k, _ in message["headers"]}
                for name, value in HEADERS.items():
                    if name.lower().encode() not in names:
                        message["headers"].append((name.lower().encode(), value.encode()))
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(
    runs: str | Path = "runs",
    data: str | None = None,
    definition: str | Path | None = None,
    allowed_hosts: list[str] | None = None,
    max_streams: int = MAX_STREAMS,
) -> Starlette:
    """The application. allowed_hosts: the Host headers answered (by default the loopback
    names only, so that a web page elsewhere cannot reach this server by DNS rebinding).
    max_streams: the live pages followed at once (one more is a 503 until one closes)."""
    from snn.predict import MAX_PICTURE_BYTES

    server = Server(Path(runs), data, Path(definition) if definition else None)
    streams = {"open": 0}

    def page(file: str, check_run: bool = False) -> Callable[[Request], Any]:
        def endpoint(request: Request) -> Response:
            if check_run:
                try:
                    server.runs.get(request.path_params["name"], whole=False)
                except RunError as exc:
                    return Response(
                        f"<!doctype html><title>Not found</title><p>{_escape(exc)}</p>"
                        '<p><a href="/">All runs</a></p>',
                        404,
                        media_type="text/html",
                    )
            return FileResponse(HERE / "pages" / file, media_type="text/html")

        return endpoint

    def api(work: Callable[..., Any], *names: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            args = [request.path_params[n] for n in names]
            try:
                return JSONResponse(await run_in_threadpool(work, *args))
            except RunError as exc:
                return error(404, str(exc))
            except SnnError as exc:  # no model, a model or data set that cannot be used
                return error(409, str(exc))

        return endpoint

    async def weights(request: Request) -> Response:
        try:
            name, neuron = request.path_params["name"], int(request.path_params["neuron"])
            png = await run_in_threadpool(server.weight_picture, name, neuron)
        except RunError as exc:
            return error(404, str(exc))
        except SnnError as exc:
            return error(409, str(exc))
        return Response(png, media_type="image/png")

    async def machine(request: Request) -> Response:
        if server.definition is None:
            return error(404, "no state machine definition: start snn serve with --definition")
        try:
            return JSONResponse(await run_in_threadpool(read_graph, server.definition))
        except SnnError as exc:
            return error(409, str(exc))

    async def predict(request: Request) -> Response:
        from snn.predict import ImageError

        name = request.path_params["name"]
        try:
            server.runs.folder(name)
        except RunError as exc:
            return error(404, str(exc))
        too_big = f"the picture is over the limit of {MAX_PICTURE_BYTES:,} bytes"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_PICTURE_BYTES:
            return error(413, too_big)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PICTURE_BYTES:
                return error(413, too_big)
        if not body:
            return error(400, "send the picture's bytes as the request body")
        try:
            return JSONResponse(await run_in_threadpool(server.predict, name, bytes(body)))
        except RunError as exc:
            return error(404, str(exc))
        except ImageError as exc:
            return error(422, str(exc))
        except SnnError as exc:
            return error(409, str(exc))

    async def events(request: Request) -> Response:
        name = request.path_params["name"]
        if streams["open"] >= max_streams:
            return error(
                503,
                f"{max_streams} live pages are open, the most this server follows at once: "
                "close one and reload this page",
                {"Retry-After": "10"},
            )
        try:
            first = await run_in_threadpool(server.runs.get, name)
        except RunError as exc:
            return error(404, str(exc))
        streams["open"] += 1  # given back when the response ends, however it ends
        handed = [first]

        async def stream() -> AsyncIterator[str]:
            # Between polls a stream holds only its position and its last state: the run (and
            # its costs) is the one parsed copy that every stream and request shares
            run: Any = handed.pop()
            sent, last, quiet = 0, "", 0.0
            while True:
                payload = server.live(run, sent)
                state = json.dumps({**payload, "costs": None, "costs_from": None})
                if state != last or payload["costs"]:
                    yield f"event: progress\ndata: {json.dumps(payload, allow_nan=False)}\n\n"
                    last, quiet = state, 0.0
                    sent = payload["epoch"]  # every epoch so far was considered
                del payload
                if run.status != "running":
                    yield "event: end\ndata: {}\n\n"
                    return
                run = None
                await asyncio.sleep(POLL_SECONDS)
                if server.stopping:
                    return
                quiet += POLL_SECONDS
                if quiet >= KEEP_ALIVE_SECONDS:
                    yield ": still here\n\n"
                    quiet = 0.0
                try:
                    run = await run_in_threadpool(server.runs.get, name)
                except RunError:
                    yield "event: end\ndata: {}\n\n"
                    return

        return Stream(
            stream(),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
            on_end=lambda: streams.update(open=streams["open"] - 1),
        )

    def runs_list() -> dict[str, Any]:
        found = server.runs.all()
        return {"runs": [clean(r.summary()) for r in found], "best": best_model(found)}

    routes = [
        Route("/", page("runs.html")),
        Route("/predict", page("predict.html")),
        Route("/runs/{name}", page("run.html", check_run=True)),
        Route("/runs/{name}/live", page("live.html", check_run=True)),
        Route("/api/runs", api(runs_list)),
        Route("/api/runs/{name}", api(server.run_detail, "name")),
        Route("/api/runs/{name}/inspection", api(server.inspection, "name")),
        Route("/api/runs/{name}/weights/{neuron:int}.png", weights),
        Route("/api/runs/{name}/events", events),
        Route("/api/runs/{name}/predict", predict, methods=["POST"]),
        Route("/api/machine", machine),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    hosts = allowed_hosts or LOOPBACK_HOSTS
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Headers),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
        ],
    )
    app.state.server = server
    return app


class Stream(StreamingResponse):
    """A streaming response that calls on_end once it has ended, however it ended (the client
    gone, the server stopping, the run over)."""

    def __init__(self, *args: Any, on_end: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_end()


def _escape(value: object) -> str:
    import html

    return html.escape(str(value))
