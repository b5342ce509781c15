//! Shadow AuthConfigs: a new policy tried on real traffic before it
//! serves.
//!
//! An AuthConfig that names a `shadow` answers as it always does; each of
//! its requests also runs, as the client sent it, through the shadow
//! AuthConfig, on a task of its own after the answer is made, so the
//! shadow never delays it. Where the two disagree, the disagreement is
//! counted in `authchain_shadow_disagreements_total{config, shadow, kind}`
//! (`kind`: `allow_deny`, the AuthConfig allowed and the shadow denied;
//! `deny_allow`; `status`, both denied with different statuses;
//! `identity`, both allowed different users) and logged with both
//! answers. At most [`MAX_SHADOW_RUNS`] shadow runs of one AuthConfig are
//! in flight, and those of the process hold at most
//! [`MAX_SHADOW_BODY_BYTES`] of bodies; a request beyond them (or made
//! outside a Tokio runtime) is not shadowed, and is counted in
//! `authchain_shadow_dropped_total{config, shadow}`. A shadow's runs are
//! its own decisions in its metrics, and `transport: shadow` in the
//! decision log; they run on the same runtime as the answers, so a
//! shadow that costs much CPU slows a busy server.
//!
//! A shadow run's request says so ([`is_shadow_run`]): a step whose work
//! has effects beyond its answer skips them there and answers as it would
//! (the built-in `oauth2` login exchanges no code, refreshes, revokes and
//! writes nothing: an IdP may revoke a grant whose code or refresh token
//! comes twice). Other steps run as they do for the answer: a shadow's
//! LDAP step binds again, and its passthrough calls again. A shadow run
//! neither reads nor fills the shadow's decision cache, and is not held
//! to the caller's deadline (the answer was made before it starts).
//!
//! ```yaml
//! name: site
//! shadow: site-next     # another AuthConfig of the same generation, with no shadow of its own
//! configs: [...]
//! ```

use std::sync::Arc;

use metrics::Counter;
use tokio::sync::Semaphore;

use crate::decision_log::Transport;
use crate::{AuthorizationRequest, Chain, Decision};

/// What marks a shadow run's request, in its extensions.
#[derive(Debug, Clone, Copy)]
struct ShadowRun;

/// Whether `request` is a shadow run's: a step then skips what its work
/// does beyond its answer.
pub fn is_shadow_run(request: &AuthorizationRequest) -> bool {
    request.extensions.get::<ShadowRun>().is_some()
}

/// The most shadow runs of one AuthConfig in flight at once.
pub const MAX_SHADOW_RUNS: usize = 256;

/// The most bytes of request bodies the shadow runs of the process hold
/// at once (every AuthConfig's, every generation's): a body outlives its
/// answer, and the listener's `maxBufferedBytes`, while its shadow runs.
pub const MAX_SHADOW_BODY_BYTES: usize = 64 << 20;

/// A permit per byte of the bodies shadow runs hold.
static BODY_BYTES: Semaphore = Semaphore::const_new(MAX_SHADOW_BODY_BYTES);

/// A chain's shadow: the chain, its places, its counters.
pub(crate) struct Shadow {
    chain: Arc<Chain>,
    places: Arc<Semaphore>,
    allow_deny: Counter,
    deny_allow: Counter,
    status: Counter,
    identity: Counter,
    dropped: Counter,
}

impl Shadow {
    /// `chain` as the shadow of the AuthConfig `config`.
    pub(crate) fn new(config: &str, chain: Arc<Chain>) -> Shadow {
        let shadow = chain.name().to_owned();
        let disagreement = |kind: &'static str| {
            metrics::counter!(
                "authchain_shadow_disagreements_total",
                "config" => config.to_owned(),
                "shadow" => shadow.clone(),
                "kind" => kind
            )
        };
        Shadow {
            allow_deny: disagreement("allow_deny"),
            deny_allow: disagreement("deny_allow"),
            status: disagreement("status"),
            identity: disagreement("identity"),
            dropped: metrics::counter!(
                "authchain_shadow_dropped_total",
                "config" => config.to_owned(),
                "shadow" => shadow.clone()
            ),
            places: Arc::new(Semaphore::new(MAX_SHADOW_RUNS)),
            chain,
        }
    }

    /// Runs `request` (as the client sent it) through the shadow on a task
    /// of its own, when a place is free (else it is counted as dropped),
    /// and compares its answer with `answer`, the AuthConfig's.
    pub(crate) fn run(
        self: &Arc<Self>,
        config: Arc<str>,
        mut request: AuthorizationRequest,
        answer: Answered,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.dropped.increment(1);
            return;
        };
        let body = request.body.as_ref().map_or(0, |b| b.len());
        let held = u32::try_from(body)
            .ok()
            .and_then(|bytes| BODY_BYTES.try_acquire_many(bytes).ok());
        let (Some(held), Ok(place)) = (held, self.places.clone().try_acquire_owned()) else {
            self.dropped.increment(1);
            return;
        };
        request.extensions.insert(ShadowRun);
        // The caller stops waiting for the answer, not for the shadow,
        // which starts after it: its own deadline bounds it.
        request.extensions.remove::<crate::transport::AnswerBy>();
        let this = self.clone();
        runtime.spawn(async move {
            let _place = (place, held);
            let decision = this
                .chain
                .answer(&mut request, false, Transport::Shadow)
                .await;
            let shadow = Answered::of(&decision);
            let kind = match (answer.allowed, shadow.allowed) {
                (true, false) => &this.allow_deny,
                (false, true) => &this.deny_allow,
                (false, false) if answer.status != shadow.status => &this.status,
                (true, true) if answer.user != shadow.user => &this.identity,
                _ => return,
            };
            kind.increment(1);
            tracing::info!(
                config = %config,
                shadow = %this.chain.name(),
                allowed = answer.allowed,
                status = answer.status,
                user = answer.user.as_deref().unwrap_or(""),
                shadow_allowed = shadow.allowed,
                shadow_status = shadow.status,
                shadow_user = shadow.user.as_deref().unwrap_or(""),
                path = %crate::decision_log::logged_path(&request.path),
                "the shadow AuthConfig disagrees"
            );
        });
    }
}

/// What an answer was, as a shadow compares it.
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    allowed: bool,
    status: u16,
    user: Option<String>,
}

impl Answered {
    pub(crate) fn of(decision: &Decision) -> Answered {
        match decision {
            Decision::Allow(allow) => Answered {
                allowed: true,
                status: 200,
                user: allow.user_info.as_ref().map(|u| u.user_id.clone()),
            },
            Decision::Deny(deny) => Answered {
                allowed: false,
                status: deny.status.as_u16(),
                user: None,
            },
        }
    }
}
