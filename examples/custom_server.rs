//! A bespoke auth server: the `authchain` server and command line, with a
//! plugin of your own registered beside the built-in steps.
//!
//! ```sh
//! cargo run -p authchain-examples --example custom_server -- serve --config examples/custom_server.yaml
//! curl -i -H 'my-header: foo' http://127.0.0.1:9002/check:gloo-system.plugin-auth/   # 200
//! curl -i http://127.0.0.1:9002/check:gloo-system.plugin-auth/                        # 403
//! ```

use std::process::ExitCode;

use authchain_examples::required_header::RequiredHeaderPlugin;

fn main() -> ExitCode {
    let mut registry = authchain_server::default_registry();
    registry.register(RequiredHeaderPlugin);
    authchain_server::main_with(registry)
}
