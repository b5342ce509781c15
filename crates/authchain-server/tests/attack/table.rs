//! The attacker's requests: one table, run as it is over every transport.
//!
//! Every row is `GET` with `Host: app.example` and bob's valid `api-key`
//! unless it says otherwise, and expects one of two things at the app:
//! nothing ([`Expect::Blocked`]), or the request with this canonical path
//! and `x-user-id: bob` as its only identity ([`Expect::Reach`]); a
//! malformed request may get either ([`Expect::BlockedOrReach`]).

use crate::transports::Transport;

/// bob's API key, the only key of the AuthConfig `site`.
pub(crate) const BOB_KEY: &str = "k7Qz-3vN9pLx2RtW8yHs4JdFm6BcGe1UoAiK5nVwXqZr0TyEb";

/// What must reach the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing: the app's hit counter is unchanged and the client gets a
    /// status that is not 2xx (or no response at all).
    Blocked,
    /// The request, with this path once canonicalized
    /// (`authchain_core::path::canonicalize`), `x-user-id: bob` and no
    /// other spelling of `x-user-id`.
    Reach(&'static str),
    /// Either: for requests a proxy may refuse as malformed (RFC 9112
    /// says 400) or pass in a repaired form. If anything reaches the app,
    /// it is what [`Expect::Reach`] says.
    BlockedOrReach(&'static str),
    /// Nothing reaches the app, and the proxy answers the request itself,
    /// whatever its status (no check is asked, so no 2xx means allow).
    AnsweredByProxy,
}

/// One attacker request and what must come of it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// What it tries, as the failure list names it.
    pub(crate) name: String,
    /// The method, as written on the request line.
    pub(crate) method: &'static str,
    /// The request target, byte for byte.
    pub(crate) target: String,
    /// The protocol on the request line (`HTTP/1.1`).
    pub(crate) version: &'static str,
    /// The `Host` header (`None`: the row's headers carry their own).
    pub(crate) host: Option<&'static str>,
    /// Whether bob's `api-key` is sent.
    pub(crate) key: bool,
    /// More header lines, in order, names as written.
    pub(crate) headers: Vec<(String, String)>,
    /// Bytes after the head, as written (the row's headers frame them).
    pub(crate) body: String,
    /// The outcome on every transport...
    pub(crate) expect: Expect,
    /// ...but these, each with why.
    pub(crate) except: Vec<(Transport, Expect, &'static str)>,
}

impl Row {
    fn new(name: impl Into<String>, method: &'static str, target: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            method,
            target: target.into(),
            version: "HTTP/1.1",
            host: Some("app.example"),
            key: true,
            headers: Vec::new(),
            body: String::new(),
            expect: Expect::Blocked,
            except: Vec::new(),
        }
    }

    fn get(name: impl Into<String>, target: impl Into<String>) -> Row {
        Row::new(name, "GET", target)
    }

    fn host(mut self, host: Option<&'static str>) -> Row {
        self.host = host;
        self
    }

    fn no_key(mut self) -> Row {
        self.key = false;
        self
    }

    fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Row {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn headers(mut self, headers: &[(&str, &str)]) -> Row {
        for (name, value) in headers {
            self = self.header(*name, *value);
        }
        self
    }

    fn version(mut self, version: &'static str) -> Row {
        self.version = version;
        self
    }

    fn body(mut self, body: impl Into<String>) -> Row {
        self.body = body.into();
        self
    }

    fn blocked_or_reach(mut self, canonical: &'static str) -> Row {
        self.expect = Expect::BlockedOrReach(canonical);
        self
    }

    fn reach(mut self, canonical: &'static str) -> Row {
        self.expect = Expect::Reach(canonical);
        self
    }

    fn blocked(mut self) -> Row {
        self.expect = Expect::Blocked;
        self
    }

    /// A different outcome on `transport`, for the reason given.
    fn except(mut self, transport: Transport, expect: Expect, why: &'static str) -> Row {
        self.except.push((transport, expect, why));
        self
    }

    /// Reaches as `/public/x` through Traefik and a normalizing Envoy,
    /// which resolve the row's dot segments before the check and the app.
    fn resolved_by_proxy(self, why: &'static str) -> Row {
        self.except(Transport::Traefik, Expect::Reach("/public/x"), why)
            .except(
                Transport::EnvoyGrpcNormalized,
                Expect::Reach("/public/x"),
                why,
            )
    }

    /// Blocked through nginx, Traefik and Caddy, which pass the client's
    /// identity header to the app where the allow sets none: the check
    /// refuses it.
    fn identity_refused(self) -> Row {
        [Transport::Nginx, Transport::Traefik, Transport::Caddy]
            .into_iter()
            .fold(self, |row, transport| {
                row.except(transport, Expect::Blocked, REFUSED_IDENTITY)
            })
    }

    /// Reaches through nginx and Caddy, which drop a header name with
    /// `_` (the row's): neither the check nor the app sees it.
    fn underscores_dropped(self) -> Row {
        self.except(
            Transport::Nginx,
            Expect::Reach("/public/x"),
            DROPS_UNDERSCORES,
        )
        .except(
            Transport::Caddy,
            Expect::Reach("/public/x"),
            DROPS_UNDERSCORES,
        )
    }

    /// What must come of the row on `transport`.
    pub(crate) fn expect_on(&self, transport: Transport) -> Expect {
        let find = |transport| {
            self.except
                .iter()
                .find(|(t, _, _)| *t == transport)
                .map(|(_, expect, _)| *expect)
        };
        // A proxy that trusts its peer, or Envoy failing open, answers as
        // the one that does not, unless the row says otherwise.
        let like = match transport {
            Transport::CaddyTrusting => Transport::Caddy,
            Transport::EnvoyGrpcFailOpen => Transport::EnvoyGrpc,
            Transport::EnvoyHttpFailOpen => Transport::EnvoyHttp,
            Transport::TraefikTrusting => Transport::Traefik,
            other => other,
        };
        find(transport)
            .or_else(|| find(like))
            .unwrap_or(self.expect)
    }

    /// The request's bytes: request line, `Host`, the key, the row's
    /// headers, then `Content-Length: 0` for a `POST`, `Connection:
    /// close`, and the body.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut text = format!("{} {} {}\r\n", self.method, self.target, self.version);
        if let Some(host) = self.host {
            text.push_str(&format!("Host: {host}\r\n"));
        }
        if self.key {
            text.push_str(&format!("api-key: {BOB_KEY}\r\n"));
        }
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        if self.method == "POST" {
            text.push_str("Content-Length: 0\r\n");
        }
        text.push_str("Connection: close\r\n\r\n");
        text.push_str(&self.body);
        text.into_bytes()
    }
}

