//! What a client or a remote controls cannot get a request past the chain:
//! identity headers in other spellings, paths that mean something else
//! upstream, denies with a success status.

use std::sync::{Arc, Mutex};

use authchain_core::{
    AmbiguousPaths, Attribute, AuthConfig, AuthService, CacheSettings, Chain, ChainStep, Decision,
    Deny, Engine, Format, PluginRegistry, decide_fn, plugin_fn,
};
use http::{HeaderName, StatusCode};

use crate::support::*;

/// A step that records the path it saw and allows.
fn recording_path(seen: Arc<Mutex<Vec<String>>>) -> Arc<dyn AuthService> {
    Arc::new(decide_fn(move |req| {
        seen.lock().unwrap().push(req.path.clone());
        Ok(Decision::authorized())
    }))
}

#[tokio::test]
async fn identity_headers_are_stripped_in_every_spelling() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let saw = seen.clone();
    let step = decide_fn(move |req| {
        let mut names: Vec<String> = req.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        *saw.lock().unwrap() = names;
        Ok(Decision::authorized())
    });
    let long = "x-a-b-c-d-e-f-g"; // past the spellings listed ahead
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", Arc::new(step)))
        .strip_client_header(name("x-user-id"))
        .strip_client_header(HeaderName::from_static(long))
        .build()
        .unwrap();
    let mut req = get("/");
    for forged in [
        "x-user-id",
        "x_user_id",
        "X_User-Id",
        "x-user_id",
        "x~user.id",
        "x_a-b_c-d_e-f_g",
        "x-other",
    ] {
        req.headers.append(
            HeaderName::from_bytes(forged.as_bytes()).unwrap(),
            value("admin"),
        );
    }
    let Decision::Allow(allow) = chain.authorize(&mut req).await else {
        panic!()
    };
    assert_eq!(*seen.lock().unwrap(), ["x-other"], "the steps see none");
    let removed: Vec<&str> = allow
        .headers_to_remove
        .iter()
        .map(HeaderName::as_str)
        .collect();
    for spelling in [
        "x-user-id",
        "x_user_id",
        "x_user-id",
        "x-user_id",
        "x~user.id",
    ] {
        assert!(removed.contains(&spelling), "{spelling}: {removed:?}");
    }
    for spelling in [long, "x_a_b_c_d_e_f_g", "x_a-b_c-d_e-f_g"] {
        assert!(removed.contains(&spelling), "{spelling}: {removed:?}");
    }
    assert!(!removed.contains(&"x-other"));
}

#[tokio::test]
async fn steps_see_the_canonical_path() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", recording_path(seen.clone())))
        .build()
        .unwrap();
    let cases = [
        ("/public///x?x=../y", Some("/public/x?x=../y")),
        ("//public///x", None),
        ("/%70ublic/x", Some("/public/x")),
        ("/public/../secret", None),
        ("/public/%2e%2e/secret", None),
        ("/public/.%2E/secret?x=../y", None),
        ("//public///./x", None),
        ("/public/..%2fsecret", None),
        ("/public/..%5Csecret", None),
        ("/public\\..\\secret", None),
        ("/public/%00", None),
        ("/..", None),
        ("/public/../../secret", None),
        ("", None),
        ("public", None),
        ("/%zz", None),
    ];
    for (path, canonical) in cases {
        seen.lock().unwrap().clear();
        let mut req = get(path);
        let decision = chain.authorize(&mut req).await;
        match canonical {
            Some(canonical) => {
                assert!(decision.is_allow(), "{path}");
                assert_eq!(*seen.lock().unwrap(), [canonical], "{path}");
                assert_eq!(req.path, canonical, "the request keeps it");
            }
            None => {
                let deny = decision.as_deny().expect("a deny");
                assert_eq!(deny.status, StatusCode::BAD_REQUEST, "{path}");
                assert!(seen.lock().unwrap().is_empty(), "no step ran for {path}");
                let text = String::from_utf8_lossy(&deny.body);
                assert!(path.is_empty() || !text.contains(path), "{text}");
            }
        }
    }
}

