//! Properties over arbitrary input: the path canonicalizer and the config
//! parser never panic, and a canonical path is a fixed point.
//!
//! The suite runs a bounded number of cases; run it longer with
//! `PROPTEST_CASES=100000 cargo test -p authchain-core --test properties`.

#![allow(clippy::unwrap_used)]

use authchain_core::path::canonicalize;
use authchain_core::{AmbiguousPaths, AuthConfig, Format};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

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
}
