//! The decision cache: coalesced misses, allow-only by default, TTL,
//! replay of the chain's changes (and none for `Chain::check`), and the
//! key-coverage check.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_core::{
    Allow, Answer, Attribute, AuthConfig, AuthService, AuthorizationRequest, CacheSettings, Chain,
    ChainStep, Decision, Format, PluginRegistry, async_trait, plugin_fn,
};
use http::{HeaderName, Method};
use serde_json::{Value, json};

use crate::support::{Fixed, name, value, values};

/// A step that checks a token in `authorization` or in cookie `session`,
/// takes a while, counts its runs, declares `x-user-id` and what it reads.
#[derive(Clone, Default)]
struct TokenCheck {
    runs: Arc<AtomicUsize>,
    declare: bool,
}

#[async_trait]
impl AuthService for TokenCheck {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let bearer = request.header_str("authorization") == Some("Bearer good");
            let cookie = request
                .header_str("cookie")
                .is_some_and(|c| c.contains("session=good"));
            if !(bearer || cookie) {
                return Ok(Decision::unauthenticated());
            }
            request.state.insert("user", json!("alice"));
            Ok(Allow::new()
                .set_header(name("x-user-id"), value("alice"))
                .append_header(name("x-seen"), value("1"))
                .into())
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        vec![name("x-user-id")]
    }

    fn reads(&self) -> Option<Vec<Attribute>> {
        self.declare.then(|| {
            vec![
                Attribute::header(http::header::AUTHORIZATION),
                Attribute::cookie("session"),
            ]
        })
    }
}

