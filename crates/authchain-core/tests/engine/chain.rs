//! The seven chain rules of DESIGN.md, one group of tests each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, Chain, ChainStep, Decision, Deny, Error,
    FAILURE_MODE_ALLOWED_HEADER, HeaderAction, HeaderMutation, UserInfo, async_trait, decide_fn,
    service_fn,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use crate::support::*;

// Rule 1: order, and the first deny stops the chain.

#[tokio::test]
async fn steps_run_in_order_and_the_first_deny_is_the_answer() {
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recording = |tag: &'static str, decision: Decision| -> Arc<dyn AuthService> {
        let order = order.clone();
        Arc::new(service_fn(move |_| {
            order.lock().unwrap().push(tag);
            let decision = decision.clone();
            Box::pin(async move { Ok(decision) })
        }))
    };
    let teapot = Deny::new(StatusCode::IM_A_TEAPOT)
        .header(name("x-why"), value("tea"))
        .body("short and stout");
    let chain = Chain::builder("c")
        .step(ChainStep::new("a", recording("a", Decision::authorized())))
        .step(ChainStep::new("b", recording("b", Decision::authorized())))
        .step(ChainStep::new("c", recording("c", teapot.clone().into())))
        .step(ChainStep::new("d", recording("d", Decision::authorized())))
        .build()
        .unwrap();
    let decision = chain.authorize(&mut get("/")).await;
    assert_eq!(decision, Decision::Deny(teapot));
    assert_eq!(*order.lock().unwrap(), ["a", "b", "c"]);
}

#[tokio::test]
async fn a_chain_of_allows_allows() {
    let (a, b) = (Fixed::allow(), Fixed::allow());
    let chain = Chain::builder("c")
        .step(a.step("a"))
        .step(b.step("b"))
        .build()
        .unwrap();
    assert_eq!(chain.authorize(&mut get("/")).await, Decision::authorized());
    assert_eq!((a.runs(), b.runs()), (1, 1));
}

// Rule 2: mutations accumulate, each step sees the request as mutated.

#[tokio::test]
async fn gloo_header_example() {
    // Incoming `one: foo`; step 1 sets `one: bar`; step 2 appends `one: baz`
    // and adds `two: asd`: upstream gets `one: bar, baz` and `two: asd`.
    let seen_by_step2 = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = seen_by_step2.clone();
    let step2 = service_fn(move |req| {
        *seen.lock().unwrap() = values(&req.headers, "one");
        Box::pin(async move {
            Ok(Allow::new()
                .append_header(name("one"), value("baz"))
                .add_header_if_absent(name("two"), value("asd"))
                .into())
        })
    });
    let chain = Chain::builder("gloo")
        .step(ChainStep::new(
            "step1",
            allowing(Allow::new().set_header(name("one"), value("bar"))),
        ))
        .step(ChainStep::new("step2", Arc::new(step2)))
        .build()
        .unwrap();

    let mut req = get("/").with_header(name("one"), value("foo"));
    let original = req.headers.clone();
    let Decision::Allow(allow) = chain.authorize(&mut req).await else {
        panic!("expected allow")
    };
    assert_eq!(*seen_by_step2.lock().unwrap(), ["bar"]);
    assert_eq!(values(&req.headers, "one"), ["bar", "baz"]);
    assert_eq!(values(&req.headers, "two"), ["asd"]);
    assert_eq!(
        allow.headers,
        [
            HeaderMutation::new(
                name("one"),
                value("bar"),
                HeaderAction::OverwriteIfExistsOrAdd
            ),
            HeaderMutation::new(name("one"), value("baz"), HeaderAction::AppendIfExistsOrAdd),
            HeaderMutation::new(name("two"), value("asd"), HeaderAction::AddIfAbsent),
        ]
    );
    // What a proxy applying the final allow to the original request gets.
    let mut upstream = original;
    allow.apply_to_headers(&mut upstream);
    assert_eq!(values(&upstream, "one"), ["bar", "baz"]);
    assert_eq!(values(&upstream, "two"), ["asd"]);
}

#[tokio::test]
async fn later_overwrites_and_removals_replace_earlier_mutations() {
    let chain = Chain::builder("c")
        .step(ChainStep::new(
            "a",
            allowing(
                Allow::new()
                    .append_header(name("x"), value("1"))
                    .set_header(name("gone"), value("soon")),
            ),
        ))
        .step(ChainStep::new(
            "b",
            allowing(
                Allow::new()
                    .set_header(name("x"), value("2"))
                    .remove_header(name("gone"))
                    .overwrite_header_if_exists(name("never"), value("v"))
                    .add_header_if_absent(name("x"), value("ignored")),
            ),
        ))
        .build()
        .unwrap();
    let Decision::Allow(allow) = chain.authorize(&mut get("/")).await else {
        panic!()
    };
    assert_eq!(
        allow.headers,
        [HeaderMutation::new(
            name("x"),
            value("2"),
            HeaderAction::OverwriteIfExistsOrAdd
        )]
    );
    assert_eq!(allow.headers_to_remove, [name("gone")]);
}

