//! Malformed and oversized requests, and allows Envoy cannot carry: each
//! is a clear deny, never a panic and never a pass.

use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request,
};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use crate::common::{GrpcServer, Opts, Stack, engine, route};

/// The HTTP attributes of `check`.
fn http_of(check: &mut CheckRequest) -> &mut HttpRequest {
    check
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("a check with HTTP attributes")
}

/// A CheckRequest as Envoy sends one for `GET path`.
pub(crate) fn minimal_check(path: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    host: "example.com".into(),
                    headers: [(":path".to_owned(), path.to_owned())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

const ALLOW: &str = "name: allow\nconfigs:\n- pluginAuth: {name: Script, config: {}}\n";

async fn client(
    service: ExtAuthzService,
) -> (GrpcServer, AuthorizationClient<tonic::transport::Channel>) {
    let server = GrpcServer::authchain(service).await;
    let client = AuthorizationClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    (server, client)
}

fn denied_status(response: &authchain_grpc::envoy_types::ext_authz::v3::pb::CheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(0, |s| s.code),
        other => panic!("expected a denied response, got {other:?}"),
    }
}

#[tokio::test]
async fn a_check_request_without_http_attributes_is_a_400_deny() {
    let (_server, mut client) =
        client(ExtAuthzService::new(engine(ALLOW).await).default_config("allow")).await;
    let response = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    let status = response.status.clone().unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status.message.contains("attributes.request.http"),
        "{}",
        status.message
    );
    assert_eq!(denied_status(&response), 400);
}

#[tokio::test]
async fn invalid_header_names_and_methods_are_a_400_deny() {
    let (_server, mut client) =
        client(ExtAuthzService::new(engine(ALLOW).await).default_config("allow")).await;
    // (case, what it gets wrong in the check's HTTP attributes)
    type Spoil = fn(&mut HttpRequest);
    let cases: [(&str, Spoil); 2] = [
        ("a header name with a space", |http| {
            http.headers.insert("bad header".into(), "v".into());
        }),
        ("a method with a space", |http| http.method = "GE T".into()),
    ];
    for (name, spoil) in cases {
        let mut check = minimal_check("/x");
        spoil(http_of(&mut check));
        let response = client.check(check).await.unwrap().into_inner();
        assert_eq!(denied_status(&response), 400, "case {name}");
    }
}

#[tokio::test]
async fn an_unknown_config_is_a_deny_that_names_it() {
    let (_server, mut client) = client(ExtAuthzService::new(engine(ALLOW).await)).await;
    let mut check = minimal_check("/x");
    check
        .attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert("config_id".into(), "ghost".into());
    let response = client.check(check).await.unwrap().into_inner();
    let status = response.status.clone().unwrap();
    assert_eq!(status.code, 5, "NOT_FOUND");
    assert!(status.message.contains("\"ghost\""), "{}", status.message);
    assert_eq!(denied_status(&response), 403);
    // A name that would forge a log line is quoted, and cut.
    let mut check = minimal_check("/x");
    let forged = format!("ghost\nERROR forged line{}", "x".repeat(1000));
    check
        .attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert("config_id".into(), forged);
    let response = client.check(check).await.unwrap().into_inner();
    let message = response.status.unwrap().message;
    assert!(message.contains("\"ghost\\nERROR forged line"), "{message}");
    assert!(!message.contains('\n') && message.len() < 200, "{message}");
    // No config_id and no default.
    let response = client
        .check(minimal_check("/x"))
        .await
        .unwrap()
        .into_inner();
    assert!(response.status.unwrap().message.contains("no default"));
}

