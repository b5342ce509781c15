//! authchain-steps: filled by its own issue.
