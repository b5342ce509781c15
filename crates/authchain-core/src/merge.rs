//! How a step's allow joins the run's (the merge the chain's rule 2
//! describes), and which spellings of a header name an upstream reads as
//! one (rule 7).

use std::mem;

use http::{HeaderMap, HeaderName};

use crate::request::names_parameter;
use crate::{Allow, AuthorizationRequest, HeaderAction, HeaderMutation};

/// Removes from `headers` every header whose name is one of `names` in
/// some spelling ([`same_folded`]); the names removed.
pub(crate) fn strip_headers(headers: &mut HeaderMap, names: &[HeaderName]) -> Vec<HeaderName> {
    let mut doomed = Vec::new();
    for key in headers.keys() {
        if names.iter().any(|n| same_folded(key.as_str(), n.as_str())) {
            doomed.push(key.clone());
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
    doomed
}

/// Adds `names` to `removals`, each once.
pub(crate) fn add_removals(removals: &mut Vec<HeaderName>, names: Vec<HeaderName>) {
    for name in names {
        if !removals.contains(&name) {
            removals.push(name);
        }
    }
}

/// Whether two header names are one name to an upstream that folds their
/// case and punctuation together, as CGI-style servers do when they turn
/// `x-user-id`, `x_user_id` (WSGI, PHP, Rack), `x.user.id` (PHP) and
/// `x~user~id` (lighttpd, which folds every character but a letter or a
/// digit) alike into `HTTP_X_USER_ID`.
pub(crate) fn same_folded(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    let (a, b) = (a.as_ref(), b.as_ref());
    let fold = |c: u8| match c.to_ascii_lowercase() {
        c if c.is_ascii_alphanumeric() => c,
        _ => b'-',
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// The most separators of a name whose every spelling over `-`, `_` and
/// `.` is listed for removal (3^4 = 81 spellings).
const MAX_EVERY_SPELLING_SEPARATORS: usize = 4;

/// The most separators of a name whose every spelling over `-` and `_`
/// is listed when its spellings over the three are too many (2^6 = 64).
const MAX_DASH_UNDERSCORE_SEPARATORS: usize = 6;

/// The spellings of `name` an upstream may fold into it, with `-`, `_`
/// and `.` at its separators: every one for a short name; for a longer
/// one those over `-` and `_`, and the all-`.` one; for a longer one
/// still, the all-`-`, all-`_` and all-`.` ones. A spelling a client sent
/// is still stripped and listed, where the chain sees it.
pub(crate) fn spellings(name: &HeaderName) -> Vec<HeaderName> {
    let bytes = name.as_str().as_bytes();
    let separators: Vec<usize> = (0..bytes.len())
        .filter(|&i| matches!(bytes[i], b'-' | b'_' | b'.'))
        .collect();
    let symbols: &[u8] = match separators.len() {
        k if k <= MAX_EVERY_SPELLING_SEPARATORS => b"-_.",
        k if k <= MAX_DASH_UNDERSCORE_SEPARATORS => b"-_",
        _ => b"",
    };
    // Every choice of `symbols` at each separator, then the uniform ones.
    let mut spelled = match symbols {
        [] => Vec::new(),
        _ => vec![bytes.to_vec()],
    };
    for &at in &separators {
        spelled = spelled
            .into_iter()
            .flat_map(|name| {
                symbols.iter().map(move |&symbol| {
                    let mut name = name.clone();
                    name[at] = symbol;
                    name
                })
            })
            .collect();
    }
    spelled.extend(b"-_.".iter().map(|&symbol| {
        let mut name = bytes.to_vec();
        for &at in &separators {
            name[at] = symbol;
        }
        name
    }));
    let mut out: Vec<HeaderName> = spelled
        .iter()
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    out.dedup();
    out
}

/// Applies a step's allow to the request the next step sees, and merges
/// it into the chain's accumulated allow: whole, or (`forwarded`) only
/// what the request cannot carry.
pub(crate) fn merge(
    acc: &mut Allow,
    step: &mut Allow,
    request: &mut AuthorizationRequest,
    forwarded: bool,
) {
    if forwarded {
        apply_in_place(acc, step, request);
    } else {
        merge_all(acc, step, request);
    }
}

/// [`merge`] for a forwarded request: the changes are applied to it in
/// order, and the allow keeps no record of them.
fn apply_in_place(acc: &mut Allow, step: &mut Allow, request: &mut AuthorizationRequest) {
    for m in step.headers.drain(..) {
        m.action.apply_to(&mut request.headers, m.name, m.value);
    }
    for name in &step.headers_to_remove {
        request.headers.remove(name);
    }
    for (key, value) in &step.query_parameters_to_set {
        request.set_query_parameter(key, value);
    }
    for key in &step.query_parameters_to_remove {
        request.remove_query_parameter(key);
    }
    merge_response(acc, step);
}

/// [`merge`] in whole. Reuses the step's vectors where the accumulator
/// has none yet.
fn merge_all(acc: &mut Allow, step: &mut Allow, request: &mut AuthorizationRequest) {
    // Most steps fill one or two of these: the empty ones cost a test.
    if !step.headers.is_empty() {
        let start = acc.headers.len();
        append_mutations(&mut acc.headers, &mut step.headers);
        normalize_headers(acc, start, request);
    }
    if !step.headers_to_remove.is_empty() {
        merge_removals(acc, step, request);
    }
    if !step.query_parameters_to_set.is_empty() || !step.query_parameters_to_remove.is_empty() {
        merge_query(acc, step, request);
    }
    merge_response(acc, step);
}

/// [`merge_all`]'s header removals.
fn merge_removals(acc: &mut Allow, step: &mut Allow, request: &mut AuthorizationRequest) {
    for name in step.headers_to_remove.drain(..) {
        request.headers.remove(&name);
        acc.headers.retain(|m| m.name != name);
        if !acc.headers_to_remove.contains(&name) {
            acc.headers_to_remove.push(name);
        }
    }
}

/// [`merge_all`]'s query parameter changes. A proxy sets and removes
/// parameters by their names as written (Envoy removes after it sets): a
/// change of `key` also lists for removal the request's other spellings of
/// it (`user.id` for `user_id`), which an app reads as `key` too.
fn merge_query(acc: &mut Allow, step: &mut Allow, request: &mut AuthorizationRequest) {
    for (key, value) in step.query_parameters_to_set.drain(..) {
        let others = request.rewrite_query(&key, Some(&value));
        acc.query_parameters_to_set
            .retain(|(k, _)| !names_parameter(k, &key));
        acc.query_parameters_to_remove.retain(|k| *k != key);
        add_query_removals(acc, others.into_iter().filter(|n| *n != key));
        acc.query_parameters_to_set.push((key, value));
    }
    for key in step.query_parameters_to_remove.drain(..) {
        let named = request.rewrite_query(&key, None);
        acc.query_parameters_to_set
            .retain(|(k, _)| !names_parameter(k, &key));
        add_query_removals(acc, std::iter::once(key).chain(named));
    }
}

/// Lists `names` for removal, once each.
fn add_query_removals(acc: &mut Allow, names: impl Iterator<Item = String>) {
    let mut listed: std::collections::HashSet<String> =
        acc.query_parameters_to_remove.iter().cloned().collect();
    for name in names {
        if listed.insert(name.clone()) {
            acc.query_parameters_to_remove.push(name);
        }
    }
}

/// Merges what a step's allow says beside the request's changes (its
/// response headers, metadata and user), taking them from `step`.
#[inline(always)]
fn merge_response(acc: &mut Allow, step: &mut Allow) {
    if !step.response_headers.is_empty() {
        append_mutations(&mut acc.response_headers, &mut step.response_headers);
    }
    if !step.dynamic_metadata.is_empty() {
        if acc.dynamic_metadata.is_empty() {
            acc.dynamic_metadata = mem::take(&mut step.dynamic_metadata);
        } else {
            acc.dynamic_metadata
                .extend(mem::take(&mut step.dynamic_metadata));
        }
    }
    if step.user_info.is_some() {
        acc.user_info = step.user_info.take();
    }
    if let Some(at) = step.expires {
        acc.expires = Some(acc.expires.map_or(at, |earlier| earlier.min(at)));
    }
}

/// Moves `from`'s mutations to the end of `to`: the whole vector when `to`
/// has none (no copy), else appended.
fn append_mutations(to: &mut Vec<HeaderMutation>, from: &mut Vec<HeaderMutation>) {
    if to.is_empty() {
        *to = mem::take(from);
    } else {
        to.append(from);
    }
}

/// Resolves and applies `acc.headers[start..]` one by one against the
/// request, keeping the invariant of [`crate::Chain`]'s merge: per name, an
/// overwrite first (which drops every earlier entry and removal of that
/// name) or only adding entries.
fn normalize_headers(acc: &mut Allow, start: usize, request: &mut AuthorizationRequest) {
    use HeaderAction::*;
    use http::header::Entry;
    let mut i = start;
    while i < acc.headers.len() {
        let removed = acc
            .headers_to_remove
            .iter()
            .position(|n| *n == acc.headers[i].name);
        // One lookup of the name serves both the resolution and the change.
        let m = &acc.headers[i];
        let entry = request.headers.entry(&m.name);
        let present = matches!(entry, Entry::Occupied(_));
        let action = match m.action {
            OverwriteIfExistsOrAdd => Some(OverwriteIfExistsOrAdd),
            OverwriteIfExists => present.then_some(OverwriteIfExistsOrAdd),
            AddIfAbsent if present => None,
            // Known to be absent upstream too: removed by the chain.
            AddIfAbsent | AppendIfExistsOrAdd if removed.is_some() => Some(OverwriteIfExistsOrAdd),
            AddIfAbsent => Some(AddIfAbsent),
            AppendIfExistsOrAdd => Some(AppendIfExistsOrAdd),
        };
        let Some(action) = action else {
            acc.headers.remove(i);
            continue;
        };
        // `AddIfAbsent` is left only when absent, so this always applies.
        action.apply(entry, m.value.clone());
        acc.headers[i].action = action;
        if action == OverwriteIfExistsOrAdd {
            // Envoy applies removals after sets (gRPC and HTTP mode alike):
            // a removal of the name would remove the value set here, which
            // replaces the client's copy anyway. Other spellings stay listed.
            if let Some(r) = removed {
                acc.headers_to_remove.remove(r);
            }
            let mut j = 0;
            while j < i {
                if acc.headers[j].name == acc.headers[i].name {
                    acc.headers.remove(j);
                    i -= 1;
                } else {
                    j += 1;
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(name: &'static str) -> Vec<String> {
        spellings(&HeaderName::from_static(name))
            .iter()
            .map(|n| n.as_str().to_owned())
            .collect()
    }

    #[test]
    fn short_names_have_every_spelling_over_dash_underscore_and_dot() {
        let user = names("x-user-id");
        assert_eq!(user.len(), 9, "{user:?}");
        for spelling in [
            "x-user-id",
            "x_user_id",
            "x.user.id",
            "x.user-id",
            "x_user.id",
        ] {
            assert!(user.iter().any(|n| n == spelling), "{spelling}: {user:?}");
        }
        assert_eq!(names("apikey"), ["apikey"]);
        assert_eq!(names("x-a-b-c-d").len(), 81);
    }

    #[test]
    fn punctuation_folds_together() {
        for spelling in ["x_user_id", "x.user.id", "x~user+id", "x!user|id"] {
            assert!(same_folded(spelling, "x-user-id"), "{spelling}");
        }
        assert!(!same_folded("x-user-ids", "x-user-id"));
        assert!(!same_folded("x-userxid", "x-user-id"));
    }

    #[test]
    fn longer_names_have_fewer() {
        // Five separators: 2^5 over `-` and `_`, and the all-`.` one.
        let mark = names("x-envoy-auth-failure-mode-allowed");
        assert_eq!(mark.len(), 33, "{mark:?}");
        assert!(
            mark.iter()
                .any(|n| n == "x.envoy.auth.failure.mode.allowed")
        );
        assert!(
            mark.iter()
                .any(|n| n == "x_envoy-auth_failure-mode_allowed")
        );
        let long = names("x-a-b-c-d-e-f-g");
        assert_eq!(
            long,
            ["x-a-b-c-d-e-f-g", "x.a.b.c.d.e.f.g", "x_a_b_c_d_e_f_g"]
        );
    }
}
