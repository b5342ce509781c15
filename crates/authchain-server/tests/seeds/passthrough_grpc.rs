//! passthrough-grpc: the seed "Passthrough Auth". Envoy → authchain over
//! gRPC → `passThroughAuth.grpc` → an independent ext_authz server, which
//! decides.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::rpc;
use tokio::sync::oneshot;

use crate::seed::Stack;

/// The independent ext_authz server of the seed: `authorization:
/// authorize me` is allowed, with `x-user-id: alice` for the upstream;
/// anything else is a 401 with its own body. Records the paths it is
/// asked about.
#[derive(Clone, Default)]
struct Remote {
    paths: Arc<Mutex<Vec<String>>>,
}

#[allow(deprecated)]
fn header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for Remote {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let http = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        self.paths.lock().unwrap().push(http.path.clone());
        let allowed = http.headers.get("authorization").map(String::as_str) == Some("authorize me");
        let response = if allowed {
            CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-user-id", "alice")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(rpc::Status {
                    code: 16,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("www-authenticate", "Remote")],
                    body: "denied by the remote".into(),
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// The remote, served on 127.0.0.1:0 until dropped.
struct Served {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve(remote: Remote) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(remote))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Served { addr, _stop: stop }
}

#[tokio::test]
async fn passthrough_grpc_to_an_independent_server() {
    let remote = Remote::default();
    let paths = remote.paths.clone();
    let served = serve(remote).await;
    let stack = Stack::start("passthrough-grpc", Some(served.addr.port())).await;

    stack.assert_passthrough_allows().await;
    assert_eq!(paths.lock().unwrap().as_slice(), ["/api?x=1"]);

    // The remote's deny is the client's answer: status, headers, body.
    for headers in [
        vec![("authorization", "let me in")],
        vec![],
        vec![("x-user-id", "alice")],
    ] {
        let reply = stack.get("/api", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}\n{}", stack.output());
        assert_eq!(reply.header_values("www-authenticate"), ["Remote"]);
        assert_eq!(reply.text(), "denied by the remote");
    }
    stack
        .assert_denied("/api", &[("authorization", "let me in")], 401)
        .await;
}

/// Mirroring an existing ext_authz server while migrating: the AuthConfig
/// Envoy names passes each check on to the old server, whose answer is
/// served, and its `mirror` is the local chain, which runs beside it
/// (after the answer). The local chain allows what the old server allows,
/// but for `/admin`: that disagreement, and only it, is counted.
const MIRROR: &str = "
authConfigs:
- apiVersion: enterprise.gloo.solo.io/v1
  kind: AuthConfig
  metadata: { name: passthrough-auth, namespace: gloo-system }
  spec:
    configs:
    - passThroughAuth:
        grpc:
          address: 127.0.0.1:{{remote_port}}
          connectionTimeout: 3s
        mirror: gloo-system.local
- apiVersion: enterprise.gloo.solo.io/v1
  kind: AuthConfig
  metadata: { name: local, namespace: gloo-system }
  spec:
    configs:
    - apiKeyAuth:
        headerName: authorization
        allowBearer: false
        keys: [{ key: authorize me }]
    - rules:
        defaultAction: allow
        rules: [{ action: deny, path: { prefix: /admin } }]
";

#[tokio::test]
async fn mirroring_the_old_server_serves_its_answer_and_counts_where_the_local_chain_disagrees() {
    use authchain_testkit::envoy::{Bootstrap, Envoy};

    let served = serve(Remote::default()).await;
    let app = authchain_testkit::EchoServer::start().await.unwrap();
    let authchain = crate::support::Authchain::start_with(
        &format!("{}{MIRROR}", crate::support::LISTENERS),
        &[("remote_port", served.addr.port().to_string())],
    )
    .await;
    let bootstrap = Bootstrap::new(app.addr())
        .route("/", Some("gloo-system.passthrough-auth"))
        .grpc(authchain.grpc);
    let envoy = Envoy::start(&bootstrap.yaml()).await.unwrap();
    let ingress = envoy.listener("ingress").unwrap();

    // The old server's answers are served, the local chain's never.
    let me = [("authorization", "authorize me")];
    for (path, headers, status) in [
        ("/api", &me[..], 200),
        ("/admin", &me[..], 200),
        ("/api", &[][..], 401),
    ] {
        let reply = authchain_testkit::client::get(ingress, path, headers)
            .await
            .unwrap();
        assert_eq!(
            reply.status,
            status,
            "{path} {headers:?}: {}",
            authchain.log()
        );
    }

    // Only /admin disagrees: the old server allowed, the local chain denied.
    let series = |kind: &str| {
        format!(
            "authchain_shadow_disagreements_total{{config=\"gloo-system.passthrough-auth\",shadow=\"gloo-system.local\",kind=\"{kind}\"}}"
        )
    };
    let mut allow_deny = 0.0;
    for _ in 0..250 {
        allow_deny = authchain.metric(&series("allow_deny")).await;
        if allow_deny >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(allow_deny, 1.0, "{}", authchain.metrics().await);
    let metrics = authchain.metrics().await;
    for kind in ["deny_allow", "status"] {
        assert_eq!(
            crate::support::metric_value(&metrics, &series(kind)),
            0.0,
            "{kind}"
        );
    }
    assert!(
        authchain.log().contains("the shadow AuthConfig disagrees"),
        "{}",
        authchain.log()
    );
}
