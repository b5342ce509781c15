//! A cookie-keeping HTTP client that walks login flows as a browser does:
//! it follows redirects across 127.0.0.1 ports (recording each hop), keeps
//! cookies in a [`Jar`], and finds and submits HTML forms.
//!
//! Cookies follow RFC 6265 closely enough for tests (domain, path,
//! `Expires`, `Max-Age`, deletion), and like a browser the jar does not
//! tell ports apart: a cookie set by `127.0.0.1:8080` goes to
//! `127.0.0.1:9090` too. `Secure` cookies are sent over plain http, as
//! browsers do for loopback. `SameSite` is recorded, never applied (every
//! 127.0.0.1 port is the same site).
//!
//! ```no_run
//! # async fn demo() -> Result<(), authchain_testkit::PeerError> {
//! use authchain_testkit::login::UserAgent;
//!
//! let mut agent = UserAgent::new();
//! // GET the app, follow it to the IdP's form, submit, follow back.
//! let page = agent.login("http://127.0.0.1:8080/private", "alice", "alicepwd").await?;
//! assert_eq!(page.status, 200);
//! let session = agent.jar().value("session").map(str::to_owned);
//! # Ok(())
//! # }
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};

use crate::{PeerError, client};

/// How many redirects [`UserAgent::get`] and friends follow by default.
pub const MAX_HOPS: usize = 20;