#[tokio::test]
async fn query_metadata_response_headers_and_user_accumulate() {
    let seen_path = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = seen_path.clone();
    let chain = Chain::builder("c")
        .step(ChainStep::new(
            "a",
            allowing(
                Allow::new()
                    .set_query_parameter("token", "redacted")
                    .remove_query_parameter("debug")
                    .metadata("a", json!(1))
                    .response_header(name("x-from-a"), value("1"))
                    .user(authchain_core::UserInfo::new("alice")),
            ),
        ))
        .step(ChainStep::new(
            "b",
            Arc::new(service_fn(move |req| {
                *seen.lock().unwrap() = req.path.clone();
                Box::pin(async {
                    Ok(Allow::new()
                        .metadata("b", json!(2))
                        .response_header(name("x-from-b"), value("2"))
                        .set_query_parameter("debug", "0")
                        .into())
                })
            })),
        ))
        .build()
        .unwrap();
    // The path as the last step left it, the query's changes in the
    // allow, and what the request cannot carry.
    {
        let mut req = get("/p?token=secret&debug=1&keep=yes");
        let Decision::Allow(allow) = chain.authorize(&mut req).await else {
            panic!()
        };
        assert_eq!(*seen_path.lock().unwrap(), "/p?token=redacted&keep=yes");
        assert_eq!(req.path, "/p?token=redacted&keep=yes&debug=0");
        let set: &[(String, String)] = &[
            ("token".into(), "redacted".into()),
            ("debug".into(), "0".into()),
        ];
        assert_eq!(allow.query_parameters_to_set, set);
        assert!(allow.query_parameters_to_remove.is_empty());
        assert_eq!(
            allow.dynamic_metadata,
            json!({"a": 1, "b": 2}).as_object().unwrap().clone()
        );
        assert_eq!(allow.response_headers.len(), 2);
        assert_eq!(allow.user_info.unwrap().user_id, "alice");
    }
}

/// A tiny deterministic generator, so the property test needs no crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn the_merged_allow_reproduces_the_chain_view_upstream() {
    // Property: whatever the steps do, applying the final allow to the
    // client's request gives the request as the chain's last step saw it,
    // and the merged form keeps its invariant (per name: one overwrite
    // first, or only adding entries; never both set and removed).
    let names = [name("a"), name("b"), name("c")];
    let vals = [value("1"), value("2"), value("3")];
    let actions = [
        HeaderAction::AppendIfExistsOrAdd,
        HeaderAction::AddIfAbsent,
        HeaderAction::OverwriteIfExistsOrAdd,
        HeaderAction::OverwriteIfExists,
    ];
    let mut rng = Lcg(7);
    for case in 0..500 {
        let mut builder = Chain::builder("p");
        for s in 0..1 + rng.next(4) {
            let mut allow = Allow::new();
            for _ in 0..rng.next(4) {
                allow.headers.push(HeaderMutation::new(
                    names[rng.next(3) as usize].clone(),
                    vals[rng.next(3) as usize].clone(),
                    actions[rng.next(4) as usize],
                ));
            }
            for _ in 0..rng.next(2) {
                allow
                    .headers_to_remove
                    .push(names[rng.next(3) as usize].clone());
            }
            builder = builder.step(ChainStep::new(format!("s{s}"), allowing(allow)));
        }
        let mut headers = HeaderMap::new();
        for _ in 0..rng.next(3) {
            headers.append(names[rng.next(3) as usize].clone(), value("0"));
        }
        if rng.next(2) == 1 {
            builder = builder.strip_client_header(names[rng.next(3) as usize].clone());
        }
        let chain = builder.build().unwrap();
        let mut req = get("/");
        req.headers = headers.clone();
        let Decision::Allow(allow) = chain.authorize(&mut req).await else {
            panic!()
        };

        let mut upstream = headers;
        allow.apply_to_headers(&mut upstream);
        assert_eq!(upstream, req.headers, "case {case}: {allow:?}");
        for n in &names {
            let entries: Vec<_> = allow.headers.iter().filter(|m| m.name == n).collect();
            let overwrites = entries
                .iter()
                .filter(|m| m.action == HeaderAction::OverwriteIfExistsOrAdd)
                .count();
            assert!(overwrites <= 1, "case {case}: {allow:?}");
            if overwrites == 1 {
                assert_eq!(entries[0].action, HeaderAction::OverwriteIfExistsOrAdd);
            }
            assert!(
                !entries
                    .iter()
                    .any(|m| m.action == HeaderAction::OverwriteIfExists)
            );
            let removed = allow.headers_to_remove.contains(n);
            assert!(!removed || entries.is_empty(), "case {case}: {allow:?}");
        }
    }
}

