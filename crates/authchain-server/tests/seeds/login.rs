//! "Log in with your IdP" (`examples/login/`), as a user runs it: the real
//! `authchain` binary with `authchain.yaml` and the Gloo manifest
//! `app.yaml`, a real OpenID provider (npm `oidc-provider`), the real proxy
//! with the example's config, and a cookie-keeping client that follows
//! redirects and fills the IdP's login form as a browser does.
//!
//! The files' fixed ports (proxy 8080, app 8081, authchain 9001, 9002 and
//! 9091, IdP 9400, Redis 6379) become ports chosen at run time.

use authchain_testkit::caddy::Caddy;
use authchain_testkit::envoy::Envoy;
use authchain_testkit::idp::{Idp, IdpConfig};
use authchain_testkit::login::{Final, UserAgent};
use authchain_testkit::nginx::Nginx;
use authchain_testkit::traefik::Traefik;
use authchain_testkit::{EchoServer, EchoedRequest, free_port, workspace_root};

use authchain_testkit::redis::Redis;

use crate::seed::{ADMIN, APP, GRPC, HTTP, PROXY, Proxy, count, ports};
use crate::support::Authchain;

/// The IdP's port in the files.
const IDP: u16 = 9400;
/// Redis's port in the files.
const REDIS: u16 = 6379;

fn read(file: &str) -> String {
    let path = workspace_root().join("examples/login").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What runs: the AuthConfig file of `examples/login/`, the proxy's file
/// (authchain's goes with it, [`authchain_file`]), how many authchain
/// replicas.
struct Setup {
    app: &'static str,
    proxy: &'static str,
    replicas: usize,
    /// Changes the AuthConfig file's text (after its ports).
    edit: fn(String) -> String,
    /// Changes the IdP's clients and users.
    idp: fn(&mut IdpConfig),
}

impl Setup {
    fn new(proxy: &'static str) -> Self {
        Setup {
            app: "app.yaml",
            proxy,
            replicas: 1,
            edit: |text| text,
            idp: |_| {},
        }
    }
}

/// authchain's file of `examples/login/` that goes with `proxy`'s: how
/// far authchain trusts forwarded headers depends on the proxy.
fn authchain_file(proxy: &str) -> &'static str {
    match proxy {
        "envoy-http.yaml" => "authchain-envoy-http.yaml",
        "Caddyfile" | "traefik.yml" => "authchain-caddy.yaml",
        _ => "authchain.yaml",
    }
}

/// The example running.
struct Login {
    app: EchoServer,
    idp: Idp,
    redis: Option<Redis>,
    authchain: Vec<Authchain>,
    proxy: Proxy,
    base: String,
}

impl Login {
    async fn start(proxy_file: &'static str) -> Login {
        Self::start_with(Setup::new(proxy_file)).await
    }

