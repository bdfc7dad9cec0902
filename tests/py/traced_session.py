"""One traced Python SDK client session through the gateway, for the audit end-to-end test.

usage: traced_session.py URL PLAN_JSON

The client is instrumented the way an OpenTelemetry user's would be: an SDK TracerProvider
(spans kept in memory), one `session` span around the whole session, the MCP SDK's own client
span per request with its W3C context in `_meta.traceparent` (SEP-414), and the current context
injected as the `traceparent` HTTP header of every POST (what HTTP-client instrumentation does; it
also covers notifications, which carry no `_meta` context). So every message of the session belongs
to one trace.

PLAN_JSON: {"calls": [{"name": ..., "arguments": {...}}], "read_resource": "<uri>"}
Prints a JSON report: protocol, tools, calls (text / is_error / error), resource, the trace id,
the session span id and the client spans the SDK made ({name, span_id, parent_span_id}).
"""
import asyncio
import json
import os
import sys

import httpx2
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("audit-e2e")


def content_text(result):
    return "\n".join(t for c in (result.content or []) if (t := getattr(c, "text", None)) is not None)


async def inject_traceparent(request):
    propagate.inject(request.headers)


async def main(url, plan):
    report = {"errors": []}
    headers = json.loads(os.environ.get("MCP_HEADERS", "{}"))
    with tracer.start_as_current_span("session") as session_span:
        ctx = session_span.get_span_context()
        report["trace_id"] = format(ctx.trace_id, "032x")
        report["session_span_id"] = format(ctx.span_id, "016x")
        http_client = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(30.0, read=120.0),
            event_hooks={"request": [inject_traceparent]},
        )
        async with http_client, streamable_http_client(url, http_client=http_client) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                init = await s.initialize()
                report["protocol"] = init.protocol_version
                report["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
                report["calls"] = []
                for call in plan.get("calls", []):
                    entry = {"name": call["name"]}
                    try:
                        r = await s.call_tool(call["name"], call.get("arguments", {}))
                        entry.update(text=content_text(r), is_error=bool(r.is_error))
                    except Exception as e:  # noqa: BLE001
                        entry["error"] = str(e)
                    report["calls"].append(entry)
                if "read_resource" in plan:
                    try:
                        r = await s.read_resource(plan["read_resource"])
                        c = r.contents[0]
                        report["resource"] = {"uri": str(c.uri), "text": getattr(c, "text", None)}
                    except Exception as e:  # noqa: BLE001
                        report["resource"] = {"error": str(e)}
    report["client_spans"] = [
        {
            "name": s.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent_span_id": format(s.parent.span_id, "016x") if s.parent else None,
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
