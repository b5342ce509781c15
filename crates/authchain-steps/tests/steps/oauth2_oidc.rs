//! `oauth2.oidcAuthorizationCode` under attack, in process: a real OpenID
//! provider (npm oidc-provider), the real `AuthChainLayer` in front of an
//! axum app on 127.0.0.1 (the "layer" transport), a cookie-keeping client
//! that walks the IdP's login form, Redis, and an in-test token endpoint
//! for ID tokens the IdP would never sign.
//!
//! Every attack ends in a 401/403 or a new login (a 302 to the IdP): never
//! a session, never a panic, never a wait past the step's `timeout`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::Logs;
use authchain_core::{AuthConfig, AuthorizationRequest, Engine, Format};
use authchain_http::{AuthChainLayer, AuthContext};
use authchain_testkit::idp::{Idp, IdpClient, IdpConfig, IdpTtl, IdpUser};
use authchain_testkit::login::{Final, UserAgent, form_urldecode, form_urlencode};
use authchain_testkit::redis::Redis;
use authchain_testkit::{ScratchDir, free_port, silent_server};
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::net::TcpListener;

/// The session key (`cipherConfig.keyRef`), 32 bytes.
const KEY: &str = "0123456789abcdef0123456789abcdef";
/// The client's secret at the IdP.
const SECRET: &str = "app-secret-7f3a9c";
/// No request of these tests may take longer.
const LIMIT: Duration = Duration::from_secs(30);
const RSA: &[u8] = include_bytes!("../keys/rsa.pem");
const RSA2: &[u8] = include_bytes!("../keys/rsa2.pem");
const EC: &[u8] = include_bytes!("../keys/ec.pem");
const HS: &[u8] = b"a-test-only-hmac-secret-of-32-by";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------
// The rig: fronts bound first (their URLs are the IdP's redirect URIs),
// then the IdP, then engines served by the fronts.
// ---------------------------------------------------------------------

struct Rig {
    idp: Option<Idp>,
    idp_config: IdpConfig,
    issuer: String,
    dir: ScratchDir,
    listeners: Vec<Option<TcpListener>>,
    bases: Vec<String>,
}

impl Rig {
    /// `fronts` fronts and a running IdP.
    async fn start(fronts: usize, tweak: impl FnOnce(&mut IdpConfig)) -> Rig {
        let mut rig = Rig::new(fronts, tweak).await;
        rig.start_idp().await;
        rig
    }

    /// `fronts` fronts and an IdP not started yet (its port chosen).
    async fn new(fronts: usize, tweak: impl FnOnce(&mut IdpConfig)) -> Rig {
        let mut listeners = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..fronts {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            bases.push(format!("http://{}", listener.local_addr().unwrap()));
            listeners.push(Some(listener));
        }
        let mut app = IdpClient::confidential("app", SECRET, "http://127.0.0.1:1/");
        app.redirect_uris = bases.iter().map(|b| format!("{b}/callback")).collect();
        app.post_logout_redirect_uris = bases.iter().map(|b| format!("{b}/bye")).collect();
        let other = IdpClient::confidential("other", "other-secret", "http://127.0.0.1:9/other");
        let port = free_port().unwrap();
        let mut idp_config = IdpConfig {
            port: Some(port),
            clients: vec![app, other],
            users: vec![IdpUser::alice()],
            ..IdpConfig::default()
        };
        tweak(&mut idp_config);
        let dir = ScratchDir::new("oidc-attack").unwrap();
        dir.write("secret", SECRET).unwrap();
        dir.write("key", KEY).unwrap();
        Rig {
            idp: None,
            idp_config,
            issuer: format!("http://127.0.0.1:{port}"),
            dir,
            listeners,
            bases,
        }
    }

    async fn start_idp(&mut self) {
        self.idp = Some(Idp::start(self.idp_config.clone()).await.unwrap());
    }

    fn idp(&self) -> &Idp {
        self.idp.as_ref().expect("the IdP runs")
    }

    fn idp_mut(&mut self) -> &mut Idp {
        self.idp.as_mut().expect("the IdP runs")
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The AuthConfig `name` for front `front`: cookie sessions sealed
    /// with [`KEY`], the ID and access tokens and the email upstream.
    fn config(&self, name: &str, front: usize) -> Value {
        let base = &self.bases[front];
        json!({
            "name": name,
            "configs": [{ "oauth2": { "oidcAuthorizationCode": {
                "appUrl": base,
                "callbackPath": "/callback",
                "logoutPath": "/logout",
                "afterLogoutUrl": format!("{base}/bye"),
                "clientId": "app",
                "clientSecretRef": { "file": self.file("secret") },
                "issuerUrl": self.issuer,
                "scopes": ["email"],
                "timeout": "2s",
                "identityToken": { "claimsToHeaders": [{ "claim": "email", "header": "x-user-email" }] },
                "headers": { "idTokenHeader": "x-id-token", "accessTokenHeader": "x-access-token" },
                "session": { "cipherConfig": { "keyRef": { "file": self.file("key") } } },
            }}}],
        })
    }

    /// Serves `config` (its AuthConfig) on front `front`.
    async fn front(&mut self, front: usize, config: &Value) -> Front {
        let listener = self.listeners[front]
            .take()
            .expect("each front serves once");
        let engine = engine(config).await;
        let name = config["name"].as_str().unwrap().to_owned();
        serve(listener, self.bases[front].clone(), engine, &name)
    }
}

/// The `oidcAuthorizationCode` block of a config.
fn oidc(config: &mut Value) -> &mut Value {
    &mut config["configs"][0]["oauth2"]["oidcAuthorizationCode"]
}

fn registry() -> authchain_core::PluginRegistry {
    let mut registry = authchain_core::PluginRegistry::new();
    authchain_steps::register(&mut registry);
    registry
}

fn parse(config: &Value) -> Vec<AuthConfig> {
    // JSON is YAML.
    AuthConfig::parse("t", &config.to_string(), Format::Yaml).unwrap()
}

async fn engine(config: &Value) -> Arc<Engine> {
    let engine = Engine::new(registry());
    engine.load(&parse(config)).await.unwrap();
    Arc::new(engine)
}

/// An axum app behind the real `AuthChainLayer`.
struct Front {
    base: String,
    engine: Arc<Engine>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn callback(&self) -> String {
        self.url("/callback")
    }

