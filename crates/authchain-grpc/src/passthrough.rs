//! The gRPC passthrough step: Gloo's `passThroughAuth.grpc`.
//!
//! The step forwards the request, as the chain sees it, to another
//! ext_authz gRPC server and takes its answer:
//!
//! ```yaml
//! configs:
//! - passThroughAuth:
//!     grpc:
//!       address: 127.0.0.1:9001      # host:port, or http://host:port
//!       connectionTimeout: 5s        # the whole call's time, retries included (default 5s)
//!       tlsConfig:                   # Gloo's TLS (feature `tls`, on by default)
//!         secretRef: { name: passthrough-mtls }   # tls.crt + tls.key, ca.crt
//!         sslParams: { minimumProtocolVersion: TLSv1_3 }
//!       # or authchain's own TLS block (not both):
//!       # tls:
//!       #   caFile: /etc/authz/ca.pem  # or caPem: inline; the CA to trust
//!       #   serverName: authz.internal # name to verify; default: the address's host
//!       #   certFile: /etc/authz/client.pem   # optional client certificate (mTLS)
//!       #   keyFile: /etc/authz/client.key
//!       retryPolicy:                 # retries on UNAVAILABLE only
//!         numRetries: 2              # default 1 (at most 10)
//!         retryBackOff: { baseInterval: 1s, maxInterval: 10s }   # Gloo's defaults
//!     config: { anything: the remote server reads }
//!     failureModeAllow: false        # the chain's business: pass when the call fails
//! ```
//!
//! - The chain's `state` goes to the remote server in
//!   `metadata_context.filter_metadata["solo.auth.passthrough"]`, the step's
//!   `config` in `filter_metadata["solo.auth.passthrough.config"]`, next to
//!   the request's own filter metadata.
//! - An OK answer is an allow with the remote's header mutations (read as
//!   Envoy reads them: in `headers`, `append: true` appends and anything
//!   else sets; in `response_headers_to_add`, `append` if given, else
//!   `append_action`), removals, query parameters and dynamic metadata:
//!   every header the remote sets goes upstream, as Gloo's gRPC
//!   passthrough does (Gloo has no list of them for gRPC).
//!   `dynamic_metadata["solo.auth.passthrough"]` is merged into the state.
//! - Any other status in the answer is a deny with the remote's status
//!   (403 by default), headers and body. A redirect (301, 302, 303,
//!   307, 308) with a `Location` is kept: a remote login server sends
//!   the client to its login page so, as it would behind Envoy directly
//!   (the step follows no redirect itself; the client goes where the
//!   remote, trusted with the decision, sends it).
//! - A failure of the remote is an error: the chain fails closed unless
//!   the step has `failureModeAllow`. Failures are UNAVAILABLE (after the
//!   retries), DEADLINE_EXCEEDED or CANCELLED once the call's time ran
//!   out, and no answer within `connectionTimeout`.
//! - An RPC that ends with PERMISSION_DENIED is a 403 deny, with
//!   UNAUTHENTICATED a 401 deny.
//! - Anything else fails closed whatever `failureModeAllow` says, as a
//!   client can bring it about with what it sends: any other RPC status
//!   (INVALID_ARGUMENT; RESOURCE_EXHAUSTED for a message over the remote's
//!   limit; UNKNOWN and INTERNAL, the codes of a server's handler that
//!   fails on its input and of an answer that cannot be decoded; CANCELLED
//!   or DEADLINE_EXCEEDED before the call's time ran out: a stream the
//!   remote reset, as a tonic server does when its handler panics, or a
//!   time limit of the remote's own); an answer with an `error_response`
//!   (Envoy's way for a server to say it failed, which Envoy lets through
//!   under `failure_mode_allow`: the remote answered, and its handler may
//!   fail on what the client sent); a check
//!   request over [`MAX_CHECK_BYTES`] encoded (a large body), which is
//!   not sent; a call that finds all [`MAX_CALLS`] slots of its remote
//!   taken for half its time (a flood can take them); a call with no
//!   answer in time, or UNAVAILABLE, while the remote answered another
//!   within the call's time (the remote is up: a client can make its own
//!   call slow, queue it behind a flood past the streams the remote takes
//!   at once, or trip a rate limit in front of it; a call's time is
//!   `connectionTimeout`, at most nine tenths of the step's `timeout`);
//!   and an answer that
//!   cannot be carried out as given: a header
//!   with an invalid name or value; one that sets `host` or `:authority`
//!   upstream (the client's virtual host is not the remote's to change) or
//!   `x-envoy-auth-failure-mode-allowed` (a removal of them is passed
//!   over: an authchain behind, whose chain strips a client's copies of
//!   the mark, lists it in every answer); or state that
//!   changes a name a step before wrote (`{"jwt": {"sub": "admin"}}` after
//!   a `jwt` step), which a later step such as `opaAuth` would judge. The
//!   remote may send back a name with the value it got, as Gloo's example
//!   servers send the whole state back.
//!
//! The remote's upstream headers are not identity headers the chain
//! knows of (Gloo has no field that names them for gRPC), so a client's
//! copies are not stripped for them: list them in the AuthConfig's
//! `stripClientHeaders`, or a client's `x-user-id: admin` reaches the app
//! whenever the remote does not set it (an allow without it, or a failure
//! `failureModeAllow` lets through):
//!
//! ```yaml
//! name: passthrough
//! stripClientHeaders: [x-user-id, x-user-roles]   # what the remote sets upstream
//! configs:
//! - passThroughAuth:
//!     grpc: { address: 127.0.0.1:9001 }
//! ```
//!
//! `tlsConfig` is Gloo's block ([`authchain_core::tls`]): the server is
//! verified against the Secret's `ca.crt` (else the web PKI roots) under the
//! address's host; the Secret's `tls.crt` and `tls.key` are the client's
//! certificate. A retry waits `baseInterval` (Gloo's default 1 s), then
//! twice that, and so on up to `maxInterval` (default ten times the base);
//! the whole call, its wait for a slot, its tries and the waits between
//! them, has `connectionTimeout`, and a retry that could not start within
//! it is not made.
//!
//! The plugin keeps one lazily connected channel per address, timeout and
//! TLS settings, shared by every step and every config generation built
//! from it while one uses it (a reload with new TLS settings leaves no
//! channel, nor key, of the old ones behind). At most [`MAX_CALLS`] calls
//! are in flight on a channel; a call beyond them waits for a slot, for
//! half its time (or half the step's `timeout`) at most.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use authchain_core::tls::{ClientTls, TlsConfig as GlooTlsConfig};
use authchain_core::transport::LastAnswer;
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision, Deny,
    Error, ExtAuthPlugin, HeaderAction, HeaderMutation, async_trait,
};
use envoy_types::ext_authz::v3::pb::{CheckResponse, HeaderValueOption, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::google::protobuf::Struct;
use http::{HeaderName, HeaderValue, StatusCode};
use prost::Message as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::convert::{fields_to_struct, json_to_struct, struct_to_json, to_check_request};

#[cfg(feature = "tls")]
mod tls;

#[cfg(not(feature = "tls"))]
mod tls {
    use super::*;

    pub(super) fn channel(_: Endpoint, _: &str, _: &str, _: &ClientTls) -> Result<Channel, Error> {
        Err(Error::config(
            "authchain-grpc was built without its `tls` feature",
        ))
    }
}

/// The step kind this plugin registers as.
pub const KIND: &str = "passThroughAuth.grpc";
/// The filter metadata namespace that carries the chain state.
pub const STATE_KEY: &str = "solo.auth.passthrough";
/// The filter metadata namespace that carries the step's `config`.
pub const CONFIG_KEY: &str = "solo.auth.passthrough.config";
/// The time limit when `connectionTimeout` is not set.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The retries of a `retryPolicy` without `numRetries` (Gloo's default).
pub const DEFAULT_RETRIES: u32 = 1;
/// The most retries a `retryPolicy` may ask for.
pub const MAX_RETRIES: u32 = 10;
/// The first wait of a `retryPolicy` without `baseInterval` (Gloo's default).
pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest check request sent, encoded (a gRPC server's default
/// limit): a larger one is refused before it is sent.
pub const MAX_CHECK_BYTES: usize = 4 * 1024 * 1024;
/// The most calls in flight to one remote server (one channel, shared by
/// the steps that call it), which its channel buffers as many of; a call
/// beyond them waits for a slot.
pub const MAX_CALLS: usize = 1024;

/// The step's config: the block under `passThroughAuth` (less
/// `failureModeAllow`, which the chain keeps). Its `Debug` shows the keys
/// of `config`, not their values (the remote's credentials may be there).
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PassthroughConfig {
    /// Where and how to call.
    pub grpc: GrpcTarget,
    /// Passed to the remote server under `solo.auth.passthrough.config`.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
}

impl fmt::Debug for PassthroughConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassthroughConfig")
            .field("grpc", &self.grpc)
            .field(
                "config",
                &self.config.as_ref().map(|c| c.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// The remote ext_authz server.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcTarget {
    /// `host:port` or `http://host:port`.
    pub address: String,
    /// The whole call's time: its wait for a slot, its tries and the
    /// waits between them (default 5 s; at most nine tenths of the step's
    /// `timeout`).
    #[serde(default)]
    pub connection_timeout: Option<ConfigDuration>,
    /// Gloo's TLS to the remote server: a Secret and protocol parameters.
    #[serde(default)]
    pub tls_config: Option<GlooTlsConfig>,
    /// authchain's TLS to the remote server (the address may then say
    /// `https://`); not with `tlsConfig`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Retries on UNAVAILABLE.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
}

/// TLS to the remote server. The server's certificate is verified against
/// the given CA; there is no fallback to the system roots or to plain text.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// A PEM file with the CA certificate(s) to trust.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The same, inline PEM.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// The name the server's certificate must carry, also sent as SNI
    /// (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A PEM client certificate, for mutual TLS (with `keyFile`).
    #[serde(default)]
    pub cert_file: Option<String>,
    /// The PEM private key of `certFile`.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// Gloo's retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// How many retries (default 1, at most 10).
    #[serde(default)]
    pub num_retries: Option<u32>,
    /// The wait between tries.
    #[serde(default)]
    pub retry_back_off: Option<BackOff>,
}

/// Exponential back-off between retries.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct BackOff {
    /// The first wait (default 1 s, as Gloo's); doubled at each retry.
    #[serde(default)]
    pub base_interval: Option<ConfigDuration>,
    /// The longest wait (default ten times the base).
    #[serde(default)]
    pub max_interval: Option<ConfigDuration>,
}

/// Address, timeout, and the TLS settings (whose `Debug` hides the key).
type ChannelKey = (String, Duration, Option<ClientTls>);

fn read_pem(context: &BuildContext<'_>, path: &str, field: &str) -> Result<String, Error> {
    context
        .read_to_string(path)
        .map_err(|e| e.at(format!("grpc.tls.{field}")))
}

impl TlsConfig {
    /// authchain's block as TLS settings: its CA is required.
    fn load(self, context: &BuildContext<'_>) -> Result<ClientTls, Error> {
        let ca_pem = match (self.ca_file, self.ca_pem) {
            (Some(path), None) => read_pem(context, &path, "caFile")?,
            (None, Some(pem)) => pem,
            _ => {
                return Err(
                    Error::config("expected exactly one of `caFile` and `caPem`").at("grpc.tls"),
                );
            }
        };
        if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::config("expected a PEM certificate").at("grpc.tls"));
        }
        let mut tls = ClientTls::default().with_ca_pem(ca_pem);
        match (self.cert_file, self.key_file) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                tls = tls.with_identity(
                    read_pem(context, &cert, "certFile")?,
                    read_pem(context, &key, "keyFile")?,
                );
            }
            _ => {
                return Err(Error::config("`certFile` and `keyFile` go together").at("grpc.tls"));
            }
        }
        if let Some(name) = self.server_name {
            tls = tls.with_server_name(name);
        }
        Ok(tls)
    }
}

