#!/usr/bin/env python3
"""An OTLP trace receiver for the weft end-to-end tests, built on the
OpenTelemetry project's own protobuf definitions (opentelemetry-proto) and
grpcio: the real wire protocols, decoded by an independent implementation.

  otlp_receiver.py server [--tls CERT KEY [--client-ca CA]]
      listens on 127.0.0.1 for OTLP/gRPC (TraceService/Export) and OTLP/HTTP
      (POST /v1/traces, application/x-protobuf) on two free ports; with --tls
      both speak TLS only (with --client-ca a client certificate signed by CA
      is required); prints "READY <grpc_port> <http_port>", then one JSON
      object per span received:
        {"via": "grpc"|"http", "tls": bool, "client": the client certificate's
         common name or null, "encoding": HTTP's content-encoding or null, "tenant": the x-tenant header, "service": ..., "scope": ..., "trace_id": hex,
         "span_id": hex, "parent_span_id": hex or "", "name": ..., "kind": ...,
         "start": ns, "end": ns, "status": ..., "attributes": {...},
         "events": [{"name": ..., "time": ns, "attributes": {...}}], "resource": {...}}
"""

import gzip
import json
import ssl
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

OUT = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


TLS = False


def emit(request, via, tenant, client=None, encoding=None):
    lines = []
    for rs in request.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                lines.append(json.dumps({
                    "via": via,
                    "tls": TLS,
                    "client": client,
                    "encoding": encoding,
                    "tenant": tenant,
                    "service": resource.get("service.name"),
                    "resource": resource,
                    "scope": ss.scope.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": trace_pb2.Span.SpanKind.Name(s.kind),
                    "flags": s.flags,
                    "scope_version": ss.scope.version,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "status": trace_pb2.Status.StatusCode.Name(s.status.code),
                    "attributes": attrs(s.attributes),
                    "events": [{"name": e.name, "time": e.time_unix_nano, "attributes": attrs(e.attributes)}
                               for e in s.events],
                }))
    with OUT:
        for line in lines:
            print(line)
        sys.stdout.flush()


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        tenant = dict(context.invocation_metadata()).get("x-tenant")
        cn = context.auth_context().get("x509_common_name")
        emit(request, "grpc", tenant, cn[0].decode() if cn else None)
        return trace_service_pb2.ExportTraceServiceResponse()


def tls_setup(self):
    try:
        self.request.do_handshake()
    except (ssl.SSLError, OSError):
        self.request.close()
        raise
    BaseHTTPRequestHandler.setup(self)


class HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        encoding = self.headers.get("content-encoding")
        if encoding == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(404 if self.path != "/v1/traces" else 415)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        emit(request, "http", self.headers.get("x-tenant"), self.client_cn(), encoding)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def client_cn(self):
        getpeercert = getattr(self.connection, "getpeercert", None)
        cert = getpeercert() if getpeercert else None
        for rdn in (cert or {}).get("subject", ()):
            for key, val in rdn:
                if key == "commonName":
                    return val
        return None

    def log_message(self, *args):
        pass


def main():
    global TLS
    args = sys.argv[1:]
    if args[:1] != ["server"] or len(args) not in (1, 4, 6) or \
            (len(args) > 1 and args[1] != "--tls") or (len(args) == 6 and args[4] != "--client-ca"):
        sys.exit(__doc__)
    cert, key, ca = (args[2], args[3], args[5] if len(args) == 6 else None) if len(args) > 1 else (None, None, None)
    TLS = cert is not None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    if TLS:
        read = lambda p: open(p, "rb").read()
        creds = grpc.ssl_server_credentials([(read(key), read(cert))],
                                            root_certificates=read(ca) if ca else None,
                                            require_client_auth=ca is not None)
        grpc_port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    if TLS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        # The handshake runs in the handler's thread, not in accept().
        http.socket = ctx.wrap_socket(http.socket, server_side=True, do_handshake_on_connect=False)
        HttpHandler.setup = tls_setup
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print("READY %d %d" % (grpc_port, http.server_address[1]), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
