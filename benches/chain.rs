//! Chain executor benchmark.

fn main() {}