impl TokenCheck {
    fn declared() -> Self {
        TokenCheck {
            declare: true,
            ..Self::default()
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn chain(&self, settings: CacheSettings) -> Arc<Chain> {
        Arc::new(
            Chain::builder("cached")
                .step(ChainStep::new("token", Arc::new(self.clone())))
                .cache(settings)
                .build()
                .unwrap(),
        )
    }
}

fn seed_key() -> Vec<Attribute> {
    vec![
        Attribute::cookie("session"),
        Attribute::header(http::header::AUTHORIZATION),
    ]
}

fn request(headers: &[(&'static str, &'static str)]) -> AuthorizationRequest {
    let mut r = AuthorizationRequest::new(Method::GET, "/");
    for (k, v) in headers {
        r.headers.append(name(k), value(v));
    }
    r
}

#[tokio::test]
async fn concurrent_misses_for_one_key_run_the_chain_once() {
    let step = TokenCheck::declared();
    let chain = step.chain(CacheSettings::new(seed_key()));
    let answers = futures::future::join_all((0..16).map(|_| {
        let chain = chain.clone();
        async move {
            let mut r = request(&[("authorization", "Bearer good"), ("x-user-id", "mallory")]);
            let d = chain.authorize(&mut r).await;
            (d, r)
        }
    }))
    .await;
    assert_eq!(step.runs(), 1);
    for (decision, request) in &answers {
        assert!(decision.is_allow());
        assert_eq!(decision, &answers[0].0);
        // Replayed as the chain left the first request: the forged identity
        // is gone, the chain's headers and state are there.
        assert_eq!(values(&request.headers, "x-user-id"), ["alice"]);
        assert_eq!(values(&request.headers, "x-seen"), ["1"]);
        assert_eq!(request.state.get("user"), Some(&json!("alice")));
    }
    // Another key is another run; the same key later is a hit.
    let mut r = request(&[("cookie", "session=good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut r = request(&[("authorization", "Bearer good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(step.runs(), 2);
}

#[tokio::test]
async fn a_hit_is_replayed_onto_the_request() {
    let step = TokenCheck::declared();
    let chain = step.chain(CacheSettings::new(seed_key()));
    let mut first = request(&[("authorization", "Bearer good")]);
    let miss = chain.authorize(&mut first).await;
    assert_eq!(values(&first.headers, "x-user-id"), ["alice"]);
    assert_eq!(first.state.get("user"), Some(&json!("alice")));
    let mut second = request(&[("authorization", "Bearer good")]);
    assert_eq!(chain.authorize(&mut second).await, miss);
    assert_eq!(step.runs(), 1);
    // The same decision, state and header changes as the run's.
    assert_eq!(values(&second.headers, "x-user-id"), ["alice"]);
    assert_eq!(second.state.get("user"), Some(&json!("alice")));
}

/// An answer that sets a cookie (a login's state, a new session), or that
/// no cache may keep (`Cache-Control: no-store`), is for one client alone:
/// concurrent requests with its key each get their own run, not a copy of
/// another client's cookie, and none is kept.
#[tokio::test]
async fn an_answer_that_sets_a_cookie_or_says_no_store_is_neither_shared_nor_kept() {
    let runs = Arc::new(AtomicUsize::new(0));
    let login = {
        let runs = runs.clone();
        authchain_core::service_fn(move |request| {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            let session = request.header_str("cookie").is_some();
            let fetch = request.header_str("sec-fetch-mode") == Some("cors");
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let cookie = http::HeaderValue::try_from(format!("login={run}")).unwrap();
                if fetch {
                    return Ok(authchain_core::Deny::new(http::StatusCode::UNAUTHORIZED)
                        .header(http::header::CACHE_CONTROL, value("no-store"))
                        .into());
                }
                Ok(if session {
                    Allow::new()
                        .response_header(http::header::SET_COOKIE, cookie)
                        .into()
                } else {
                    authchain_core::Deny::new(http::StatusCode::FOUND)
                        .header(http::header::SET_COOKIE, cookie)
                        .into()
                })
            })
        })
    };
    let chain = Arc::new(
        Chain::builder("login")
            .step(ChainStep::new("login", Arc::new(login)))
            .cache(
                CacheSettings::new(vec![Attribute::cookie("session")])
                    .trust_key(true)
                    .cache_denies(true),
            )
            .build()
            .unwrap(),
    );
    let cookies = async |headers: &'static [(&'static str, &'static str)]| {
        let answers = futures::future::join_all((0..8).map(|_| {
            let chain = chain.clone();
            async move { chain.authorize(&mut request(headers)).await }
        }))
        .await;
        let mut cookies: Vec<String> = answers
            .iter()
            .map(|d| match d {
                Decision::Allow(allow) => allow.response_headers[0].value.to_str().unwrap().into(),
                Decision::Deny(deny) => deny.headers["set-cookie"].to_str().unwrap().into(),
            })
            .collect();
        cookies.sort();
        cookies.dedup();
        cookies.len()
    };
    assert_eq!(cookies(&[]).await, 8, "eight logins, eight login cookies");
    assert_eq!(cookies(&[("cookie", "session=a")]).await, 8);
    assert_eq!(runs.load(Ordering::SeqCst), 16);
    // None was kept: the next request runs the chain again.
    let decision = chain.authorize(&mut request(&[])).await;
    assert_eq!(decision.as_deny().unwrap().status, 302);
    assert_eq!(runs.load(Ordering::SeqCst), 17);
    // A `no-store` answer, decided on what the key leaves out, is neither
    // kept nor given to the next request.
    let fetch = chain
        .authorize(&mut request(&[("sec-fetch-mode", "cors")]))
        .await;
    assert_eq!(fetch.as_deny().unwrap().status, 401);
    let decision = chain.authorize(&mut request(&[])).await;
    assert_eq!(decision.as_deny().unwrap().status, 302);
    assert_eq!(runs.load(Ordering::SeqCst), 19);
}

/// An allow whose credential expires at once (`hmacAuth`'s: a signature
/// covers what the client chose to sign, which the key may not hold) is
/// for its request alone: neither kept nor given to the requests waiting
/// on its key.
#[tokio::test]
async fn an_allow_that_expires_at_once_is_neither_shared_nor_kept() {
    let runs = Arc::new(AtomicUsize::new(0));
    let signed = {
        let runs = runs.clone();
        authchain_core::service_fn(move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Allow::new().expires_at(std::time::SystemTime::now()).into())
            })
        })
    };
    let chain = Arc::new(
        Chain::builder("signed")
            .step(ChainStep::new("signed", Arc::new(signed)))
            .cache(CacheSettings::new(seed_key()).trust_key(true))
            .build()
            .unwrap(),
    );
    let answers = futures::future::join_all((0..8).map(|_| {
        let chain = chain.clone();
        async move {
            chain
                .authorize(&mut request(&[("authorization", "sig")]))
                .await
        }
    }))
    .await;
    assert!(answers.iter().all(Decision::is_allow));
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    chain
        .authorize(&mut request(&[("authorization", "sig")]))
        .await;
    assert_eq!(runs.load(Ordering::SeqCst), 9);
}

