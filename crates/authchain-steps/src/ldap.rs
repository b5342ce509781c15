//! `ldap`: HTTP Basic credentials checked by an LDAP bind, and group
//! membership read from the user's entry, as Gloo's `ldap` does.
//!
//! ```yaml
//! ldap:
//!   address: ldap://ldap.default.svc.cluster.local:389   # or ldaps://..., or host:port
//!   userDnTemplate: uid=%s,ou=people,dc=solo,dc=io     # one %s: the user name, DN-escaped
//!   membershipAttributeName: memberOf                   # the default
//!   allowedGroups:
//!   - cn=managers,ou=groups,dc=solo,dc=io
//!   searchFilter: (objectClass=*)                       # default (uid=*)
//!   disableGroupChecking: false
//!   pool: { maxSize: 5, initialSize: 2 }                # the defaults
//!   groupLookupSettings:                                # optional: read groups as a service account
//!     checkGroupsWithServiceAccount: true
//!     credentialsSecretRef: { name: ldapcredentials, namespace: gloo-system }
//!   # authchain's own:
//!   tls: { caFile: /etc/authchain/ldap-ca.pem, startTls: true }   # or caPem; startTls on ldap://
//!   timeout: 5s                                         # each connect, bind and search
//!   maxConnections: 20                                  # in use at once (4 x pool.maxSize)
//! ```
//!
//! For each request:
//!
//! 1. the user and password come from `Authorization: Basic`; none, a
//!    malformed one or an empty password is a 401 with
//!    `WWW-Authenticate: Basic realm="authchain"` (an empty password would
//!    be an LDAP "unauthenticated bind", which many directories let
//!    through as anonymous);
//! 2. the step binds as `userDnTemplate` with `%s` replaced by the user
//!    name escaped as an RFC 4514 attribute value (`a,ou=admins` stays one
//!    value); a refused bind is a 401, whatever the code but busy (51)
//!    and unavailable (52), which are step errors. A bind the directory
//!    takes is a 401 too when its password policy control (OpenLDAP's
//!    `ppolicy`, 389-DS; asked for with each bind) reports an error: the
//!    password must be changed after an administrator set it
//!    (`changeAfterReset`); a control that cannot be read is a step error
//!    that fails closed;
//! 3. with `groupLookupSettings.checkGroupsWithServiceAccount`, it binds
//!    again as the service account of the `credentialsSecretRef` Secret
//!    (Gloo's `extauth.solo.io/accountcredentials`: `username`, `password`);
//!    a refused service-account bind is a step error (`statusOnError`,
//!    403 by default; Gloo answers 500), as is one its password policy
//!    refuses;
//! 4. it searches the user's entry (base scope) with `searchFilter`, in
//!    which any `%s` is the user name escaped as RFC 4515 filter text (an
//!    authchain addition: Gloo's filter has no placeholder); no entry is a
//!    403;
//! 5. unless `disableGroupChecking`, one of the entry's
//!    `membershipAttributeName` values must be one of `allowedGroups`
//!    (compared as DNs: attribute types and values ignoring case, spaces
//!    around them and escapes), else 403.
//!
//! An allowed user goes into `UserInfo` and into `state.ldap` (`user`,
//! `dn`, `groups`), named as the entry's own DN spells the part of the
//! `userDnTemplate`'s first RDN that `%s` stands for (`RICK` or a
//! full-width `ｒｉｃｋ` bind as `rick` on most directories, and are `rick`
//! here; with `uid=ext-%s,...`, the entry `uid=ext-rick` is `rick`; a
//! template whose `%s` is elsewhere names the user as typed); a name with spaces
//! around it or a control character, or a password with a NUL, is a 401.
//! A directory that cannot be reached, or that answers the user's bind
//! unavailable (52), is a step error, which `failureModeAllow` may let
//! through, unless the directory answered another bind or search within
//! `timeout` (any step's on that host and port, every AuthConfig's: it is
//! up; one host and port in front of several directories shares one),
//! which fails closed; so does a bind answered busy (51), which a flood
//! of made-up passwords can bring about. Once the user's password is sent,
//! any other failure is a step error that `failureModeAllow` never lets
//! through: no answer to the bind within `timeout` (each operation) or
//! four times it (the whole request, and always less than the step's own
//! time), or a connection closed before the answer (a pooled one closed
//! while idle is tried again on a new one; if the bind had left on it, a
//! failure to reach the directory again fails closed too: it may have
//! crashed on the password), since a directory slow to
//! refuse a password (a PAM delay after a wrong one) cannot be told from
//! one that hangs, nor a load balancer that gives up on it first from one
//! that crashed; and, once the directory accepted
//! the password, a failure of the service-account bind or of the search,
//! since the groups are unchecked and a client can bring it about (a
//! service account locked out by made-up passwords). A chain built in
//! code gives the step its time with [`BuildContext::with_timeout`]
//! (else the whole request may take four times `timeout`, past a
//! shorter time the chain gives the step, whose end `failureModeAllow`
//! lets through).
//!
//! Connections are pooled as Gloo pools them: up to `pool.maxSize` idle
//! connections are kept (each request binds anew on the one it takes);
//! when none is idle a new one is opened, up to `maxConnections` in use
//! (a request beyond waits for a place), and `pool.initialSize` are opened
//! when the step starts (a directory that is down then only logs a
//! warning). A connection idle for a minute is closed, not reused.
//! `ldap://` sends passwords in clear text (a warning says so for a
//! directory not on loopback): use `ldaps://` or `tls.startTls` wherever
//! the network is not trusted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authchain_core::resources::{ACCOUNT_CREDENTIALS_TYPE, ResourceRef};
use authchain_core::tls::{ClientTls, rustls_config};
use authchain_core::transport::LastAnswer;
use authchain_core::{
    Allow, Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, ConfigDuration,
    Decision, Deny, Error, ExtAuthPlugin, Lifecycle, UserInfo, async_trait,
};
use http::{HeaderValue, StatusCode};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::util::{self, BasicCredential};

/// The step kind this module registers.
pub const KIND: &str = "ldap";