    /// The chain, to run requests through without the front.
    fn chain(&self) -> Arc<authchain_core::Chain> {
        let generation = self.engine.current();
        let name = generation.names()[0].to_owned();
        generation.chain(&name).unwrap().clone()
    }
}

fn serve(listener: TcpListener, base: String, engine: Arc<Engine>, name: &str) -> Front {
    let app = Router::new()
        .fallback(app)
        .layer(AuthChainLayer::from_engine(engine.clone(), name));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Front { base, engine, task }
}

/// The app: who the layer let in, and what it was sent.
async fn app(request: Request<Body>) -> Response<Body> {
    let user = request
        .extensions()
        .get::<AuthContext>()
        .and_then(|c| c.user.as_ref())
        .map(|u| u.user_id.clone())
        .unwrap_or_default();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Response::builder()
        .status(200)
        .header("x-app-user", user)
        .header("x-app-email", header("x-user-email"))
        .header("x-app-id-token", header("x-id-token"))
        .header("x-app-access-token", header("x-access-token"))
        .body(Body::from(format!(
            "app {} {}",
            request.method(),
            request.uri()
        )))
        .unwrap()
}

// ---------------------------------------------------------------------
// Walking logins.
// ---------------------------------------------------------------------

/// One request, no redirect followed, within [`LIMIT`].
async fn send(agent: &mut UserAgent, method: Method, url: &str) -> Final {
    tokio::time::timeout(LIMIT, agent.send(method, url, &[], Bytes::new(), 0))
        .await
        .unwrap_or_else(|_| panic!("{url} hangs"))
        .unwrap()
}

async fn get(agent: &mut UserAgent, url: &str) -> Final {
    send(agent, Method::GET, url).await
}

/// `GET url` with these headers, no redirect followed, within [`LIMIT`].
async fn get_with(agent: &mut UserAgent, url: &str, headers: &[(&str, &str)]) -> Final {
    tokio::time::timeout(
        LIMIT,
        agent.send(Method::GET, url, headers, Bytes::new(), 0),
    )
    .await
    .unwrap_or_else(|_| panic!("{url} hangs"))
    .unwrap()
}

/// A query parameter of a URL, decoded.
fn query(url: &str, key: &str) -> Option<String> {
    let (_, q) = url.split_once('?')?;
    form_urldecode(q)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `GET url` without a session: the 302 to the IdP that starts a login.
async fn start_login(agent: &mut UserAgent, issuer: &str, url: &str) -> Final {
    let page = get(agent, url).await;
    assert_eq!(page.status, 302, "{url}: {}", page.describe());
    let location = page.location().unwrap();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    page
}

/// From a redirect to the IdP, through its login form (alice) if it shows
/// one, to where it sends the browser back: that URL (starting with
/// `back`), not visited.
async fn through_idp(agent: &mut UserAgent, from: Final, back: &str) -> String {
    let mut page = from;
    for _ in 0..20 {
        if let Some(mut form) = page.login_form() {
            form.fill_login("alice", "alicepwd").unwrap();
            let pairs: Vec<(&str, &str)> = form
                .fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let body = Bytes::from(form_urlencode(&pairs));
            page = tokio::time::timeout(
                LIMIT,
                agent.send(
                    Method::POST,
                    &form.action,
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body,
                    0,
                ),
            )
            .await
            .unwrap()
            .unwrap();
            continue;
        }
        let location = page
            .location()
            .unwrap_or_else(|| panic!("the IdP stopped: {}", page.describe()));
        if location.starts_with(back) {
            return location;
        }
        page = tokio::time::timeout(LIMIT, agent.follow(&page, 0))
            .await
            .unwrap()
            .unwrap();
    }
    panic!("the IdP never sent the browser back to {back}");
}

/// Starts a login at `path` and walks the IdP: the callback URL (with a
/// code and the state), not visited.
async fn callback_url(agent: &mut UserAgent, issuer: &str, front: &Front, path: &str) -> String {
    let start = start_login(agent, issuer, &front.url(path)).await;
    through_idp(agent, start, &front.callback()).await
}

/// A whole login at `path`: the callback's answer (a 302 back, with the
/// session's cookies).
async fn log_in(agent: &mut UserAgent, issuer: &str, front: &Front, path: &str) -> Final {
    let callback = callback_url(agent, issuer, front, path).await;
    let back = get(agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    back
}

/// The next request is let through, as alice.
async fn assert_session(agent: &mut UserAgent, front: &Front) -> Final {
    let page = get(agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert_eq!(page.header_values("x-app-user"), ["alice"]);
    assert_eq!(page.header_values("x-app-email"), ["alice@example.com"]);
    page
}

/// The next request is a new login.
async fn assert_new_login(agent: &mut UserAgent, issuer: &str, front: &Front) {
    let mut probe = UserAgent::new();
    *probe.jar_mut() = agent.jar().clone();
    start_login(&mut probe, issuer, &front.url("/private")).await;
}

/// A deny that is not a session: the status, and no session cookie set.
fn assert_refused(page: &Final, status: u16) {
    assert_eq!(page.status.as_u16(), status, "{}", page.describe());
    for cookie in page.header_values("set-cookie") {
        let (name, rest) = cookie.split_once('=').unwrap();
        assert!(
            !name.contains(SESSION) || name.contains("_login_") || rest.starts_with(';'),
            "a refused callback set a session: {cookie}"
        );
    }
}

/// The session cookie's name: `__Host-` where the cookies are `Secure`,
/// at `/` and without a `Domain`, as by default.
const SESSION: &str = "__Host-__session";

/// The name of the login cookie of the login with `state` (one per login).
fn login_name(state: &str) -> String {
    format!("__Host-__session_login_{}", &sha256_hex(state)[..12])
}

/// The login cookie's name for the login `url` (to the IdP, or back to the
/// callback) carries the state of.
fn login_name_of(url: &str) -> String {
    login_name(&query(url, "state").unwrap())
}

fn set_cookie<'a>(page: &'a Final, name: &str) -> Option<&'a str> {
    page.header_values("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

// ---------------------------------------------------------------------
// The happy path, its cookies, and the log.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_login_through_the_layer_logs_no_token_code_or_secret() {
    let (logs, _guard) = Logs::capture();
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();

    // The login: code flow, PKCE S256, state, nonce, our redirect URI.
    let start = start_login(&mut agent, &issuer, &front.url("/private?x=1")).await;
    let to_idp = start.location().unwrap();
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", "app"),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(query(&to_idp, k).as_deref(), Some(v), "{to_idp}");
    }
    assert_eq!(query(&to_idp, "redirect_uri"), Some(front.callback()));
    assert_eq!(query(&to_idp, "scope").as_deref(), Some("openid email"));
    let state = query(&to_idp, "state").unwrap();
    let nonce = query(&to_idp, "nonce").unwrap();
    assert!(state.len() >= 40 && nonce.len() >= 40 && state != nonce);
    assert_eq!(start.header_values("cache-control"), ["no-store"]);
    // The login cookie: `__Host-` (no other subdomain plants one), Lax,
    // 10 minutes.
    let login_cookie = login_name(&state);
    let login = set_cookie(&start, &login_cookie).unwrap().to_owned();
    assert!(
        login.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{login}"
    );
    let login_value = agent.jar().value(&login_cookie).unwrap().to_owned();

    let callback = through_idp(&mut agent, start, &front.callback()).await;
    let code = query(&callback, "code").unwrap();
    assert_eq!(query(&callback, "state"), Some(state.clone()));
    let back = get(&mut agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert_eq!(back.location(), Some(front.url("/private?x=1")));
    assert_eq!(back.header_values("cache-control"), ["no-store"]);
    // The login cookie goes, the session comes: Set-Cookies are few.
    let cookies = back.header_values("set-cookie");
    assert!(cookies.len() <= 5, "{cookies:?}");
    assert!(
        cookies.contains(
            &format!("{login_cookie}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax").as_str()
        ),
        "{cookies:?}"
    );
    let session = set_cookie(&back, SESSION).unwrap();
    assert!(
        session.ends_with("; Path=/; Max-Age=2592000; HttpOnly; Secure; SameSite=Lax"),
        "{session}"
    );
    let session_value = agent.jar().value(SESSION).unwrap().to_owned();
    assert!(agent.jar().get(&login_cookie).is_none());

    // The session alone lets the next requests through, with the tokens.
    let page = assert_session(&mut agent, &front).await;
    let id_token = page.header_values("x-app-id-token")[0].to_owned();
    let access_token = page.header_values("x-app-access-token")[0].to_owned();
    assert_eq!(id_token.split('.').count(), 3);
    assert!(!access_token.is_empty());
    // Refusals log their reasons: the code replayed (the IdP refuses
    // it), a forged state; then a logout.
    let mut replay = UserAgent::new();
    replay
        .jar_mut()
        .set_cookie(&front.base, &format!("{login_cookie}={login_value}"));
    assert_refused(&get(&mut replay, &callback).await, 401);
    let forged = callback.replace(&state, "forged");
    assert_refused(&get(&mut replay, &forged).await, 401);
    // A decision an embedding app logs with `{:?}` shows no token: not
    // the allow's headers, nor the logout's `id_token_hint`.
    let chain = front.chain();
    let cookie = HeaderValue::try_from(format!("{SESSION}={session_value}")).unwrap();
    for path in ["/private", "/logout"] {
        let mut request = AuthorizationRequest::new(Method::GET, path)
            .with_host(front.base.trim_start_matches("http://"))
            .with_header(http::header::COOKIE, cookie.clone());
        let decision = tokio::time::timeout(LIMIT, chain.authorize(&mut request))
            .await
            .unwrap();
        let debug = format!("{decision:?}");
        assert!(debug.contains("Sensitive"), "{path}: {debug}");
        for secret in [&id_token, &access_token, &session_value] {
            assert!(!debug.contains(secret.as_str()), "{path}: {debug}");
        }
    }
    let _ = get(&mut agent, &front.url("/logout")).await;

    // None of it in the log, at any level.
    let text = logs.text();
    assert!(
        text.contains("the IdP refused the code"),
        "nothing captured?\n{text}"
    );
    assert!(text.contains("invalid_grant"), "{text}");
    for (what, secret) in [
        ("client secret", SECRET),
        ("code", code.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("login cookie", login_value.as_str()),
        ("session cookie", session_value.as_str()),
        ("ID token", id_token.as_str()),
        ("ID token signature", id_token.rsplit('.').next().unwrap()),
        ("access token", access_token.as_str()),
    ] {
        assert!(!text.contains(secret), "the log holds the {what}:\n{text}");
    }
}

// ---------------------------------------------------------------------
// state: forged, missing, another login's, expired, replayed; two tabs.
// ---------------------------------------------------------------------

#[tokio::test]
async fn forged_state_a_missing_or_foreign_login_cookie_are_401() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    let callback = callback_url(&mut agent, &issuer, &front, "/private").await;
    let code = query(&callback, "code").unwrap();
    let tokens = rig.idp().requests().await.unwrap().token;

    // Another state than the login cookie's.
    let mut forged = agent.clone();
    let url = front.url(&format!("/callback?code={code}&state=forged"));
    assert_refused(&get(&mut forged, &url).await, 401);
    // No login cookie at all.
    assert_refused(&get(&mut UserAgent::new(), &callback).await, 401);
    // The login cookie of another login.
    let mut other = UserAgent::new();
    start_login(&mut other, &issuer, &front.url("/elsewhere")).await;
    assert_refused(&get(&mut other, &callback).await, 401);
    // A login cookie that is not one.
    let mut garbage = UserAgent::new();
    garbage.jar_mut().set_cookie(
        &front.base,
        &format!("{}=bm90IGEgbG9naW4", login_name_of(&callback)),
    );
    assert_refused(&get(&mut garbage, &callback).await, 401);
    // An error from the IdP, with the right state.
    let state = query(&callback, "state").unwrap();
    let url = front.url(&format!("/callback?error=access_denied&state={state}"));
    assert_refused(&get(&mut agent.clone(), &url).await, 401);
    // None of these spent the code.
    assert_eq!(rig.idp().requests().await.unwrap().token, tokens);

    // The genuine callback still works, once.
    let login_cookie = login_name_of(&callback);
    let login = agent.jar().value(&login_cookie).unwrap().to_owned();
    let back = get(&mut agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert_session(&mut agent, &front).await;
    // Replayed, with its login cookie: the IdP refuses the spent code.
    let mut replay = UserAgent::new();
    replay
        .jar_mut()
        .set_cookie(&front.base, &format!("{login_cookie}={login}"));
    assert_refused(&get(&mut replay, &callback).await, 401);
}

#[tokio::test]
async fn a_code_issued_to_another_client_is_refused() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    // `other` logs alice in and gets a code.
    let mut thief = UserAgent::new();
    let url = rig
        .idp()
        .authorize_url("other", "http://127.0.0.1:9/other", "openid", "st");
    let first = get(&mut thief, &url).await;
    let other_back = through_idp(&mut thief, first, "http://127.0.0.1:9/other").await;
    let stolen = query(&other_back, "code").unwrap();
    // Our login, with that code.
    let mut agent = UserAgent::new();
    let start = start_login(&mut agent, &issuer, &front.url("/private")).await;
    let state = query(&start.location().unwrap(), "state").unwrap();
    let url = front.url(&format!(
        "/callback?{}",
        form_urlencode(&[("code", &stolen), ("state", &state)])
    ));
    assert_refused(&get(&mut agent, &url).await, 401);
    assert_new_login(&mut agent, &issuer, &front).await;
}

/// A session that ended with several tabs open: each tab's reload starts
/// its own login, and each comes back to its own page, in any order. A
/// background `fetch` meanwhile gets a 401 and starts none.
#[tokio::test]
async fn logins_in_several_tabs_each_come_back() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    let tab1 = start_login(&mut agent, &issuer, &front.url("/one")).await;
    let tab2 = start_login(&mut agent, &issuer, &front.url("/two")).await;
    let tab3 = start_login(&mut agent, &issuer, &front.url("/three")).await;
    let fetch = get_with(
        &mut agent,
        &front.url("/api/poll"),
        &[("sec-fetch-mode", "cors")],
    )
    .await;
    assert_refused(&fetch, 401);
    assert!(fetch.header_values("set-cookie").is_empty());
    assert!(fetch.location().is_none());
    let back1 = through_idp(&mut agent, tab1, &front.callback()).await;
    let back2 = through_idp(&mut agent, tab2, &front.callback()).await;
    let back3 = through_idp(&mut agent, tab3, &front.callback()).await;
    for (back, path) in [(back2, "/two"), (back1, "/one"), (back3, "/three")] {
        let done = get(&mut agent, &back).await;
        assert_eq!(
            done.location(),
            Some(front.url(path)),
            "{}",
            done.describe()
        );
        assert_session(&mut agent, &front).await;
    }
    // A navigation still starts one.
    let mut fresh = UserAgent::new();
    let page = get_with(
        &mut fresh,
        &front.url("/private"),
        &[("sec-fetch-mode", "navigate")],
    )
    .await;
    assert_eq!(page.status, 302, "{}", page.describe());
}

/// Logins started in many tabs at once: the login cookies (`Path=/`, so
/// every request carries them) stay few, since a login started beside
/// four removes theirs; the last one still comes back.
#[tokio::test]
async fn logins_started_in_many_tabs_keep_few_login_cookies() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    let logins = |agent: &UserAgent| {
        agent
            .jar()
            .iter()
            .filter(|c| c.name.starts_with("__Host-__session_login_"))
            .count()
    };
    let mut last = None;
    for (tab, want) in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 1), (6, 2)] {
        last = Some(start_login(&mut agent, &issuer, &front.url(&format!("/{tab}"))).await);
        assert_eq!(logins(&agent), want, "after tab {tab}");
    }
    let back = through_idp(&mut agent, last.unwrap(), &front.callback()).await;
    let done = get(&mut agent, &back).await;
    assert_eq!(
        done.location(),
        Some(front.url("/6")),
        "{}",
        done.describe()
    );
    assert_session(&mut agent, &front).await;
}

/// A login started by a request that carries many login cookies, or
/// thousands of other names, removes a few of them at a time: its answer
/// stays small, and the names are not compared with each other.
#[tokio::test]
async fn a_login_removes_a_few_of_many_login_cookies_at_a_time() {
    let mut rig = Rig::start(1, |_| {}).await;
    let front = rig.front(0, &rig.config("app", 0)).await;
    let lines: Vec<String> = (0..4)
        .map(|line| {
            let logins = (0..300).map(|i| format!("{}=x", login_name(&format!("{line}-{i}"))));
            let others = (0..3000).map(|i| format!("c{line}x{i}="));
            logins.chain(others).collect::<Vec<_>>().join("; ")
        })
        .collect();
    let headers: Vec<(&str, &str)> = lines.iter().map(|l| ("cookie", l.as_str())).collect();
    let mut agent = UserAgent::new();
    let page = get_with(&mut agent, &front.url("/"), &headers).await;
    assert_eq!(page.status, 302, "{}", page.describe());
    let set = page.header_values("set-cookie");
    let removed = set.iter().filter(|c| c.contains("Max-Age=0")).count();
    assert_eq!((set.len(), removed), (9, 8), "{set:?}");
}

/// A value sealed as the step seals it (AES-256-GCM, a random nonce
/// first, base64url): to forge logins and sessions with the key.
fn seal(kind: &str, binding: &str, value: &Value) -> String {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    use base64::Engine as _;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, KEY.as_bytes()).unwrap());
    let nonce = [7u8; NONCE_LEN];
    let mut data = serde_json::to_vec(value).unwrap();
    let aad = format!("{kind}\0{binding}");
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_bytes()),
        &mut data,
    )
    .unwrap();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

#[tokio::test]
async fn an_expired_login_is_refused_before_the_code_is_spent() {
    let mut rig = Rig::start(1, |_| {}).await;
    let front = rig.front(0, &rig.config("app", 0)).await;
    // The client, the issuer, the scopes, then both query parameter maps.
    let binding = format!("app\0{}\0email\0{{}}\0{{}}", rig.issuer);
    let pending = |expires_at: u64| json!({ "state": "s1", "nonce": "n1", "verifier": "v".repeat(43), "return_to": "/", "expires_at": expires_at });
    let url = front.url("/callback?code=c1&state=s1");
    let mut tokens = rig.idp().requests().await.unwrap().token;
    for (expires_at, spent) in [(now() - 1, false), (now() + 600, true)] {
        let mut agent = UserAgent::new();
        let cookie = seal("login", &binding, &pending(expires_at));
        agent
            .jar_mut()
            .set_cookie(&front.base, &format!("{}={cookie}", login_name("s1")));
        // Either way a 401 (the IdP knows no code c1) ...
        assert_refused(&get(&mut agent, &url).await, 401);
        // ... but an expired login never reaches the IdP.
        let now_tokens = rig.idp().requests().await.unwrap().token;
        assert_eq!(now_tokens > tokens, spent, "expires_at {expires_at}");
        tokens = now_tokens;
    }
}

// ---------------------------------------------------------------------
// Where a login comes back to.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_login_comes_back_only_to_the_app_origin() {
    let mut rig = Rig::start(2, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut config = rig.config("loose", 1);
    config["allowAmbiguousPaths"] = json!(true);
    let loose = rig.front(1, &config).await;
    let mut agent = UserAgent::new();
    for (front, path, back) in [
        (&loose, "//evil.example/x", "/evil.example/x"),
        (&front, "/https://evil.example/y", "/https:/evil.example/y"),
        (&loose, "/.//evil.example", "/evil.example"),
        (
            &front,
            "/x?return=https://evil.example/&redirect_uri=//evil.example&rd=https%3A%2F%2Fevil.example",
            "/x?return=https://evil.example/&redirect_uri=//evil.example&rd=https%3A%2F%2Fevil.example",
        ),
        (&loose, "/\\evil.example", "/\\evil.example"),
        (&loose, "/%2F%2Fevil.example", "/%2F%2Fevil.example"),
    ] {
        let done = log_in(&mut agent, &issuer, front, path).await;
        let location = done.headers["location"].to_str().unwrap();
        assert_eq!(location, front.url(back), "{path}");
        assert!(
            location.starts_with(&format!("{}/", front.base))
                && !location[front.base.len()..].starts_with("//")
        );
        agent.jar_mut().remove(SESSION);
    }
    // The default refuses the ambiguous ones before any login.
    for path in [
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/.//evil.example",
        "//evil.example/x",
    ] {
        let page = get(&mut UserAgent::new(), &front.url(path)).await;
        assert_eq!(page.status, 400, "{path}: {}", page.describe());
    }
}

