"""An MCP server (Python SDK, Streamable HTTP on 127.0.0.1) that shows whether its calls were
cancelled: `sleep` waits `seconds` (and counts itself cancelled when the SDK cancels it on the
client's `notifications/cancelled`), `cancelled` answers how many `sleep` calls were cancelled.

usage: cancel_probe_server.py PORT
"""
import asyncio
import sys

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("cancel-probe")
CANCELLED = 0


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Wait, then say so."""
    global CANCELLED
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED += 1
        raise
    return f"slept {seconds}"


@mcp.tool()
def cancelled() -> int:
    """How many sleep calls were cancelled."""
    return CANCELLED


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