/// The key under which the step writes the user into `state`.
pub const STATE_KEY: &str = "ldap";

/// The `ldap` block, in Gloo's field names.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port`, `ldaps://host:port`, or `host:port` (plain).
    pub address: String,
    /// The user's DN, with one `%s` for the user name.
    pub user_dn_template: String,
    /// The attribute that lists the entry's groups (`memberOf`).
    #[serde(default)]
    pub membership_attribute_name: Option<String>,
    /// The group DNs that are allowed.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// The connection pool.
    #[serde(default)]
    pub pool: PoolConfig,
    /// The filter of the user entry's search (`(uid=*)`).
    #[serde(default)]
    pub search_filter: Option<String>,
    /// Allow every user who binds, whatever their groups.
    #[serde(default)]
    pub disable_group_checking: bool,
    /// Read groups as a service account.
    #[serde(default)]
    pub group_lookup_settings: Option<GroupLookupSettings>,
    /// authchain's own: the CA for `ldaps://` or StartTLS.
    #[serde(default)]
    pub tls: Option<LdapTls>,
    /// authchain's own: the limit of each connect, bind and search (5s).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// authchain's own: the most connections in use at once (four times
    /// `pool.maxSize`, at least 4); a request beyond waits for one.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("address", &self.address)
            .field("user_dn_template", &self.user_dn_template)
            .field("membership_attribute_name", &self.membership_attribute_name)
            .field("allowed_groups", &self.allowed_groups)
            .field("pool", &self.pool)
            .field("search_filter", &self.search_filter)
            .field("disable_group_checking", &self.disable_group_checking)
            .field("group_lookup_settings", &self.group_lookup_settings)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Gloo's `ldap.pool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle connections kept at most (5).
    #[serde(default)]
    pub max_size: Option<u32>,
    /// Connections opened at start (2).
    #[serde(default)]
    pub initial_size: Option<u32>,
}

/// Gloo's `ldap.groupLookupSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupLookupSettings {
    /// Search the user's entry as the service account.
    #[serde(default)]
    pub check_groups_with_service_account: bool,
    /// The service account's Secret (`extauth.solo.io/accountcredentials`).
    #[serde(default)]
    pub credentials_secret_ref: Option<ResourceRef>,
}

/// authchain's `ldap.tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapTls {
    /// A PEM file of the CA certificates to trust (else Mozilla's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The same, inline.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS before any bind.
    #[serde(default)]
    pub start_tls: bool,
}

/// The plugin for step kind `ldap`. Its steps on one directory (every
/// AuthConfig's, while any uses it) share whether it answered lately
/// ([`LastAnswer::of`]), so that a flood through one AuthConfig is no
/// outage for another's `failureModeAllow`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LdapPlugin;

impl LdapPlugin {
    /// The plugin.
    pub fn new() -> Self {
        Self
    }

    /// What the steps on the directory at `url` heard of it.
    fn answers(&self, url: &str) -> Arc<LastAnswer> {
        LastAnswer::of(&format!("ldap://{}", directory(url)))
    }
}

/// The directory `url` names, one way however it is written: the host
/// (in lower case, without DNS's root dot) and the port (389, or 636 for
/// `ldaps://`, when it names none).
fn directory(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let host = parsed.host_str().unwrap_or_default();
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let port = parsed.port().unwrap_or(match parsed.scheme() {
        "ldaps" => 636,
        _ => 389,
    });
    format!("{host}:{port}")
}

impl ExtAuthPlugin for LdapPlugin {
    type Config = LdapConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: LdapConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        let account = match &config.group_lookup_settings {
            Some(GroupLookupSettings {
                check_groups_with_service_account: true,
                credentials_secret_ref: Some(reference),
            }) => {
                let place = "groupLookupSettings.credentialsSecretRef";
                let secret =
                    util::typed_secret(context, reference, ACCOUNT_CREDENTIALS_TYPE, place)?;
                let user = util::secret_text(secret, "username").map_err(|e| e.at(place))?;
                let password = util::secret_text(secret, "password").map_err(|e| e.at(place))?;
                // Empty, a bind is anonymous; with a stray newline, every
                // bind fails (and may lock the account).
                for (entry, value) in [("username", &user), ("password", &password)] {
                    if value.is_empty() || value.trim() != value {
                        return Err(Error::config(format!(
                            "the Secret's `{entry}` is empty or has spaces around it"
                        ))
                        .at(place));
                    }
                }
                Some(ServiceAccount { dn: user, password })
            }
            Some(GroupLookupSettings {
                check_groups_with_service_account: true,
                credentials_secret_ref: None,
            }) => {
                return Err(Error::config(
                    "checkGroupsWithServiceAccount needs a credentialsSecretRef",
                )
                .at("groupLookupSettings"));
            }
            _ => None,
        };
        let answers = |url: &str| self.answers(url);
        Ok(Arc::new(LdapAuth::new(config, account, context, answers)?))
    }
}

/// The service account that reads groups (a secret).
struct ServiceAccount {
    dn: String,
    password: String,
}

/// The service [`LdapPlugin`] builds.
pub struct LdapAuth {
    timeout: Duration,
    /// The most time a request takes here: four times `timeout`, and less
    /// than the step's own time, so that it is answered here (where it is
    /// known whether the user's bind succeeded) rather than timed out.
    budget: Duration,
    /// The longest wait for a connection's place: half the budget, or
    /// less ([`BuildContext::wait_limit`]).
    queue_wait: Duration,
    user_dn: (String, String),
    /// Where the user's name is in its entry's DN, when the template's
    /// first RDN holds `%s` (`uid=%s,...`, `uid=ext-%s,...`).
    name_in_dn: Option<NameInDn>,
    filter: String,
    membership: String,
    allowed_groups: Vec<String>,
    /// `allowed_groups`, normalized and folded.
    allowed: Vec<Dn>,
    check_groups: bool,
    account: Option<ServiceAccount>,
    pool: Arc<Pool>,
    initial_size: usize,
    challenge: HeaderValue,
}

