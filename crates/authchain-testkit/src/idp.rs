//! An OpenID provider: npm's `oidc-provider` run by `node` (the script
//! `idp/server.mjs` of this crate), with clients, users and token
//! lifetimes from an [`IdpConfig`], its own plain-HTML login form (inputs
//! `login` and `password`), consent granted automatically, introspection,
//! revocation, userinfo, RP-initiated logout (a plain form, no JavaScript)
//! and client credentials.
//!
//! Access tokens are opaque unless [`TokenFormat::Jwt`] is asked for (then
//! RS256 JWTs with a `scope` claim, for the audience
//! [`IdpConfig::resource`]); ID tokens are RS256, signed by a key made at
//! start and served at `jwks_uri`. `GET /__requests` counts the requests
//! by endpoint ([`Idp::requests`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::login::form_urlencode;
use crate::node::{self, NODE};
use crate::{ChildPeer, PeerError, ScratchDir, client};

/// How long the IdP may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The resource indicator the IdP gives opaque access tokens for; any
/// other resource gets JWTs.
pub const OPAQUE_RESOURCE: &str = "urn:authchain:opaque";

/// The line the IdP prints when it serves, followed by its issuer URL.
const READY: &str = "authchain-idp ready issuer=";

/// What access tokens of the authorization-code flow look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// Opaque strings, checked by introspection; good at userinfo.
    #[default]
    Opaque,
    /// RS256 JWTs for the audience [`IdpConfig::resource`], with a `scope`
    /// claim (oidc-provider does not take them at userinfo).
    Jwt,
}

/// Token and session lifetimes, in seconds; `None` keeps the IdP's
/// default (access and ID tokens 1 h, codes 10 min, refresh tokens and
/// sessions 1 day).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdpTtl {
    /// Access tokens of the code and refresh flows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<u64>,
    /// Access tokens of client credentials (default: `access_token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<u64>,
    /// ID tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<u64>,
    /// Authorization codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_code: Option<u64>,
    /// Refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<u64>,
    /// The IdP's login session (its cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

/// A client (relying party) registered at the IdP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`; `None` makes a public client
    /// (`token_endpoint_auth_method: none`, PKCE required).
    pub client_secret: Option<String>,
    /// Where codes may be sent.
    pub redirect_uris: Vec<String>,
    /// Where logout may send the user back to.
    pub post_logout_redirect_uris: Vec<String>,
    /// Of `authorization_code`, `refresh_token`, `client_credentials`.
    /// With `refresh_token`, every code exchange gives a refresh token.
    pub grant_types: Vec<String>,
    /// `client_secret_basic` (the default) or `client_secret_post`;
    /// ignored for public clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
}

impl IdpClient {
    /// A confidential client with a secret (`client_secret_basic`) and the
    /// grants `authorization_code`, `refresh_token` and
    /// `client_credentials`.
    pub fn confidential(client_id: &str, secret: &str, redirect_uri: &str) -> Self {
        IdpClient {
            client_id: client_id.to_owned(),
            client_secret: Some(secret.to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            grant_types: ["authorization_code", "refresh_token", "client_credentials"]
                .map(String::from)
                .to_vec(),
            token_endpoint_auth_method: None,
        }
    }

    /// A public client (no secret, PKCE required) with the grants
    /// `authorization_code` and `refresh_token`.
    pub fn public(client_id: &str, redirect_uri: &str) -> Self {
        IdpClient {
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            grant_types: ["authorization_code", "refresh_token"]
                .map(String::from)
                .to_vec(),
            token_endpoint_auth_method: None,
        }
    }
}

/// A user who can log in at the IdP's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpUser {
    /// What goes in the form's `login` input.
    pub username: String,
    /// What goes in its `password` input.
    pub password: String,
    /// The user's claims (`sub`, `email`, `name`, `groups`, ...); `sub` and
    /// `preferred_username` default to the username. Released by scope:
    /// `openid` gives `sub`, `profile` `name`, `preferred_username`, ...,
    /// `email` `email` and `email_verified`, `groups` `groups`.
    pub claims: BTreeMap<String, Value>,
}

impl IdpUser {
    /// A user with no claims besides the default `sub` and
    /// `preferred_username`.
    pub fn new(username: &str, password: &str) -> Self {
        IdpUser {
            username: username.to_owned(),
            password: password.to_owned(),
            claims: BTreeMap::new(),
        }
    }

    /// With one more claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// `alice` / `alicepwd`: `sub` `alice`, `email` `alice@example.com`
    /// (verified), `name` `Alice Example`, `groups` `["developers"]`.
    pub fn alice() -> Self {
        IdpUser::new("alice", "alicepwd")
            .claim("sub", "alice")
            .claim("email", "alice@example.com")
            .claim("email_verified", true)
            .claim("name", "Alice Example")
            .claim("groups", vec!["developers"])
    }
}

