//! authchain-server: filled by its own issue.
