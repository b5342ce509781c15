//! Running the table over one transport: every row sent, every mismatch
//! collected, one failure at the end that lists them all.

use std::fmt::Write as _;

use authchain_core::path::{AmbiguousPaths, canonicalize};
use authchain_testkit::client::{self, Reply};
use authchain_testkit::{EchoedRequest, PeerError};

use crate::table::{BOB_KEY, Expect, Row, rows};
use crate::transports::{Stack, Transport};

/// Starts `transport`'s stack, sends every row of the table through it
/// and fails with the list of every row whose outcome differs from the
/// row's expectation, with the proxy's and authchain's output.
pub(crate) async fn run_table(transport: Transport) {
    let stack = Stack::start(transport).await;
    let rows = rows();
    let mut mismatches = Vec::new();
    let mut summary = String::new();
    let start = stack.hits();
    let mut in_rows = 0;
    for row in &rows {
        let expect = row.expect_on(transport);
        let before = stack.hits();
        let reply = client::raw(stack.addr, &row.bytes()).await;
        let reached = stack.hits() - before;
        in_rows += reached;
        let problem = judge(row, expect, reached, &reply);
        let answer = match &reply {
            Ok(reply) => reply.status.as_u16().to_string(),
            Err(_) => "no response".to_owned(),
        };
        let mark = if problem.is_some() {
            "  <-- MISMATCH"
        } else {
            ""
        };
        let _ = writeln!(
            summary,
            "  {:<72} {answer:>11} app+{reached}{mark}",
            row.name
        );
        if let Some(problem) = problem {
            mismatches.push(format!(
                "[{transport}] {}: {problem}\n      request: {:?}",
                row.name,
                String::from_utf8_lossy(&row.bytes())
            ));
        }
    }
    // A request the app got while no row was waiting for it (one
    // smuggled in a body, say, and served late).
    let outside = stack.hits() - start - in_rows;
    if outside > 0 {
        mismatches.push(format!(
            "[{transport}] {outside} request(s) reached the app outside any row's window"
        ));
    }
    println!("--- {transport}: {} rows ---\n{summary}", rows.len());
    assert!(
        mismatches.is_empty(),
        "{} of {} rows mismatch on {transport}:\n{}\n\n--- every row ---\n{summary}\n{}",
        mismatches.len(),
        rows.len(),
        mismatches.join("\n"),
        stack.output()
    );
}

/// What is wrong with a row's outcome, if anything: `reached` is how
/// many requests the app got while the row ran.
fn judge(
    row: &Row,
    expect: Expect,
    reached: usize,
    reply: &Result<Reply, PeerError>,
) -> Option<String> {
    match expect {
        Expect::AnsweredByProxy => (reached > 0).then(|| {
            format!(
                "expected the proxy to answer it, but it REACHED the app ({reached} request(s)): {}",
                describe(reply)
            )
        }),
        Expect::BlockedOrReach(canonical) => match reached {
            0 => judge(row, Expect::Blocked, reached, reply),
            _ => judge(row, Expect::Reach(canonical), reached, reply),
        },
        Expect::Blocked => {
            if reached > 0 {
                return Some(format!(
                    "expected BLOCKED, but it REACHED the app ({reached} request(s)): {}",
                    describe(reply)
                ));
            }
            match reply {
                Ok(reply) if reply.status.is_success() => Some(format!(
                    "expected BLOCKED: the app saw nothing, but the client got {} \
                     (a 2xx is an allow to a forward-auth proxy): {}",
                    reply.status,
                    short(&reply.text())
                )),
                _ => None,
            }
        }
        Expect::Reach(canonical) => {
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => return Some(format!("expected REACH, got no response: {e}")),
            };
            if reached == 0 {
                return Some(format!(
                    "expected REACH, but it was blocked with {}: {}",
                    reply.status,
                    short(&reply.text())
                ));
            }
            // A HEAD's answer has no body to show what reached: its count
            // does (the GET rows show the same chain's identity and path).
            if row.method == "HEAD" && reached == 1 && reply.status.is_success() {
                return None;
            }
            let seen = match reply.echoed() {
                Ok(seen) => seen,
                Err(e) => return Some(format!("reached the app, but: {e}")),
            };
            let mut problems = Vec::new();
            if reached > 1 {
                problems.push(format!("the app got {reached} requests"));
            }
            if seen.method != row.method {
                problems.push(format!("the app got method {}", seen.method));
            }
            match canonicalize(&seen.path, AmbiguousPaths::Reject) {
                Ok(canonical_seen) => {
                    let canonical_seen = canonical_seen.unwrap_or_else(|| seen.path.clone());
                    if canonical_seen != canonical {
                        problems.push(format!(
                            "the app got path {:?} (canonical {canonical_seen:?}), expected {canonical:?}",
                            seen.path
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "the app got path {:?}, which is ambiguous: {e}",
                    seen.path
                )),
            }
            // The host the app may read first (Rails, Django behind a
            // trusted proxy): the one judged, if any.
            let hosts = spelled(&seen, "x-forwarded-host");
            if hosts.iter().any(|(_, h)| !h.eq_ignore_ascii_case("app.example")) {
                problems.push(format!("the app got forwarded hosts {hosts:?}"));
            }
            let identity = identity(&seen);
            if identity != [("x-user-id", "bob")] {
                problems.push(format!(
                    "the app got identity {identity:?}, expected exactly [(\"x-user-id\", \"bob\")]"
                ));
            }
            let tenants = spelled(&seen, "x-tenant");
            if !tenants.is_empty() {
                problems.push(format!("the app got stripped headers {tenants:?}"));
            }
            // A key the chain did not check, under any spelling an app
            // may read as `api-key`.
            let unchecked: Vec<_> = spelled(&seen, "api-key")
                .into_iter()
                .filter(|(_, value)| *value != BOB_KEY)
                .collect();
            if !unchecked.is_empty() {
                problems.push(format!("the app got unchecked keys {unchecked:?}"));
            }
            (!problems.is_empty()).then(|| problems.join("; "))
        }
    }
}

/// Every header line at the app whose name, lower-cased with `_` and `.`
/// read as `-`, is `x-user-id`.
fn identity(seen: &EchoedRequest) -> Vec<(&str, &str)> {
    spelled(seen, "x-user-id")
}

/// Every header line at the app whose name, lower-cased with `_` and `.`
/// read as `-`, is `name`.
fn spelled<'a>(seen: &'a EchoedRequest, name: &str) -> Vec<(&'a str, &'a str)> {
    seen.headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().replace(['_', '.'], "-") == name)
        .map(|(n, value)| (n.as_str(), value.as_str()))
        .collect()
}

/// What reached the app, as far as the reply says.
fn describe(reply: &Result<Reply, PeerError>) -> String {
    match reply {
        Err(e) => format!("no response at the client ({e})"),
        Ok(reply) => match reply.json::<EchoedRequest>() {
            Ok(seen) => format!(
                "status {}, the app got {} {:?} with identity {:?}",
                reply.status,
                seen.method,
                seen.path,
                identity(&seen)
            ),
            Err(_) => format!("status {}: {}", reply.status, short(&reply.text())),
        },
    }
}

/// The start of a body, on one line.
fn short(text: &str) -> String {
    let text: String = text.chars().take(160).collect();
    text.replace(['\r', '\n'], " ")
}