/// A channel to a remote server, and the slots of the calls in flight on
/// it.
#[derive(Debug)]
struct Remote {
    channel: Channel,
    /// One permit per call in flight ([`MAX_CALLS`]).
    slots: Semaphore,
    /// When it last answered a call ([`LastAnswer::of`] its address).
    answers: Arc<LastAnswer>,
}

/// The plugin: `registry.register_kind(GrpcPassthroughPlugin::new())`.
/// Clones share their channels.
#[derive(Clone, Default)]
pub struct GrpcPassthroughPlugin {
    channels: Arc<Mutex<HashMap<ChannelKey, Weak<Remote>>>>,
}

impl fmt::Debug for GrpcPassthroughPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self
            .channels
            .lock()
            .map_or(0, |c| c.values().filter(|c| c.strong_count() > 0).count());
        f.debug_struct("GrpcPassthroughPlugin")
            .field("channels", &count)
            .finish()
    }
}

impl GrpcPassthroughPlugin {
    /// A plugin with no channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn channel(
        &self,
        authority: &str,
        host: &str,
        timeout: Duration,
        tls: Option<(ClientTls, &str)>,
    ) -> Result<Arc<Remote>, Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|_, channel| channel.strong_count() > 0);
        let (tls, tls_at) = tls.unzip();
        let key = (authority.to_owned(), timeout, tls);
        if let Some(channel) = channels.get(&key).and_then(Weak::upgrade) {
            return Ok(channel);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "the gRPC passthrough step must be built inside a Tokio runtime",
            ));
        }
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|_| {
                Error::config("not a valid address (expected host:port)").at("grpc.address")
            })?
            .connect_timeout(timeout)
            .timeout(timeout)
            .buffer_size(MAX_CALLS)
            .tcp_nodelay(true);
        let channel = match (&key.2, tls_at) {
            (Some(tls), Some(at)) => {
                tls::channel(endpoint, authority, host, tls).map_err(|e| e.at(at))?
            }
            _ => endpoint.connect_lazy(),
        };
        let remote = Arc::new(Remote {
            channel,
            slots: Semaphore::new(MAX_CALLS),
            answers: LastAnswer::of(&format!("grpc://{}", authority.to_ascii_lowercase())),
        });
        channels.insert(key, Arc::downgrade(&remote));
        Ok(remote)
    }
}

