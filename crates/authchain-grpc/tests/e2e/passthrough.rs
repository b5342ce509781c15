//! The seed scenario "Passthrough Auth": Envoy → authchain with a gRPC
//! passthrough step → an independent ext_authz server, state carried there
//! and back; and the ways the remote can fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderValue as PbHeaderValue,
    HeaderValueOption, HttpResponse, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::protobuf::value::Kind;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use crate::common::{GrpcServer, Opts, SampleRemote, Stack, assert_upstream, route};

fn configs(remote: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
name: passthrough
configs:
- name: before
  pluginAuth: {{ name: Script, config: {{ state: {{ from_chain: before }} }} }}
- name: remote
  passThroughAuth:
    grpc: {{ address: "{remote}", connectionTimeout: 500ms }}
    config: {{ customKey: customValue }}
    {extra}
- name: after
  pluginAuth: {{ name: Script, config: {{ stateToHeaders: true }} }}
"#
    )
}

fn string_field(
    s: &authchain_grpc::envoy_types::pb::google::protobuf::Struct,
    key: &str,
) -> Option<String> {
    match s.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(v) => Some(v.clone()),
        _ => None,
    }
}

/// `GET /api` with the credential the sample remote allows.
fn sample_request() -> authchain_core::AuthorizationRequest {
    authchain_core::AuthorizationRequest::new(http::Method::GET, "/api").with_header(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("authorize me"),
    )
}

/// The remote, served with a count of the connections it accepted.
async fn remote_with_connection_count(remote: SampleRemote) -> (GrpcServer, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |s| {
        counter.fetch_add(1, Ordering::Relaxed);
        s
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(remote))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            }),
    );
    (GrpcServer::from_parts(addr, tx, task), accepted)
}

#[tokio::test]
async fn passthrough_auth_seed_scenario() {
    let remote = SampleRemote::default();
    let seen = remote.seen.clone();
    let (_remote_server, accepted) = remote_with_connection_count(remote).await;
    let remote_addr = _remote_server.addr;
    let stack = Stack::start(
        &configs(remote_addr, ""),
        &[route("/", "passthrough")],
        Opts::default(),
    )
    .await;

    let reply = stack
        .get("/api", &[("authorization", "please authorize me")])
        .await;
    assert_upstream(&reply, "x-authorized", &["true"]);
    // State written before the remote step reached the remote and came
    // back, with what the remote added, to the step after it.
    assert_upstream(&reply, "x-state-from_chain", &["before"]);
    assert_upstream(&reply, "x-state-remote", &["was here"]);

    let check = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("the remote was asked");
    let attributes = check.attributes.unwrap();
    let metadata = attributes.metadata_context.unwrap().filter_metadata;
    assert_eq!(
        string_field(&metadata["solo.auth.passthrough"], "from_chain").as_deref(),
        Some("before")
    );
    assert_eq!(
        string_field(&metadata["solo.auth.passthrough.config"], "customKey").as_deref(),
        Some("customValue")
    );
    let http = attributes.request.unwrap().http.unwrap();
    assert_eq!(http.path, "/api");
    assert_eq!(http.method, "GET");
    assert_eq!(http.headers[":path"], "/api");

    // Remote deny = deny, with the remote's status, headers and body.
    let reply = stack.get("/api", &[("authorization", "let me in")]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header_values("www-authenticate"), ["Remote"]);
    assert_eq!(reply.text(), "denied by remote");
    assert_eq!(stack.upstream.hits(), 1);

    // One channel, one connection, for every request.
    for _ in 0..5 {
        stack
            .get("/api", &[("authorization", "authorize me")])
            .await;
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "the passthrough reuses one connection"
    );
}

#[tokio::test]
async fn a_remote_that_hangs_or_is_down_fails_closed() {
    let hanging = GrpcServer::remote(SampleRemote {
        hang: true,
        ..Default::default()
    })
    .await;
    let down = ([127, 0, 0, 1], authchain_testkit::free_port().unwrap()).into();
    // (case, the remote's address)
    for (name, remote) in [("hangs past the timeout", hanging.addr), ("down", down)] {
        let stack = Stack::start(
            &configs(remote, ""),
            &[route("/", "passthrough")],
            Opts::default(),
        )
        .await;
        let reply = stack
            .get("/api", &[("authorization", "authorize me")])
            .await;
        assert_eq!(reply.status, 403, "case {name}");
        assert_eq!(stack.upstream.hits(), 0, "case {name}");
    }
}

