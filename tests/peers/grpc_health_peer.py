#!/usr/bin/env python3
"""A gRPC server with the standard health service (grpc.health.v1), whose
overall status ("" service) a test switches from stdin.

  grpc_health_peer.py server PORT   serve on 127.0.0.1:PORT (0 = any); prints
                                    "READY <port>", then reads commands, one a line:
    serving        status SERVING      (answers "OK serving")
    not-serving    status NOT_SERVING  (answers "OK not-serving")
  End of stdin stops the server.

Needs grpcio and grpcio-health-checking.
"""

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

STATUS = {
    "serving": health_pb2.HealthCheckResponse.SERVING,
    "not-serving": health_pb2.HealthCheckResponse.NOT_SERVING,
}


def serve(port):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", STATUS["serving"])
    bound = server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("READY %d" % bound, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd in STATUS:
            servicer.set("", STATUS[cmd])
            print("OK %s" % cmd, flush=True)
        elif cmd:
            print("ERR unknown command %r" % cmd, flush=True)
    server.stop(0)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "server":
        sys.exit(__doc__)
    serve(int(sys.argv[2]))
