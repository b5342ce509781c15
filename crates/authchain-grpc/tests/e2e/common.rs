//! The stack the end-to-end tests run: real Envoy → authchain-grpc →
//! the echo upstream, with a scriptable test step and an independent
//! ext_authz server for the passthrough step.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authchain_core::{
    Allow, Answer, AuthConfig, AuthService, AuthorizationRequest, BuildContext, Decision, Deny,
    Engine, Error, ExtAuthPlugin, Format, PluginRegistry, async_trait,
};
use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue as PbHeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::rpc;
use authchain_testkit::client::{self, Reply};
use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::{EchoServer, PeerError};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A test step driven by its config: mutations to make, a deny to give,
/// state to write, and so on.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Script {
    /// `[action, name, value]`, action one of `append`, `addIfAbsent`,
    /// `overwrite`, `overwriteIfExists`.
    #[serde(default)]
    headers: Vec<(String, String, String)>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    response_headers: Vec<(String, String, String)>,
    #[serde(default)]
    set_query: Vec<(String, String)>,
    #[serde(default)]
    remove_query: Vec<String>,
    /// Deny unless this header has this value.
    #[serde(default)]
    require: Option<(String, String)>,
    #[serde(default)]
    deny: Option<DenySpec>,
    /// Written into the chain state.
    #[serde(default)]
    state: Map<String, Value>,
    /// Copy every state entry to the upstream header `x-state-<key>`.
    #[serde(default)]
    state_to_headers: bool,
    /// Copy the request body the step saw to the upstream header `x-auth-saw-body`.
    #[serde(default)]
    body_to_header: bool,
    /// Set this upstream header to a value that is not UTF-8 (Latin-1 `é`).
    #[serde(default)]
    latin1_header: Option<String>,
    /// Describe the request the chain saw in upstream headers `x-seen-*`.
    #[serde(default)]
    describe: bool,
    /// Take this long.
    #[serde(default)]
    sleep_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenySpec {
    status: u16,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

fn action(name: &str) -> authchain_core::HeaderAction {
    use authchain_core::HeaderAction::*;
    match name {
        "append" => AppendIfExistsOrAdd,
        "addIfAbsent" => AddIfAbsent,
        "overwrite" => OverwriteIfExistsOrAdd,
        "overwriteIfExists" => OverwriteIfExists,
        other => panic!("unknown action {other}"),
    }
}

fn hn(s: &str) -> HeaderName {
    HeaderName::try_from(s).expect("test header name")
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::try_from(s).expect("test header value")
}

#[async_trait]
impl AuthService for Script {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            if self.sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
            }
            if let Some((name, value)) = &self.require
                && req.header_str(name.as_str()) != Some(value.as_str())
            {
                return Ok(Decision::unauthenticated());
            }
            if let Some(spec) = &self.deny {
                let mut deny = Deny::new(StatusCode::from_u16(spec.status).expect("status"));
                for (n, v) in &spec.headers {
                    deny = deny.header(hn(n), hv(v));
                }
                return Ok(deny.body(spec.body.clone()).into());
            }
            req.state.extend(self.state.clone());
            let mut allow = Allow::new();
            for (a, n, v) in &self.headers {
                allow
                    .headers
                    .push(authchain_core::HeaderMutation::new(hn(n), hv(v), action(a)));
            }
            for n in &self.remove {
                allow = allow.remove_header(hn(n));
            }
            for (a, n, v) in &self.response_headers {
                allow
                    .response_headers
                    .push(authchain_core::HeaderMutation::new(hn(n), hv(v), action(a)));
            }
            for (k, v) in &self.set_query {
                allow = allow.set_query_parameter(k.clone(), v.clone());
            }
            for k in &self.remove_query {
                allow = allow.remove_query_parameter(k.clone());
            }
            if self.state_to_headers {
                for (k, v) in &req.state {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    allow = allow.set_header(hn(&format!("x-state-{k}")), hv(&text));
                }
            }
            if self.body_to_header {
                let body = req.body.clone().unwrap_or_default();
                allow = allow.set_header(
                    hn("x-auth-saw-body"),
                    HeaderValue::from_bytes(&body).expect("body fits a header"),
                );
            }
            if self.describe {
                let source = req
                    .source
                    .address
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let destination = req
                    .destination
                    .address
                    .map(|a| a.port().to_string())
                    .unwrap_or_default();
                let seen = [
                    ("x-seen-method", req.method.to_string()),
                    ("x-seen-path", req.path.clone()),
                    ("x-seen-host", req.host.clone()),
                    ("x-seen-scheme", req.scheme.clone()),
                    ("x-seen-protocol", req.protocol.to_string()),
                    ("x-seen-source", source),
                    ("x-seen-destination-port", destination),
                    ("x-seen-id-set", (!req.id.is_empty()).to_string()),
                    (
                        "x-seen-client-header",
                        req.header_str("x-client").unwrap_or("").to_owned(),
                    ),
                    (
                        "x-seen-pseudo-in-headers",
                        req.headers
                            .keys()
                            .any(|k| k.as_str().starts_with(':'))
                            .to_string(),
                    ),
                    (
                        "x-seen-context",
                        serde_json::to_string(&req.context).expect("json"),
                    ),
                ];
                for (name, value) in seen {
                    allow = allow.set_header(hn(name), hv(&value));
                }
            }
            if let Some(name) = &self.latin1_header {
                allow = allow.set_header(
                    hn(name),
                    HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
                );
            }
            Ok(allow.into())
        })
    }
}