/// Why Traefik and Caddy answer `OPTIONS *` with 200: Go's `net/http`
/// server answers it itself (an empty 200) and calls no handler.
const GO_OPTIONS: &str = "Go's net/http answers OPTIONS * itself with an empty 200";

/// Why a dot segment through Traefik or a normalizing Envoy reaches.
const RESOLVES: &str =
    "the proxy resolves the dot segment before the check and the app: both see /public/x";

/// Why a leading `//` through Traefik or a normalizing Envoy reaches.
const MERGES: &str =
    "the proxy merges the slashes before the check and the app: both see /public/x";

/// Why a header name with `_` that reaches nginx or Caddy is harmless.
const DROPS_UNDERSCORES: &str = "the proxy drops header names with `_`: the app never sees it";
const DROPPED_SPELLING: &str =
    "the proxy passes a name with `_` or `.` to neither the check nor the app";

const REMOVED_SPELLING: &str = "Envoy's HTTP service sends the check only its allowed_headers: the allow lists the other spellings of the key's header for removal";

const REFUSED_IDENTITY: &str = "a forward-auth proxy passes on the client's copy of an identity header the allow does not set, which the chain cannot remove there: the check is refused (400)";

const REFUSED_SPELLING: &str = "a forward-auth proxy passes the other spelling on, which the chain cannot remove there: the check is refused (400)";

/// Why a client's `X-Forwarded-Host` through Traefik or Caddy is harmless.
const OVERWRITES_XFH: &str = "the proxy overwrites X-Forwarded-Host with the host judged in the \
     check, and upstream the example pins it (Caddy) or drops it (Traefik)";