/// A method servers read differently is a 400 before any step: a
/// standard method in another case, or an override header naming another
/// method. An extension method, and an override that names the method
/// itself, go on.
#[tokio::test]
async fn steps_see_no_method_that_servers_read_differently() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", recording_path(seen.clone())))
        .build()
        .unwrap();
    let lenient = Chain::builder("c")
        .step(ChainStep::new("s", recording_path(seen.clone())))
        .ambiguous_paths(AmbiguousPaths::Keep)
        .build()
        .unwrap();
    /// (method, path, header, refused)
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
        bool,
    );
    let cases: &[Case] = &[
        ("delete", "/x", None, true),
        ("Get", "/x", None, true),
        ("pAtCh", "/x", None, true),
        ("DELETE", "/x", None, false),
        ("PROPFIND", "/x", None, false),
        ("purge", "/x", None, false),
        (
            "POST",
            "/x",
            Some(("x-http-method-override", "DELETE")),
            true,
        ),
        ("POST", "/x", Some(("X-HTTP-Method", "delete")), true),
        ("GET", "/x", Some(("x-method-override", "")), true),
        (
            "POST",
            "/x",
            Some(("x_http_method_override", "DELETE")),
            true,
        ),
        ("POST", "/x", Some(("x-http_method", "PUT")), true),
        ("POST", "/x", Some(("x-method-override", "post")), false),
        (
            "POST",
            "/x",
            Some(("x-http-method-override", "POST")),
            false,
        ),
        ("POST", "/x?_method=DELETE", None, true),
        ("POST", "/x?a=1&%5Fmethod=put", None, true),
        ("GET", "/x?_method", None, true),
        ("POST", "/x?.method=DELETE", None, true),
        ("POST", "/x?+_method=DELETE", None, true),
        ("POST", "/x?_method%00x=DELETE", None, true),
        ("POST", "/x?_method=POST", None, false),
        ("POST", "/x?my_method=DELETE", None, false),
    ];
    for &(method, path, header, refused) in cases {
        let request = || {
            let mut req = get(path);
            req.method = http::Method::from_bytes(method.as_bytes()).unwrap();
            if let Some((name, value)) = header {
                req.headers.append(
                    HeaderName::try_from(name).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
            req
        };
        seen.lock().unwrap().clear();
        let decision = chain.authorize(&mut request()).await;
        match refused {
            true => {
                let deny = decision.as_deny().expect("a deny");
                assert_eq!(
                    deny.status,
                    StatusCode::BAD_REQUEST,
                    "{method} {path} {header:?}"
                );
                assert!(String::from_utf8_lossy(&deny.body).starts_with("ambiguous method"));
                assert!(
                    seen.lock().unwrap().is_empty(),
                    "{method} {path} {header:?}"
                );
            }
            false => assert!(decision.is_allow(), "{method} {path} {header:?}"),
        }
        // `allowAmbiguousPaths` lets it through.
        assert!(lenient.authorize(&mut request()).await.is_allow());
    }
}

/// A request whose `X-Forwarded-Host` or `Forwarded` names another host
/// than the one judged is a 400 before any step; the same host (any case,
/// quoted, repeated) goes on.
#[tokio::test]
async fn steps_see_no_host_that_an_app_reads_differently() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", recording_path(seen.clone())))
        .build()
        .unwrap();
    let cases: &[(&str, &str, bool)] = &[
        ("x-forwarded-host", "admin.example", true),
        ("x-forwarded-host", "app.example, admin.example", true),
        ("x-forwarded-host", "app.example:8443", true),
        ("x_forwarded_host", "admin.example", true),
        ("x-forwarded_host", "admin.example", true),
        ("x.forwarded.host", "admin.example", true),
        ("x_forwarded_host", "app.example", false),
        ("forwarded", "for=192.0.2.1;host=admin.example", true),
        ("forwarded", "host=app.example, host=admin.example", true),
        ("forwarded", "HOST=\"admin.example\"", true),
        ("x-forwarded-host", "APP.example", false),
        ("x-forwarded-host", "app.example, app.example", false),
        (
            "forwarded",
            "for=192.0.2.1;host=\"app.example\";proto=https",
            false,
        ),
        ("forwarded", "for=192.0.2.1", false),
    ];
    for &(name, value, refused) in cases {
        let mut req = get("/x");
        req.host = "app.example".into();
        req.headers.append(
            HeaderName::from_static(name),
            http::HeaderValue::from_str(value).unwrap(),
        );
        let decision = chain.authorize(&mut req).await;
        match refused {
            true => {
                let deny = decision.as_deny().expect("a deny");
                assert_eq!(deny.status, StatusCode::BAD_REQUEST, "{name}: {value}");
                assert!(String::from_utf8_lossy(&deny.body).starts_with("ambiguous host"));
            }
            false => assert!(decision.is_allow(), "{name}: {value}"),
        }
    }
    // DNS's root dot: the same host to nginx and Traefik, another virtual
    // host to Envoy.
    for (host, refused) in [
        ("app.example.", true),
        ("app.example.:8443", true),
        ("x@admin.example", true),
        ("x@app.example:8443", true),
        // A "port" that is not digits: the name to Go's proxies and to
        // apps that cut at `:`, and no name a rule matches.
        ("app.example:x", true),
        ("app.example:80x", true),
        ("app.example.:x", true),
        ("app.example:8443:1", true),
        ("[::1]x", true),
        ("[::1]:x", true),
        ("[::1", true),
        ("[app.example]", true),
        ("[%61pp.example]:80", true),
        ("[]", true),
        ("[::1%eth0]", true),
        ("[fe80::1%25eth0]:8443", false),
        ("APP.example:8443", false),
        ("app.example/x", true),
        ("app.example\\x", true),
        ("app example", true),
        ("app.example,admin.example", true),
        ("admin%2eexample", true),
        ("app.example", false),
        ("app.example:", true),
        ("[::1]:", true),
        ("app.example:8443", false),
        ("[::1]:8443", false),
        ("[::1]", false),
        ("", false),
    ] {
        let mut req = get("/x");
        req.host = host.into();
        let decision = chain.authorize(&mut req).await;
        assert_eq!(decision.is_allow(), !refused, "{host}");
    }
}

