//! One table of cases through every transport: the tower layer inside an
//! axum app, the HTTP check server (as Envoy's HTTP service mode calls it,
//! and as a forward-auth proxy calls it) and the gRPC ext_authz service.
//! Policy lives in the chain, so the answers must be the same every way.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use authchain_core::AuthorizationRequest;
use authchain_core::{
    Allow, AuthConfig, Decision, Deny, Engine, Format, PluginRegistry, plugin_fn, service_fn,
};
use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::HttpResponse;
use authchain_http::{AuthChainLayer, CheckConfig, CheckServer, ForwardedHeaders};
use axum::Router;
use axum::body::Body;
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;

const CONFIG: &str = r#"
name: table
configs:
- name: user
  pluginAuth: { name: User }
- name: paths
  pluginAuth: { name: Paths }
booleanExpr: user && paths
"#;

fn registry() -> PluginRegistry {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("User", |_: serde_json::Value, _| {
        Ok(Arc::new(service_fn(|req| {
            let user = match req.header_str("authorization") {
                Some("Bearer t-alice") => Some("alice"),
                Some("Bearer t-bob") => Some("bob"),
                _ => None,
            };
            Box::pin(async move {
                Ok(match user {
                    Some(u) => Allow::new()
                        .set_header(
                            HeaderName::from_static("x-user-id"),
                            HeaderValue::from_static(u),
                        )
                        .into(),
                    None => Deny::new(StatusCode::UNAUTHORIZED)
                        .body("who are you")
                        .into(),
                })
            })
        })))
    }));
    registry.register(plugin_fn("Paths", |_: serde_json::Value, _| {
        Ok(Arc::new(service_fn(|req| {
            let ok = req.method == Method::GET && req.path_only().starts_with("/ratings/")
                || req.path_only() == "/orders" && req.header_str("x-user-id") == Some("bob");
            Box::pin(async move {
                Ok(if ok {
                    Decision::authorized()
                } else {
                    Decision::unauthorized()
                })
            })
        })))
    }));
    registry
}

/// A case: a name, the request, and the status and `x-user-id` the
/// upstream gets.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    user: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "alice reads a rating",
        method: Method::GET,
        path: "/ratings/1",
        headers: &[("authorization", "Bearer t-alice")],
        status: 200,
        user: Some("alice"),
    },
    Case {
        name: "bob reads a rating, with a query",
        method: Method::GET,
        path: "/ratings/2?x=1",
        headers: &[("authorization", "Bearer t-bob")],
        status: 200,
        user: Some("bob"),
    },
    Case {
        name: "alice writes a rating",
        method: Method::POST,
        path: "/ratings/1",
        headers: &[("authorization", "Bearer t-alice")],
        status: 403,
        user: None,
    },
    Case {
        name: "bob reads the orders",
        method: Method::GET,
        path: "/orders",
        headers: &[("authorization", "Bearer t-bob")],
        status: 200,
        user: Some("bob"),
    },
    Case {
        name: "alice reads the orders",
        method: Method::GET,
        path: "/orders",
        headers: &[("authorization", "Bearer t-alice")],
        status: 403,
        user: None,
    },
    Case {
        name: "no token",
        method: Method::GET,
        path: "/ratings/1",
        headers: &[],
        status: 401,
        user: None,
    },
    Case {
        name: "a forged identity alone",
        method: Method::GET,
        path: "/ratings/1",
        headers: &[("x-user-id", "bob")],
        status: 401,
        user: None,
    },
    Case {
        name: "alice forging bob for the orders",
        method: Method::GET,
        path: "/orders",
        headers: &[("authorization", "Bearer t-alice"), ("x-user-id", "bob")],
        status: 403,
        user: None,
    },
    Case {
        name: "a path no rule allows",
        method: Method::GET,
        path: "/secret",
        headers: &[("authorization", "Bearer t-alice")],
        status: 403,
        user: None,
    },
];

async fn engine() -> Arc<Engine> {
    let engine = Arc::new(Engine::new(registry()));
    engine
        .load(&AuthConfig::parse("table.yaml", CONFIG, Format::Yaml).unwrap())
        .await
        .unwrap();
    engine
}

/// Through the layer: status, and the x-user-id the handler saw.
async fn through_layer(engine: Arc<Engine>, case: &Case) -> (u16, Option<String>) {
    let app = Router::new()
        .route(
            "/{*rest}",
            any(|headers: HeaderMap| async move {
                headers
                    .get("x-user-id")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            }),
        )
        .layer(AuthChainLayer::from_engine(engine, "table"));
    let mut builder = Request::builder()
        .method(case.method.clone())
        .uri(case.path);
    for (k, v) in case.headers {
        builder = builder.header(*k, *v);
    }
    let response = app
        .oneshot(builder.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let user =
        (status == 200 && !body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    (status, user)
}

/// Through the check server, as `path` shapes the check.
async fn through_server(
    engine: Arc<Engine>,
    case: &Case,
    forward_auth: bool,
) -> (u16, Option<String>) {
    let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    // Envoy is never trusted: it sends the original as the check itself.
    let config = match forward_auth {
        true => CheckConfig::default().trust(
            ["127.0.0.1/32".parse().unwrap()],
            ForwardedHeaders::XForwarded,
        ),
        false => CheckConfig::default(),
    };
    let server = CheckServer::new(engine, config);
    let mut builder = if forward_auth {
        // nginx / Traefik / Caddy: a GET to the config path, the original in headers.
        Request::get("/check:table")
            .header("x-forwarded-method", case.method.as_str())
            .header("x-forwarded-uri", case.path)
            .header("x-forwarded-host", "app")
    } else {
        // Envoy HTTP service: the original method, the path after the prefix.
        Request::builder()
            .method(case.method.clone())
            .uri(format!("/check:table{}", case.path))
    };
    for (k, v) in case.headers {
        builder = builder.header(*k, *v);
    }
    let response = server
        .check(builder.body(Full::new(Bytes::new())).unwrap(), Some(proxy))
        .await;
    let user = response
        .headers()
        .get("x-user-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), user)
}

/// Through the gRPC ext_authz service, as Envoy would send the check.
async fn through_grpc(engine: Arc<Engine>, case: &Case) -> (u16, Option<String>) {
    let service = ExtAuthzService::new(engine);
    let mut request = AuthorizationRequest::new(case.method.clone(), case.path).with_host("app");
    for (k, v) in case.headers {
        request
            .headers
            .append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let mut check = authchain_grpc::convert::to_check_request(&request, &Default::default());
    if let Some(attributes) = check.attributes.as_mut() {
        attributes
            .context_extensions
            .insert(authchain_grpc::CONFIG_ID_KEY.into(), "table".into());
    }
    let response = service.check_request(check).await;
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(response.status.map(|s| s.code), Some(0));
            let user = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-user-id")
                .map(|h| h.value.clone());
            (200, user)
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            (denied.status.map_or(403, |s| s.code as u16), None)
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn every_transport_gives_the_same_answers() {
    let engine = engine().await;
    for case in CASES {
        let name = case.name;
        let expected = (case.status, case.user.map(str::to_owned));
        assert_eq!(
            through_layer(engine.clone(), case).await,
            expected,
            "layer: case {name}"
        );
        assert_eq!(
            through_server(engine.clone(), case, false).await,
            expected,
            "envoy http service: case {name}"
        );
        assert_eq!(
            through_server(engine.clone(), case, true).await,
            expected,
            "forward auth: case {name}"
        );
        assert_eq!(
            through_grpc(engine.clone(), case).await,
            expected,
            "grpc: case {name}"
        );
    }
}
