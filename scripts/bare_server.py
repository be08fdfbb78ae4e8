"""The single-process ceiling for `scripts/bench.py`: a minimal aiohttp dict server.

It answers the key-value part of ringkv's HTTP API with the same response shapes, so
the same load generator drives both:

    PUT /kv/{key}  -> 204, X-Context: <new version>
    GET /kv/{key}  -> 200, the value, its Content-Type, X-Context; or 404
    GET /health    -> 200

Storage is an in-process dict, there is no replication and no durability; the context
is a per-key counter that the server hands out and otherwise ignores. Whatever a ringkv
node does beyond this is the price of being a replicated, durable store.

    python scripts/bare_server.py --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def make_app() -> web.Application:
    store: dict[str, tuple[bytes, str, int]] = {}
    versions = [0]

    async def put(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        value = await request.read()
        ctype = request.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        versions[0] += 1
        store[key] = (value, ctype, versions[0])
        return web.Response(status=204, headers={"X-Context": format(versions[0], "x")})

    async def get(request: web.Request) -> web.Response:
        item = store.get(request.match_info["key"])
        if item is None:
            return web.json_response({"error": "not found"}, status=404)
        value, ctype, version = item
        return web.Response(status=200, body=value,
                            headers={"Content-Type": ctype, "X-Context": format(version, "x")})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "keys": len(store)})

    app = web.Application(client_max_size=(1 << 20) + 1)
    app.router.add_put("/kv/{key:[\\s\\S]+}", put)
    app.router.add_get("/kv/{key:[\\s\\S]+}", get)
    app.router.add_get("/health", health)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare server on http://{host}:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a ringkv dependency on Linux
            pass
        else:
            uvloop.run(serve(args.host, args.port))
            return
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