    async fn start_with(setup: Setup) -> Login {
        let app = EchoServer::start().await.unwrap();
        let proxy_port = free_port().unwrap();
        let base = format!("http://127.0.0.1:{proxy_port}");
        let mut config = IdpConfig::single("app", "app-secret", &format!("{base}/callback"));
        config.clients[0].post_logout_redirect_uris = vec![base.clone()];
        (setup.idp)(&mut config);
        let idp = Idp::start(config).await.unwrap();
        let app_text = read(setup.app);
        let redis = match count(&app_text, REDIS) {
            0 => None,
            _ => Some(Redis::start().await.unwrap()),
        };
        let mut map = vec![
            (PROXY, proxy_port.to_string()),
            (IDP, idp.addr().port().to_string()),
        ];
        if let Some(redis) = &redis {
            map.push((REDIS, redis.addr().port().to_string()));
        }
        let app_yaml = (setup.edit)(ports(&app_text, &map));
        let template = ports(
            &read(authchain_file(setup.proxy)),
            &[
                (GRPC, "{{grpc_port}}".into()),
                (HTTP, "{{http_port}}".into()),
                (ADMIN, "{{admin_port}}".into()),
            ],
        );
        let mut authchain = Vec::new();
        for _ in 0..setup.replicas {
            authchain.push(
                Authchain::start_with_files(&template, &[], &[("app.yaml", app_yaml.clone())])
                    .await,
            );
        }
        let mut text = read(setup.proxy);
        if setup.replicas > 1 {
            // Every replica behind the proxy, in turn (Envoy's round robin).
            let one = format!(
                "{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {GRPC} }} }} }} }}"
            );
            assert!(text.contains(&one), "{} has one gRPC endpoint", setup.proxy);
            let all: Vec<String> = authchain
                .iter()
                .map(|a| one.replace(&GRPC.to_string(), &a.grpc.port().to_string()))
                .collect();
            text = text.replace(&one, &all.join(", "));
        }
        let first = &authchain[0];
        let map = |own: String| {
            vec![
                (PROXY, own),
                (APP, app.addr().port().to_string()),
                (GRPC, first.grpc.port().to_string()),
                (HTTP, first.http.port().to_string()),
            ]
        };
        let proxy = match setup.proxy {
            "envoy.yaml" | "envoy-http.yaml" => Proxy::Envoy(
                Envoy::start(&ports(&text, &map(proxy_port.to_string())))
                    .await
                    .unwrap(),
            ),
            "nginx.conf" => Proxy::Nginx(
                Nginx::start_at(&ports(&text, &map("{{port}}".into())), proxy_port)
                    .await
                    .unwrap(),
            ),
            "Caddyfile" => Proxy::Caddy(
                Caddy::start_at(&ports(&text, &map("{{port}}".into())), proxy_port)
                    .await
                    .unwrap(),
            ),
            "traefik.yml" => Proxy::Traefik(
                Traefik::start_at(&ports(&text, &map(String::new())), proxy_port)
                    .await
                    .unwrap(),
            ),
            other => panic!("no proxy runs {other}"),
        };
        Login {
            app,
            idp,
            redis,
            authchain,
            proxy,
            base,
        }
    }

    fn output(&self) -> String {
        let logs: Vec<String> = self.authchain.iter().map(|a| a.log()).collect();
        format!(
            "{}\n--- authchain ---\n{}\n--- idp ---\n{}",
            self.proxy.output(),
            logs.join("\n--- authchain ---\n"),
            self.idp.output()
        )
    }

