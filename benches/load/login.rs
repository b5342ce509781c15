//! The `login` group: Envoy's ext_authz over gRPC in front of a user who
//! logged in with `oauth2.oidcAuthorizationCode` at a real IdP, every
//! request carrying that user's session cookie, against a bare allow-all
//! tonic server that answers the same upstream header as the login's
//! allow.

use std::error::Error;
use std::net::SocketAddr;

use authchain_benches::child::ChildServer;
use authchain_benches::rounds::{Comparison, Measure, Round, Target};
use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::idp::{Idp, IdpConfig};
use authchain_testkit::login::UserAgent;
use authchain_testkit::redis::Redis;
use authchain_testkit::{EchoServer, ScratchDir, client, free_port, render};

use crate::server::Authchain;
use crate::{Group, How, Kind, Scenario};

const SCENARIOS: [&str; 5] = [
    "(a) envoy gRPC, no auth, sealed cookie",
    "(b) envoy gRPC + bare tonic, sealed cookie",
    "(b') envoy gRPC + bare tonic, Redis cookie",
    "(c) envoy gRPC + authchain oidc, cookie store",
    "(c-redis) envoy gRPC + authchain oidc, Redis",
];

/// The upstream header of the login's allow (the AuthConfig's
/// `claimsToHeaders`, with alice's email), which (b) and (b') answer too.
pub(crate) const UPSTREAM: [(&str, &str); 1] = [("x-user-email", "alice@example.com")];

pub(crate) const KIND: Kind = Kind {
    name: "login",
    about: "Envoy (1 worker) with ext_authz over gRPC, HTTP/1.1 GET / with the Cookie of \
            an oidcAuthorizationCode session",
    scenarios: &SCENARIOS,
    comparisons: &{
        use Measure::{Cpu, Rps};
        let (s, target, context) = (SCENARIOS, Target::AtLeast(0.95), Target::Context);
        [
            Comparison::new("login c/b rps (cookie store)", Rps(s[3], s[1]), target),
            Comparison::new("login c-redis/b' rps (Redis)", Rps(s[4], s[2]), target),
            Comparison::new("login CPU per request b/c", Cpu(s[3], s[1]), context),
            Comparison::new("login CPU per request b'/c-redis", Cpu(s[4], s[2]), context),
        ]
    },
};

/// The AuthConfig `bench` as a Gloo manifest, with its client secret
/// (`bench-secret`) and session key beside it, as `examples/login/app.yaml`
/// writes them: the app at `{{app_url}}` (the Envoy in front of it), the
/// IdP at `{{issuer}}`, and `{{store}}` the session's store.
const APP: &str = r#"apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: { name: bench }
spec:
  configs:
  - oauth2:
      oidcAuthorizationCode:
        appUrl: {{app_url}}
        callbackPath: /callback
        logoutPath: /logout
        clientId: bench
        clientSecretRef: { name: bench-oidc, namespace: default }
        issuerUrl: {{issuer}}
        scopes: [email]
        identityToken:
          claimsToHeaders:
          - { claim: email, header: x-user-email }
        session:
          cookieOptions: { notSecure: true }
          cipherConfig:
            keyRef: { name: bench-session-key, namespace: default }
{{store}}
---
apiVersion: v1
kind: Secret
type: extauth.solo.io/oauth
metadata: { name: bench-oidc, namespace: default }
stringData: { client-secret: bench-secret }
---
apiVersion: v1
kind: Secret
type: gloo.solo.io.EncryptionKeySecret
metadata: { name: bench-session-key, namespace: default }
stringData: { key: authchain-login-bench-key-32byte }
"#;

/// The session cookie: the step's name for it (`session.redis.cookieName`
/// by default), split over `__session.1`, ... when long.
const SESSION_COOKIE: &str = "__session";

/// How long the IdP's tokens live: the step lets a session through while
/// its ID token has not expired, and a run must not outlast it.
const TOKEN_TTL: u64 = 24 * 3600;

