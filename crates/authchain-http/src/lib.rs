//! authchain-http: filled by its own issue.