// Rule 3: state written by a step is visible to every later step.

#[tokio::test]
async fn state_flows_to_later_steps() {
    let writer = service_fn(|req| {
        req.state.insert("user", json!("alice"));
        req.state.insert("groups", json!(["admins"]));
        Box::pin(async { Ok(Decision::authorized()) })
    });
    let reader = service_fn(|req| {
        let user = req
            .state
            .get("user")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Box::pin(async move {
            let Some(user) = user else {
                return Ok(Decision::unauthorized());
            };
            let user = http::HeaderValue::try_from(user).map_err(Error::step)?;
            Ok(Allow::new().set_header(name("x-user"), user).into())
        })
    });
    let chain = Chain::builder("c")
        .step(ChainStep::new("writer", Arc::new(writer)))
        .step(ChainStep::new("reader", Arc::new(reader)))
        .build()
        .unwrap();
    let mut req = get("/");
    let decision = chain.authorize(&mut req).await;
    assert_eq!(decision.as_allow().unwrap().headers[0].value, "alice");
    assert_eq!(req.state["groups"], json!(["admins"]));
}

// Steps that decide at once and steps that wait mix in one chain.

/// Decides at once only for GET; waits (on a timer) for other methods.
struct NowForGets {
    waited: AtomicUsize,
}

impl AuthService for NowForGets {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        if req.method == http::Method::GET {
            req.state.insert("now", json!(true));
            return Allow::new().set_header(name("x-path"), value("now")).into();
        }
        Answer::wait(async move {
            self.waited.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            req.state.insert("waited", json!(true));
            Ok(Allow::new()
                .set_header(name("x-path"), value("waited"))
                .into())
        })
    }
}

#[tokio::test]
async fn steps_that_answer_at_once_and_steps_that_wait_share_the_chain_rules() {
    let mixed = Arc::new(NowForGets {
        waited: AtomicUsize::new(0),
    });
    let reader = authchain_core::decide_fn(|req| {
        let seen = req.header_str("x-path").unwrap_or("none").to_owned();
        req.state.insert("seen", json!(seen));
        Ok(Decision::authorized())
    });
    let chain = Chain::builder("c")
        .step(ChainStep::new("mixed", mixed.clone()))
        .step(ChainStep::new("reader", Arc::new(reader)))
        .build()
        .unwrap();

    let mut req = get("/");
    let decision = chain.authorize(&mut req).await;
    assert_eq!(decision.as_allow().unwrap().headers[0].value, "now");
    assert_eq!(req.state["seen"], "now");
    assert_eq!(req.state["now"], true);
    assert_eq!(mixed.waited.load(Ordering::SeqCst), 0, "GET never waits");

    let mut req = AuthorizationRequest::new(http::Method::POST, "/");
    let decision = chain.authorize(&mut req).await;
    assert_eq!(decision.as_allow().unwrap().headers[0].value, "waited");
    assert_eq!(req.state["seen"], "waited");
    assert!(!req.state.contains_key("now"));
    assert_eq!(mixed.waited.load(Ordering::SeqCst), 1);

    // With a booleanExpr: `a || b` where `a` waits and denies, `b` decides.
    let deny_later = service_fn(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Decision::unauthorized())
        })
    });
    let chain = Chain::builder("c")
        .step(ChainStep::new("a", Arc::new(deny_later)))
        .step(ChainStep::new(
            "b",
            Arc::new(authchain_core::decide_fn(|_| Ok(Decision::authorized()))),
        ))
        .boolean_expr("a || b")
        .build()
        .unwrap();
    assert_eq!(chain.authorize(&mut get("/")).await, Decision::authorized());
}

/// What a step of an [`ExprCase`] answers.
#[derive(Clone, Copy)]
enum Says {
    /// Allows, setting `x-<step name>: 1` upstream.
    Allows,
    /// Denies with this status and body.
    Denies(u16, &'static str),
}

/// What an [`ExprCase`] expects of the chain.
enum Want {
    /// An allow that sets these upstream headers, in this order.
    Allow(&'static [&'static str]),
    /// This deny, status and body.
    Deny(u16, &'static str),
}

struct ExprCase {
    name: &'static str,
    steps: &'static [(&'static str, Says)],
    expr: &'static str,
    want: Want,
    /// How many times each step ran, in the order of `steps`.
    runs: &'static [usize],
}

