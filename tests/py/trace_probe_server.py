"""A Streamable HTTP MCP server (Python SDK) that reports the W3C trace context it received:
used to test that the gateway propagates `traceparent` to HTTP upstreams, as the HTTP header and
in `_meta` (SEP-414).

usage: trace_probe_server.py PORT

Tools: `probe(text)` answers JSON {"text", "header", "meta"}: the `traceparent` HTTP header of the
POST that carried the call and `_meta.traceparent` of the request (null when absent).
Resources: `probe://readme` (text).
"""
import json
import sys

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("trace-probe")


@mcp.tool()
def probe(text: str, ctx: Context) -> str:
    """Echoes `text` with the trace context this request arrived with."""
    headers = ctx.headers or {}
    meta = ctx.request_context.meta or {}
    return json.dumps({
        "text": text,
        "header": headers.get("traceparent"),
        "meta": meta.get("traceparent"),
    })


@mcp.resource("probe://readme")
def readme() -> str:
    """What this server is for."""
    return "the trace probe reports the trace context it receives"


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
