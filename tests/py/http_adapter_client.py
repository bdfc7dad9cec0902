"""Drives the gateway's Streamable HTTP adapter with the real Python SDK client.

Usage: python3 tests/py/http_adapter_client.py URL

Connects with mcp.client.streamable_http.streamable_http_client (legacy session, initialize),
lists tools, calls `echo`, calls `progress` with a progress callback, calls `sample` and answers
the sampling request via sampling_callback. Prints one JSON object; the Rust test asserts on it.
"""

import json
import sys

import anyio
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url: str) -> None:
    out: dict = {"progress": [], "sampling_requests": 0}

    async def sampling_callback(context, params):
        out["sampling_requests"] += 1
        text = params.messages[0].content.text if params.messages else ""
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled:{text}"),
            model="python-test-model",
        )

    async def on_progress(progress, total, message):
        out["progress"].append(progress)

    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, sampling_callback=sampling_callback) as session:
            init = await session.initialize()
            out["protocol_version"] = init.protocol_version
            out["server_name"] = init.server_info.name
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            echo = await session.call_tool("echo", {"text": "hello from python"})
            out["echo"] = echo.content[0].text
            prog = await session.call_tool("progress", {"count": 3}, progress_callback=on_progress)
            out["progress_result"] = prog.content[0].text
            sample = await session.call_tool("sample", {"prompt": "hi"})
            out["sample"] = sample.content[0].text
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