#[tokio::test]
async fn a_config_may_let_ambiguous_paths_through() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", recording_path(seen.clone())))
        .ambiguous_paths(AmbiguousPaths::Keep)
        .build()
        .unwrap();
    for (path, canonical) in [
        ("/a/..%2fb", "/a/..%2Fb"),
        ("/a/../../b", "/b"),
        ("/a%5cb", "/a%5Cb"),
    ] {
        assert!(chain.authorize(&mut get(path)).await.is_allow(), "{path}");
        assert_eq!(seen.lock().unwrap().pop().unwrap(), canonical);
    }

    let mut registry = PluginRegistry::new();
    let paths = seen.clone();
    registry.register(plugin_fn("Record", move |_: serde_json::Value, _| {
        Ok(recording_path(paths.clone()))
    }));
    let engine = Engine::new(registry);
    let yaml = "name: keep\nallowAmbiguousPaths: true\nconfigs: [{ pluginAuth: { name: Record } }]\n---\nname: strict\nconfigs: [{ pluginAuth: { name: Record } }]";
    engine
        .load(&AuthConfig::parse("auth.yaml", yaml, Format::Yaml).unwrap())
        .await
        .unwrap();
    let generation = engine.current();
    let keep = generation.chain("keep").unwrap();
    assert!(keep.authorize(&mut get("/a%2fb")).await.is_allow());
    let strict = generation.chain("strict").unwrap();
    let decision = strict.authorize(&mut get("/a%2fb")).await;
    assert_eq!(decision.as_deny().unwrap().status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_deny_is_never_a_success() {
    for (status, answered) in [
        (StatusCode::NO_CONTENT, StatusCode::FORBIDDEN),
        (StatusCode::OK, StatusCode::FORBIDDEN),
        (StatusCode::CONTINUE, StatusCode::FORBIDDEN),
        (StatusCode::NOT_MODIFIED, StatusCode::FORBIDDEN),
        (StatusCode::MULTIPLE_CHOICES, StatusCode::FORBIDDEN),
        (StatusCode::FOUND, StatusCode::FOUND),
        (
            StatusCode::PERMANENT_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
        ),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let deny = Deny::new(status).body("nope");
        let (chain, metrics) = build_with_metrics(
            Chain::builder("c").step(ChainStep::new("remote", allowing_nothing(deny))),
        );
        let decision = chain.authorize(&mut get("/")).await;
        let deny = decision.as_deny().expect("still a deny");
        assert_eq!(deny.status, answered, "{status}");
        let replaced = Counters::take(&metrics).get("authchain_deny_status_replaced_total", &[]);
        assert_eq!(replaced, u64::from(status != answered), "{status}");
    }

    for status in [
        StatusCode::OK,
        StatusCode::NO_CONTENT,
        StatusCode::CONTINUE,
        StatusCode::NOT_MODIFIED,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
    ] {
        let error = Chain::builder("c")
            .step(ChainStep::new(
                "s",
                allowing_nothing(Deny::new(StatusCode::FORBIDDEN)),
            ))
            .status_on_error(status)
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("statusOnError"), "{error}");
    }
    for status in [200, 204, 100, 600] {
        let yaml =
            format!("name: c\nstatusOnError: {status}\nconfigs: [{{ pluginAuth: {{ name: X }} }}]");
        let mut registry = PluginRegistry::new();
        registry.register(plugin_fn("X", |_: serde_json::Value, _| {
            Ok(Arc::new(decide_fn(|_| Ok(Decision::authorized()))) as Arc<dyn AuthService>)
        }));
        let configs = AuthConfig::parse("auth.yaml", &yaml, Format::Yaml).unwrap();
        let error = Engine::new(registry).load(&configs).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("statusOnError: expected an error's deny status, 400 to 599"),
            "{error}"
        );
    }
}