/// One cookie in a [`Jar`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The host it was set by (host-only), or its `Domain` attribute.
    pub domain: String,
    /// Without a `Domain` attribute: sent back to that host only.
    pub host_only: bool,
    /// Its path (`Path`, or the default path of the URL that set it).
    pub path: String,
    /// When it expires (`Max-Age` or `Expires`); `None`: a session cookie.
    pub expires: Option<SystemTime>,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`, as written.
    pub same_site: Option<String>,
}

impl Cookie {
    /// A session cookie for every path of `host`.
    pub fn new(name: &str, value: &str, host: &str) -> Self {
        Cookie {
            name: name.to_owned(),
            value: value.to_owned(),
            domain: host.to_ascii_lowercase(),
            host_only: true,
            path: "/".to_owned(),
            expires: None,
            secure: false,
            http_only: false,
            same_site: None,
        }
    }

    /// Parses a `Set-Cookie` value received from `url`; `None` for one a
    /// browser would ignore. An expired result deletes its namesake.
    pub fn parse(set_cookie: &str, url: &str) -> Option<Cookie> {
        let url = Url::parse(url).ok()?;
        let mut parts = set_cookie.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let mut cookie = Cookie::new(name, value.trim(), &url.host);
        cookie.path = default_path(url.path());
        let mut max_age = None;
        let mut expires = None;
        for attr in parts {
            let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
            let val = val.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "domain" if !val.is_empty() => {
                    let domain = val.trim_start_matches('.').to_ascii_lowercase();
                    if !domain_match(&url.host, &domain) {
                        return None;
                    }
                    cookie.host_only = domain == url.host;
                    cookie.domain = domain;
                }
                "path" if val.starts_with('/') => cookie.path = val.to_owned(),
                "max-age" => max_age = val.parse::<i64>().ok(),
                "expires" => expires = httpdate::parse_http_date(val).ok(),
                "secure" => cookie.secure = true,
                "httponly" => cookie.http_only = true,
                "samesite" => cookie.same_site = Some(val.to_owned()),
                _ => {}
            }
        }
        cookie.expires = match (max_age, expires) {
            (Some(secs), _) if secs <= 0 => Some(SystemTime::UNIX_EPOCH),
            (Some(secs), _) => Some(SystemTime::now() + Duration::from_secs(secs.unsigned_abs())),
            (None, expires) => expires,
        };
        Some(cookie)
    }

    /// Whether it has expired.
    pub fn is_expired(&self) -> bool {
        self.expires.is_some_and(|t| t <= SystemTime::now())
    }

    fn matches(&self, url: &Url) -> bool {
        let host_ok = if self.host_only {
            url.host == self.domain
        } else {
            domain_match(&url.host, &self.domain)
        };
        host_ok && path_match(url.path(), &self.path) && !self.is_expired()
    }
}

/// Cookies, as a browser keeps them for one user.
#[derive(Debug, Clone, Default)]
pub struct Jar {
    cookies: Vec<Cookie>,
}

impl Jar {
    /// The first cookie with this name (any domain or path).
    pub fn get(&self, name: &str) -> Option<&Cookie> {
        self.cookies.iter().find(|c| c.name == name)
    }

    /// The first cookie with this name, to change (tamper with) its value
    /// or attributes.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Cookie> {
        self.cookies.iter_mut().find(|c| c.name == name)
    }

    /// The value of the first cookie with this name.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|c| c.value.as_str())
    }

    /// Every cookie, expired ones included until the next request.
    pub fn iter(&self) -> impl Iterator<Item = &Cookie> {
        self.cookies.iter()
    }

    /// Adds a cookie, replacing the one with the same name, domain and
    /// path; an expired one deletes it instead.
    pub fn insert(&mut self, cookie: Cookie) {
        self.cookies.retain(|c| {
            !(c.name == cookie.name && c.domain == cookie.domain && c.path == cookie.path)
        });
        if !cookie.is_expired() {
            self.cookies.push(cookie);
        }
    }

    /// Removes every cookie with this name; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.cookies.len();
        self.cookies.retain(|c| c.name != name);
        self.cookies.len() != before
    }

    /// Removes every cookie.
    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    /// Stores a `Set-Cookie` value as if received from `url`.
    pub fn set_cookie(&mut self, url: &str, set_cookie: &str) {
        if let Some(cookie) = Cookie::parse(set_cookie, url) {
            self.insert(cookie);
        }
    }

    /// The `Cookie` header a request to `url` carries, if any: longer
    /// paths first.
    pub fn header_for(&self, url: &str) -> Option<String> {
        let url = Url::parse(url).ok()?;
        let mut sent: Vec<&Cookie> = self.cookies.iter().filter(|c| c.matches(&url)).collect();
        sent.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        (!sent.is_empty()).then(|| {
            sent.iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// One response on the way: a redirect followed, or the last one.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The request's method.
    pub method: Method,
    /// The request's URL.
    pub url: String,
    /// The response's status.
    pub status: StatusCode,
    /// Its `Location`, as written.
    pub location: Option<String>,
    /// Its `Set-Cookie` values.
    pub set_cookie: Vec<String>,
}

/// Where a walk ended: the last response, read whole, and every hop to it.
#[derive(Debug, Clone)]
pub struct Final {
    /// The URL of the last request.
    pub url: String,
    /// The last response's status (a redirect when the walk stopped at
    /// one).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Every response, in order, the last one included.
    pub hops: Vec<Hop>,
}

impl Final {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every value of a response header, as text.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        client::header_values(&self.headers, name)
    }

    /// Where a redirect points, as an absolute URL.
    pub fn location(&self) -> Option<String> {
        let location = self.headers.get(header::LOCATION)?.to_str().ok()?;
        resolve(&self.url, location).ok()
    }

    /// The HTML forms of the page.
    pub fn forms(&self) -> Vec<Form> {
        Form::find_all(&self.text(), &self.url)
    }

    /// The first form with a password input.
    pub fn login_form(&self) -> Option<Form> {
        self.forms()
            .into_iter()
            .find(|f| f.password_field.is_some())
    }

    /// A description for failure messages: the hops, then the page.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for hop in &self.hops {
            let _ = writeln!(
                text,
                "  {} {} -> {}{}",
                hop.method,
                hop.url,
                hop.status,
                hop.location
                    .as_deref()
                    .map(|l| format!(" Location: {l}"))
                    .unwrap_or_default()
            );
        }
        let body = self.text();
        let body: String = body.chars().take(2000).collect();
        format!("hops:\n{text}body:\n{body}")
    }
}

/// An HTML form, ready to submit with [`UserAgent::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// Where it goes (absolute).
    pub action: String,
    /// `GET` or `POST`.
    pub method: Method,
    /// Its fields in order: inputs with a name (hidden ones included,
    /// checkboxes and radios when checked), textareas, and the first
    /// named submit button.
    pub fields: Vec<(String, String)>,
    /// The name of its first password input.
    pub password_field: Option<String>,
    /// The name of the input that takes the user name: `login`,
    /// `username`, `user` or `email`, else the first text input.
    pub username_field: Option<String>,
}

impl Form {
    /// Sets a field (the first with this name), adding it when missing.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }

    /// The value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Fills the user name and password inputs.
    pub fn fill_login(&mut self, username: &str, password: &str) -> Result<(), PeerError> {
        let (Some(user), Some(pass)) = (self.username_field.clone(), self.password_field.clone())
        else {
            return Err(PeerError::new(format!(
                "the form to {} has no user name and password inputs: {:?}",
                self.action, self.fields
            )));
        };
        self.set(&user, username);
        self.set(&pass, password);
        Ok(())
    }

    /// The forms of an HTML page found at `base`.
    pub fn find_all(html: &str, base: &str) -> Vec<Form> {
        let lower = html.to_ascii_lowercase();
        let mut forms = Vec::new();
        let mut from = 0;
        while let Some(start) = lower[from..].find("<form").map(|i| i + from) {
            let Some(tag_end) = lower[start..].find('>').map(|i| i + start) else {
                break;
            };
            let end = lower[tag_end..]
                .find("</form")
                .map_or(html.len(), |i| i + tag_end);
            let attrs = attributes(&html[start + 5..tag_end]);
            let action = attr(&attrs, "action").unwrap_or_default();
            let action = if action.is_empty() {
                base.to_owned()
            } else {
                resolve(base, &action).unwrap_or(action)
            };
            let method = match attr(&attrs, "method") {
                Some(m) if m.eq_ignore_ascii_case("post") => Method::POST,
                _ => Method::GET,
            };
            let mut form = Form {
                action,
                method,
                fields: Vec::new(),
                password_field: None,
                username_field: None,
            };
            form.read_controls(&html[tag_end + 1..end]);
            forms.push(form);
            from = end.max(tag_end + 1);
        }
        forms
    }

    fn read_controls(&mut self, inner: &str) {
        let lower = inner.to_ascii_lowercase();
        let mut first_text = None;
        let mut submit_taken = false;
        let mut at = 0;
        while let Some(open) = lower[at..].find('<').map(|i| i + at) {
            let Some(close) = lower[open..].find('>').map(|i| i + open) else {
                break;
            };
            at = close + 1;
            let tag = &lower[open + 1..close];
            let kind = tag.split(|c: char| c.is_ascii_whitespace()).next();
            let attrs = attributes(&inner[open + 1..close]);
            let name = attr(&attrs, "name");
            let value = attr(&attrs, "value").unwrap_or_default();
            match kind {
                Some("input") => {
                    let Some(name) = name else { continue };
                    let ty = attr(&attrs, "type")
                        .unwrap_or_else(|| "text".to_owned())
                        .to_ascii_lowercase();
                    match ty.as_str() {
                        "submit" | "image" => {
                            if !submit_taken {
                                submit_taken = true;
                                self.fields.push((name, value));
                            }
                        }
                        "button" | "reset" | "file" => {}
                        "checkbox" | "radio" => {
                            if attrs.iter().any(|(k, _)| k == "checked") {
                                let value = if value.is_empty() { "on".into() } else { value };
                                self.fields.push((name, value));
                            }
                        }
                        "password" => {
                            self.password_field.get_or_insert(name.clone());
                            self.fields.push((name, value));
                        }
                        "hidden" => self.fields.push((name, value)),
                        _ => {
                            if ["login", "username", "user", "email"].contains(&name.as_str()) {
                                self.username_field.get_or_insert(name.clone());
                            }
                            first_text.get_or_insert(name.clone());
                            self.fields.push((name, value));
                        }
                    }
                }
                Some("button") => {
                    let ty = attr(&attrs, "type").unwrap_or_else(|| "submit".to_owned());
                    if let Some(name) = name
                        && ty.eq_ignore_ascii_case("submit")
                        && !submit_taken
                    {
                        submit_taken = true;
                        self.fields.push((name, value));
                    }
                }
                Some("textarea") => {
                    if let Some(name) = name {
                        let text_end = lower[at..].find("</textarea").map_or(at, |i| i + at);
                        self.fields
                            .push((name, decode_entities(&inner[at..text_end])));
                    }
                }
                _ => {}
            }
        }
        if self.username_field.is_none() {
            self.username_field = first_text;
        }
    }
}

/// A cookie-keeping HTTP client (one browser user).
#[derive(Debug, Clone)]
pub struct UserAgent {
    jar: Jar,
    headers: Vec<(String, String)>,
    max_hops: usize,
}

impl Default for UserAgent {
    fn default() -> Self {
        UserAgent::new()
    }
}