/// Every row, grouped as the suite's doc lists them.
pub(crate) fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(baseline());
    rows.extend(paths());
    rows.extend(forgeries());
    rows.extend(identities());
    rows.extend(selection());
    rows.extend(remote_answers());
    rows.extend(framing());
    rows
}

/// A. What the config allows and denies, plainly asked.
fn baseline() -> Vec<Row> {
    vec![
        Row::get("A baseline GET /public/x", "/public/x").reach("/public/x"),
        Row::get("A baseline GET /admin", "/admin"),
        Row::get("A no key", "/public/x").no_key(),
        Row::get("A wrong key", "/public/x").no_key().header(
            "api-key",
            "k7Qz-3vN9pLx2RtW8yHs4JdFm6BcGe1UoAiK5nVwXqZr0TyEc",
        ),
        Row::new("A POST /public/x", "POST", "/public/x"),
        Row::get("A Host evil.example", "/public/x").host(Some("evil.example")),
        // RFC 9112 §3.2: more than one Host is a 400; whichever one the
        // auth server read, the app may read the other.
        Row::get("A two Host lines, evil first", "/public/x")
            .host(None)
            .headers(&[("Host", "evil.example"), ("Host", "app.example")]),
        Row::get("A two Host lines, app first", "/public/x")
            .host(None)
            .headers(&[("Host", "app.example"), ("Host", "evil.example")]),
        // An absolute-form target names the host (RFC 9112 §3.2.2), not
        // the Host header.
        Row::get(
            "A absolute-form target http://evil.example/public/x",
            "http://evil.example/public/x",
        ),
        Row::get(
            "A absolute-form target http://app.example/admin",
            "http://app.example/admin",
        ),
        Row::get("A HTTP/1.0 without Host", "/public/x")
            .version("HTTP/1.0")
            .host(None),
        // The rules allow GET, which covers HEAD: servers answer a HEAD
        // with the GET handler.
        Row::new("A HEAD /public/x", "HEAD", "/public/x").reach("/public/x"),
        // Not origin-form: glued after `path_prefix: /check:site` it
        // would read as the AuthConfig `site*`.
        Row::new("A OPTIONS *", "OPTIONS", "*")
            .except(Transport::Traefik, Expect::AnsweredByProxy, GO_OPTIONS)
            .except(Transport::Caddy, Expect::AnsweredByProxy, GO_OPTIONS),
        Row::new("A CONNECT app.example:443", "CONNECT", "app.example:443"),
    ]
}

