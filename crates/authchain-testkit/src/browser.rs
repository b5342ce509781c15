//! A real browser: headless Chromium (Debian's `chromium`) driven by npm's
//! `playwright-core` from `node` (the script `idp/browser.mjs` of this
//! crate), for login flows as a user's browser runs them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::node::{self, NODE};
use crate::{ChildPeer, Locator, PeerError, ScratchDir};

/// Where the Chromium binary comes from.
pub const CHROMIUM: Locator = Locator {
    name: "chromium",
    env_var: "AUTHCHAIN_CHROMIUM",
    python: None,
    venv_bin: None,
    path_names: &["chromium", "/usr/bin/chromium"],
    install_hint: "it apt-installs chromium",
};

/// How long [`login`] may take, the browser's start included.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the browser ended up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BrowserPage {
    /// The page's URL.
    pub url: String,
    /// Its text (`document.body.innerText`).
    pub text: String,
}

#[derive(Debug, Deserialize)]
struct Outcome {
    url: Option<String>,
    text: Option<String>,
    error: Option<String>,
}

/// Opens `url` in a fresh headless Chromium (no cookies), fills the IdP's
/// login form (inputs `login` and `password`) with `username` and
/// `password`, submits it, and waits until the browser is back on `url`'s
/// origin; gives that page. The IdP showing its form again with an error
/// (a wrong password), or [`LOGIN_TIMEOUT`] passing, is an error that
/// quotes the page.
pub async fn login(url: &str, username: &str, password: &str) -> Result<BrowserPage, PeerError> {
    let node = NODE.locate()?;
    let chromium = CHROMIUM.locate()?;
    let script = node::script("browser.mjs", include_str!("../idp/browser.mjs"))?;
    let dir = ScratchDir::new("browser")?;
    let out = dir.path().join("result.json");
    // The script's own limit comes first, so that it reports where it was.
    let inner = LOGIN_TIMEOUT - Duration::from_secs(10);
    let job = serde_json::json!({
        "url": url,
        "username": username,
        "password": password,
        "chromium": chromium,
        "timeout_ms": inner.as_millis() as u64,
        "out": out,
    });
    let mut command = Command::new(node);
    command
        .arg(&script)
        .env("AUTHCHAIN_BROWSER_JOB", job.to_string());
    let mut peer = ChildPeer::spawn("browser", command, dir)?;
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    let status = loop {
        if let Some(status) = peer.exited() {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(peer.failure(format!(
                "logging in at {url} took longer than {LOGIN_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let outcome: Option<Outcome> = std::fs::read_to_string(&out)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    match outcome {
        Some(Outcome {
            url: Some(url),
            text: Some(text),
            error: None,
        }) if status.success() => Ok(BrowserPage { url, text }),
        Some(Outcome {
            url: at,
            text,
            error,
        }) => Err(peer.failure(format!(
            "logging in at {url}: {error}; the browser was at {at} showing:\n{text}",
            error = error.unwrap_or_else(|| format!("the script exited {status}")),
            at = at.as_deref().unwrap_or("(no page)"),
            text = text.as_deref().unwrap_or(""),
        ))),
        None => Err(peer.failure(format!(
            "logging in at {url}: the script exited {status} without a result"
        ))),
    }
}