impl UserAgent {
    /// An agent with an empty jar that follows up to [`MAX_HOPS`]
    /// redirects.
    pub fn new() -> Self {
        UserAgent {
            jar: Jar::default(),
            headers: Vec::new(),
            max_hops: MAX_HOPS,
        }
    }

    /// Adds a header to every request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Follows at most `hops` redirects per walk (0: none).
    pub fn max_hops(mut self, hops: usize) -> Self {
        self.max_hops = hops;
        self
    }

    /// The cookies.
    pub fn jar(&self) -> &Jar {
        &self.jar
    }

    /// The cookies, to change.
    pub fn jar_mut(&mut self) -> &mut Jar {
        &mut self.jar
    }

    /// `GET url`, following redirects.
    pub async fn get(&mut self, url: &str) -> Result<Final, PeerError> {
        self.send(Method::GET, url, &[], Bytes::new(), self.max_hops)
            .await
    }

    /// Sends a request with these extra headers and body, following at
    /// most `hops` redirects (0: stop at the first response). `303`, and
    /// `301`/`302` after a `POST`, continue as a `GET` without the body;
    /// `307`/`308` repeat the method and body.
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        hops: usize,
    ) -> Result<Final, PeerError> {
        let mut method = method;
        let mut url = url.to_owned();
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let mut body = body;
        let mut walked = Vec::new();
        loop {
            let reply = self.exchange(&method, &url, &headers, body.clone()).await?;
            let location = reply
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            walked.push(Hop {
                method: method.clone(),
                url: url.clone(),
                status: reply.status,
                location: location.clone(),
                set_cookie: reply
                    .header_values("set-cookie")
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
            let redirect = matches!(reply.status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let next = match (&location, redirect) {
                (Some(location), true) if walked.len() <= hops => Some(location),
                _ => None,
            };
            let Some(location) = next else {
                return Ok(Final {
                    url,
                    status: reply.status,
                    headers: reply.headers,
                    body: reply.body,
                    hops: walked,
                });
            };
            url = resolve(&url, location)?;
            let keep = matches!(reply.status.as_u16(), 307 | 308)
                || (method != Method::POST && reply.status != StatusCode::SEE_OTHER);
            if !keep {
                method = Method::GET;
                body = Bytes::new();
                headers.retain(|(n, _)| {
                    !n.eq_ignore_ascii_case("content-type")
                        && !n.eq_ignore_ascii_case("content-length")
                });
            }
        }
    }

    /// Continues a walk that stopped at a redirect (after changing the jar,
    /// say), following at most `hops` more.
    pub async fn follow(&mut self, from: &Final, hops: usize) -> Result<Final, PeerError> {
        let Some(location) = from.location() else {
            return Err(PeerError::new(format!(
                "{} answered {} with no Location to follow\n{}",
                from.url,
                from.status,
                from.describe()
            )));
        };
        let mut next = self
            .send(Method::GET, &location, &[], Bytes::new(), hops)
            .await?;
        next.hops.splice(0..0, from.hops.iter().cloned());
        Ok(next)
    }

    /// Submits a form (a `POST` as `application/x-www-form-urlencoded`, a
    /// `GET` with the fields as the query), following redirects.
    pub async fn submit(&mut self, form: &Form) -> Result<Final, PeerError> {
        let pairs: Vec<(&str, &str)> = form
            .fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let encoded = form_urlencode(&pairs);
        if form.method == Method::POST {
            self.send(
                Method::POST,
                &form.action,
                &[("content-type", "application/x-www-form-urlencoded")],
                Bytes::from(encoded),
                self.max_hops,
            )
            .await
        } else {
            let base = form.action.split('?').next().unwrap_or_default();
            let url = format!("{base}?{encoded}");
            self.send(Method::GET, &url, &[], Bytes::new(), self.max_hops)
                .await
        }
    }

    /// Logs in: `GET start_url` and its redirects to the IdP's form, fills
    /// it with `username` and `password`, submits it, and follows the
    /// redirects back. The result holds every hop of both walks. A page
    /// with no password form on the way is an error.
    pub async fn login(
        &mut self,
        start_url: &str,
        username: &str,
        password: &str,
    ) -> Result<Final, PeerError> {
        let page = self.get(start_url).await?;
        let Some(mut form) = page.login_form() else {
            return Err(PeerError::new(format!(
                "GET {start_url} led to {} ({}), which has no login form\n{}",
                page.url,
                page.status,
                page.describe()
            )));
        };
        form.fill_login(username, password)?;
        let mut done = self.submit(&form).await?;
        done.hops.splice(0..0, page.hops);
        Ok(done)
    }

    async fn exchange(
        &mut self,
        method: &Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<client::Reply, PeerError> {
        let target = Url::parse(url)?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(target.path_and_query.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(header::USER_AGENT, "authchain-testkit")
            .header(header::ACCEPT, "text/html,application/json;q=0.9,*/*;q=0.8");
        if let Some(cookies) = self.jar.header_for(url) {
            request = request.header(header::COOKIE, cookies);
        }
        let request = request
            .body(body)
            .map_err(|e| PeerError::new(format!("{method} {url}: invalid request: {e}")))?;
        let mut request = request;
        for (name, value) in self.headers.iter().chain(headers) {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| PeerError::new(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| PeerError::new(format!("header {name}: {value:?}: {e}")))?;
            request.headers_mut().insert(name, value);
        }
        self.jar.cookies.retain(|c| !c.is_expired());
        let reply = client::send(target.addr, request).await?;
        for value in reply.header_values("set-cookie") {
            self.jar.set_cookie(url, value);
        }
        Ok(reply)
    }
}

/// Logs in with a new [`UserAgent`] (see [`UserAgent::login`]).
pub async fn login(start_url: &str, username: &str, password: &str) -> Result<Final, PeerError> {
    UserAgent::new().login(start_url, username, password).await
}

/// `application/x-www-form-urlencoded` pairs.
pub fn form_urlencode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={}",
                form_urlencode_component(n),
                form_urlencode_component(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One name or value, `application/x-www-form-urlencoded`.
pub fn form_urlencode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char);
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (a query string).
pub fn form_urldecode(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && let Some(byte) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(n), decode(v))
        })
        .collect()
}

/// An absolute `http://` URL on this machine, taken apart.
#[derive(Debug)]
struct Url {
    host: String,
    authority: String,
    path_and_query: String,
    addr: SocketAddr,
}

impl Url {
    fn parse(url: &str) -> Result<Url, PeerError> {
        let bad = |why: &str| PeerError::new(format!("URL {url:?}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16().unwrap_or(80);
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(|a| a.ip().is_loopback()))
            .ok_or_else(|| bad("not a loopback address"))?;
        Ok(Url {
            host,
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
            addr,
        })
    }

    fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }
}

/// `location` resolved against `base` (absolute, `//host`, `/path`,
/// `?query` and relative paths).
fn resolve(base: &str, location: &str) -> Result<String, PeerError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let uri: http::Uri = base
        .parse()
        .map_err(|e| PeerError::new(format!("URL {base:?}: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    let origin = format!(
        "{scheme}://{}",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    let path = uri.path();
    Ok(if location.starts_with('/') {
        format!("{origin}{location}")
    } else if location.starts_with('?') {
        format!("{origin}{path}{location}")
    } else if location.starts_with('#') || location.is_empty() {
        base.split('#').next().unwrap_or_default().to_owned()
    } else {
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!(
            "{origin}{}{location}",
            if dir.is_empty() { "/" } else { dir }
        )
    })
}

/// RFC 6265 section 5.1.4: the request path up to its last `/`.
fn default_path(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

fn path_match(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

fn domain_match(host: &str, domain: &str) -> bool {
    host == domain
        || (host.ends_with(domain)
            && host[..host.len() - domain.len()].ends_with('.')
            && host.parse::<std::net::IpAddr>().is_err())
}

/// The attributes of a tag's inside (after its name), names lower case,
/// values with HTML entities decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '/');
        if rest.is_empty() {
            return out;
        }
        let name_end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (raw, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &after[1..];
                    let end = body.find(q).unwrap_or(body.len());
                    (&body[..end], body.get(end + 1..).unwrap_or_default())
                }
                _ => {
                    let end = after
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            value = decode_entities(raw);
            rest = tail;
        }
        if name.is_empty() {
            // A stray character: skip it.
            rest = rest.get(1..).unwrap_or_default();
            continue;
        }
        out.push((name, value));
    }
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_follow_domain_path_and_expiry() {
        let mut jar = Jar::default();
        jar.set_cookie("http://127.0.0.1:8080/a/b", "s=1; HttpOnly; SameSite=Lax");
        jar.set_cookie("http://127.0.0.1:8080/", "root=2; Path=/; Max-Age=60");
        jar.set_cookie("http://127.0.0.1:8080/", "deep=3; Path=/x");
        // Ports are not told apart.
        assert_eq!(
            jar.header_for("http://127.0.0.1:9090/a/c").as_deref(),
            Some("s=1; root=2")
        );
        assert_eq!(
            jar.header_for("http://127.0.0.1:9090/x/y").as_deref(),
            Some("deep=3; root=2")
        );
        assert_eq!(
            jar.header_for("http://127.0.0.1:9090/xy").as_deref(),
            Some("root=2")
        );
        assert_eq!(jar.header_for("http://localhost:9090/"), None);
        let s = jar.get("s").unwrap();
        assert!(s.http_only && s.host_only && s.expires.is_none());
        assert_eq!(
            (s.path.as_str(), s.same_site.as_deref()),
            ("/a", Some("Lax"))
        );

        jar.set_cookie("http://127.0.0.1:1/", "root=gone; Path=/; Max-Age=0");
        jar.set_cookie(
            "http://127.0.0.1:1/",
            "deep=gone; Path=/x; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        );
        assert!(jar.get("root").is_none() && jar.get("deep").is_none());
        // A Domain the host is not in is refused.
        jar.set_cookie("http://127.0.0.1:1/", "evil=1; Domain=example.com");
        assert!(jar.get("evil").is_none());

        jar.get_mut("s").unwrap().value = "tampered".into();
        assert_eq!(
            jar.header_for("http://127.0.0.1:1/a").as_deref(),
            Some("s=tampered")
        );
        assert!(jar.remove("s"));
        assert_eq!(jar.header_for("http://127.0.0.1:1/a"), None);
    }

    #[test]
    fn forms_are_found_and_filled() {
        let html = r#"<html><form id=x method="post" action="/interaction/a&amp;b/login">
            <input type="hidden" name="xsrf" value="t&#39;k"/>
            <label>User <input name=login autofocus></label>
            <input type="password" name="password">
            <input type="checkbox" name="remember" checked>
            <input type="checkbox" name="spam">
            <button type="submit" name="go" value="yes">Sign in</button>
            <button type="submit" name="no" value="no">No</button>
        </form><FORM action="search"><input name=q value="a b"></FORM>"#;
        let forms = Form::find_all(html, "http://127.0.0.1:5/dir/page?x=1");
        assert_eq!(forms.len(), 2);
        let mut login = forms[0].clone();
        assert_eq!(login.action, "http://127.0.0.1:5/interaction/a&b/login");
        assert_eq!(login.method, Method::POST);
        assert_eq!(login.get("xsrf"), Some("t'k"));
        login.fill_login("alice", "p w&").unwrap();
        assert_eq!(
            form_urlencode(
                &login
                    .fields
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect::<Vec<_>>()
            ),
            "xsrf=t%27k&login=alice&password=p+w%26&remember=on&go=yes"
        );
        assert_eq!(forms[1].action, "http://127.0.0.1:5/dir/search");
        assert_eq!(forms[1].method, Method::GET);
        assert_eq!(forms[1].password_field, None);
        assert_eq!(forms[1].username_field.as_deref(), Some("q"));
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://127.0.0.1:5/a/b?q=1";
        assert_eq!(
            resolve(base, "http://127.0.0.1:6/x").unwrap(),
            "http://127.0.0.1:6/x"
        );
        assert_eq!(
            resolve(base, "//127.0.0.1:7/y").unwrap(),
            "http://127.0.0.1:7/y"
        );
        assert_eq!(resolve(base, "/c").unwrap(), "http://127.0.0.1:5/c");
        assert_eq!(resolve(base, "?z=2").unwrap(), "http://127.0.0.1:5/a/b?z=2");
        assert_eq!(resolve(base, "d").unwrap(), "http://127.0.0.1:5/a/d");
    }

    #[test]
    fn form_encoding_round_trips() {
        let pairs = [("a b", "c&d=é"), ("e", "")];
        let encoded = form_urlencode(&pairs);
        assert_eq!(encoded, "a+b=c%26d%3D%C3%A9&e=");
        assert_eq!(
            form_urldecode(&encoded),
            [("a b".into(), "c&d=é".into()), ("e".into(), String::new())]
        );
    }
}
