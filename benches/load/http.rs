//! The `http` group: nginx's `auth_request` and Envoy's ext_authz in HTTP
//! service mode against a bare allow-all hyper server and authchain-http's
//! check server, and an axum app with and without `AuthChainLayer`.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;

use authchain_benches::child::ChildServer;
use authchain_benches::rounds::{Comparison, Measure, Target};
use authchain_http::{AuthChainLayer, AuthContext, CheckConfig, CheckServer, ForwardedHeaders};
use authchain_testkit::envoy::{Bootstrap, Envoy, HttpService};
use authchain_testkit::nginx::Nginx;
use authchain_testkit::{EchoServer, client};
use tokio::net::TcpListener;

use crate::{Group, How, Kind, Scenario};

/// This binary as (b)'s bare allow-all hyper server.
const ALLOW_ALL: &str = "--serve-allow-all";
/// This binary as nginx's (c): authchain-http's check server, trusting
/// loopback for nginx's `X-Original-*` headers.
const CHECK: &str = "--serve-check";
/// This binary as Envoy's (c): the check server trusting no proxy, since
/// Envoy sends the original request as the check's own.
const CHECK_ENVOY: &str = "--serve-check-envoy";
/// This binary as the axum app without the layer.
const APP: &str = "--serve-app";
/// This binary as the axum app with `AuthChainLayer` on the Router
/// (`Router::layer`).
const LAYERED_APP: &str = "--serve-layered-app";
/// This binary as the axum app wrapped whole in `AuthChainLayer`.
const WRAPPED_APP: &str = "--serve-wrapped-app";
/// This binary as the axum app with [`FloorLayer`] on the Router.
const FLOOR_APP: &str = "--serve-floor-app";

/// Every child flag of this group, which `scripts/server-instructions.sh`
/// takes too.
pub(crate) const FLAGS: [&str; 7] = [
    ALLOW_ALL,
    CHECK,
    CHECK_ENVOY,
    APP,
    LAYERED_APP,
    WRAPPED_APP,
    FLOOR_APP,
];

/// The path wrk asks for.
const PATH: &str = "/api/x";

/// nginx's (a), (b), (c); Envoy's; the axum app without the layer, with it
/// on the Router, with it around the Router, and with [`FloorLayer`] on the
/// Router.
const SCENARIOS: [&str; 10] = [
    "(a) nginx, no auth",
    "(b) nginx + allow-all hyper server",
    "(c) nginx + authchain-http, 3-step chain",
    "(a) envoy HTTP, no auth",
    "(b) envoy HTTP + allow-all hyper server",
    "(c) envoy HTTP + authchain-http, 3-step chain",
    "axum app",
    "axum app + AuthChainLayer (3 steps)",
    "AuthChainLayer around the axum app",
    "axum app + hand-written floor layer",
];

pub(crate) const KIND: Kind = Kind {
    name: "http",
    about: "nginx (1 worker process) and Envoy (1 worker) calling an HTTP auth server, \
            and an axum app; GET /api/x with my-header",
    scenarios: &SCENARIOS,
    comparisons: &{
        use Measure::{Cpu, Rps};
        let (s, proxy, axum) = (SCENARIOS, Target::AtLeast(0.95), Target::AtLeast(0.90));
        [
            Comparison::new("nginx c/b rps", Rps(s[2], s[1]), proxy),
            Comparison::new("nginx CPU per request b/c", Cpu(s[2], s[1]), proxy),
            Comparison::new("envoy c/b rps", Rps(s[5], s[4]), proxy),
            Comparison::new("envoy CPU per request b/c", Cpu(s[5], s[4]), proxy),
            Comparison::new("axum with/without layer rps", Rps(s[7], s[6]), axum),
            Comparison::new("axum CPU per request without/with", Cpu(s[7], s[6]), axum),
            Comparison::new(
                "axum wrapped whole/without layer rps",
                Rps(s[8], s[6]),
                axum,
            ),
            Comparison::new("axum floor layer/without layer rps", Rps(s[9], s[6]), axum),
        ]
    },
};

/// The upstream headers of the bench chain's allow (the SetHeader step's
/// and the RequiredHeader plugin's), which the proxies copy upstream.
const ANSWER: [(&str, &str); 2] = [("x-chain", "checked"), ("matched-allowed-headers", "true")];

/// [`ANSWER`] as a header map takes it, made at compile time: the servers
/// that answer or forward it do not parse its names on every request (as
/// the chain's steps do not).
const ANSWER_HEADERS: [(http::HeaderName, http::HeaderValue); 2] = [
    (
        http::HeaderName::from_static(ANSWER[0].0),
        http::HeaderValue::from_static(ANSWER[0].1),
    ),
    (
        http::HeaderName::from_static(ANSWER[1].0),
        http::HeaderValue::from_static(ANSWER[1].1),
    ),
];

