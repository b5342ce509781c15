//! What a remote auth server answers a passthrough step, every field of
//! it the remote's to choose: a gRPC ext_authz answer (or an RPC error)
//! or an HTTP answer. The chain's decision goes out through the gRPC
//! service (as Envoy reads it) or the HTTP check server (as a forward-auth
//! proxy reads it): no answer may panic.

#![no_main]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use authchain_core::{Documents, Engine, Format};
use authchain_grpc::ExtAuthzService;
use authchain_http::{CheckConfig, CheckServer};
use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse, QueryParameter,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::google::protobuf::{BoolValue, ListValue, Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone)]
enum Meta {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<String>),
    Object(Vec<(String, String)>),
}

impl Meta {
    fn value(self) -> Value {
        let kind = match self {
            Meta::Null => Kind::NullValue(0),
            Meta::Bool(b) => Kind::BoolValue(b),
            Meta::Number(n) => Kind::NumberValue(n),
            Meta::Text(s) => Kind::StringValue(s),
            Meta::List(items) => Kind::ListValue(ListValue {
                values: items.into_iter().map(|s| Meta::Text(s).value()).collect(),
            }),
            Meta::Object(fields) => Kind::StructValue(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| (k, Meta::Text(v).value()))
                    .collect(),
            }),
        };
        Value { kind: Some(kind) }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct Header {
    key: String,
    value: String,
    raw: bool,
    append: Option<bool>,
    append_action: i32,
}

impl Header {
    // Envoy still reads the deprecated `append`, and a remote may send it.
    #[allow(deprecated)]
    fn option(self) -> HeaderValueOption {
        let header = match self.raw {
            true => HeaderValue {
                key: self.key,
                raw_value: self.value.into_bytes(),
                ..Default::default()
            },
            false => HeaderValue {
                key: self.key,
                value: self.value,
                ..Default::default()
            },
        };
        HeaderValueOption {
            header: Some(header),
            append: self.append.map(|value| BoolValue { value }),
            append_action: self.append_action,
            ..Default::default()
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum GrpcAnswer {
    /// An RPC error with this code.
    Failed(i32),
    Answer(Answer),
}

#[derive(Arbitrary, Debug, Clone)]
struct Answer {
    code: i32,
    /// An OK answer, a denied one, or an error answer.
    ok: Option<bool>,
    headers: Vec<Header>,
    remove: Vec<String>,
    response_headers: Vec<Header>,
    set_query: Vec<(String, String)>,
    remove_query: Vec<String>,
    status: i32,
    body: String,
    metadata: Vec<(String, Meta)>,
    state: Vec<(String, Meta)>,
}

impl GrpcAnswer {
    fn into_result(self) -> Result<CheckResponse, tonic::Status> {
        match self {
            GrpcAnswer::Failed(code) => Err(tonic::Status::new(code.into(), "failed")),
            GrpcAnswer::Answer(answer) => Ok(answer.response()),
        }
    }
}

impl Answer {
    fn response(self) -> CheckResponse {
        let Answer {
            code,
            ok,
            headers,
            remove,
            response_headers,
            set_query,
            remove_query,
            status,
            body,
            metadata,
            state,
        } = self;
        let headers: Vec<_> = headers.into_iter().map(Header::option).collect();
        let http = match ok {
            Some(true) => Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove: remove,
                response_headers_to_add: response_headers.into_iter().map(Header::option).collect(),
                query_parameters_to_set: set_query
                    .into_iter()
                    .map(|(key, value)| QueryParameter { key, value })
                    .collect(),
                query_parameters_to_remove: remove_query,
                ..Default::default()
            })),
            Some(false) => Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: status }),
                headers,
                body,
            })),
            None => Some(HttpResponse::ErrorResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: status }),
                headers,
                body,
            })),
        };
        let mut fields: HashMap<String, Value> =
            metadata.into_iter().map(|(k, v)| (k, v.value())).collect();
        if !state.is_empty() {
            let state = Struct {
                fields: state.into_iter().map(|(k, v)| (k, v.value())).collect(),
            };
            fields.insert(
                "solo.auth.passthrough".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(state)),
                },
            );
        }
        CheckResponse {
            status: Some(rpc::Status {
                code,
                ..Default::default()
            }),
            dynamic_metadata: Some(Struct { fields }),
            http_response: http,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
struct HttpAnswer {
    status: u16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn response(self) -> http::Response<Full<Bytes>> {
        let mut response = http::Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::OK);
        for (name, value) in self.headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&name),
                http::HeaderValue::from_bytes(&value),
            ) else {
                continue;
            };
            // The framing is hyper's: a false length would only stall the
            // call until its timeout.
            if matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                continue;
            }
            response.headers_mut().append(name, value);
        }
        response
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// The AuthConfig: the gRPC remote, the HTTP one, or both in turn.
    config: u8,
    grpc: GrpcAnswer,
    http_answer: HttpAnswer,
    /// Asks through the HTTP check server rather than the gRPC service.
    via_http: bool,
    headers: Vec<(String, String)>,
}