    /// A user logs in and sees the app: the agent holds the session.
    async fn log_in(&self) -> UserAgent {
        let mut agent = UserAgent::new();
        let page = agent
            .login(&format!("{}/private?x=1", self.base), "alice", "alicepwd")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()));
        assert_eq!(page.status, 200, "{}\n{}", page.describe(), self.output());
        // Back where the user was going, on the app.
        assert!(
            page.url.ends_with("/private?x=1"),
            "{}\n{}",
            page.describe(),
            self.output()
        );
        let seen: EchoedRequest = serde_json::from_slice(&page.body).unwrap();
        assert_eq!(seen.path, "/private?x=1");
        agent
    }

    /// `page` is the app's 200; `what` and everyone's output say otherwise.
    fn assert_ok(&self, page: &Final, what: &str) {
        assert_eq!(
            page.status,
            200,
            "{what}: {}\n{}",
            page.describe(),
            self.output()
        );
    }

    /// `GET path` with `agent`'s cookies, following no redirect.
    async fn get(&self, agent: &UserAgent, path: &str) -> Final {
        let mut one = UserAgent::new().max_hops(0);
        *one.jar_mut() = agent.jar().clone();
        one.get(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()))
    }

    /// A user logs in, sees the app, is recognized on the next request
    /// without the IdP, and logs out.
    async fn log_in_and_out(&self) {
        let mut agent = self.log_in().await;

        // The session alone lets the next request through, and the email
        // header is the IdP's, whatever the client sends.
        let before = self.idp.requests().await.unwrap();
        let hits = self.app.hits();
        let mut forged = UserAgent::new().header("x-user-email", "mallory@example.com");
        *forged.jar_mut() = agent.jar().clone();
        let page = forged.get(&format!("{}/again", self.base)).await.unwrap();
        assert_eq!(page.status, 200, "{}\n{}", page.describe(), self.output());
        assert_eq!(self.app.hits(), hits + 1);
        let seen: EchoedRequest = serde_json::from_slice(&page.body).unwrap();
        assert_eq!(seen.header_all("x-user-email"), ["alice@example.com"]);
        let after = self.idp.requests().await.unwrap();
        assert_eq!(
            after.token, before.token,
            "a session costs no call to the IdP"
        );

        // Another site's logout link, and a browser's prefetch of one,
        // end nothing: the check sees the headers that say so.
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("sec-purpose", "prefetch;prerender"),
        ] {
            let mut other = UserAgent::new().max_hops(0).header(name, value);
            *other.jar_mut() = agent.jar().clone();
            let out = other.get(&format!("{}/logout", self.base)).await.unwrap();
            assert_eq!(
                out.status,
                403,
                "{name}: {}\n{}",
                out.describe(),
                self.output()
            );
            let page = agent.get(&format!("{}/again", self.base)).await.unwrap();
            assert_eq!(page.status, 200, "{name}: the session stays");
        }

        // Logout: the session is gone, the next request logs in again.
        let out = agent.get(&format!("{}/logout", self.base)).await.unwrap();
        assert!(
            out.status.is_success() || out.status.is_redirection(),
            "{}",
            out.describe()
        );
        let mut stopped = UserAgent::new().max_hops(0);
        *stopped.jar_mut() = agent.jar().clone();
        let again = stopped
            .get(&format!("{}/private", self.base))
            .await
            .unwrap();
        assert_eq!(again.status, 302, "{}\n{}", again.describe(), self.output());
        let location = again.location().unwrap_or_default();
        assert!(
            location.starts_with(&self.idp.issuer()),
            "a new login goes to the IdP: {location}"
        );
    }
}

#[tokio::test]
async fn log_in_with_your_idp_behind_envoy_grpc() {
    Login::start("envoy.yaml").await.log_in_and_out().await;
}

#[tokio::test]
async fn log_in_with_your_idp_behind_nginx() {
    Login::start("nginx.conf").await.log_in_and_out().await;
}

#[tokio::test]
async fn log_in_with_your_idp_behind_envoy_http() {
    Login::start("envoy-http.yaml").await.log_in_and_out().await;
}

#[tokio::test]
async fn log_in_with_your_idp_behind_caddy() {
    Login::start("Caddyfile").await.log_in_and_out().await;
}

#[tokio::test]
async fn log_in_with_your_idp_behind_traefik() {
    Login::start("traefik.yml").await.log_in_and_out().await;
}