/// B. Encodings and traversals that climb out of `/public/`, and benign
/// spellings of `/public/x` that must still get through.
fn paths() -> Vec<Row> {
    let blocked = [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/..%2fadmin",
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/x/../../admin",
        "/public/./../admin",
        "//public/../admin",
        "/public/..",
        "/public/%2e%2e",
        "/public/x%00",
        "/public/%0d%0aX-Injected:%201",
        "/admin?/public/",
        "/admin;/public/",
        "/admin#/public/",
        "/public/%2e%2e/%2e%2e/public/../admin",
        "/public%2f../admin",
        "/public/x/%2e%2e%2f%2e%2e%2fadmin",
    ];
    let mut rows: Vec<Row> = blocked
        .iter()
        .map(|path| Row::get(format!("B {path}"), *path))
        .collect();
    // Proxies that resolve dot segments themselves (Traefik's
    // sanitizePath, on by default; Envoy's normalize_path) clamp the
    // climb at the root before the check and before the app: authchain
    // judges /public/x and the app gets /public/x.
    let clamped = "the proxy resolves the dots, clamping at the root, before the check \
                   and the app: both see /public/x";
    rows.push(Row::get("B /%2e%2e/public/x", "/%2e%2e/public/x").resolved_by_proxy(clamped));
    // A climb into an allowed prefix: a router that matches the raw path
    // (Envoy's, axum's under `Router::layer`) picks the /admin route,
    // while a check that resolved the dots would judge /public/x.
    for path in ["/admin/../public/x", "/admin/%2e%2e/public/x"] {
        rows.push(Row::get(format!("B {path}"), path).resolved_by_proxy(RESOLVES));
    }
    // An empty segment before `..`: RFC 3986 (and so Envoy's
    // normalize_path) lets the `..` remove the empty segment, giving
    // /public/admin; authchain, nginx and Go merge the slashes first,
    // giving /admin. Through a normalizing Envoy the check and the app
    // both see /public/admin.
    rows.push(Row::get("B /public//../admin", "/public//../admin").except(
        Transport::EnvoyGrpcNormalized,
        Expect::Reach("/public/admin"),
        "Envoy's normalize_path reads /public/admin before the check and the app",
    ));
    // `..;`: not a dot segment to RFC 3986, but Tomcat and Spring drop
    // `;params` before resolving dots, and Envoy's own normalize_path
    // reads it as `..`: each serves /admin. A path whose meaning differs
    // between servers, which the security model says is refused.
    rows.push(Row::get("B /public/..;/admin", "/public/..;/admin"));
    // `;` parameters anywhere: Tomcat, Jetty and Spring route
    // `/admin;x/users` as `/admin/users`, past a deny rule on `/admin/`
    // that reads the path as sent; other servers keep them. Refused, as
    // a path servers read differently, even under an allowed prefix.
    rows.push(Row::get(
        "B /public/x;jsessionid=1",
        "/public/x;jsessionid=1",
    ));
    // Encoded: nginx's `proxy_pass` with a URI part forwards its decoded
    // path, `/admin;x/users`, which Tomcat serves as `/admin/users`.
    rows.push(Row::get("B /admin%3Bx/users", "/admin%3Bx/users"));
    rows.push(Row::get(
        "B /public/x%3bjsessionid=1",
        "/public/x%3bjsessionid=1",
    ));
    // The same with an empty or `.` segment: Tomcat reads `/public/;/..`
    // as `/public//..`, then `/admin`. A proxy that normalizes first
    // (Traefik, Envoy's normalize_path) hands the check and the app both
    // `/public/admin`: what reaches is what was judged.
    rows.push(
        Row::get("B /public/;/../admin", "/public/;/../admin").blocked_or_reach("/public/admin"),
    );
    rows.push(
        Row::get("B /public/.;/../admin", "/public/.;/../admin").blocked_or_reach("/public/admin"),
    );
    // A raw `#`: nginx routes on what precedes it (`/admin`) but passes
    // the whole target in X-Original-URI; Envoy refuses it; Caddy sends
    // the check and the app `/admin%23/../public/x`, which both read as
    // `/public/x`.
    rows.push(
        Row::get("B /admin#/../public/x", "/admin#/../public/x").blocked_or_reach("/public/x"),
    );
    rows.push(Row::get("B /admin#/public/x", "/admin#/public/x"));
    rows.extend([
        // Double encoding: %25 is a literal '%', so the path stays under
        // /public/ for authchain and for any app that decodes once. An
        // app that decodes twice would climb: not authchain's to know.
        Row::get("B /public/%252e%252e/admin", "/public/%252e%252e/admin")
            .reach("/public/%252e%252e/admin"),
        // Overlong UTF-8 for '.': kept encoded, under /public/. Only an app
        // that decodes overlong forms (old IIS, some Java) would climb.
        Row::get("B /public/%c0%ae%c0%ae/admin", "/public/%c0%ae%c0%ae/admin")
            .reach("/public/%C0%AE%C0%AE/admin"),
        // A dot segment a browser would have resolved: a router that
        // matches the raw path (Envoy's without normalize_path, axum's)
        // reads another path than the app. Refused, but where the proxy
        // resolves it before the check and the app.
        Row::get("B /public/./x", "/public/./x").resolved_by_proxy(RESOLVES),
        // A leading `//`: host `public`, path `/x` to an app that reads
        // the target as a URL reference (Node's `new URL`, `urlsplit`).
        Row::get("B //public//x", "//public//x").resolved_by_proxy(MERGES),
        Row::get("B /public//x", "/public//x").reach("/public/x"),
        Row::get("B /public/%78", "/public/%78").reach("/public/x"),
        Row::get("B /public/x?next=/../admin", "/public/x?next=/../admin")
            .reach("/public/x?next=/../admin"),
        Row::get("B /%70ublic/x", "/%70ublic/x").reach("/public/x"),
        // An escape of a character a path holds as it is: one spelling.
        Row::get("B /public/%40x", "/public/%40x").reach("/public/@x"),
    ]);
    rows
}

