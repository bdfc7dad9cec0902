"""Drives the gateway with the official Python MCP SDK client and prints a JSON report.

usage: gateway_client.py legacy|modern URL PLAN_JSON

PLAN_JSON: {"calls": [{"name": ..., "arguments": {...}, "label": ...}], "progress": {"name": ..., "arguments": ...},
            "sampling": {"name": ..., "arguments": ...}, "elicitation": {"name": ..., "arguments": ...},
            "read_resource": "<uri or 'first'>", "prompt": {"name": ..., "arguments": {...}}}
Every step is optional. Errors are reported in the JSON, not raised, so the Rust test can assert
(with the JSON-RPC error code when the server answered one). Calls are reported under their
`label` (default: the tool name), so one tool can be called several times.
"""
import asyncio
import json
import os
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


def content_text(result):
    out = []
    for c in getattr(result, "content", []) or []:
        t = getattr(c, "text", None)
        if t is not None:
            out.append(t)
    return "\n".join(out)


async def main(mode, url, plan):
    report = {"mode": mode, "errors": []}
    sampling_requests = []
    elicitation_requests = []

    async def on_sampling(context, params):
        sampling_requests.append(params.model_dump(mode="json", by_alias=True))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the python client"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(context, params):
        elicitation_requests.append(params.model_dump(mode="json", by_alias=True))
        return types.ElicitResult(action="accept", content={"color": "blue", "name": "Ada", "email": "ada@example.com"})

    # MCP_HEADERS='{"x-api-key": "..."}' adds headers to every request (credentials).
    headers = json.loads(os.environ.get("MCP_HEADERS", "{}"))
    http_client = None
    if headers:
        import httpx2

        http_client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
    async with streamable_http_client(url, http_client=http_client) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write, sampling_callback=on_sampling, elicitation_callback=on_elicitation) as s:
            if mode == "modern":
                d = await s.discover()
                report["protocol"] = "2026-07-28"
                report["supported_versions"] = list(d.supported_versions)
            else:
                init = await s.initialize()
                report["protocol"] = init.protocol_version
                report["server"] = init.server_info.name
            try:
                tools = await s.list_tools()
                report["tools"] = [t.name for t in tools.tools]
            except Exception as e:  # noqa: BLE001
                report["tools"] = []
                report["errors"].append(f"tools/list: {e}")
            report["calls"] = {}
            for call in plan.get("calls", []):
                label = call.get("label", call["name"])
                try:
                    r = await s.call_tool(call["name"], call.get("arguments", {}))
                    report["calls"][label] = {"text": content_text(r), "is_error": bool(r.is_error)}
                except Exception as e:  # noqa: BLE001
                    err = getattr(e, "error", None)
                    report["calls"][label] = {"error": str(e), "code": getattr(err, "code", None),
                                              "data": getattr(err, "data", None)}
            if "progress" in plan:
                seen = []

                async def on_progress(progress, total, message):
                    seen.append(progress)

                try:
                    r = await s.call_tool(plan["progress"]["name"], plan["progress"].get("arguments", {}),
                                          progress_callback=on_progress)
                    report["progress"] = {"values": seen, "text": content_text(r)}
                except Exception as e:  # noqa: BLE001
                    report["progress"] = {"values": seen, "error": str(e)}
            for key, requests in (("sampling", sampling_requests), ("elicitation", elicitation_requests)):
                if key in plan:
                    try:
                        r = await s.call_tool(plan[key]["name"], plan[key].get("arguments", {}))
                        report[key] = {"text": content_text(r), "requests": len(requests), "is_error": bool(r.is_error)}
                    except Exception as e:  # noqa: BLE001
                        report[key] = {"error": str(e), "requests": len(requests)}
            if "read_resource" in plan:
                try:
                    uri = plan["read_resource"]
                    if uri == "first":
                        uri = str((await s.list_resources()).resources[0].uri)
                    r = await s.read_resource(uri)
                    c = r.contents[0]
                    report["resource"] = {"uri": str(c.uri), "text": getattr(c, "text", None)}
                except Exception as e:  # noqa: BLE001
                    report["resource"] = {"error": str(e)}
            if "prompt" in plan:
                try:
                    r = await s.get_prompt(plan["prompt"]["name"], plan["prompt"].get("arguments", {}))
                    report["prompt"] = {"messages": [m.model_dump(mode="json", by_alias=True) for m in r.messages]}
                except Exception as e:  # noqa: BLE001
                    report["prompt"] = {"error": str(e)}
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
