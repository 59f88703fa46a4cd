#!/usr/bin/env python3
"""abuse.py - how much memory does weft-proxy use under abuse, and does it keep serving?

    python3 tests/bench/abuse.py [WEFT_PROXY_BIN]     (default target/release/weft-proxy)

Starts a small upstream and one weft-proxy (its default limits) on loopback, then runs each
abuse in turn against the outbound listener: while it runs, the proxy's RSS (VmRSS) and open
fds are sampled every 100 ms and an ordinary GET is sent every 500 ms (it must be answered 200);
after it, the abuse's connections are closed and the RSS is read again once the proxy's
connection gauge is back to zero. Prints a Markdown table: peak and settled RSS, peak fds,
how many abusive connections the proxy refused (weft_listener_refused_total) and whether the
ordinary requests were all served.

Abuses: slow request heads (slowloris), request heads just under --max-header-bytes left
unfinished, request bodies dripped a byte a second, pipelined requests never read, requests
held by a slow upstream past --max-requests, and on HTTP/2: rapid reset (HEADERS then
RST_STREAM, over and over) and a PING flood. Needs only Python 3; raise the fd limit first
(`ulimit -n 65536`) since it opens thousands of sockets.
"""
import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/weft-proxy"
HOST = "127.0.0.1"


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


UP, OUT, ADMIN, INB = free_port(), free_port(), free_port(), free_port()


async def upstream(reader, writer):
    """Answers each request with "ok" once its body (Content-Length) is read; /slow waits 30 s."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if m:
                await reader.readexactly(int(m.group(1)))
            if head.split(b" ", 2)[1].startswith(b"/slow"):
                await asyncio.sleep(30)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def status(pid):
    rss = fds = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


async def metric(name, labels=""):
    r, w = await asyncio.open_connection(HOST, ADMIN)
    w.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    text = (await r.read()).decode()
    w.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def ordinary():
    """One ordinary GET through the proxy; True if answered 200 within 5 s."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, OUT), 5)
        w.write(b"GET / HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(), 5)
        w.close()
        return data.startswith(b"HTTP/1.1 200")
    except (OSError, asyncio.TimeoutError):
        return False


async def open_many(n, first_bytes):
    """Opens up to n connections, each sending first_bytes; returns the open ones."""
    conns = []
    for i in range(n):
        try:
            r, w = await asyncio.open_connection(HOST, OUT)
            if first_bytes:
                w.write(first_bytes)
            conns.append((r, w))
        except OSError:
            break
        if i % 200 == 0:
            await asyncio.sleep(0)
    return conns


async def drip(conns, byte, seconds):
    for _ in range(seconds):
        for _, w in conns:
            try:
                w.write(byte)
            except (OSError, RuntimeError):
                pass
        await asyncio.sleep(1)


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)
# :method GET, :scheme http, :path /, :authority up (literal, indexed name 1).
HEADERS_BLOCK = b"\x82\x86\x84\x01\x02up"