#[tokio::test]
async fn a_hanging_remote_passes_with_failure_mode_allow() {
    let remote = GrpcServer::remote(SampleRemote {
        hang: true,
        ..Default::default()
    })
    .await;
    let configs = configs(remote.addr, "failureModeAllow: true");
    let stack = Stack::start(&configs, &[route("/", "passthrough")], Opts::default()).await;
    let reply = stack
        .get("/api", &[("authorization", "authorize me")])
        .await;
    assert_upstream(&reply, "x-envoy-auth-failure-mode-allowed", &["true"]);
    assert_upstream(&reply, "x-authorized", &[]);
}

/// [`SampleRemote`], answering each call after a pause.
#[derive(Clone, Default)]
struct SlowRemote(SampleRemote, std::time::Duration);

#[tonic::async_trait]
impl Authorization for SlowRemote {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        tokio::time::sleep(self.1).await;
        self.0.check(request).await
    }
}

/// A call that gets no answer in time while the remote answered another
/// is no outage: here the remote takes one call at a time (nginx's
/// `grpc_pass` takes 128), so a flood queues calls in the step's own
/// connection past their time. It fails closed under `failureModeAllow`;
/// a remote that answers nothing still passes.
#[tokio::test]
async fn a_call_late_while_the_remote_answers_others_fails_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let slow = SlowRemote(
        SampleRemote::default(),
        std::time::Duration::from_millis(300),
    );
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(1)
            .add_service(AuthorizationServer::new(slow))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let _server = GrpcServer::from_parts(addr, tx, task);
    let own_time = configs(addr, "failureModeAllow: true");
    // The step's timeout shorter than the call's: the step's call ends
    // first all the same (its timer's end would be let through).
    let step_time = own_time
        .replace("connectionTimeout: 500ms", "connectionTimeout: 5s")
        .replace("- name: remote\n", "- name: remote\n  timeout: 550ms\n");
    assert_ne!(own_time, step_time);
    for (case, yaml) in [
        ("connectionTimeout", own_time),
        ("the step's timeout", step_time),
    ] {
        let (_engine, chain) = passthrough_chain(&yaml).await;
        // Warm the connection: the first call answers in time.
        assert!(
            chain.authorize(&mut sample_request()).await.is_allow(),
            "{case}"
        );
        // Two at once: the second waits 300 ms for the stream, then 300
        // ms for its answer, past its 500 ms.
        let (mut first, mut second) = (sample_request(), sample_request());
        let (a, b) = tokio::join!(chain.authorize(&mut first), chain.authorize(&mut second));
        let passed = |request: &authchain_core::AuthorizationRequest,
                      d: &authchain_core::Decision| {
            d.is_allow() && request.state.get("remote").is_some()
        };
        assert!(
            passed(&first, &a) || passed(&second, &b),
            "{case}: one answered: {a:?} {b:?}"
        );
        let late = if passed(&first, &a) { &b } else { &a };
        assert_eq!(
            late.as_deny().map(|d| d.status.as_u16()),
            Some(403),
            "{case}: the late one fails closed: {late:?}"
        );
    }
}

/// [`SampleRemote`], but its first call is UNAVAILABLE after a pause (a
/// gateway or a rate limit in front of the remote, for that call).
#[derive(Clone, Default)]
struct FirstUnavailable(SampleRemote, Arc<AtomicUsize>);

#[tonic::async_trait]
impl Authorization for FirstUnavailable {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if self.1.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            return Err(tonic::Status::unavailable("rate limited"));
        }
        self.0.check(request).await
    }
}

/// UNAVAILABLE while the remote answers other calls is no outage: a
/// gateway's or a rate limit's answer for a call a client can bring
/// about. It fails closed under `failureModeAllow`.
#[tokio::test]
async fn unavailable_while_the_remote_answers_others_fails_closed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let remote = GrpcServer::remote(FirstUnavailable(SampleRemote::default(), calls.clone())).await;
    let (_engine, chain) = passthrough_chain(&configs(remote.addr, "failureModeAllow: true")).await;
    let first = {
        let chain = chain.clone();
        tokio::spawn(async move { chain.authorize(&mut sample_request()).await })
    };
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(chain.authorize(&mut sample_request()).await.is_allow());
    let first = first.await.unwrap();
    assert_eq!(
        first.as_deny().map(|d| d.status.as_u16()),
        Some(403),
        "{first:?}"
    );
}