/// The forged headers of C, each claiming the request the config allows
/// (`GET http://app.example/public/x`): name, then the header lines.
fn forged_sets() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    const XF: [(&str, &str); 4] = [
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Host", "app.example"),
        ("X-Forwarded-Proto", "https"),
    ];
    const XO: [(&str, &str); 4] = [
        ("X-Original-URI", "/public/x"),
        ("X-Original-Method", "GET"),
        ("X-Original-URL", "http://app.example/public/x"),
        ("X-Original-Host", "app.example"),
    ];
    let mut sets: Vec<(&'static str, Vec<(&'static str, &'static str)>)> = XF
        .iter()
        .chain(XO.iter())
        .map(|&(name, value)| (name, vec![(name, value)]))
        .collect();
    let both: Vec<_> = XF.iter().chain(XO.iter()).copied().collect();
    sets.push(("both families", both.clone()));
    sets.push((
        "both families, each line twice",
        both.iter().flat_map(|&h| [h, h]).collect(),
    ));
    sets.push((
        "both families in odd case",
        vec![
            ("x-FORWARDED-uri", "/public/x"),
            ("X-forwarded-METHOD", "GET"),
            ("x-Forwarded-HOST", "app.example"),
            ("X-ORIGINAL-uri", "/public/x"),
            ("x-original-METHOD", "GET"),
        ],
    ));
    sets.push((
        "both families with underscores",
        vec![
            ("x_forwarded_uri", "/public/x"),
            ("x_forwarded_method", "GET"),
            ("x_forwarded_host", "app.example"),
            ("x_forwarded_proto", "https"),
            ("X_Original_URI", "/public/x"),
            ("x_original_method", "GET"),
            ("x-forwarded_uri", "/public/x"),
            ("x_forwarded-method", "GET"),
        ],
    ));
    sets.push((
        "Connection: <forwarded names>",
        vec![
            ("X-Forwarded-Uri", "/public/x"),
            ("X-Original-URI", "/public/x"),
            (
                "Connection",
                "X-Forwarded-Uri, X-Forwarded-Method, X-Forwarded-Host, X-Original-URI, X-Original-Method",
            ),
        ],
    ));
    sets.push((
        "Forwarded (RFC 7239)",
        vec![("Forwarded", "for=127.0.0.1;host=app.example;proto=https")],
    ));
    sets.push((
        "X-Rewrite-URL and X-HTTP-Method-Override",
        vec![
            ("X-Rewrite-URL", "/public/x"),
            ("X-HTTP-Method-Override", "GET"),
            ("X-Method-Override", "GET"),
        ],
    ));
    sets
}