/// Two authchain replicas behind one Envoy, sessions in one Redis: Envoy
/// sends checks to each in turn, so the login starts on one and ends on
/// the other, and each recognizes the session.
#[tokio::test]
async fn replicas_share_logins_and_sessions_through_redis() {
    let login = Login::start_with(Setup {
        app: "app-redis.yaml",
        replicas: 2,
        ..Setup::new("envoy.yaml")
    })
    .await;
    let agent = login.log_in().await;
    let redis = login.redis.as_ref().unwrap();
    let keys = redis.keys("app:*").await.unwrap();
    assert!(!keys.is_empty(), "the session is in Redis");
    let id = agent.jar().value("__session").unwrap().to_owned();
    assert!(
        keys.iter().all(|k| !k.contains(&id)),
        "Redis keys hold no session id: {keys:?}"
    );
    // Four requests: two on each replica, all with the session.
    let hits = login.app.hits();
    for _ in 0..4 {
        let page = login.get(&agent, "/again").await;
        assert_eq!(page.status, 200, "{}\n{}", page.describe(), login.output());
    }
    assert_eq!(login.app.hits(), hits + 4);
    for a in &login.authchain {
        assert!(
            a.metric(r#"authchain_chain_decisions_total{config="gloo-system.app",result="ok"}"#)
                .await
                >= 1.0,
            "each replica allowed a request\n{}",
            login.output()
        );
    }
    // Each replica keeps the session it read (tracked by Redis): more
    // requests read nothing from Redis.
    let gets = redis.calls("get").await.unwrap();
    for _ in 0..4 {
        login.assert_ok(&login.get(&agent, "/again").await, "kept");
    }
    assert_eq!(redis.calls("get").await.unwrap(), gets);
    // A logout on one replica ends the session on both, the other's copy
    // included: each denies a request after it.
    let denied = r#"authchain_chain_decisions_total{config="gloo-system.app",result="denied"}"#;
    let mut before = Vec::new();
    for a in &login.authchain {
        before.push(a.metric(denied).await);
    }
    let out = login.get(&agent, "/logout").await;
    assert_eq!(out.status, 302, "{}", out.describe());
    for _ in 0..2 {
        let page = login.get(&agent, "/again").await;
        assert_eq!(page.status, 302, "{}\n{}", page.describe(), login.output());
        assert!(page.location().unwrap().starts_with(&login.idp.issuer()));
    }
    let mut more = Vec::new();
    for (a, before) in login.authchain.iter().zip(before) {
        more.push(a.metric(denied).await - before);
    }
    assert_eq!(more.iter().sum::<f64>(), 3.0, "{more:?}");
    assert!(more.iter().all(|&n| n >= 1.0), "{more:?}");
    assert_eq!(login.app.hits(), hits + 8);
}

/// Redis going away never hangs a request nor lets one through: with
/// `failOnFetchFailure` unset (Gloo's default) the step starts a new
/// login, which needs Redis too, so the request is denied; once Redis is
/// back (empty), the user is sent to log in and a new login works.
#[tokio::test]
async fn redis_down_fails_closed_until_it_is_back() {
    let mut login = Login::start_with(Setup {
        app: "app-redis.yaml",
        ..Setup::new("nginx.conf")
    })
    .await;
    let agent = login.log_in().await;
    let hits = login.app.hits();
    login.redis.as_mut().unwrap().stop();
    let started = std::time::Instant::now();
    let page = login.get(&agent, "/private").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "answered within the step's timeout"
    );
    assert_ne!(page.status, 200, "{}", page.describe());
    assert_eq!(login.app.hits(), hits, "nothing reached the app");
    login.redis.as_mut().unwrap().start_again().await.unwrap();
    let page = login.get(&agent, "/private").await;
    assert_eq!(
        page.status,
        302,
        "the old session is gone: a new login\n{}",
        page.describe()
    );
    let _ = login.log_in().await;
}

/// A user in many groups has a big ID token, and a session cookie of
/// about 10 KB, split over three cookies: every proxy's example carries
/// it (nginx's keeps room for it in requests, `large_client_header_buffers`,
/// and in authchain's answers that set it, `proxy_buffer_size`).
#[tokio::test]
async fn a_session_of_many_kilobytes_passes_every_proxy() {
    for proxy in [
        "envoy.yaml",
        "envoy-http.yaml",
        "nginx.conf",
        "Caddyfile",
        "traefik.yml",
    ] {
        let login = Login::start_with(Setup {
            edit: |text| text.replace("scopes: [email]", "scopes: [email, groups]"),
            idp: |config| {
                let groups: Vec<String> = (0..200)
                    .map(|i| format!("team-{i:03}-with-a-long-name"))
                    .collect();
                config.users[0]
                    .claims
                    .insert("groups".into(), serde_json::json!(groups));
            },
            ..Setup::new(proxy)
        })
        .await;
        let agent = login.log_in().await;
        let cookie: usize = ["__session", "__session.1", "__session.2"]
            .iter()
            .map(|name| agent.jar().value(name).map_or(0, str::len))
            .sum();
        assert!(cookie > 9_000, "{proxy}: a session of {cookie} bytes");
        login.assert_ok(&login.get(&agent, "/again").await, proxy);
    }
}

