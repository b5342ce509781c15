//! Per-step costs of the built-in steps (filled by the steps issue).

fn main() {}
