//! The `authchain` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    authchain_server::main_with(authchain_server::default_registry())
}
