//! `rules`: allow or deny by method, path and host, first match wins.
//!
//! ```yaml
//! rules:
//!   defaultAction: deny          # allow | deny; deny when left out
//!   denyStatus: 403              # status of a deny (403 when left out)
//!   rules:
//!   - action: allow
//!     methods: [GET]             # any method when left out
//!     path: { exact: /ratings/1 }
//!   - action: allow
//!     hosts: ["api.example.com", "*.internal.example.com"]
//!     paths:                     # any of these
//!     - { prefix: /public/ }
//!     - { glob: "/docs/**/*.html" }
//!     - { regex: "/items/[0-9]+" }
//!   - action: deny
//!     methods: [DELETE]
//!     status: 405                # this rule's deny status
//! ```
//!
//! A rule matches when every condition it has matches: the method is one
//! of `methods`, in any case (`GET` covers `HEAD`, which servers answer
//! with the GET handler: in a deny always, in an allow unless some rule
//! names `HEAD`),
//! the path (without its query
//! string) matches `path` or one of `paths`, and the host (without port, case-insensitive) is one of
//! `hosts` (`*.example.com` matches any subdomain). `glob` follows
//! shell rules where `*` stays within a path segment and `**` crosses
//! them; `regex` must match the whole path. The path is the canonical
//! one ([`authchain_core::path`]: `%7e` is `~`, `é` is `%C3%A9`, a space
//! is `%20`, no `.`, `..` or `//`); `exact` and `prefix` are read into that form too (a
//! pattern that is not a path, or has a query, is a config error), while
//! `glob` and `regex` must be written for it (one naming a non-ASCII
//! character, which that form escapes, is a config error naming the
//! escape). `prefix` compares text, not segments: `/files` also matches
//! `/files-private` (end a prefix with `/` to keep it to a segment), and
//! `exact: /admin` does not match `/admin/`, which Spring and Express
//! route alike (a deny names both, or uses `defaultAction: deny`), and
//! `glob: /admin/**` does not match `/admin` itself (a deny names
//! `exact: /admin` too). A
//! wildcard in `methods` (`*`, `ANY`) is a config error: leave `methods`
//! out to match every method. The first matching rule's
//! action is the answer; when none matches, `defaultAction` is.

use std::sync::Arc;

use authchain_core::{
    Answer, Attribute, AuthService, AuthorizationRequest, BuildContext, Decision, Error,
    ExtAuthPlugin,
};
use http::{Method, StatusCode};
use serde::Deserialize;

/// The step kind this module registers.
pub const KIND: &str = "rules";

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Stop it (403, or the status configured).
    #[default]
    Deny,
}

/// The `rules` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulesConfig {
    /// The rules, tried in order.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The answer when no rule matches (deny).
    #[serde(default)]
    pub default_action: Action,
    /// The status of a deny (403).
    #[serde(default)]
    pub deny_status: Option<u16>,
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// What to do on a match.
    pub action: Action,
    /// Methods that match (any when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// A path that matches.
    #[serde(default)]
    pub path: Option<PathConfig>,
    /// Paths that match (any of them).
    #[serde(default)]
    pub paths: Vec<PathConfig>,
    /// Hosts that match (any when empty).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The status of this rule's deny.
    #[serde(default)]
    pub status: Option<u16>,
}

/// A path matcher: exactly one of its fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathConfig {
    /// The path, exactly.
    #[serde(default)]
    pub exact: Option<String>,
    /// A prefix of the path.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A glob the whole path matches.
    #[serde(default)]
    pub glob: Option<String>,
    /// A regular expression the whole path matches.
    #[serde(default)]
    pub regex: Option<String>,
}

/// The plugin for step kind `rules`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesPlugin;