impl ExtAuthPlugin for GrpcPassthroughPlugin {
    type Config = PassthroughConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: PassthroughConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        let grpc = config.grpc;
        let address = grpc.address.trim();
        let invalid =
            || Error::config("not a valid address (expected host:port)").at("grpc.address");
        let (scheme, authority) = match address.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, address),
        };
        let parsed: http::Uri = format!("http://{authority}")
            .parse()
            .map_err(|_| invalid())?;
        let host = parsed
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(invalid)?;
        // No path, query or fragment, and no user:password@ (they would
        // end up in logs and metrics).
        if parsed.port().is_none() || authority.contains(['/', '@', '?', '#']) {
            return Err(invalid());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match (grpc.tls_config, grpc.tls) {
            (Some(_), Some(_)) => {
                return Err(
                    Error::config("set Gloo's `tlsConfig` or authchain's `tls`, not both")
                        .at("grpc.tlsConfig"),
                );
            }
            (Some(gloo), None) => Some((
                gloo.resolve(context).map_err(|e| e.at("grpc.tlsConfig"))?,
                "grpc.tlsConfig",
            )),
            (None, Some(own)) => Some((own.load(context)?, "grpc.tls")),
            (None, None) => None,
        };
        match (scheme, &tls) {
            (None | Some("http"), None) | (None | Some("https"), Some(_)) => {}
            (Some("https"), None) => {
                return Err(
                    Error::config("https:// needs a `tlsConfig` (or `tls`) block")
                        .at("grpc.address"),
                );
            }
            (Some("http"), Some(_)) => {
                return Err(
                    Error::config("http:// with a TLS block: use host:port or https://")
                        .at("grpc.address"),
                );
            }
            (Some(_), _) => return Err(invalid()),
        }
        let timeout = grpc
            .connection_timeout
            .map_or(DEFAULT_CONNECTION_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(Error::config("must be more than zero").at("grpc.connectionTimeout"));
        }
        let timeout = context.call_limit().map_or(timeout, |l| timeout.min(l));
        let retry = Retries::new(grpc.retry_policy)?;
        if retry.count > 0 && retry.wait(0) >= timeout {
            tracing::warn!(
                config = context.config_name,
                step = context.step_name,
                "passThroughAuth.grpc.retryPolicy waits {:?} before a retry, and the call has {timeout:?} in all: no retry will be made",
                retry.wait(0)
            );
        }
        let remote = self.channel(authority, &host, timeout, tls)?;
        Ok(Arc::new(GrpcPassthrough {
            client: AuthorizationClient::new(remote.channel.clone())
                .max_encoding_message_size(MAX_CHECK_BYTES),
            remote,
            address: address.to_owned(),
            timeout,
            // Within the call's own time too, whose end is an error.
            slot_wait: context
                .wait_limit()
                .map_or(timeout / 2, |w| w.min(timeout / 2)),
            retry,
            config: config.config.map(|c| json_to_struct(&c)),
            bypass: context.failure_mode_allow.then(|| {
                metrics::counter!(
                    "passthrough_failure_bypass",
                    "config" => context.config_name.to_owned(),
                    "step" => context.step_name.to_owned()
                )
            }),
        }))
    }
}

