//! authchain-grpc: filled by its own issue.
