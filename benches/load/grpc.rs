//! The `grpc` group: Envoy's ext_authz over gRPC, against a bare
//! allow-all tonic server and the `authchain` binary.

use std::error::Error;

use authchain_benches::child::ChildServer;
use authchain_benches::rounds::{Comparison, Measure, Target};
use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use authchain_grpc::envoy_types::pb::google::rpc;
use authchain_testkit::envoy::{Bootstrap, Envoy};
use authchain_testkit::{EchoServer, client};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::server::{Authchain, cache};
use crate::{Group, How, Kind, Scenario};

/// This binary as (b)'s bare allow-all tonic server.
pub(crate) const ALLOW_ALL: &str = "--serve-allow-all-grpc";

/// This binary as the `login` group's bare allow-all tonic server, which
/// answers the upstream headers of the login's allow
/// ([`login::UPSTREAM`](crate::login::UPSTREAM)).
pub(crate) const ALLOW_ALL_LOGIN: &str = "--serve-allow-all-grpc-login";

/// The API key wrk sends.
pub(crate) const KEY: &str = "bench-4p1-k3y-6f1c2d9e0b7a4c35";

/// (c) and (c'): API key, then GET only, then a Rego policy.
const CHAIN: &str = r#"authConfigs:
- name: bench
  configs:
  - name: key
    apiKeyAuth:
      headerName: api-key
      keys: [{ key: "{{key}}", metadata: { user-id: bench } }]
      headersFromMetadataEntry: { x-user-id: { name: user-id, required: true } }
  - name: get-only
    rules:
      defaultAction: deny
      rules: [{ action: allow, methods: [GET] }]
  - name: policy
    opaAuth:
      query: data.bench.authz.allow
      modules:
        bench.rego: |
          package bench.authz

          default allow := false

          allow if input.attributes.request.http.method == "GET"
"#;

const SCENARIOS: [&str; 4] = [
    "(a) envoy gRPC, no auth",
    "(b) envoy gRPC + bare tonic",
    "(c) envoy gRPC + authchain, 3 steps, cached",
    "(c') envoy gRPC + authchain, 3 steps, no cache",
];

pub(crate) const KIND: Kind = Kind {
    name: "grpc",
    about: "Envoy (1 worker) with ext_authz over gRPC, HTTP/1.1 GET / with an api-key header",
    scenarios: &SCENARIOS,
    comparisons: &{
        use Measure::{Cpu, Rps};
        let (s, context) = (SCENARIOS, Target::Context);
        [
            Comparison::new("grpc c/b rps", Rps(s[2], s[1]), Target::AtLeast(0.97)),
            Comparison::new("grpc CPU per request b/c", Cpu(s[2], s[1]), context),
            Comparison::new("grpc c'/b rps (no cache)", Rps(s[3], s[1]), context),
        ]
    },
};

/// A bare `Check` server that allows everything, written only for the
/// benchmarks: the limit of an ext_authz hop. Its allow sets `upstream`'s
/// headers, as the allow it is compared with does, so that the proxy's
/// work on the answer counts in the limit.
#[derive(Debug, Clone, Copy)]
struct AllowAll {
    upstream: &'static [(&'static str, &'static str)],
}

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let headers = self
            .upstream
            .iter()
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key: (*key).to_owned(),
                    value: (*value).to_owned(),
                    raw_value: Vec::new(),
                }),
                ..Default::default()
            })
            .collect();
        Ok(tonic::Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            dynamic_metadata: None,
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                ..Default::default()
            })),
        }))
    }
}

/// Serves [`AllowAll`], answering `upstream`'s headers, on `listener`
/// until the listener fails, with
/// `TCP_NODELAY` on every connection as authchain-grpc's servers set it
/// (a limit server that let Nagle batch its replies would save system
/// calls and packets that a latency-minded ext_authz server must spend).
pub(crate) async fn allow_all(
    listener: TcpListener,
    upstream: &'static [(&'static str, &'static str)],
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt as _;
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    });
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AllowAll { upstream }))
        .serve_with_incoming(incoming)
        .await
}

/// Starts the upstream, the auth servers and an Envoy for each scenario;
/// (c) and (c') must deny a request without the key.
pub(crate) async fn start() -> Result<Group, Box<dyn Error>> {
    let binary = crate::server::binary()?;
    let upstream = EchoServer::start().await?;
    let bare = ChildServer::start(ALLOW_ALL).await?;
    let cached = Authchain::start(&binary, &(CHAIN.to_owned() + &cache("api-key", 1000))).await?;
    let uncached = Authchain::start(&binary, CHAIN).await?;
    let servers = [
        None,
        Some((bare.addr(), bare.pid())),
        Some((cached.grpc(), cached.pid())),
        Some((uncached.grpc(), uncached.pid())),
    ];
    let (mut scenarios, mut envoys, mut pids) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (name, server)) in SCENARIOS.into_iter().zip(servers).enumerate() {
        let mut bootstrap = Bootstrap::new(upstream.addr());
        if let Some((addr, pid)) = server {
            bootstrap = bootstrap.grpc(addr);
            pids.push(pid);
        }
        let envoy = Envoy::start(&bootstrap.yaml()).await?;
        let target = envoy.listener("ingress")?;
        if i >= 2 && client::get(target, "/", &[]).await?.status == 200 {
            return Err(format!("{name}: a request without the API key got 200").into());
        }
        let proxy = envoy.peer().pid();
        pids.push(proxy);
        let how = How::Wrk {
            target,
            path: "/",
            header: ("api-key", KEY),
            server: server.map(|s| s.1),
            proxy: Some(proxy),
        };
        scenarios.push(Scenario::new(name, how));
        envoys.push(envoy);
    }
    Ok(Group {
        kind: &KIND,
        scenarios,
        pids,
        cache: Some(cached),
        _processes: vec![
            Box::new(upstream),
            Box::new(bare),
            Box::new(uncached),
            Box::new(envoys),
        ],
    })
}