/// The step the plugin builds.
struct GrpcPassthrough {
    client: AuthorizationClient<Channel>,
    /// The plugin's channel and its call slots, kept (with its key) while
    /// the step lives.
    remote: Arc<Remote>,
    address: String,
    timeout: Duration,
    /// The longest wait for a call slot ([`BuildContext::wait_limit`],
    /// and half the call's time).
    slot_wait: Duration,
    retry: Retries,
    config: Option<Struct>,
    /// Counts failures the chain lets through (`failureModeAllow`), under
    /// Gloo's name for them.
    bypass: Option<metrics::Counter>,
}

/// Why a passthrough call failed. Names the address and the gRPC code,
/// never request data.
#[derive(Debug)]
struct Failure {
    address: String,
    what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gRPC passthrough to {}: {}", self.address, self.what)
    }
}

impl std::error::Error for Failure {}

impl GrpcPassthrough {
    /// Counts a failed call under `reason`.
    fn count(&self, reason: &'static str) {
        metrics::counter!(
            "authchain_grpc_passthrough_errors_total",
            "address" => self.address.clone(),
            "reason" => reason
        )
        .increment(1);
    }

    /// A failure of the remote server (an outage): a step error, which
    /// `failureModeAllow` lets through (counted in
    /// `passthrough_failure_bypass` then).
    fn fail(&self, reason: &'static str, what: String) -> Error {
        self.count(reason);
        if let Some(bypass) = &self.bypass {
            bypass.increment(1);
        }
        Error::step(Failure {
            address: self.address.clone(),
            what,
        })
    }

    /// A call that got no answer of the remote's (a timeout, UNAVAILABLE):
    /// an outage ([`fail`](Self::fail)) when the remote answered no other
    /// call within the call's time, else refused: the remote is up.
    fn unanswered(&self, reason: &'static str, what: String) -> Error {
        match self.remote.answers.within(self.timeout) {
            true => self.refuse(
                reason,
                format!("{what}, while the server answered other calls"),
            ),
            false => self.fail(reason, what),
        }
    }

    /// A call or an answer the step refuses (a client can bring it
    /// about): a step error that `failureModeAllow` never lets through.
    fn refuse(&self, reason: &'static str, what: String) -> Error {
        self.count(reason);
        Error::step_fail_closed(Failure {
            address: self.address.clone(),
            what,
        })
    }

    /// What an RPC that ended with `code` (not OK, after the retries)
    /// `timed_out` or not comes to: an outage (UNAVAILABLE, and
    /// DEADLINE_EXCEEDED or CANCELLED once the call's time ran out, the
    /// remote's report of it and the client's) is a failure;
    /// PERMISSION_DENIED is a 403 deny and UNAUTHENTICATED a 401 deny;
    /// anything else is refused. A client can bring those about with what
    /// it sends (INVALID_ARGUMENT, RESOURCE_EXHAUSTED for a message over
    /// the remote's limit, UNKNOWN or INTERNAL, the codes of a server's
    /// handler that fails on its input and of an answer the client cannot
    /// decode; an early CANCELLED, a stream the remote reset, as tonic's
    /// server does when a handler panics; an early DEADLINE_EXCEEDED, a
    /// time limit of the remote's own, which input may run into), so none
    /// of them may pass under `failureModeAllow`.
    fn failed_call(&self, code: tonic::Code, timed_out: bool) -> Result<Decision, Error> {
        use tonic::Code;
        let what = format!("call failed with {code:?}");
        match code {
            Code::Unavailable => Err(self.unanswered("unavailable", what)),
            Code::DeadlineExceeded | Code::Cancelled if timed_out => {
                Err(self.unanswered("timeout", what))
            }
            Code::PermissionDenied => Ok(Decision::Deny(Deny::new(StatusCode::FORBIDDEN))),
            Code::Unauthenticated => Ok(Decision::Deny(Deny::new(StatusCode::UNAUTHORIZED))),
            _ => Err(self.refuse("status", what)),
        }
    }
}

