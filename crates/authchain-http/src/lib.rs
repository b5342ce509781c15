//! authchain over HTTP.
//!
//! Today: [`AuthChainLayer`], a tower layer that runs an authchain chain in
//! front of any `tower::Service<http::Request<B>>` (an axum `Router`
//! included). The forward-auth / Envoy HTTP-service server and the HTTP
//! passthrough step are the rest of this crate's issue.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `axum` | yes | [`AuthContext`] as an axum extractor; the peer address from axum's `ConnectInfo` |

mod layer;

#[doc(inline)]
pub use layer::{
    AuthChain, AuthChainLayer, AuthContext, ResponseFuture, apply_response_headers, deny_response,
};