/// A hyper server that allows everything with the check server's answer
/// ([`ANSWER`]'s headers) and its connection settings (HTTP/1 or 2,
/// `TCP_NODELAY`): the limit of an auth hop, the proxy's work on the
/// answer included.
async fn allow_all(listener: TcpListener) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_| async {
                let mut response =
                    http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                for (name, value) in ANSWER_HEADERS {
                    response.headers_mut().insert(name, value);
                }
                Ok::<_, Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// authchain-http's check server with the bench chain, trusting nginx's
/// forwarded headers.
async fn check(listener: TcpListener, config: CheckConfig) -> Result<(), Box<dyn Error>> {
    let server = CheckServer::new(authchain_benches::engine().await?, config);
    server.serve(listener, std::future::pending()).await?;
    Ok(())
}

/// The axum app: without the layer, with it on the Router (`flag` is
/// [`LAYERED_APP`]), with it around the Router ([`WRAPPED_APP`]), or with
/// [`FloorLayer`] on the Router ([`FLOOR_APP`]).
async fn app(listener: TcpListener, flag: &str) -> Result<(), Box<dyn Error>> {
    let app = authchain_benches::app();
    if flag == APP {
        axum::serve(listener, app).await?;
        return Ok(());
    }
    let engine = authchain_benches::engine().await?;
    let chain = engine
        .current()
        .chain("bench")
        .ok_or("no bench chain")?
        .clone();
    let config = chain.shared_name();
    let layer = AuthChainLayer::new(chain);
    if flag == FLOOR_APP {
        axum::serve(listener, app.layer(FloorLayer { config })).await?;
    } else if flag == LAYERED_APP {
        axum::serve(listener, app.layer(layer)).await?;
    } else {
        let wrapped = authchain_http::AuthChain::new(app, layer);
        let wrapped =
            axum::ServiceExt::<http::Request<axum::body::Body>>::into_make_service(wrapped);
        axum::serve(listener, wrapped).await?;
    }
    Ok(())
}

/// The least a layer must do on the bench chain's allow, written by hand
/// for this one chain: read `my-header` and compare it with the allowed
/// values, set the chain's two upstream headers, and put an
/// [`AuthContext`] with the chain's state into the request, then call the
/// route, with no future of its own. The layered app's cost above this
/// one's is what authchain's generality costs (the chain, its request, its
/// answer); this one's above the plain app's is what any layer doing the
/// work pays, axum's layered route included. It never denies (a request
/// without the header goes on, marked in the context's state): it is a
/// measure, not an auth layer.
#[derive(Clone)]
struct FloorLayer {
    /// The chain's name, for the context.
    config: std::sync::Arc<str>,
}

impl<S> tower_layer::Layer<S> for FloorLayer {
    type Service = Floor<S>;

    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`FloorLayer`].
#[derive(Clone)]
struct Floor<S> {
    inner: S,
    config: std::sync::Arc<str>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Floor<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        static MY_HEADER: http::HeaderName = http::HeaderName::from_static("my-header");
        let matched = request
            .headers()
            .get_all(&MY_HEADER)
            .iter()
            .any(|v| v == "foo" || v == "bar");
        let headers = request.headers_mut();
        for (name, value) in ANSWER_HEADERS {
            headers.insert(name, value);
        }
        let mut context = AuthContext::default();
        context.config = self.config.clone();
        context.state.insert("checked", serde_json::json!(matched));
        request.extensions_mut().insert(context);
        self.inner.call(request)
    }
}

/// The body of nginx's `http {}` block: keep-alive pools to the upstream
/// and, when given, to an auth server called with `auth_request`, whose
/// [`ANSWER`] headers go upstream (`auth_request_set`).
fn nginx_config(upstream: SocketAddr, auth: Option<(SocketAddr, &str)>) -> String {
    let keepalive = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
    let mut config = format!("upstream app {{ server {upstream}; keepalive 64; }}\n");
    let mut location = String::new();
    let mut auth_location = String::new();
    if let Some((addr, path)) = auth {
        config.push_str(&format!(
            "upstream auth {{ server {addr}; keepalive 64; }}\n"
        ));
        location.push_str("auth_request /_authz;");
        for (i, (name, _)) in ANSWER.iter().enumerate() {
            location.push_str(&format!(
                " auth_request_set $answer{i} $upstream_http_{}; proxy_set_header {name} $answer{i};",
                name.replace('-', "_")
            ));
        }
        auth_location = format!(
            "location = /_authz {{ internal; proxy_pass http://auth{path}; {keepalive} \
             proxy_pass_request_body off; proxy_set_header Content-Length \"\"; \
             proxy_set_header X-Original-URI $request_uri; \
             proxy_set_header X-Original-Method $request_method; }}"
        );
    }
    config.push_str(&format!(
        "server {{\n listen 127.0.0.1:{{{{port}}}};\n \
         location / {{ {location} proxy_pass http://app; {keepalive} }}\n \
         {auth_location}\n}}\n"
    ));
    config
}

