#!/usr/bin/env python3
"""WebSocket peers for the weft end-to-end tests (the `websockets` package).

  ws_peer.py server PORT        echo server on 127.0.0.1:PORT (0 = any); prints "READY <port>".
                                Echoes every message; the text message "whoami" is answered
                                with the request's path and Host header as JSON.
  ws_peer.py client ADDR URI    connects to ADDR (the proxy, host:port) but handshakes for URI
                                (its host becomes the Host header); exchanges text and binary
                                messages, closes, prints one JSON object of what it observed.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

TIMEOUT = 10


async def echo(ws):
    async for msg in ws:
        if msg == "whoami":
            req = ws.request
            await ws.send(json.dumps({"path": req.path, "host": req.headers.get("Host")}))
        else:
            await ws.send(msg)


async def server(port):
    async with serve(echo, "127.0.0.1", port, max_size=None, compression=None) as srv:
        bound = srv.sockets[0].getsockname()[1]
        print("READY %d" % bound, flush=True)
        await asyncio.get_running_loop().create_future()


async def client(addr, uri):
    host, port = addr.rsplit(":", 1)
    out = {}
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(uri, host=host, port=int(port), proxy=None, max_size=None, compression=None)
        out["status"] = ws.response.status_code
        await ws.send("whoami")
        out["whoami"] = json.loads(await ws.recv())
        texts = ["hello", "wörld", "x" * 70000]
        for t in texts:
            await ws.send(t)
        out["texts_ok"] = [await ws.recv() == t for t in texts]
        blobs = [b"\x00\x01binary\xff", bytes(range(256)) * 4096]
        for b in blobs:
            await ws.send(b)
        got = [await ws.recv() for _ in blobs]
        out["binary_ok"] = [g == b and isinstance(g, bytes) for g, b in zip(got, blobs)]
        await ws.close()
        out["close_code"] = ws.close_code
    print(json.dumps(out, sort_keys=True), flush=True)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)


if __name__ == "__main__":
    main()
