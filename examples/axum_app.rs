//! An axum app behind an authchain chain: Gloo's RequiredHeader plugin
//! loaded from its manifest, applied with `AuthChainLayer`.
//!
//! ```text
//! cargo run -p authchain-examples --example axum_app
//! curl -i localhost:3000/hello                       # 403
//! curl -i -H 'my-header: foo' localhost:3000/hello   # 200
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use authchain_core::{AuthConfig, Engine, Format, PluginRegistry};
use authchain_examples::required_header::RequiredHeaderPlugin;
use authchain_http::{AuthChainLayer, AuthContext};
use axum::{Router, http::HeaderMap, routing::get};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = PluginRegistry::new();
    registry.register(RequiredHeaderPlugin);
    let engine = Arc::new(Engine::new(registry));
    let configs = AuthConfig::parse(
        "required_header.yaml",
        include_str!("required_header.yaml"),
        Format::Yaml,
    )?;
    engine.load(&configs).await?;

    let app = Router::new()
        .route(
            "/hello",
            get(|auth: AuthContext, headers: HeaderMap| async move {
                let matched = headers
                    .get("matched-allowed-headers")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no");
                format!(
                    "hello! allowed by {}, matched-allowed-headers: {matched}\n",
                    auth.config
                )
            }),
        )
        .layer(AuthChainLayer::from_engine(
            engine,
            "gloo-system.plugin-auth",
        ));

    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