#[tokio::test]
async fn unavailable_is_retried_by_the_retry_policy() {
    let remote = SampleRemote {
        unavailable_first: Arc::new(AtomicUsize::new(2)),
        ..Default::default()
    };
    let seen = remote.seen.clone();
    let server = GrpcServer::remote(remote.clone()).await;
    let with_retries = configs(
        server.addr,
        "",
    )
    .replace(
        "connectionTimeout: 500ms }",
        "connectionTimeout: 500ms, retryPolicy: { numRetries: 2, retryBackOff: { baseInterval: 1ms } } }",
    );
    let (_engine, chain) = passthrough_chain(&with_retries).await;
    let mut request = sample_request();
    assert!(
        chain.authorize(&mut request).await.is_allow(),
        "two UNAVAILABLE, then OK"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(request.state["remote"], "was here");

    // Without a retry policy, UNAVAILABLE fails closed.
    remote.unavailable_first.store(1, Ordering::Relaxed);
    let (_engine, chain) = passthrough_chain(&configs(server.addr, "")).await;
    let mut request = sample_request();
    let decision = chain.authorize(&mut request).await;
    assert_eq!(decision.as_deny().map(|d| d.status.as_u16()), Some(403));
}

/// A CA, and a server certificate for `authz.test` signed by it.
fn tls_material() -> (String, tonic::transport::Identity) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["authz.test".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server cert");
    (
        ca.pem(),
        tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem()),
    )
}