/// What an [`Idp`] serves. Written as JSON for `idp/server.mjs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpConfig {
    /// The port on 127.0.0.1 (`None`: one chosen at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The code flow's access tokens.
    pub access_token_format: TokenFormat,
    /// The audience of JWT access tokens (`urn:authchain:api`).
    pub resource: String,
    /// Scopes the IdP knows besides the OpenID ones (`api:read`,
    /// `api:write`); client credentials take any scope.
    pub scopes: Vec<String>,
    /// Whether the ID token carries the claims its scopes release (true;
    /// false: only `sub` and the protocol claims, the rest at userinfo).
    pub id_token_claims: bool,
    /// Lifetimes.
    pub ttl: IdpTtl,
    /// Whether every refresh gives a new refresh token and spends the old
    /// one (false: oidc-provider's default, which keeps a confidential
    /// client's). A spent one used again revokes the whole grant.
    pub rotate_refresh_tokens: bool,
    /// The clients.
    pub clients: Vec<IdpClient>,
    /// The users.
    pub users: Vec<IdpUser>,
}

impl Default for IdpConfig {
    fn default() -> Self {
        IdpConfig {
            port: None,
            access_token_format: TokenFormat::Opaque,
            resource: "urn:authchain:api".to_owned(),
            scopes: vec!["api:read".to_owned(), "api:write".to_owned()],
            id_token_claims: true,
            ttl: IdpTtl::default(),
            rotate_refresh_tokens: false,
            clients: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl IdpConfig {
    /// One confidential client ([`IdpClient::confidential`]) and one user,
    /// [`IdpUser::alice`].
    pub fn single(client_id: &str, secret: &str, redirect_uri: &str) -> Self {
        IdpConfig {
            clients: vec![IdpClient::confidential(client_id, secret, redirect_uri)],
            users: vec![IdpUser::alice()],
            ..IdpConfig::default()
        }
    }

    /// JWT access tokens for the code flow.
    pub fn jwt(mut self) -> Self {
        self.access_token_format = TokenFormat::Jwt;
        self
    }

    /// The client with this id.
    pub fn client(&self, client_id: &str) -> Option<&IdpClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }
}

/// Requests the IdP served since start or the last reset, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct IdpRequests {
    /// `/.well-known/openid-configuration`.
    pub discovery: u64,
    /// `/jwks`.
    pub jwks: u64,
    /// `/auth` (the authorization endpoint).
    pub auth: u64,
    /// `/auth/{uid}` (resuming after the login form).
    pub auth_resume: u64,
    /// `GET /interaction/{uid}` (the login form, consent).
    pub interaction: u64,
    /// `POST /interaction/{uid}/login` (the form submitted).
    pub login: u64,
    /// `/token`.
    pub token: u64,
    /// `/token/introspection`.
    pub introspection: u64,
    /// `/token/revocation`.
    pub revocation: u64,
    /// `/me` (userinfo).
    pub userinfo: u64,
    /// `/session/end` (RP-initiated logout).
    pub end_session: u64,
    /// `/session/end/confirm` (its form submitted).
    pub end_session_confirm: u64,
    /// Anything else.
    pub other: u64,
}

/// A running IdP. Dropping it kills the process.
#[derive(Debug)]
pub struct Idp {
    peer: ChildPeer,
    config: IdpConfig,
    addr: SocketAddr,
}

impl Idp {
    /// Starts the IdP and waits until it serves.
    pub async fn start(config: IdpConfig) -> Result<Idp, PeerError> {
        let (peer, addr) = spawn(&config).await?;
        Ok(Idp { peer, config, addr })
    }

