"""An unauthenticated Python SDK client discovers how to authenticate from the gateway's RFC 9728
metadata and 401 challenge, registers, authorizes (PKCE) at the real IdP, and calls a tool.

Usage: python3 identity_oauth_discovery.py URL
Prints one JSON object: {"tools": [...], "whoami": "...", "client_id": "...", "scope": "..."}.
The "browser" step follows the IdP's redirect itself (oauth2-mock-server authorizes without login).
"""

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


async def main() -> None:
    url = sys.argv[1]
    redirect = {}
    seen = {}

    async def redirect_handler(auth_url: str) -> None:
        q = parse_qs(urlparse(auth_url).query)
        seen["scope"] = q.get("scope", [""])[0]
        seen["resource"] = q.get("resource", [""])[0]
        seen["code_challenge_method"] = q.get("code_challenge_method", [""])[0]
        async with httpx2.AsyncClient(follow_redirects=False) as c:
            r = await c.get(auth_url)
            loc = urlparse(r.headers["location"])
            redirect.update({k: v[0] for k, v in parse_qs(loc.query).items()})

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="python-sdk-test",
            redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("whoami", {})
                text = result.content[0].text
    print(
        json.dumps(
            {
                "tools": [t.name for t in tools.tools],
                "whoami": text,
                "client_id": storage.client.client_id if storage.client else None,
                **seen,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
