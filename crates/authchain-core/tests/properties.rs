//! Properties over arbitrary input: the path canonicalizer and the config
//! parser never panic, a canonical path is a fixed point, a config
//! printed parses back to the same config, and cookies are split as
//! `<[u8]>::split` splits them.
//!
//! The suite runs a bounded number of cases; run it longer with
//! `PROPTEST_CASES=100000 cargo test -p authchain-core --test properties`.

#![allow(clippy::unwrap_used)]

use authchain_core::path::canonicalize;
use authchain_core::{AmbiguousPaths, AuthConfig, AuthorizationRequest, Format};
use http::{HeaderValue, Method, header::COOKIE};
use proptest::prelude::*;

/// Paths made mostly of what matters to a canonicalizer.
fn pathy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%00".to_owned()),
            Just("%25".to_owned()),
            Just("%41".to_owned()),
            Just(";".to_owned()),
            Just("?".to_owned()),
            Just("#".to_owned()),
            Just("\\".to_owned()),
            "[a-z]{1,3}",
            any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn mode() -> impl Strategy<Value = AmbiguousPaths> {
    prop_oneof![Just(AmbiguousPaths::Reject), Just(AmbiguousPaths::Keep)]
}

/// Strings YAML likes to read as something else.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "yes",
            "no",
            "on",
            "off",
            "true",
            "null",
            "~",
            "1e3",
            "0x10",
            "0o7",
            "012",
            ".inf",
            "-.nan",
            "1_000",
            "2026-12-06",
            "12:30:00",
            "- a",
            "a: b",
            "#c",
            "&a",
            "*a",
            "!tag",
            "|",
            ">",
            "'",
            "\"",
            "%YAML",
            "---",
            "...",
            " lead",
            "trail ",
            "a\nb",
            "\t",
            "é",
            "\u{1F600}",
            "\u{85}",
            "\u{FEFF}",
            "\r\n",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