#[tokio::test]
async fn a_return_path_that_cannot_be_a_location_comes_back_to_its_path_or_root() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();

    // A long query: the login cookie stays one a browser keeps, and the
    // login comes back to the path.
    let long = format!("/long?q={}", "a".repeat(6000));
    let start = start_login(&mut agent, &issuer, &front.url(&long)).await;
    let login = set_cookie(&start, &login_name_of(&start.location().unwrap())).unwrap();
    assert!(login.len() < 1200, "{}", login.len());
    let callback = through_idp(&mut agent, start, &front.callback()).await;
    let done = get(&mut agent, &callback).await;
    assert_eq!(done.location(), Some(front.url("/long")));

    // A query with CR LF (no HTTP front passes one; a proxy's check
    // could): no header is split, the login comes back to its path.
    let chain = front.chain();
    let mut request = AuthorizationRequest::new(Method::GET, "/crlf?a=\r\nSet-Cookie: evil=1")
        .with_host(front.base.trim_start_matches("http://"));
    let decision = tokio::time::timeout(LIMIT, chain.authorize(&mut request))
        .await
        .unwrap();
    let deny = decision.as_deny().expect("a login");
    assert_eq!(deny.status, 302);
    let to_idp = deny.headers["location"].to_str().unwrap().to_owned();
    let login = deny.headers["set-cookie"].to_str().unwrap();
    let login = login.split(';').next().unwrap().to_owned();
    let mut walker = UserAgent::new();
    let first = get(&mut walker, &to_idp).await;
    let callback = through_idp(&mut walker, first, &front.callback()).await;
    let path = callback.strip_prefix(&front.base).unwrap();
    let mut request = AuthorizationRequest::new(Method::GET, path)
        .with_host(front.base.trim_start_matches("http://"))
        .with_header(http::header::COOKIE, HeaderValue::try_from(login).unwrap());
    let decision = tokio::time::timeout(LIMIT, chain.authorize(&mut request))
        .await
        .unwrap();
    let deny = decision.as_deny().expect("the callback's redirect");
    assert_eq!(deny.status, 302, "{:?}", deny.body);
    assert_eq!(deny.headers["location"], front.url("/crlf").as_str());
}

// ---------------------------------------------------------------------
// Session cookies that are not ours.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_changed_session_cookie_is_a_new_login() {
    let mut rig = Rig::start(1, |c| {
        // Big enough an ID token to take two cookies.
        let groups: Vec<String> = (0..150).map(|i| format!("group-number-{i:04}-x")).collect();
        c.users[0] = IdpUser::alice().claim("groups", groups);
    })
    .await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["scopes"] = json!(["email", "groups"]);
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    assert_session(&mut agent, &front).await;
    let first = agent.jar().value(SESSION).unwrap().to_owned();
    let second = agent
        .jar()
        .value("__Host-__session.1")
        .expect("two parts")
        .to_owned();
    assert!(agent.jar().get("__Host-__session.2").is_none());

    let flip = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    let tampered: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "a flipped byte",
            vec![(SESSION, flip(&first, first.len() / 2))],
        ),
        ("a flipped nonce byte", vec![(SESSION, flip(&first, 3))]),
        (
            "a flipped last part",
            vec![("__Host-__session.1", flip(&second, second.len() - 2))],
        ),
        (
            "truncated",
            vec![(SESSION, first[..first.len() - 10].to_owned())],
        ),
        (
            "swapped parts",
            vec![
                (SESSION, second.clone()),
                ("__Host-__session.1", first.clone()),
            ],
        ),
        ("one part", vec![("__Host-__session.1", String::new())]),
        (
            "base64 garbage",
            vec![(SESSION, "%%%not-base64%%%".to_owned())],
        ),
        ("too short", vec![(SESSION, "AAAA".to_owned())]),
        ("huge", vec![(SESSION, "A".repeat(20_000))]),
        (
            "a part longer than any written",
            vec![(
                "__Host-__session.1",
                format!("{second}{}", "A".repeat(3_800)),
            )],
        ),
        ("empty", vec![(SESSION, String::new())]),
    ];
    for (what, changes) in tampered {
        let mut probe = UserAgent::new();
        *probe.jar_mut() = agent.jar().clone();
        for (name, value) in changes {
            if value.is_empty() {
                probe.jar_mut().remove(name);
            } else {
                probe.jar_mut().get_mut(name).unwrap().value = value;
            }
        }
        let page = get(&mut probe, &front.url("/private")).await;
        assert_eq!(page.status, 302, "{what}: {}", page.describe());
        assert!(page.location().unwrap().starts_with(&issuer), "{what}");
    }
    // The real one still works.
    assert_session(&mut agent, &front).await;
}

