// An OpenID provider for authchain's tests: oidc-provider on 127.0.0.1
// with clients, users and token lifetimes from a JSON config, its own
// plain-HTML login form, consent granted automatically, and a request
// counter at /__requests.
//
//   node server.mjs CONFIG.json        (or AUTHCHAIN_IDP_CONFIG='{...}')
//
// It prints one line `authchain-idp ready issuer=http://127.0.0.1:PORT`
// once it serves. The config (every key optional):
//
//   {
//     "port": 0,
//     "access_token_format": "opaque" | "jwt",
//     "resource": "urn:authchain:api",
//     "scopes": ["api:read", "api:write"],
//     "id_token_claims": true,
//     "rotate_refresh_tokens": false,
//     "ttl": {"AccessToken": 3600, "ClientCredentials": 3600, "IdToken": 3600,
//             "AuthorizationCode": 600, "RefreshToken": 86400,
//             "Session": 86400, "Interaction": 3600, "Grant": 86400},
//     "clients": [{"client_id": "app", "client_secret": "secret" | null,
//                  "redirect_uris": [...], "post_logout_redirect_uris": [...],
//                  "grant_types": ["authorization_code", "refresh_token"],
//                  "token_endpoint_auth_method": "client_secret_basic"}],
//     "users": [{"username": "alice", "password": "alicepwd",
//                "claims": {"sub": "alice", "email": "...", "groups": [...]}}]
//   }

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

// A token with this resource indicator is opaque; any other is a JWT.
const OPAQUE_RESOURCE = 'urn:authchain:opaque';

function loadConfig() {
  const arg = process.argv[2];
  if (arg) return JSON.parse(readFileSync(arg, 'utf8'));
  if (process.env.AUTHCHAIN_IDP_CONFIG) return JSON.parse(process.env.AUTHCHAIN_IDP_CONFIG);
  return {};
}

const config = loadConfig();
const jwtByDefault = (config.access_token_format ?? 'opaque') === 'jwt';
if (!['opaque', 'jwt'].includes(config.access_token_format ?? 'opaque')) {
  throw new Error(`access_token_format: "${config.access_token_format}" is neither "opaque" nor "jwt"`);
}
const defaultResource = config.resource ?? 'urn:authchain:api';
const extraScopes = config.scopes ?? ['api:read', 'api:write'];
const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 600,
  IdToken: 3600,
  RefreshToken: 86400,
  Session: 86400,
  Interaction: 3600,
  Grant: 86400,
  ...(config.ttl ?? {}),
};
ttl.ClientCredentials ??= ttl.AccessToken;

const users = (config.users ?? []).map((u) => ({
  ...u,
  claims: { sub: u.username, preferred_username: u.username, ...(u.claims ?? {}) },
}));
const userBySub = new Map(users.map((u) => [u.claims.sub, u]));

const clients = (config.clients ?? []).map((c) => {
  const grantTypes = c.grant_types ?? ['authorization_code', 'refresh_token'];
  const code = grantTypes.includes('authorization_code');
  const secret = c.client_secret ?? undefined;
  return {
    client_id: c.client_id,
    ...(secret === undefined ? {} : { client_secret: secret }),
    redirect_uris: c.redirect_uris ?? [],
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    grant_types: grantTypes,
    response_types: code ? ['code'] : [],
    token_endpoint_auth_method: secret === undefined
      ? 'none'
      : (c.token_endpoint_auth_method ?? 'client_secret_basic'),
  };
});

// Requests counted by path; every name is always in the answer.
const COUNTED = {
  '/.well-known/openid-configuration': 'discovery',
  '/jwks': 'jwks',
  '/auth': 'auth',
  '/token': 'token',
  '/token/introspection': 'introspection',
  '/token/revocation': 'revocation',
  '/me': 'userinfo',
  '/session/end': 'end_session',
  '/session/end/confirm': 'end_session_confirm',
};
const zeroCounts = () => Object.fromEntries(
  [...Object.values(COUNTED), 'auth_resume', 'interaction', 'login', 'other'].map((k) => [k, 0]),
);
let counts = zeroCounts();
function countRequest(path) {
  let name = COUNTED[path];
  if (!name && path.startsWith('/auth/')) name = 'auth_resume';
  if (!name && path.startsWith('/interaction/')) name = path.endsWith('/login') ? 'login' : 'interaction';
  counts[name ?? 'other'] += 1;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
${body}
</body></html>
`;

function loginPage(uid, clientId, error) {
  return page('Sign in', `<h1>Sign in</h1>
<p>to ${esc(clientId)}</p>
${error ? `<p class="error" id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <label>Username <input type="text" name="login" autocomplete="username" autofocus></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form>`);
}