/// A step that answers `deny`.
fn allowing_nothing(deny: Deny) -> Arc<dyn AuthService> {
    Arc::new(decide_fn(move |_| Ok(Decision::Deny(deny.clone()))))
}

#[tokio::test]
async fn a_remembered_answer_strips_this_request_s_spellings_too() {
    let long = HeaderName::from_static("x-a-b-c-d-e-f-user");
    let chain = Chain::builder("c")
        .step(ChainStep::new(
            "s",
            Arc::new(decide_fn(|_| Ok(Decision::authorized()))),
        ))
        .strip_client_header(long.clone())
        .cache(CacheSettings::new(vec![Attribute::Path]).trust_key(true))
        .build()
        .unwrap();
    let forged = |spelling: &'static str| {
        get("/x").with_header(HeaderName::from_static(spelling), value("admin"))
    };
    // The first request is remembered; the second, with a spelling the
    // chain lists no removal for ahead, is answered from the cache.
    for spelling in ["x-a_b-c-d-e-f-user", "x-a-b_c-d-e-f-user"] {
        let mut req = forged(spelling);
        let Decision::Allow(allow) = chain.authorize(&mut req).await else {
            panic!()
        };
        assert!(
            req.headers.is_empty(),
            "{spelling} stripped: {:?}",
            req.headers
        );
        let removed: Vec<&str> = allow
            .headers_to_remove
            .iter()
            .map(HeaderName::as_str)
            .collect();
        assert!(removed.contains(&spelling), "{spelling}: {removed:?}");
    }
    assert_eq!(chain.cached_entries(), 1);
}

/// A step that panics where `at` says: before deciding, while deciding
/// at once, or after it waited.
struct Panics {
    at: &'static str,
}

impl AuthService for Panics {
    fn authorize<'a>(
        &'a self,
        _: &'a mut authchain_core::AuthorizationRequest,
    ) -> authchain_core::Answer<'a> {
        if self.at == "now" {
            panic!("secret-in-panic");
        }
        authchain_core::Answer::wait(async move {
            if self.at == "later" {
                tokio::task::yield_now().await;
            }
            panic!("secret-in-panic")
        })
    }
}