/// With `allowRefreshing`, a session past its ID token's lifetime is
/// refreshed, and the refreshed one reaches the browser: the cookie
/// store's new cookie through Envoy (gRPC and HTTP) and Traefik
/// (`addAuthCookiesToResponse`), a Redis session (whose cookie does not
/// change) through nginx and Caddy, which pass no cookie of an allow.
#[tokio::test]
async fn refreshed_sessions_reach_the_browser() {
    fn short(config: &mut IdpConfig) {
        config.ttl.id_token = Some(4);
        config.ttl.access_token = Some(4);
    }
    fn refreshing(text: String) -> String {
        text.replace(
            "        session:\n",
            "        session:\n          cookie: { allowRefreshing: true }\n",
        )
    }
    let mut logins = Vec::new();
    for (app, proxy) in [
        ("app.yaml", "envoy.yaml"),
        ("app.yaml", "envoy-http.yaml"),
        ("app.yaml", "traefik.yml"),
        ("app-redis.yaml", "nginx.conf"),
        ("app-redis.yaml", "Caddyfile"),
    ] {
        let login = Login::start_with(Setup {
            app,
            edit: match app {
                "app.yaml" => refreshing,
                _ => |text| text,
            },
            idp: short,
            ..Setup::new(proxy)
        })
        .await;
        let agent = login.log_in().await;
        let cookie = agent.jar().value("__session").unwrap().to_owned();
        logins.push((proxy, app, login, agent, cookie));
    }
    // Past the ID token's lifetime.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for (proxy, app, login, agent, before) in &mut logins {
        let tokens = login.idp.requests().await.unwrap().token;
        for _ in 0..2 {
            let page = agent.get(&format!("{}/again", login.base)).await.unwrap();
            login.assert_ok(&page, proxy);
        }
        assert_eq!(
            login.idp.requests().await.unwrap().token,
            tokens + 1,
            "{proxy}: one refresh"
        );
        let after = agent.jar().value("__session").unwrap();
        match *app {
            "app.yaml" => assert_ne!(after, before, "{proxy}: the new cookie came back"),
            _ => assert_eq!(after, before, "{proxy}: a Redis session keeps its id"),
        }
    }
}