/// The session cookie a browser may still hold under the name before
/// `__Host-` (an older authchain's `__session`) is cleared by a login and
/// by a logout, and read by neither.
#[tokio::test]
async fn the_session_cookie_s_former_name_is_cleared_at_login_and_logout() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let config = rig.config("app", 0);
    let front = rig.front(0, &config).await;
    let cleared = |page: &Final, name: &str| {
        let clear = format!("{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
        page.header_values("set-cookie").contains(&clear.as_str())
    };
    let mut agent = UserAgent::new();
    for cookie in ["__session=stale", "__session.1=stale"] {
        agent.jar_mut().set_cookie(&front.base, cookie);
    }
    let back = log_in(&mut agent, &issuer, &front, "/private").await;
    assert!(cleared(&back, "__session"), "{}", back.describe());
    assert!(cleared(&back, "__session.1"), "{}", back.describe());
    assert!(!cleared(&back, "__session.2"), "only what the browser sent");
    assert!(set_cookie(&back, SESSION).is_some());
    assert!(agent.jar().get("__session").is_none());
    assert_session(&mut agent, &front).await;
    agent.jar_mut().set_cookie(&front.base, "__session=stale");
    let out = get(&mut agent.clone(), &front.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    assert!(
        cleared(&out, "__session") && cleared(&out, SESSION),
        "{}",
        out.describe()
    );
}

/// With Redis, the session a cookie under the former name holds (its id
/// opens under the new name as well) ends at a logout too, which clears
/// that cookie.
#[tokio::test]
async fn a_logout_ends_the_redis_session_of_the_former_cookie_too() {
    let redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(2, |_| {}).await;
    let issuer = rig.issuer.clone();
    // As an older authchain wrote it: `__session` (here because the
    // cookies are not Secure, which keeps that name).
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] =
        redis_session(&redis, json!({ "cookieOptions": { "notSecure": true } }));
    let old = rig.front(0, &config).await;
    let mut config = rig.config("app", 1);
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    let new = rig.front(1, &config).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &old, "/private").await;
    let id = agent.jar().value("__session").unwrap().to_owned();
    let now = format!("{SESSION}={id}");
    let page = get_with(
        &mut UserAgent::new(),
        &new.url("/private"),
        &[("cookie", &now)],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.describe());
    let former = format!("__session={id}");
    let out = get_with(
        &mut UserAgent::new(),
        &new.url("/logout"),
        &[("cookie", &former)],
    )
    .await;
    assert_eq!(out.status, 302, "{}", out.describe());
    let page = get_with(
        &mut UserAgent::new(),
        &new.url("/private"),
        &[("cookie", &now)],
    )
    .await;
    assert_eq!(page.status, 302, "the session ended: {}", page.describe());

    // Both cookies: both sessions end, and the IdP's logout is hinted with
    // the current session's ID token.
    let mut former = UserAgent::new();
    log_in(&mut former, &issuer, &old, "/private").await;
    let id = former.jar().value("__session").unwrap().to_owned();
    let mut current = UserAgent::new();
    log_in(&mut current, &issuer, &new, "/private").await;
    let token = assert_session(&mut current, &new)
        .await
        .header_values("x-app-id-token")[0]
        .to_owned();
    let current_id = current.jar().value(SESSION).unwrap().to_owned();
    let both = format!("__session={id}; {SESSION}={current_id}");
    let out = get_with(
        &mut UserAgent::new(),
        &new.url("/logout"),
        &[("cookie", &both)],
    )
    .await;
    assert_eq!(out.status, 302, "{}", out.describe());
    assert_eq!(
        query(&out.location().unwrap(), "id_token_hint"),
        Some(token)
    );
    // Each id, under the name the new front reads.
    for id in [id, current_id] {
        let cookie = format!("{SESSION}={id}");
        let page = get_with(
            &mut UserAgent::new(),
            &new.url("/private"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(page.status, 302, "ended: {}", page.describe());
    }
}

/// A logout another subdomain asks for (`Sec-Fetch-Site: same-site`) ends
/// the session only where the session cookie is that subdomain's too
/// (`cookieOptions.domain`).
#[tokio::test]
async fn a_same_site_logout_is_refused_unless_the_session_is_shared() {
    let mut rig = Rig::start(2, |_| {}).await;
    for (front, domain, want) in [(0, None, 403), (1, Some("example.com"), 302)] {
        let mut config = rig.config("app", front);
        if let Some(domain) = domain {
            oidc(&mut config)["session"]["cookieOptions"] = json!({ "domain": domain });
        }
        let chain = rig.front(front, &config).await.chain();
        let mut request = AuthorizationRequest::new(Method::GET, "/logout")
            .with_host("app.example.com")
            .with_header(
                http::HeaderName::from_static("sec-fetch-site"),
                HeaderValue::from_static("same-site"),
            );
        let decision = tokio::time::timeout(LIMIT, chain.authorize(&mut request))
            .await
            .unwrap();
        let deny = decision.as_deny().expect("a deny");
        assert_eq!(deny.status, want, "{domain:?}: {:?}", deny.body);
    }
}

/// Two session cookies with different values, each a valid session (one
/// planted by another subdomain, say, which a `__Host-` name keeps out but
/// a `Domain` or a chosen name lets in): neither is taken, whatever the
/// order, nor is a logout; the same value twice is one session.
#[tokio::test]
async fn a_second_session_cookie_with_another_value_is_refused() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let config = rig.config("app", 0);
    let front = rig.front(0, &config).await;
    let mut values = Vec::new();
    for _ in 0..2 {
        let mut agent = UserAgent::new();
        log_in(&mut agent, &issuer, &front, "/private").await;
        assert_session(&mut agent, &front).await;
        values.push(agent.jar().value(SESSION).unwrap().to_owned());
    }
    assert_ne!(values[0], values[1]);
    let (a, b) = (&values[0], &values[1]);
    for (path, cookie, want) in [
        ("/private", format!("{SESSION}={a}; {SESSION}={b}"), 400),
        (
            "/private",
            format!("{SESSION}={b}; x=1; {SESSION}={a}"),
            400,
        ),
        ("/logout", format!("{SESSION}={a}; {SESSION}={b}"), 400),
        ("/private", format!("{SESSION}={a}; {SESSION}={a}"), 200),
        ("/private", format!("{SESSION}={b}"), 200),
    ] {
        let page = get_with(
            &mut UserAgent::new(),
            &front.url(path),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(
            page.status,
            want,
            "{path} {cookie:.60}: {}",
            page.describe()
        );
    }
}

/// A session opens wherever its client and IdP are the same, with the
/// same key: a replica, another AuthConfig of the client (Gloo's pattern:
/// a UI's that logs in, an API's with `failOnRedirect` that answers 401),
/// never another client's.
#[tokio::test]
async fn a_session_cookie_opens_only_for_its_client_and_idp_and_process() {
    let mut rig = Rig::start(7, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    // The same config in another engine (a replica, a restart): the same
    // key opens it.
    let replica = rig.front(1, &rig.config("app", 0)).await;
    // Another AuthConfig of the same client, which never logs in itself.
    let mut api = rig.config("api", 2);
    api["failOnRedirect"] = json!(true);
    let api = rig.front(2, &api).await;
    let mut agent = UserAgent::new();
    let refused = get(&mut agent.clone(), &api.url("/private")).await;
    assert_refused(&refused, 401);
    assert!(refused.location().is_none() && refused.header_values("set-cookie").is_empty());
    log_in(&mut agent, &issuer, &front, "/private").await;
    assert_session(&mut agent, &front).await;
    assert_session(&mut agent, &replica).await;
    assert_session(&mut agent, &api).await;
    // A browser's prefetch of the logout logs no one out, nor does another
    // site's link to it, nor another subdomain's (the session cookie is
    // this host's alone).
    for (name, value) in [
        ("sec-purpose", "prefetch"),
        ("purpose", "prefetch"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "Same-Site"),
    ] {
        let prefetch = get_with(&mut agent.clone(), &api.url("/logout"), &[(name, value)]).await;
        assert_refused(&prefetch, 403);
        assert!(prefetch.header_values("set-cookie").is_empty());
    }
    assert_session(&mut agent, &front).await;
    // Its callback and logout still redirect, with their cookies (the
    // app's own link: same origin).
    let out = get_with(
        &mut agent.clone(),
        &api.url("/logout"),
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(out.status, 302, "{}", out.describe());
    assert!(set_cookie(&out, SESSION).is_some_and(|c| c.contains("Max-Age=0")));
    // Another client, same key and IdP: a new login. So for the same
    // client asking more of the login (MFA), other scopes, or tokens for
    // another resource.
    let mut other = rig.config("other", 3);
    oidc(&mut other)["clientId"] = json!("other");
    let other = rig.front(3, &other).await;
    assert_new_login(&mut agent, &issuer, &other).await;
    let mut mfa = rig.config("mfa", 4);
    oidc(&mut mfa)["authEndpointQueryParams"] = json!({ "acr_values": "mfa" });
    let mfa = rig.front(4, &mfa).await;
    assert_new_login(&mut agent, &issuer, &mfa).await;
    let mut scopes = rig.config("scopes", 5);
    oidc(&mut scopes)["scopes"] = json!(["email", "profile"]);
    let scopes = rig.front(5, &scopes).await;
    assert_new_login(&mut agent, &issuer, &scopes).await;
    // Nor one whose tokens are asked for another API (RFC 8707), whose
    // access token it would forward.
    let mut resource = rig.config("resource", 6);
    oidc(&mut resource)["tokenEndpointQueryParams"] = json!({ "resource": "https://b.example" });
    let resource = rig.front(6, &resource).await;
    assert_new_login(&mut agent, &issuer, &resource).await;
}

#[tokio::test]
async fn a_session_opens_in_no_other_process_without_a_key() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    // Without a key, a random one per process: a restart (another engine)
    // opens none of the last one's cookies.
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = json!({});
    let before = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &before, "/private").await;
    assert_session(&mut agent, &before).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let after = serve(listener, base, engine(&config).await, "app");
    let mut probe = UserAgent::new();
    *probe.jar_mut() = agent.jar().clone();
    let page = get(&mut probe, &after.url("/private")).await;
    assert_eq!(page.status, 302, "{}", page.describe());
}

// ---------------------------------------------------------------------
// ID tokens the IdP never signed: an in-test token endpoint and JWKS
// (discoveryOverride), the rest the real IdP's.
// ---------------------------------------------------------------------

/// A token endpoint that answers what it is told, and a JWKS with the
/// test keys (`rsa-1`, `ec-1`, `ed-1`, `hs-1`).
struct FakeTokens {
    base: String,
    answer: Arc<Mutex<(u16, String)>>,
    /// How long the token endpoint takes to answer.
    delay: Arc<Mutex<Duration>>,
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTokens {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTokens {
    async fn start() -> FakeTokens {
        let answer = Arc::new(Mutex::new((500, String::new())));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let jwks = std::fs::read_to_string(format!(
            "{}/tests/keys/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (a, b, d) = (answer.clone(), bodies.clone(), delay.clone());
        let app = Router::new()
            .route(
                "/token",
                axum::routing::post(move |body: Bytes| {
                    let (a, b, d) = (a.clone(), b.clone(), d.clone());
                    async move {
                        b.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&body).into_owned());
                        let (status, text) = a.lock().unwrap().clone();
                        let delay = *d.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Body::from(text))
                            .unwrap()
                    }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { jwks }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTokens {
            base,
            answer,
            delay,
            bodies,
            task,
        }
    }

    fn answer(&self, status: u16, body: &Value) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    fn answer_id_token(&self, id_token: &str) {
        self.answer(
            200,
            &json!({ "access_token": "fake-access", "token_type": "Bearer", "expires_in": 600, "id_token": id_token }),
        );
    }

    fn last_body(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(key).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(key).unwrap(),
        _ => EncodingKey::from_secret(key),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn unsigned(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(claims)
    )
}

/// `rig`'s config `app`, its token endpoint and JWKS `fake`'s.
fn fake_config(fake: &FakeTokens, rig: &Rig) -> Value {
    let mut config = rig.config("app", 0);
    oidc(&mut config)["discoveryOverride"] = json!({
        "tokenEndpoint": format!("{}/token", fake.base),
        "jwksUri": format!("{}/jwks", fake.base),
    });
    config
}

/// A front whose token endpoint and JWKS are `fake`'s (the rest the real
/// IdP's), refreshing expired sessions when `refreshing`; its rig (which
/// runs the IdP) and issuer.
async fn fake_front(fake: &FakeTokens, refreshing: bool) -> (Rig, String, Front) {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = fake_config(fake, &rig);
    if refreshing {
        oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": true });
    }
    let front = rig.front(0, &config).await;
    (rig, issuer, front)
}

/// alice's ID token for the login with `nonce`, valid for `ttl` seconds,
/// signed with the fake JWKS's `rsa-1`.
fn alice_id_token(issuer: &str, nonce: &str, ttl: u64) -> String {
    alice_id_token_until(issuer, nonce, now() + ttl)
}

/// [`alice_id_token`], expiring at `exp`.
fn alice_id_token_until(issuer: &str, nonce: &str, exp: u64) -> String {
    let claims = json!({
        "iss": issuer, "aud": "app", "sub": "alice", "email": "alice@example.com",
        "exp": exp, "iat": now(), "nonce": nonce,
    });
    sign(Algorithm::RS256, Some("rsa-1"), RSA, &claims)
}

/// An algorithm the JWT library does not know among the IdP's (Keycloak
/// lists ES512) is passed over: the others still sign logins.
#[tokio::test]
async fn an_unknown_id_token_algorithm_is_passed_over() {
    let fake = FakeTokens::start().await;
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = fake_config(&fake, &rig);
    oidc(&mut config)["discoveryOverride"]["idTokenAlgs"] = json!(["ES512", "RS256", "ES256K"]);
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    let back = fake_callback(&mut agent, &issuer, &front, |nonce| {
        fake.answer_id_token(&alice_id_token(&issuer, nonce, 300));
    })
    .await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert_session(&mut agent, &front).await;
}

/// An ID token that expires past what a `SystemTime` holds (an `exp`
/// beyond 2^63 seconds, which jsonwebtoken takes): the session works,
/// with no panic on the way.
#[tokio::test]
async fn an_id_token_that_never_expires_makes_a_session() {
    let fake = FakeTokens::start().await;
    let (_rig, issuer, front) = fake_front(&fake, false).await;
    let mut agent = UserAgent::new();
    let back = fake_callback(&mut agent, &issuer, &front, |nonce| {
        fake.answer_id_token(&alice_id_token_until(&issuer, nonce, u64::MAX));
    })
    .await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert_session(&mut agent, &front).await;
}

/// A login at `front` whose fake token endpoint is set up by `answer`
/// for the login's nonce: the callback's answer.
async fn fake_callback(
    agent: &mut UserAgent,
    issuer: &str,
    front: &Front,
    answer: impl FnOnce(&str),
) -> Final {
    let start = start_login(agent, issuer, &front.url("/private")).await;
    let (state, nonce) = state_and_nonce(&start);
    answer(&nonce);
    get(
        agent,
        &front.url(&format!("/callback?code=c&state={state}")),
    )
    .await
}

/// The `state` and `nonce` of the login whose redirect to the IdP `start`
/// is.
fn state_and_nonce(start: &Final) -> (String, String) {
    let to_idp = start.location().unwrap();
    (
        query(&to_idp, "state").unwrap(),
        query(&to_idp, "nonce").unwrap(),
    )
}

/// A shadow AuthConfig with the same login (the usual way to try a new
/// policy) opens the answer's sessions but spends none of its codes: an
/// IdP may revoke what a code twice gave.
#[tokio::test]
async fn a_shadow_with_the_same_login_spends_no_code() {
    use authchain_core::decision_log::{DecisionLog, Sampling};
    let fake = FakeTokens::start().await;
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = fake_config(&fake, &rig);
    let mut next = config.clone();
    next["name"] = json!("next");
    config["shadow"] = json!("next");
    // The shadow's records, as they come.
    let (sink, mut shadowed) = tokio::sync::watch::channel(Vec::<String>::new());
    let log = DecisionLog::new(move |r: String| {
        if r.contains(r#""transport":"shadow""#) {
            sink.send_modify(|records| records.push(r));
        }
    })
    .every_config(Sampling::default())
    .unwrap();
    let engine = Engine::new(registry()).with_decision_log(log);
    let text = format!("{config}\n---\n{next}\n");
    engine
        .load(&AuthConfig::parse("t", &text, Format::Yaml).unwrap())
        .await
        .unwrap();
    let listener = rig.listeners[0].take().unwrap();
    let front = serve(listener, rig.bases[0].clone(), Arc::new(engine), "app");

    let mut agent = UserAgent::new();
    let back = fake_callback(&mut agent, &issuer, &front, |nonce| {
        fake.answer_id_token(&alice_id_token(&issuer, nonce, 600));
    })
    .await;
    assert_eq!(back.status, 302, "{}", back.describe());
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    // The shadow's runs of the first page, the callback and the page.
    let runs = tokio::time::timeout(
        Duration::from_secs(10),
        shadowed.wait_for(|records| records.len() >= 3),
    )
    .await
    .expect("three shadow runs")
    .unwrap()
    .clone();
    let count = |text: &str| runs.iter().filter(|r| r.contains(text)).count();
    assert_eq!(
        (count(r#""status":302"#), count(r#""allowed":true"#)),
        (2, 1),
        "the shadow logs in alike and opens the session: {runs:?}"
    );
    assert_eq!(fake.bodies.lock().unwrap().len(), 1, "one code exchange");
}

/// A refresh whose answer has no new ID token (the spec lets an IdP leave
/// it out) keeps the session, but the expired ID token is no longer
/// forwarded upstream, where a service that verifies it would refuse it.
#[tokio::test]
async fn an_expired_id_token_is_not_forwarded_after_a_refresh_without_one() {
    let fake = FakeTokens::start().await;
    let (_rig, issuer, front) = fake_front(&fake, true).await;
    let mut agent = UserAgent::new();
    let mut id_token = String::new();
    let back = fake_callback(&mut agent, &issuer, &front, |nonce| {
        id_token = alice_id_token(&issuer, nonce, 2);
        fake.answer(
            200,
            &json!({ "access_token": "a1", "token_type": "Bearer", "expires_in": 2,
                     "refresh_token": "r1", "id_token": id_token }),
        );
    })
    .await;
    assert_eq!(back.status, 302, "{}", back.describe());
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.header_values("x-app-id-token"), [id_token.as_str()]);

    tokio::time::sleep(Duration::from_secs(3)).await;
    fake.answer(
        200,
        &json!({ "access_token": "a2", "token_type": "Bearer", "expires_in": 300 }),
    );
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert!(fake.last_body().contains("grant_type=refresh_token"));
    assert_eq!(page.header_values("x-app-access-token"), ["a2"]);
    assert_eq!(page.header_values("x-app-id-token"), [""]);
    assert_eq!(page.header_values("x-app-user"), ["alice"]);
}

/// alice, logged in at `front` through `fake` with the refresh token
/// `r1` and a session of 2 s, which has expired when this returns.
async fn expired_login(fake: &FakeTokens, issuer: &str, front: &Front) -> UserAgent {
    let mut agent = UserAgent::new();
    let back = fake_callback(&mut agent, issuer, front, |nonce| {
        let id_token = alice_id_token(issuer, nonce, 2);
        fake.answer(
            200,
            &json!({ "access_token": "a1", "token_type": "Bearer", "expires_in": 2,
                     "refresh_token": "r1", "id_token": id_token }),
        );
    })
    .await;
    assert_eq!(back.status, 302, "{}", back.describe());
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent
}

/// A logout while the IdP refreshes the session: the refresh brings it
/// back neither to the request that asked for it nor to a copy of the
/// cookie.
#[tokio::test]
async fn a_logout_during_a_refresh_keeps_the_session_ended() {
    let fake = FakeTokens::start().await;
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = fake_config(&fake, &rig);
    oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": true });
    // Room for a slow refresh, and for the logout beside it.
    oidc(&mut config)["timeout"] = json!("6s");
    let front = rig.front(0, &config).await;
    let mut agent = expired_login(&fake, &issuer, &front).await;

    *fake.delay.lock().unwrap() = Duration::from_secs(3);
    fake.answer(
        200,
        &json!({ "access_token": "a2", "token_type": "Bearer", "expires_in": 300,
                 "refresh_token": "r2" }),
    );
    let mut refreshing = agent.clone();
    let url = front.url("/private");
    let during = tokio::spawn(async move { get(&mut refreshing, &url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = get(&mut agent.clone(), &front.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    let page = during.await.unwrap();
    assert_eq!(page.status, 302, "{}", page.describe());
    assert!(
        set_cookie(&page, SESSION).is_none_or(|c| c.starts_with(&format!("{SESSION}=;"))),
        "{}",
        page.describe()
    );
    *fake.delay.lock().unwrap() = Duration::ZERO;
    assert_new_login(&mut agent, &issuer, &front).await;
}

/// A logout that comes with the cookie a refresh replaced (sent before
/// the browser had the new one) ends the refreshed session too: it
/// refreshes no more.
#[tokio::test]
async fn a_logout_with_the_replaced_cookie_ends_the_refreshed_session() {
    let fake = FakeTokens::start().await;
    let (_rig, issuer, front) = fake_front(&fake, true).await;
    let mut agent = expired_login(&fake, &issuer, &front).await;
    let answer = |n: u32| {
        json!({ "access_token": format!("a{n}"), "token_type": "Bearer", "expires_in": 2,
                "refresh_token": format!("r{n}") })
    };
    fake.answer(200, &answer(2));
    let replaced = agent.clone();
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert!(set_cookie(&page, SESSION).is_some(), "{}", page.describe());
    let out = get(&mut replaced.clone(), &front.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    // Past the refreshed session's 2 s: it would refresh again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fake.answer(200, &answer(3));
    assert_new_login(&mut agent, &issuer, &front).await;
}

#[tokio::test]
async fn id_tokens_with_a_bad_signature_alg_iss_aud_exp_or_nonce_are_refused() {
    let fake = FakeTokens::start().await;
    let (_rig, issuer, front) = fake_front(&fake, false).await;

    type Case = (&'static str, Box<dyn Fn(&Value) -> String>);
    let good = |nonce: &str| {
        json!({
            "iss": issuer, "aud": "app", "sub": "mallory", "email": "mallory@example.com",
            "exp": now() + 600, "iat": now(), "nonce": nonce,
        })
    };
    let with = |claims: &Value, key: &str, value: Value| {
        let mut c = claims.clone();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(key);
        } else {
            c[key] = value;
        }
        c
    };
    let rs = |c: &Value| sign(Algorithm::RS256, Some("rsa-1"), RSA, c);
    let cases: Vec<Case> = vec![
        (
            "another key, the IdP's kid",
            Box::new(|c| sign(Algorithm::RS256, Some("rsa-1"), RSA2, c)),
        ),
        (
            "another key, its own kid",
            Box::new(|c| sign(Algorithm::RS256, Some("rsa-2"), RSA2, c)),
        ),
        (
            "another key, no kid",
            Box::new(|c| sign(Algorithm::RS256, None, RSA2, c)),
        ),
        ("alg none", Box::new(unsigned)),
        (
            "HS256 with a JWKS secret",
            Box::new(|c| sign(Algorithm::HS256, Some("hs-1"), HS, c)),
        ),
        (
            "HS256 with the RSA key's PEM",
            Box::new(|c| sign(Algorithm::HS256, Some("rsa-1"), RSA, c)),
        ),
        (
            "ES256, which discovery does not list",
            Box::new(|c| sign(Algorithm::ES256, Some("ec-1"), EC, c)),
        ),
        (
            "a changed payload",
            Box::new(move |c| {
                let token = rs(c);
                let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
                let mut other = c.clone();
                other["sub"] = json!("alice");
                parts[1] = unsigned(&other).split('.').nth(1).unwrap().to_owned();
                parts.join(".")
            }),
        ),
        (
            "another issuer",
            Box::new(move |c| rs(&with(c, "iss", json!("http://127.0.0.1:1")))),
        ),
        (
            "no issuer",
            Box::new(move |c| rs(&with(c, "iss", Value::Null))),
        ),
        (
            "another audience",
            Box::new(move |c| rs(&with(c, "aud", json!("other")))),
        ),
        (
            "no audience",
            Box::new(move |c| rs(&with(c, "aud", Value::Null))),
        ),
        (
            "expired",
            Box::new(move |c| rs(&with(c, "exp", json!(now() - 3600)))),
        ),
        (
            "no exp",
            Box::new(move |c| rs(&with(c, "exp", Value::Null))),
        ),
        (
            "not yet valid",
            Box::new(move |c| rs(&with(c, "nbf", json!(now() + 3600)))),
        ),
        (
            "another nonce",
            Box::new(move |c| rs(&with(c, "nonce", json!("another")))),
        ),
        (
            "no nonce",
            Box::new(move |c| rs(&with(c, "nonce", Value::Null))),
        ),
        (
            "for another party (azp)",
            Box::new(move |c| rs(&with(c, "azp", json!("other")))),
        ),
        // OIDC Core 3.1.3.7: with several audiences, `azp` says which
        // party it was issued to; without one, it names none.
        (
            "several audiences and no azp",
            Box::new(move |c| rs(&with(c, "aud", json!(["app", "other"])))),
        ),
        ("not a JWT", Box::new(|_| "not-a-jwt".to_owned())),
    ];
    for (what, make) in cases {
        let mut agent = UserAgent::new();
        let page = fake_callback(&mut agent, &issuer, &front, |nonce| {
            fake.answer_id_token(&make(&good(nonce)));
        })
        .await;
        assert_refused(&page, 401);
        assert!(!page.text().contains("mallory"), "{what}");
        assert_new_login(&mut agent, &issuer, &front).await;
    }

    // Answers that are no tokens: 401, or a step error (403), never more.
    for (status, body, expected) in [
        (
            200,
            json!({ "access_token": "a", "token_type": "Bearer" }),
            401,
        ),
        (400, json!({ "error": "invalid_grant" }), 401),
        (400, json!({ "error": "x\nforged=1" }), 401),
        (500, json!({ "oops": true }), 403),
        (200, json!({ "id_token": "x" }), 403),
    ] {
        let (logs, _guard) = Logs::capture();
        let mut agent = UserAgent::new();
        let page = fake_callback(&mut agent, &issuer, &front, |_| {
            fake.answer(status, &body);
        })
        .await;
        assert_refused(&page, expected);
        // An IdP's own error text is no log line of its own.
        assert!(!logs.text().contains("forged"), "{}", logs.text());
    }

    // Several audiences with this client as `azp` are taken.
    let mut agent = UserAgent::new();
    let page = fake_callback(&mut agent, &issuer, &front, |nonce| {
        let claims = with(&good(nonce), "aud", json!(["app", "other"]));
        fake.answer_id_token(&rs(&with(&claims, "azp", json!("app"))));
    })
    .await;
    assert_eq!(page.status, 302, "{}", page.describe());

    // The control: the same rig takes a good token, and a code is sent
    // decoded (Google's hold a `/`, sent as `%2F`).
    let mut agent = UserAgent::new();
    let start = start_login(&mut agent, &issuer, &front.url("/private")).await;
    let (state, nonce) = state_and_nonce(&start);
    fake.answer_id_token(&rs(&good(&nonce)));
    let page = get(
        &mut agent,
        &front.url(&format!("/callback?code=4%2F0Ab%2Bc%3D&state={state}")),
    )
    .await;
    assert_eq!(page.status, 302, "{}", page.describe());
    let sent = form_urldecode(&fake.last_body());
    assert!(
        sent.contains(&("code".to_owned(), "4/0Ab+c=".to_owned())),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|(k, v)| k == "code_verifier" && v.len() >= 43),
        "{sent:?}"
    );
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header_values("x-app-user"), ["mallory"]);
}

/// What `authEndpointQueryParams` asks of the IdP the ID token must show
/// (OpenID Connect Core 3.1.3.7): the request goes through the browser,
/// where a user takes out `acr_values` to skip a second factor, or
/// changes Auth0's `organization` to one of their own. `acr` one of
/// `acr_values`, `auth_time` within `max_age`, and `org_id` (or, for a
/// name, `org_name`) the `organization`; else a 401 and no session.
#[tokio::test]
async fn an_id_token_must_show_what_the_login_asked() {
    let fake = FakeTokens::start().await;
    let mut rig = Rig::start(2, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = fake_config(&fake, &rig);
    oidc(&mut config)["authEndpointQueryParams"] = json!({
        "acr_values": "mfa phr", "max_age": "600", "organization": "org_A",
        "prompt": "login consent", "hd": "example.com",
    });
    let front = rig.front(0, &config).await;
    let good = |nonce: &str| {
        json!({
            "iss": issuer, "aud": "app", "sub": "alice", "email": "alice@example.com",
            "exp": now() + 600, "iat": now(), "nonce": nonce, "acr": "phr", "auth_time": now() - 30,
            "org_id": "org_A", "hd": "Example.com",
        })
    };
    // (case, a change to the good claims: a value, or null to take it out)
    let cases = [
        ("another acr", "acr", json!("pwd")),
        ("no acr", "acr", Value::Null),
        ("an acr that is not text", "acr", json!(["mfa"])),
        ("an old auth_time", "auth_time", json!(now() - 3600)),
        ("no auth_time", "auth_time", Value::Null),
        ("another organization", "org_id", json!("org_B")),
        ("no organization", "org_id", Value::Null),
        // prompt=login: an old single sign-on session was reused.
        (
            "an auth_time before the login",
            "auth_time",
            json!(now() - 300),
        ),
        ("another hd (a personal account)", "hd", json!("gmail.com")),
        ("no hd", "hd", Value::Null),
    ];
    for (what, key, value) in cases {
        let mut agent = UserAgent::new();
        let page = fake_callback(&mut agent, &issuer, &front, |nonce| {
            let mut claims = good(nonce);
            match value.is_null() {
                true => claims.as_object_mut().unwrap().remove(key),
                false => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(key.into(), value.clone()),
            };
            fake.answer_id_token(&sign(Algorithm::RS256, Some("rsa-1"), RSA, &claims));
        })
        .await;
        assert_eq!(page.status, 401, "{what}: {}", page.describe());
        assert_new_login(&mut agent, &issuer, &front).await;
    }
    let mut agent = UserAgent::new();
    let page = fake_callback(&mut agent, &issuer, &front, |nonce| {
        fake.answer_id_token(&sign(Algorithm::RS256, Some("rsa-1"), RSA, &good(nonce)));
    })
    .await;
    assert_eq!(page.status, 302, "{}", page.describe());
    assert_session(&mut agent, &front).await;

    // An organization by name: Auth0's `org_name`, in any case.
    let mut config = rig.config("app", 1);
    oidc(&mut config)["discoveryOverride"] =
        oidc(&mut fake_config(&fake, &rig))["discoveryOverride"].clone();
    oidc(&mut config)["authEndpointQueryParams"] = json!({ "organization": "Acme" });
    let front = rig.front(1, &config).await;
    for (org_name, want) in [("acme", 302), ("other", 401)] {
        let mut agent = UserAgent::new();
        let page = fake_callback(&mut agent, &issuer, &front, |nonce| {
            let mut claims = good(nonce);
            claims["org_name"] = json!(org_name);
            fake.answer_id_token(&sign(Algorithm::RS256, Some("rsa-1"), RSA, &claims));
        })
        .await;
        assert_eq!(page.status, want, "{org_name}: {}", page.describe());
    }

    // A `max_age` that is no number of seconds is the config's error.
    let mut config = fake_config(&fake, &rig);
    oidc(&mut config)["authEndpointQueryParams"] = json!({ "max_age": "1h" });
    let e = Engine::new(registry())
        .build(&parse(&config), 1)
        .unwrap_err();
    assert!(
        e.place()
            .unwrap_or_default()
            .ends_with("authEndpointQueryParams.max_age"),
        "{e}"
    );
}

// ---------------------------------------------------------------------
// An IdP that is down, goes down, or is slow.
// ---------------------------------------------------------------------

#[tokio::test]
async fn an_idp_down_at_start_builds_offline_denies_and_is_waited_for() {
    let mut rig = Rig::new(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let config = rig.config("app", 0);
    // `authchain check`: the config builds with the IdP out of reach.
    Engine::new(registry()).build(&parse(&config), 1).unwrap();
    let front = rig.front(0, &config).await;
    let waiting = front.engine.current().waiting().len();
    assert_eq!(waiting, 1);
    let mut agent = UserAgent::new();
    let at = Instant::now();
    let page = get(&mut agent, &front.url("/private")).await;
    assert_refused(&page, 403);
    assert!(at.elapsed() < Duration::from_secs(2));

    rig.start_idp().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !front.engine.current().waiting().is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    log_in(&mut agent, &issuer, &front, "/private").await;
    assert_session(&mut agent, &front).await;
}

#[tokio::test]
async fn an_idp_that_goes_down_fails_logins_closed_and_keeps_sessions() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    let mut late = UserAgent::new();
    let callback = callback_url(&mut late, &issuer, &front, "/private").await;
    rig.idp_mut().kill();

    // A sealed session needs no IdP.
    assert_session(&mut agent, &front).await;
    // A new login starts (it needs no IdP either) ...
    assert_new_login(&mut UserAgent::new(), &issuer, &front).await;
    // ... and its callback fails closed, at once.
    let at = Instant::now();
    let page = get(&mut late, &callback).await;
    assert_refused(&page, 403);
    assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
}

#[tokio::test]
async fn a_silent_token_endpoint_fails_the_callback_within_the_timeout() {
    let silent = silent_server().await.unwrap();
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["timeout"] = json!("1s");
    oidc(&mut config)["discoveryOverride"] =
        json!({ "tokenEndpoint": format!("http://{silent}/token") });
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    let callback = callback_url(&mut agent, &issuer, &front, "/private").await;
    let at = Instant::now();
    let page = get(&mut agent, &callback).await;
    let took = at.elapsed();
    assert_refused(&page, 403);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

// ---------------------------------------------------------------------
// Logout.
// ---------------------------------------------------------------------

#[tokio::test]
async fn logout_clears_the_cookie_and_ends_the_idp_session() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    let page = assert_session(&mut agent, &front).await;
    let id_token = page.header_values("x-app-id-token")[0].to_owned();
    let stolen = agent.jar().clone();

    let out = get(&mut agent, &front.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    let end = out.location().unwrap();
    assert!(end.starts_with(&format!("{issuer}/session/end?")), "{end}");
    assert_eq!(query(&end, "id_token_hint"), Some(id_token));
    assert_eq!(query(&end, "client_id").as_deref(), Some("app"));
    assert_eq!(
        query(&end, "post_logout_redirect_uri"),
        Some(front.url("/bye"))
    );
    let cookies = out.header_values("set-cookie");
    for name in [
        SESSION,
        "__Host-__session.1",
        "__Host-__session.2",
        "__Host-__session.3",
    ] {
        assert!(
            cookies.contains(
                &format!("{name}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax").as_str()
            ),
            "{cookies:?}"
        );
    }
    assert!(agent.jar().get(SESSION).is_none());
    assert_new_login(&mut agent, &issuer, &front).await;

    // The IdP ends its session and comes back to afterLogoutUrl.
    let mut page = get(&mut agent, &end).await;
    let form = page
        .forms()
        .into_iter()
        .next()
        .expect("the IdP's logout form");
    let pairs: Vec<(&str, &str)> = form
        .fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    page = agent
        .send(
            Method::POST,
            &form.action,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(form_urlencode(&pairs)),
            0,
        )
        .await
        .unwrap();
    let back = through_idp(&mut agent, page, &front.url("/bye")).await;
    assert_eq!(back, front.url("/bye"));
    // A new login asks for the password again.
    let start = start_login(&mut agent, &issuer, &front.url("/private")).await;
    let form_page = agent.follow(&start, 10).await.unwrap();
    assert!(form_page.login_form().is_some(), "{}", form_page.describe());

    // Documented: a sealed cookie cannot be revoked; a copy taken before
    // the logout opens until its ID token expires. Redis sessions can
    // (below).
    let mut thief = UserAgent::new();
    *thief.jar_mut() = stolen;
    assert_session(&mut thief, &front).await;

    // Logout without a session: straight to afterLogoutUrl.
    let out = get(&mut UserAgent::new(), &front.url("/logout")).await;
    assert_eq!(out.location(), Some(front.url("/bye")));
}

// ---------------------------------------------------------------------
// Refresh.
// ---------------------------------------------------------------------

fn short_tokens(c: &mut IdpConfig) {
    c.ttl = IdpTtl {
        id_token: Some(4),
        access_token: Some(4),
        ..IdpTtl::default()
    };
}

#[tokio::test]
async fn expired_cookie_sessions_refresh_only_when_allowed() {
    let mut rig = Rig::start(2, short_tokens).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": true });
    let refreshing = rig.front(0, &config).await;
    let mut config = rig.config("app", 1);
    oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": false });
    let strict = rig.front(1, &config).await;

    let mut a = UserAgent::new();
    log_in(&mut a, &issuer, &refreshing, "/private").await;
    let before = assert_session(&mut a, &refreshing).await;
    let mut b = UserAgent::new();
    log_in(&mut b, &issuer, &strict, "/private").await;
    assert_session(&mut b, &strict).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let tokens = rig.idp().requests().await.unwrap().token;
    let old = a.jar().value(SESSION).unwrap().to_owned();
    let stale = a.clone();
    let page = get(&mut a, &refreshing.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert_eq!(page.header_values("x-app-user"), ["alice"]);
    assert!(set_cookie(&page, SESSION).is_some(), "{}", page.describe());
    assert_ne!(a.jar().value(SESSION).unwrap(), old);
    assert_ne!(
        page.header_values("x-app-id-token"),
        before.header_values("x-app-id-token")
    );
    assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
    // The new cookie alone, no IdP.
    assert_session(&mut a, &refreshing).await;
    assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);

    assert_new_login(&mut b, &issuer, &strict).await;

    // A logout revokes the refresh token: a copy of the cookie, which
    // opens until its ID token expires, cannot refresh past that.
    let mut copy = UserAgent::new();
    *copy.jar_mut() = a.jar().clone();
    let revocations = rig.idp().requests().await.unwrap().revocation;
    let out = get(&mut a, &refreshing.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    // The revocation runs off the logout's path: wait for it.
    for _ in 0..100 {
        if rig.idp().requests().await.unwrap().revocation > revocations {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.idp().requests().await.unwrap().revocation,
        revocations + 1
    );
    // The copy's logout, a replay with the same refresh token, revokes
    // nothing more (replays would hold the places others' revocations
    // need).
    let out = get(&mut copy.clone(), &refreshing.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rig.idp().requests().await.unwrap().revocation,
        revocations + 1
    );
    // Nor does a copy of the cookie the refresh replaced, within the
    // time the refreshed session is kept for it (30 s).
    let mut stale = stale;
    assert_new_login(&mut stale, &issuer, &refreshing).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_new_login(&mut copy, &issuer, &refreshing).await;
}

/// With `cookieOptions.path: ""` (no `Path`, as Gloo writes it), the
/// session cookie is at the callback's directory, and stays one cookie
/// there when a refresh on a deeper path sets it again: before, that
/// refresh set a second cookie at the deeper path, which the logout did
/// not clear, and the session went on there.
#[tokio::test]
async fn a_session_cookie_without_a_path_is_one_cookie_through_refreshes_and_the_logout() {
    let mut rig = Rig::start(1, short_tokens).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": true });
    oidc(&mut config)["session"]["cookieOptions"] = json!({ "path": "" });
    let front = rig.front(0, &config).await;
    let mut a = UserAgent::new();
    log_in(&mut a, &issuer, &front, "/private").await;
    assert_session(&mut a, &front).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let page = get(&mut a, &front.url("/deep/page")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    let set = page.header_values("set-cookie");
    assert!(set.iter().any(|c| c.contains("; Path=/;")), "{set:?}");
    let sessions: Vec<&str> = a
        .jar()
        .iter()
        .filter(|c| c.name.ends_with("__session"))
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(sessions, ["/"]);

    let out = get(&mut a, &front.url("/logout")).await;
    assert_eq!(out.status, 302, "{}", out.describe());
    let mut probe = UserAgent::new();
    *probe.jar_mut() = a.jar().clone();
    start_login(&mut probe, &issuer, &front.url("/deep/page")).await;
}

/// Short tokens, and a new refresh token at each refresh.
fn rotating_short_tokens(c: &mut IdpConfig) {
    short_tokens(c);
    c.rotate_refresh_tokens = true;
}

/// A Redis session without a pre-expiry buffer: fresh as long as its ID
/// token.
fn redis_session_unbuffered(redis: &Redis) -> Value {
    let mut session = redis_session(redis, json!({}));
    session["redis"]["preExpiryBuffer"] = json!("0s");
    session
}

/// Requests that carry one expired session at once, and the old session
/// sent again after its refresh (before the browser had the new cookie),
/// share one refresh: an IdP that rotates refresh tokens revokes the
/// whole grant when a spent one comes back, so a second refresh would
/// end the session for good.
#[tokio::test]
async fn requests_with_one_expired_session_share_one_refresh() {
    let redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(2, rotating_short_tokens).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"]["cookie"] = json!({ "allowRefreshing": true });
    let cookie_store = rig.front(0, &config).await;
    let mut config = rig.config("app", 1);
    // A refreshed session then stays fresh as long as the cookie store's.
    oidc(&mut config)["session"] = redis_session_unbuffered(&redis);
    let redis_store = rig.front(1, &config).await;
    let fronts = [&cookie_store, &redis_store];

    let mut agents = Vec::new();
    for front in fronts {
        let mut agent = UserAgent::new();
        log_in(&mut agent, &issuer, front, "/private").await;
        let before = assert_session(&mut agent, front).await;
        agents.push((agent, before));
    }
    // Past the ID token's lifetime (4s).
    tokio::time::sleep(Duration::from_secs(5)).await;

    for (front, (agent, before)) in fronts.into_iter().zip(&mut agents) {
        let tokens = rig.idp().requests().await.unwrap().token;
        let pages = futures::future::join_all((0..6).map(|_| {
            let mut one = agent.clone();
            async move { get(&mut one, &front.url("/private")).await }
        }))
        .await;
        let fresh = pages[0].header_values("x-app-id-token");
        for page in &pages {
            assert_eq!(page.status, 200, "{}", page.describe());
            assert_eq!(page.header_values("x-app-id-token"), fresh);
        }
        assert_ne!(fresh, before.header_values("x-app-id-token"));
        assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
        // The old session once more, as a request sent before the new
        // cookie came back would: the same refresh, and the new cookie.
        let mut late = agent.clone();
        let page = get(&mut late, &front.url("/private")).await;
        assert_eq!(page.status, 200, "{}", page.describe());
        assert_eq!(page.header_values("x-app-id-token"), fresh);
        assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
        // The agent takes the refreshed session (a Redis one keeps its id).
        let page = get(agent, &front.url("/private")).await;
        assert_eq!(page.header_values("x-app-id-token"), fresh);
    }
    // The grant still stands: the refreshed sessions refresh again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (front, (agent, _)) in fronts.into_iter().zip(&mut agents) {
        let tokens = rig.idp().requests().await.unwrap().token;
        assert_session(agent, front).await;
        assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
    }
}

// ---------------------------------------------------------------------
// Redis.
// ---------------------------------------------------------------------

fn redis_session(redis: &Redis, extra: Value) -> Value {
    let mut session = json!({
        "redis": { "options": { "host": redis.addr().to_string() }, "keyPrefix": "ac:" },
    });
    for (k, v) in extra.as_object().unwrap() {
        session[k] = v.clone();
    }
    session
}

fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn redis_sessions_are_shared_hashed_sealed_and_one_use_logins() {
    let redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(3, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    let front = rig.front(0, &config).await;
    // Another process with the same config.
    let replica = rig.front(1, &config).await;

    let mut agent = UserAgent::new();
    let callback = callback_url(&mut agent, &issuer, &front, "/private").await;
    let login_cookie = login_name_of(&callback);
    let login = agent.jar().value(&login_cookie).unwrap().to_owned();
    // A forged state spends nothing ...
    let code = query(&callback, "code").unwrap();
    let forged = front.url(&format!("/callback?code={code}&state=forged"));
    assert_refused(&get(&mut agent.clone(), &forged).await, 401);
    // ... the genuine callback works, on another replica ...
    let back = get(&mut agent, &callback.replace(&front.base, &replica.base)).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert!(
        set_cookie(&back, SESSION)
            .unwrap()
            .contains("; Max-Age=2592000; ")
    );
    // ... once.
    let mut replay = UserAgent::new();
    replay
        .jar_mut()
        .set_cookie(&front.base, &format!("{login_cookie}={login}"));
    assert_refused(&get(&mut replay, &callback).await, 401);

    let page = assert_session(&mut agent, &front).await;
    assert_session(&mut agent, &replica).await;
    // Each replica reads it once more, tracked by Redis, and then keeps
    // it: Redis tells them when it changes.
    assert_session(&mut agent, &front).await;
    assert_session(&mut agent, &replica).await;
    let gets = redis.calls("get").await.unwrap();
    for _ in 0..3 {
        assert_session(&mut agent, &front).await;
        assert_session(&mut agent, &replica).await;
    }
    assert_eq!(redis.calls("get").await.unwrap(), gets);
    let id = agent.jar().value(SESSION).unwrap().to_owned();
    // Beside the session: the login key, and the login marked spent.
    let all = redis.keys("*").await.unwrap();
    let (keys, others): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|k| k.starts_with("ac:session:"));
    assert_eq!(keys, [format!("ac:session:{}", sha256_hex(&id))]);
    let login_key = format!("ac:key:{}", sha256_hex("login"));
    assert!(
        others
            .iter()
            .all(|k| *k == login_key || k.starts_with("ac:spent:")),
        "{others:?}"
    );
    let stored = redis.get(&keys[0]).await.unwrap().unwrap();
    for token in [
        &id,
        &page.header_values("x-app-id-token")[0].to_owned(),
        &page.header_values("x-app-access-token")[0].to_owned(),
    ] {
        assert!(!stored.contains(token.as_str()) && !keys[0].contains(token.as_str()));
    }
    // Kept as long as the cookie (refreshing is on, a refresh token came).
    assert!(redis.ttl(&keys[0]).await.unwrap() > 2_500_000);
    // Another client's AuthConfig on the same Redis and prefix, same IdP
    // and key, opens none of it.
    let mut other = rig.config("app2", 2);
    oidc(&mut other)["clientId"] = json!("other");
    oidc(&mut other)["session"] = redis_session(&redis, json!({}));
    let other = rig.front(2, &other).await;
    let mut probe = UserAgent::new();
    *probe.jar_mut() = agent.jar().clone();
    assert_new_login(&mut probe, &issuer, &other).await;

    // Logout removes it: the id no longer opens anything, anywhere, not
    // even on the replica that kept it.
    let stolen = agent.jar().clone();
    let out = get(&mut agent, &front.url("/logout")).await;
    assert_eq!(out.status, 302);
    assert!(query(&out.location().unwrap(), "id_token_hint").is_some());
    assert!(redis.keys("ac:session:*").await.unwrap().is_empty());
    let mut thief = UserAgent::new();
    *thief.jar_mut() = stolen;
    assert_new_login(&mut thief, &issuer, &replica).await;
}

/// A login in progress is sealed in its cookie, with `cipherConfig`'s key
/// or else with one the replicas share through Redis (made once): requests
/// with no session write nothing to Redis (a flood of them took 1 KB there
/// each, for 10 minutes), a login started on one replica comes back on
/// another, and it is one use all the same, marked spent in Redis, so that
/// a replay never sends the IdP its spent code.
#[tokio::test]
async fn a_redis_login_in_progress_writes_nothing_and_is_one_use() {
    for keyed in [true, false] {
        let redis = Redis::start().await.unwrap();
        let mut rig = Rig::start(2, |_| {}).await;
        let issuer = rig.issuer.clone();
        let mut config = rig.config("app", 0);
        let cipher = oidc(&mut config)["session"]["cipherConfig"].clone();
        let extra = match keyed {
            true => json!({ "cipherConfig": cipher }),
            false => json!({}),
        };
        oidc(&mut config)["session"] = redis_session(&redis, extra);
        let front = rig.front(0, &config).await;
        let replica = rig.front(1, &config).await;
        for _ in 0..20 {
            let page = get(&mut UserAgent::new(), &front.url("/private")).await;
            assert_eq!(page.status, 302, "{}", page.describe());
        }
        let login_key = format!("ac:key:{}", sha256_hex("login"));
        let expected = match keyed {
            true => vec![],
            false => vec![login_key.clone()],
        };
        assert_eq!(redis.keys("*").await.unwrap(), expected, "keyed: {keyed}");
        assert!(redis.calls("set").await.unwrap() <= 1, "keyed: {keyed}");

        let mut agent = UserAgent::new();
        let callback = callback_url(&mut agent, &issuer, &front, "/private").await;
        let login_cookie = login_name_of(&callback);
        let login = agent.jar().value(&login_cookie).unwrap().to_owned();
        let back = get(&mut agent, &callback.replace(&front.base, &replica.base)).await;
        assert_eq!(back.status, 302, "{}", back.describe());
        assert_session(&mut agent, &front).await;
        let tokens = rig.idp().requests().await.unwrap().token;
        let mut replay = UserAgent::new();
        replay
            .jar_mut()
            .set_cookie(&front.base, &format!("{login_cookie}={login}"));
        assert_refused(&get(&mut replay, &callback).await, 401);
        assert_eq!(
            rig.idp().requests().await.unwrap().token,
            tokens,
            "a replay sent the IdP its spent code"
        );
        assert_session(&mut agent, &replica).await;
        // A login key that is no key fails the login closed.
        if !keyed {
            redis.set(&login_key, "short").await.unwrap();
            let page = get(&mut UserAgent::new(), &front.url("/private")).await;
            assert_eq!(page.status, 403, "{}", page.describe());
        }
    }
}

/// Replicas that get requests of one expired Redis session at once share
/// one refresh too: the one that takes the refresh's lock in Redis makes
/// it, the others wait for the session it saves (a rotating IdP would
/// revoke the grant on a second one).
#[tokio::test]
async fn replicas_share_one_refresh_through_redis() {
    let redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(2, rotating_short_tokens).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = redis_session_unbuffered(&redis);
    let front = rig.front(0, &config).await;
    let replica = rig.front(1, &config).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    assert_session(&mut agent, &replica).await;
    for round in 0..2 {
        // Past the ID token's lifetime (4s).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let tokens = rig.idp().requests().await.unwrap().token;
        let pages = futures::future::join_all((0..6).map(|i| {
            let mut one = agent.clone();
            let url = [&front, &replica][i % 2].url("/private");
            async move { get(&mut one, &url).await }
        }))
        .await;
        for page in &pages {
            assert_eq!(page.status, 200, "round {round}: {}", page.describe());
            assert_eq!(
                page.header_values("x-app-id-token"),
                pages[0].header_values("x-app-id-token")
            );
        }
        assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
        assert!(redis.keys("ac:refresh:*").await.unwrap().is_empty());
    }
    // Another replica holds the lock and saves nothing (it failed): this
    // one waits for it instead of spending the token, then, the lock
    // gone and the session as it was, sends the user to log in.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let id = agent.jar().value(SESSION).unwrap().to_owned();
    let lock = format!("ac:refresh:{}", sha256_hex(&id));
    let held = redis
        .command(&["SET", &lock, "another", "PX", "1000"])
        .await
        .unwrap();
    assert_eq!(held.text().as_deref(), Some("OK"));
    let (tokens, looks) = (
        rig.idp().requests().await.unwrap().token,
        redis.calls("exists").await.unwrap(),
    );
    assert_new_login(&mut agent, &issuer, &replica).await;
    assert_eq!(rig.idp().requests().await.unwrap().token, tokens);
    assert!(redis.calls("exists").await.unwrap() > looks, "it waited");
}

/// A Redis that cannot track what its clients keep (before 6.0; here
/// with `HELLO` renamed away) holds sessions all the same, read on every
/// request.
#[tokio::test]
async fn a_redis_without_client_tracking_is_read_on_every_request() {
    let redis = Redis::start_with(&["--rename-command", "HELLO", ""])
        .await
        .unwrap();
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    let gets = redis.calls("get").await.unwrap();
    for _ in 0..3 {
        assert_session(&mut agent, &front).await;
    }
    assert_eq!(redis.calls("get").await.unwrap(), gets + 3);
    let stolen = agent.jar().clone();
    let out = get(&mut agent, &front.url("/logout")).await;
    assert_eq!(out.status, 302);
    let mut thief = UserAgent::new();
    *thief.jar_mut() = stolen;
    assert_new_login(&mut thief, &issuer, &front).await;
}

#[tokio::test]
async fn expired_redis_sessions_refresh_in_place_only_when_allowed() {
    let redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(2, short_tokens).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    let refreshing = rig.front(0, &config).await;
    let mut config = rig.config("app", 1);
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    oidc(&mut config)["session"]["redis"]["allowRefreshing"] = json!(false);
    oidc(&mut config)["session"]["redis"]["keyPrefix"] = json!("strict:");
    let strict = rig.front(1, &config).await;

    let mut a = UserAgent::new();
    log_in(&mut a, &issuer, &refreshing, "/private").await;
    let before = assert_session(&mut a, &refreshing).await;
    let mut b = UserAgent::new();
    log_in(&mut b, &issuer, &strict, "/private").await;
    // Without refreshing, the key lives as long as the ID token.
    let strict_keys = redis.keys("strict:*").await.unwrap();
    assert!(redis.ttl(&strict_keys[0]).await.unwrap() <= 4);
    // The pre-expiry buffer is 2s: past it, the next request refreshes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let id = a.jar().value(SESSION).unwrap().to_owned();
    let tokens = rig.idp().requests().await.unwrap().token;
    let page = get(&mut a, &refreshing.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert!(page.header_values("set-cookie").is_empty());
    assert_eq!(a.jar().value(SESSION).unwrap(), id);
    assert_ne!(
        page.header_values("x-app-id-token"),
        before.header_values("x-app-id-token")
    );
    assert_eq!(rig.idp().requests().await.unwrap().token, tokens + 1);
    assert_eq!(
        redis.keys("ac:session:*").await.unwrap(),
        [format!("ac:session:{}", sha256_hex(&id))]
    );

    assert_new_login(&mut b, &issuer, &strict).await;
}

#[tokio::test]
async fn a_stopped_redis_fails_closed_in_time_and_recovers() {
    let mut redis = Redis::start().await.unwrap();
    let mut rig = Rig::start(2, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut fronts = Vec::new();
    for (i, fail) in [true, false].into_iter().enumerate() {
        let mut config = rig.config("app", i);
        oidc(&mut config)["timeout"] = json!("1s");
        oidc(&mut config)["session"] = redis_session(&redis, json!({ "failOnFetchFailure": fail }));
        fronts.push(rig.front(i, &config).await);
    }
    let mut agents = Vec::new();
    for front in &fronts {
        let mut agent = UserAgent::new();
        log_in(&mut agent, &issuer, front, "/private").await;
        assert_session(&mut agent, front).await;
        agents.push(agent);
    }
    let mut late = UserAgent::new();
    let callback = callback_url(&mut late, &issuer, &fronts[1], "/private").await;

    redis.stop();
    for (front, agent) in fronts.iter().zip(&mut agents) {
        // failOnFetchFailure: a step error. Without it: a new login,
        // which cannot be kept either: a step error too, never a 302
        // whose callback could not work, never a session.
        let at = Instant::now();
        let page = get(agent, &front.url("/private")).await;
        assert_refused(&page, 403);
        assert!(at.elapsed() < Duration::from_secs(3), "{:?}", at.elapsed());
    }
    // A callback of a login made before: fails closed.
    let at = Instant::now();
    assert_refused(&get(&mut late, &callback).await, 403);
    assert!(at.elapsed() < Duration::from_secs(3));
    // Logout cannot remove the session: it fails, and keeps the cookie
    // so that the user can log out again.
    let out = get(&mut agents[0], &fronts[0].url("/logout")).await;
    assert_refused(&out, 403);
    assert!(agents[0].jar().get(SESSION).is_some());

    // Redis back (empty): a new login, which works.
    redis.start_again().await.unwrap();
    for (front, agent) in fronts.iter().zip(&mut agents) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = get(agent, &front.url("/private")).await;
            if page.status == 302 {
                break;
            }
            assert!(Instant::now() < deadline, "{}", page.describe());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        log_in(agent, &issuer, front, "/private").await;
        assert_session(agent, front).await;
    }
}

#[tokio::test]
async fn a_redis_down_at_start_is_waited_for_without_doubling_the_poll() {
    let mut redis = Redis::start().await.unwrap();
    redis.stop();
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["timeout"] = json!("1s");
    oidc(&mut config)["discoveryPollInterval"] = json!("10s");
    oidc(&mut config)["session"] = redis_session(&redis, json!({}));
    let front = rig.front(0, &config).await;
    assert_eq!(front.engine.current().waiting().len(), 1);
    // Retries at 1s, 3s, 7s fail.
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.start_again().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !front.engine.current().waiting().is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.idp().reset_requests().await.unwrap();
    // One poll every 10s: at most two discoveries in 15s.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let seen = rig.idp().requests().await.unwrap();
    assert!((1..=2).contains(&seen.discovery), "{seen:?}");
    let mut agent = UserAgent::new();
    log_in(&mut agent, &issuer, &front, "/private").await;
    assert_session(&mut agent, &front).await;
}

// ---------------------------------------------------------------------
// Methods, and cookies the config shapes.
// ---------------------------------------------------------------------

#[tokio::test]
async fn head_and_post_requests_and_post_callbacks() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let front = rig.front(0, &rig.config("app", 0)).await;
    let mut agent = UserAgent::new();
    for method in [Method::HEAD, Method::POST, Method::PUT, Method::DELETE] {
        let page = send(&mut agent, method.clone(), &front.url("/private")).await;
        assert_eq!(page.status, 302, "{method}");
        assert!(page.location().unwrap().starts_with(&issuer));
    }
    let callback = callback_url(&mut agent, &issuer, &front, "/private").await;
    // A form_post-style callback (code and state in the body, which the
    // step never reads): 401.
    let (_, params) = callback.split_once('?').unwrap();
    let page = agent
        .send(
            Method::POST,
            &front.callback(),
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(params.to_owned()),
            0,
        )
        .await
        .unwrap();
    assert_refused(&page, 401);
    // The query decides, whatever the method (the state is what guards it).
    let page = send(&mut agent, Method::POST, &callback).await;
    assert_eq!(page.status, 302, "{}", page.describe());
    for method in [Method::HEAD, Method::POST, Method::PUT, Method::DELETE] {
        let page = send(&mut agent, method.clone(), &front.url("/private")).await;
        assert_eq!(page.status, 200, "{method}");
    }
}

#[tokio::test]
async fn the_login_cookie_reaches_the_callback_whatever_the_session_cookie_path_and_samesite() {
    let mut rig = Rig::start(2, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"]["cookieOptions"] =
        json!({ "path": "/private", "sameSite": "StrictMode", "maxAge": 600 });
    oidc(&mut config)["logoutPath"] = json!("/private/logout");
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    let start = start_login(&mut agent, &issuer, &front.url("/private/page")).await;
    let login = set_cookie(&start, &login_name_of(&start.location().unwrap())).unwrap();
    // Strict would not come back from the IdP (a cross-site navigation).
    assert!(
        login.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{login}"
    );
    let callback = through_idp(&mut agent, start, &front.callback()).await;
    let back = get(&mut agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    let session = set_cookie(&back, "__session").unwrap();
    assert!(
        session.ends_with("; Path=/private; Max-Age=600; HttpOnly; Secure; SameSite=Strict"),
        "{session}"
    );
    assert_session(&mut agent, &front).await;

    // Not Secure (a `__Host-` cookie must be): no prefix, and sent only
    // to the callback.
    let mut config = rig.config("app", 1);
    oidc(&mut config)["session"]["cookieOptions"] = json!({ "notSecure": true });
    let front = rig.front(1, &config).await;
    let mut agent = UserAgent::new();
    let start = start_login(&mut agent, &issuer, &front.url("/private")).await;
    let state = query(&start.location().unwrap(), "state").unwrap();
    let name = format!("__session_login_{}", &sha256_hex(&state)[..12]);
    let login = set_cookie(&start, &name).unwrap_or_else(|| panic!("{}", start.describe()));
    assert!(
        login.ends_with("; Path=/callback; Max-Age=600; HttpOnly; SameSite=Lax"),
        "{login}"
    );
    let callback = through_idp(&mut agent, start, &front.callback()).await;
    let back = get(&mut agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    assert_session(&mut agent, &front).await;
}

/// A logout path the session cookie's path does not take in is the
/// config's error: the browser would not send the cookie there, and the
/// logout would end no session (a Redis session would live on).
#[tokio::test]
async fn a_logout_path_outside_the_session_cookie_s_path_is_refused() {
    let rig = Rig::new(1, |_| {}).await;
    // (cookieOptions.path, callbackPath, logoutPath, whether it builds)
    for (path, callback, logout, builds) in [
        (Some("/app"), "/app/callback", "/logout", false),
        (Some("/app"), "/app/callback", "/apple/logout", false),
        (Some("/app"), "/app/callback", "/app/logout", true),
        (Some("/app/"), "/app/callback", "/app/logout", true),
        (Some("/app"), "/app/callback", "/app", true),
        (None, "/callback", "/logout", true),
        // No `Path`: the callback's directory.
        (Some(""), "/auth/callback", "/logout", false),
        (Some(""), "/auth/callback", "/auth/logout", true),
        (Some(""), "/callback", "/logout", true),
    ] {
        let mut config = rig.config("app", 0);
        oidc(&mut config)["callbackPath"] = json!(callback);
        oidc(&mut config)["logoutPath"] = json!(logout);
        if let Some(path) = path {
            oidc(&mut config)["session"] = json!({ "cookieOptions": { "path": path } });
        }
        let built = Engine::new(registry()).build(&parse(&config), 1);
        match builds {
            true => assert!(built.is_ok(), "{path:?} {logout}: {:?}", built.err()),
            false => {
                let e = built
                    .err()
                    .unwrap_or_else(|| panic!("{path:?} {logout} builds"));
                assert!(
                    e.place().unwrap_or_default().ends_with("logoutPath"),
                    "{path:?} {logout}: {e}"
                );
            }
        }
    }
}

#[tokio::test]
async fn cookie_attributes_cannot_be_injected_through_the_config() {
    let rig = Rig::new(1, |_| {}).await;
    for (place, value) in [
        (
            "cookieOptions.path",
            json!({ "cookieOptions": { "path": "/;Domain=evil.example" } }),
        ),
        (
            "cookieOptions.path",
            json!({ "cookieOptions": { "path": "/a,b" } }),
        ),
        (
            "cookieOptions.path",
            json!({ "cookieOptions": { "path": "/a\tb" } }),
        ),
        (
            "cookieOptions.domain",
            json!({ "cookieOptions": { "domain": "example.com;Secure" } }),
        ),
        (
            "cookieOptions.domain",
            json!({ "cookieOptions": { "domain": "example.com Secure" } }),
        ),
        (
            "cookieOptions.sameSite",
            json!({ "cookieOptions": { "sameSite": "Lax; Domain=x" } }),
        ),
        (
            "cookie.keyPrefix",
            json!({ "cookie": { "keyPrefix": "a;b=c" } }),
        ),
        (
            "redis.cookieName",
            json!({ "redis": { "options": { "host": "127.0.0.1:1" }, "cookieName": "a=b" } }),
        ),
    ] {
        let mut config = rig.config("app", 0);
        oidc(&mut config)["session"] = value;
        let e = Engine::new(registry())
            .build(&parse(&config), 1)
            .unwrap_err();
        let at = e.place().unwrap_or_default().to_owned();
        assert!(at.ends_with(&format!("session.{place}")), "{place}: {e}");
    }
    // A callback path a cookie cannot carry leaves the login cookie at /.
    let mut config = rig.config("app", 0);
    oidc(&mut config)["callbackPath"] = json!("/cb;x");
    Engine::new(registry()).build(&parse(&config), 1).unwrap();
    // The session cookie's path, when the config leaves it to the callback
    // (`""`), is the callback's directory: one a cookie cannot carry is
    // refused, rather than written out as a `Domain` of its own.
    oidc(&mut config)["callbackPath"] = json!("/a;Domain=example.com/cb");
    oidc(&mut config)["logoutPath"] = json!("/a;Domain=example.com/logout");
    oidc(&mut config)["session"]["cookieOptions"] = json!({ "path": "" });
    let e = Engine::new(registry())
        .build(&parse(&config), 1)
        .unwrap_err();
    assert!(
        e.place().unwrap_or_default().ends_with("callbackPath"),
        "{e}"
    );
}

/// A request the login fails on has no session: `failureModeAllow` would
/// let it through, and a client can make a login fail (by filling the
/// Redis its logins are kept in).
#[tokio::test]
async fn failure_mode_allow_on_a_login_is_a_config_error() {
    let rig = Rig::new(1, |_| {}).await;
    let mut config = rig.config("app", 0);
    config["configs"][0]["failureModeAllow"] = json!(true);
    let e = Engine::new(registry())
        .build(&parse(&config), 1)
        .unwrap_err();
    assert!(
        e.to_string().contains("`failureModeAllow` on a login"),
        "{e}"
    );
    assert!(e.place().unwrap_or_default().contains("configs[0]"), "{e}");
}

/// A cookie name with a `__Host-` or `__Secure-` prefix: every cookie
/// the login sets keeps the prefix's rules (a browser drops one that
/// breaks them: `__Host-` is `Path=/`, no `Domain`, `Secure`), and a
/// config that would break them is refused.
#[tokio::test]
async fn prefixed_cookie_names_keep_their_rules() {
    let mut rig = Rig::start(1, |_| {}).await;
    let issuer = rig.issuer.clone();
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"] = json!({ "cookie": { "keyPrefix": "__Host-" } });
    let front = rig.front(0, &config).await;
    let mut agent = UserAgent::new();
    let start = start_login(&mut agent, &issuer, &front.url("/private")).await;
    let callback = through_idp(&mut agent, start.clone(), &front.callback()).await;
    let back = get(&mut agent, &callback).await;
    assert_eq!(back.status, 302, "{}", back.describe());
    let cookies: Vec<&str> = start
        .header_values("set-cookie")
        .into_iter()
        .chain(back.header_values("set-cookie"))
        .collect();
    assert!(cookies.len() >= 3, "{cookies:?}");
    for cookie in cookies {
        assert!(cookie.starts_with("__Host-___session"), "{cookie}");
        assert!(
            cookie.contains("; Path=/;")
                && cookie.contains("; Secure")
                && !cookie.contains("Domain"),
            "{cookie}"
        );
    }
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());

    for (session, place) in [
        (
            json!({ "cookie": { "keyPrefix": "__Host-" }, "cookieOptions": { "domain": "example.com" } }),
            "session.cookieOptions",
        ),
        (
            json!({ "cookie": { "keyPrefix": "__Host-" }, "cookieOptions": { "path": "/app" } }),
            "session.cookieOptions",
        ),
        (
            json!({ "cookie": { "keyPrefix": "__Secure-" }, "cookieOptions": { "notSecure": true } }),
            "session.cookieOptions.notSecure",
        ),
        (
            json!({ "redis": { "options": { "host": "127.0.0.1:1" }, "cookieName": "__Host-s" }, "cookieOptions": { "notSecure": true } }),
            "session.cookieOptions.notSecure",
        ),
    ] {
        let mut config = rig.config("app", 0);
        oidc(&mut config)["session"] = session.clone();
        let e = Engine::new(registry())
            .build(&parse(&config), 1)
            .unwrap_err();
        let at = e.place().unwrap_or_default().to_owned();
        assert!(at.ends_with(place), "{session}: {e}");
    }
}

/// A session cookie that cannot be `__Host-` (not at `/`, or not
/// `Secure` on an https site) is one another subdomain or a plain-HTTP
/// page can plant: the build says so.
#[tokio::test]
async fn a_session_cookie_others_can_plant_is_warned_about() {
    let rig = Rig::start(1, |_| {}).await;
    // The build's log of the rig's config, with its session's cookie at
    // `path`, on `app`, `Secure` or not.
    let built = |path: &str, app: &str, not_secure: bool| {
        let mut config = rig.config("app", 0);
        let step = oidc(&mut config);
        step["appUrl"] = json!(app);
        step["afterLogoutUrl"] = json!(format!("{app}/bye"));
        step["callbackPath"] = json!("/app/callback");
        step["logoutPath"] = json!("/app/logout");
        step["session"]["cookieOptions"] = json!({ "path": path, "notSecure": not_secure });
        let (logs, _guard) = Logs::capture();
        Engine::new(registry())
            .build(&parse(&config), 1)
            .unwrap_or_else(|e| panic!("{path} {app}: {e}"));
        logs.text()
    };
    let https = "https://app.example";
    for (path, app, not_secure, warning) in [
        ("/app", https, false, Some("cannot be `__Host-`")),
        ("/", https, true, Some("notSecure with an https appUrl")),
        ("/", https, false, None),
        ("/", "http://127.0.0.1:1", true, None),
    ] {
        let text = built(path, app, not_secure);
        let warned = ["cannot be `__Host-`", "notSecure with an https appUrl"]
            .into_iter()
            .find(|w| text.contains(w));
        assert_eq!(warned, warning, "{path} {app} {not_secure}: {text}");
    }
}

#[tokio::test]
async fn a_request_for_another_target_domain_is_403() {
    let mut rig = Rig::start(1, |_| {}).await;
    let mut config = rig.config("app", 0);
    oidc(&mut config)["session"]["cookie"] = json!({ "targetDomain": "app.example" });
    let front = rig.front(0, &config).await;
    let page = get(&mut UserAgent::new(), &front.url("/private")).await;
    assert_refused(&page, 403);
    let chain = front.chain();
    for (host, status) in [
        ("app.example", 302),
        ("www.app.example:8443", 302),
        ("evilapp.example", 403),
        ("app.example.evil", 403),
    ] {
        let mut request = AuthorizationRequest::new(Method::GET, "/private").with_host(host);
        let decision = chain.authorize(&mut request).await;
        assert_eq!(
            decision.as_deny().map(|d| d.status.as_u16()),
            Some(status),
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_real_browser_logs_in_with_lax_and_strict_session_cookies() {
    let mut rig = Rig::start(2, |_| {}).await;
    let mut fronts = Vec::new();
    for (i, same_site) in ["LaxMode", "StrictMode"].into_iter().enumerate() {
        let mut config = rig.config("app", i);
        oidc(&mut config)["session"]["cookieOptions"] =
            json!({ "sameSite": same_site, "notSecure": true });
        fronts.push(rig.front(i, &config).await);
    }
    for front in &fronts {
        let page =
            authchain_testkit::browser::login(&front.url("/private?b=1"), "alice", "alicepwd")
                .await
                .unwrap();
        assert_eq!(page.url, front.url("/private?b=1"));
        assert_eq!(page.text.trim(), "app GET /private?b=1");
    }
}

#[tokio::test]
async fn a_refresh_is_checked_as_a_login_is() {
    let fake = FakeTokens::start().await;
    let (_rig, issuer, front) = fake_front(&fake, true).await;
    let claims = |sub: &str, exp: u64| json!({ "iss": issuer, "aud": "app", "sub": sub, "email": "mallory@example.com", "exp": exp, "iat": now() });
    let tokens_with = |id_token: String, refresh: &str| json!({ "access_token": "fake-access", "token_type": "Bearer", "expires_in": 600, "id_token": id_token, "refresh_token": refresh });
    let tokens = |id_token: String| tokens_with(id_token, "rt-new");
    let rs = |c: &Value| sign(Algorithm::RS256, Some("rsa-1"), RSA, c);

    // Logins whose ID tokens expire in 2s, each with its refresh token (a
    // refresh that brings no session is not asked again for a while).
    let mut agents = Vec::new();
    for i in 0..7 {
        let mut agent = UserAgent::new();
        let back = fake_callback(&mut agent, &issuer, &front, |nonce| {
            let mut first = claims("mallory", now() + 2);
            first["nonce"] = json!(nonce);
            fake.answer(200, &tokens_with(rs(&first), &format!("rt-{i}")));
        })
        .await;
        assert_eq!(back.status, 302, "{}", back.describe());
        agents.push(agent);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Refreshes that must not keep the session: a new login.
    let cases = [
        (
            "another subject",
            200,
            tokens(rs(&claims("alice", now() + 600))),
        ),
        (
            "another key",
            200,
            tokens(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                RSA2,
                &claims("mallory", now() + 600),
            )),
        ),
        (
            "another audience",
            200,
            tokens(rs(&{
                let mut c = claims("mallory", now() + 600);
                c["aud"] = json!("other");
                c
            })),
        ),
        ("expired", 200, tokens(rs(&claims("mallory", now() - 3600)))),
        ("refused", 400, json!({ "error": "invalid_grant" })),
        (
            "refused with a code of the IdP's own",
            400,
            json!({ "error": "invalid_token" }),
        ),
    ];
    for (i, (what, status, answer)) in cases.into_iter().enumerate() {
        fake.answer(status, &answer);
        let page = get(&mut agents[i].clone(), &front.url("/private")).await;
        assert_eq!(page.status, 302, "{what}: {}", page.describe());
        assert!(page.location().unwrap().starts_with(&issuer), "{what}");
        let sent = form_urldecode(&fake.last_body());
        assert!(
            sent.contains(&("grant_type".to_owned(), "refresh_token".to_owned())),
            "{sent:?}"
        );
        assert!(
            sent.contains(&("refresh_token".to_owned(), format!("rt-{i}"))),
            "{sent:?}"
        );
    }
    // The refused one again: a new login, without asking the IdP.
    let asked = fake.bodies.lock().unwrap().len();
    let page = get(&mut agents[4].clone(), &front.url("/private")).await;
    assert_eq!(page.status, 302, "{}", page.describe());
    assert_eq!(fake.bodies.lock().unwrap().len(), asked);
    // A token endpoint that fails: a step error, not remembered. So is
    // an IdP's OAuth error that refuses no grant.
    let mut agent = agents.pop().unwrap();
    for (status, error) in [
        (400, "temporarily_unavailable"),
        (400, "server_error"),
        (401, "invalid_client"),
        // A 5xx or a 429 refuses nothing, whatever its body names.
        (503, "invalid_grant"),
        (429, "too_many_requests"),
        (500, "unknown_error"),
    ] {
        fake.answer(status, &json!({ "error": error }));
        let page = get(&mut agent.clone(), &front.url("/private")).await;
        assert_refused(&page, 403);
    }
    fake.answer(500, &json!({}));
    assert_refused(&get(&mut agent.clone(), &front.url("/private")).await, 403);
    // A good refresh: the session goes on, in a new cookie.
    fake.answer(200, &tokens(rs(&claims("mallory", now() + 600))));
    let page = get(&mut agent, &front.url("/private")).await;
    assert_eq!(page.status, 200, "{}", page.describe());
    assert_eq!(page.header_values("x-app-user"), ["mallory"]);
    assert!(set_cookie(&page, SESSION).is_some());
}