const EXPR_CASES: &[ExprCase] = &[
    ExprCase {
        name: "an allow left of || needs nothing right of it",
        steps: &[
            ("a", Says::Allows),
            ("b", Says::Allows),
            ("c", Says::Denies(403, "")),
        ],
        expr: "a || (b && c)",
        want: Want::Allow(&["x-a"]),
        runs: &[1, 0, 0],
    },
    ExprCase {
        name: "a deny left of && needs nothing right of it",
        steps: &[("a", Says::Denies(403, "")), ("b", Says::Allows)],
        expr: "a && b",
        want: Want::Deny(403, ""),
        runs: &[1, 0],
    },
    ExprCase {
        name: "|| passes when one allows, with its mutations alone",
        steps: &[
            ("apikey", Says::Denies(401, "no key")),
            ("jwt", Says::Allows),
        ],
        expr: "apikey || jwt",
        want: Want::Allow(&["x-jwt"]),
        runs: &[1, 1],
    },
    ExprCase {
        name: "when every operand denies, the last deny is the answer",
        steps: &[("a", Says::Denies(401, "a")), ("b", Says::Denies(402, "b"))],
        expr: "a || b",
        want: Want::Deny(402, "b"),
        runs: &[1, 1],
    },
    ExprCase {
        name: "false with no deny to give is a 403",
        steps: &[("a", Says::Allows)],
        expr: "!a",
        want: Want::Deny(403, ""),
        runs: &[1],
    },
    ExprCase {
        name: "a denying step under ! makes the expression true",
        steps: &[("a", Says::Denies(403, "")), ("b", Says::Allows)],
        expr: "!a && b",
        want: Want::Allow(&["x-b"]),
        runs: &[1, 1],
    },
    ExprCase {
        name: "a step named twice runs once",
        steps: &[("a", Says::Allows), ("b", Says::Denies(403, ""))],
        expr: "(a || b) && (b || a)",
        want: Want::Allow(&["x-a"]),
        runs: &[1, 1],
    },
];

#[tokio::test]
async fn boolean_expr_decides_and_runs_only_what_it_needs() {
    for case in EXPR_CASES {
        let name = case.name;
        let mut builder = Chain::builder("c").boolean_expr(case.expr);
        let mut steps = Vec::new();
        for &(step, says) in case.steps {
            let fixed = match says {
                Says::Allows => {
                    let header = HeaderName::try_from(format!("x-{step}")).unwrap();
                    Fixed::new(Allow::new().set_header(header, value("1")))
                }
                Says::Denies(status, body) => {
                    Fixed::new(Deny::new(StatusCode::from_u16(status).unwrap()).body(body))
                }
            };
            builder = builder.step(fixed.step(step));
            steps.push(fixed);
        }
        let decision = builder.build().unwrap().authorize(&mut get("/")).await;
        match case.want {
            Want::Allow(headers) => {
                let allow = decision
                    .as_allow()
                    .unwrap_or_else(|| panic!("case {name}: {decision:?}"));
                let set: Vec<&str> = allow.headers.iter().map(|m| m.name.as_str()).collect();
                assert_eq!(set, headers, "case {name}");
            }
            Want::Deny(status, body) => {
                let deny = Deny::new(StatusCode::from_u16(status).unwrap()).body(body);
                assert_eq!(decision, Decision::Deny(deny), "case {name}");
            }
        }
        let runs: Vec<usize> = steps.iter().map(Fixed::runs).collect();
        assert_eq!(runs, case.runs, "case {name}");
    }
}

/// A step that allows and writes everywhere a step can: a header, a query
/// parameter, the state, the user, a response header; named `who`.
fn writing(who: &'static str) -> Arc<dyn AuthService> {
    Arc::new(service_fn(move |req| {
        req.state.insert(who, json!(true));
        Box::pin(async move {
            // Waits, so that saves and settles meet paused runs too.
            tokio::task::yield_now().await;
            Ok(Allow::new()
                .set_header(HeaderName::from_static(who), value("1"))
                .set_query_parameter(who, "1")
                .response_header(name("x-said"), HeaderValue::from_static(who))
                .user(UserInfo::new(who))
                .into())
        })
    }))
}