struct ScriptPlugin;

impl ExtAuthPlugin for ScriptPlugin {
    type Config = Script;
    fn name(&self) -> &str {
        "Script"
    }
    fn build(&self, config: Script, _: &BuildContext<'_>) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(config))
    }
}

/// A registry with the Script plugin, the gRPC passthrough step and the
/// RequiredHeader example plugin.
pub(crate) fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(ScriptPlugin);
    registry.register(authchain_examples::required_header::RequiredHeaderPlugin);
    authchain_grpc::register(&mut registry);
    registry
}

/// An engine with these AuthConfigs (YAML, several documents).
pub(crate) async fn engine(yaml: &str) -> Arc<Engine> {
    engine_with(registry(), yaml).await
}

/// An engine over `registry` with these AuthConfigs.
pub(crate) async fn engine_with(registry: PluginRegistry, yaml: &str) -> Arc<Engine> {
    let engine = Engine::new(registry);
    let configs = AuthConfig::parse("test.yaml", yaml, Format::Yaml).expect("test config parses");
    engine.load(&configs).await.expect("test config loads");
    Arc::new(engine)
}

/// A gRPC server on 127.0.0.1:0, shut down on drop.
pub(crate) struct GrpcServer {
    pub(crate) addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl GrpcServer {
    /// Serves authchain's ext_authz service.
    pub(crate) async fn authchain(service: ExtAuthzService) -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(authchain_grpc::serve_listener_with_shutdown(
            listener,
            service,
            async {
                let _ = rx.await;
            },
        ));
        GrpcServer {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Serves any Authorization implementation (the independent remote).
    pub(crate) async fn remote<A: Authorization>(service: A) -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        GrpcServer {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A server started elsewhere.
    pub(crate) fn from_parts(
        addr: SocketAddr,
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<Result<(), tonic::transport::Error>>,
    ) -> GrpcServer {
        GrpcServer {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Asks it to stop (graceful: requests in flight finish).
    pub(crate) fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Asks it to stop, and waits until it has.
    pub(crate) async fn stop(&mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ends cleanly");
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The independent ext_authz server of the "Passthrough Auth" seed: allows
/// when `authorization` contains "authorize me", adding `x-authorized`;
/// answers with the state it got plus `{"remote": "was here"}`. Records
/// every CheckRequest. `hang` makes it never answer.
#[derive(Clone, Default)]
pub(crate) struct SampleRemote {
    pub(crate) seen: Arc<Mutex<Vec<CheckRequest>>>,
    pub(crate) hang: bool,
    /// How many calls to answer UNAVAILABLE before answering normally.
    pub(crate) unavailable_first: Arc<std::sync::atomic::AtomicUsize>,
}

#[allow(deprecated)]
fn option(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for SampleRemote {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        let left = &self.unavailable_first;
        if left
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(tonic::Status::unavailable("not yet"));
        }
        let check = request.into_inner();
        self.seen.lock().expect("lock").push(check.clone());
        let attributes = check.attributes.unwrap_or_default();
        let headers = attributes
            .request
            .and_then(|r| r.http)
            .map(|h| h.headers)
            .unwrap_or_default();
        let allowed = headers
            .get("authorization")
            .is_some_and(|v| v.contains("authorize me"));
        if !allowed {
            return Ok(tonic::Response::new(CheckResponse {
                status: Some(rpc::Status {
                    code: 16,
                    ..Default::default()
                }),
                dynamic_metadata: None,
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![option("www-authenticate", "Remote")],
                    body: "denied by remote".into(),
                })),
            }));
        }
        let mut state = attributes
            .metadata_context
            .and_then(|m| m.filter_metadata.get("solo.auth.passthrough").cloned())
            .unwrap_or_default();
        state.fields.insert(
            "remote".into(),
            authchain_grpc::envoy_types::pb::google::protobuf::Value {
                kind: Some(
                    authchain_grpc::envoy_types::pb::google::protobuf::value::Kind::StringValue(
                        "was here".into(),
                    ),
                ),
            },
        );
        let mut dynamic = authchain_grpc::envoy_types::pb::google::protobuf::Struct::default();
        dynamic.fields.insert(
            "solo.auth.passthrough".into(),
            authchain_grpc::envoy_types::pb::google::protobuf::Value {
                kind: Some(
                    authchain_grpc::envoy_types::pb::google::protobuf::value::Kind::StructValue(
                        state,
                    ),
                ),
            },
        );
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            dynamic_metadata: Some(dynamic),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![option("x-authorized", "true")],
                ..Default::default()
            })),
        }))
    }
}