/// What the remotes answer next.
#[derive(Default)]
struct Answers {
    grpc: Mutex<Option<GrpcAnswer>>,
    http: Mutex<Option<HttpAnswer>>,
}

#[derive(Clone)]
struct Remote(Arc<Answers>);

#[tonic::async_trait]
impl Authorization for Remote {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let answer = self.0.grpc.lock().unwrap().clone();
        match answer {
            Some(answer) => answer.into_result().map(tonic::Response::new),
            None => Err(tonic::Status::unavailable("no answer")),
        }
    }
}

struct Setup {
    answers: Arc<Answers>,
    engine: Arc<Engine>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let answers = Arc::new(Answers::default());
        let (grpc, http) = common::runtime().block_on(async {
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let grpc_addr = grpc.local_addr().unwrap();
            let remote = Remote(answers.clone());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(AuthorizationServer::new(remote))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
            );
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let http_addr = http.local_addr().unwrap();
            let answers = answers.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = http.accept().await else {
                        continue;
                    };
                    let answers = answers.clone();
                    let service = hyper::service::service_fn(move |_| {
                        let answer = answers.http.lock().unwrap().clone();
                        async move {
                            Ok::<_, Infallible>(match answer {
                                Some(answer) => answer.response(),
                                None => http::Response::new(Full::new(Bytes::new())),
                            })
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                    );
                }
            });
            (grpc_addr, http_addr)
        });
        let engine = Arc::new(Engine::new(authchain_server::default_registry()));
        let configs = Documents::parse("passthrough", &configs(grpc, http), Format::Yaml)
            .unwrap()
            .into_configs();
        common::runtime()
            .block_on(engine.load(&configs))
            .unwrap_or_else(|e| panic!("loading the configs: {e}"));
        Setup { answers, engine }
    })
}

fn configs(grpc: SocketAddr, http: SocketAddr) -> String {
    format!(
        r#"
name: pt-grpc
configs:
- passThroughAuth:
    grpc: {{ address: "{grpc}", connectionTimeout: 1s }}
    config: {{ tenant: acme }}
---
name: pt-http
configs:
- passThroughAuth:
    http:
      url: http://{http}/auth
      connectionTimeout: 1s
      request:
        allowedHeaders: [authorization]
        passThroughState: true
        passThroughBody: true
      response:
        allowedUpstreamHeaders: [x-auth-user, x-user-id]
        allowedUpstreamHeadersToOverwrite: [x-role]
        allowedClientHeadersOnDenied: [www-authenticate, location, set-cookie]
        allowedClientHeadersOnSuccess: [x-ratelimit-remaining, set-cookie]
        readStateFromResponse: true
---
name: pt-both
configs:
- passThroughAuth:
    grpc: {{ address: "{grpc}", connectionTimeout: 1s }}
- passThroughAuth:
    http:
      url: http://{http}/auth
      connectionTimeout: 1s
      request: {{ passThroughState: true }}
      response:
        allowedUpstreamHeaders: [x-auth-user]
        readStateFromResponse: true
"#
    )
}

fuzz_target!(|input: Input| {
    let setup = setup();
    *setup.answers.grpc.lock().unwrap() = Some(input.grpc);
    *setup.answers.http.lock().unwrap() = Some(input.http_answer);
    let config = ["pt-grpc", "pt-http", "pt-both"][usize::from(input.config % 3)];
    if input.via_http {
        let mut request = http::Request::builder().uri(format!("/check:{config}/"));
        for (name, value) in &input.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            return;
        };
        let server = CheckServer::new(setup.engine.clone(), CheckConfig::default());
        common::runtime().block_on(server.check(request, None));
        return;
    }
    let http = HttpRequest {
        method: "GET".into(),
        path: "/api".into(),
        host: "app.example".into(),
        headers: input.headers.into_iter().collect(),
        ..Default::default()
    };
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions: HashMap::from([("config_id".to_owned(), config.to_owned())]),
            ..Default::default()
        }),
    };
    let service = ExtAuthzService::new(setup.engine.clone());
    common::runtime().block_on(service.check_request(check));
});