/// A real browser: headless Chromium opens the app behind nginx, logs in at
/// the IdP's form, and lands on the page it asked for, as alice.
#[tokio::test]
async fn a_browser_logs_in_through_nginx() {
    let login = Login::start("nginx.conf").await;
    let page = authchain_testkit::browser::login(
        &format!("{}/private?from=browser", login.base),
        "alice",
        "alicepwd",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", login.output()));
    assert!(page.url.ends_with("/private?from=browser"), "{}", page.url);
    assert!(page.text.contains("/private?from=browser"), "{}", page.text);
    assert!(page.text.contains("alice@example.com"), "{}", page.text);
}

/// The book's login guide shows every file of `examples/login/` as it is.
#[test]
fn the_book_includes_every_login_file() {
    let pages = crate::readme::book_pages();
    for entry in std::fs::read_dir(workspace_root().join("examples/login")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let include = format!("{{{{#include ../../examples/login/{name}}}}}");
        assert!(
            pages.contains(&include),
            "docs/src/ does not include examples/login/{name}"
        );
    }
}

/// `authchain check` reads the example without reaching the IdP (nothing
/// listens on its port here).
#[test]
fn check_reads_the_login_example_offline() {
    let dir = workspace_root().join("examples/login");
    let checks = [
        vec!["--config".into(), dir.join("authchain.yaml")],
        vec!["--config".into(), dir.join("authchain-envoy-http.yaml")],
        vec!["--config".into(), dir.join("authchain-caddy.yaml")],
        vec![dir.join("app-redis.yaml")],
    ];
    for args in checks {
        let (ok, out, err) = crate::support::run_check(&args);
        assert!(ok, "{args:?}: {out}{err}");
        assert!(out.contains("gloo-system.app"), "{out}");
    }
}

/// `serve` with the IdP out of reach: the server is up, `/readyz` names
/// the step that waits, and its checks are denied; once the IdP answers,
/// the step starts (retrying on its own) and the wait ends.
#[tokio::test]
async fn readiness_names_an_idp_out_of_reach_until_it_answers() {
    let idp_port = free_port().unwrap();
    let app_yaml = ports(
        &read("app.yaml"),
        &[(PROXY, "8080".into()), (IDP, idp_port.to_string())],
    );
    let template = ports(
        &read("authchain.yaml"),
        &[
            (GRPC, "{{grpc_port}}".into()),
            (HTTP, "{{http_port}}".into()),
            (ADMIN, "{{admin_port}}".into()),
        ],
    );
    let mut authchain =
        Authchain::start_with_files(&template, &[], &[("app.yaml", app_yaml)]).await;
    let ready = authchain.readyz().await;
    assert_eq!(ready.status, 200);
    assert!(
        ready
            .text()
            .contains("waiting: AuthConfig 'gloo-system.app'"),
        "{}",
        ready.text()
    );
    // The step fails closed meanwhile (nginx's check: it is a trusted proxy).
    let denied = authchain
        .http_check(
            "gloo-system.app",
            "",
            &[("x-original-uri", "/private"), ("x-original-method", "GET")],
        )
        .await
        .unwrap();
    assert!(denied.status.as_u16() >= 400, "{}", denied.status);

    let mut config = IdpConfig::single("app", "app-secret", "http://127.0.0.1:8080/callback");
    config.port = Some(idp_port);
    let _idp = Idp::start(config).await.unwrap();
    // The step starts again on its own (1 s, then twice as long).
    let admin = authchain.admin;
    authchain
        .peer
        .wait_until(std::time::Duration::from_secs(40), || async move {
            let ready = authchain_testkit::client::get(admin, "/readyz", &[])
                .await
                .ok()?;
            (!ready.text().contains("waiting:")).then_some(())
        })
        .await
        .unwrap();
    let login = authchain
        .http_check(
            "gloo-system.app",
            "",
            &[("x-original-uri", "/private"), ("x-original-method", "GET")],
        )
        .await
        .unwrap();
    assert_eq!(login.status, 302, "{}", authchain.log());
}

/// Gloo's OPA guide: a policy after the login reads the ID token the step
/// leaves in `state.jwt` (`io.jwt.decode(input.state.jwt)`) and decides
/// by its email.
#[tokio::test]
async fn a_policy_after_the_login_reads_the_id_token_from_state() {
    let login = Login::start_with(Setup {
        edit: |text| {
            let step = r#"  - opaAuth:
      query: data.test.allow == true
      modules:
        check-jwt.rego: |
          package test
          import rego.v1
          default allow := false
          allow if {
            [_, payload, _] := io.jwt.decode(input.state.jwt)
            payload.email == "alice@example.com"
            not startswith(input.http_request.path, "/owners")
          }
---
"#;
            text.replacen("\n---\n", &format!("\n{step}"), 1)
        },
        ..Setup::new("envoy.yaml")
    })
    .await;
    let agent = login.log_in().await;
    assert_eq!(login.get(&agent, "/again").await.status, 200);
    let owners = login.get(&agent, "/owners/1").await;
    assert_eq!(
        owners.status,
        403,
        "{}\n{}",
        owners.describe(),
        login.output()
    );
}