/// C. A denied request dressed as the allowed one with forwarded headers.
fn forgeries() -> Vec<Row> {
    let mut rows = Vec::new();
    for (set, headers) in forged_sets() {
        rows.push(Row::get(format!("C GET /admin + {set}"), "/admin").headers(&headers));
        rows.push(
            Row::new(format!("C POST /public/x + {set}"), "POST", "/public/x").headers(&headers),
        );
        rows.push(
            Row::get(format!("C Host evil.example + {set}"), "/public/x")
                .host(Some("evil.example"))
                .headers(&headers),
        );
    }
    // The allowed request, which some frameworks run as another method.
    for name in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        rows.push(
            Row::get(format!("C GET /public/x + {name}: DELETE"), "/public/x")
                .header(name, "DELETE"),
        );
    }
    // The allowed request from a client naming itself 10.9.9.9, which
    // the chain's policy denies: the source a step sees is never the
    // client's word.
    rows.push(
        Row::get("C GET /public/x + X-Forwarded-For: 10.9.9.9", "/public/x")
            .header("X-Forwarded-For", "10.9.9.9")
            .reach("/public/x"),
    );
    // The allowed request, which IIS's URL Rewrite, older Symfony and
    // Laminas route as the path an override header names.
    for name in ["X-Original-URL", "X-Rewrite-URL"] {
        rows.push(
            Row::get(format!("C GET /public/x + {name}: /admin"), "/public/x")
                .header(name, "/admin"),
        );
    }
    // The same path by a climb, which a router reading the header as
    // written takes for /admin/...
    rows.push(
        Row::get(
            "C GET /public/x + X-Original-URL: /admin/../public/x",
            "/public/x",
        )
        .header("X-Original-URL", "/admin/../public/x"),
    );
    // ingress-nginx writes X-Original-URL in absolute form on every check:
    // the same path passes, another does not.
    rows.push(
        Row::get(
            "C GET /public/x + X-Original-URL: http://app.example/admin",
            "/public/x",
        )
        .header("X-Original-URL", "http://app.example/admin"),
    );
    rows.push(
        Row::get(
            "C GET /public/x + X-Original-URL: http://app.example/public/x",
            "/public/x",
        )
        .header("X-Original-URL", "http://app.example/public/x")
        .reach("/public/x"),
    );
    // Symfony and Laravel read `_method` from the query; CGI, WSGI and
    // Rack servers fold `_` into `-`.
    rows.push(Row::get(
        "C GET /public/x?_method=DELETE",
        "/public/x?_method=DELETE",
    ));
    rows.push(
        Row::get(
            "C GET /public/x + x_http_method_override: DELETE",
            "/public/x",
        )
        .header("x_http_method_override", "DELETE")
        .underscores_dropped(),
    );
    // DNS's root dot: Envoy routes `app.example.` to another virtual host
    // than `app.example` unless it strips the dot; what the check saw
    // as the allowed host must not be.
    rows.push(
        Row::get("C GET /public/x, Host: app.example.", "/public/x")
            .host(Some("app.example."))
            .except(
                Transport::Nginx,
                Expect::Reach("/public/x"),
                "nginx drops the dot before the check, and routes by the name without it",
            ),
    );
    // The allowed request, whose app may read another host (axum's `Host`
    // extractor, Django, Rails and Express read these first).
    for (name, value) in [
        ("X-Forwarded-Host", "admin.example"),
        ("X-Forwarded-Host", "app.example, admin.example"),
        ("Forwarded", "for=192.0.2.1;host=admin.example"),
    ] {
        let row =
            Row::get(format!("C GET /public/x + {name}: {value}"), "/public/x").header(name, value);
        rows.push(match name {
            "X-Forwarded-Host" => row
                .except(
                    Transport::Traefik,
                    Expect::Reach("/public/x"),
                    OVERWRITES_XFH,
                )
                .except(Transport::Caddy, Expect::Reach("/public/x"), OVERWRITES_XFH),
            _ => row,
        });
    }
    // The reverse: the routed host is another, and the forged header
    // names the allowed one (Caddy keeps a trusted peer's).
    rows.push(
        Row::get(
            "C Host evil.example + X-Forwarded-Host: app.example",
            "/public/x",
        )
        .host(Some("evil.example"))
        .header("X-Forwarded-Host", "app.example")
        .header("X-Forwarded-Proto", "https"),
    );
    // The same in a spelling CGI, WSGI, PHP and Rack fold into
    // X-Forwarded-Host (Rails' `request.host` reads it first).
    rows.push(
        Row::get(
            "C GET /public/x + X_Forwarded_Host: admin.example",
            "/public/x",
        )
        .header("X_Forwarded_Host", "admin.example")
        .except(
            Transport::Traefik,
            Expect::Reach("/public/x"),
            "Traefik drops a client's `_` spellings of its X-Forwarded-* headers before \
             the check and the app",
        )
        .except(
            Transport::TraefikTrusting,
            Expect::Blocked,
            "Traefik trusting its peer passes the `_` spelling on, which the chain refuses",
        )
        .underscores_dropped(),
    );
    // Go servers (Traefik, Caddy) pass a lowercase method on, which many
    // frameworks upper-case.
    rows.push(Row::new("C get /public/x (lowercase)", "get", "/public/x"));
    rows.push(Row::new(
        "C delete /public/x (lowercase)",
        "delete",
        "/public/x",
    ));
    rows
}

