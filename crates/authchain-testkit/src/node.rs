//! The Node.js scripts of `crates/authchain-testkit/idp/` (the IdP and the
//! browser driver), run from `.peers/idp` where `./scripts/install-peers.sh`
//! installed their npm packages.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Locator, PeerError, workspace_root};

/// Where `node` comes from.
pub(crate) const NODE: Locator = Locator {
    name: "node",
    env_var: "AUTHCHAIN_NODE",
    python: None,
    venv_bin: None,
    path_names: &["node", "/usr/bin/node"],
    install_hint: "it apt-installs nodejs and npm when node is missing",
};

/// The lock file the npm packages in `.peers/idp` must have been installed
/// from.
const PACKAGE_LOCK: &str = include_str!("../idp/package-lock.json");

/// Writes `contents` as `name` into `.peers/idp` (next to its
/// `node_modules`, so that the script's imports resolve there) and returns
/// its path, after checking that the npm packages there were installed
/// from this crate's `idp/package-lock.json`.
pub(crate) fn script(name: &str, contents: &str) -> Result<PathBuf, PeerError> {
    let dir = workspace_root().join(".peers/idp");
    let installed = fs::read_to_string(dir.join("package-lock.json")).unwrap_or_default();
    if !dir.join("node_modules/.package-lock.json").is_file() || installed != PACKAGE_LOCK {
        let state = if installed.is_empty() {
            "not installed"
        } else {
            "installed from an older crates/authchain-testkit/idp/package-lock.json"
        };
        return Err(PeerError::new(format!(
            "the IdP's npm packages (oidc-provider, playwright-core) are {state} in {}.\n\
             Install them with `./scripts/install-peers.sh` (from the workspace root; \
             it runs `npm ci` there)",
            dir.display()
        )));
    }
    let path = dir.join(name);
    if fs::read_to_string(&path).is_ok_and(|text| text == contents) {
        return Ok(path);
    }
    // Written aside and renamed, so that a test starting at the same time
    // never runs half a script.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let aside = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&aside, contents)
        .and_then(|()| fs::rename(&aside, &path))
        .map_err(|e| PeerError::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}
