//! Properties over arbitrary CheckRequests (in process, no Envoy): any
//! check is answered, never a panic; a chain that allows only `/public/`
//! allows only checks whose canonical path is there; and every spelling of
//! the identity header a client sent is listed for removal in the allow.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p authchain-grpc
//! --test properties`.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, LazyLock};

use authchain_core::path::canonicalize;
use authchain_core::{
    AmbiguousPaths, AuthConfig, Decision, Deny, Engine, Format, PluginRegistry, decide_fn,
    plugin_fn,
};
use authchain_grpc::ExtAuthzService;
use authchain_grpc::envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use authchain_grpc::envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request,
};
use authchain_grpc::envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use proptest::prelude::*;

const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    ":scheme",
    "host",
    "x-user-id",
    "X_User_Id",
    "x.user.id",
    "authorization",
    "x-forwarded-for",
    "",
    "bad name",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("GET".to_owned()),
        Just("/public/x".to_owned()),
        Just("/public/../admin".to_owned()),
        Just("/public/%2e%2e/admin".to_owned()),
        Just("/public%2fx".to_owned()),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(usize, String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            0..NAMES.len(),
            text(),
            proptest::collection::vec(any::<u8>(), 0..8),
        ),
        0..8,
    )
}

fn check(
    method: String,
    path: String,
    host: String,
    headers: Vec<(usize, String, Vec<u8>)>,
    raw: bool,
) -> CheckRequest {
    let mut http = HttpRequest {
        method,
        path,
        host,
        ..Default::default()
    };
    if raw {
        http.header_map = Some(HeaderMap {
            headers: headers
                .into_iter()
                .map(|(name, value, raw_value)| HeaderValue {
                    key: NAMES[name].to_owned(),
                    value,
                    raw_value,
                })
                .collect(),
        });
    } else {
        http.headers = headers
            .into_iter()
            .map(|(name, value, _)| (NAMES[name].to_owned(), value))
            .collect();
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(http),
            }),
            context_extensions: [("config_id".to_owned(), "site".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
    }
}

static SERVICE: LazyLock<ExtAuthzService> = LazyLock::new(service);

fn service() -> ExtAuthzService {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("PublicOnly", |_: serde_json::Value, _| {
        Ok(Arc::new(decide_fn(|req| {
            Ok(if req.path.starts_with("/public/") {
                authchain_core::Allow::new()
                    .set_header(
                        http::HeaderName::from_static("x-user-id"),
                        http::HeaderValue::from_static("alice"),
                    )
                    .into()
            } else {
                Decision::Deny(Deny::new(http::StatusCode::FORBIDDEN))
            })
        })))
    }));
    let engine = Engine::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let yaml =
        "name: site\nstripClientHeaders: [x-user-id]\nconfigs:\n- pluginAuth: {name: PublicOnly}\n";
    runtime
        .block_on(engine.load(&AuthConfig::parse("t.yaml", yaml, Format::Yaml).unwrap()))
        .unwrap();
    ExtAuthzService::new(Arc::new(engine))
}

fn answer(service: &ExtAuthzService, check: CheckRequest) -> CheckResponse {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(service.check_request(check))
}

fn http(check: &CheckRequest) -> &HttpRequest {
    check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .unwrap()
}

/// The path the chain judged: the check's `path`, else its `:path`.
fn sent_path(check: &CheckRequest) -> String {
    let http = http(check);
    if !http.path.is_empty() {
        return http.path.clone();
    }
    // The last `:path` wins, as the translation reads it; a check has
    // either map, never both, here.
    let raw = http
        .header_map
        .iter()
        .flat_map(|m| &m.headers)
        .filter(|h| h.key == ":path")
        .map(|h| {
            if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            }
        });
    let plain = http.headers.get(":path").cloned();
    raw.chain(plain).last().unwrap_or_default()
}

fn identity_spellings_sent(check: &CheckRequest) -> Vec<String> {
    let http = http(check);
    let names = http
        .header_map
        .iter()
        .flat_map(|m| &m.headers)
        .map(|h| h.key.clone())
        .chain(http.headers.keys().cloned());
    names
        .filter(|n| {
            n.len() == "x-user-id".len()
                && n.chars()
                    .map(|c| match c {
                        '_' | '.' => '-',
                        c => c.to_ascii_lowercase(),
                    })
                    .eq("x-user-id".chars())
        })
        .map(|n| n.to_ascii_lowercase())
        .filter(|n| n != "x-user-id")
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_check_is_answered_and_only_public_paths_are_allowed(
        method in text(),
        path in text(),
        host in text(),
        headers in headers(),
        raw in any::<bool>(),
    ) {
        let check = check(method, path, host, headers, raw);
        let judged = sent_path(&check);
        let spellings = identity_spellings_sent(&check);
        let response = answer(&SERVICE, check);
        let code = response.status.as_ref().map_or(0, |s| s.code);
        if code == 0 {
            // An allow: its path was canonical under /public/, whatever
            // its encoding.
            let canonical = canonicalize(&judged, AmbiguousPaths::Reject).unwrap();
            let canonical = canonical.unwrap_or(judged.clone());
            prop_assert!(canonical.starts_with("/public/"), "allowed {judged:?}");
            let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
                panic!("an allow without an OkResponse");
            };
            for spelling in spellings {
                prop_assert!(
                    ok.headers_to_remove.iter().any(|r| r.eq_ignore_ascii_case(&spelling)),
                    "{spelling} is not removed: {:?}",
                    ok.headers_to_remove
                );
            }
        } else {
            prop_assert!(matches!(response.http_response, Some(HttpResponse::DeniedResponse(_)) | None));
        }
    }
}