/// D. A client claiming an identity: the chain's must replace it, in
/// every spelling an app may fold into `x-user-id`.
fn identities() -> Vec<Row> {
    let single = [
        "x-user-id",
        "X-User-Id",
        "x_user_id",
        "X_User_Id",
        "x-user_id",
        "x_user-id",
        "X-USER-ID",
    ];
    let mut rows: Vec<Row> = single
        .iter()
        .map(|name| {
            Row::get(format!("D {name}: admin"), "/public/x")
                .header(*name, "admin")
                .reach("/public/x")
        })
        .collect();
    // A header the AuthConfig strips that no step sets, which no proxy
    // config copies (the allow does not set it).
    rows.push(
        Row::get("D X-Tenant: victim-corp", "/public/x")
            .header("X-Tenant", "victim-corp")
            .reach("/public/x")
            .identity_refused(),
    );
    // PHP folds `.` into `_` too (`HTTP_X.USER.ID` is `HTTP_X_USER_ID`).
    // Envoy removes it (HTTP mode: the chain lists the `.` spellings
    // ahead); nginx and Caddy drop such a name; Traefik passes it on, which
    // the chain cannot remove there: the check is refused.
    for name in ["x.user.id", "X.User-Id", "x_user.id"] {
        rows.push(
            Row::get(format!("D {name}: admin"), "/public/x")
                .header(name, "admin")
                .reach("/public/x")
                .except(Transport::Traefik, Expect::Blocked, REFUSED_SPELLING),
        );
    }
    // A second key under another spelling, which an app that folds names
    // may read instead of the one checked: refused wherever the check
    // sees it, removed upstream where it does not (the app must never
    // get a key the chain did not check, which every REACH row asserts).
    for name in ["api_key", "api.key", "Api_Key"] {
        rows.push(
            Row::get(format!("D bob's key and {name}: forged"), "/public/x")
                .header(name, "forged")
                .except(
                    Transport::Nginx,
                    Expect::Reach("/public/x"),
                    DROPPED_SPELLING,
                )
                .except(
                    Transport::Caddy,
                    Expect::Reach("/public/x"),
                    DROPPED_SPELLING,
                )
                .except(
                    Transport::EnvoyHttp,
                    Expect::Reach("/public/x"),
                    REMOVED_SPELLING,
                )
                .except(
                    Transport::EnvoyHttpDefault,
                    Expect::Reach("/public/x"),
                    REMOVED_SPELLING,
                ),
        );
    }
    rows.push(
        Row::get("D two x-user-id lines", "/public/x")
            .headers(&[("x-user-id", "admin"), ("x-user-id", "root")])
            .reach("/public/x"),
    );
    rows.push(
        Row::get("D every spelling at once", "/public/x")
            .headers(&[
                ("x_user_id", "admin"),
                ("x-user-id", "admin"),
                ("x-user_id", "admin"),
                ("X_USER-ID", "admin"),
            ])
            .reach("/public/x"),
    );
    rows.push(
        Row::get("D empty x-user-id", "/public/x")
            .header("x-user-id", "")
            .reach("/public/x"),
    );
    rows.push(
        Row::get("D client's x-envoy-auth-headers-to-remove", "/public/x")
            .headers(&[
                ("x-envoy-auth-headers-to-remove", "x-user-id, api-key"),
                ("x-user-id", "admin"),
            ])
            .reach("/public/x"),
    );
    // RFC 9112 §5.1: whitespace before the colon is a 400; a lenient
    // parser might trim it into `x-user-id`.
    rows.push(
        Row::get(
            "D `X-User-Id : admin` (space before the colon)",
            "/public/x",
        )
        .header("X-User-Id ", "admin")
        .blocked_or_reach("/public/x"),
    );
    // RFC 9112 §5.2: obs-fold is a 400 or a space; a parser that reads
    // the continuation as its own line would see `x-user-id: admin`.
    rows.push(
        Row::get(
            "D obs-fold continuation line ` x-user-id: admin`",
            "/public/x",
        )
        .header("X-Note", "hello\r\n x-user-id: admin")
        .blocked_or_reach("/public/x"),
    );
    // A client naming the identity header hop-by-hop: a proxy that drops
    // it after the chain set it leaves the app without the identity.
    rows.push(
        Row::get("D Connection: x-user-id (hop-by-hop)", "/public/x")
            .header("Connection", "x-user-id")
            .blocked_or_reach("/public/x"),
    );
    rows.push(
        Row::get("D x-user-id: bob without a key", "/public/x")
            .no_key()
            .header("x-user-id", "bob")
            .blocked(),
    );
    rows.push(
        Row::get("D x_user_id: bob without a key", "/public/x")
            .no_key()
            .header("x_user_id", "bob")
            .blocked(),
    );
    rows
}