#[tokio::test]
async fn the_remote_can_be_reached_over_tls() {
    let (ca_pem, identity) = tls_material();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .expect("server tls")
            .add_service(AuthorizationServer::new(SampleRemote::default()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let _server = GrpcServer::from_parts(addr, tx, task);
    let dir = authchain_testkit::ScratchDir::new("tls").unwrap();
    let ca_file = dir.write("ca.pem", &ca_pem).unwrap();

    let authorize = |tls: String| async move {
        let yaml = configs(addr, "").replace(
            "connectionTimeout: 500ms }",
            &format!("connectionTimeout: 500ms, tls: {tls} }}"),
        );
        let (_engine, chain) = passthrough_chain(&yaml).await;
        let mut request = sample_request();
        chain.authorize(&mut request).await
    };
    let (other_ca, _) = tls_material();
    // (case, the `tls` block, the status: 200 for an allow)
    let cases = [
        (
            "verified TLS to the remote",
            format!(
                "{{ caFile: '{}', serverName: authz.test }}",
                ca_file.display()
            ),
            200,
        ),
        // Fail closed.
        (
            "a name the certificate does not carry",
            format!(
                "{{ caFile: '{}', serverName: other.test }}",
                ca_file.display()
            ),
            403,
        ),
        (
            "another CA",
            format!("{{ caPem: {other_ca:?}, serverName: authz.test }}"),
            403,
        ),
    ];
    for (name, tls, want) in cases {
        let decision = authorize(tls).await;
        let status = decision.as_deny().map_or(200, |d| d.status.as_u16());
        assert_eq!(status, want, "case {name}: {decision:?}");
    }
}

/// The remote behind a real TLS server that requires a client certificate,
/// reached with Gloo's `tlsConfig`: the Secret's certificate allows; no
/// certificate, a stranger's, an untrusted server, or a version the server
/// does not speak fail closed.
#[tokio::test]
async fn mtls_with_gloo_s_tls_config_and_fail_closed_without_it() {
    use authchain_testkit::tls::{FrontSettings, Pki, TlsFront, tls_secret};
    let servers = Pki::new();
    let clients = Pki::new();
    let strangers = Pki::new();
    let remote = GrpcServer::remote(SampleRemote::default()).await;
    let identity = servers.issue(&["localhost", "127.0.0.1"]);
    let front = TlsFront::start(
        remote.addr,
        FrontSettings::new(identity.clone()).require_client_cert(&clients),
    )
    .await
    .unwrap();
    let tls12 = TlsFront::start(
        remote.addr,
        FrontSettings::new(identity)
            .require_client_cert(&clients)
            .tls12_only(),
    )
    .await
    .unwrap();
    let (client, stranger) = (
        clients.issue(&["authchain"]),
        strangers.issue(&["authchain"]),
    );
    let (ca, other_ca) = (servers.ca_pem(), strangers.ca_pem());
    let secret = |client, ca| tls_secret("default", "mtls", client, ca);
    let mtls = "{secretRef: {name: mtls}}";
    // (case, server, tlsConfig, the Secret, allowed)
    let cases = [
        (
            "the Secret's certificate and CA",
            front.addr(),
            mtls,
            secret(Some(&client), Some(&ca)),
            true,
        ),
        (
            "no client certificate",
            front.addr(),
            mtls,
            secret(None, Some(&ca)),
            false,
        ),
        (
            "a certificate from another CA",
            front.addr(),
            mtls,
            secret(Some(&stranger), Some(&ca)),
            false,
        ),
        (
            "a server the Secret's CA did not sign",
            front.addr(),
            mtls,
            secret(Some(&client), Some(&other_ca)),
            false,
        ),
        (
            "the web PKI roots (tlsConfig: {})",
            front.addr(),
            "{}",
            String::new(),
            false,
        ),
        (
            "TLS 1.2 when it is all the server speaks",
            tls12.addr(),
            "{secretRef: {name: mtls}, sslParams: {maximumProtocolVersion: TLSv1_2}}",
            secret(Some(&client), Some(&ca)),
            true,
        ),
        (
            "TLS 1.3 at least, against a TLS 1.2 server",
            tls12.addr(),
            "{secretRef: {name: mtls}, sslParams: {minimumProtocolVersion: TLSv1_3}}",
            secret(Some(&client), Some(&ca)),
            false,
        ),
        (
            "plain text to a TLS server",
            front.addr(),
            "",
            String::new(),
            false,
        ),
    ];
    for (case, addr, tls_config, secret, allowed) in cases {
        let tls = if tls_config.is_empty() {
            String::new()
        } else {
            format!(", tlsConfig: {tls_config}")
        };
        let yaml = configs(addr, "").replace(
            "connectionTimeout: 500ms }",
            &format!("connectionTimeout: 2s{tls} }}"),
        ) + "---\n"
            + &secret;
        let (_engine, chain) = passthrough_chain(&yaml).await;
        let mut request = sample_request();
        let decision = chain.authorize(&mut request).await;
        if allowed {
            assert!(decision.is_allow(), "case {case}: {decision:?}");
            assert_eq!(request.state["remote"], "was here", "case {case}");
        } else {
            assert_eq!(
                decision.as_deny().map(|d| d.status.as_u16()),
                Some(403),
                "case {case}"
            );
        }
    }
}

/// `retryPolicy: {}` is Gloo's defaults: one retry, after 1 s, when it
/// can start within the call's time.
#[tokio::test]
async fn an_empty_retry_policy_retries_once() {
    let remote = SampleRemote::default();
    let server = GrpcServer::remote(remote.clone()).await;
    let yaml = configs(server.addr, "").replace(
        "connectionTimeout: 500ms }",
        "connectionTimeout: 500ms, retryPolicy: {} }",
    );
    let (_engine, chain) = passthrough_chain(&yaml).await;
    remote.unavailable_first.store(2, Ordering::Relaxed);
    let decision = chain.authorize(&mut sample_request()).await;
    assert_eq!(
        decision.as_deny().map(|d| d.status.as_u16()),
        Some(403),
        "no retry past the call's time"
    );
    assert_eq!(remote.unavailable_first.load(Ordering::Relaxed), 1);
    let yaml = yaml.replace("connectionTimeout: 500ms", "connectionTimeout: 2s");
    let (_engine, chain) = passthrough_chain(&yaml).await;
    let authorize = || async {
        let mut request = sample_request();
        chain.authorize(&mut request).await
    };
    remote.unavailable_first.store(1, Ordering::Relaxed);
    assert!(
        authorize().await.is_allow(),
        "UNAVAILABLE, then OK on the retry"
    );
    remote.unavailable_first.store(2, Ordering::Relaxed);
    let decision = authorize().await;
    assert_eq!(
        decision.as_deny().map(|d| d.status.as_u16()),
        Some(403),
        "one retry only"
    );
    assert_eq!(
        remote.unavailable_first.load(Ordering::Relaxed),
        0,
        "both tries were made"
    );
}

/// An engine with `yaml` loaded, and its `passthrough` chain (keep the
/// engine as long as the chain serves).
async fn passthrough_chain(
    yaml: &str,
) -> (
    std::sync::Arc<authchain_core::Engine>,
    std::sync::Arc<authchain_core::Chain>,
) {
    let engine = crate::common::engine(yaml).await;
    let chain = engine
        .current()
        .chain("passthrough")
        .cloned()
        .expect("loaded");
    (engine, chain)
}

type Script = dyn Fn(&str) -> Result<CheckResponse, tonic::Status> + Send + Sync;

/// A remote whose answer `script` makes from the request's `x-case`
/// header (empty without one).
#[derive(Clone)]
struct Scripted(Arc<Script>);

impl Scripted {
    fn new(
        script: impl Fn(&str) -> Result<CheckResponse, tonic::Status> + Send + Sync + 'static,
    ) -> Self {
        Scripted(Arc::new(script))
    }
}

#[tonic::async_trait]
impl Authorization for Scripted {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let case = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .and_then(|h| h.headers.get("x-case").cloned())
            .unwrap_or_default();
        (self.0)(&case).map(tonic::Response::new)
    }
}

#[allow(deprecated)] // `append`, as a remote sends it.
fn pb_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        ..Default::default()
    }
}

