#!/usr/bin/env python3
"""gRPC peers for the weft end-to-end tests, without generated code: methods
are registered with generic handlers and carry raw bytes.

  grpc_peer.py server PORT      serve on 127.0.0.1:PORT (0 = any); prints "READY <port>"
  grpc_peer.py client ADDR AUTHORITY
                                call every method through ADDR (the proxy) with
                                :authority AUTHORITY; prints one JSON object of
                                what it observed and exits 0 (2 on a transport error)

Methods of service weft.test.Echo:
  Unary         echoes "echo:" + request; sets initial metadata x-initial and
                trailing metadata x-trailer (and a binary x-bin-bin)
  ServerStream  request = decimal N; answers N messages "msg-0".."msg-N-1"
  Fail          aborts with NOT_FOUND "nope" and trailing metadata x-why=missing
  Bidi          echoes every message, upper-cased
"""

import json
import sys
from concurrent import futures

import grpc

SERVICE = "weft.test.Echo"
DEADLINE = 10.0


def unary(request, context):
    context.send_initial_metadata((("x-initial", "hello"),))
    context.set_trailing_metadata((("x-trailer", "tval"), ("x-bin-bin", b"\x00\x01\xff")))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(int(request.decode())):
        yield ("msg-%d" % i).encode()


def fail(request, context):
    context.set_trailing_metadata((("x-why", "missing"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "nope")


def bidi(request_iterator, context):
    for m in request_iterator:
        yield m.upper()


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("READY %d" % bound, flush=True)
    server.wait_for_termination()


def md(pairs):
    out = {}
    for k, v in pairs or ():
        out[k] = v.hex() if isinstance(v, bytes) else v
    return out


def client(addr, authority):
    options = [
        ("grpc.default_authority", authority),
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
    ]
    result = {}
    with grpc.insecure_channel(addr, options=options) as ch:
        path = "/%s/" % SERVICE

        resp, call = ch.unary_unary(path + "Unary").with_call(b"hi", timeout=DEADLINE)
        result["unary"] = resp.decode()
        result["unary_code"] = call.code().name
        result["unary_initial"] = md(call.initial_metadata())
        result["unary_trailing"] = md(call.trailing_metadata())

        big = bytes(range(256)) * 4096  # 1 MiB: more than one flow-control window
        resp = ch.unary_unary(path + "Unary")(big, timeout=DEADLINE)
        result["unary_big_ok"] = resp == b"echo:" + big

        stream = ch.unary_stream(path + "ServerStream")(b"5", timeout=DEADLINE)
        result["stream"] = [m.decode() for m in stream]
        result["stream_code"] = stream.code().name

        try:
            ch.unary_unary(path + "Fail")(b"x", timeout=DEADLINE)
            result["fail_code"] = "OK"
        except grpc.RpcError as e:
            result["fail_code"] = e.code().name
            result["fail_details"] = e.details()
            result["fail_trailing"] = md(e.trailing_metadata())

        replies = ch.stream_stream(path + "Bidi")(iter([b"a", b"bc", b"def"]), timeout=DEADLINE)
        result["bidi"] = [m.decode() for m in replies]
    print(json.dumps(result, sort_keys=True), flush=True)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "client":
        try:
            client(sys.argv[2], sys.argv[3])
        except grpc.RpcError as e:
            print("rpc failed: %s %s" % (e.code().name, e.details()), file=sys.stderr, flush=True)
            sys.exit(2)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(64)


if __name__ == "__main__":
    main()
