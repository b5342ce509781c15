//! The harness's one error type.

use std::fmt;

/// Why a peer could not be found, started or reached. Its text is meant to
/// be the whole failure message of a test: what went wrong, and the peer's
/// captured output when there is one.
pub struct PeerError {
    message: String,
}

impl PeerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        PeerError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// Debug prints the message as it is, so that `.unwrap()` / `.expect()` in a
// test shows a readable, multi-line failure.
impl fmt::Debug for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> Self {
        PeerError::new(format!("i/o error: {e}"))
    }
}
