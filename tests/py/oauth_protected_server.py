"""An MCP server (Python SDK, Streamable HTTP on 127.0.0.1) protected by OAuth, as a SaaS MCP server
is: it publishes RFC 9728 metadata naming the authorization server ISSUER, answers 401 with a
`WWW-Authenticate` challenge without a valid token, and accepts only JWTs signed with the issuer's
keys whose `aud` is its own URL. Its `whoami` tool answers with the claims of the token that
carried the call, so a test sees whose grant the gateway used.

usage: oauth_protected_server.py PORT ISSUER
"""
import json
import sys

import jwt
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

PORT = int(sys.argv[1])
ISSUER = sys.argv[2]
RESOURCE = f"http://127.0.0.1:{PORT}/mcp"
JWKS = jwt.PyJWKClient(f"{ISSUER}/jwks")


class IssuerTokens(TokenVerifier):
    """Verifies the issuer's signature, the issuer, the expiry and the audience (RFC 8707)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = JWKS.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=RESOURCE, issuer=ISSUER
            )
        except Exception as e:  # any refusal is a 401 for the client
            print(f"token refused: {e}", file=sys.stderr, flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or "unknown"),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=claims.get("exp"),
            resource=RESOURCE,
            subject=claims.get("sub"),
            claims=claims,
        )


mcp = MCPServer(
    "oauth-protected",
    token_verifier=IssuerTokens(),
    auth=AuthSettings(
        issuer_url=ISSUER,
        resource_server_url=RESOURCE,
        required_scopes=["files:read"],
        validate_token_resource=False,  # IssuerTokens checks `aud` itself
    ),
)


@mcp.tool()
def whoami() -> str:
    """The claims of the access token this call carried."""
    token = get_access_token()
    return json.dumps(token.claims if token else None)


if __name__ == "__main__":
    mcp.run("streamable-http", host="127.0.0.1", port=PORT)
