//! What real Envoy 1.40 does with raw `CheckResponse` fields, pinned with
//! a server that answers fixed messages (no authchain in the way). The
//! translation in `authchain_grpc::convert` relies on each of these.

use std::collections::HashMap;
use std::sync::Arc;

use authchain_grpc::envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use authchain_grpc::envoy_types::pb::google::protobuf::BoolValue;
use authchain_grpc::envoy_types::pb::google::rpc;

use crate::common::{GrpcServer, Opts, Route, Stack, assert_upstream};

/// Answers the response registered for the request's path.
#[derive(Clone)]
struct Fixed(Arc<HashMap<&'static str, CheckResponse>>);

#[tonic::async_trait]
impl Authorization for Fixed {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let path = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .map(|h| h.path)
            .unwrap_or_default();
        self.0
            .get(path.as_str())
            .cloned()
            .map(tonic::Response::new)
            .ok_or_else(|| tonic::Status::not_found("no fixed answer"))
    }
}

#[allow(deprecated)]
fn opt(
    name: &str,
    value: &str,
    append: Option<bool>,
    action: HeaderAppendAction,
) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append: append.map(|value| BoolValue { value }),
        append_action: action as i32,
        keep_empty_value: false,
    }
}

fn ok(headers: Vec<HeaderValueOption>) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status::default()),
        dynamic_metadata: None,
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn envoy_reads_only_the_append_flag_in_ok_headers_and_adds_each_deny_header() {
    use HeaderAppendAction::*;
    let answers: HashMap<&'static str, CheckResponse> = [
        // append unset + ADD_IF_ABSENT: still replaces the client's copy.
        (
            "/unset-add-if-absent",
            ok(vec![opt("x-h", "auth", None, AddIfAbsent)]),
        ),
        // append unset + OVERWRITE_IF_EXISTS: still adds when absent.
        (
            "/unset-overwrite-if-exists",
            ok(vec![opt("x-h", "auth", None, OverwriteIfExists)]),
        ),
        // append true: comma-appends when present, dropped when absent.
        (
            "/append-true",
            ok(vec![opt("x-h", "auth", Some(true), AppendIfExistsOrAdd)]),
        ),
        // A set and a removal of one name: Envoy removes after it sets,
        // so the chain never lists a removal for a name it sets.
        (
            "/set-and-remove",
            CheckResponse {
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![opt("x-h", "auth", None, OverwriteIfExistsOrAdd)],
                    headers_to_remove: vec!["x-h".into(), "x_h".into()],
                    ..Default::default()
                })),
                ..ok(Vec::new())
            },
        ),
        (
            "/deny-two-values",
            CheckResponse {
                status: Some(rpc::Status {
                    code: 7,
                    ..Default::default()
                }),
                dynamic_metadata: None,
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 403 }),
                    headers: vec![
                        opt("x-d", "a", None, AppendIfExistsOrAdd),
                        opt("x-d", "b", None, AppendIfExistsOrAdd),
                    ],
                    body: String::new(),
                })),
            },
        ),
    ]
    .into_iter()
    .collect();
    let server = GrpcServer::remote(Fixed(Arc::new(answers))).await;
    let routes = [Route {
        prefix: "/",
        config_id: None,
    }];
    let stack = Stack::in_front_of(server.addr, None, &routes, Opts::default()).await;

    let client = [("x-h", "client")];
    assert_upstream(
        &stack.get("/unset-add-if-absent", &client).await,
        "x-h",
        &["auth"],
    );
    assert_upstream(
        &stack.get("/unset-overwrite-if-exists", &[]).await,
        "x-h",
        &["auth"],
    );
    let reply = stack.get("/append-true", &client).await;
    assert_eq!(
        reply.echoed().unwrap().header_all("x-h"),
        ["client,auth"],
        "one comma-joined line"
    );
    assert_upstream(&stack.get("/append-true", &[]).await, "x-h", &[]);
    let reply = stack
        .get("/set-and-remove", &[("x-h", "client"), ("x_h", "client")])
        .await;
    let seen = reply.echoed().unwrap();
    assert_eq!(
        seen.header_all("x-h"),
        Vec::<&str>::new(),
        "removed after set"
    );
    assert_eq!(
        seen.header_all("x_h"),
        Vec::<&str>::new(),
        "a spelling removed"
    );
    let reply = stack.get("/deny-two-values", &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header_values("x-d"), ["a", "b"]);
}
