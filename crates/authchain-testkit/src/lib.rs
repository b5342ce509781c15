//! Test support: real peers as child processes (filled by the gRPC issue).