/// A step that allows and says in a header what the steps before it left:
/// the headers and state keys it saw.
fn witness() -> Arc<dyn AuthService> {
    Arc::new(service_fn(|req| {
        let mut seen: Vec<String> = req.headers.keys().map(|k| k.to_string()).collect();
        seen.extend(req.state.iter().map(|(k, _)| format!("state:{k}")));
        seen.sort();
        let seen = HeaderValue::try_from(seen.join(",")).unwrap();
        Box::pin(async move { Ok(Allow::new().set_header(name("x-seen"), seen).into()) })
    }))
}

#[tokio::test]
async fn only_the_branches_that_decided_contribute() {
    let chain = Chain::builder("c")
        .step(ChainStep::new("key", writing("x-key")))
        .step(Fixed::deny().step("opa"))
        .step(ChainStep::new("public", witness()))
        .boolean_expr("(key && opa) || public")
        .build()
        .unwrap();
    let mut req = get("/p?a=1");
    let decision = chain.authorize(&mut req).await;
    let allow = decision.as_allow().expect("public allows");
    let headers: Vec<_> = allow
        .headers
        .iter()
        .map(|m| (m.name.as_str(), m.value.to_str().unwrap()))
        .collect();
    assert_eq!(
        headers,
        [("x-seen", "")],
        "public saw none of key's changes"
    );
    assert!(allow.query_parameters_to_set.is_empty());
    assert!(allow.response_headers.is_empty());
    assert_eq!(allow.user_info, None);
    assert_eq!(req.path, "/p?a=1");
    assert!(req.headers.get("x-key").is_none());
    assert!(req.state.get("x-key").is_none());

    // Under `!`, a false operand's changes go too; a true one's stay
    // when its branch decides.
    let chain = Chain::builder("c")
        .step(ChainStep::new("a", writing("x-a")))
        .step(Fixed::deny().step("b"))
        .step(ChainStep::new("c", writing("x-c")))
        .step(ChainStep::new("w", witness()))
        .boolean_expr("!(a && b) && (c || a) && w")
        .build()
        .unwrap();
    let mut req = get("/");
    let allow = chain
        .authorize(&mut req)
        .await
        .as_allow()
        .cloned()
        .expect("allowed");
    let seen = allow.headers.iter().find(|m| m.name == "x-seen").unwrap();
    assert_eq!(seen.value, "state:x-c,x-c");
    assert_eq!(allow.user_info, Some(UserInfo::new("x-c")));
    assert_eq!(req.path, "/?x-c=1");

    // A step undone runs again where the expression names it again.
    let a = Fixed::new(Allow::new().set_header(name("x-a"), value("1")));
    let chain = Chain::builder("c")
        .step(a.step("a"))
        .step(Fixed::deny().step("b"))
        .boolean_expr("(a && b) || a")
        .build()
        .unwrap();
    let allow = chain
        .authorize(&mut get("/"))
        .await
        .as_allow()
        .cloned()
        .expect("allowed");
    assert_eq!(allow.headers.len(), 1);
    assert_eq!(a.runs(), 2);
}

#[test]
fn boolean_expr_and_names_are_checked_at_build() {
    let err = Chain::builder("c")
        .step(Fixed::allow().step("a"))
        .boolean_expr("a && b")
        .build()
        .unwrap_err();
    assert!(err.is_config());
    assert_eq!(
        err.to_string(),
        "booleanExpr: column 6: unknown step name 'b' (steps: a)"
    );
    let err = Chain::builder("c")
        .step(Fixed::allow().step("a"))
        .step(Fixed::allow().step("a"))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "two steps are named 'a'; step names must be unique"
    );
}

// Rule 5: errors fail closed; failureModeAllow passes, counted and marked.

