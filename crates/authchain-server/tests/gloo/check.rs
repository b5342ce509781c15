//! `authchain check` over Gloo manifests, as a Gloo user's first try runs
//! it: the manifests alone, no server config around them.

use std::path::Path;
use std::process::Command;

use authchain_testkit::ScratchDir;

use crate::manifest_path;
use crate::support::{binary, run_check};

#[test]
fn every_manifest_of_the_corpus_checks_alone_and_all_together() {
    let dir = manifest_path("");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(!manifests.is_empty(), "no manifest in {}", dir.display());
    for manifest in &manifests {
        let (ok, out, err) = run_check(&[manifest.as_path()]);
        assert!(ok, "{}: {err}", manifest.display());
        assert!(out.lines().count() >= 1, "{}: {out}", manifest.display());
        assert!(out.lines().all(|l| l.starts_with("ok ")), "{out}");
    }
    let all: Vec<&Path> = manifests.iter().map(|p| p.as_path()).collect();
    let (ok, _, err) = run_check(&all);
    assert!(ok, "{err}");
}

/// The step kinds of the book's Gloo compatibility table, by whether it
/// says they are supported: (supported, not supported).
fn compatibility_table() -> (Vec<String>, Vec<String>) {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/gloo.md"),
    )
    .unwrap();
    let table = page
        .split("# Gloo compatibility")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/src/gloo.md is the Gloo compatibility page");
    let (mut supported, mut lacking) = (Vec::new(), Vec::new());
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        // `oauth`, `oauth2`: every kind the first cell names.
        let kinds = cells[0]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|k| k.trim_end_matches(": {}").to_owned());
        if cells[1].starts_with("not supported") {
            lacking.extend(kinds);
        } else if cells[1].starts_with("supported") {
            supported.extend(kinds);
        }
    }
    (supported, lacking)
}

/// Every kind the compatibility table calls supported is in a manifest of the
/// corpus (`pluginAuth`'s is in `examples/`), and the kinds it calls not
/// supported are the ones refused below.
#[test]
fn every_row_of_the_compatibility_table_is_backed_by_the_corpus() {
    let (supported, lacking) = compatibility_table();
    assert!(supported.len() >= 8, "{supported:?}");
    let mut corpus = String::new();
    for entry in std::fs::read_dir(manifest_path("")).unwrap() {
        corpus.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    corpus.push_str(include_str!("../../../../examples/required_header.yaml"));
    for kind in &supported {
        let used = corpus.contains(&format!("- {kind}:")) || corpus.contains(&format!("  {kind}:"));
        assert!(
            used,
            "docs/src/gloo.md says `{kind}` is supported, but no manifest uses it"
        );
    }
    assert_eq!(
        lacking, LACKING,
        "the compatibility table's not-supported rows"
    );
}

/// The Gloo kinds authchain does not bring.
const LACKING: [&str; 3] = ["oauth", "opaServerAuth", "portalAuth"];

#[test]
fn gloo_kinds_authchain_lacks_are_named_as_such() {
    let dir = ScratchDir::new("authchain-gloo").unwrap();
    for kind in LACKING {
        let path = dir
            .write(
                "manifest.yaml",
                &format!(
                    "apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: {{ name: lacking, namespace: gloo-system }}
spec:
  configs:
  - {kind}: {{}}
"
                ),
            )
            .unwrap();
        let (ok, _, err) = run_check(&[path.as_path()]);
        assert!(!ok, "case {kind}");
        assert!(
            err.contains(&format!(
                "spec.configs[0].{kind}: `{kind}` is a Gloo step kind that authchain does not support"
            )),
            "case {kind}: {err}"
        );
    }
}

#[test]
fn a_manifest_given_as_the_server_config_is_told_how_to_check_it() {
    let manifest = manifest_path("jwt-placeholder.yaml");
    let out = Command::new(binary())
        .arg("check")
        .arg("--config")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "this file is a manifest, not a server config: `authchain check {}`",
            manifest.display()
        )),
        "{err}"
    );
}
