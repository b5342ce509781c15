//! Envoy gRPC load comparison (filled by the gRPC issue).

fn main() {}
