#!/usr/bin/env python3
"""gRPC peers for the GRPCRoute tests, without generated code.

  grpc_route_peer.py server PORT [HOST]
                                   serve every service and method on
                                   HOST:PORT (HOST 127.0.0.1 unless given,
                                   PORT 0 = any); prints "READY <port>"
  grpc_route_peer.py client ADDR AUTHORITY CALLS
                                   make the unary calls CALLS (JSON: a list of
                                   {"path": "/svc/Method", "metadata": [[k, v]],
                                   "n": count, "body": text}) through ADDR with :authority
                                   AUTHORITY; prints one JSON list, per call
                                   spec a list of outcomes

Every call is answered with JSON naming the server's port, the call's path
and the request metadata it saw (x-route, x-canary, x-remove-me); a method
named Slow answers after 5 s; /weft.Peer/Seen answers the calls served so
far by path ({"calls", "bytes"}). An outcome is {"code", "details", "reply",
"metadata"} where metadata merges the initial and trailing metadata (a
trailers-only answer's headers are trailing metadata).
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

DEADLINE = 10.0
PORT = [0]
# Calls served, by path: {"calls": n, "bytes": request bytes}.
CALLS = {}
LOCK = threading.Lock()
SEEN = ("x-route", "x-canary", "x-remove-me")


def answer(method, request, context):
    if method == "/weft.Peer/Seen":
        with LOCK:
            return json.dumps(CALLS, sort_keys=True).encode()
    with LOCK:
        calls = CALLS.setdefault(method, {"calls": 0, "bytes": 0})
        calls["calls"] += 1
        calls["bytes"] += len(request)
    seen = dict(context.invocation_metadata())
    if method.endswith("/Slow"):
        time.sleep(5)
    reply = {"port": PORT[0], "path": method}
    for k in SEEN:
        if k in seen:
            reply[k] = seen[k]
    return json.dumps(reply, sort_keys=True).encode()


class Any(grpc.GenericRpcHandler):
    """Answers every service and method."""

    def service(self, handler_call_details):
        method = handler_call_details.method
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: answer(method, req, ctx))


def serve(port, host):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Any(),))
    PORT[0] = server.add_insecure_port("%s:%d" % (host, port))
    server.start()
    print("READY %d" % PORT[0], flush=True)
    server.wait_for_termination()


def md(call_or_error):
    out = {}
    for pairs in (call_or_error.initial_metadata(), call_or_error.trailing_metadata()):
        for k, v in pairs or ():
            out[k] = v.hex() if isinstance(v, bytes) else v
    return out


def client(addr, authority, calls):
    options = [
        ("grpc.default_authority", authority),
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
    ]
    result = []
    with grpc.insecure_channel(addr, options=options) as ch:
        for spec in json.loads(calls):
            metadata = [tuple(p) for p in spec.get("metadata", [])]
            stub = ch.unary_unary(spec["path"])
            outcomes = []
            for _ in range(spec.get("n", 1)):
                try:
                    body = spec.get("body", "x").encode()
                    resp, call = stub.with_call(body, metadata=metadata, timeout=DEADLINE)
                    outcomes.append(
                        {"code": "OK", "reply": json.loads(resp.decode()), "metadata": md(call)}
                    )
                except grpc.RpcError as e:
                    outcomes.append(
                        {"code": e.code().name, "details": e.details(), "metadata": md(e)}
                    )
            result.append(outcomes)
    print(json.dumps(result, sort_keys=True), flush=True)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        serve(int(sys.argv[2]), sys.argv[3] if len(sys.argv) >= 4 else "127.0.0.1")
    elif len(sys.argv) >= 5 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)


if __name__ == "__main__":
    main()
