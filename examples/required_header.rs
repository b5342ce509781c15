//! Loads Gloo's `RequiredHeader` example manifest and authorizes a few
//! requests with it, printing each decision.
//!
//! ```text
//! cargo run -p authchain-examples --example required_header [-- CONFIG.yaml]
//! ```

use authchain_core::{AuthConfig, AuthorizationRequest, Decision, Engine, Format, PluginRegistry};
use authchain_examples::required_header::RequiredHeaderPlugin;
use http::{HeaderName, HeaderValue, Method};

const DEFAULT_CONFIG: &str = include_str!("required_header.yaml");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (origin, text) = match std::env::args().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)?;
            (path, text)
        }
        None => ("required_header.yaml".to_owned(), DEFAULT_CONFIG.to_owned()),
    };

    let mut registry = PluginRegistry::new();
    registry.register(RequiredHeaderPlugin);
    let engine = Engine::new(registry);
    let configs = AuthConfig::parse(&origin, &text, Format::from_path(origin.as_ref()))?;
    let generation = engine.load(&configs).await?;
    println!("loaded generation {generation} from {origin}");

    let current = engine.current();
    for name in current.names() {
        let Some(chain) = current.chain(name) else {
            continue;
        };
        for value in [Some("foo"), Some("baz"), None] {
            let mut request = AuthorizationRequest::new(Method::GET, "/");
            if let Some(value) = value {
                request.headers.insert(
                    HeaderName::from_static("my-header"),
                    HeaderValue::from_static(value),
                );
            }
            let shown = value.map_or("(no my-header)".to_owned(), |v| format!("my-header: {v}"));
            match chain.authorize(&mut request).await {
                Decision::Allow(allow) => {
                    let added: Vec<String> = allow
                        .headers
                        .iter()
                        .map(|m| format!("{}: {}", m.name, m.value.to_str().unwrap_or("?")))
                        .collect();
                    println!("{name}: {shown:<20} -> allow, upstream gets {added:?}");
                }
                Decision::Deny(deny) => println!("{name}: {shown:<20} -> deny {}", deny.status),
            }
        }
    }
    Ok(())
}
