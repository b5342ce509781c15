//! Shadow AuthConfigs: a new policy tried on real traffic before it
//! serves.
//!
//! An AuthConfig that names a `shadow` answers as it always does; each of
//! its requests also runs, as the client sent it, through the shadow
//! AuthConfig, on a task of its own after the answer is made, so the
//! shadow never delays it. Where the two disagree, the disagreement is
//! counted in `authchain_shadow_disagreements_total{config, shadow, kind}`
//! (`kind`: `allow_deny`, the AuthConfig allowed and the shadow denied;
//! `deny_allow`; `status`, both denied with different statuses) and
//! logged with both answers. At most [`MAX_SHADOW_RUNS`] shadow runs of
//! one AuthConfig are in flight; a request beyond them is not shadowed,
//! and is counted in `authchain_shadow_dropped_total{config, shadow}`.
//!
//! ```yaml
//! name: site
//! shadow: site-next     # another AuthConfig of the same generation, with no shadow of its own
//! configs: [...]
//! ```

use std::sync::Arc;

use metrics::Counter;
use tokio::sync::Semaphore;

use crate::{AuthorizationRequest, Chain, Decision};

/// The most shadow runs of one AuthConfig in flight at once.
pub const MAX_SHADOW_RUNS: usize = 256;

/// A chain's shadow: the chain, its places, its counters.
pub(crate) struct Shadow {
    chain: Arc<Chain>,
    places: Arc<Semaphore>,
    allow_deny: Counter,
    deny_allow: Counter,
    status: Counter,
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
            dropped: metrics::counter!(
                "authchain_shadow_dropped_total",
                "config" => config.to_owned(),
                "shadow" => shadow.clone()
            ),
            places: Arc::new(Semaphore::new(MAX_SHADOW_RUNS)),
            chain,
        }
    }

    /// Whether a run can start now: its place, else the request is
    /// counted as dropped.
    pub(crate) fn place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let place = self.places.clone().try_acquire_owned().ok();
        if place.is_none() {
            self.dropped.increment(1);
        }
        place
    }

    /// Runs `request` (as the client sent it) through the shadow on a task
    /// of its own, and compares its answer with `answer`, the AuthConfig's.
    pub(crate) fn run(
        self: &Arc<Self>,
        config: Arc<str>,
        mut request: AuthorizationRequest,
        answer: Answered,
        place: tokio::sync::OwnedSemaphorePermit,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let _place = place;
            let shadow = Answered::of(&this.chain.authorize(&mut request).await);
            let kind = match (answer.allowed, shadow.allowed) {
                (true, false) => &this.allow_deny,
                (false, true) => &this.deny_allow,
                (false, false) if answer.status != shadow.status => &this.status,
                _ => return,
            };
            kind.increment(1);
            tracing::info!(
                config = %config,
                shadow = %this.chain.name(),
                allowed = answer.allowed,
                status = answer.status,
                shadow_allowed = shadow.allowed,
                shadow_status = shadow.status,
                path = %request.path.split('?').next().unwrap_or_default(),
                "the shadow AuthConfig disagrees"
            );
        });
    }
}

/// What an answer was, as a shadow compares it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered {
    allowed: bool,
    status: u16,
}

impl Answered {
    pub(crate) fn of(decision: &Decision) -> Answered {
        match decision {
            Decision::Allow(_) => Answered {
                allowed: true,
                status: 200,
            },
            Decision::Deny(deny) => Answered {
                allowed: false,
                status: deny.status.as_u16(),
            },
        }
    }
}