/// A panic is the step's error, and fails closed even under
/// `failureModeAllow`: the step checked nothing, and a client that can
/// make it panic would otherwise have a way in.
#[tokio::test]
async fn a_panicking_step_is_that_step_s_error() {
    for (at, open) in [
        ("now", false),
        ("first poll", false),
        ("later", false),
        ("now", true),
        ("later", true),
    ] {
        let (chain, metrics) = build_with_metrics(
            Chain::builder("c")
                .step(ChainStep::new("plugin", Arc::new(Panics { at })).failure_mode_allow(open))
                .status_on_error(StatusCode::SERVICE_UNAVAILABLE),
        );
        for _ in 0..2 {
            let decision = chain.authorize(&mut get("/")).await;
            let deny = decision.as_deny().expect("fails closed");
            assert_eq!(deny.status, StatusCode::SERVICE_UNAVAILABLE, "{at}");
            assert!(!String::from_utf8_lossy(&deny.body).contains("secret"));
        }
        let labels = [("step", "plugin"), ("result", "error")];
        let errors = Counters::take(&metrics).get("authchain_step_decisions_total", &labels);
        assert_eq!(errors, 2, "{at}: counted as the step's errors");
    }
}

#[tokio::test]
async fn a_failure_s_answer_is_never_remembered() {
    // A step that fails the first `failures` times it runs, then allows.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flaky = |failures: usize| {
        let runs = runs.clone();
        Arc::new(decide_fn(move |_| {
            let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match n < failures {
                true => Err(authchain_core::Error::step("remote down")),
                false => Ok(Decision::authorized()),
            }
        })) as Arc<dyn AuthService>
    };
    let cache = || {
        CacheSettings::new(vec![Attribute::Path])
            .trust_key(true)
            .cache_denies(true)
    };
    // Fail-open: the allow passes marked, and is not kept.
    let chain = Chain::builder("open")
        .step(ChainStep::new("remote", flaky(1)).failure_mode_allow(true))
        .cache(cache())
        .build()
        .unwrap();
    assert!(chain.authorize(&mut get("/x")).await.is_allow());
    assert_eq!(chain.cached_entries(), 0, "a fail-open allow is not kept");
    assert!(chain.authorize(&mut get("/x")).await.is_allow());
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "ran again"
    );

    // Fail closed, with cacheDenies: the error's deny is not kept either.
    runs.store(0, std::sync::atomic::Ordering::SeqCst);
    let chain = Chain::builder("closed")
        .step(ChainStep::new("remote", flaky(1)))
        .cache(cache())
        .build()
        .unwrap();
    assert!(!chain.authorize(&mut get("/x")).await.is_allow());
    assert_eq!(chain.cached_entries(), 0, "an error's deny is not kept");
    assert!(
        chain.authorize(&mut get("/x")).await.is_allow(),
        "recovered"
    );
    // A real answer is kept.
    assert!(chain.authorize(&mut get("/x")).await.is_allow());
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_remembered_allow_never_outlives_its_credential() {
    use std::time::{Duration, SystemTime};
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chain = |expires: SystemTime| {
        let runs = runs.clone();
        Chain::builder("c")
            .step(ChainStep::new(
                "token",
                Arc::new(decide_fn(move |_| {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(authchain_core::Allow::new().expires_at(expires).into())
                })),
            ))
            .cache(
                CacheSettings::new(vec![Attribute::Path])
                    .trust_key(true)
                    .ttl(Duration::from_secs(3600)),
            )
            .build()
            .unwrap()
    };
    let runs_now = || runs.load(std::sync::atomic::Ordering::SeqCst);
    // A credential good for an hour more: remembered.
    let fresh = chain(SystemTime::now() + Duration::from_secs(3600));
    for _ in 0..3 {
        assert!(fresh.authorize(&mut get("/x")).await.is_allow());
    }
    assert_eq!(runs_now(), 1);
    // One that has expired (the TTL is an hour): asked again every time.
    let expired = chain(SystemTime::now() - Duration::from_secs(1));
    for _ in 0..3 {
        assert!(expired.authorize(&mut get("/x")).await.is_allow());
    }
    assert_eq!(runs_now(), 4);
}

