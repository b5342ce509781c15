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

#[test]
fn gloo_kinds_authchain_lacks_are_named_as_such() {
    let dir = ScratchDir::new("authchain-gloo").unwrap();
    for kind in ["oauth", "oauth2", "opaServerAuth", "portalAuth"] {
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
