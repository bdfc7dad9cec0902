"""A 2026-07-28 (stateless, no initialize) Python SDK client that calls tools whose server needs
client input (sampling, elicitation): it answers each InputRequiredResult with its callbacks and
retries with inputResponses and requestState. Prints one JSON object: {"supported_versions", "results": {tool: text},
"rounds": {tool: n}, "sampling_requests": n, "elicitation_requests": n}.

usage: input_required.py URL TOOL_JSON...   (each TOOL_JSON: {"name": ..., "arguments": {...}})
"""

import asyncio
import json
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url = sys.argv[1]
    calls = [json.loads(arg) for arg in sys.argv[2:]]
    seen = {"sampling": 0, "elicitation": 0}

    async def on_sampling(context, params):
        seen["sampling"] += 1
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled by the python client"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(context, params):
        seen["elicitation"] += 1
        return types.ElicitResult(
            action="accept", content={"username": "ada", "email": "ada@example.com"}
        )

    out: dict = {"results": {}}
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(
            read, write, sampling_callback=on_sampling, elicitation_callback=on_elicitation
        ) as session:
            discovered = await session.discover()
            out["supported_versions"] = list(discovered.supported_versions)
            for call in calls:
                try:
                    result = await session.call_tool(
                        call["name"], call.get("arguments", {}), allow_input_required=True
                    )
                    rounds = 0
                    while isinstance(result, types.InputRequiredResult) and rounds < 5:
                        rounds += 1
                        responses = {}
                        for key, request in (result.input_requests or {}).items():
                            method = getattr(request, "method", None)
                            params = getattr(request, "params", None)
                            if method == "sampling/createMessage":
                                responses[key] = await on_sampling(None, params)
                            elif method == "elicitation/create":
                                responses[key] = await on_elicitation(None, params)
                            else:
                                raise RuntimeError(f"unexpected input request {method}")
                        result = await session.call_tool(
                            call["name"],
                            call.get("arguments", {}),
                            input_responses=responses,
                            request_state=result.request_state,
                            allow_input_required=True,
                        )
                    out.setdefault("rounds", {})[call["name"]] = rounds
                    texts = [c.text for c in getattr(result, "content", []) or [] if getattr(c, "text", None)]
                    out["results"][call["name"]] = "\n".join(texts)
                except Exception as error:  # noqa: BLE001 - reported to the Rust test
                    out["results"][call["name"]] = f"ERROR: {error}"
    out["sampling_requests"] = seen["sampling"]
    out["elicitation_requests"] = seen["elicitation"]
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