#[tokio::test]
async fn the_user_id_header_names_only_the_allowed_user() {
    use authchain_core::{Allow, UserInfo};
    // A step that allows as the user the request's `x-who` names, or
    // allows with no user, or denies.
    let step = decide_fn(|req| {
        Ok(match req.header_str("x-who") {
            Some("nobody") => Decision::authorized(),
            Some("deny") => Deny::new(StatusCode::UNAUTHORIZED).into(),
            Some("newline") => Allow::new().user(UserInfo::new("bad\nid")).into(),
            Some("spaced") => Allow::new().user(UserInfo::new(" admin")).into(),
            Some(who) => Allow::new().user(UserInfo::new(who)).into(),
            None => Decision::authorized(),
        })
    });
    let chain = Chain::builder("c")
        .step(ChainStep::new("s", Arc::new(step)))
        .user_id_header(name("x-user-id"))
        .build()
        .unwrap();
    let cases = [
        ("alice", Some("alice"), 200),
        ("nobody", None, 200),
        ("deny", None, 401),
        // A user id that cannot be a header value fails the run, as does
        // one the app's HTTP parser would read as another (` admin`).
        ("newline", None, 403),
        ("spaced", None, 403),
    ];
    for (who, named, status) in cases {
        for forwarded in [false, true] {
            let mut req = get("/");
            req.headers.insert("x-who", value(who));
            // The client's claims, in two spellings.
            req.headers.append("x-user-id", value("admin"));
            req.headers.append(name("x_user_id"), value("admin"));
            let d = if forwarded {
                authchain_core::transport::authorize_forwarded(&chain, &mut req).await
            } else {
                chain.authorize(&mut req).await
            };
            let got = match &d {
                Decision::Allow(_) => 200,
                Decision::Deny(deny) => deny.status.as_u16(),
            };
            assert_eq!(got, status, "case {who}, forwarded {forwarded}");
            let upstream: Vec<&str> = req
                .headers
                .get_all("x-user-id")
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(
                upstream,
                named.into_iter().collect::<Vec<_>>(),
                "case {who}"
            );
            assert!(req.headers.get("x_user_id").is_none(), "case {who}");
            if let (Decision::Allow(allow), false) = (&d, forwarded) {
                let listed: Vec<_> = allow
                    .headers
                    .iter()
                    .filter(|m| m.name == "x-user-id")
                    .map(|m| m.value.to_str().unwrap())
                    .collect();
                assert_eq!(listed, named.into_iter().collect::<Vec<_>>(), "case {who}");
                assert!(
                    allow.headers_to_remove.iter().any(|h| h == "x_user_id"),
                    "case {who}"
                );
            }
        }
    }
}

