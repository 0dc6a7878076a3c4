"""A WebSocket upstream for tests/websocket.rs, on the PyPI `websockets` library.

Listens on 127.0.0.1 (a free port), prints `listening PORT`, then one JSON line per event
on stdout: `{"event": "open", "path": ..., "headers": {...}}` when a handshake completes
and `{"event": "closed", "path": ..., "code": ..., "reason": ...}` when a socket closes.

Paths:
  /echo...       echoes every message (text or binary, whole) until the client closes
  /close-4002    closes with 4002 "upstream bye" after its first message
  /silent        sends nothing and waits for the close
Any other path is refused with a 404 (no upgrade).

With WS_TLS_CERT and WS_TLS_KEY (PEM files) in the environment it speaks TLS (wss).
"""

import asyncio
import json
import os
import ssl
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.datastructures import Headers


def emit(**event):
    print(json.dumps(event), flush=True)


def route(connection, request):
    known = ("/echo", "/close-4002", "/silent")
    if not request.path.startswith(known):
        return Response(404, "Not Found", Headers({"content-type": "text/plain"}), b"no such socket\n")
    return None


async def handle(ws):
    path = ws.request.path
    emit(event="open", path=path, headers={k.lower(): v for k, v in ws.request.headers.raw_items()})
    try:
        if path.startswith("/echo"):
            async for message in ws:
                await ws.send(message)
        elif path.startswith("/close-4002"):
            await ws.recv()
            await ws.close(4002, "upstream bye")
        else:
            await ws.wait_closed()
    except ConnectionClosed:
        pass
    code = ws.close_code
    reason = ws.close_reason
    emit(event="closed", path=path, code=code, reason=reason)


def tls_context():
    cert, key = os.environ.get("WS_TLS_CERT"), os.environ.get("WS_TLS_KEY")
    if not cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def main():
    # 32 MiB messages, no compression (so byte counts are the messages' own).
    async with serve(
        handle,
        "127.0.0.1",
        0,
        ssl=tls_context(),
        process_request=route,
        max_size=32 << 20,
        compression=None,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
