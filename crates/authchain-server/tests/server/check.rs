//! `authchain check`: validate without serving.

use std::process::Command;

use authchain_testkit::ScratchDir;

use crate::support::{binary, run_check};

fn check(dir: &ScratchDir, config: &str) -> (bool, String, String) {
    let path = dir.write("authchain.yaml", config).unwrap();
    run_check(&[std::ffi::OsStr::new("--config"), path.as_os_str()])
}

#[test]
fn a_good_config_prints_one_line_per_auth_config() {
    let dir = ScratchDir::new("authchain-check").unwrap();
    dir.write(
        "gloo.yaml",
        "apiVersion: enterprise.gloo.solo.io/v1
kind: AuthConfig
metadata: { name: keys, namespace: gloo-system }
spec:
  configs:
  - apiKeyAuth:
      headerName: api-key
      keys: [{ key: not-in-the-output }]
",
    )
    .unwrap();
    let (ok, out, err) = check(
        &dir,
        "http: { address: '127.0.0.1:9002' }
authConfigFiles: [gloo.yaml]
authConfigs:
- name: ratings
  configs:
  - name: rule
    rules: { defaultAction: deny, rules: [{ action: allow, path: { exact: /ratings/1 } }] }
  - name: second
    rules: { defaultAction: allow }
",
    );
    assert!(ok, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("ok ratings: 2 steps (rule, second)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("ok gloo-system.keys: 1 step (config_0)"),
        "{out}"
    );
    assert!(lines[1].contains("gloo.yaml"), "{out}");
    assert!(!out.contains("not-in-the-output") && !err.contains("not-in-the-output"));
}

#[test]
fn every_problem_is_printed_with_its_place_and_the_exit_status_says_so() {
    let dir = ScratchDir::new("authchain-check").unwrap();
    dir.write(
        "broken.yaml",
        "name: broken\nconfigs:\n- basicAuth: { realm: x, apr: { users: { bob: { salt: 1 } } } }\n",
    )
    .unwrap();
    let (ok, out, err) = check(
        &dir,
        "grpc: { address: '127.0.0.1:1' }
authConfigFiles: [broken.yaml, missing.yaml]
authConfigs:
- name: a
  configs:
  - pluginAuth: { name: NoSuchPlugin }
- name: b
  configs:
  - apiKeyAuth: { keys: [{ key: s3cr3t-value }], headerNme: x }
",
    );
    assert!(!ok, "{out}\n{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("authConfigs[0]") && err.contains("NoSuchPlugin"),
        "{err}"
    );
    assert!(
        err.contains("authConfigs[1]") && err.contains("headerNme"),
        "{err}"
    );
    assert!(err.contains("missing.yaml"), "{err}");
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(err.contains("problems in the config"), "{err}");
    assert!(!err.contains("s3cr3t-value"), "{err}");
}

#[test]
fn settings_errors_name_their_key_and_no_config_checks_the_default() {
    let dir = ScratchDir::new("authchain-check").unwrap();
    let (ok, _, err) = check(
        &dir,
        "http: { address: 'not an address' }\nlog: { level: '[' }\n",
    );
    assert!(!ok);
    assert!(err.contains("http.address"), "{err}");
    // What `serve` refuses, `check` does: a file that opens no listener.
    let (ok, _, err) = check(
        &dir,
        "authConfigs: [{ name: a, configs: [{ rules: { defaultAction: allow } }] }]\n",
    );
    assert!(!ok);
    assert!(
        err.contains("no check listener") && err.contains("authchain.yaml"),
        "{err}"
    );

    let out = Command::new(binary()).arg("check").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok ratings"));

    let out = Command::new(binary())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("defaultConfig: ratings"));
}

/// `check --config` reads a step's relative file beside the config file,
/// whatever the working directory.
#[test]
fn a_relative_file_is_read_beside_the_config() {
    let dir = ScratchDir::new("authchain-check").unwrap();
    dir.write("keys.yaml", "- { key: k3y-one-0123456789 }\n")
        .unwrap();
    let (ok, out, err) = check(
        &dir,
        "grpc: { address: '127.0.0.1:9001' }
authConfigs:
- name: keys
  configs:
  - apiKeyAuth: { headerName: api-key, keysFile: keys.yaml }
",
    );
    assert!(ok, "{out}{err}");
}
