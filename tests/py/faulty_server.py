"""A stdio MCP server (Python SDK) that misbehaves on request: used to test how the gateway
handles an upstream that crashes mid-call or never answers.

Tools: `ok` answers, `crash` kills the process mid-call, `hang` never answers."""
import asyncio
import os

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("faulty")


@mcp.tool()
def ok(text: str = "fine") -> str:
    """Answers at once."""
    return f"ok: {text} (pid {os.getpid()})"


@mcp.tool()
async def crash() -> str:
    """Exits the process while the call is in flight."""
    os._exit(3)


@mcp.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "unreachable"


if __name__ == "__main__":
    mcp.run("stdio")