#[tokio::test]
async fn an_oversized_check_request_is_denied_unread() {
    let service = ExtAuthzService::new(engine(ALLOW).await)
        .default_config("allow")
        .max_request_bytes(1024);
    let (_server, mut client) = client(service).await;
    let mut check = minimal_check("/x");
    http_of(&mut check).body = "a".repeat(4096);
    let response = client.check(check).await.expect("an answer").into_inner();
    assert_eq!(denied_status(&response), 413);
    let status = response.status.unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status.message.contains("maxRequestBytes"),
        "{}",
        status.message
    );
    // The channel serves the next check as usual.
    let response = client
        .check(minimal_check("/x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status.unwrap().code, 0);
}

/// Before the first config serves (an engine at generation 0, as while
/// the server starts its steps), a check is a 503 deny Envoy passes on,
/// not a 403 for an unknown AuthConfig.
#[tokio::test]
async fn a_check_before_any_config_serves_is_a_503_deny() {
    let engine = std::sync::Arc::new(authchain_core::Engine::new(crate::common::registry()));
    let service = ExtAuthzService::new(engine).default_config("allow");
    let (_server, mut client) = client(service).await;
    let response = client
        .check(minimal_check("/x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status.as_ref().unwrap().code, 14, "UNAVAILABLE");
    assert_eq!(denied_status(&response), 503);
}

/// A `Check` call to `server` over a raw HTTP/2 connection, its body sent
/// by the test through the returned sender, frame by frame.
async fn raw_check(
    server: &GrpcServer,
) -> (
    http_body_util::channel::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<hyper::Result<http::Response<hyper::body::Incoming>>>,
) {
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let (body, channel) = http_body_util::channel::Channel::<bytes::Bytes>::new(16);
    let request = http::Request::post(format!(
        "http://{}/envoy.service.auth.v3.Authorization/Check",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(channel)
    .expect("a request");
    (body, tokio::spawn(sender.send_request(request)))
}

/// The CheckResponse of a raw call's answer.
async fn check_response(
    response: http::Response<hyper::body::Incoming>,
) -> authchain_grpc::envoy_types::ext_authz::v3::pb::CheckResponse {
    use http_body_util::BodyExt;
    let framed = response.into_body().collect().await.expect("a body");
    prost::Message::decode(&framed.to_bytes()[5..]).expect("a CheckResponse")
}

/// A `CheckRequest` whose stream stops half way (a client holding the
/// server's memory): denied with 408 once the read timeout passes, the
/// stream still open.
#[tokio::test]
async fn a_check_request_that_stalls_is_a_408_deny() {
    let service = ExtAuthzService::new(engine(ALLOW).await)
        .default_config("allow")
        .read_timeout(std::time::Duration::from_millis(300));
    let server = GrpcServer::authchain(service).await;
    let (mut body, answer) = raw_check(&server).await;
    // A frame that says 1,000 bytes follow, and 10 of them.
    let mut part = vec![0, 0, 0, 0x03, 0xe8];
    part.extend_from_slice(&[0; 10]);
    body.send_data(part.into()).await.unwrap();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("an answer before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(denied_status(&check_response(response).await), 408);
    drop(body);
}

/// Checks stalled half way hold their bytes of the listener's budget:
/// past it a check is shed (503, `RESOURCE_EXHAUSTED`: a deny, never a
/// transport error), and once the stalled ones go, checks pass again.
/// Without the budget, streams that each start a 4 MiB message and finish
/// none held memory without bound.
#[tokio::test]
async fn checks_past_the_byte_budget_are_shed_until_the_stalled_ones_go() {
    use authchain_core::transport::ConnectionLimits;
    let service = ExtAuthzService::new(engine(ALLOW).await)
        .default_config("allow")
        .max_request_bytes(64 * 1024)
        .connection_limits(ConnectionLimits::default().max_buffered_bytes(256 * 1024));
    let server = GrpcServer::authchain(service).await;
    let mut client = AuthorizationClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    // A stream of a frame that says 65,000 bytes follow and 64,000 of
    // them: four hold 256,020 of the 262,144 bytes.
    let stall = || async {
        let (mut body, answer) = raw_check(&server).await;
        let mut part = vec![0, 0, 0, 0xfd, 0xe8];
        part.extend_from_slice(&[0; 64_000]);
        body.send_data(part.into()).await.unwrap();
        (body, answer)
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall().await);
    }
    // A check of some 7 KB.
    let mut check = minimal_check("/x");
    http_of(&mut check)
        .headers
        .insert("x-big".into(), "b".repeat(7_000));
    let answer = || {
        let (mut client, check) = (client.clone(), check.clone());
        async move { client.check(check).await.unwrap().into_inner() }
    };
    // Shed once the stalled bytes have arrived. A check that came while
    // a stalled stream was still arriving may have had that one shed (it
    // is answered): it is stalled again.
    let shed = async {
        loop {
            for one in &mut stalled {
                if one.1.is_finished() {
                    *one = stall().await;
                }
            }
            let response = answer().await;
            if response.status.as_ref().map(|s| s.code) == Some(8) {
                return response;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), shed)
        .await
        .expect("shed once the stalled streams hold the budget");
    assert_eq!(denied_status(&response), 503);
    // The stalled streams end (cut short: each a 400 deny), and give back.
    for (body, answer) in stalled {
        drop(body);
        let response = answer.await.unwrap().unwrap();
        assert_eq!(denied_status(&check_response(response).await), 400);
    }
    let response = client.check(check).await.unwrap().into_inner();
    assert_eq!(response.status.unwrap().code, 0, "allowed again");
}

/// A `CheckRequest` sent a byte a frame is read whole (and the server
/// keeps the bytes, not the frames): answered as the same message in one
/// frame would be.
#[tokio::test]
async fn a_check_request_in_one_byte_frames_is_read_whole() {
    let service = ExtAuthzService::new(engine(ALLOW).await).default_config("allow");
    let server = GrpcServer::authchain(service).await;
    let (mut body, answer) = raw_check(&server).await;
    let message = prost::Message::encode_to_vec(&minimal_check("/x"));
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    for byte in framed {
        body.send_data(bytes::Bytes::from(vec![byte]))
            .await
            .unwrap();
    }
    drop(body);
    let response = answer.await.unwrap().unwrap();
    let check = check_response(response).await;
    assert_eq!(check.status.unwrap().code, 0, "allowed");
}

#[tokio::test]
async fn an_oversized_check_request_through_envoy_is_a_deny_even_under_failure_mode_allow() {
    // Envoy buffers more body than authchain takes: were the oversized
    // CheckRequest refused by the transport, failure_mode_allow would let
    // the request through.
    let service = ExtAuthzService::new(engine(ALLOW).await)
        .default_config("allow")
        .max_request_bytes(64 * 1024);
    let opts = Opts {
        failure_mode_allow: true,
        failure_mode_allow_header_add: true,
        body: Some((1024 * 1024, false)),
        ..Opts::default()
    };
    let stack = Stack::with_service(service, &[route("/", "allow")], opts).await;
    assert_eq!(stack.post("/x", &[], "small").await.status, 200);
    let reply = stack.post("/x", &[], vec![b'a'; 128 * 1024]).await;
    assert_eq!(reply.status, 413, "{} bytes answered", reply.body.len());
    assert_eq!(stack.upstream.hits(), 1, "only the small one passed");
}

#[tokio::test]
async fn an_allow_envoy_cannot_carry_is_a_deny() {
    let configs = r#"
name: latin1
configs:
- pluginAuth: { name: Script, config: { latin1Header: x-bad } }
---
name: badquery
configs:
- pluginAuth: { name: Script, config: { setQuery: [[a, 'x&admin=true']] } }
"#;
    let routes = [route("/latin1", "latin1"), route("/badquery", "badquery")];
    let stack = Stack::start(configs, &routes, Opts::default()).await;
    assert_eq!(stack.get("/latin1", &[]).await.status, 403);
    assert_eq!(stack.get("/badquery?a=1", &[]).await.status, 403);
    assert_eq!(
        stack.upstream.hits(),
        0,
        "an invalid mutation never reaches the upstream"
    );
}