/// E. A client trying to pick the permissive AuthConfig `open` for a
/// request `site` denies.
fn selection() -> Vec<Row> {
    let paths = [
        "/open/admin",
        "/gloo-system.open/admin",
        "/:open/admin",
        "/check:open/admin",
        "/check/open/admin",
        "/check:open",
        "/admin?config=open",
        "/admin?config_id=open",
        "/admin?:open",
        // Not origin-form: a proxy that glued it after `path_prefix:
        // /check` would name `open`.
        ":open/admin",
    ];
    let mut rows: Vec<Row> = paths
        .iter()
        .map(|path| Row::get(format!("E {path}"), *path))
        .collect();
    for (name, value) in [
        ("x-authchain-config", "open"),
        ("config_id", "open"),
        ("config-id", "open"),
        ("x-config-id", "open"),
    ] {
        rows.push(Row::get(format!("E /admin + {name}: {value}"), "/admin").header(name, value));
    }
    rows
}

/// F. What the remote auth servers answer, chosen by the client's
/// headers (the HTTP remote answers the status in `x-remote-answer`,
/// the gRPC remote denies with the status in `x-grpc-answer`).
fn remote_answers() -> Vec<Row> {
    let mut rows = vec![
        Row::get("F x-remote-answer: 200", "/public/x")
            .header("x-remote-answer", "200")
            .reach("/public/x"),
    ];
    for status in [
        "204", "201", "206", "101", "199", "302", "401", "403", "404", "500",
    ] {
        rows.push(
            Row::get(format!("F x-remote-answer: {status}"), "/public/x")
                .header("x-remote-answer", status),
        );
    }
    for status in ["200", "204", "299", "101", "0", "302"] {
        rows.push(
            Row::get(format!("F x-grpc-answer: {status}"), "/public/x")
                .header("x-grpc-answer", status),
        );
    }
    rows
}

/// G. Request framing: a second request hidden in the body of an allowed
/// one (request smuggling) must never reach the app unchecked. Each is
/// refused, or reaches the app as one request (the run also checks that
/// no request reached the app outside a row).
fn framing() -> Vec<Row> {
    let smuggled =
        format!("GET /admin HTTP/1.1\r\nHost: app.example\r\napi-key: {BOB_KEY}\r\n\r\n");
    let cl_te = format!("0\r\n\r\n{smuggled}");
    let te_cl = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    vec![
        Row::get("G CL.TE smuggle: /admin after the last chunk", "/public/x")
            .headers(&[
                ("Content-Length", &cl_te.len().to_string()),
                ("Transfer-Encoding", "chunked"),
            ])
            .body(cl_te.clone())
            .blocked_or_reach("/public/x"),
        Row::get("G TE.CL smuggle: /admin in a chunk", "/public/x")
            .headers(&[("Transfer-Encoding", "chunked"), ("Content-Length", "4")])
            .body(te_cl)
            .blocked_or_reach("/public/x"),
        Row::get("G TE chunked + TE identity smuggle", "/public/x")
            .headers(&[
                ("Content-Length", &cl_te.len().to_string()),
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "identity"),
            ])
            .body(cl_te.clone())
            .blocked_or_reach("/public/x"),
        Row::get("G TE xchunked smuggle", "/public/x")
            .headers(&[
                ("Content-Length", &cl_te.len().to_string()),
                ("Transfer-Encoding", "xchunked"),
            ])
            .body(cl_te.clone())
            .blocked_or_reach("/public/x"),
        Row::get("G two Content-Lengths smuggle", "/public/x")
            .headers(&[
                ("Content-Length", "0"),
                ("Content-Length", &cl_te.len().to_string()),
            ])
            .body(cl_te)
            .blocked_or_reach("/public/x"),
    ]
}