#[test]
fn the_user_id_header_cannot_be_trusted() {
    let e = Chain::builder("c")
        .step(ChainStep::new(
            "s",
            Arc::new(decide_fn(|_| Ok(Decision::authorized()))),
        ))
        .user_id_header(name("x-user-id"))
        .trust_client_header(name("x-user-id"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("trustClientHeaders"), "{e}");
}

#[test]
fn a_header_both_stripped_and_trusted_is_a_config_error() {
    let e = Chain::builder("c")
        .step(ChainStep::new(
            "s",
            Arc::new(decide_fn(|_| Ok(Decision::authorized()))),
        ))
        .strip_client_header(name("x-user-id"))
        .trust_client_header(name("x-user-id"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("both stripped and trusted"), "{e}");
}

/// No decision sets or removes a connection or framing header: named in
/// the config (`userIdHeader`, `stripClientHeaders`, a step's identity
/// headers) it is an error; in a step's answer it is left out.
#[tokio::test]
async fn framing_headers_are_neither_set_nor_removed() {
    use authchain_core::{Allow, HeaderMutation};
    let allow = || ChainStep::new("ok", Arc::new(decide_fn(|_| Ok(Decision::authorized()))));
    for (builder, place) in [
        (
            Chain::builder("c").user_id_header(http::header::CONTENT_LENGTH),
            "userIdHeader",
        ),
        (
            Chain::builder("c").strip_client_header(http::header::TRANSFER_ENCODING),
            "stripClientHeaders",
        ),
    ] {
        let e = builder.step(allow()).build().unwrap_err();
        assert_eq!(e.place(), Some(place), "{e}");
        assert!(e.to_string().contains("framing"), "{e}");
    }
    let framing = Chain::builder("c")
        .step(ChainStep::new(
            "framing",
            Arc::new(decide_fn(|_| {
                let mut allow = Allow::new()
                    .set_header(http::header::CONTENT_LENGTH, "0".parse().unwrap())
                    .set_header(
                        http::HeaderName::from_static("x-kept"),
                        "1".parse().unwrap(),
                    );
                allow.headers_to_remove.push(http::header::CONTENT_LENGTH);
                allow.response_headers.push(HeaderMutation::new(
                    http::header::CONNECTION,
                    "close".parse().unwrap(),
                    authchain_core::HeaderAction::OverwriteIfExistsOrAdd,
                ));
                Ok(allow.into())
            })),
        ))
        .build()
        .unwrap();
    let decision = framing.authorize(&mut get("/")).await;
    let allow = decision.as_allow().unwrap();
    let names: Vec<&str> = allow.headers.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
    assert!(allow.response_headers.is_empty());
    assert!(
        !allow
            .headers_to_remove
            .contains(&http::header::CONTENT_LENGTH)
    );
}

/// An allow with more headers than a header map holds past the request's
/// own (a passthrough remote's answer, a plugin's) fails closed, under
/// `failureModeAllow` too, in place and forwarded alike: its merge
/// panicked outside the step, which reset Envoy's stream (an allow under
/// its `failure_mode_allow`).
#[tokio::test]
async fn an_allow_with_more_headers_than_a_request_holds_fails_closed() {
    use authchain_core::Allow;
    use authchain_core::transport::MAX_HEADER_NAMES;
    let step = decide_fn(|_| {
        let mut allow = Allow::new();
        for i in 0..25_000 {
            allow = allow.set_header(HeaderName::try_from(format!("x-h{i}")).unwrap(), value("1"));
        }
        Ok(allow.into())
    });
    let chain = Chain::builder("c")
        .step(ChainStep::new("many", Arc::new(step)).failure_mode_allow(true))
        .user_id_header(name("x-user-id"))
        .build()
        .unwrap();
    for forwarded in [false, true] {
        let mut req = get("/");
        // As many names as an adapter lets in.
        for i in 0..MAX_HEADER_NAMES {
            req.headers
                .append(HeaderName::try_from(format!("x-c{i}")).unwrap(), value("1"));
        }
        let d = if forwarded {
            authchain_core::transport::authorize_forwarded(&chain, &mut req).await
        } else {
            chain.authorize(&mut req).await
        };
        assert_eq!(
            d.as_deny().map(|d| d.status.as_u16()),
            Some(403),
            "forwarded {forwarded}"
        );
    }
}

/// The mark of `failureModeAllow` is the chain's alone: a step's allow
/// that sets it upstream, in any spelling an app folds to it, fails
/// closed, under `failureModeAllow` too (the chain would list the client's
/// copies for removal, and a set of one spelling passes over its removal).
#[tokio::test]
async fn a_step_may_not_set_the_failure_mark() {
    use authchain_core::Allow;
    for spelling in [
        "x-envoy-auth-failure-mode-allowed",
        "x_envoy_auth_failure_mode_allowed",
        "x-envoy-auth.failure-mode-allowed",
    ] {
        let step = decide_fn(move |_| {
            let mark = HeaderName::try_from(spelling).unwrap();
            Ok(Allow::new().append_header(mark, value("true")).into())
        });
        let chain = Chain::builder("c")
            .step(ChainStep::new("mark", Arc::new(step)).failure_mode_allow(true))
            .build()
            .unwrap();
        let d = chain.authorize(&mut get("/")).await;
        assert_eq!(
            d.as_deny().map(|d| d.status.as_u16()),
            Some(403),
            "{spelling}"
        );
    }
}

/// Allows whose changes together pass what an answer that lists each of
/// them holds (13,000 appends of one name, twice) fail closed: the HTTP
/// check server's answer, a header line per change, panicked.
#[tokio::test]
async fn allows_with_more_changes_together_than_an_answer_holds_fail_closed() {
    use authchain_core::Allow;
    let appends = || {
        decide_fn(|_| {
            let mut allow = Allow::new();
            for _ in 0..13_000 {
                allow = allow.append_header(name("x-a"), value("1"));
            }
            Ok(allow.into())
        })
    };
    let chain = Chain::builder("c")
        .step(ChainStep::new("one", Arc::new(appends())))
        .step(ChainStep::new("two", Arc::new(appends())).failure_mode_allow(true))
        .build()
        .unwrap();
    let d = chain.authorize(&mut get("/")).await;
    assert_eq!(d.as_deny().map(|d| d.status.as_u16()), Some(403));
}