/// An OK answer with these upstream headers and removals, and this state.
fn ok_answer(headers: &[(&str, &str)], remove: &[&str], state: Option<Value>) -> CheckResponse {
    let dynamic_metadata = state.map(|state| {
        let Value::Object(state) = state else {
            panic!("state is an object")
        };
        let mut map = serde_json::Map::new();
        map.insert("solo.auth.passthrough".to_owned(), Value::Object(state));
        authchain_grpc::convert::json_to_struct(&map)
    });
    CheckResponse {
        status: Some(Default::default()),
        dynamic_metadata,
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: headers.iter().map(|(n, v)| pb_header(n, v)).collect(),
            headers_to_remove: remove.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })),
    }
}

/// The seed's configs with `failureModeAllow: true` and `statusOnError:
/// 503`, so that a refusal (503) shows apart from a deny and an allow.
fn fail_open_configs(remote: std::net::SocketAddr) -> String {
    configs(remote, "failureModeAllow: true").replacen(
        "name: passthrough\n",
        "name: passthrough\nstatusOnError: 503\n",
        1,
    )
}

/// Through Envoy, a remote that ends the RPC with a status: only an outage
/// passes under `failureModeAllow`; PERMISSION_DENIED and UNAUTHENTICATED
/// are denies; every other code (a client can bring them about: a message
/// over the remote's limit, an argument it refuses, a handler that fails
/// on the input) fails closed.
#[tokio::test]
async fn rpc_statuses_a_client_can_bring_about_never_pass_under_failure_mode_allow() {
    use tonic::Code;
    let remote = GrpcServer::remote(Scripted::new(|case| {
        assert_ne!(case, "panic", "a handler that fails on its input");
        let code = Code::from(case.parse::<i32>().unwrap_or(0));
        Err(tonic::Status::new(code, "scripted"))
    }))
    .await;
    let stack = Stack::start(
        &fail_open_configs(remote.addr),
        &[route("/", "passthrough")],
        Opts::default(),
    )
    .await;
    // (code, the client's status: 200 when let through)
    let cases = [
        (Code::Unavailable, 200),
        (Code::PermissionDenied, 403),
        (Code::Unauthenticated, 401),
        (Code::InvalidArgument, 503),
        (Code::ResourceExhausted, 503),
        (Code::OutOfRange, 503),
        (Code::Unknown, 503),
        (Code::Internal, 503),
        (Code::Unimplemented, 503),
        (Code::NotFound, 503),
        (Code::FailedPrecondition, 503),
        (Code::DataLoss, 503),
    ];
    let cases = cases
        .map(|(code, want)| ((code as i32).to_string(), want))
        .into_iter()
        .chain([
            // CANCELLED from the remote, before the call's time ran out:
            // a reset stream, as a handler's panic ends it; and
            // DEADLINE_EXCEEDED then, a time limit of the remote's own.
            ((Code::Cancelled as i32).to_string(), 503),
            ((Code::DeadlineExceeded as i32).to_string(), 503),
            ("panic".to_owned(), 503),
        ]);
    for (code, want) in cases {
        let hits = stack.upstream.hits();
        let reply = stack.get("/api", &[("x-case", &code)]).await;
        assert_eq!(reply.status, want, "{code:?}: {}", reply.text());
        if want == 200 {
            assert_upstream(&reply, "x-envoy-auth-failure-mode-allowed", &["true"]);
        } else {
            assert_eq!(stack.upstream.hits(), hits, "{code:?} reached the upstream");
        }
    }
}