/// How UNAVAILABLE is retried: Gloo's `retryPolicy` with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retries {
    count: u32,
    base: Duration,
    max: Duration,
}

impl Retries {
    /// None without a policy; else `numRetries` (1), `baseInterval` (1 s),
    /// `maxInterval` (ten times the base, and never below it).
    fn new(policy: Option<RetryPolicy>) -> Result<Retries, Error> {
        let Some(policy) = policy else {
            return Ok(Retries {
                count: 0,
                base: Duration::ZERO,
                max: Duration::ZERO,
            });
        };
        let back_off = policy.retry_back_off;
        let base = back_off
            .as_ref()
            .and_then(|b| b.base_interval)
            .map_or(DEFAULT_BASE_INTERVAL, |d| d.0);
        let max = back_off
            .as_ref()
            .and_then(|b| b.max_interval)
            .map_or(base.saturating_mul(10), |d| d.0);
        let count = policy.num_retries.unwrap_or(DEFAULT_RETRIES);
        if count > MAX_RETRIES {
            return Err(
                Error::config(format!("at most {MAX_RETRIES}")).at("grpc.retryPolicy.numRetries")
            );
        }
        Ok(Retries {
            count,
            base,
            max: max.max(base),
        })
    }

    /// The wait before retry `attempt + 1`: the base, doubled per retry,
    /// up to the max.
    fn wait(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max)
    }
}

#[async_trait]
impl AuthService for GrpcPassthrough {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            // One time for the whole call, from its start: building the
            // message (up to 4 MiB of the client's) is in it, its slot,
            // tries and waits between them too. Past the step's own, its
            // timer would end the call with an error that
            // `failureModeAllow` lets through, whoever made the call slow.
            let deadline = tokio::time::Instant::now() + self.timeout;
            let mut check = to_check_request(request, &request.metadata);
            if let Some(metadata) = check
                .attributes
                .as_mut()
                .and_then(|a| a.metadata_context.as_mut())
            {
                metadata
                    .filter_metadata
                    .insert(STATE_KEY.to_owned(), fields_to_struct(request.state.iter()));
                // The step's own config, or none: never one the proxy's
                // metadata carried for another step.
                match &self.config {
                    Some(config) => {
                        metadata
                            .filter_metadata
                            .insert(CONFIG_KEY.to_owned(), config.clone());
                    }
                    None => {
                        metadata.filter_metadata.remove(CONFIG_KEY);
                    }
                }
            }
            let size = check.encoded_len();
            if size > MAX_CHECK_BYTES {
                return Err(self.refuse(
                    "request_too_large",
                    format!(
                        "the check request would be {size} bytes, over the limit of {MAX_CHECK_BYTES}"
                    ),
                ));
            }
            // A slot: a flood can take them all, so one not had in time is
            // no outage of the remote that `failureModeAllow` rides out.
            let _slot =
                match tokio::time::timeout(self.slot_wait, self.remote.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => {
                        return Err(self.refuse("closed", "the call slots are closed".into()));
                    }
                    Err(_) => {
                        return Err(self.refuse(
                            "overloaded",
                            format!("every one of the {MAX_CALLS} call slots is in use"),
                        ));
                    }
                };
            let mut attempt = 0;
            let response = loop {
                let message = if attempt < self.retry.count {
                    check.clone()
                } else {
                    std::mem::take(&mut check)
                };
                let mut call = tonic::Request::new(message);
                call.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
                let mut client = self.client.clone();
                let outcome = tokio::time::timeout_at(deadline, client.check(call)).await;
                // An answer of the remote's own, not the transport's.
                let answered = match &outcome {
                    Ok(Ok(_)) => true,
                    Ok(Err(status)) => !matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    ),
                    Err(_) => false,
                };
                if answered {
                    self.remote.answers.heard();
                }
                match outcome {
                    Ok(Ok(response)) => break response.into_inner(),
                    Ok(Err(status))
                        if status.code() == tonic::Code::Unavailable
                            && attempt < self.retry.count
                            && tokio::time::Instant::now() + self.retry.wait(attempt)
                                < deadline =>
                    {
                        tracing::debug!(address = %self.address, attempt, "passthrough server unavailable; retrying");
                        tokio::time::sleep(self.retry.wait(attempt)).await;
                        attempt += 1;
                    }
                    Ok(Err(status)) => {
                        let timed_out = tokio::time::Instant::now() >= deadline;
                        return self.failed_call(status.code(), timed_out);
                    }
                    Err(_) => {
                        return Err(self.unanswered(
                            "timeout",
                            format!("no answer within {:?}", self.timeout),
                        ));
                    }
                }
            };
            match answer(response, request) {
                Ok(decision) => Ok(decision),
                Err(Unusable::Failed(what)) => Err(self.refuse("error_response", what)),
                Err(Unusable::Invalid(what)) => Err(self.refuse("invalid_response", what)),
            }
        })
    }
}

