//! The remote auth servers the AuthConfig `site` asks, run in the test
//! on 127.0.0.1:0, and the app of the layer transport.
//!
//! Both remotes answer what the checked request asks for, so that a row
//! can make a remote misbehave: the HTTP remote answers the status in
//! `x-remote-answer` (200 without it), the gRPC remote allows unless
//! `x-grpc-answer` names a status, which it then denies with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::rpc;
use authchain_testkit::EchoedRequest;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A server task, stopped on drop.
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    /// A task serving at `addr`.
    pub(crate) fn new(addr: SocketAddr, task: JoinHandle<()>) -> Served {
        Served { addr, task }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The HTTP passthrough's server: `POST /auth` answers the status named
/// by `x-remote-answer` (200 when absent); a 3xx carries `location:
/// http://elsewhere.example/`.
pub(crate) async fn http_remote() -> Served {
    async fn answer(headers: HeaderMap) -> Response {
        let status = headers
            .get("x-remote-answer")
            .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::OK);
        let mut response = Response::new(Body::from(format!("remote says {status}")));
        *response.status_mut() = status;
        if status.is_redirection() {
            response.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_static("http://elsewhere.example/"),
            );
        }
        response
    }
    let (listener, addr) = listener().await;
    let app = axum::Router::new().route("/auth", axum::routing::post(answer));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served { addr, task }
}

/// The gRPC passthrough's ext_authz server.
#[derive(Clone, Copy, Default)]
struct GrpcRemote;

#[tonic::async_trait]
impl Authorization for GrpcRemote {
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
        let deny = http
            .headers
            .get("x-grpc-answer")
            .and_then(|v| v.parse::<i32>().ok());
        let response = match deny {
            None => CheckResponse {
                status: Some(rpc::Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                ..Default::default()
            },
            // PERMISSION_DENIED, with the status the request asked for.
            Some(code) => CheckResponse {
                status: Some(rpc::Status {
                    code: 7,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code }),
                    headers: Vec::new(),
                    body: format!("the gRPC remote denies with {code}"),
                })),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(response))
    }
}

/// The gRPC passthrough's server.
pub(crate) async fn grpc_remote() -> Served {
    let (listener, addr) = listener().await;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(GrpcRemote))
            .serve_with_incoming(incoming)
            .await;
    });
    Served { addr, task }
}

/// The app behind [`authchain_http::AuthChainLayer`]: a handler that
/// counts its calls and answers with what reached it, in the
/// [`EchoServer`](authchain_testkit::EchoServer)'s JSON.
#[derive(Clone, Default)]
pub(crate) struct EchoHandler {
    hits: Arc<AtomicUsize>,
}

impl EchoHandler {
    /// How many requests reached the handler.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The handler, for `Router::fallback`.
    pub(crate) async fn handle(self, request: Request) -> Response {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let echoed = EchoedRequest::of(&parts, &body);
        let mut response = Response::new(Body::from(serde_json::to_vec(&echoed).unwrap()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}