impl std::fmt::Debug for LdapAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapAuth")
            .field("url", &self.pool.url)
            .field("user_dn_template", &self.user_dn)
            .field("filter", &self.filter)
            .field("membership", &self.membership)
            .field("allowed_groups", &self.allowed_groups)
            .field("check_groups", &self.check_groups)
            .field(
                "service_account",
                &self.account.as_ref().map(|a| a.dn.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// The default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl LdapAuth {
    /// Checks the config; connects nothing (see [`AuthService::start`]).
    /// `answers` gives what the steps on a directory (its URL) heard.
    fn new(
        config: LdapConfig,
        account: Option<ServiceAccount>,
        context: &BuildContext<'_>,
        answers: impl FnOnce(&str) -> Arc<LastAnswer>,
    ) -> Result<Self, Error> {
        let tls = config.tls.unwrap_or_default();
        let (url, secure) = address(&config.address).map_err(|e| e.at("address"))?;
        if secure && tls.start_tls {
            return Err(
                Error::config("startTls is for ldap://; ldaps:// is TLS already")
                    .at("tls.startTls"),
            );
        }
        let tls_wanted = secure || tls.start_tls;
        if !tls_wanted && (tls.ca_file.is_some() || tls.ca_pem.is_some()) {
            return Err(Error::config(
                "a CA is for TLS: use an ldaps:// address or set startTls: true",
            )
            .at("tls"));
        }
        let timeout = config.timeout.map_or(DEFAULT_TIMEOUT, Duration::from);
        if timeout.is_zero() {
            return Err(Error::config("must be above zero").at("timeout"));
        }
        let budget = match context.timeout {
            Some(step) => (timeout * 4).min(step - step / 8),
            None => timeout * 4,
        };
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(tls.start_tls);
        if tls_wanted {
            settings = settings.set_config(Arc::new(
                client_tls(context, &tls).map_err(|e| e.at("tls"))?,
            ));
        }

        let user_dn = match config.user_dn_template.split_once("%s") {
            Some((before, after)) if !after.contains("%s") => (before.to_owned(), after.to_owned()),
            _ => {
                return Err(
                    Error::config("must hold exactly one %s (the user name)").at("userDnTemplate")
                );
            }
        };
        let name_in_dn = NameInDn::of(&user_dn.0, &user_dn.1);
        let filter = config.search_filter.unwrap_or_else(|| "(uid=*)".to_owned());
        check_filter(&filter).map_err(|e| e.at("searchFilter"))?;
        let membership = config
            .membership_attribute_name
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "memberOf".to_owned());
        let check_groups = !config.disable_group_checking;
        if check_groups && config.allowed_groups.is_empty() {
            return Err(Error::config(
                "no group is allowed, so no user would be: list allowedGroups, \
                 or set disableGroupChecking: true to allow every user who binds",
            )
            .at("allowedGroups"));
        }
        let allowed = config
            .allowed_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                Dn::parse(g).map(Dn::folded).ok_or_else(|| {
                    Error::config("not a distinguished name (RFC 4514)")
                        .at(format!("allowedGroups[{i}]"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let at_most = |n: u32, place: &str| {
            if n > MAX_CONNECTIONS {
                Err(Error::config(format!("expected at most {MAX_CONNECTIONS}")).at(place))
            } else {
                Ok(n as usize)
            }
        };
        let max_size = at_most(config.pool.max_size.unwrap_or(5), "pool.maxSize")?;
        let initial_size = at_most(config.pool.initial_size.unwrap_or(2), "pool.initialSize")?;
        if initial_size > max_size {
            return Err(Error::config("initialSize is above maxSize").at("pool"));
        }
        let max_connections = match config.max_connections {
            None => (max_size * 4).clamp(4, MAX_CONNECTIONS as usize),
            Some(0) => return Err(Error::config("must be above zero").at("maxConnections")),
            Some(n) => at_most(n, "maxConnections")?,
        };
        if !secure && !tls.start_tls && !is_loopback(&url) {
            tracing::warn!(
                address = %url,
                "ldap: passwords go to this directory in clear text; use ldaps:// or tls.startTls"
            );
        }
        let challenge = HeaderValue::from_static("Basic realm=\"authchain\"");
        Ok(LdapAuth {
            timeout,
            budget,
            queue_wait: context.wait_limit().unwrap_or(budget).min(budget / 2),
            user_dn,
            name_in_dn,
            filter,
            membership,
            allowed_groups: config.allowed_groups,
            allowed,
            check_groups,
            account,
            pool: Arc::new(Pool {
                answers: answers(&url),
                url,
                settings,
                idle: Mutex::new(Vec::new()),
                max_size,
                in_use: Semaphore::new(max_connections),
            }),
            initial_size,
            challenge,
        })
    }

    /// The directory answered an operation with `rc`: up, unless it says
    /// it is unavailable.
    fn answered(&self, rc: u32) {
        if rc != UNAVAILABLE {
            self.pool.answers.heard();
        }
    }

    /// A new connection; failing, [`Self::unanswered`].
    async fn connect(&self) -> Result<Ldap, Error> {
        self.pool.connect().await.map_err(|e| self.unanswered(e))
    }

    /// A failure before the directory answered the user's bind (none
    /// came, the connection failed, or it was unavailable), by
    /// [`LastAnswer::unanswered`] over an operation's `timeout`: a flood
    /// of made-up passwords can make a directory that is up fail some.
    fn unanswered(&self, what: String) -> Error {
        self.pool.answers.unanswered(self.timeout, what)
    }

    fn challenge(&self) -> Decision {
        util::challenge(&self.challenge)
    }

    /// `failure`, once a connection that may have carried the user's
    /// password to the directory failed.
    fn once_sent(&self, failure: impl std::fmt::Display) -> String {
        format!("{failure}, after a connection that had the user's password closed")
    }

    /// Binds, searches and decides, on one connection, `pooled` or new.
    async fn decide(
        &self,
        ldap: &mut Ldap,
        user: &str,
        password: &str,
        sent: &AtomicBool,
        pooled: bool,
    ) -> Result<Outcome, Failed> {
        let dn = format!(
            "{}{}{}",
            self.user_dn.0,
            ldap3::dn_escape(user),
            self.user_dn.1
        );
        sent.store(true, Ordering::Relaxed);
        // Once the password is sent, neither silence nor a connection
        // closed before the answer is an outage: a directory slow to refuse
        // a password (a PAM delay), or a load balancer that gives up on it
        // first, would let any password through. A bind never sent is, and
        // a pooled connection closed while idle is tried again.
        let bound = ldap
            .with_timeout(self.timeout)
            .with_controls(password_policy())
            .simple_bind(&dn, password)
            .await
            .map_err(|e| match e {
                ldap3::LdapError::OpSend { .. } => Failed::Outage(e),
                e if pooled && is_transport(&e) => Failed::Outage(e),
                e => Failed::Closed(e),
            })?;
        self.answered(bound.rc);
        match bound.rc {
            0 => {}
            // Up, and too busy for this bind: a flood of made-up passwords
            // can make it so.
            BUSY => return Err(Failed::Closed(bound.into())),
            UNAVAILABLE => return Err(Failed::Outage(bound.into())),
            // The directory wants another bind than ours (TLS, a stronger
            // method): every user is refused, which the config must fix.
            rc @ (7 | 8 | 13) => {
                tracing::warn!(
                    rc,
                    "ldap: the directory refuses simple binds as this step makes them (TLS or another method required)"
                );
                return Ok(Outcome::Unauthorized);
            }
            _ => return Ok(Outcome::Unauthorized),
        }
        // Right, and not to be used as it is: the user must change it first.
        match policy_refusal(&bound) {
            Ok(None) => {}
            Ok(Some(refusal)) => {
                tracing::debug!(
                    "ldap: the directory took the password, and its password policy refuses it: {refusal}"
                );
                return Ok(Outcome::Unauthorized);
            }
            Err(()) => {
                let what = "a password policy control that cannot be read".to_owned();
                return Err(Failed::Closed(policy_error(bound, what)));
            }
        }
        // The password is right: what fails from here on is a failure to
        // check the rest (the groups), which a client may bring about (a
        // service account locked by made-up passwords) and which must not
        // let the user through.
        self.look_up(ldap, user, &dn).await.map_err(Failed::Closed)
    }

    /// Searches the entry of `user`, bound as `dn`, and decides on it.
    async fn look_up(
        &self,
        ldap: &mut Ldap,
        user: &str,
        dn: &str,
    ) -> Result<Outcome, ldap3::LdapError> {
        if let Some(account) = &self.account {
            let bound = ldap
                .with_timeout(self.timeout)
                .with_controls(password_policy())
                .simple_bind(&account.dn, &account.password)
                .await?;
            self.answered(bound.rc);
            if bound.rc != 0 {
                return Err(ldap3::LdapError::from(bound));
            }
            // Its search would find nothing, which would be every user's 403.
            match policy_refusal(&bound) {
                Ok(None) => {}
                Ok(Some(refusal)) => {
                    let what =
                        format!("the service account's password policy refuses it: {refusal}");
                    return Err(policy_error(bound, what));
                }
                Err(()) => {
                    let what = "a password policy control that cannot be read".to_owned();
                    return Err(policy_error(bound, what));
                }
            }
        }
        let filter = self.filter.replace("%s", &ldap3::ldap_escape(user));
        let attributes = if self.check_groups {
            vec![self.membership.as_str()]
        } else {
            vec!["1.1"] // no attribute: only whether the entry matches
        };
        let found = ldap
            .with_search_options(SearchOptions::new().sizelimit(1))
            .with_timeout(self.timeout)
            .search(dn, Scope::Base, &filter, attributes)
            .await?;
        self.answered(found.1.rc);
        let entries = match found.1.rc {
            0 => found.0,
            // The entry is not there, or not visible to whoever searched.
            32 | 50 => Vec::new(),
            _ => return Err(found.1.into()),
        };
        // A search-result reference or intermediate message is no entry
        // (constructing one from it panics).
        let Some(entry) = entries
            .into_iter()
            .find(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
        else {
            return Ok(Outcome::Forbidden);
        };
        // The directory matches names by its own rules (`RICK`, a
        // full-width `ｒｉｃｋ`, bind as `rick`): the user is named as the
        // entry's own DN spells it, never as typed.
        let name = match &self.name_in_dn {
            None => user.to_owned(),
            Some(place) => match place.name(&entry.dn) {
                Some(name) => name,
                None => return Ok(Outcome::Forbidden),
            },
        };
        let dn = entry.dn;
        let groups: Vec<String> = entry
            .attrs
            .into_iter()
            .filter(|(name, _)| {
                // AD sends a large attribute in ranges: `memberOf;range=0-1499`.
                let base = name.split(';').next().unwrap_or_default();
                self.check_groups && base.eq_ignore_ascii_case(&self.membership)
            })
            .flat_map(|(_, values)| values)
            .take(MAX_GROUPS)
            .collect();
        if self.check_groups
            && !groups
                .iter()
                .filter_map(|g| Dn::parse(g).map(Dn::folded))
                .any(|g| self.allowed.contains(&g))
        {
            return Ok(Outcome::Forbidden);
        }
        Ok(Outcome::Allowed { name, dn, groups })
    }

    /// The decision; `sent` is set once the user's password is sent to
    /// the directory.
    async fn check(
        &self,
        request: &mut AuthorizationRequest,
        sent: &AtomicBool,
    ) -> Result<Decision, Error> {
        let encoded = util::scheme_credential(request, &http::header::AUTHORIZATION, "Basic ");
        let Some(credential) = encoded.ok().flatten().and_then(BasicCredential::decode) else {
            return Ok(self.challenge());
        };
        let Some((user, password)) = credential.split() else {
            return Ok(self.challenge());
        };
        // An empty password is an unauthenticated bind (RFC 4513 5.1.2),
        // which some directories answer as an anonymous success; a
        // password LDAP cannot carry as text is no password of its users.
        let Ok(password) = std::str::from_utf8(password) else {
            return Ok(self.challenge());
        };
        if password.is_empty() || password.contains('\0') {
            return Ok(self.challenge());
        }
        // Names the directory would read as another (spaces around one are
        // insignificant to it) or that no directory holds.
        if user.trim() != user || user.chars().any(char::is_control) {
            return Ok(self.challenge());
        }
        // A place: made-up passwords can take them all, so one not had in
        // time is no outage that `failureModeAllow` rides out.
        let _place = tokio::time::timeout(self.queue_wait, self.pool.in_use.acquire())
            .await
            .map_err(|_| Error::overloaded("every LDAP connection is in use"))?
            .map_err(Error::step)?;
        let (mut ldap, pooled) = match self.pool.take() {
            Some(ldap) => (ldap, true),
            None => (self.connect().await?, false),
        };
        let mut decided = self.decide(&mut ldap, user, password, sent, pooled).await;
        // A pooled connection the directory closed while it was idle fails
        // before any answer: once more on a new one. Unless the bind never
        // left, the directory may have had the password (and crashed on
        // it): what fails from here on fails closed.
        let mut written = false;
        if pooled && matches!(&decided, Err(Failed::Outage(e)) if is_transport(e)) {
            written = !matches!(
                &decided,
                Err(Failed::Outage(ldap3::LdapError::OpSend { .. }))
            );
            sent.store(written, Ordering::Relaxed);
            ldap = match self.connect().await {
                Ok(ldap) => ldap,
                Err(e) if written => return Err(Error::step_fail_closed(self.once_sent(e))),
                Err(e) => return Err(e),
            };
            decided = self.decide(&mut ldap, user, password, sent, false).await;
        }
        // The connection's state is unknown after an error: it is not pooled.
        let outcome = match decided {
            Ok(outcome) => outcome,
            Err(Failed::Outage(e)) if written => {
                let what = format!("LDAP at {}: {}", self.pool.url, Failure(&e));
                return Err(Error::step_fail_closed(self.once_sent(what)));
            }
            Err(Failed::Outage(e)) => {
                return Err(self.unanswered(format!("LDAP at {}: {}", self.pool.url, Failure(&e))));
            }
            Err(Failed::Closed(e)) => {
                return Err(Error::step_fail_closed(format!(
                    "LDAP at {}, once the user's password was sent: {}",
                    self.pool.url,
                    Failure(&e)
                )));
            }
        };
        self.pool.give_back(ldap);
        Ok(match outcome {
            Outcome::Unauthorized => self.challenge(),
            Outcome::Forbidden => Deny::new(StatusCode::FORBIDDEN).into(),
            Outcome::Allowed { name, dn, groups } => {
                request.state.insert(
                    STATE_KEY,
                    json!({ "user": name, "dn": dn, "groups": groups }),
                );
                Allow::new().user(UserInfo::new(name)).into()
            }
        })
    }
}

/// The password policy control (draft-behera-ldap-password-policy,
/// OpenLDAP's `ppolicy`, 389-DS): asked for with each user's bind, so that
/// a directory with a policy says in its answer why a password it took must
/// not be used as it is; and with the service account's.
const PASSWORD_POLICY: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The request for [`PASSWORD_POLICY`]'s control, which a directory that
/// does not know it passes over.
fn password_policy() -> RawControl {
    RawControl {
        ctype: PASSWORD_POLICY.to_owned(),
        crit: false,
        val: None,
    }
}

/// Why the password policy control of an accepted bind refuses the
/// password, if it does: an error in it (`changeAfterReset`: an
/// administrator set the password, and the user must change it first;
/// OpenLDAP then refuses the user's other operations, but not a service
/// account's search). A warning alone (the password expires soon, a grace
/// login) refuses nothing. `Err`: a control it cannot read.
fn policy_refusal(bound: &ldap3::LdapResult) -> Result<Option<&'static str>, ()> {
    use ldap3::asn1::{PL, TagClass, parse_tag};
    const ERRORS: [&str; 9] = [
        "passwordExpired",
        "accountLocked",
        "changeAfterReset",
        "passwordModNotAllowed",
        "mustSupplyOldPassword",
        "insufficientPasswordQuality",
        "passwordTooShort",
        "passwordTooYoung",
        "passwordInHistory",
    ];
    let Some(control) = bound.ctrls.iter().find(|c| c.1.ctype == PASSWORD_POLICY) else {
        return Ok(None);
    };
    let value = control.1.val.as_deref().ok_or(())?;
    let sequence = match parse_tag(value) {
        Ok(([], tag)) if tag.class == TagClass::Universal && tag.id == 16 => tag,
        _ => return Err(()),
    };
    let PL::C(fields) = sequence.payload else {
        return Err(());
    };
    let mut refusal = None;
    for field in fields {
        match (field.class, field.id, field.payload) {
            // The warning.
            (TagClass::Context, 0, PL::C(_)) => {}
            (TagClass::Context, 1, PL::P(error)) => {
                refusal = Some(match error.as_slice() {
                    [code] => ERRORS.get(usize::from(*code)).copied(),
                    _ => None,
                });
            }
            _ => return Err(()),
        }
    }
    Ok(refusal.map(|named| named.unwrap_or("an error it does not name")))
}

/// The bind's result, as the error of a password policy control that
/// cannot be read or that refuses a service account.
fn policy_error(mut bound: ldap3::LdapResult, what: String) -> ldap3::LdapError {
    bound.text = what;
    bound.into()
}

/// The result code of a directory that cannot answer now (unavailable):
/// an outage, unless it answered others meanwhile. Any other answer to
/// the user's bind refuses these credentials: invalid ones, and also a
/// lockout or a password policy (constraint violation, 19, on 389-DS) and
/// the errors a pass-through bind may answer for what the client sent
/// (operations error, time limit, admin limit, other): a client can bring
/// those about, so they must not count as an outage that
/// `failureModeAllow` lets through.
const UNAVAILABLE: u32 = 52;

/// The result code of a directory too busy for a bind: it is up, and a
/// flood can make it so, so it fails closed.
const BUSY: u32 = 51;

/// Why a decision failed: an outage `failureModeAllow` may ride out (the
/// connection failed before the directory answered the user's bind, or
/// the answer says it cannot answer now), or a failure that fails closed
/// (no answer to the bind in time, or any failure once the directory
/// accepted the password).
enum Failed {
    Outage(ldap3::LdapError),
    Closed(ldap3::LdapError),
}

enum Outcome {
    Unauthorized,
    Forbidden,
    Allowed {
        name: String,
        dn: String,
        groups: Vec<String>,
    },
}

/// Whether `e` is the connection's failure, not the directory's answer
/// (nor its silence).
fn is_transport(e: &ldap3::LdapError) -> bool {
    matches!(
        e,
        ldap3::LdapError::Io { .. }
            | ldap3::LdapError::EndOfStream
            | ldap3::LdapError::OpSend { .. }
            | ldap3::LdapError::ResultRecv { .. }
            | ldap3::LdapError::IdScrubSend { .. }
            | ldap3::LdapError::MiscSend { .. }
    )
}

/// The most connections a config may ask for, idle or in use.
const MAX_CONNECTIONS: u32 = 4096;

/// The most group values read from one entry.
const MAX_GROUPS: usize = 10_000;

/// A distinguished name, normalized for comparison: RDNs in order, each a
/// sorted list of (attribute type, value), the types in lower case, the
/// values unescaped (RFC 4514), without the spaces around them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dn(Vec<Vec<(String, String)>>);

impl Dn {
    /// `None` when `text` is not a DN.
    fn parse(text: &str) -> Option<Dn> {
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut kind = String::new();
            loop {
                match chars.next()? {
                    '=' => break,
                    c => kind.push(c),
                }
            }
            let kind = kind.trim().to_ascii_lowercase();
            if kind.is_empty()
                || !kind
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return None;
            }
            let mut value = Vec::new();
            // The length of `value` up to its last escaped byte: spaces
            // after it are the value's own.
            let mut kept = 0;
            let end = loop {
                match chars.next() {
                    None => break None,
                    Some(c @ (',' | '+')) => break Some(c),
                    Some('\\') => {
                        let c = chars.next()?;
                        match (c.to_digit(16), chars.peek().and_then(|d| d.to_digit(16))) {
                            (Some(high), Some(low)) => {
                                chars.next();
                                value.push((high * 16 + low) as u8);
                            }
                            _ => {
                                let mut buf = [0; 4];
                                value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                        kept = value.len();
                    }
                    Some(' ') if value.is_empty() => {}
                    Some(c) => {
                        let mut buf = [0; 4];
                        value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        if c != ' ' {
                            kept = value.len();
                        }
                    }
                }
            };
            value.truncate(kept);
            rdn.push((kind, String::from_utf8(value).ok()?));
            if end != Some('+') {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
            }
            if end.is_none() {
                break;
            }
        }
        Some(Dn(rdns))
    }

    /// The value of `kind` (lower case) in the first RDN.
    fn first_value(&self, kind: &str) -> Option<String> {
        let rdn = self.0.first()?;
        rdn.iter().find(|(k, _)| k == kind).map(|(_, v)| v.clone())
    }
}

/// Where the user's name is in its entry's DN: in the value of the first
/// RDN's `attribute`, between the template's `prefix` and `suffix`.
#[derive(Debug)]
struct NameInDn {
    /// Lower case.
    attribute: String,
    prefix: String,
    suffix: String,
}

impl NameInDn {
    /// The place of `%s` in a template `before%safter`, if it is in the
    /// first RDN, of one attribute (`uid=ext-%s,ou=people,...`).
    fn of(before: &str, after: &str) -> Option<NameInDn> {
        let (attribute, prefix) = before.split_once('=')?;
        let suffix = after.split(',').next().unwrap_or_default();
        let plain = |text: &str| !text.contains([',', '+', '=', '\\', '"']);
        let attribute_ok = !attribute.is_empty()
            && attribute
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (attribute_ok && plain(prefix) && plain(suffix)).then(|| NameInDn {
            attribute: attribute.to_ascii_lowercase(),
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The user's name as the entry's `dn` spells it (its prefix and
    /// suffix as the directory matched them, in any case); `None` if the
    /// DN does not hold it there.
    fn name(&self, dn: &str) -> Option<String> {
        let value = Dn::parse(dn)?.first_value(&self.attribute)?;
        let rest = value
            .get(..self.prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&self.prefix))
            .and_then(|_| value.get(self.prefix.len()..))?;
        let name = rest.len().checked_sub(self.suffix.len()).and_then(|end| {
            rest.get(end..)
                .filter(|s| s.eq_ignore_ascii_case(&self.suffix))
                .and_then(|_| rest.get(..end))
        })?;
        (!name.is_empty()).then(|| name.to_owned())
    }
}

impl Dn {
    /// The same DN with its values in lower case, for matching as
    /// directories match group names (case-insensitively).
    fn folded(mut self) -> Dn {
        for rdn in &mut self.0 {
            for (_, value) in rdn.iter_mut() {
                *value = value.to_lowercase();
            }
            rdn.sort();
        }
        self
    }
}

/// An LDAP error as a log line: its result code and the server's text,
/// never what was sent.
struct Failure<'a>(&'a ldap3::LdapError);

impl std::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ldap3::LdapError::LdapResult { result } => {
                write!(f, "result code {}", result.rc)?;
                if !result.text.is_empty() {
                    write!(f, " ({})", result.text)?;
                }
                Ok(())
            }
            ldap3::LdapError::Timeout { .. } => f.write_str("no answer in time"),
            other => write!(f, "{other}"),
        }
    }
}

#[async_trait]
impl AuthService for LdapAuth {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        Answer::wait(async move {
            let sent = AtomicBool::new(false);
            match tokio::time::timeout(self.budget, self.check(request, &sent)).await {
                Ok(answer) => answer,
                // As any silence once the password is sent.
                Err(_) if sent.load(Ordering::Relaxed) => Err(Error::step_fail_closed(format!(
                    "LDAP at {}: no answer in time once the user's password was sent",
                    self.pool.url
                ))),
                Err(_) => {
                    Err(self.unanswered(format!("LDAP at {}: no answer in time", self.pool.url)))
                }
            }
        })
    }

    async fn start(&self, lifecycle: Lifecycle) -> Result<(), Error> {
        // In the background: a directory that is slow to answer does not
        // hold the generation back.
        let (pool, count) = (self.pool.clone(), self.initial_size);
        tokio::spawn(async move {
            let fill = async {
                for _ in 0..count {
                    match pool.connect().await {
                        Ok(ldap) => pool.give_back(ldap),
                        Err(e) => {
                            tracing::warn!(error = %e, "ldap: cannot open the pool's first connections; each request will connect");
                            break;
                        }
                    }
                }
            };
            tokio::select! {
                () = fill => {}
                () = lifecycle.cancelled() => {}
            }
        });
        Ok(())
    }

    fn reads(&self) -> Option<Vec<Attribute>> {
        Some(vec![Attribute::header(http::header::AUTHORIZATION)])
    }
}

/// The directory's address, and its idle connections up to a bound.
struct Pool {
    url: String,
    settings: LdapConnSettings,
    /// Idle connections and when each was last used.
    idle: Mutex<Vec<(Ldap, Instant)>>,
    max_size: usize,
    /// Places for connections in use.
    in_use: Semaphore,
    /// When the directory last answered a bind or a search (but
    /// "unavailable") of any step's on it.
    answers: Arc<LastAnswer>,
}

/// How long a connection may stay idle in the pool: past it, a NAT or a
/// load balancer may have dropped it without a word.
const MAX_IDLE: Duration = Duration::from_secs(60);

impl Pool {
    /// A new connection.
    async fn connect(&self) -> Result<Ldap, String> {
        let (conn, ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// An idle connection that is still open and was used lately.
    fn take(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mut ldap, used)) = idle.pop() {
            if !ldap.is_closed() && used.elapsed() < MAX_IDLE {
                return Some(ldap);
            }
        }
        None
    }

    /// Keeps `ldap` for another request if there is room (else it closes).
    fn give_back(&self, mut ldap: Ldap) {
        if ldap.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_size {
            idle.push((ldap, Instant::now()));
        }
    }
}

/// The URL for `address`, and whether it is LDAPS.
fn address(address: &str) -> Result<(String, bool), Error> {
    let (url, secure) = if let Some(rest) = address.strip_prefix("ldaps://") {
        (format!("ldaps://{rest}"), true)
    } else if address.starts_with("ldap://") {
        (address.to_owned(), false)
    } else if address.contains("://") {
        return Err(Error::config("expected ldap://, ldaps:// or host:port"));
    } else {
        (format!("ldap://{address}"), false)
    };
    let host = url.split_once("://").map_or("", |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
        return Err(Error::config("expected a host (and port)"));
    }
    Ok((url, secure))
}

/// Whether the URL's host is a loopback address or `localhost`.
fn is_loopback(url: &str) -> bool {
    let host = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = host.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A filter is one parenthesized expression (RFC 4515; ldap3 would also
/// take a bare `uid=*`) that ldap3 reads whole, with `%s` filled in.
fn check_filter(filter: &str) -> Result<(), Error> {
    if filter.starts_with('(') && ldap3::parse_filter(filter.replace("%s", "x")).is_ok() {
        Ok(())
    } else {
        Err(Error::config(
            "not an LDAP filter (RFC 4515): expected one (...) expression",
        ))
    }
}

fn client_tls(context: &BuildContext<'_>, tls: &LdapTls) -> Result<rustls::ClientConfig, Error> {
    let ca_file = tls.ca_file.as_deref().map(std::path::Path::new);
    rustls_config(&ClientTls::from_ca(
        context,
        ca_file,
        tls.ca_pem.as_deref(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the password policy control of an accepted bind says, as BER
    /// (draft-behera-ldap-password-policy, section 6.2).
    #[test]
    fn a_password_policy_error_refuses_and_a_warning_does_not() {
        let bound = |value: Option<&[u8]>| ldap3::LdapResult {
            rc: 0,
            matched: String::new(),
            text: String::new(),
            refs: Vec::new(),
            ctrls: vec![ldap3::controls::Control(
                None,
                RawControl {
                    ctype: PASSWORD_POLICY.to_owned(),
                    crit: false,
                    val: value.map(<[u8]>::to_vec),
                },
            )],
        };
        let refusal = |value: &[u8]| policy_refusal(&bound(Some(value)));
        for (value, refused) in [
            (&[0x30, 3, 0x81, 1, 2][..], "changeAfterReset"),
            // A long-form length.
            (&[0x30, 0x81, 3, 0x81, 1, 2], "changeAfterReset"),
            // A warning (3 grace logins left) and passwordExpired, in
            // either order.
            (
                &[0x30, 8, 0xa0, 3, 0x81, 1, 3, 0x81, 1, 0],
                "passwordExpired",
            ),
            (
                &[0x30, 8, 0x81, 1, 2, 0xa0, 3, 0x81, 1, 3],
                "changeAfterReset",
            ),
            // Error 9, which no draft names, and one of two bytes.
            (&[0x30, 3, 0x81, 1, 9], "an error it does not name"),
            (&[0x30, 4, 0x81, 2, 0, 2], "an error it does not name"),
        ] {
            assert_eq!(refusal(value), Ok(Some(refused)), "{value:x?}");
        }
        // A warning alone (the password expires in 5 s), or nothing.
        assert_eq!(refusal(&[0x30, 5, 0xa0, 3, 0x80, 1, 5]), Ok(None));
        assert_eq!(refusal(&[0x30, 0]), Ok(None));
        let mut none = bound(None);
        none.ctrls.clear();
        assert_eq!(policy_refusal(&none), Ok(None));
        // What cannot be read: no value, not a sequence, a field it does not
        // know, cut short, bytes after it, an explicitly tagged error, a
        // warning outside its [0].
        assert_eq!(policy_refusal(&bound(None)), Err(()));
        for value in [
            &[][..],
            &[0x04, 0],
            &[0x30, 3, 0x82, 1, 2],
            &[0x30, 3, 0x81, 1],
            &[0x30, 0, 0],
            &[0x30, 5, 0xa1, 3, 0x0a, 1, 2],
            &[0x30, 3, 0x80, 1, 5],
        ] {
            assert_eq!(refusal(value), Err(()), "{value:x?}");
        }
    }

    #[test]
    fn one_directory_is_one_key_however_written() {
        for url in [
            "ldap://dir:389",
            "ldap://dir",
            "ldap://DIR:389/",
            "ldap://dir.:389",
            "ldap://dir:389/dc=x",
        ] {
            assert_eq!(directory(url), "dir:389", "{url}");
        }
        assert_eq!(directory("ldaps://dir"), "dir:636");
        assert_ne!(directory("ldap://dir:1389"), directory("ldap://dir"));
    }

    /// The user's name is taken from the entry's DN wherever the template
    /// puts `%s` in the first RDN, without the template's text around it
    /// (as the directory matched it, in any case); elsewhere, as typed.
    #[test]
    fn the_name_is_the_entry_s_where_the_template_puts_it() {
        let name = |template: &str, dn: &str| {
            let (before, after) = template.split_once("%s").unwrap();
            NameInDn::of(before, after).map(|place| place.name(dn))
        };
        let people = ",ou=people,dc=solo,dc=io";
        for (template, dn, expected) in [
            ("uid=%s,ou=people", "uid=rick,ou=people", Some(Some("rick"))),
            ("UID=%s,ou=people", "uid=rick,ou=people", Some(Some("rick"))),
            (
                "uid=ext-%s,ou=people",
                "uid=EXT-rick,ou=people",
                Some(Some("rick")),
            ),
            (
                "uid=%s-x,ou=people",
                "uid=rick-X,ou=people",
                Some(Some("rick")),
            ),
            ("uid=ext-%s,ou=people", "uid=rick,ou=people", Some(None)),
            ("uid=ext-%s,ou=people", "cn=ext-rick,ou=people", Some(None)),
            ("uid=ext-%s,ou=people", "uid=ext-,ou=people", Some(None)),
            ("%s@corp.example", "cn=rick,ou=people", None),
            ("ou=people,uid=%s", "uid=rick", None),
            ("uid=%s+cn=x,ou=people", "uid=rick+cn=x", None),
        ] {
            let got = name(&format!("{template}{people}"), &format!("{dn}{people}"));
            assert_eq!(
                got.as_ref().map(|n| n.as_deref()),
                expected,
                "{template} {dn}"
            );
        }
    }

    #[test]
    fn addresses_are_ldap_urls() {
        for (given, expected) in [
            ("ldap.example:389", Ok(("ldap://ldap.example:389", false))),
            (
                "ldap://ldap.example:389",
                Ok(("ldap://ldap.example:389", false)),
            ),
            (
                "ldaps://ldap.example:636",
                Ok(("ldaps://ldap.example:636", true)),
            ),
            ("http://ldap.example", Err(())),
            ("ldap://", Err(())),
            ("ldap://user@ldap.example", Err(())),
        ] {
            let got = address(given);
            match expected {
                Ok((url, secure)) => {
                    let (u, s) = got.unwrap();
                    assert_eq!((u.as_str(), s), (url, secure), "{given}");
                }
                Err(()) => assert!(got.is_err(), "{given}"),
            }
        }
    }

    #[test]
    fn debug_shows_no_password() {
        let config: LdapConfig = serde_json::from_value(serde_json::json!({
            "address": "ldap.example:389",
            "userDnTemplate": "uid=%s,ou=people",
            "allowedGroups": ["cn=g"],
        }))
        .unwrap();
        let account = ServiceAccount {
            dn: "cn=reader".to_owned(),
            password: "s3cret-pw".to_owned(),
        };
        let shown = format!(
            "{config:?} {:?}",
            LdapAuth::new(
                config.clone(),
                Some(account),
                &BuildContext::new("c", "s", "p"),
                |_| Arc::default(),
            )
            .unwrap()
        );
        assert!(shown.contains("cn=reader"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn dns_compare_as_directories_compare_them() {
        let dn = |s: &str| Dn::parse(s).map(Dn::folded);
        let managers = dn("cn=managers,ou=groups,dc=solo,dc=io");
        assert!(managers.is_some());
        for same in [
            "CN=Managers,OU=Groups,DC=solo,DC=io",
            "cn=managers, ou=groups, dc=solo, dc=io",
            "cn = managers ,ou=groups,dc=solo,dc=io",
            "cn=man\\61gers,ou=groups,dc=solo,dc=io",
        ] {
            assert_eq!(dn(same), managers, "{same}");
        }
        for other in [
            "cn=managers,ou=groups,dc=solo",
            "cn=managers+uid=x,ou=groups,dc=solo,dc=io",
            "cn=managers\\,ou=groups,dc=solo,dc=io",
            "cn=admins,ou=groups,dc=solo,dc=io",
        ] {
            assert_ne!(dn(other), managers, "{other}");
        }
        for bad in ["", "managers", "=x", "cn=a,", "cn=a\\"] {
            assert_eq!(Dn::parse(bad), None, "{bad}");
        }
        let user = Dn::parse("uid=dev\\,ops,ou=people").unwrap();
        assert_eq!(user.first_value("uid").as_deref(), Some("dev,ops"));
        let user = Dn::parse("uid=dev\\2Cops\\20,ou=people").unwrap();
        assert_eq!(user.first_value("uid").as_deref(), Some("dev,ops "));
        let user = Dn::parse("cn=x+UID=rick,ou=people").unwrap();
        assert_eq!(user.first_value("uid").as_deref(), Some("rick"));
    }

    #[test]
    fn loopback_hosts_are_told() {
        for (url, loopback) in [
            ("ldap://127.0.0.1:389", true),
            ("ldap://localhost", true),
            ("ldap://[::1]:389", true),
            ("ldap://ldap.example:389", false),
            ("ldap://10.0.0.1:389", false),
        ] {
            assert_eq!(is_loopback(url), loopback, "{url}");
        }
    }

    #[test]
    fn filters_are_one_balanced_expression() {
        for ok in [
            "(uid=*)",
            "(&(objectClass=person)(uid=%s))",
            "(objectClass=*)",
        ] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "uid=*", "(uid=*", "(uid=*))", "(a)(b)", ")("] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
