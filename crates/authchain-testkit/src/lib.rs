//! Test support for authchain: real proxies as child processes on loopback.
//!
//! End-to-end tests run authchain behind the real peers it speaks to
//! (Envoy today; nginx, Traefik and Caddy later), never behind a mock of
//! them. This crate holds the parts every such test needs:
//!
//! - [`ChildPeer`]: a child process with its own scratch directory, its
//!   stdout and stderr captured to files (quoted in every failure), a
//!   wait-until-ready loop with a time limit, and a kill on drop;
//! - [`Locator`]: finds a peer's binary (an environment variable, the
//!   project's `.peers/` install, `python3`, then `PATH`); a missing binary
//!   is an error that says how to install it (`./scripts/install-peers.sh`),
//!   so a test fails instead of skipping;
//! - [`envoy::Envoy`]: Envoy started from a config template whose listeners
//!   bind port 0, with the real ports read back from its admin API;
//! - [`EchoServer`]: an upstream that answers with what reached it (method,
//!   path, headers, body) as JSON ([`EchoedRequest`]);
//! - [`client`]: a small HTTP/1.1 client with time limits;
//! - [`slapd::Slapd`]: OpenLDAP with a small directory of users and
//!   groups, for the `ldap` step;
//! - [`idp::Idp`]: an OpenID provider (npm's `oidc-provider` run by
//!   `node`) with clients, users and token lifetimes of the test's choosing,
//!   a plain-HTML login form, introspection, userinfo, logout and client
//!   credentials, and counts of the requests it served;
//! - [`login`]: a cookie-keeping client that follows redirects across
//!   ports and submits login forms, as a browser does;
//! - [`browser::login`]: the same walk by a real headless Chromium;
//! - [`redis::Redis`]: Redis on a port of its own, stopped and started
//!   again at will;
//! - [`load`]: `wrk` runs for side-by-side load comparisons;
//! - [`tls`]: a CA made at run time and a TLS server (client certificates
//!   required if asked) in front of a plain one;
//! - [`render`] for config templates and [`free_port`] for loopback ports.
//!
//! A new peer (nginx, Traefik, Caddy) adds a module like [`envoy`]: a
//! [`Locator`], a way to write its config, and a readiness probe for
//! [`ChildPeer::wait_until`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), authchain_testkit::PeerError> {
//! use authchain_testkit::{envoy::Envoy, render, EchoServer};
//!
//! let upstream = EchoServer::start().await?;
//! let config = render(
//!     "static_resources: {listeners: [...], clusters: [... port_value: {{upstream_port}} ...]}",
//!     &[("upstream_port", upstream.addr().port().to_string())],
//! )?;
//! let envoy = Envoy::start(&config).await?;
//! let reply = authchain_testkit::client::get(envoy.listener("ingress")?, "/x", &[]).await?;
//! assert_eq!(reply.status, 200);
//! # Ok(())
//! # }
//! ```

pub mod browser;
pub mod caddy;
pub mod client;
mod echo;
pub mod envoy;
mod error;
pub mod idp;
pub mod load;
mod locate;
pub mod login;
pub mod nginx;
mod node;
mod peer;
pub mod redis;
pub mod slapd;
mod template;
pub mod tls;
pub mod traefik;

#[doc(inline)]
pub use echo::{ECHO_SET_PREFIX, EchoServer, EchoedRequest};
#[doc(inline)]
pub use error::PeerError;
#[doc(inline)]
pub use locate::{Locator, workspace_root};
#[doc(inline)]
pub use peer::{ChildPeer, ScratchDir, free_port, silent_server};
#[doc(inline)]
pub use template::render;