impl ExtAuthPlugin for RulesPlugin {
    type Config = RulesConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: RulesConfig,
        _: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(Rules::new(config)?))
    }
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    Prefix(String),
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl PathMatcher {
    fn new(config: PathConfig) -> Result<Self, Error> {
        let set = [
            config.exact.is_some(),
            config.prefix.is_some(),
            config.glob.is_some(),
            config.regex.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(Error::config(
                "expected exactly one of `exact`, `prefix`, `glob`, `regex`",
            ));
        }
        if let Some(p) = config.exact {
            return Ok(PathMatcher::Exact(canonical_pattern(p, "exact")?));
        }
        if let Some(p) = config.prefix {
            return Ok(PathMatcher::Prefix(canonical_pattern(p, "prefix")?));
        }
        // Neither can match a character the canonical path escapes.
        let escaped = |pattern: &str, also: &[char]| {
            pattern
                .chars()
                .find(|c| !c.is_ascii() || also.contains(c))
                .map(|c| {
                    let mut escape = String::new();
                    for b in c.to_string().bytes() {
                        escape.push_str(&format!("%{b:02X}"));
                    }
                    Error::config(format!(
                        "the path is matched in its canonical form, where `{c}` is `{escape}`: write that"
                    ))
                })
        };
        if let Some(g) = config.glob {
            if let Some(e) = escaped(&g, &[' ', '"', '<', '>', '`', '|']) {
                return Err(e.at("glob"));
            }
            let glob = globset::GlobBuilder::new(&g)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::config(format!("not a valid glob: {}", e.kind())).at("glob"))?;
            return Ok(PathMatcher::Glob(glob.compile_matcher()));
        }
        let r = config.regex.unwrap_or_default();
        if let Some(e) = escaped(&r, &[]) {
            return Err(e.at("regex"));
        }
        let re = regex::RegexBuilder::new(&format!("^(?:{r})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|_| Error::config("not a valid regular expression").at("regex"))?;
        Ok(PathMatcher::Regex(re))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => path.starts_with(p.as_str()),
            PathMatcher::Glob(g) => g.is_match(path),
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }
}

/// A path pattern in the canonical form the path it is matched against
/// has (`/%7euser` is `/~user`, `/café` is `/caf%C3%A9`, `/a b` is
/// `/a%20b`, `//a` is `/a`):
/// else a pattern not so written would never match, and a deny rule
/// would never deny.
fn canonical_pattern(pattern: String, place: &str) -> Result<String, Error> {
    if pattern.contains('?') {
        return Err(Error::config("a path pattern has no query").at(place));
    }
    // `/static/..` would be `/`: a rule for everything, unsaid.
    let dot = |segment: &str| {
        matches!(
            &*authchain_core::path::percent_decode(segment, false),
            "." | ".."
        )
    };
    if pattern.split('/').any(dot) {
        return Err(Error::config("a path pattern has no `.` or `..` segment").at(place));
    }
    // A request's space comes escaped (a raw one is refused), as `é` does.
    let pattern = pattern.replace(' ', "%20");
    match authchain_core::path::canonicalize(&pattern, authchain_core::path::AmbiguousPaths::Keep) {
        Ok(None) => Ok(pattern),
        Ok(Some(canonical)) => Ok(canonical),
        Err(e) => Err(Error::config(format!("not a path: {e}")).at(place)),
    }
}

#[derive(Debug)]
enum HostMatcher {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
}

impl HostMatcher {
    fn new(host: &str) -> Result<Self, Error> {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        // The request's host is matched without its port (and an IPv6
        // address without its brackets): a pattern with either would
        // match nothing.
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(address) => address,
            None if host.contains(['[', ']']) || crate::util::strip_port(host) != host => {
                return Err(Error::config(
                    "hosts are matched without their port: expected a host name alone",
                ));
            }
            None => host,
        };
        if let Some(rest) = host.strip_prefix('*') {
            if !rest.starts_with('.') || rest.len() < 2 || rest.contains('*') {
                return Err(Error::config(
                    "a wildcard host must look like `*.example.com`",
                ));
            }
            return Ok(HostMatcher::Suffix(rest.to_owned()));
        }
        if host.is_empty() || host.contains('*') {
            return Err(Error::config("expected a host name, or `*.` and a domain"));
        }
        Ok(HostMatcher::Exact(host.to_owned()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatcher::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatcher::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    action: Action,
    methods: Vec<Method>,
    paths: Vec<PathMatcher>,
    hosts: Vec<HostMatcher>,
    status: StatusCode,
}

impl Rule {
    fn matches(&self, request: &AuthorizationRequest, host: &str) -> bool {
        // A method in another case is the standard one to many servers
        // (refused before any step, unless ambiguity is allowed).
        let method = request.method.as_str();
        (self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method)))
            && (self.paths.is_empty() || {
                let path = request.path_only();
                self.paths.iter().any(|p| p.matches(path))
            })
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
    }
}

/// The `rules` step.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    default_action: Action,
    deny_status: StatusCode,
}

fn status(code: Option<u16>, default: StatusCode, place: &str) -> Result<StatusCode, Error> {
    match code {
        None => Ok(default),
        Some(code) => match StatusCode::from_u16(code) {
            Ok(s) if (400..=599).contains(&code) => Ok(s),
            _ => Err(Error::config("expected an HTTP error status from 400 to 599").at(place)),
        },
    }
}

