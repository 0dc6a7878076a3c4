"""WebSocket client scenarios for tests/websocket.rs, on the PyPI `websockets` library.

    client.py URL SCENARIO [ARG]

WS_HEADERS (a JSON object) adds handshake header fields; WS_CA (a PEM file) is the CA that
verifies a wss:// gateway.

Prints one JSON object (what happened) on stdout and exits 0 when the scenario went as the
scenario expects; on anything else it prints the error and exits 1.

Scenarios:
  echo           a text and a binary message come back unchanged
  fragmented     a message sent in 5 fragments comes back whole
  big            a 16 MiB binary message comes back unchanged
  ping           a ping is answered with a pong carrying the same data
  close CODE     closes with CODE "client bye"; prints the close code the client got back
  closed-by-upstream   sends one message; prints the close the upstream sent
  drop           echoes one message, then closes the TCP connection without a close frame
  many N         N sockets at once, each echoing 5 messages of its own
  refused        the handshake is refused: prints the status and body of the answer
  wait-close     waits for the tunnel to be closed; prints the close and seconds waited
  keep-pinging SECONDS   pings every SECONDS until the tunnel is closed; prints the seconds
  quiet-echo SECONDS     opens, stays silent for SECONDS, then echoes a message
  keepalive-after-refusal PATH NEXT   (URL is http://HOST:PORT) an upgrade of PATH that is
                 refused, then a plain GET of NEXT on the same connection (http.client)
  upgrade-to PATH PROTOCOL   (URL is http://HOST:PORT) asks to upgrade PATH to PROTOCOL;
                 prints the status and the JSON body
"""

import asyncio
import http.client
import json
import urllib.parse
import os
import ssl
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

HEADERS = json.loads(os.environ.get("WS_HEADERS", "{}"))
# wss:// URLs: the CA (PEM file) to verify the gateway's certificate with.
CA = os.environ.get("WS_CA")


def opened(url):
    tls = ssl.create_default_context(cafile=CA) if url.startswith("wss:") and CA else None
    return connect(
        url,
        ssl=tls,
        additional_headers=HEADERS,
        max_size=32 << 20,
        compression=None,
        ping_interval=None,
        open_timeout=30,
        close_timeout=10,
    )


async def echo(url):
    async with opened(url) as ws:
        await ws.send("hello, tunnel")
        text = await ws.recv()
        await ws.send(b"\x00\x01\x02\xff")
        binary = await ws.recv()
    assert text == "hello, tunnel", text
    assert binary == b"\x00\x01\x02\xff", binary
    return {"text": text, "binary": binary.hex()}


async def fragmented(url):
    parts = [f"part-{i}-" * 100 for i in range(5)]
    async with opened(url) as ws:
        await ws.send(parts)
        back = await ws.recv()
    assert back == "".join(parts), len(back)
    return {"fragments": len(parts), "length": len(back)}


async def big(url):
    message = os.urandom(16 << 20)
    started = time.monotonic()
    async with opened(url) as ws:
        await ws.send(message)
        back = await ws.recv()
    assert back == message, "the 16 MiB message came back changed"
    return {"bytes": len(back), "seconds": time.monotonic() - started}


async def ping(url):
    async with opened(url) as ws:
        waiter = await ws.ping(b"are you there")
        latency = await asyncio.wait_for(waiter, 10)
    return {"pong": True, "latency": latency}


async def close(url, code):
    async with opened(url) as ws:
        await ws.send("before close")
        await ws.recv()
        await ws.close(int(code), "client bye")
    return {"sent": int(code), "received": ws.close_code}


async def closed_by_upstream(url):
    async with opened(url) as ws:
        await ws.send("close, please")
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            return {"code": closed.rcvd.code if closed.rcvd else None, "reason": closed.rcvd.reason if closed.rcvd else None}
    raise AssertionError("the upstream did not close")


async def drop(url):
    async with opened(url) as ws:
        await ws.send("going away")
        await ws.recv()
        ws.transport.close()
        try:
            await ws.wait_closed()
        except ConnectionClosed:
            pass
    return {"code": ws.close_code}


async def many(url, count):
    async def one(index):
        async with opened(f"{url}?socket={index}") as ws:
            for turn in range(5):
                message = f"socket {index} turn {turn}"
                await ws.send(message)
                back = await ws.recv()
                assert back == message, (back, message)
        return index

    done = await asyncio.gather(*(one(i) for i in range(int(count))))
    assert sorted(done) == list(range(int(count)))
    return {"sockets": len(done)}


async def refused(url):
    try:
        async with opened(url):
            pass
    except InvalidStatus as error:
        response = error.response
        return {
            "status": response.status_code,
            "body": response.body.decode("utf-8", "replace"),
            "headers": {k.lower(): v for k, v in response.headers.raw_items()},
        }
    raise AssertionError("the handshake was not refused")


async def wait_close(url):
    started = time.monotonic()
    async with opened(url) as ws:
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            return {
                "code": closed.rcvd.code if closed.rcvd else None,
                "seconds": time.monotonic() - started,
            }
    raise AssertionError("a message came instead of the close")


async def keep_pinging(url, every):
    started = time.monotonic()
    async with opened(url) as ws:
        try:
            while True:
                waiter = await ws.ping(b"still here")
                await asyncio.wait_for(waiter, 10)
                await asyncio.sleep(float(every))
        except ConnectionClosed:
            pass
    return {"seconds": time.monotonic() - started}


async def quiet_echo(url, seconds):
    async with opened(url) as ws:
        await asyncio.sleep(float(seconds))
        await ws.send("after the silence")
        text = await ws.recv()
    return {"text": text}


def upgrade_headers(protocol):
    return {
        "Connection": "Upgrade",
        "Upgrade": protocol,
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }


async def keepalive_after_refusal(url, path, after):
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", path, headers=upgrade_headers("websocket"))
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    conn.request("GET", after)
    second = conn.getresponse()
    second.read()
    same = sock is not None and conn.sock is sock
    conn.close()
    return {"statuses": [first.status, second.status], "same_connection": same}


async def upgrade_to(url, path, protocol):
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    conn.request("GET", path, headers=upgrade_headers(protocol))
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return {"status": response.status, "body": json.loads(body)}


SCENARIOS = {
    "keep-pinging": keep_pinging,
    "quiet-echo": quiet_echo,
    "keepalive-after-refusal": keepalive_after_refusal,
    "upgrade-to": upgrade_to,
    "echo": echo,
    "fragmented": fragmented,
    "big": big,
    "ping": ping,
    "close": close,
    "closed-by-upstream": closed_by_upstream,
    "drop": drop,
    "many": many,
    "refused": refused,
    "wait-close": wait_close,
}


def main():
    url, scenario, *args = sys.argv[1:]
    try:
        result = asyncio.run(SCENARIOS[scenario](url, *args))
    except BaseException as error:  # report every failure the same way
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