    /// Its issuer, `http://127.0.0.1:PORT` (discovery is under it).
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The config it runs with.
    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    /// The authorization endpoint's URL for a code flow with these
    /// parameters (no PKCE; add `&code_challenge=...` for it).
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        state: &str,
    ) -> String {
        format!(
            "{}/auth?{}",
            self.issuer(),
            form_urlencode(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", scope),
                ("state", state),
            ])
        )
    }

    /// The request counts of `GET /__requests`.
    pub async fn requests(&self) -> Result<IdpRequests, PeerError> {
        let reply = client::get(self.addr, "/__requests", &[]).await?;
        reply.json()
    }

    /// Sets the request counts to zero.
    pub async fn reset_requests(&self) -> Result<(), PeerError> {
        let reply = client::post(self.addr, "/__requests/reset", &[], Bytes::new()).await?;
        if reply.status != 200 {
            return Err(self
                .peer
                .failure(format!("POST /__requests/reset answered {}", reply.status)));
        }
        Ok(())
    }

    /// An access token of the client-credentials grant with this `scope`
    /// (any scopes, space-separated): a JWT for the audience
    /// [`IdpConfig::resource`] when `jwt`, else an opaque token (audience
    /// [`OPAQUE_RESOURCE`]). The client authenticates as configured
    /// (`client_secret_basic` unless it says `client_secret_post`).
    pub async fn client_credentials(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
        jwt: bool,
    ) -> Result<String, PeerError> {
        let resource = if jwt {
            self.config.resource.as_str()
        } else {
            OPAQUE_RESOURCE
        };
        let params = [
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ];
        let reply: Value = self
            .client_post("/token", client_id, secret, &params)
            .await?;
        reply["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                self.peer
                    .failure(format!("the token endpoint gave no access_token: {reply}"))
            })
    }

    /// The introspection response (RFC 7662) for `token`, asked by this
    /// client.
    pub async fn introspect(
        &self,
        client_id: &str,
        secret: &str,
        token: &str,
    ) -> Result<Value, PeerError> {
        self.client_post(
            "/token/introspection",
            client_id,
            secret,
            &[("token", token)],
        )
        .await
    }

    /// The JWKS the IdP signs with.
    pub async fn jwks(&self) -> Result<Value, PeerError> {
        client::get(self.addr, "/jwks", &[]).await?.json()
    }

    /// Its discovery document.
    pub async fn discovery(&self) -> Result<Value, PeerError> {
        client::get(self.addr, "/.well-known/openid-configuration", &[])
            .await?
            .json()
    }

    /// Stops it (an IdP that goes down); [`restart`](Self::restart) brings
    /// it back.
    pub fn kill(&mut self) {
        self.peer.kill();
    }

    /// Kills it and starts it again on the same port, with the same config,
    /// a new signing key, and no sessions, grants or tokens.
    pub async fn restart(&mut self) -> Result<(), PeerError> {
        self.peer.kill();
        let config = IdpConfig {
            port: Some(self.addr.port()),
            ..self.config.clone()
        };
        let (peer, addr) = spawn(&config).await?;
        self.peer = peer;
        self.addr = addr;
        Ok(())
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        self.peer.output()
    }

    /// A token request (`POST /token`) by this client with these
    /// parameters (`grant_type` and the rest), the client authenticating
    /// as configured (a public client sends only its `client_id`); the JSON
    /// answer of a 200, else an error quoting the answer.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, PeerError> {
        self.client_post("/token", client_id, secret, params).await
    }

    async fn client_post(
        &self,
        path: &str,
        client_id: &str,
        secret: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, PeerError> {
        let registered = self.config.client(client_id);
        let public = registered.is_some_and(|c| c.client_secret.is_none());
        let post = registered
            .and_then(|c| c.token_endpoint_auth_method.as_deref())
            .is_some_and(|m| m == "client_secret_post");
        let mut params = params.to_vec();
        let mut headers = vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )];
        if public {
            params.push(("client_id", client_id));
        } else if post {
            params.push(("client_id", client_id));
            params.push(("client_secret", secret));
        } else {
            headers.push(("authorization".to_owned(), basic(client_id, secret)));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = client::request(Method::POST, path, &headers, form_urlencode(&params))?;
        let reply = client::send(self.addr, request).await?;
        if reply.status != 200 {
            return Err(self.peer.failure(format!(
                "POST {path} answered {}: {}",
                reply.status,
                reply.text()
            )));
        }
        reply.json()
    }
}

/// `Authorization: Basic` for a client, its id and secret form-encoded
/// first (RFC 6749 section 2.3.1).
fn basic(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let pair = format!(
        "{}:{}",
        crate::login::form_urlencode_component(client_id),
        crate::login::form_urlencode_component(secret)
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn spawn(config: &IdpConfig) -> Result<(ChildPeer, SocketAddr), PeerError> {
    let node = NODE.locate()?;
    let script = node::script("server.mjs", include_str!("../idp/server.mjs"))?;
    let dir = ScratchDir::new("idp")?;
    let json = serde_json::to_string_pretty(config)
        .map_err(|e| PeerError::new(format!("idp config: {e}")))?;
    let config_path = dir.write("idp.json", &json)?;
    // ChildPeer captures the peer's stdout in this file.
    let stdout = dir.path().join("stdout.log");
    let mut command = Command::new(node);
    command.arg(&script).arg(&config_path);
    let mut peer = ChildPeer::spawn("idp", command, dir)?;
    let addr = peer
        .wait_until(STARTUP_TIMEOUT, || {
            let stdout = stdout.clone();
            async move {
                let text = std::fs::read_to_string(&stdout).ok()?;
                let issuer = text.lines().find_map(|l| l.strip_prefix(READY))?;
                issuer.trim().strip_prefix("http://")?.parse().ok()
            }
        })
        .await?;
    Ok((peer, addr))
}