// oidc-provider's own logout page puts its buttons outside the form (with
// `form=` attributes); this one is a plain form with everything inside.
async function logoutSource(ctx, form) {
  const withLogout = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/><button type="submit">Sign out</button></form>');
  ctx.type = 'html';
  ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Do you want to sign out from ${esc(ctx.host)}?</p>
${withLogout}`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out.</p>');
}

// A fresh RS256 signing key per start (served at /jwks).
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(config.port ?? 0, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

// Every scope a resource server accepts: the configured ones, the OpenID
// ones and whatever the request, code or refresh token asks for, so that
// tests can mint tokens with scopes of their choosing.
function resourceScopes(ctx) {
  const scopes = new Set(['openid', 'profile', 'email', 'groups', 'offline_access', ...extraScopes]);
  const add = (s) => s?.split(' ').forEach((x) => x && scopes.add(x));
  add(ctx.oidc?.params?.scope);
  add(ctx.oidc?.entities?.AuthorizationCode?.scope);
  add(ctx.oidc?.entities?.RefreshToken?.scope);
  return [...scopes].join(' ');
}

const provider = new Provider(issuer, {
  clients,
  findAccount: async (_ctx, id) => {
    const user = userBySub.get(id);
    if (!user) return undefined;
    return { accountId: id, claims: async () => ({ ...user.claims }) };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'nickname', 'picture', 'locale', 'updated_at'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', ...extraScopes],
  // Scope-requested claims go in the ID token too (not only userinfo), as
  // most IdPs do and as steps that read the ID token expect.
  conformIdTokenClaims: !(config.id_token_claims ?? true),
  jwks: { keys: [signingKey] },
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
    names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' },
  },
  ttl,
  pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // A spent refresh token used again revokes its grant (oidc-provider
  // does so whatever this says).
  ...(config.rotate_refresh_tokens ? { rotateRefreshToken: true } : {}),
  issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && (code.kind === 'AuthorizationCode' || code.kind === 'RefreshToken'),
  clientBasedCORS: () => true,
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, _client, oneOf) => {
        if (oneOf) return oneOf;
        // Client credentials name their resource (Idp::client_credentials
        // does); a code flow's token is for the default resource only when
        // JWTs are asked for, so that an opaque one stays good at userinfo.
        if (ctx.oidc.params?.grant_type === 'client_credentials') return undefined;
        return jwtByDefault ? defaultResource : undefined;
      },
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator) => ({
        scope: resourceScopes(ctx),
        audience: indicator,
        accessTokenTTL: ctx.oidc.params?.grant_type === 'client_credentials' ? ttl.ClientCredentials : ttl.AccessToken,
        accessTokenFormat: indicator === OPAQUE_RESOURCE ? 'opaque' : 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, uid, isLogin) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, 'text/plain', `interaction ${uid} is not the one in this browser's cookie (${details.uid})`);
    return;
  }
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (!isLogin) {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id));
      return;
    }
    const form = await readForm(req);
    const user = users.find((u) => u.username === form.get('login'));
    if (!user || user.password !== form.get('password')) {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id, 'Invalid username or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: user.claims.sub } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const missing = prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  send(res, 400, 'text/plain', `unexpected prompt ${prompt.name}`);
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  // oidc-provider builds its endpoints' URLs (discovery, redirects) from
  // the request's Host; pin it to the issuer's, whatever the client sent.
  req.headers.host = new URL(issuer).host;
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path === '/__requests' && req.method === 'GET') {
      send(res, 200, 'application/json', JSON.stringify(counts));
      return;
    }
    if (path === '/__requests/reset' && req.method === 'POST') {
      counts = zeroCounts();
      send(res, 200, 'application/json', JSON.stringify(counts));
      return;
    }
    countRequest(path);
    const m = path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (m && (req.method === 'GET' || (m[2] && req.method === 'POST'))) {
      await interaction(req, res, m[1], !!m[2]);
      return;
    }
    callback(req, res);
  } catch (err) {
    console.error(`${req.method} ${req.url}:`, err);
    if (!res.headersSent) send(res, 400, 'text/plain', `${err.name}: ${err.message}`);
  }
});

process.on('SIGTERM', () => process.exit(0));
console.log(`authchain-idp ready issuer=${issuer}`);
