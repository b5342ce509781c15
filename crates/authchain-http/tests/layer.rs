//! AuthChainLayer in an axum app and around a plain tower service.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authchain_core::{
    Allow, Answer, AuthConfig, AuthService, AuthorizationRequest, Chain, ChainStep, Decision, Deny,
    Engine, Format, PluginRegistry, UserInfo, async_trait, plugin_fn, service_fn,
};
use authchain_http::{AuthChainLayer, AuthContext};
use axum::Router;
use axum::body::Body;
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

/// Allows requests with `api-key: let-me-in` as alice, sets `x-user-id`,
/// writes state and user info, adds a client response header; denies
/// others with 401 and a challenge. Declares `x-user-id`.
struct ApiKey;

#[async_trait]
impl AuthService for ApiKey {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            if req.header_str("api-key") != Some("let-me-in") {
                return Ok(Deny::new(StatusCode::UNAUTHORIZED)
                    .header(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("ApiKey"),
                    )
                    .body("missing or bad api-key")
                    .into());
            }
            req.state.insert("tier", json!("gold"));
            Ok(Allow::new()
                .set_header(name("x-user-id"), HeaderValue::from_static("alice"))
                .response_header(name("x-auth"), HeaderValue::from_static("ok"))
                .user(UserInfo::new("alice"))
                .metadata("source", json!("apikey"))
                .into())
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        vec![name("x-user-id")]
    }
}

fn chain(steps: Vec<(&str, Arc<dyn AuthService>)>) -> Arc<Chain> {
    let mut builder = Chain::builder("app");
    for (n, s) in steps {
        builder = builder.step(ChainStep::new(n, s));
    }
    Arc::new(builder.build().unwrap())
}

/// An app whose handler answers with what reached it, and counts calls.
fn app(layer: AuthChainLayer, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/{*rest}",
            any(move |auth: Option<AuthContext>, req: Request<Body>| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let user_ids: Vec<_> = parts
                        .headers
                        .get_all("x-user-id")
                        .iter()
                        .map(|v| v.to_str().unwrap().to_owned())
                        .collect();
                    axum::Json(json!({
                        "uri": parts.uri.to_string(),
                        "x-user-id": user_ids,
                        "body": String::from_utf8_lossy(&body),
                        "config": auth.as_ref().map(|a| a.config.to_string()),
                        "user": auth.as_ref().and_then(|a| a.user.as_ref().map(|u| u.user_id.clone())),
                        "state": auth.as_ref().map(|a| a.state.to_json()),
                        "metadata": auth.as_ref().map(|a| Value::Object(a.metadata.clone())),
                    }))
                }
            }),
        )
        .layer(layer)
}