async def rapid_reset(streams):
    r, w = await asyncio.open_connection(HOST, OUT)
    w.write(PREFACE)
    sid = 1
    for _ in range(streams // 100):
        batch = b""
        for _ in range(100):
            batch += h2_frame(1, 0x4 | 0x1, sid, HEADERS_BLOCK) + h2_frame(3, 0, sid, struct.pack(">I", 8))
            sid += 2
        try:
            w.write(batch)
            await w.drain()
        except (OSError, ConnectionError):
            break
    return [(r, w)]


async def ping_flood(pings):
    r, w = await asyncio.open_connection(HOST, OUT)
    w.write(PREFACE)
    frame = h2_frame(6, 0, 0, b"12345678")
    for _ in range(pings // 1000):
        try:
            w.write(frame * 1000)
            await w.drain()
        except (OSError, ConnectionError):
            break
    return [(r, w)]


async def pipelined(conns, mib):
    out = []
    one = b"GET / HTTP/1.1\r\nHost: up\r\n\r\n"
    burst = one * (mib * 1024 * 1024 // len(one))
    for _ in range(conns):
        r, w = await asyncio.open_connection(HOST, OUT)
        w.write(burst)  # never read: the proxy must stop reading, not buffer
        out.append((r, w))
    return out


async def held_requests(n):
    return await open_many(n, b"GET /slow HTTP/1.1\r\nHost: up\r\n\r\n")


async def measure(name, start, feed=None, seconds=12):
    pid = PROXY.pid
    base, _ = status(pid)
    refused0 = await metric("weft_listener_refused_total")
    t0 = time.time()
    task = asyncio.ensure_future(start())
    peak_rss, peak_fds, served, tried = base, 0, 0, 0
    conns = []
    end = t0 + seconds
    feeder = None
    while time.time() < end:
        if task.done() and not conns:
            conns = task.result()
            if feed:
                feeder = asyncio.ensure_future(feed(conns))
        rss, fds = status(pid)
        peak_rss, peak_fds = max(peak_rss, rss), max(peak_fds, fds)
        if int((time.time() - t0) * 10) % 5 == 0:
            tried += 1
            served += await ordinary()
        await asyncio.sleep(0.1)
    if not task.done():
        task.cancel()
    elif not conns:
        conns = task.result()
    if feeder:
        feeder.cancel()
    refused = await metric("weft_listener_refused_total") - refused0
    for _, w in conns:
        w.close()
    # Settle: the proxy notices the closes.
    for _ in range(100):
        if await metric("weft_active_connections") == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    after, _ = status(pid)
    row = f"| {name} | {len(conns)} | {base} | {peak_rss} | {after} | {peak_fds} | {int(refused)} | {served}/{tried} |"
    print(row, flush=True)


async def main():
    global PROXY
    server = await asyncio.start_server(upstream, HOST, UP, limit=1 << 20)
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: up}\n"
        f"spec:\n  endpoints: [{{address: \"{HOST}:{UP}\"}}]\n"
    )
    cfg.close()
    PROXY = subprocess.Popen(
        [BIN, "run", "--config", cfg.name, "--outbound", f"{HOST}:{OUT}",
         "--inbound", f"{HOST}:{INB}", "--admin", f"{HOST}:{ADMIN}", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if await ordinary():
            break
        await asyncio.sleep(0.1)
    for _ in range(200):  # warm up
        await ordinary()
    print("| abuse | connections held | RSS before (MiB) | RSS peak | RSS after | fds peak | refused | ordinary GETs served |")
    print("|---|---|---|---|---|---|---|---|")
    await measure("5,000 slow heads (a byte a second)", lambda: open_many(5000, b"GET / HTTP/1.1\r\nHost: up\r\nX-A: "),
                  feed=lambda c: drip(c, b"a", 30), seconds=14)
    big = b"GET / HTTP/1.1\r\nHost: up\r\nX-A: " + b"a" * (60 * 1024)
    await measure("2,000 unfinished 60 KiB heads", lambda: open_many(2000, big), seconds=8)
    await measure("4,000 bodies dripped a byte a second",
                  lambda: open_many(4000, b"POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 1000000\r\n\r\n"),
                  feed=lambda c: drip(c, b"x", 30), seconds=25)
    await measure("200 connections pipelining 1 MiB of GETs, never reading", lambda: pipelined(200, 1), seconds=10)
    await measure("5,000 requests held by a slow upstream", lambda: held_requests(5000), seconds=10)
    await measure("HTTP/2 rapid reset, 200,000 streams", lambda: rapid_reset(200_000), seconds=10)
    await measure("HTTP/2 PING flood, 2,000,000 pings", lambda: ping_flood(2_000_000), seconds=10)
    PROXY.terminate()
    PROXY.wait()
    server.close()
    os.unlink(cfg.name)


asyncio.run(main())