/// One route of the Envoy config.
pub(crate) struct Route {
    pub(crate) prefix: &'static str,
    /// The context extension `config_id`, if any.
    pub(crate) config_id: Option<&'static str>,
}

/// Shorthand for a route with a config id.
pub(crate) fn route(prefix: &'static str, config_id: &'static str) -> Route {
    Route {
        prefix,
        config_id: Some(config_id),
    }
}

/// Envoy ext_authz filter settings.
#[derive(Clone)]
pub(crate) struct Opts {
    pub(crate) failure_mode_allow: bool,
    /// `failure_mode_allow_header_add`.
    pub(crate) failure_mode_allow_header_add: bool,
    /// `with_request_body`: (max_request_bytes, allow_partial_message).
    pub(crate) body: Option<(u32, bool)>,
    pub(crate) authz_timeout: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            failure_mode_allow: false,
            failure_mode_allow_header_add: false,
            body: None,
            authz_timeout: "5s",
        }
    }
}

/// The testkit's Envoy bootstrap with ext_authz (gRPC) to `authz`, the
/// routes and the filter settings of `opts`.
pub(crate) fn envoy_yaml(
    authz: SocketAddr,
    upstream: SocketAddr,
    routes: &[Route],
    opts: &Opts,
) -> String {
    let mut bootstrap = Bootstrap::new(upstream)
        .grpc(authz)
        .timeout(opts.authz_timeout)
        .failure_mode_allow(opts.failure_mode_allow)
        .failure_mode_allow_header_add(opts.failure_mode_allow_header_add)
        .include_peer_certificate(true);
    for r in routes {
        bootstrap = bootstrap.route(r.prefix, r.config_id);
    }
    if let Some((max, partial)) = opts.body {
        bootstrap = bootstrap.with_body(max, partial);
    }
    bootstrap.yaml()
}

/// Envoy, authchain and the upstream, each killed or stopped on drop.
pub(crate) struct Stack {
    pub(crate) envoy: Envoy,
    pub(crate) upstream: EchoServer,
    pub(crate) auth: Option<GrpcServer>,
    pub(crate) ingress: SocketAddr,
}

impl Stack {
    /// Starts authchain with `configs` (YAML) and Envoy in front of it.
    pub(crate) async fn start(configs: &str, routes: &[Route], opts: Opts) -> Stack {
        let service = ExtAuthzService::new(engine(configs).await);
        Self::with_service(service, routes, opts).await
    }

    /// As [`start`](Self::start) with a service of the caller's.
    pub(crate) async fn with_service(
        service: ExtAuthzService,
        routes: &[Route],
        opts: Opts,
    ) -> Stack {
        let auth = GrpcServer::authchain(service).await;
        let addr = auth.addr;
        Self::in_front_of(addr, Some(auth), routes, opts).await
    }

    /// Envoy whose ext_authz cluster points at `authz`.
    pub(crate) async fn in_front_of(
        authz: SocketAddr,
        auth: Option<GrpcServer>,
        routes: &[Route],
        opts: Opts,
    ) -> Stack {
        let upstream = EchoServer::start().await.expect("echo upstream");
        let yaml = envoy_yaml(authz, upstream.addr(), routes, &opts);
        let envoy = Envoy::start(&yaml).await.expect("envoy starts");
        let ingress = envoy.listener("ingress").expect("ingress listener");
        Stack {
            envoy,
            upstream,
            auth,
            ingress,
        }
    }

    /// GET through Envoy.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.check(client::get(self.ingress, path, headers).await)
    }

    /// Any method through Envoy, no body.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let request = client::request(method, path, headers, bytes::Bytes::new()).expect("request");
        self.check(client::send(self.ingress, request).await)
    }

    /// POST through Envoy.
    pub(crate) async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> Reply {
        self.check(client::post(self.ingress, path, headers, body).await)
    }

    fn check(&self, reply: Result<Reply, PeerError>) -> Reply {
        match reply {
            Ok(reply) => reply,
            Err(e) => panic!("{e}\n{}", self.envoy.output()),
        }
    }
}

/// Asserts what the upstream got for a header (comma-joined lines split).
#[track_caller]
pub(crate) fn assert_upstream(reply: &Reply, name: &str, expected: &[&str]) {
    let seen = reply.echoed().expect("request reached the upstream");
    assert_eq!(
        seen.header_values(name),
        expected,
        "upstream header {name}; all headers: {:?}",
        seen.headers
    );
}

/// Counts per status of a list of replies (for messages).
pub(crate) fn statuses(replies: &[Reply]) -> HashMap<u16, usize> {
    let mut out = HashMap::new();
    for r in replies {
        *out.entry(r.status.as_u16()).or_default() += 1;
    }
    out
}