/// A header change that depends on the header being present
/// (`add_header_if_absent`, `overwrite_header_if_exists`) is resolved
/// against the request it was made for: when the key does not hold that
/// header, the allow is for its request alone. Replayed, another request
/// would get the first one's resolution (its tenant kept, or a default
/// added over it).
#[tokio::test]
async fn an_allow_resolved_on_a_header_the_key_does_not_hold_is_neither_shared_nor_kept() {
    let runs = Arc::new(AtomicUsize::new(0));
    let tenant = {
        let runs = runs.clone();
        authchain_core::service_fn(move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Allow::new()
                    .add_header_if_absent(name("x-tenant"), value("default"))
                    .overwrite_header_if_exists(name("x-trace"), value("scrubbed"))
                    .into())
            })
        })
    };
    let chain = |key: Vec<Attribute>| {
        Arc::new(
            Chain::builder("tenant")
                .step(ChainStep::new("tenant", Arc::new(tenant.clone())))
                .cache(CacheSettings::new(key).trust_key(true))
                .build()
                .unwrap(),
        )
    };
    let unkeyed = chain(vec![Attribute::header(http::header::AUTHORIZATION)]);
    let tenants = futures::future::join_all((0..8).map(|i| {
        let chain = unkeyed.clone();
        async move {
            let mut r = if i % 2 == 0 {
                request(&[
                    ("authorization", "t"),
                    ("x-tenant", "acme"),
                    ("x-trace", "1"),
                ])
            } else {
                request(&[("authorization", "t")])
            };
            assert!(chain.authorize(&mut r).await.is_allow());
            (
                i,
                values(&r.headers, "x-tenant"),
                values(&r.headers, "x-trace"),
            )
        }
    }))
    .await;
    for (i, tenant, trace) in tenants {
        if i % 2 == 0 {
            assert_eq!(tenant, ["acme"], "request {i}");
            assert_eq!(trace, ["scrubbed"], "request {i}");
        } else {
            assert_eq!(tenant, ["default"], "request {i}");
            assert!(trace.is_empty(), "request {i}: {trace:?}");
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    let mut r = request(&[("authorization", "t")]);
    unkeyed.authorize(&mut r).await;
    assert_eq!(values(&r.headers, "x-tenant"), ["default"]);
    assert_eq!(runs.load(Ordering::SeqCst), 9);
    // With both headers in the key, the answer is the key's, and kept.
    let keyed = chain(vec![
        Attribute::header(http::header::AUTHORIZATION),
        Attribute::header(name("x-tenant")),
        Attribute::header(name("x-trace")),
    ]);
    for _ in 0..2 {
        let mut r = request(&[("authorization", "t"), ("x-tenant", "acme")]);
        keyed.authorize(&mut r).await;
        assert_eq!(values(&r.headers, "x-tenant"), ["acme"]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 10);
}

/// Once an answer was for its request alone, the key is a pass for the
/// TTL (nginx's "hit for pass"): its requests run the chain side by side,
/// not each after another's whole run. The step waits until four of them
/// run at once, which they never would one after another.
#[tokio::test]
async fn a_key_whose_answer_was_for_its_request_alone_passes_for_the_ttl() {
    let together = Arc::new(tokio::sync::Barrier::new(4));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let tenant = authchain_core::service_fn(move |_| {
        let (together, first) = (together.clone(), first.clone());
        Box::pin(async move {
            if !first.swap(false, Ordering::SeqCst) {
                together.wait().await;
            }
            Ok(Allow::new()
                .add_header_if_absent(name("x-tenant"), value("default"))
                .into())
        })
    });
    let chain = Arc::new(
        Chain::builder("tenant")
            .step(ChainStep::new("tenant", Arc::new(tenant)))
            .cache(CacheSettings::new(seed_key()).trust_key(true))
            .build()
            .unwrap(),
    );
    let authorization = [("authorization", "t")];
    assert!(
        chain
            .authorize(&mut request(&authorization))
            .await
            .is_allow()
    );
    let four = futures::future::join_all((0..4).map(|_| {
        let chain = chain.clone();
        async move { chain.authorize(&mut request(&authorization)).await }
    }));
    let four = tokio::time::timeout(Duration::from_secs(10), four).await;
    assert!(
        four.expect("four runs at once")
            .iter()
            .all(Decision::is_allow)
    );
}

/// What is not the request's own is no reason to pass: a change to a
/// header the chain strips (no request has it), or that a step before
/// set, or one in an operand of a `booleanExpr` that turned out false
/// (its changes are undone). Such an answer is kept.
#[tokio::test]
async fn a_change_the_chain_decides_alone_is_kept() {
    let tagged = Allow::new()
        .add_header_if_absent(name("x-user"), value("anonymous"))
        .add_header_if_absent(name("x_user"), value("anonymous"))
        .overwrite_header_if_exists(name("x-seen"), value("2"));
    let seen = Allow::new().set_header(name("x-seen"), value("1"));
    let unkeyed = Allow::new().add_header_if_absent(name("x-tenant"), value("default"));
    let last = Fixed::allow();
    let cases = [
        Chain::builder("stripped")
            .strip_client_header(name("x-user"))
            .step(ChainStep::new("seen", crate::support::allowing(seen)))
            .step(ChainStep::new("tagged", crate::support::allowing(tagged)))
            .step(last.step("last")),
        Chain::builder("undone")
            .step(ChainStep::new("a", crate::support::allowing(unkeyed)))
            .step(Fixed::deny().step("b"))
            .step(last.step("last"))
            .boolean_expr("(a && b) || last"),
    ];
    for (i, builder) in cases.into_iter().enumerate() {
        let chain = builder
            .cache(CacheSettings::new(seed_key()).trust_key(true))
            .build()
            .unwrap();
        for _ in 0..2 {
            assert!(
                chain
                    .authorize(&mut request(&[("authorization", "t")]))
                    .await
                    .is_allow()
            );
        }
        assert_eq!(last.runs(), i + 1, "case {i}: kept");
    }
}

#[tokio::test]
async fn only_allows_are_kept_unless_denies_are_asked_for() {
    let step = TokenCheck::declared();
    let chain = step.chain(CacheSettings::new(seed_key()));
    for _ in 0..3 {
        let mut r = request(&[("authorization", "Bearer bad")]);
        assert_eq!(chain.authorize(&mut r).await, Decision::unauthenticated());
    }
    assert_eq!(step.runs(), 3);

    let step = TokenCheck::declared();
    let chain = step.chain(CacheSettings::new(seed_key()).cache_denies(true));
    for _ in 0..3 {
        let mut r = request(&[("authorization", "Bearer bad")]);
        assert!(!chain.authorize(&mut r).await.is_allow());
    }
    assert_eq!(step.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn answers_expire_after_the_ttl() {
    let step = TokenCheck::declared();
    let chain = step.chain(CacheSettings::new(seed_key()).ttl(Duration::from_millis(100)));
    let mut r = request(&[("authorization", "Bearer good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    let mut r = request(&[("authorization", "Bearer good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(step.runs(), 1);
    // The cache reads tokio's clock: paused time moves it.
    tokio::time::advance(Duration::from_millis(99)).await;
    let mut r = request(&[("authorization", "Bearer good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(step.runs(), 1, "still fresh");
    tokio::time::advance(Duration::from_millis(100)).await;
    let mut r = request(&[("authorization", "Bearer good")]);
    assert!(chain.authorize(&mut r).await.is_allow());
    assert_eq!(step.runs(), 2);
}

#[tokio::test]
async fn the_entry_bound_holds() {
    let step = TokenCheck::default();
    let chain = step.chain(
        CacheSettings::new(vec![Attribute::Path])
            .trust_key(true)
            .max_entries(10),
    );
    for i in 0..50 {
        let mut r = AuthorizationRequest::new(Method::GET, format!("/{i}"));
        r.headers
            .insert(name("authorization"), value("Bearer good"));
        assert!(chain.authorize(&mut r).await.is_allow());
    }
    // Evictions are done by the time the last insert returns.
    let mut r = AuthorizationRequest::new(Method::GET, "/0");
    r.headers
        .insert(name("authorization"), value("Bearer good"));
    chain.authorize(&mut r).await;
    assert!(chain.cached_entries() <= 10, "{}", chain.cached_entries());
}

/// Answers that hold much (a token's claims, an ID token) fill the bytes
/// bound before the entry bound: one client's distinct keys cannot hold
/// more than it.
#[tokio::test]
async fn the_bytes_bound_holds() {
    let claims = json!("c".repeat(10_000));
    let heavy = authchain_core::service_fn(move |request| {
        request.state.insert("claims", claims.clone());
        Box::pin(async { Ok(Allow::new().into()) })
    });
    let chain = Chain::builder("heavy")
        .step(ChainStep::new("heavy", Arc::new(heavy)))
        .cache(
            CacheSettings::new(vec![Attribute::Path])
                .trust_key(true)
                .max_bytes(100_000),
        )
        .build()
        .unwrap();
    for i in 0..50 {
        let mut r = AuthorizationRequest::new(Method::GET, format!("/{i}"));
        assert!(chain.authorize(&mut r).await.is_allow());
    }
    assert!(chain.cached_entries() <= 10, "{}", chain.cached_entries());
    let e = Chain::builder("c")
        .step(ChainStep::new("heavy", Arc::new(TokenCheck::default())))
        .cache(
            CacheSettings::new(vec![Attribute::Path])
                .trust_key(true)
                .max_bytes(0),
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("cache.maxBytes"), "{e}");
}

#[test]
fn a_key_that_misses_what_a_step_reads_is_a_config_error() {
    let e = Chain::builder("c")
        .step(ChainStep::new("token", Arc::new(TokenCheck::declared())))
        .cache(CacheSettings::new(vec![Attribute::cookie("session")]))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("step 'token' reads header `authorization`"),
        "{e}"
    );
    let e = Chain::builder("c")
        .step(ChainStep::new("token", Arc::new(TokenCheck::default())))
        .cache(CacheSettings::new(seed_key()))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not declare") && e.contains("trustKey"),
        "{e}"
    );
}

/// The seed "Forward Authentication" caches the auth answer by session
/// cookie and authorization for 10 minutes (nginx: `proxy_cache_key
/// "$cookie_session$http_authorization"; proxy_cache_valid 200 10m;`).
const SEED: &str = r#"
name: site
configs:
- name: token
  pluginAuth: { name: TokenCheck }
cache:
  key: [{ cookie: session }, { header: authorization }]
  ttl: 10m
  trustKey: true
"#;

#[tokio::test]
async fn the_seed_forward_authentication_cache_is_expressible() {
    let step = TokenCheck::default();
    let mut registry = PluginRegistry::new();
    let shared = step.clone();
    registry.register(plugin_fn("TokenCheck", move |_: Value, _| {
        Ok(Arc::new(shared.clone()) as Arc<dyn AuthService>)
    }));
    let config = AuthConfig::parse("site.yaml", SEED, Format::Yaml).unwrap();
    let chain = config[0].build(&registry).unwrap();
    for _ in 0..5 {
        let mut r = request(&[("cookie", "theme=dark; session=good")]);
        assert!(chain.authorize(&mut r).await.is_allow());
    }
    assert_eq!(step.runs(), 1);

    // Without trustKey the undeclared plugin is refused, at its place.
    let text = SEED.replace("  trustKey: true\n", "");
    let config = AuthConfig::parse("site.yaml", &text, Format::Yaml).unwrap();
    let e = config[0].build(&registry).unwrap_err();
    assert!(e.to_string().contains("site.yaml"), "{e}");
    assert!(e.to_string().contains("cache"), "{e}");
    // Bad cache blocks name their place.
    let text = SEED.replace("ttl: 10m", "ttl: soon");
    let config = AuthConfig::parse("site.yaml", &text, Format::Yaml).unwrap();
    let e = config[0].build(&registry).unwrap_err().to_string();
    assert!(e.contains("cache.ttl"), "{e}");
    let text = SEED.replace("{ cookie: session }", "{ cookie: session, header: x }");
    let config = AuthConfig::parse("site.yaml", &text, Format::Yaml).unwrap();
    assert!(config[0].build(&registry).is_err());
}

/// A caller's deadline ([`AnswerBy`], which the gRPC server sets a tenth
/// before Envoy's `grpc-timeout`) ends a run sooner than the chain's
/// deadline, as a deny with `statusOnError` (whatever the step's
/// `failureModeAllow`); and a miss that waits on another request's run of
/// its key waits no longer than its caller.
///
/// [`AnswerBy`]: authchain_core::transport::AnswerBy
#[tokio::test]
async fn a_caller_s_deadline_ends_a_run_and_a_wait_on_another() {
    use authchain_core::transport::AnswerBy;
    use http::StatusCode;

    let slow = || {
        Arc::new(authchain_core::service_fn(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(Decision::authorized())
            })
        }))
    };
    let chain = |cache: bool| {
        let mut builder = Chain::builder("slow")
            .step(ChainStep::new("slow", slow()))
            .status_on_error(StatusCode::SERVICE_UNAVAILABLE);
        if cache {
            builder = builder.cache(CacheSettings::new(vec![Attribute::Path]).trust_key(true));
        }
        Arc::new(builder.build().unwrap())
    };
    let by = || AnswerBy(std::time::Instant::now() + Duration::from_millis(100));
    let status = |d: &Decision| d.as_deny().map(|d| d.status);

    let mut alone = request(&[]);
    alone.extensions.insert(by());
    let decision = chain(false).authorize(&mut alone).await;
    assert_eq!(status(&decision), Some(StatusCode::SERVICE_UNAVAILABLE));
    // Even for a step that fails open: the caller's deadline is not the
    // step's failure (left to the caller, it was the caller's to decide).
    let open = Chain::builder("open")
        .step(ChainStep::new("slow", slow()).failure_mode_allow(true))
        .status_on_error(StatusCode::SERVICE_UNAVAILABLE)
        .build()
        .unwrap();
    let mut alone = request(&[]);
    alone.extensions.insert(by());
    let decision = open.authorize(&mut alone).await;
    assert_eq!(status(&decision), Some(StatusCode::SERVICE_UNAVAILABLE));

    let cached = chain(true);
    let leader = tokio::spawn({
        let chain = cached.clone();
        async move { chain.authorize(&mut request(&[])).await }
    });
    // The first request's run holds the key.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut waiter = request(&[]);
    waiter.extensions.insert(by());
    let decision = cached.authorize(&mut waiter).await;
    assert_eq!(status(&decision), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(leader.await.unwrap().is_allow(), "the first run's answer");

    // The other way round: a run that ended on its own caller's deadline
    // is not its waiters' answer; one whose caller waits longer runs for
    // itself.
    let cached = chain(true);
    let leader = tokio::spawn({
        let chain = cached.clone();
        async move {
            let mut hurried = request(&[]);
            hurried.extensions.insert(by());
            chain.authorize(&mut hurried).await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let decision = cached.authorize(&mut request(&[])).await;
    assert!(decision.is_allow(), "{decision:?}");
    let hurried = leader.await.unwrap();
    assert_eq!(status(&hurried), Some(StatusCode::SERVICE_UNAVAILABLE));
}