/// An answer with an `error_response` fails closed under
/// `failureModeAllow`: the remote answered, and its handler may fail on
/// what the client sent (Envoy would let it through).
#[tokio::test]
async fn an_error_response_fails_closed_under_failure_mode_allow() {
    use authchain_grpc::envoy_types::ext_authz::v3::pb::DeniedHttpResponse;
    let remote = GrpcServer::remote(Scripted::new(|_| {
        Ok(CheckResponse {
            status: Some(authchain_grpc::envoy_types::pb::google::rpc::Status {
                code: tonic::Code::Internal as i32,
                ..Default::default()
            }),
            dynamic_metadata: None,
            http_response: Some(HttpResponse::ErrorResponse(DeniedHttpResponse::default())),
        })
    }))
    .await;
    let (_engine, chain) = passthrough_chain(&fail_open_configs(remote.addr)).await;
    let decision = chain.authorize(&mut sample_request()).await;
    assert_eq!(
        decision.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "{decision:?}"
    );
}

/// The remote gets the step's own `config`, or none: never one that the
/// proxy's metadata carried in that namespace.
#[tokio::test]
async fn the_remote_gets_the_step_s_config_alone() {
    let remote = SampleRemote::default();
    let seen = remote.seen.clone();
    let server = GrpcServer::remote(remote).await;
    let without = configs(server.addr, "").replace("    config: { customKey: customValue }\n", "");
    for (yaml, expected) in [
        (
            configs(server.addr, ""),
            Some(json!({ "customKey": "customValue" })),
        ),
        (without, None),
    ] {
        let (_engine, chain) = passthrough_chain(&yaml).await;
        let mut request = sample_request();
        request.metadata.insert(
            "solo.auth.passthrough.config".to_owned(),
            json!({ "customKey": "the proxy's" }),
        );
        assert!(chain.authorize(&mut request).await.is_allow());
        let check = seen.lock().unwrap().pop().expect("asked");
        let metadata = check.attributes.unwrap().metadata_context.unwrap();
        let config = metadata
            .filter_metadata
            .get("solo.auth.passthrough.config")
            .map(|c| Value::Object(authchain_grpc::convert::struct_to_json(c.clone())));
        assert_eq!(config, expected);
    }
}

/// A remote that answers OK at once, but a request with `x-case: slow`
/// UNAVAILABLE after 400 ms the first time (a gateway's time limit in
/// front of a remote slow to refuse it), and never the next.
#[derive(Clone, Default)]
struct SlowToRefuse {
    slow_calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Authorization for SlowToRefuse {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request?.http);
        if http.is_some_and(|h| h.headers.get("x-case").is_some_and(|c| c == "slow")) {
            if self.slow_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                return Err(tonic::Status::unavailable("the gateway gave up"));
            }
            std::future::pending::<()>().await;
        }
        Ok(tonic::Response::new(ok_answer(&[], &[], None)))
    }
}