async fn send(app: Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes) {
    let response = app.oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn an_allow_reaches_the_handler_with_mutations_identity_and_state() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(
        AuthChainLayer::new(chain(vec![("key", Arc::new(ApiKey))])),
        calls.clone(),
    );
    let req = Request::get("/orders?limit=5")
        .header("api-key", "let-me-in")
        .header("x-user-id", "admin") // a forgery
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-auth"], "ok", "client response headers are added");
    let seen = json_of(&body);
    assert_eq!(seen["x-user-id"], json!(["alice"]), "the forgery is gone");
    assert_eq!(seen["uri"], "/orders?limit=5");
    assert_eq!(seen["config"], "app");
    assert_eq!(seen["user"], "alice");
    assert_eq!(seen["state"], json!({"tier": "gold"}));
    assert_eq!(seen["metadata"], json!({"source": "apikey"}));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_deny_is_answered_by_the_layer_alone() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(
        AuthChainLayer::new(chain(vec![("key", Arc::new(ApiKey))])),
        calls.clone(),
    );
    let req = Request::get("/orders").body(Body::empty()).unwrap();
    let (status, headers, body) = send(app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[http::header::WWW_AUTHENTICATE], "ApiKey");
    assert_eq!(body, "missing or bad api-key");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A `Host` the chain cannot read as text (obs-text, which hyper takes)
/// is a 400 before any step, as on the check server: judged as no host,
/// it would match no host rule while the app reads its bytes.
#[tokio::test]
async fn a_host_that_is_not_visible_ascii_is_a_400() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(
        AuthChainLayer::new(chain(vec![(
            "allow",
            Arc::new(authchain_core::decide_fn(|_| Ok(Decision::authorized()))),
        )])),
        calls.clone(),
    );
    let host = HeaderValue::from_bytes(b"admin.example\x80").unwrap();
    let req = Request::get("/x").header("host", host).body(Body::empty());
    let (status, _, _) = send(app, req.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn query_rewrites_reach_the_handler() {
    let strip_token = service_fn(|_| {
        Box::pin(async {
            Ok(Allow::new()
                .remove_query_parameter("token")
                .set_query_parameter("via", "authchain")
                .into())
        })
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(
        AuthChainLayer::new(chain(vec![("q", Arc::new(strip_token))])),
        calls,
    );
    let req = Request::get("/p?token=secret&a=1")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app.clone(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["uri"], "/p?a=1&via=authchain");
    // The client's other spellings of the names go too: an app that
    // decodes the query reads `tok%65n` as `token`.
    let req = Request::get("/p?tok%65n=secret&v%69a=evil&a=1")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["uri"], "/p?via=authchain&a=1");
}

/// A query change that would alter the URL's structure (`&`, `#`) is the
/// step's error, which fails closed whatever its failureModeAllow: the
/// layer never hands the app a query the step did not mean.
#[tokio::test]
async fn a_query_change_that_would_reshape_the_url_is_a_deny() {
    for value in ["bob&role=admin", "x#y", "a b"] {
        let sets = service_fn(move |_| {
            Box::pin(async move { Ok(Allow::new().set_query_parameter("user", value).into()) })
        });
        let chain = Chain::builder("app")
            .step(ChainStep::new("q", Arc::new(sets)).failure_mode_allow(true))
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let app = app(AuthChainLayer::new(Arc::new(chain)), calls.clone());
        let req = Request::get("/p").body(Body::empty()).unwrap();
        let (status, _, _) = send(app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{value:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{value:?}");
    }
}

#[tokio::test]
async fn buffered_bodies_reach_steps_and_handler_and_large_ones_are_413() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let needs_hello = service_fn(move |req| {
        let body = req.body.clone();
        *s.lock().unwrap() = body.clone();
        Box::pin(async move {
            Ok(match body {
                Some(b) if b.starts_with(b"hello") => Decision::authorized(),
                _ => Decision::unauthorized(),
            })
        })
    });
    let layer = AuthChainLayer::new(chain(vec![("body", Arc::new(needs_hello))])).buffer_body(16);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer, calls.clone());

    let req = Request::post("/upload")
        .body(Body::from("hello world"))
        .unwrap();
    let (status, _, body) = send(app.clone(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["body"], "hello world");
    assert_eq!(seen.lock().unwrap().as_deref(), Some(&b"hello world"[..]));

    let req = Request::post("/upload")
        .body(Body::from("x".repeat(17)))
        .unwrap();
    let (status, _, _) = send(app.clone(), req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no step and no handler for an oversized body"
    );

    // Without buffering, steps see no body and the handler still gets it.
    *seen.lock().unwrap() = Some(Bytes::from_static(b"stale"));
    let s = seen.clone();
    let records = service_fn(move |req| {
        *s.lock().unwrap() = req.body.clone();
        Box::pin(async { Ok(Decision::authorized()) })
    });
    let app = app_with(AuthChainLayer::new(chain(vec![("r", Arc::new(records))])));
    let req = Request::post("/upload")
        .body(Body::from("x".repeat(100)))
        .unwrap();
    let (status, _, body) = send(app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["body"], "x".repeat(100));
    assert_eq!(*seen.lock().unwrap(), None);
}

fn app_with(layer: AuthChainLayer) -> Router {
    app(layer, Arc::new(AtomicUsize::new(0)))
}

#[tokio::test]
async fn the_peer_address_comes_from_connect_info() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let records = service_fn(move |req| {
        *s.lock().unwrap() = req.source.address;
        Box::pin(async { Ok(Decision::authorized()) })
    });
    let app = app_with(AuthChainLayer::new(chain(vec![("r", Arc::new(records))])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let me = client.local_addr().unwrap();
    client
        .write_all(b"GET /who HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    client.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(*seen.lock().unwrap(), Some(me));
    server.abort();
}

/// A buffered body is refused at once when its length is over the limit
/// (no `100 Continue`, nothing read), and with 408 when it comes too
/// slowly: no step runs, and the client holds nothing past the timeout.
#[tokio::test]
async fn a_body_too_long_or_too_slow_is_refused_before_any_step() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let calls = Arc::new(AtomicUsize::new(0));
    let layer = AuthChainLayer::new(chain(vec![("key", Arc::new(ApiKey))]))
        .buffer_body(1024)
        .body_timeout(std::time::Duration::from_millis(200));
    let app = app(layer, calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let exchange = |request: &'static [u8]| async move {
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let mut response = vec![0; 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read(&mut response),
        )
        .await
        .expect("an answer before the client gives up")
        .unwrap();
        String::from_utf8_lossy(&response[..n]).into_owned()
    };
    let response = exchange(
        b"POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: 1000000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let response =
        exchange(b"POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: 10\r\n\r\nhel").await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.abort();
}

#[derive(serde::Deserialize)]
struct PathConfig {
    allow: String,
}

#[tokio::test]
async fn with_an_engine_each_request_uses_the_current_generation() {
    let mut registry = PluginRegistry::new();
    registry.register(plugin_fn("OnlyPath", |c: PathConfig, _| {
        Ok(Arc::new(service_fn(move |req| {
            let ok = req.path_only() == c.allow;
            Box::pin(async move {
                Ok(if ok {
                    Decision::authorized()
                } else {
                    Decision::unauthorized()
                })
            })
        })))
    }));
    let engine = Arc::new(Engine::new(registry));
    let load = |path: &str| {
        let text = format!(
            "name: site\nconfigs:\n- pluginAuth: {{name: OnlyPath, config: {{allow: {path}}}}}\n"
        );
        AuthConfig::parse("site.yaml", &text, Format::Yaml).unwrap()
    };
    let app = app_with(AuthChainLayer::from_engine(engine.clone(), "site"));
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();

    // (case, the path the config loaded allows, what /ratings/1 and
    // /ratings/2 get then)
    let generations = [
        // Before any config: fail closed.
        ("no config yet", None, [403, 403]),
        ("the first", Some("/ratings/1"), [200, 403]),
        ("the second", Some("/ratings/2"), [403, 200]),
    ];
    for (name, allowed, want) in generations {
        if let Some(allowed) = allowed {
            engine.load(&load(allowed)).await.unwrap();
        }
        let mut got = [0; 2];
        for (status, path) in got.iter_mut().zip(["/ratings/1", "/ratings/2"]) {
            *status = send(app.clone(), get(path)).await.0.as_u16();
        }
        assert_eq!(got, want, "case {name}");
    }
}

#[tokio::test]
async fn a_plain_tower_service_works_too() {
    let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let user = req.headers().get("x-user-id").cloned();
        let mut response = http::Response::new(Full::new(Bytes::from_static(b"inner")));
        if let Some(user) = user {
            response.headers_mut().insert("x-echo-user", user);
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let service = tower::ServiceBuilder::new()
        .layer(AuthChainLayer::new(chain(vec![("key", Arc::new(ApiKey))])))
        .service(inner);
    let req = Request::get("/")
        .header("api-key", "let-me-in")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-user"], "alice");
    let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_handler_asking_for_auth_context_without_the_layer_is_a_500() {
    let app = Router::new().route("/", any(|_: AuthContext| async { "unreachable" }));
    let (status, _, _) = send(app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

/// Waits (a timer) before handing on to [`ApiKey`]: a chain that cannot
/// decide at once.
fn slow_api_key() -> Arc<dyn AuthService> {
    Arc::new(service_fn(|req| {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            ApiKey.authorize(req).await
        })
    }))
}

#[tokio::test]
async fn a_chain_that_waits_answers_as_one_that_decides_at_once() {
    for (label, step) in [
        ("at once", Arc::new(ApiKey) as Arc<dyn AuthService>),
        ("waiting", slow_api_key()),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = app(
            AuthChainLayer::new(chain(vec![("key", step)])),
            calls.clone(),
        );
        let req = Request::get("/x")
            .header("api-key", "let-me-in")
            .header("x-user-id", "mallory")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(app.clone(), req).await;
        assert_eq!(status, StatusCode::OK, "{label}");
        assert_eq!(headers["x-auth"], "ok", "{label}");
        let seen = json_of(&body);
        assert_eq!(seen["x-user-id"], json!(["alice"]), "{label}");
        assert_eq!(seen["state"], json!({"tier": "gold"}), "{label}");
        let (status, headers, _) = send(app, Request::get("/x").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
        assert_eq!(headers[http::header::WWW_AUTHENTICATE], "ApiKey", "{label}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{label}");
    }
}

#[test]
fn a_call_made_outside_a_runtime_runs_its_chain_when_awaited() {
    // The layer tries the chain in `call` only inside a tokio runtime (a
    // waiting step needs its timers): here it runs when the future does.
    let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let user = req.headers().get("x-user-id").cloned();
        let mut response = http::Response::new(Full::new(Bytes::new()));
        if let Some(user) = user {
            response.headers_mut().insert("x-echo-user", user);
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut service = AuthChainLayer::new(chain(vec![("key", slow_api_key())])).layer(inner);
    let req = Request::get("/")
        .header("api-key", "let-me-in")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let future = tower::Service::call(&mut service, req);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let response = runtime.block_on(future).unwrap();
    assert_eq!(response.headers()["x-echo-user"], "alice");
    assert_eq!(response.headers()["x-auth"], "ok");
}

/// What a step saw of a request besides its headers.
fn seen_of(req: &AuthorizationRequest) -> String {
    format!(
        "{} {} host={:?} id={:?} body={:?} state={:?} marked={}",
        req.method,
        req.path,
        req.host,
        req.id,
        req.body,
        req.state.to_json(),
        req.extensions.get::<Marker>().is_some(),
    )
}

#[derive(Clone)]
struct Marker;

#[tokio::test]
async fn one_request_leaves_nothing_for_the_next() {
    // The layer reads each request into the spare its thread's last
    // request left: what the chain sees of the next one must be all its
    // own, after an allow, a deny and a request whose body was buffered.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let step = authchain_core::decide_fn(move |req| {
        record.lock().unwrap().push(seen_of(req));
        req.state.insert("from", json!(req.path.clone()));
        req.extensions.insert(Marker);
        Ok(if req.path.starts_with("/deny") {
            Decision::unauthorized()
        } else {
            Decision::authorized()
        })
    });
    let chain = chain(vec![("record", Arc::new(step))]);
    for (layer, body) in [
        (AuthChainLayer::new(chain.clone()), "None"),
        (
            AuthChainLayer::new(chain).buffer_body(1024),
            "Some(b\"data\")",
        ),
    ] {
        seen.lock().unwrap().clear();
        let app = app(layer, Arc::new(AtomicUsize::new(0)));
        for (path, host, id) in [
            ("/one?a=1", "one.example", "id-1"),
            ("/deny", "deny.example", "id-2"),
            ("/two", "", ""),
        ] {
            let mut req = Request::post(path);
            if !host.is_empty() {
                req = req.header("host", host).header("x-request-id", id);
            }
            let (_, _, body) = send(app.clone(), req.body(Body::from("data")).unwrap()).await;
            if path == "/two" {
                assert_eq!(json_of(&body)["state"], json!({"from": "/two"}));
            }
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!(
                    "POST /one?a=1 host=\"one.example\" id=\"id-1\" body={body} state=Object {{}} marked=false"
                ),
                format!(
                    "POST /deny host=\"deny.example\" id=\"id-2\" body={body} state=Object {{}} marked=false"
                ),
                format!("POST /two host=\"\" id=\"\" body={body} state=Object {{}} marked=false"),
            ]
        );
    }
}
