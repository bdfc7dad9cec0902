"""Connect to a Streamable HTTP MCP endpoint with the Python SDK and print its tools as JSON.

Usage: python3 list_tools.py URL
Prints one JSON object: {"server_name", "protocol_version", "tools": [sorted names]}.
"""

import asyncio
import json
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url = sys.argv[1]
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            cursor = tools.next_cursor
            while cursor:
                page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                names.extend(t.name for t in page.tools)
                cursor = page.next_cursor
            print(
                json.dumps(
                    {
                        "server_name": init.server_info.name,
                        "protocol_version": init.protocol_version,
                        "tools": sorted(names),
                    }
                )
            )


if __name__ == "__main__":
    asyncio.run(main())