/// The Envoys of the group, each with the count of its answers that were
/// not 2xx before the rounds: wrk counts a 3xx as a success, and the
/// answer to a session that does not open is a 302 to the IdP, so every
/// round checks that they answered 2xx alone.
pub(crate) struct Sessions {
    envoys: Vec<(&'static str, Envoy, [u64; 3])>,
    /// The authchain servers, whose log a failed round shows.
    authchains: Vec<Authchain>,
}

impl Sessions {
    /// Fails when a scenario of `round` had an error by wrk's count (a 4xx,
    /// a 5xx, a socket error), or its Envoy answered anything but a 2xx
    /// since the rounds began.
    pub(crate) async fn check(&self, round: &Round) -> Result<(), Box<dyn Error>> {
        for (name, envoy, before) in &self.envoys {
            let wrk = round.get(name).map_or(0, |f| f.errors);
            let now = not_2xx(envoy).await?;
            let [x3, x4, x5] = [0, 1, 2].map(|i| now[i] - before[i]);
            if wrk > 0 || x3 + x4 + x5 > 0 {
                let logs: String = self.authchains.iter().map(Authchain::output).collect();
                return Err(format!(
                    "{name}: round {}: {wrk} errors by wrk's count; answers not 2xx since the \
                     rounds began: {x3} 3xx (a session that does not open answers 302), {x4} \
                     4xx, {x5} 5xx\n{logs}",
                    round.round
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The answers `envoy` gave that were not 2xx: 3xx, 4xx and 5xx.
async fn not_2xx(envoy: &Envoy) -> Result<[u64; 3], Box<dyn Error>> {
    let mut count = [0; 3];
    for (class, n) in ["3xx", "4xx", "5xx"].into_iter().zip(&mut count) {
        let stat = format!("http.ingress_http.downstream_rq_{class}");
        *n = envoy
            .stat(&stat)
            .await?
            .ok_or_else(|| format!("envoy has no stat {stat}"))?;
    }
    Ok(count)
}

/// An Envoy in front of `upstream` whose listener is at `port` (0: one
/// chosen at start), calling `authz` over gRPC when given.
async fn envoy(
    upstream: SocketAddr,
    authz: Option<SocketAddr>,
    port: u16,
) -> Result<(Envoy, SocketAddr), Box<dyn Error>> {
    let mut bootstrap = Bootstrap::new(upstream);
    if let Some(addr) = authz {
        bootstrap = bootstrap.grpc(addr);
    }
    // The listener's address comes first in the bootstrap.
    let any = "port_value: 0 }";
    let yaml = bootstrap
        .yaml()
        .replacen(any, &format!("port_value: {port} }}"), 1);
    let envoy = Envoy::start(&yaml).await?;
    let target = envoy.listener("ingress")?;
    if port != 0 && target.port() != port {
        return Err(format!("envoy listens at {target}, not at port {port}").into());
    }
    Ok((envoy, target))
}

/// Logs alice in through the Envoy at `target` and gives the `Cookie`
/// header of her session, which must let `GET /` through to the upstream.
/// wrk's header lives as long as this process: the text is leaked, once
/// a session.
async fn log_in(target: SocketAddr, idp: &Idp) -> Result<&'static str, Box<dyn Error>> {
    let url = format!("http://{target}/");
    let mut agent = UserAgent::new();
    let page = agent.login(&url, "alice", "alicepwd").await?;
    if page.status != 200 || page.url != url {
        return Err(format!(
            "logging in through {url} ended at {} ({})\n{}\n--- idp ---\n{}",
            page.url,
            page.status,
            page.describe(),
            idp.output()
        )
        .into());
    }
    let chunk = format!("{SESSION_COOKIE}.");
    let cookie = agent
        .jar()
        .iter()
        .filter(|c| c.name == SESSION_COOKIE || c.name.starts_with(&chunk))
        .map(|c| format!("{}={}", c.name, c.value))
        .collect::<Vec<_>>()
        .join("; ");
    if cookie.is_empty() {
        return Err(format!("logging in through {url} set no {SESSION_COOKIE} cookie").into());
    }
    Ok(cookie.leak())
}

/// Checks that the upstream gets the headers of [`UPSTREAM`] through
/// every auth server, and no other copy of them.
async fn same_upstream(
    started: &[(Envoy, SocketAddr, Option<u32>)],
    sent: &[&str],
) -> Result<(), Box<dyn Error>> {
    for (i, ((_, target, _), cookie)) in started.iter().zip(sent).enumerate() {
        let echoed = client::get(*target, "/", &[("cookie", cookie)])
            .await?
            .echoed()
            .map_err(|e| format!("{}: {e}", SCENARIOS[i]))?;
        for (name, value) in UPSTREAM {
            let want: &[&str] = if i == 0 { &[] } else { &[value] };
            let got = echoed.header_all(name);
            if got != want {
                return Err(format!(
                    "{}: the upstream got {name}: {got:?}, not {want:?}",
                    SCENARIOS[i]
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The process id Redis reports.
async fn redis_pid(redis: &Redis) -> Result<u32, Box<dyn Error>> {
    let info = redis.command(&["INFO", "server"]).await?.text();
    info.as_deref()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("process_id:")?.trim().parse().ok())
        })
        .ok_or_else(|| format!("no process_id in Redis's INFO: {info:?}").into())
}

/// Starts the upstream, the IdP, Redis, the auth servers and an Envoy for
/// each scenario, and logs in once through each authchain's Envoy; the
/// [`Sessions`] check every round.
pub(crate) async fn start() -> Result<(Group, Sessions), Box<dyn Error>> {
    let binary = crate::server::binary()?;
    let upstream = EchoServer::start().await?;
    // The IdP sends the code back to the Envoy in front of each authchain:
    // their ports are chosen first.
    let ports = [free_port()?, free_port()?];
    let apps = ports.map(|port| format!("http://127.0.0.1:{port}"));
    let mut config = IdpConfig::single("bench", "bench-secret", &format!("{}/callback", apps[0]));
    config.clients[0]
        .redirect_uris
        .push(format!("{}/callback", apps[1]));
    config.ttl.id_token = Some(TOKEN_TTL);
    config.ttl.access_token = Some(TOKEN_TTL);
    let idp = Idp::start(config).await?;
    let redis = Redis::start().await?;
    let stores = [
        "          cookie: {}".to_owned(),
        format!(
            "          redis: {{ options: {{ host: '{}' }}, keyPrefix: 'bench:' }}",
            redis.addr()
        ),
    ];
    let files = ScratchDir::new("login")?;
    let mut authchains = Vec::new();
    for (i, (app, store)) in apps.iter().zip(stores).enumerate() {
        let manifest = render(
            APP,
            &[
                ("app_url", app.clone()),
                ("issuer", idp.issuer()),
                ("store", store),
            ],
        )?;
        let path = files.write(&format!("app-{i}.yaml"), &manifest)?;
        let config = format!("authConfigFiles: ['{}']\n", path.display());
        authchains.push(Authchain::start(&binary, &config).await?);
    }
    let bare = ChildServer::start(crate::grpc::ALLOW_ALL_LOGIN).await?;

    let mut pids = vec![bare.pid(), redis_pid(&redis).await?];
    let (mut started, mut cookies) = (Vec::new(), Vec::new());
    for authz in [None, Some(bare.addr()), Some(bare.addr())] {
        let (envoy, target) = envoy(upstream.addr(), authz, 0).await?;
        started.push((envoy, target, authz.map(|_| bare.pid())));
    }
    for (authchain, port) in authchains.iter().zip(ports) {
        let (envoy, target) = envoy(upstream.addr(), Some(authchain.grpc()), port).await?;
        cookies.push(log_in(target, &idp).await?);
        pids.push(authchain.pid());
        started.push((envoy, target, Some(authchain.pid())));
    }
    // Each scenario sends the Cookie of a session: (a), (b) and (b') that
    // of the authchain they are compared with.
    let (sealed, id) = (cookies[0], cookies[1]);
    eprintln!(
        "login: Cookie headers of {} bytes (cookie store) and {} (Redis)",
        sealed.len(),
        id.len()
    );
    let sent = [sealed, sealed, id, sealed, id];
    same_upstream(&started, &sent).await?;
    let (mut scenarios, mut envoys) = (Vec::new(), Vec::new());
    for ((name, (envoy, target, server)), cookie) in SCENARIOS.into_iter().zip(started).zip(sent) {
        let proxy = envoy.peer().pid();
        pids.push(proxy);
        let how = How::Wrk {
            target,
            path: "/",
            header: ("cookie", cookie),
            server,
            proxy: Some(proxy),
        };
        scenarios.push(Scenario::new(name, how));
        let before = not_2xx(&envoy).await?;
        envoys.push((name, envoy, before));
    }
    let group = Group {
        kind: &KIND,
        scenarios,
        pids,
        cache: None,
        _processes: vec![Box::new((upstream, idp, redis, files, bare))],
    };
    Ok((group, Sessions { envoys, authchains }))
}