/// Why an answer of the remote server is not carried out.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    /// The remote says it failed (`error_response`): refused, as the
    /// remote answered (Envoy takes it as a failure).
    Failed(String),
    /// The answer cannot be carried out as given: refused.
    Invalid(String),
}

/// Whether `name` is `host` or `:authority`, in any case: an answer never
/// changes the virtual host the request goes to.
fn names_the_host(name: &str) -> bool {
    name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority")
}

/// Whether an answer may not set `name` upstream, and its removal is
/// passed over: the host, and the mark of a request let through by
/// `failureModeAllow`.
fn refused_upstream(name: &str) -> bool {
    names_the_host(name) || authchain_core::is_failure_mark(name)
}

/// Turns the remote server's answer into the step's decision.
fn answer(
    response: CheckResponse,
    request: &mut AuthorizationRequest,
) -> Result<Decision, Unusable> {
    let invalid = |what: &str| Unusable::Invalid(what.to_owned());
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code != 0 {
        let mut deny = Deny::new(StatusCode::FORBIDDEN);
        match response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => {
                if let Some(status) = denied
                    .status
                    .and_then(|s| u16::try_from(s.code).ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.as_u16() >= 200)
                {
                    deny.status = status;
                }
                // A header that cannot be carried (or one past what a
                // header map holds) is left out: a deny stays a deny,
                // never an error that `failureModeAllow` would let through.
                for option in denied.headers {
                    let carried = mutation(option, Place::Deny).and_then(|m| {
                        deny.headers
                            .try_append(m.name, m.value)
                            .map_err(|_| "more headers than a response can hold".to_owned())
                    });
                    if let Err(what) = carried {
                        tracing::warn!(%what, "a header of the remote deny is left out");
                    }
                }
                deny.body = denied.body.into();
            }
            Some(HttpResponse::ErrorResponse(_)) => {
                return Err(Unusable::Failed(format!(
                    "the server answered an error (gRPC code {code})"
                )));
            }
            Some(HttpResponse::OkResponse(_)) | None => {}
        }
        return Ok(Decision::Deny(deny));
    }
    let mut allow = Allow::new();
    if let Some(HttpResponse::OkResponse(ok)) = response.http_response {
        for option in ok.headers {
            if let Some(header) = option.header.as_ref().filter(|h| refused_upstream(&h.key)) {
                return Err(Unusable::Invalid(format!(
                    "the answer sets '{}' upstream, which no answer sets",
                    header.key.to_ascii_lowercase()
                )));
            }
            allow
                .headers
                .push(mutation(option, Place::Upstream).map_err(Unusable::Invalid)?);
        }
        for name in ok.headers_to_remove {
            // Passed over: an authchain behind, whose chain strips a
            // client's copies of the mark, lists it in every answer.
            if refused_upstream(&name) {
                continue;
            }
            let name = HeaderName::try_from(name.as_str())
                .map_err(|_| invalid("a header to remove has an invalid name"))?;
            allow.headers_to_remove.push(name);
        }
        for option in ok.response_headers_to_add {
            allow
                .response_headers
                .push(mutation(option, Place::Response).map_err(Unusable::Invalid)?);
        }
        allow.query_parameters_to_set = ok
            .query_parameters_to_set
            .into_iter()
            .map(|q| (q.key, q.value))
            .collect();
        allow.query_parameters_to_remove = ok.query_parameters_to_remove;
    }
    if let Some(metadata) = response.dynamic_metadata {
        let mut metadata = struct_to_json(metadata);
        if let Some(Value::Object(state)) = metadata.remove(STATE_KEY) {
            // A name a step before wrote keeps its value: a later step
            // (an `opaAuth` policy) judges what that step found.
            if let Err(name) = request.state.take_returned(state) {
                return Err(Unusable::Invalid(format!(
                    "the answer changes the state's '{name}', which a step before wrote"
                )));
            }
        }
        allow.dynamic_metadata = metadata;
    }
    Ok(Decision::Allow(allow))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Upstream,
    Response,
    Deny,
}

