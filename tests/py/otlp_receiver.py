"""An OTLP/HTTP receiver for the tests: decodes every export request with the protobuf types of
the `opentelemetry-proto` package and appends what it received to a JSON-lines file.

usage: otlp_receiver.py OUT_FILE

Listens on 127.0.0.1 (a free port) and prints `listening on http://127.0.0.1:PORT` once it serves.
Accepts POST /v1/traces, /v1/logs and /v1/metrics with `application/x-protobuf` bodies (gzip
too); anything else gets 404/415, a body that does not decode gets 400 (and is logged to stderr).
Each line of OUT_FILE: {"signal": "span"|"log"|"metric", "resource": {...}, ...} with ids in hex.
"""
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

OUT = open(sys.argv[1], "a", buffering=1, encoding="utf-8")
LOCK = threading.Lock()


def any_value(v: AnyValue):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def spans(req: ExportTraceServiceRequest):
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "signal": "span",
                    "resource": resource,
                    "scope": ss.scope.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex() or None,
                    "name": s.name,
                    "kind": Span.SpanKind.Name(s.kind),
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                    "status": s.status.code,
                    "attributes": attributes(s.attributes),
                }


def logs(req: ExportLogsServiceRequest):
    for rl in req.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                yield {
                    "signal": "log",
                    "resource": resource,
                    "trace_id": r.trace_id.hex() or None,
                    "span_id": r.span_id.hex() or None,
                    "body": any_value(r.body),
                    "attributes": attributes(r.attributes),
                }


def metrics(req: ExportMetricsServiceRequest):
    for rm in req.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points = getattr(m, kind).data_points if kind else []
                yield {
                    "signal": "metric",
                    "resource": resource,
                    "name": m.name,
                    "type": kind,
                    "points": [
                        {
                            "attributes": attributes(p.attributes),
                            "value": p.as_int if p.HasField("as_int") else p.as_double,
                        }
                        if kind in ("sum", "gauge")
                        else {"attributes": attributes(p.attributes), "count": p.count}
                        for p in points
                    ],
                }


ROUTES = {
    "/v1/traces": (ExportTraceServiceRequest, spans),
    "/v1/logs": (ExportLogsServiceRequest, logs),
    "/v1/metrics": (ExportMetricsServiceRequest, metrics),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        route = ROUTES.get(self.path)
        if route is None:
            return self.answer(404)
        if "protobuf" not in self.headers.get("content-type", ""):
            return self.answer(415)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message_type, items = route
        request = message_type()
        try:
            request.ParseFromString(body)
        except DecodeError as e:
            print(f"undecodable {self.path} body: {e}", file=sys.stderr)
            return self.answer(400)
        with LOCK:
            for item in items(request):
                OUT.write(json.dumps(item) + "\n")
        # An empty Export*ServiceResponse is an empty protobuf message.
        self.answer(200)

    def log_message(self, format, *args):  # noqa: A002
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