/// JSON values shaped like what a config holds, tricky ones included.
fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A cookie pair as the request reads it: split at `=`, trimmed of
/// spaces and tabs, the reference for its own splitting.
fn reference_pair(piece: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let trim = |b: &[u8]| {
        let keep = |c: &u8| *c != b' ' && *c != b'\t';
        let start = b.iter().position(keep).unwrap_or(b.len());
        let end = b.iter().rposition(keep).map_or(start, |i| i + 1);
        b[start..end].to_vec()
    };
    let eq = piece.iter().position(|c| *c == b'=')?;
    Some((trim(&piece[..eq]), trim(&piece[eq + 1..])))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn cookies_are_split_as_slices_split(
        headers in prop::collection::vec(
            prop::collection::vec(prop::sample::select(b"ab=;, \t\x80A".to_vec()), 0..24),
            1..3,
        ),
        name in "[abAB]{1,2}",
    ) {
        let mut request = AuthorizationRequest::new(Method::GET, "/");
        for header in &headers {
            request = request.with_header(COOKIE, HeaderValue::from_bytes(header).unwrap());
        }
        let owned = |(n, v): (&[u8], &[u8])| (n.to_vec(), v.to_vec());
        let pairs: Vec<_> = request.cookie_pairs().map(owned).collect();
        let expected: Vec<_> = headers
            .iter()
            .flat_map(|h| h.split(|c| *c == b';'))
            .filter_map(reference_pair)
            .collect();
        prop_assert_eq!(pairs, expected);
        let spelled: Vec<_> = request.cookies_spelled_like(&name).map(owned).collect();
        let expected: Vec<_> = headers
            .iter()
            .flat_map(|h| h.split(|c| b";, \t".contains(c)))
            .filter_map(reference_pair)
            .filter(|(n, _)| std::str::from_utf8(n).is_ok() && n.eq_ignore_ascii_case(name.as_bytes()))
            .collect();
        prop_assert_eq!(spelled, expected);
    }

    #[test]
    fn canonical_paths_are_fixed_points(path in pathy(), mode in mode()) {
        if let Ok(Some(canonical)) = canonicalize(&path, mode) {
            let (only, _) = canonical.split_once('?').unwrap_or((&canonical, ""));
            prop_assert!(only.starts_with('/'));
            prop_assert!(!only.contains("//"), "{canonical}");
            for segment in only.split('/') {
                prop_assert!(segment != "." && segment != "..", "{canonical}");
            }
            prop_assert_eq!(canonicalize(&canonical, mode), Ok(None));
        }
    }

    #[test]
    fn any_text_is_canonical_rewritten_or_refused(path in any::<String>(), mode in mode()) {
        let _ = canonicalize(&path, mode);
    }

    #[test]
    fn unreserved_escapes_change_nothing(
        segments in proptest::collection::vec("[a-zA-Z0-9._~-]{1,6}", 1..6),
        escape in any::<u64>(),
    ) {
        let plain = format!("/{}", segments.join("/"));
        let escaped: String = plain
            .chars()
            .enumerate()
            .map(|(i, c)| match c != '/' && escape >> (i % 64) & 1 == 1 {
                true => format!("%{:02x}", u32::from(c)),
                false => c.to_string(),
            })
            .collect();
        let canonical = |p: &str| {
            canonicalize(p, AmbiguousPaths::Reject).map(|c| c.unwrap_or_else(|| p.to_owned()))
        };
        prop_assert_eq!(canonical(&escaped), canonical(&plain));
    }

    #[test]
    fn any_document_parses_or_is_refused(text in any::<String>()) {
        let _ = AuthConfig::parse("fuzz.yaml", &text, Format::Yaml);
        let _ = AuthConfig::parse("fuzz.json", &text, Format::Json);
    }

    #[test]
    fn any_spec_shaped_document_parses_or_is_refused(
        name in "[a-z.]{0,8}",
        key in prop_oneof![Just("configs"), Just("booleanExpr"), Just("statusOnError"), Just("deadline"), Just("cache"), Just("allowAmbiguousPaths")],
        value in prop_oneof![Just("[]".to_owned()), Just("{}".to_owned()), Just("-1".to_owned()), "[ -~]{0,12}"],
    ) {
        let text = format!("name: {name}\n{key}: {value}\nconfigs: [{{ rules: {{ defaultAction: allow }} }}]\n");
        let _ = AuthConfig::parse("fuzz.yaml", &text, Format::Yaml);
    }

    #[test]
    fn a_printed_config_parses_back_to_the_same(
        name in tricky_string().prop_filter("named", |n| !n.is_empty()),
        namespace in prop::option::of("[a-z][a-z0-9.-]{0,10}"),
        spec in prop::collection::btree_map(
            tricky_string().prop_filter("not name", |k| k != "name"),
            value(),
            0..6,
        ),
    ) {
        let spec: serde_json::Map<String, serde_json::Value> = spec.into_iter().collect();
        let doc = match &namespace {
            None => {
                let mut doc = spec.clone();
                doc.insert("name".into(), name.clone().into());
                serde_json::Value::Object(doc)
            }
            Some(ns) => serde_json::json!({
                "apiVersion": "enterprise.gloo.solo.io/v1",
                "kind": "AuthConfig",
                "metadata": { "name": name, "namespace": ns },
                "spec": spec,
                "status": { "state": 1 },
            }),
        };
        // JSON is mostly YAML too: the first text goes through both
        // readers (YAML refuses some characters JSON writes raw).
        let text = serde_json::to_string(&doc).unwrap();
        for format in [Format::Json, Format::Yaml] {
            let configs = match AuthConfig::parse("a", &text, format) {
                Ok(configs) => configs,
                Err(_) if format == Format::Yaml => continue,
                Err(e) => panic!("{e}"),
            };
            prop_assert_eq!(configs.len(), 1);
            // A key `<<` (JSON's) is YAML's merge key: not printed.
            let printed = match configs[0].to_yaml() {
                Ok(printed) => printed,
                Err(e) if e.to_string().contains("merge key") => {
                    prop_assert!(text.contains("\"<<\""), "{e}");
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let again = AuthConfig::parse("a", &printed, Format::Yaml);
            prop_assert_eq!(again.as_ref().ok(), Some(&configs), "printed:\n{}", printed);
        }
    }
}
