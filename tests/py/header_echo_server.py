"""An MCP server (Python SDK, Streamable HTTP on 127.0.0.1) whose `headers` tool answers with the HTTP
headers of the request that carried the call, so a test can see exactly what a gateway sends upstream.

usage: header_echo_server.py PORT
"""
import json
import sys

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("header-echo")


@mcp.tool()
def headers(ctx: Context) -> str:
    """Return the request's HTTP headers as a JSON object (names lower-cased)."""
    return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items()})


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