impl Rules {
    /// Builds the step from its config.
    pub fn new(config: RulesConfig) -> Result<Self, Error> {
        let deny_status = status(config.deny_status, StatusCode::FORBIDDEN, "denyStatus")?;
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let mut methods = Vec::new();
            for (j, m) in rule.methods.iter().enumerate() {
                // A wildcard would be a method of that name, which no
                // request has: a deny written so would never match.
                if matches!(m.to_ascii_uppercase().as_str(), "*" | "ANY" | "ALL") {
                    return Err(Error::config(
                        "matches no request: leave `methods` out to match every method",
                    )
                    .at(format!("{at}.methods[{j}]")));
                }
                let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    Error::config("not a valid HTTP method").at(format!("{at}.methods[{j}]"))
                })?;
                methods.push(m);
            }
            let mut paths = Vec::new();
            if let Some(p) = rule.path {
                paths.push(PathMatcher::new(p).map_err(|e| e.at(format!("{at}.path")))?);
            }
            for (j, p) in rule.paths.into_iter().enumerate() {
                paths.push(PathMatcher::new(p).map_err(|e| e.at(format!("{at}.paths[{j}]")))?);
            }
            let mut hosts = Vec::new();
            for (j, h) in rule.hosts.iter().enumerate() {
                hosts.push(HostMatcher::new(h).map_err(|e| e.at(format!("{at}.hosts[{j}]")))?);
            }
            let status = status(rule.status, deny_status, &format!("{at}.status"))?;
            rules.push(Rule {
                action: rule.action,
                methods,
                paths,
                hosts,
                status,
            });
        }
        // Servers run the GET route for a HEAD (axum, Express): a deny on
        // GET covers HEAD (a rule before it may still allow HEAD), and so
        // does an allow, unless some rule says what HEAD gets.
        let head_named = rules.iter().any(|r| r.methods.contains(&Method::HEAD));
        for rule in &mut rules {
            let covers = rule.action == Action::Deny || !head_named;
            if covers
                && rule.methods.contains(&Method::GET)
                && !rule.methods.contains(&Method::HEAD)
            {
                rule.methods.push(Method::HEAD);
            }
        }
        Ok(Rules {
            rules,
            default_action: config.default_action,
            deny_status,
        })
    }

    /// The answer for a request, without the async machinery.
    pub fn decide(&self, request: &AuthorizationRequest) -> Decision {
        let host = request_host(request);
        for rule in &self.rules {
            if rule.matches(request, host) {
                return match rule.action {
                    Action::Allow => Decision::authorized(),
                    Action::Deny => Decision::deny(rule.status),
                };
            }
        }
        match self.default_action {
            Action::Allow => Decision::authorized(),
            Action::Deny => Decision::deny(self.deny_status),
        }
    }
}

/// The request's host without port: the request's authority (which a
/// decision cache keys on), empty (matching no host) when the transport
/// gave none.
fn request_host(request: &AuthorizationRequest) -> &str {
    let host = request.host.as_str();
    // `example.com.` is `example.com` to DNS, and to most servers.
    let host = crate::util::strip_port(host);
    host.strip_suffix('.').unwrap_or(host)
}

impl AuthService for Rules {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        self.decide(request).into()
    }

    fn reads(&self) -> Option<Vec<Attribute>> {
        Some(vec![Attribute::Method, Attribute::Host, Attribute::Path])
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exact` and `prefix` are matched in the canonical form the path
    /// has, whatever spelling the config gives them.
    #[test]
    fn path_patterns_match_in_canonical_form() {
        // A matcher of one kind (`exact`, `prefix`, `glob`, `regex`).
        let matcher = |kind: &str, pattern: &str| {
            let mut config = PathConfig {
                exact: None,
                prefix: None,
                glob: None,
                regex: None,
            };
            let field = match kind {
                "exact" => &mut config.exact,
                "prefix" => &mut config.prefix,
                "glob" => &mut config.glob,
                _ => &mut config.regex,
            };
            *field = Some(pattern.to_owned());
            PathMatcher::new(config)
        };
        let canonical = |p: &str| {
            authchain_core::path::canonicalize(p, authchain_core::path::AmbiguousPaths::Reject)
                .unwrap()
                .unwrap_or_else(|| p.to_owned())
        };
        for (pattern, request) in [
            ("/a/%7euser", "/a/~user"),
            ("/caf\u{e9}", "/caf%c3%a9"),
            ("/caf%c3%a9", "/caf\u{e9}"),
            ("//admin//x", "/admin/x"),
        ] {
            let exact = matcher("exact", pattern).unwrap();
            assert!(exact.matches(&canonical(request)), "{pattern} ~ {request}");
            let prefix = matcher("prefix", pattern).unwrap();
            assert!(prefix.matches(&canonical(&format!("{request}/more"))));
        }
        for bad in ["admin", "", "/a%zz", "/a?x=1", "/a/./x", "/a/%2E%2e"] {
            assert!(matcher("exact", bad).is_err(), "{bad:?}");
            assert!(matcher("prefix", bad).is_err(), "{bad:?}");
        }
        // A glob or a regex that names a character the canonical path
        // escapes could never match it: refused, naming the escape.
        let e = matcher("glob", "/\u{fc}ber/**").unwrap_err();
        assert!(e.to_string().contains("%C3%BC"), "{e}");
        assert!(matcher("glob", "/a|b/*").is_err());
        assert!(matcher("regex", "/caf\u{e9}/.*").is_err());
        assert!(
            matcher("glob", "/caf%C3%A9/**")
                .unwrap()
                .matches("/caf%C3%A9/x")
        );
        assert!(matcher("regex", "/(a|b)/[0-9]+").unwrap().matches("/a/7"));
    }

    #[test]
    fn wildcard_hosts_match_subdomains_only() {
        let m = HostMatcher::new("*.Example.com").unwrap();
        assert!(m.matches("a.example.COM"));
        assert!(m.matches("a.b.example.com"));
        assert!(!m.matches("example.com"));
        assert!(!m.matches("badexample.com"));
        assert!(HostMatcher::new("*example.com").is_err());
    }
}