#[tokio::test]
async fn a_failing_step_is_a_deny_with_status_on_error() {
    let after = Fixed::allow();
    let (chain, metrics) = build_with_metrics(
        Chain::builder("c")
            .step(ChainStep::new("broken", failing()))
            .step(after.step("after")),
    );
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
    assert_eq!(after.runs(), 0);
    let counters = Counters::take(&metrics);
    let labels = [("config", "c"), ("step", "broken"), ("result", "error")];
    assert_eq!(counters.get("authchain_step_decisions_total", &labels), 1);
    let labels = [("config", "c"), ("result", "error")];
    assert_eq!(counters.get("authchain_chain_decisions_total", &labels), 1);

    let chain = Chain::builder("c")
        .step(ChainStep::new("broken", failing()))
        .status_on_error(StatusCode::SERVICE_UNAVAILABLE)
        .build()
        .unwrap();
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::deny(StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn an_error_inside_a_boolean_expr_still_fails_closed() {
    let b = Fixed::allow();
    let chain = Chain::builder("c")
        .step(ChainStep::new("a", failing()))
        .step(b.step("b"))
        .boolean_expr("a || b")
        .build()
        .unwrap();
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
    assert_eq!(b.runs(), 0);
}

#[tokio::test]
async fn failure_mode_allow_passes_counts_and_marks() {
    let (chain, metrics) = build_with_metrics(
        Chain::builder("c")
            .step(ChainStep::new("broken", failing()).failure_mode_allow(true))
            .step(Fixed::allow().step("after")),
    );
    // A client cannot forge the mark.
    let mut req = get("/").with_header(FAILURE_MODE_ALLOWED_HEADER, value("false"));
    let decision = chain.authorize(&mut req).await;
    let allow = decision.as_allow().expect("fails open");
    assert_eq!(
        allow.headers,
        [HeaderMutation::new(
            FAILURE_MODE_ALLOWED_HEADER,
            value("true"),
            HeaderAction::OverwriteIfExistsOrAdd
        )]
    );
    assert_eq!(
        values(&req.headers, "x-envoy-auth-failure-mode-allowed"),
        ["true"]
    );
    let counters = Counters::take(&metrics);
    let labels = [("step", "broken"), ("result", "failure_mode_allowed")];
    assert_eq!(counters.get("authchain_step_decisions_total", &labels), 1);
    let labels = [("step", "broken"), ("result", "error")];
    assert_eq!(counters.get("authchain_step_decisions_total", &labels), 0);

    // Without a failure, the client's copy of the mark is removed.
    let chain = Chain::builder("c")
        .step(Fixed::allow().step("fine").failure_mode_allow(true))
        .build()
        .unwrap();
    let mut req = get("/").with_header(FAILURE_MODE_ALLOWED_HEADER, value("true"));
    let decision = chain.authorize(&mut req).await;
    // In every spelling: 2^5 over `-` and `_`, and the all-`.` one.
    let removed = &decision.as_allow().unwrap().headers_to_remove;
    assert_eq!(removed.len(), 33, "{removed:?}");
    assert!(removed.contains(&FAILURE_MODE_ALLOWED_HEADER));
    assert!(removed.contains(&name("x_envoy_auth_failure_mode_allowed")));
    assert!(!req.headers.contains_key(FAILURE_MODE_ALLOWED_HEADER));
}

#[tokio::test]
async fn denies_are_not_failures() {
    let chain = Chain::builder("c")
        .step(Fixed::deny().step("no").failure_mode_allow(true))
        .build()
        .unwrap();
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
}

// Rule 6: step timeouts and the chain deadline.

#[tokio::test(start_paused = true)]
async fn a_slow_step_times_out_into_a_deny() {
    let after = Fixed::allow();
    let (chain, metrics) = build_with_metrics(
        Chain::builder("c")
            .step(
                ChainStep::new("slow", sleeping(Duration::from_secs(30)))
                    .timeout(Duration::from_millis(100)),
            )
            .step(after.step("after")),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(after.runs(), 0);
    let labels = [("step", "slow"), ("result", "error")];
    let counters = Counters::take(&metrics);
    assert_eq!(counters.get("authchain_step_decisions_total", &labels), 1);
}

#[tokio::test(start_paused = true)]
async fn each_run_records_how_long_it_took() {
    let (chain, metrics) = build_with_metrics(
        Chain::builder("c").step(ChainStep::new("slow", sleeping(Duration::from_millis(250)))),
    );
    assert!(chain.authorize(&mut get("/")).await.as_allow().is_some());
    assert_eq!(
        histogram(&metrics, "authchain_chain_duration_seconds"),
        [0.25]
    );

    // A run that decides at once (no clock moves while it runs) and ends
    // in a deny is recorded too.
    let (chain, metrics) = build_with_metrics(
        Chain::builder("c")
            .step(ChainStep::new(
                "a",
                Arc::new(decide_fn(|_| Ok(Decision::authorized()))),
            ))
            .step(ChainStep::new(
                "b",
                Arc::new(decide_fn(|_| Ok(Decision::unauthorized()))),
            )),
    );
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
    assert_eq!(
        histogram(&metrics, "authchain_chain_duration_seconds"),
        [0.0]
    );
}

#[tokio::test(start_paused = true)]
async fn the_chain_deadline_bounds_all_steps_together() {
    // (case, the second step's own timeout): two steps of 600 ms each
    // under a deadline of 1 s.
    let cases = [
        ("no step timeout", None),
        // One longer than what is left of the deadline does not extend it.
        (
            "a step timeout past the deadline",
            Some(Duration::from_secs(5)),
        ),
    ];
    for (name, timeout) in cases {
        let mut two = ChainStep::new("two", sleeping(Duration::from_millis(600)));
        if let Some(timeout) = timeout {
            two = two.timeout(timeout);
        }
        let chain = Chain::builder("c")
            .step(ChainStep::new("one", sleeping(Duration::from_millis(600))))
            .step(two)
            .deadline(Duration::from_secs(1))
            .build()
            .unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            chain.authorize(&mut get("/")).await,
            Decision::unauthorized(),
            "case {name}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1), "case {name}");
    }
}

/// A step's own timeout is what `failureModeAllow` rides out; the
/// chain's deadline running out during a step (one after a slow one,
/// waiting on a limit of its own) is the request's time up, never an
/// allow.
#[tokio::test(start_paused = true)]
async fn the_chain_deadline_never_fails_open() {
    let chain = Chain::builder("c")
        .step(ChainStep::new("one", sleeping(Duration::from_millis(600))))
        .step(
            ChainStep::new("two", sleeping(Duration::from_secs(30)))
                .timeout(Duration::from_secs(5))
                .failure_mode_allow(true),
        )
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(
        chain.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
}

/// A step that answers at once, after work of its own (a policy's
/// evaluation) that took the run past its deadline, answers too late:
/// the run fails closed, as one that waited would.
#[tokio::test]
async fn an_answer_made_at_once_past_the_deadline_is_late() {
    struct Busy(Decision);
    impl AuthService for Busy {
        fn authorize<'a>(&'a self, _: &'a mut AuthorizationRequest) -> Answer<'a> {
            std::thread::sleep(Duration::from_millis(60));
            Ok(self.0.clone()).into()
        }
    }
    let chain = |answer: Decision| {
        Chain::builder("c")
            .step(ChainStep::new("busy", Arc::new(Busy(answer))).failure_mode_allow(true))
            .deadline(Duration::from_millis(20))
            .build()
            .unwrap()
    };
    let late = chain(Decision::authorized());
    assert_eq!(
        late.authorize(&mut get("/")).await,
        Decision::unauthorized()
    );
    // A deny stands, status and all.
    let deny = Decision::deny(StatusCode::NOT_FOUND);
    assert_eq!(chain(deny.clone()).authorize(&mut get("/")).await, deny);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_with_failure_mode_allow_passes_marked() {
    let chain = Chain::builder("c")
        .step(
            ChainStep::new("slow", sleeping(Duration::from_secs(30)))
                .timeout(Duration::from_millis(50))
                .failure_mode_allow(true),
        )
        .build()
        .unwrap();
    let decision = chain.authorize(&mut get("/")).await;
    assert_eq!(
        decision.as_allow().unwrap().headers[0].name,
        FAILURE_MODE_ALLOWED_HEADER
    );
}

// Rule 7: client copies of identity headers are stripped.

struct SetsUser {
    saw: Arc<std::sync::Mutex<Option<Vec<String>>>>,
    set: bool,
}

#[async_trait]
impl AuthService for SetsUser {
    fn authorize<'a>(&'a self, req: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            *self.saw.lock().unwrap() = Some(values(&req.headers, "x-user-id"));
            if !self.set {
                return Ok(Decision::authorized());
            }
            Ok(Allow::new()
                .append_header(name("x-user-id"), value("alice"))
                .into())
        })
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        vec![name("x-user-id")]
    }
}

/// Every spelling of `x-user-id` over `-`, `_` and `.`, sorted.
const USER_ID_SPELLINGS: [&str; 9] = [
    "x-user-id",
    "x-user.id",
    "x-user_id",
    "x.user-id",
    "x.user.id",
    "x.user_id",
    "x_user-id",
    "x_user.id",
    "x_user_id",
];

#[tokio::test]
async fn declared_identity_headers_are_stripped_before_and_after() {
    for set in [true, false] {
        let saw = Arc::new(std::sync::Mutex::new(None));
        let chain = Chain::builder("c")
            .step(ChainStep::new(
                "user",
                Arc::new(SetsUser {
                    saw: saw.clone(),
                    set,
                }),
            ))
            .build()
            .unwrap();
        assert_eq!(chain.stripped_headers(), [name("x-user-id")]);
        let mut req = get("/").with_header(name("x-user-id"), value("admin"));
        let original = req.headers.clone();
        let Decision::Allow(allow) = chain.authorize(&mut req).await else {
            panic!()
        };
        assert_eq!(
            *saw.lock().unwrap(),
            Some(vec![]),
            "the step never sees the forgery"
        );
        let mut upstream = original;
        allow.apply_to_headers(&mut upstream);
        let expected: &[&str] = if set { &["alice"] } else { &[] };
        assert_eq!(values(&upstream, "x-user-id"), expected);
        if set {
            // The append became an overwrite: the client's copy cannot survive.
            assert_eq!(
                allow.headers[0].action,
                HeaderAction::OverwriteIfExistsOrAdd
            );
            // The other spellings stay removed; the name set is not (a
            // proxy removes after it sets).
            let mut removed: Vec<&str> = allow
                .headers_to_remove
                .iter()
                .map(HeaderName::as_str)
                .collect();
            removed.sort();
            assert_eq!(removed, USER_ID_SPELLINGS[1..]);
        } else {
            // Removed upstream even when the chain never saw it (a proxy
            // that forwards only some headers to the auth server), in
            // every spelling.
            let every = USER_ID_SPELLINGS.map(name);
            assert_eq!(allow.headers_to_remove, every);
            let mut unseen = get("/");
            let Decision::Allow(allow) = chain.authorize(&mut unseen).await else {
                panic!()
            };
            assert_eq!(allow.headers_to_remove, every);
        }
    }
}

#[tokio::test]
async fn strip_and_trust_lists_adjust_what_is_stripped() {
    let saw = Arc::new(std::sync::Mutex::new(None));
    let chain = Chain::builder("c")
        .step(ChainStep::new(
            "user",
            Arc::new(SetsUser {
                saw: saw.clone(),
                set: false,
            }),
        ))
        .strip_client_header(name("x-tenant"))
        .trust_client_header(name("x-user-id"))
        .build()
        .unwrap();
    assert_eq!(chain.stripped_headers(), [name("x-tenant")]);
    let mut req = get("/")
        .with_header(name("x-user-id"), value("admin"))
        .with_header(name("x-tenant"), value("other"));
    let Decision::Allow(allow) = chain.authorize(&mut req).await else {
        panic!()
    };
    assert_eq!(*saw.lock().unwrap(), Some(vec!["admin".to_owned()]));
    assert_eq!(
        allow.headers_to_remove,
        [name("x-tenant"), name("x.tenant"), name("x_tenant")]
    );
}

#[tokio::test]
async fn stripping_happens_even_when_the_chain_denies() {
    let saw = Arc::new(std::sync::Mutex::new(None));
    let chain = Chain::builder("c")
        .step(ChainStep::new(
            "user",
            Arc::new(SetsUser {
                saw: saw.clone(),
                set: false,
            }),
        ))
        .step(Fixed::deny().step("no"))
        .build()
        .unwrap();
    let mut req = get("/").with_header(name("x-user-id"), value("admin"));
    assert!(!chain.authorize(&mut req).await.is_allow());
    assert!(!req.headers.contains_key("x-user-id"));
}

#[tokio::test]
async fn every_copy_of_a_stripped_header_goes_whatever_the_request_carries() {
    let chain = Chain::builder("c")
        .step(Fixed::allow().step("a"))
        .strip_client_header(name("x-user-id"))
        .strip_client_header(name("x-tenant"))
        .build()
        .unwrap();
    // From a bare request up to one with many other headers (a short map
    // is scanned, a long one looked up), with both names, one of them
    // twice, in the middle.
    for others in [0, 1, 7, 8, 40] {
        let mut req = get("/");
        for i in 0..others {
            let other = HeaderName::try_from(format!("x-other-{i}")).unwrap();
            req.headers.append(other, value("v"));
            if i == others / 2 {
                req.headers.append(name("x-tenant"), value("t"));
            }
        }
        req.headers.append(name("x-user-id"), value("admin"));
        req.headers.append(name("x-user-id"), value("root"));
        req.headers.append(name("x-tenant"), value("t2"));
        assert!(chain.authorize(&mut req).await.is_allow());
        assert!(!req.headers.contains_key("x-user-id"), "{others} others");
        assert!(!req.headers.contains_key("x-tenant"), "{others} others");
        assert_eq!(req.headers.len(), others, "the others are kept");
    }
}

// The executor is shared across tasks: many concurrent runs, no interference.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_do_not_share_state() {
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    let stamp = service_fn(move |req| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        req.state.insert("n", json!(n));
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(Decision::authorized())
        })
    });
    let check = service_fn(|req| {
        let ok = req.state.get("n").is_some_and(|n| n.is_u64()) && req.state.len() == 1;
        Box::pin(async move {
            Ok(if ok {
                Decision::authorized()
            } else {
                Decision::unauthorized()
            })
        })
    });
    let chain = Arc::new(
        Chain::builder("c")
            .step(ChainStep::new("stamp", Arc::new(stamp)))
            .step(ChainStep::new("check", Arc::new(check)))
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { chain.authorize(&mut get("/")).await.is_allow() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(counter.load(Ordering::SeqCst), 200);
}
