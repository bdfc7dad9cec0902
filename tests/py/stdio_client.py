"""Drive a stdio MCP server with the Python SDK client and print what it saw as one JSON object.

Usage: python3 stdio_client.py COMMAND [ARG...]
Lists tools, prompts, resources and templates; calls `echo` and `slow_count` (with a progress
token) when the server has them; reads the first resource; gets the first prompt with a `name`.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    out: dict = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server_name"] = init.server_info.name
            out["protocol_version"] = init.protocol_version
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            if "echo" in out["tools"]:
                res = await session.call_tool("echo", {"message": "hello from python"})
                out["echo"] = [c.text for c in res.content if c.type == "text"]
            if "slow_count" in out["tools"]:
                progress: list = []

                async def on_progress(p, total, message):
                    progress.append(p)

                res = await session.call_tool(
                    "slow_count", {"n": 3, "delay_ms": 10}, progress_callback=on_progress
                )
                out["slow_count"] = [c.text for c in res.content if c.type == "text"]
                out["progress"] = progress
            prompts = await session.list_prompts()
            out["prompts"] = sorted(p.name for p in prompts.prompts)
            resources = await session.list_resources()
            out["resources"] = sorted(str(r.uri) for r in resources.resources)
            templates = await session.list_resource_templates()
            out["templates"] = sorted(t.uri_template for t in templates.resource_templates)
            if out["resources"]:
                read_res = await session.read_resource(out["resources"][0])
                out["read"] = [getattr(c, "text", None) for c in read_res.contents]
            if "greeting" in out["prompts"]:
                prompt = await session.get_prompt("greeting", {"name": "Ada"})
                out["prompt_text"] = [m.content.text for m in prompt.messages]
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