/// A header option as Envoy 1.40 would apply it there.
#[allow(deprecated)] // `append` is what Envoy reads.
fn mutation(option: HeaderValueOption, place: Place) -> Result<HeaderMutation, String> {
    let header = option.header.ok_or("a header option without a header")?;
    let name = HeaderName::try_from(header.key.as_str())
        .map_err(|_| "a header with an invalid name".to_owned())?;
    let bytes = if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value
    };
    let value = HeaderValue::from_bytes(bytes)
        .map_err(|_| format!("header '{name}' has an invalid value"))?;
    let append = option.append.map(|b| b.value);
    let action = match (place, append) {
        (Place::Upstream | Place::Deny, Some(true)) => HeaderAction::AppendIfExistsOrAdd,
        (Place::Upstream | Place::Deny, _) => HeaderAction::OverwriteIfExistsOrAdd,
        (Place::Response, Some(true)) => HeaderAction::AppendIfExistsOrAdd,
        (Place::Response, Some(false)) => HeaderAction::OverwriteIfExistsOrAdd,
        (Place::Response, None) => match option.append_action {
            1 => HeaderAction::AddIfAbsent,
            2 => HeaderAction::OverwriteIfExistsOrAdd,
            3 => HeaderAction::OverwriteIfExists,
            _ => HeaderAction::AppendIfExistsOrAdd,
        },
    };
    Ok(HeaderMutation::new(name, value, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use authchain_core::{AuthConfig, Engine, Format, PluginRegistry};

    fn engine(plugin: &GrpcPassthroughPlugin) -> Engine {
        let mut registry = PluginRegistry::new();
        registry.register_kind(plugin.clone());
        Engine::new(registry)
    }

    async fn load(plugin: &GrpcPassthroughPlugin, grpc: &str) -> Result<u64, Error> {
        let yaml = format!(
            "name: c\nconfigs:\n- passThroughAuth:\n    grpc: {grpc}\n    config: {{k: v}}\n"
        );
        let configs = AuthConfig::parse("t.yaml", &yaml, Format::Yaml)?;
        engine(plugin).load(&configs).await
    }

    #[tokio::test]
    async fn config_errors_name_their_place() {
        let plugin = GrpcPassthroughPlugin::new();
        let place = |e: Error| e.place().unwrap_or("").to_owned();
        let e = load(&plugin, "{address: '127.0.0.1:1', tls: {}}")
            .await
            .unwrap_err();
        assert!(place(e).ends_with("passThroughAuth.grpc.tls"));
        let e = load(
            &plugin,
            "{address: '127.0.0.1:1', tls: {caFile: /nonexistent/ca.pem}}",
        )
        .await
        .unwrap_err();
        assert!(e.place().unwrap_or("").ends_with("grpc.tls.caFile"), "{e}");
        assert!(e.to_string().contains("not found"), "{e}");
        let e = load(&plugin, "{address: '127.0.0.1:1', tls: {caPem: not-a-pem}}")
            .await
            .unwrap_err();
        assert!(place(e).ends_with("grpc.tls"));
        let e = load(&plugin, "{address: 'user:secret@127.0.0.1:1'}")
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = load(&plugin, "{address: '127.0.0.1'}").await.unwrap_err();
        assert!(place(e).ends_with("grpc.address"), "a port is required");
        let e = load(&plugin, "{address: 'https://x:1'}").await.unwrap_err();
        assert!(place(e).ends_with("grpc.address"));
        let e = load(&plugin, "{address: 'a b:1'}").await.unwrap_err();
        assert!(place(e).ends_with("grpc.address"));
        // A query or a fragment would reach logs and metrics too.
        for address in ["h:1?token=secret", "h:1#secret", "h:1/?token=secret"] {
            let e = load(&plugin, &format!("{{address: '{address}'}}"))
                .await
                .unwrap_err();
            assert!(!e.to_string().contains("secret"), "{e}");
            assert!(place(e).ends_with("grpc.address"), "{address}");
        }
        let e = load(&plugin, "{address: '127.0.0.1:1', bogus: 1}")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = load(&plugin, "{address: '127.0.0.1:1', connectionTimeout: 0s}")
            .await
            .unwrap_err();
        assert!(place(e).ends_with("grpc.connectionTimeout"));
        // Gloo's tlsConfig: one TLS block, its errors at their field.
        for (grpc, want) in [
            (
                "{address: '127.0.0.1:1', tlsConfig: {}, tls: {caPem: x}}",
                "configs[0].passThroughAuth.grpc.tlsConfig: set Gloo's `tlsConfig` or authchain's `tls`, not both",
            ),
            (
                "{address: 'http://127.0.0.1:1', tlsConfig: {}}",
                "configs[0].passThroughAuth.grpc.address: http:// with a TLS block: use host:port or https://",
            ),
            (
                "{address: '127.0.0.1:1', tlsConfig: {secretRef: {name: nowhere}}}",
                "configs[0].passThroughAuth.grpc.tlsConfig.secretRef: no Secret default/nowhere was read",
            ),
            (
                "{address: '127.0.0.1:1', tlsConfig: {sslParams: {cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, AES128-SHA]}}}",
                "configs[0].passThroughAuth.grpc.tlsConfig.sslParams.cipherSuites[1]: `AES128-SHA` is not offered by rustls",
            ),
            (
                "{address: '127.0.0.1:1', tlsConfig: {sslParams: {maximumProtocolVersion: TLSv1_1}}}",
                "configs[0].passThroughAuth.grpc.tlsConfig.sslParams.maximumProtocolVersion: TLS below 1.2 is not available",
            ),
            (
                "{address: '127.0.0.1:1', connectionPool: {maxConns: 1}}",
                "configs[0].passThroughAuth.grpc.connectionPool: unknown field `connectionPool`",
            ),
        ] {
            let e = load(&plugin, grpc).await.unwrap_err().to_string();
            assert!(e.contains(want), "{grpc}: {e}");
        }
        load(
            &plugin,
            "{address: '127.0.0.1:1', connectionTimeout: 250ms, retryPolicy: {numRetries: 2, retryBackOff: {baseInterval: 1ms}}}",
        )
        .await
        .unwrap();
    }

    #[test]
    fn retry_defaults_are_gloo_s() {
        let policy =
            |json: serde_json::Value| serde_json::from_value::<Option<RetryPolicy>>(json).unwrap();
        let s = Duration::from_secs;
        // No policy: no retry (Gloo: "failed calls will not retry unless configured").
        assert_eq!(Retries::new(None).unwrap().count, 0);
        // `retryPolicy: {}`: one retry after 1 s, waits up to 10 s.
        let gloo = Retries::new(policy(serde_json::json!({}))).unwrap();
        assert_eq!((gloo.count, gloo.base, gloo.max), (1, s(1), s(10)));
        let waits: Vec<_> = (0..6).map(|a| gloo.wait(a)).collect();
        assert_eq!(waits, [s(1), s(2), s(4), s(8), s(10), s(10)]);
        // Gloo's guide: 10 retries from 1 s, at most 2 s apart.
        let guide = Retries::new(policy(serde_json::json!(
            {"numRetries": 10, "retryBackOff": {"baseInterval": "1s", "maxInterval": "2s"}}
        )))
        .unwrap();
        assert_eq!(
            (guide.count, guide.wait(0), guide.wait(1), guide.wait(5)),
            (10, s(1), s(2), s(2))
        );
        let base_only = Retries::new(policy(
            serde_json::json!({"retryBackOff": {"baseInterval": "200ms"}}),
        ))
        .unwrap();
        assert_eq!(base_only.max, s(2));
        let e = Retries::new(policy(serde_json::json!({"numRetries": 11}))).unwrap_err();
        assert_eq!(e.to_string(), "grpc.retryPolicy.numRetries: at most 10");
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let plugin = GrpcPassthroughPlugin::new();
        let configs = AuthConfig::parse(
            "t.yaml",
            "name: c\nconfigs:\n- passThroughAuth: {grpc: {address: '127.0.0.1:1'}}\n",
            Format::Yaml,
        )
        .unwrap();
        let mut registry = PluginRegistry::new();
        registry.register_kind(plugin);
        let e = configs[0].build(&registry).unwrap_err();
        assert!(e.to_string().contains("Tokio runtime"), "{e}");
    }

    #[tokio::test]
    async fn one_channel_per_address_while_a_step_uses_it() {
        let plugin = GrpcPassthroughPlugin::new();
        let mut engines = Vec::new();
        for address in ["127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:2"] {
            let yaml = format!(
                "name: c\nconfigs:\n- passThroughAuth:\n    grpc: {{address: '{address}'}}\n"
            );
            let engine = engine(&plugin);
            engine
                .load(&AuthConfig::parse("t.yaml", &yaml, Format::Yaml).unwrap())
                .await
                .unwrap();
            engines.push(engine);
        }
        assert!(format!("{plugin:?}").contains("channels: 2"), "{plugin:?}");
        // Their generations gone (a reload), nothing of them stays.
        drop(engines);
        load(&plugin, "{address: '127.0.0.1:3'}").await.unwrap();
        assert!(format!("{plugin:?}").contains("channels: 0"), "{plugin:?}");
        assert_eq!(plugin.channels.lock().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_shows_no_config_value() {
        let config: PassthroughConfig = serde_json::from_value(serde_json::json!({
            "grpc": { "address": "127.0.0.1:9000", "tlsConfig": { "secretRef": { "name": "passthrough-mtls" } } },
            "config": { "apiToken": "t-s3cret" }
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret")
                && shown.contains("apiToken")
                && shown.contains("passthrough-mtls"),
            "{shown}"
        );
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    /// A remote deny with a header that cannot be carried is still a
    /// deny (the header left out), not an error: under `failureModeAllow`
    /// an error would let the request through.
    #[test]
    #[allow(deprecated)] // `append`, as the remote sends it.
    fn a_deny_with_a_bad_header_stays_a_deny() {
        use envoy_types::ext_authz::v3::pb::DeniedHttpResponse;
        use envoy_types::pb::envoy::config::core::v3::HeaderValue as Header;
        use envoy_types::pb::envoy::r#type::v3::HttpStatus;
        use envoy_types::pb::google::rpc::Status;
        let header = |key: &str, value: &[u8]| HeaderValueOption {
            header: Some(Header {
                key: key.to_owned(),
                value: String::new(),
                raw_value: value.to_vec(),
            }),
            ..Default::default()
        };
        let response = CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![
                    header("x-reason", b"a\x01b"),
                    header(":status", b"200"),
                    HeaderValueOption::default(),
                    header("x-kept", b"yes"),
                ],
                body: "no".into(),
            })),
            ..Default::default()
        };
        let mut request = AuthorizationRequest::new(http::Method::GET, "/");
        let decision = answer(response, &mut request).unwrap();
        let deny = decision.as_deny().expect("a deny");
        assert_eq!(deny.status, StatusCode::UNAUTHORIZED);
        assert_eq!(deny.headers.len(), 1);
        assert_eq!(deny.headers["x-kept"], "yes");
        assert_eq!(deny.body, "no");

        // More names than a header map holds: the rest are left out, and
        // the deny stays one (it panicked).
        let many = (0..25_000)
            .map(|i| header(&format!("h{i}"), b"1"))
            .collect();
        let response = CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                headers: many,
                ..Default::default()
            })),
            ..Default::default()
        };
        let decision = answer(response, &mut request).unwrap();
        assert!(decision.as_deny().is_some_and(|d| !d.headers.is_empty()));
    }
}
