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