/// In the child: serves `flag`'s server on `listener`.
pub(crate) async fn serve(flag: &str, listener: TcpListener) -> Result<(), Box<dyn Error>> {
    match flag {
        ALLOW_ALL => allow_all(listener).await.map_err(Into::into),
        CHECK => {
            let loopback = ["127.0.0.0/8".parse()?];
            let config = CheckConfig::default().trust(loopback, ForwardedHeaders::XOriginal);
            check(listener, config).await
        }
        CHECK_ENVOY => check(listener, CheckConfig::default()).await,
        _ => app(listener, flag).await,
    }
}

/// Starts the upstream, the servers, and the proxies in front of them;
/// checks that both auth servers' answers reach the upstream through both
/// proxies, and that a request without the header the chain requires is
/// denied.
pub(crate) async fn start() -> Result<Group, Box<dyn Error>> {
    let upstream = EchoServer::start().await?;
    let mut servers = Vec::with_capacity(FLAGS.len());
    for flag in FLAGS {
        servers.push(ChildServer::start(flag).await?);
    }
    let [bare, checker, envoy_checker] = [0, 1, 2].map(|i| &servers[i]);
    let nginx = [
        Nginx::start(&nginx_config(upstream.addr(), None)).await?,
        Nginx::start(&nginx_config(upstream.addr(), Some((bare.addr(), "/")))).await?,
        Nginx::start(&nginx_config(
            upstream.addr(),
            Some((checker.addr(), "/check:bench")),
        ))
        .await?,
    ];
    let answer_names = ANSWER.map(|(name, _)| name);
    let envoy_with = |addr| {
        Bootstrap::new(upstream.addr())
            .http(HttpService {
                addr,
                path_prefix: "/check:bench",
                allowed_headers: &["my-header"],
                upstream_headers: &answer_names,
                upstream_headers_to_append: &[],
                client_headers: &[],
            })
            .yaml()
    };
    let envoy = [
        Envoy::start(&Bootstrap::new(upstream.addr()).yaml()).await?,
        Envoy::start(&envoy_with(bare.addr())).await?,
        Envoy::start(&envoy_with(envoy_checker.addr())).await?,
    ];
    // (target, server, proxy) of each scenario.
    let mut plan = Vec::with_capacity(SCENARIOS.len());
    let auth = [None, Some(bare.pid()), Some(checker.pid())];
    for (nginx, auth) in nginx.iter().zip(auth) {
        plan.push((nginx.addr(), auth, Some(nginx.pid())));
    }
    let auth = [None, Some(bare.pid()), Some(envoy_checker.pid())];
    for (envoy, auth) in envoy.iter().zip(auth) {
        plan.push((envoy.listener("ingress")?, auth, Some(envoy.peer().pid())));
    }
    for app in &servers[3..] {
        plan.push((app.addr(), Some(app.pid()), None));
    }
    // Through both proxies both auth servers' answers reach the upstream;
    // the chain denies a request without my-header.
    for (i, (target, ..)) in plan.iter().enumerate() {
        let reply = client::get(*target, PATH, &[("my-header", "foo")]).await?;
        if [1, 2, 4, 5].contains(&i) {
            let echoed = reply.echoed()?;
            if ANSWER.iter().any(|(n, v)| echoed.header(n) != Some(*v)) {
                let name = SCENARIOS[i];
                return Err(format!("{name}: the upstream did not get {ANSWER:?}").into());
            }
        }
        if [2, 5, 7, 8].contains(&i) && client::get(*target, PATH, &[]).await?.status == 200 {
            return Err(format!("{}: a request without my-header got 200", SCENARIOS[i]).into());
        }
    }
    let scenarios = SCENARIOS
        .into_iter()
        .zip(plan)
        .map(|(name, (target, server, proxy))| {
            let how = How::Wrk {
                target,
                path: PATH,
                header: ("my-header", "foo"),
                server,
                proxy,
            };
            Scenario::new(name, how)
        })
        .collect();
    let pids = servers
        .iter()
        .map(ChildServer::pid)
        .chain(nginx.iter().map(Nginx::pid))
        .chain(envoy.iter().map(|e| e.peer().pid()))
        .collect();
    Ok(Group {
        kind: &KIND,
        scenarios,
        pids,
        cache: None,
        _processes: vec![
            Box::new(upstream),
            Box::new(servers),
            Box::new(nginx),
            Box::new(envoy),
        ],
    })
}
