"""A bare aiohttp + uvloop pass-through (no policy at all): the Python floor the proxy is compared to.

python -m benchmarks.bare_passthrough --upstream http://127.0.0.1:8000 --port 9100
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

_SESSION = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def _forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[_SESSION]
    async with session.post(
        request.app[_UPSTREAM] + request.path, data=body, headers={"Content-Type": "application/json"}
    ) as up:
        if up.content_type == "text/event-stream":
            out = web.StreamResponse(status=up.status, headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
        return web.Response(status=up.status, body=await up.read(), content_type=up.content_type)


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build(upstream: str) -> web.Application:
    app = web.Application()
    app[_UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[_SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        yield
        await app[_SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/chat/completions", _forward)
    app.router.add_post("/v1/completions", _forward)
    app.router.add_post("/v1/responses", _forward)
    app.router.add_post("/v1/messages", _forward)
    app.router.add_get("/ready", _health)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=9100)
    args = ap.parse_args()
    import uvloop

    uvloop.install()
    web.run_app(build(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
