//! `authchain check` accepts every seed's `authchain.yaml` as it is.

use std::process::Command;

use crate::seed::{SCENARIOS, seeds_dir};
use crate::support::binary;

#[test]
fn authchain_check_accepts_every_seed_config() {
    let mut failed = Vec::new();
    for (scenario, _) in SCENARIOS {
        let path = seeds_dir().join(scenario).join("authchain.yaml");
        let out = Command::new(binary())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        if !out.status.success() {
            failed.push(format!(
                "{scenario}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