/// The whole call, its tries and the waits between them, ends within the
/// step's time: past it, the step's timer would end the call with an error
/// that `failureModeAllow` lets through, though the remote answered other
/// calls meanwhile (it is up: the client made its own call slow). Here the
/// retry's try had the call's whole time again and ran past the step's 3 s.
#[tokio::test]
async fn retries_end_within_the_step_s_time() {
    let remote = SlowToRefuse::default();
    let server = GrpcServer::remote(remote.clone()).await;
    let yaml = fail_open_configs(server.addr)
        .replace(
            "connectionTimeout: 500ms }",
            "connectionTimeout: 5s, retryPolicy: { retryBackOff: { baseInterval: 300ms } } }",
        )
        .replace("- name: remote\n", "- name: remote\n  timeout: 3s\n");
    let (_engine, chain) = passthrough_chain(&yaml).await;
    let slow = {
        let chain = chain.clone();
        tokio::spawn(async move {
            let mut request = sample_request();
            request
                .headers
                .insert("x-case", http::HeaderValue::from_static("slow"));
            chain.authorize(&mut request).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(chain.authorize(&mut sample_request()).await.is_allow());
    let slow = slow.await.unwrap();
    assert_eq!(
        slow.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "{slow:?}"
    );
    assert_eq!(
        remote.slow_calls.load(Ordering::SeqCst),
        2,
        "it was retried"
    );
}

/// A check request over the size limit is refused before it is sent, and
/// a remote that refuses a large message for its own limit fails closed
/// too, under `failureModeAllow`.
#[tokio::test]
async fn a_check_request_too_large_fails_closed_under_failure_mode_allow() {
    let remote = SampleRemote::default();
    let seen = remote.seen.clone();
    let server = GrpcServer::remote(remote).await;
    let (_engine, chain) = passthrough_chain(&fail_open_configs(server.addr)).await;
    let mut request = sample_request();
    request.body = Some(vec![b'a'; authchain_grpc::passthrough::MAX_CHECK_BYTES].into());
    let decision = chain.authorize(&mut request).await;
    assert_eq!(decision.as_deny().map(|d| d.status.as_u16()), Some(503));
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    // The remote's own limit (1 KiB here; 4 MiB by default): its
    // RESOURCE_EXHAUSTED (or OUT_OF_RANGE) is refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                AuthorizationServer::new(SampleRemote::default()).max_decoding_message_size(1024),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let _small = GrpcServer::from_parts(addr, tx, task);
    let (_engine, chain) = passthrough_chain(&fail_open_configs(addr)).await;
    let mut request = sample_request();
    assert!(
        chain.authorize(&mut request).await.is_allow(),
        "a small check passes"
    );
    let mut request = sample_request();
    request.body = Some(vec![b'a'; 4096].into());
    let decision = chain.authorize(&mut request).await;
    assert_eq!(decision.as_deny().map(|d| d.status.as_u16()), Some(503));
}

/// Through Envoy, an OK answer that sets the host or the failure-mode
/// mark is refused under `failureModeAllow`, and a removal of them is
/// passed over (an authchain behind lists the mark in every answer);
/// other headers go upstream as the remote sets them (Gloo's gRPC
/// passthrough).
#[tokio::test]
async fn an_answer_that_touches_the_host_or_the_failure_mark_fails_closed() {
    let remote = GrpcServer::remote(Scripted::new(|case| {
        Ok(match case {
            "set-host" => ok_answer(&[("host", "admin.internal")], &[], None),
            "set-host-upper" => ok_answer(&[("Host", "admin.internal")], &[], None),
            "set-authority" => ok_answer(&[(":authority", "admin.internal")], &[], None),
            "remove-host" => ok_answer(&[], &["host"], None),
            "remove-authority" => ok_answer(&[], &[":authority"], None),
            "set-mark" => ok_answer(&[("x-envoy-auth-failure-mode-allowed", "false")], &[], None),
            "remove-mark" => ok_answer(&[], &["x-envoy-auth-failure-mode-allowed"], None),
            "bad-name" => ok_answer(&[("bad name", "x")], &[], None),
            _ => ok_answer(&[("x-user-id", "alice")], &["x-drop"], None),
        })
    }))
    .await;
    let stack = Stack::start(
        &fail_open_configs(remote.addr),
        &[route("/", "passthrough")],
        Opts::default(),
    )
    .await;
    for case in [
        "set-host",
        "set-host-upper",
        "set-authority",
        "set-mark",
        "bad-name",
    ] {
        let reply = stack.get("/api", &[("x-case", case)]).await;
        assert_eq!(reply.status, 503, "case {case}: {}", reply.text());
    }
    assert_eq!(stack.upstream.hits(), 0);
    for case in ["remove-host", "remove-authority", "remove-mark"] {
        let reply = stack.get("/api", &[("x-case", case)]).await;
        assert_eq!(reply.status, 200, "case {case}: {}", reply.text());
        assert_upstream(&reply, "x-envoy-auth-failure-mode-allowed", &[]);
    }
    let reply = stack
        .get("/api", &[("x-case", "plain"), ("x-drop", "1")])
        .await;
    assert_upstream(&reply, "x-user-id", &["alice"]);
    assert_upstream(&reply, "x-drop", &[]);
    assert_upstream(&reply, "x-envoy-auth-failure-mode-allowed", &[]);
}

/// A step writes state; the remote may send it back as it got it, and add
/// names, but an answer that changes a name the step wrote is refused,
/// under `failureModeAllow` too: a later `opaAuth` would judge it.
#[tokio::test]
async fn an_answer_that_overwrites_another_step_s_state_fails_closed() {
    let remote = GrpcServer::remote(Scripted::new(|case| {
        let state = match case {
            "echo" => json!({"jwt": {"sub": "alice", "n": 5}, "ratio": 0.5, "remote": "was here"}),
            "overwrite" => json!({"jwt": {"sub": "admin", "n": 5}}),
            "nested" => json!({"jwt": {"sub": "alice", "n": 5, "admin": true}}),
            "number" => json!({"ratio": 1}),
            _ => json!({"remote": "was here"}),
        };
        Ok(ok_answer(&[], &[], Some(state)))
    }))
    .await;
    let yaml = format!(
        r#"
name: passthrough
configs:
- name: jwt
  pluginAuth: {{ name: Script, config: {{ state: {{ jwt: {{ sub: alice, n: 5 }}, ratio: 0.5 }} }} }}
- name: remote
  passThroughAuth:
    grpc: {{ address: "{}", connectionTimeout: 500ms }}
    failureModeAllow: true
"#,
        remote.addr
    );
    let (_engine, chain) = passthrough_chain(&yaml).await;
    for (case, allowed) in [
        ("new", true),
        ("echo", true),
        ("overwrite", false),
        ("nested", false),
        ("number", false),
    ] {
        let mut request = sample_request().with_header(
            http::HeaderName::from_static("x-case"),
            http::HeaderValue::from_static(case),
        );
        let decision = chain.authorize(&mut request).await;
        assert_eq!(decision.is_allow(), allowed, "case {case}: {decision:?}");
        assert_eq!(request.state["jwt"]["sub"], "alice", "case {case}");
        if allowed {
            assert_eq!(request.state["remote"], "was here", "case {case}");
            assert!(
                decision.as_allow().is_some_and(|a| !a
                    .headers
                    .iter()
                    .any(|m| m.name == "x-envoy-auth-failure-mode-allowed")),
                "case {case} was no failure"
            );
        } else {
            assert_eq!(decision.as_deny().map(|d| d.status.as_u16()), Some(403));
        }
    }
}

/// A remote that never answers, with every call slot taken: a call beyond
/// them fails closed at once (a flood can take them all), while the calls
/// that had a slot ride out the remote's silence under `failureModeAllow`.
#[tokio::test]
async fn a_call_beyond_the_slots_never_fails_open() {
    use authchain_grpc::passthrough::MAX_CALLS;
    let remote = GrpcServer::remote(SampleRemote {
        hang: true,
        ..Default::default()
    })
    .await;
    let yaml =
        fail_open_configs(remote.addr).replace("connectionTimeout: 500ms", "connectionTimeout: 2s");
    let (_engine, chain) = passthrough_chain(&yaml).await;
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..MAX_CALLS)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut sample_request()).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let decision = chain.authorize(&mut sample_request()).await;
    assert_eq!(
        decision.as_deny().map(|d| d.status.as_u16()),
        Some(503),
        "{decision:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1900),
        "refused before the calls in flight timed out"
    );
    for call in calls {
        let decision = call.await.expect("call");
        let allow = decision.as_allow().expect("let through");
        assert!(
            allow
                .headers
                .iter()
                .any(|m| m.name == "x-envoy-auth-failure-mode-allowed"),
            "marked"
        );
    }
}
