//! `opaAuth`: a Rego policy decides, evaluated in process by regorus.
//!
//! ```yaml
//! opaAuth:
//!   query: data.envoy.authz.allow    # the rule to evaluate (Gloo's `... == true` is accepted)
//!   modules:                         # Rego sources, by file name
//!     policy.rego: |
//!       package envoy.authz
//!       import rego.v1
//!       default allow := false
//!       allow if input.attributes.request.http.method == "GET"
//!   moduleFiles: [/etc/authchain/extra.rego]
//!   data:                            # the `data` document (besides the policies)
//!     admins: [alice]
//!   allowedUpstreamHeaders: [x-role] # headers a policy result may set upstream
//!   evalTimeout: 100ms               # time limit of one evaluation (100ms)
//! ```
//!
//! An evaluation holds its thread until it ends. It is stopped, as an
//! error, at `evalTimeout` (at most the step's time: its `timeout`, else
//! the AuthConfig's `deadline`) or at the caller's deadline, whichever
//! comes first; the clock is read between steps of the evaluation, so one
//! builtin call on a large input runs to its end first, and an answer past
//! the chain's deadline is an error all the same. Memory is not limited: a
//! policy must not hand a size a client chooses to a builtin that
//! allocates by it (`numbers.range(0, to_number(input...))`,
//! `net.cidr_expand` of a client's network), whose allocation failure ends
//! the process. What a policy `print`s
//! is dropped: it would write the input, credentials and all, to the
//! server's output.
//!
//! Some modules are refused when the step is built, as regorus would take
//! minutes over them or run out of stack: `{` and `[` nested deeper than
//! 12 (a rule's body is one level; its parsing time grows up to threefold
//! with each), brackets, parentheses and unary `-` nested deeper than 32,
//! more than 1,000 statements in one body, or modules with much text
//! nested several levels deep. Deep data belongs in `data`.
//!
//! Gloo writes `modules` as references to ConfigMaps (read beside the
//! AuthConfig, [`authchain_core::resources`]), each entry of which is a
//! Rego module, parsed as Gloo's OPA parses it: Rego v0 unless it imports
//! `rego.v1`. Its query may end in `== true`. With
//! `options.returnDecisionReason` it gives `[allowed, body]`, and an allow
//! carries `{<step name>: {reason: {allowed, body}}}` in its dynamic
//! metadata; without, an array result is a deny, as any other.
//!
//! ```yaml
//! opaAuth:
//!   modules: [{ name: allow-get-users, namespace: gloo-system }]
//!   query: "data.test.allow == true"
//! ```
//!
//! # The input
//!
//! Both shapes are given, so policies written for OPA-Envoy run unchanged
//! (where regorus has the builtins they use):
//!
//! | `input.` | value |
//! |---|---|
//! | `method`, `path`, `host`, `scheme`, `headers` | the request; `path` with its query, header names lower case, values of one name joined with `,`, and Envoy's pseudo-headers `:method`, `:path`, `:authority`, `:scheme` |
//! | `state` | the chain's state (`input.state.jwt.sub` after a `jwt` step; after an `oauth2` login, `input.state.jwt` is the ID token: `io.jwt.decode` it, a builtin authchain adds to regorus) |
//! | `check_request`, `http_request` | Gloo's: the CheckRequest (`{attributes}`), and its `attributes.request.http` |
//! | `context` | Envoy `context_extensions` |
//! | `attributes.request.http.{method, path, host, scheme, protocol, id, headers, body}` | as OPA-Envoy gives them (a body that is not UTF-8 with U+FFFD for the bytes that are not) |
//! | `attributes.source.address.socketAddress.{address, portValue}`, `attributes.source.principal` | the client: Envoy's downstream peer over gRPC; over HTTP checks the last `X-Forwarded-For` hop of a trusted Traefik or Caddy (port 0), else none |
//! | `attributes.contextExtensions`, `attributes.metadataContext` | as OPA-Envoy |
//! | `parsed_path`, `parsed_query` | the canonical path's segments, percent-decoded; the query as `{key: [values]}`, decoded (`+` is a space), as OPA-Envoy gives them |
//!
//! # The result
//!
//! A boolean (`true` allows; `false` or undefined is a 403), or an object
//! as OPA-Envoy's: `allowed` (or `allow`), `headers` (upstream headers on
//! an allow, limited to `allowedUpstreamHeaders`; client headers on a
//! deny), `response_headers_to_add`, `request_headers_to_remove`,
//! `dynamic_metadata` (an object: Envoy's dynamic metadata on an allow,
//! under `envoy.filters.http.ext_authz`),
//! `http_status` (or `status`) and `body` for a deny. A query that ends in
//! `== true` allows on the boolean `true` alone, as Gloo's does. Any other
//! result is a 403, as in Gloo; an evaluation error is a step error: the
//! chain denies with its `statusOnError`. As in OPA (and so Gloo), a
//! builtin that cannot take its argument (`io.jwt.decode` of no token,
//! `base64.decode` of no base64) makes its expression undefined rather
//! than an error: `default allow := false` then decides, but `allow if
//! not deny` allows when a builtin in `deny` failed. Write the allow
//! conditions positively, as OPA's documentation does.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::path::percent_decode;
use authchain_core::resources::ResourceRef;
use authchain_core::transport::AnswerBy;
use authchain_core::{
    Allow, Answer, AuthService, AuthorizationRequest, BuildContext, ConfigDuration, Decision, Deny,
    Error, ExtAuthPlugin,
};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::util;

/// The step kind this module registers.
pub const KIND: &str = "opaAuth";

/// The `opaAuth` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpaConfig {
    /// The rule to evaluate, `data.<package>.<rule>`.
    pub query: String,
    /// Rego sources by file name (authchain's), or Gloo's list of
    /// references to ConfigMaps whose every entry is a Rego source.
    #[serde(default)]
    pub modules: Modules,
    /// Gloo's options.
    #[serde(default)]
    pub options: OpaOptions,
    /// Files of Rego sources.
    #[serde(default)]
    pub module_files: Vec<String>,
    /// The data document.
    #[serde(default)]
    pub data: Option<Value>,
    /// Headers a result may set upstream.
    #[serde(default)]
    pub allowed_upstream_headers: Vec<String>,
    /// Time limit of one evaluation (100ms).
    #[serde(default)]
    pub eval_timeout: Option<ConfigDuration>,
}

/// `opaAuth.modules`: inline sources by file name, or Gloo's ConfigMap
/// references.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Modules {
    /// Rego sources by file name.
    Inline(BTreeMap<String, String>),
    /// ConfigMaps of Rego sources (Gloo's form), parsed as Gloo's OPA
    /// parses them: Rego v0 unless a module imports `rego.v1`.
    ConfigMaps(Vec<ResourceRef>),
}

impl Default for Modules {
    fn default() -> Self {
        Modules::Inline(BTreeMap::new())
    }
}

/// Gloo's `opaAuth.options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpaOptions {
    /// Gloo's input shortcut: accepted, with no effect (the input is
    /// built once, whole).
    #[serde(default)]
    pub fast_input_conversion: bool,
    /// Puts the decision's reason (a query result `[allowed, body]`) in
    /// the allow's dynamic metadata, at `<step name>.reason`, as Gloo's.
    #[serde(default)]
    pub return_decision_reason: bool,
}

/// The plugin for step kind `opaAuth`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpaPlugin;

impl ExtAuthPlugin for OpaPlugin {
    type Config = OpaConfig;

    fn name(&self) -> &str {
        KIND
    }

    fn build(
        &self,
        config: OpaConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn AuthService>, Error> {
        Ok(Arc::new(OpaAuth::with_resources(config, context)?))
    }
}

/// The `opaAuth` step.
pub struct OpaAuth {
    /// Prepared engines, reused across requests: regorus resets an
    /// engine's evaluation state at the start of every `eval_rule`, so a
    /// request sees nothing of the one before. Building an engine per
    /// request (what `CompiledPolicy::eval_with_input` does) costs more
    /// than many simple policies take to evaluate.
    engines: std::sync::Mutex<Engines>,
    /// The rule evaluated, `data.<package>.<rule>`.
    rule: String,
    /// How many idle engines are kept (more are made when requests
    /// overlap, and dropped when they finish).
    max_idle: usize,
    allowed_headers: Vec<HeaderName>,
    /// Where `returnDecisionReason` puts the reason: the step's name.
    reason_at: Option<String>,
    /// The query ends in `== true`: only a boolean `true` allows.
    strict: bool,
    /// The longest one evaluation may take (`evalTimeout`).
    eval_timeout: Duration,
}

/// Idle prepared engines, and the one they are cloned from.
struct Engines {
    idle: Vec<regorus::Engine>,
    template: regorus::Engine,
}

impl std::fmt::Debug for OpaAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaAuth")
            .field("allowed_headers", &self.allowed_headers)
            .finish_non_exhaustive()
    }
}

/// Rego v0's `any` and `all` (OPA deprecated them; Gloo's guides call
/// them), which regorus does not have: whether any, or every, element of
/// an array or set is `true`.
fn add_v0_builtins(engine: &mut regorus::Engine) -> Result<(), Error> {
    for (name, every) in [("any", false), ("all", true)] {
        let builtin = move |args: Vec<regorus::Value>| -> anyhow::Result<regorus::Value> {
            let yes = regorus::Value::Bool(true);
            let result = match args.first() {
                Some(regorus::Value::Array(items)) if every => items.iter().all(|v| *v == yes),
                Some(regorus::Value::Array(items)) => items.iter().any(|v| *v == yes),
                Some(regorus::Value::Set(items)) if every => items.iter().all(|v| *v == yes),
                Some(regorus::Value::Set(items)) => items.iter().any(|v| *v == yes),
                // As OPA's builtins, on what they cannot take: undefined.
                _ => return Ok(regorus::Value::Undefined),
            };
            Ok(regorus::Value::Bool(result))
        };
        engine
            .add_extension(name.to_owned(), 1, Box::new(builtin))
            .map_err(|e| {
                Error::config(format!("cannot add Rego's `{name}`: {}", first_line(&e)))
            })?;
    }
    Ok(())
}

/// OPA's `io.jwt.decode(token)`, which regorus lacks: `[header, payload,
/// signature]` of a compact JWS, unverified (as OPA's), the signature in
/// hex. Gloo's OPA guide decodes the ID token an `oauth2` step leaves in
/// `input.state.jwt` with it. What is not a JWS decodes to undefined, as
/// in OPA (whose builtins' errors make their expression undefined): a
/// client's garbage token makes the rule that decodes it undefined, never
/// a step error.
fn add_jwt_decode(engine: &mut regorus::Engine) -> Result<(), Error> {
    use base64::Engine as _;
    fn jws(token: &str) -> Option<regorus::Value> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let b64 = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .ok()
        };
        let json = |part: &str| {
            let bytes = b64(part)?;
            regorus::Value::from_json_str(std::str::from_utf8(&bytes).ok()?).ok()
        };
        let hex: String = b64(signature)?.iter().map(|b| format!("{b:02x}")).collect();
        Some(regorus::Value::from(vec![
            json(header)?,
            json(payload)?,
            regorus::Value::from(hex),
        ]))
    }
    let decode = |args: Vec<regorus::Value>| -> anyhow::Result<regorus::Value> {
        Ok(match args.first() {
            Some(regorus::Value::String(token)) => jws(token).unwrap_or(regorus::Value::Undefined),
            _ => regorus::Value::Undefined,
        })
    };
    engine
        .add_extension("io.jwt.decode".to_owned(), 1, Box::new(decode))
        .map_err(|e| {
            Error::config(format!(
                "cannot add Rego's `io.jwt.decode`: {}",
                first_line(&e)
            ))
        })
}

/// How deep `{` and `[` may nest in a module.
const MAX_NESTING: usize = 12;
/// How deep `{`, `[`, `(` and runs of unary `-` may nest together in a
/// module: regorus's parser recurses for each (its own limit of 32 covers
/// parentheses around expressions alone), and past some thousands of
/// levels the process runs out of stack.
const MAX_RECURSION: usize = 32;
/// How many statements a rule's body (or a comprehension's) may hold:
/// regorus orders them in time that grows with their square (10,000
/// statements each naming the next took 100 s).
const MAX_STATEMENTS: usize = 1000;
/// How much parsing a step's modules may cost: the sum, over their bytes,
/// of three to the power of the depth of `{` and `[` each is at.
const MAX_PARSE_COST: u64 = 1 << 27;

/// The Rego keywords: none ends an operand (a `-` after one is unary).
const REGO_KEYWORDS: [&str; 12] = [
    "as", "contains", "default", "else", "every", "if", "import", "in", "not", "package", "some",
    "with",
];

/// Whether `b` may be part of a Rego word (a name, a keyword, a number).
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses `source` into `engine` as the module `name`, its cost added to
/// `spent` (see [`regorus_limits`]); why not, as the first line of
/// regorus's message or [`regorus_limits`]'s.
fn add_module(
    engine: &mut regorus::Engine,
    name: String,
    source: String,
    spent: &mut u64,
) -> Result<(), String> {
    regorus_limits(&source, spent)?;
    engine
        .add_policy(name, source)
        .map(drop)
        .map_err(|e| first_line(&e))
}

/// A `{`, `[` or `(` being read, for [`regorus_limits`].
struct Group {
    opener: u8,
    /// The unary `-` in force where it opened.
    minus: usize,
    /// The statements in it so far (ended by `;` or a line break).
    statements: usize,
}

/// Counts a statement of the innermost group of `open`: more than
/// [`MAX_STATEMENTS`] in one is refused.
fn statement(open: &mut [Group], line: usize) -> Result<(), String> {
    let Some(group) = open.last_mut() else {
        return Ok(());
    };
    group.statements += 1;
    match group.statements > MAX_STATEMENTS {
        true => Err(format!(
            "line {line}: more than {MAX_STATEMENTS} statements in one body (regorus's \
             scheduler takes time growing with their square)"
        )),
        false => Ok(()),
    }
}

/// Refuses a module regorus would take too long to parse or compile, or
/// could not parse without running out of stack. Its parser tries each `{` and `[`
/// as a comprehension first, and parses the literal again when it is
/// none (up to three times for `{a | ... | a}`), so its time grows
/// threefold with each level of them (`{{{{...` 20 deep took minutes);
/// and it recurses for each level of `{`, `[`, `(` and unary `-`
/// (`f(f(f(...` or `- - - ...` some thousands deep ended the process);
/// and it orders a body's statements in time that grows with their
/// square. Strings and comments are passed over; a closer that does not
/// match ends the scan, where regorus stops with an error.
fn regorus_limits(source: &str, spent: &mut u64) -> Result<(), String> {
    /// What the byte read is part of.
    #[derive(Clone, Copy)]
    enum In {
        Code,
        Comment,
        Text,
        Escape,
        RawText,
    }
    let too_deep = |line: usize| {
        Err(format!(
            "line {line}: brackets, parentheses and unary `-` nest deeper than {MAX_RECURSION} \
             (regorus's parser would run out of stack)"
        ))
    };
    // The openers in force, each with the unary `-` in force where it
    // opened: a unary `-` takes the rest of its expression as its
    // operand, to a `,`, a `;`, the group's end, or the end of a line that
    // ends with an operand.
    let mut open: Vec<Group> = Vec::new();
    let (mut held, mut minus, mut braces, mut line) = (0usize, 0usize, 0usize, 1usize);
    // Whether the last token ends an operand (a `-` after one subtracts).
    let mut operand = false;
    let mut at = In::Code;
    // Where the word being read starts: a keyword ends no operand.
    let mut word = None;
    let bytes = source.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        // The lexer reads each byte again with each try of a `{` or `[`
        // that holds it.
        *spent = spent.saturating_add(3u64.pow(braces as u32));
        if matches!(at, In::Code)
            && !word_byte(b)
            && let Some(start) = word.take()
        {
            operand = !REGO_KEYWORDS.contains(&&source[start..i]);
        }
        if b == b'\n' {
            if matches!(at, In::Code | In::Comment) && operand {
                minus = 0;
                statement(&mut open, line)?;
            }
            line += 1;
        }
        at = match (at, b) {
            (In::Code, b'{' | b'[' | b'(') => {
                open.push(Group {
                    opener: b,
                    minus,
                    statements: 0,
                });
                (held, minus, operand) = (held + minus, 0, false);
                if b != b'(' {
                    braces += 1;
                    if braces > MAX_NESTING {
                        return Err(format!(
                            "line {line}: `{{` and `[` nest deeper than {MAX_NESTING} (regorus's \
                             parsing time grows threefold with each level): put deep data in \
                             `data`"
                        ));
                    }
                }
                if open.len() + held > MAX_RECURSION {
                    return too_deep(line);
                }
                In::Code
            }
            (In::Code, b'}' | b']' | b')') => {
                let opener = match b {
                    b'}' => b'{',
                    b']' => b'[',
                    _ => b'(',
                };
                let Some(Group { minus: before, .. }) = open.pop().filter(|g| g.opener == opener)
                else {
                    break;
                };
                if opener != b'(' {
                    braces -= 1;
                }
                (held, minus, operand) = (held - before, before, true);
                In::Code
            }
            (In::Code, b'-') => {
                // `-1` is a number; a `-` after an operand subtracts.
                let number = bytes
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == b'.');
                if !operand && !number {
                    minus += 1;
                    if open.len() + held + minus > MAX_RECURSION {
                        return too_deep(line);
                    }
                }
                operand = false;
                In::Code
            }
            (In::Code, b' ' | b'\t' | b'\r' | b'\n') => In::Code,
            (In::Code, b',' | b';') => {
                if b == b';' {
                    statement(&mut open, line)?;
                }
                (minus, operand) = (0, false);
                In::Code
            }
            (In::Code, b'#') => In::Comment,
            (In::Code, b'"') => {
                operand = true;
                In::Text
            }
            (In::Code, b'`') => {
                operand = true;
                In::RawText
            }
            (In::Code, _) => {
                operand = word_byte(b);
                if operand {
                    word.get_or_insert(i);
                }
                In::Code
            }
            (In::Comment | In::Text, b'\n') | (In::Text, b'"') | (In::RawText, b'`') => In::Code,
            (In::Text, b'\\') => In::Escape,
            (In::Escape, _) => In::Text,
            (at, _) => at,
        };
    }
    match *spent > MAX_PARSE_COST {
        true => Err(
            "the step's modules nest too much text in `{` and `[` (regorus's parsing time \
             grows threefold with each level): put deep data in `data`"
                .to_owned(),
        ),
        false => Ok(()),
    }
}

/// The first line of a regorus message: the place and the problem,
/// without the quoted source.
fn first_line(e: &impl std::fmt::Display) -> String {
    // regorus writes `\n--> file:line:col\n<the line, a caret>\nerror: why`.
    let text = e.to_string();
    let at = text.lines().find_map(|l| l.trim().strip_prefix("--> "));
    let why = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "));
    match (at, why) {
        (Some(at), Some(why)) => format!("{at}: {why}"),
        _ => text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("regorus refused it without saying why")
            .trim()
            .to_owned(),
    }
}

/// Where in the policy an evaluation error happened (` at file:line:col`),
/// without regorus's message: it may quote input values, such as
/// credentials from headers.
fn location(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    if let Some(at) = text.lines().find_map(|l| l.trim().strip_prefix("--> ")) {
        return format!(" at {at}");
    }
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    match line.split_once(": error") {
        Some((at, _)) if !at.is_empty() && !at.contains(' ') => format!(" at {at}"),
        _ => String::new(),
    }
}

impl OpaAuth {
    /// Builds the step: parses the policies and compiles the query.
    /// References to ConfigMaps resolve against nothing: see
    /// [`with_resources`](Self::with_resources).
    pub fn new(config: OpaConfig) -> Result<Self, Error> {
        Self::with_resources(config, &BuildContext::new("", "", ""))
    }

    /// Builds the step, its ConfigMaps from `context`'s.
    pub fn with_resources(config: OpaConfig, context: &BuildContext<'_>) -> Result<Self, Error> {
        let query = config.query.trim();
        let strict = query.ends_with("== true");
        let query = query
            .strip_suffix("== true")
            .map(str::trim_end)
            .unwrap_or(query);
        let valid = query.starts_with("data.")
            && query.len() > 5
            && query
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && !query.ends_with('.')
            && !query.contains("..");
        if !valid {
            return Err(
                Error::config("expected a rule path such as `data.envoy.authz.allow`").at("query"),
            );
        }
        let mut engine = regorus::Engine::new();
        // OPA's (and Gloo's): a builtin's error makes its expression
        // undefined, so `default allow := false` decides; regorus raises
        // it by default.
        engine.set_strict_builtin_errors(false);
        add_jwt_decode(&mut engine)?;
        let (mut sources, mut spent) = (0, 0);
        match config.modules {
            Modules::Inline(modules) => {
                engine.set_rego_v0(false);
                for (name, source) in modules {
                    add_module(&mut engine, name.clone(), source, &mut spent)
                        .map_err(|why| Error::config(why).at(format!("modules.{name}")))?;
                    sources += 1;
                }
            }
            Modules::ConfigMaps(references) => {
                engine.set_rego_v0(true);
                add_v0_builtins(&mut engine)?;
                for (i, reference) in references.iter().enumerate() {
                    let at = format!("modules[{i}]");
                    let map = context
                        .resources
                        .config_map_ref(reference, context.namespace)
                        .map_err(|e| e.at(&at))?;
                    for (name, source) in &map.data {
                        let file = format!("{}/{}/{name}", map.namespace, map.name);
                        add_module(&mut engine, file, source.clone(), &mut spent).map_err(
                            |why| {
                                Error::config(format!(
                                    "ConfigMap {}/{}, {name}: {why}",
                                    map.namespace, map.name
                                ))
                                .at(&at)
                            },
                        )?;
                        sources += 1;
                    }
                }
                engine.set_rego_v0(false);
            }
        }
        if sources == 0 && config.module_files.is_empty() {
            return Err(Error::config("expected at least one Rego module").at("modules"));
        }
        for (i, file) in config.module_files.iter().enumerate() {
            let at = format!("moduleFiles[{i}]");
            let source = context.read_to_string(file).map_err(|e| e.at(&at))?;
            add_module(&mut engine, file.clone(), source, &mut spent)
                .map_err(|why| Error::config(why).at(&at))?;
        }
        if let Some(data) = config.data {
            if !data.is_object() {
                return Err(Error::config("expected a mapping").at("data"));
            }
            engine
                .add_data(regorus::Value::from(data))
                .map_err(|e| Error::config(first_line(&e)).at("data"))?;
        }
        // An evaluation holds its thread: it must end within the step's
        // time, which no timer can cut short.
        let eval_timeout = match config.eval_timeout {
            Some(d) => d.0,
            None => context
                .timeout
                .map_or(DEFAULT_EVAL_TIMEOUT, |t| t.min(DEFAULT_EVAL_TIMEOUT)),
        };
        if eval_timeout.is_zero() {
            return Err(Error::config("expected a positive duration").at("evalTimeout"));
        }
        if let Some(step_time) = context.timeout
            && eval_timeout > step_time
        {
            return Err(Error::config(format!(
                "{eval_timeout:?} is longer than the step's time, {step_time:?} (its timeout, else the AuthConfig's deadline)"
            ))
            .at("evalTimeout"));
        }
        engine.set_execution_timer_config(timer(eval_timeout));
        // `print` would write the input, credentials and all, to stderr.
        engine.set_gather_prints(true);
        let rule: regorus::Rc<str> = query.into();
        // Compiling checks the rule and prepares `engine` for evaluation.
        engine
            .compile_with_entrypoint(&rule)
            .map_err(|e| Error::config(first_line(&e)).at("query"))?;
        let mut allowed_headers = Vec::new();
        for (i, h) in config.allowed_upstream_headers.iter().enumerate() {
            allowed_headers.push(util::header_name(
                h,
                &format!("allowedUpstreamHeaders[{i}]"),
            )?);
        }
        Ok(OpaAuth {
            engines: std::sync::Mutex::new(Engines {
                idle: vec![engine.clone()],
                template: engine,
            }),
            rule: query.to_owned(),
            max_idle: std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
            allowed_headers,
            reason_at: config
                .options
                .return_decision_reason
                .then(|| context.step_name.to_owned()),
            strict,
            eval_timeout,
        })
    }

    /// Evaluates the policy for a request.
    pub fn decide(&self, request: &AuthorizationRequest) -> Result<Decision, Error> {
        let input = input(request);
        let mut engine = {
            let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
            match engines.idle.pop() {
                Some(engine) => engine,
                None => engines.template.clone(),
            }
        };
        // Within the caller's time too: an evaluation cannot be cut short
        // once it runs.
        let limit = match request.extensions.get::<AnswerBy>() {
            Some(AnswerBy(by)) => by
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1))
                .min(self.eval_timeout),
            None => self.eval_timeout,
        };
        engine.set_execution_timer_config(timer(limit));
        engine.set_input(input);
        let result = engine.eval_rule(self.rule.clone());
        // The input may hold credentials: it does not stay in an idle
        // engine, nor do the prints made of it.
        engine.set_input(regorus::Value::new_object());
        let _ = engine.take_prints();
        {
            let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
            if engines.idle.len() < self.max_idle {
                engines.idle.push(engine);
            }
        }
        let result =
            result.map_err(|e| Error::step(format!("policy evaluation failed{}", location(&e))))?;
        self.decision(result)
    }

    fn decision(&self, result: regorus::Value) -> Result<Decision, Error> {
        let result = match result {
            regorus::Value::Undefined => return Ok(Decision::unauthorized()),
            other => serde_json::to_value(&other)
                .map_err(|_| Error::step("policy result is not JSON"))?,
        };
        match result {
            Value::Bool(true) => Ok(Decision::authorized()),
            Value::Bool(false) | Value::Null => Ok(Decision::unauthorized()),
            // `== true` is false for anything but the boolean.
            _ if self.strict => Ok(Decision::unauthorized()),
            Value::Object(obj) => self.object_decision(&obj),
            // Gloo's, with returnDecisionReason: `[allowed, body]`.
            Value::Array(items)
                if self.reason_at.is_some()
                    && items.len() == 2
                    && matches!(items[0], Value::Bool(_)) =>
            {
                let allowed = items[0] == Value::Bool(true);
                if !allowed {
                    return Ok(Decision::unauthorized());
                }
                let mut allow = Allow::new();
                if let Some(step) = &self.reason_at {
                    let body = items.get(1).cloned().unwrap_or(Value::Null);
                    allow.dynamic_metadata.insert(
                        step.clone(),
                        serde_json::json!({ "reason": { "allowed": true, "body": body } }),
                    );
                }
                Ok(allow.into())
            }
            // Gloo: any value but `true` is a deny (never an error, which
            // failureModeAllow would let through).
            _ => {
                tracing::debug!(rule = %self.rule, "the policy's result is neither a boolean nor an object; denying");
                Ok(Decision::unauthorized())
            }
        }
    }

    fn object_decision(&self, obj: &Map<String, Value>) -> Result<Decision, Error> {
        let allowed = obj
            .get("allowed")
            .or_else(|| obj.get("allow"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let headers = header_pairs(obj.get("headers"));
        if allowed {
            let mut allow = Allow::new();
            for (name, value) in headers {
                // Under the configured name.
                if let Some(name) = self.allowed_headers.iter().find(|h| **h == name) {
                    allow = allow.set_header(name.clone(), value);
                } else {
                    tracing::debug!(header = %name, "opaAuth: policy set a header not in allowedUpstreamHeaders; ignored");
                }
            }
            for (name, value) in header_pairs(obj.get("response_headers_to_add")) {
                allow = allow.response_header(name, value);
            }
            if let Some(Value::Object(metadata)) = obj.get("dynamic_metadata") {
                allow.dynamic_metadata.extend(metadata.clone());
            }
            if let Some(Value::Array(names)) = obj.get("request_headers_to_remove") {
                for n in names.iter().filter_map(Value::as_str) {
                    if let Ok(n) = HeaderName::try_from(n) {
                        allow = allow.remove_header(n);
                    }
                }
            }
            return Ok(allow.into());
        }
        let status = obj
            .get("http_status")
            .or_else(|| obj.get("status"))
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::FORBIDDEN);
        let mut deny = Deny::new(status);
        for (name, value) in headers {
            deny = deny.header(name, value);
        }
        match obj.get("body") {
            Some(Value::String(s)) => deny = deny.body(s.clone()),
            Some(Value::Null) | None => {}
            Some(other) => deny = deny.body(other.to_string()),
        }
        Ok(deny.into())
    }
}

/// `{name: value}` (a value may be a list) as header pairs; invalid names
/// or values are dropped.
fn header_pairs(v: Option<&Value>) -> Vec<(HeaderName, HeaderValue)> {
    let Some(Value::Object(map)) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Ok(name) = HeaderName::try_from(k.as_str()) else {
            continue;
        };
        match v {
            Value::Array(values) => {
                for v in values {
                    if let Some(v) = util::json_header_value(v) {
                        out.push((name.clone(), v));
                    }
                }
            }
            v => {
                if let Some(v) = util::json_header_value(v) {
                    out.push((name, v));
                }
            }
        }
    }
    out
}

/// The input's object keys, made once: a key in an input object is then
/// a reference count, not an allocation.
struct Keys {
    method: regorus::Value,
    path: regorus::Value,
    host: regorus::Value,
    scheme: regorus::Value,
    headers: regorus::Value,
    state: regorus::Value,
    context: regorus::Value,
    parsed_path: regorus::Value,
    parsed_query: regorus::Value,
    attributes: regorus::Value,
    request: regorus::Value,
    http: regorus::Value,
    protocol: regorus::Value,
    id: regorus::Value,
    body: regorus::Value,
    source: regorus::Value,
    destination: regorus::Value,
    context_extensions: regorus::Value,
    metadata_context: regorus::Value,
    address: regorus::Value,
    socket_address: regorus::Value,
    port_value: regorus::Value,
    principal: regorus::Value,
    check_request: regorus::Value,
    http_request: regorus::Value,
}

static KEYS: std::sync::LazyLock<Keys> = std::sync::LazyLock::new(|| Keys {
    method: regorus::Value::from("method"),
    path: regorus::Value::from("path"),
    host: regorus::Value::from("host"),
    scheme: regorus::Value::from("scheme"),
    headers: regorus::Value::from("headers"),
    state: regorus::Value::from("state"),
    context: regorus::Value::from("context"),
    parsed_path: regorus::Value::from("parsed_path"),
    parsed_query: regorus::Value::from("parsed_query"),
    attributes: regorus::Value::from("attributes"),
    request: regorus::Value::from("request"),
    http: regorus::Value::from("http"),
    protocol: regorus::Value::from("protocol"),
    id: regorus::Value::from("id"),
    body: regorus::Value::from("body"),
    source: regorus::Value::from("source"),
    destination: regorus::Value::from("destination"),
    context_extensions: regorus::Value::from("contextExtensions"),
    metadata_context: regorus::Value::from("metadataContext"),
    address: regorus::Value::from("address"),
    socket_address: regorus::Value::from("socketAddress"),
    port_value: regorus::Value::from("portValue"),
    principal: regorus::Value::from("principal"),
    check_request: regorus::Value::from("check_request"),
    http_request: regorus::Value::from("http_request"),
});

/// A regorus object from (interned) keys.
fn object<const N: usize>(pairs: [(&regorus::Value, regorus::Value); N]) -> regorus::Value {
    let map: BTreeMap<regorus::Value, regorus::Value> =
        pairs.into_iter().map(|(k, v)| (k.clone(), v)).collect();
    regorus::Value::from(map)
}

/// The policy input: authchain's flat shape and OPA-Envoy's
/// `attributes.request.http` shape. Built as regorus values directly;
/// the parts both shapes share are reference-counted, not copied.
fn input(request: &AuthorizationRequest) -> regorus::Value {
    use regorus::Value as V;
    let ks = &*KEYS;
    // As Envoy's CheckRequest, pseudo-headers and all.
    let headers = V::from(
        request
            .check_headers()
            .into_iter()
            .map(|(k, v)| (V::from(k), V::from(v)))
            .collect::<BTreeMap<V, V>>(),
    );
    let method = V::from(request.method.as_str());
    let path = V::from(request.path.as_str());
    let host = V::from(request.host.as_str());
    let scheme = V::from(request.scheme.as_str());
    // As OPA-Envoy: the decoded path without its leading `/`, split at
    // `/` (`/` gives `[""]`); the query decoded, `+` as a space.
    let parsed_path = V::from(
        request
            .path_only()
            .trim_start_matches('/')
            .split('/')
            .map(|segment| V::from(percent_decode(segment, false).as_ref()))
            .collect::<Vec<V>>(),
    );
    let mut query: BTreeMap<V, Vec<V>> = BTreeMap::new();
    if let Some(q) = request.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query
                .entry(V::from(percent_decode(k, true).as_ref()))
                .or_default()
                .push(V::from(percent_decode(v, true).as_ref()));
        }
    }
    let parsed_query = V::from(
        query
            .into_iter()
            .map(|(k, v)| (k, V::from(v)))
            .collect::<BTreeMap<V, V>>(),
    );
    let context = V::from(
        request
            .context
            .iter()
            .map(|(k, v)| (V::from(k.as_str()), V::from(v.as_str())))
            .collect::<BTreeMap<V, V>>(),
    );
    let peer = |p: &authchain_core::Peer| {
        let mut m = BTreeMap::new();
        if let Some(addr) = p.address {
            m.insert(
                ks.address.clone(),
                object([(
                    &ks.socket_address,
                    object([
                        (&ks.address, V::from(addr.ip().to_string())),
                        (&ks.port_value, V::from(u64::from(addr.port()))),
                    ]),
                )]),
            );
        }
        if let Some(principal) = &p.principal {
            m.insert(ks.principal.clone(), V::from(principal.as_str()));
        }
        V::from(m)
    };
    let json_map = |m: Map<String, Value>| {
        if m.is_empty() {
            V::new_object()
        } else {
            V::from(Value::Object(m))
        }
    };
    let mut http = object([
        (&ks.method, method.clone()),
        (&ks.path, path.clone()),
        (&ks.host, host.clone()),
        (&ks.scheme, scheme.clone()),
        (&ks.protocol, V::from(request.protocol.as_ref())),
        (&ks.id, V::from(request.id.as_str())),
        (&ks.headers, headers.clone()),
    ]);
    // A body that is not UTF-8 is given with U+FFFD for the bytes that
    // are not, as Go's and Node's JSON read it: a policy that looks for a
    // word in it still finds it beside a stray byte.
    if let Some(body) = &request.body
        && let Ok(m) = http.as_object_mut()
    {
        m.insert(
            ks.body.clone(),
            V::from(String::from_utf8_lossy(body).as_ref()),
        );
    }
    let attributes = object([
        (&ks.request, object([(&ks.http, http.clone())])),
        (&ks.source, peer(&request.source)),
        (&ks.destination, peer(&request.destination)),
        (&ks.context_extensions, context.clone()),
        (&ks.metadata_context, json_map(request.metadata.clone())),
    ]);
    object([
        (&ks.method, method),
        (&ks.path, path),
        (&ks.host, host),
        (&ks.scheme, scheme),
        (&ks.headers, headers),
        (&ks.state, json_map(Map::from(&request.state))),
        (&ks.context, context),
        (&ks.parsed_path, parsed_path),
        (&ks.parsed_query, parsed_query),
        // Gloo's: the CheckRequest, and its HTTP request for short.
        (
            &ks.check_request,
            object([(&ks.attributes, attributes.clone())]),
        ),
        (&ks.http_request, http),
        (&ks.attributes, attributes),
    ])
}

/// How long an evaluation may take when `evalTimeout` does not say (or
/// the step's time, if shorter).
const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_millis(100);

/// regorus's timer for evaluations of at most `limit`.
fn timer(limit: Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

impl AuthService for OpaAuth {
    fn authorize<'a>(&'a self, request: &'a mut AuthorizationRequest) -> Answer<'a> {
        self.decide(request).into()
    }

    fn identity_headers(&self) -> Vec<HeaderName> {
        self.allowed_headers.clone()
    }

    fn refuses_failure_mode_allow(&self) -> Option<&'static str> {
        Some(authchain_core::CALLS_NO_SERVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step of `data.t.result` over the module `t.rego`.
    fn built(policy: &str) -> Result<OpaAuth, Error> {
        built_of(&[policy])
    }

    /// The step of `data.t.result` over `t.rego`, `t1.rego`, ...
    fn built_of(modules: &[&str]) -> Result<OpaAuth, Error> {
        let names = std::iter::once("t.rego".to_owned()).chain((1..).map(|i| format!("t{i}.rego")));
        OpaAuth::new(OpaConfig {
            query: "data.t.result".into(),
            modules: Modules::Inline(names.zip(modules.iter().map(|m| m.to_string())).collect()),
            options: OpaOptions::default(),
            module_files: Vec::new(),
            data: None,
            allowed_upstream_headers: Vec::new(),
            eval_timeout: None,
        })
    }

    fn step(policy: &str) -> OpaAuth {
        built(policy).unwrap()
    }

    fn refusal(policy: &str) -> String {
        match built(policy) {
            Ok(_) => panic!("the policy was taken"),
            Err(e) => e.to_string(),
        }
    }

    /// `depth` levels of `{` and `[` around `inner`, in a rule's body
    /// (one level more).
    fn nested(depth: usize, inner: &str) -> String {
        let open: String = (0..depth).map(|i| ["{", "["][i % 2]).collect();
        let close: String = (0..depth).rev().map(|i| ["}", "]"][i % 2]).collect();
        format!("package t\nresult if {{\n  x := {open}{inner}{close}\n  x != 1\n}}\n")
    }

    #[test]
    fn a_module_nested_deeper_than_regorus_parses_in_time_is_refused() {
        // regorus took minutes over `{{{{...` 20 deep (found by fuzzing
        // the config): the step refuses it before regorus reads it.
        let e = refusal(&nested(MAX_NESTING, "1"));
        assert!(e.contains("line 3: `{` and `[` nest deeper than 12"), "{e}");
        assert!(e.contains("modules.t.rego"), "{e}");
        assert!(e.contains("put deep data in `data`"), "{e}");
        // Twelve levels (the rule's body is one) are taken, and so are
        // brackets in strings and comments.
        step(&nested(MAX_NESTING - 1, "1"));
        let deep = "{".repeat(40);
        step(&format!(
            "package t\n# {deep}\nresult if {{ \"{deep}\\\"\" != `{deep}` }}\n"
        ));
        // A large literal a few levels down costs as much.
        // (regorus takes lines of 1024 bytes at most.)
        let wide = vec![vec!["1"; 50].join(","); 1_600].join(",\n");
        let e = refusal(&nested(9, &wide));
        assert!(e.contains("nest too much text in `{` and `[`"), "{e}");
        step(&nested(3, &wide));
        // What a step's modules cost adds up.
        let part = vec![vec!["1"; 50].join(","); 400].join(",\n");
        let module = nested(6, &part);
        built_of(&[&module]).unwrap();
        let e = built_of(&[&module, &module.replace("result", "other")])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nest too much text"), "{e}");
    }

    /// regorus orders a body's statements in time that grows with their
    /// square: 10,000 statements each naming the next took 100 s.
    #[test]
    fn a_body_of_more_than_a_thousand_statements_is_refused() {
        let chain = |n: usize, sep: &str| {
            let statements: Vec<String> = std::iter::once("b00001 := input.x".to_owned())
                .chain((2..=n).map(|i| format!("b{i:05} := b{:05}", i - 1)))
                .collect();
            format!(
                "package t\nresult if {{\n  {}\n  b00001 != 2\n}}\n",
                statements.join(sep)
            )
        };
        for sep in ["\n  ", "; "] {
            let e = refusal(&chain(1_001, sep));
            assert!(e.contains("more than 1000 statements in one body"), "{e}");
        }
        step(&chain(200, "\n  "));
        // Data over many lines, each ending with a `,`, is no statement.
        let entries: String = (0..3_000)
            .map(|i| format!("    \"k{i}\": {i},\n"))
            .collect();
        step(&format!(
            "package t\nroles := {{\n{entries}}}\nresult if roles.k1 == input.x\n"
        ));
    }

    /// regorus's parser recurses for each `{`, `[`, `(` and unary `-`,
    /// with no limit but for parentheses: `abs(abs(...` or `- - - ...` some
    /// thousands deep (on lines of their own) ended the process, out of
    /// stack. The step refuses them past 32 levels.
    #[test]
    fn a_module_nested_past_regorus_s_stack_is_refused() {
        let body = |expr: String| format!("package t\nresult if {{\n  x := {expr}\n  x != 2\n}}\n");
        let calls = |n: usize| format!("{}1{}", "abs(\n".repeat(n), ")".repeat(n));
        let minus = |n: usize| format!("{}1", "-\n ".repeat(n));
        for (name, expr) in [
            ("calls", calls(3_000)),
            ("unary minus", minus(3_000)),
            (
                "runs of unary minus in parentheses",
                format!("{}({}(1))", "- ".repeat(20), "- ".repeat(20)),
            ),
            (
                "unary minus after `in`",
                format!("1 {}", "in - input.x ".repeat(40)),
            ),
        ] {
            let e = refusal(&body(expr));
            assert!(e.contains("nest deeper than 32"), "{name}: {e}");
        }
        step(&body(calls(30)));
        step(&body(minus(30)));
        // A `-` after an operand subtracts, and a line that ends with an
        // operand ends what a unary `-` takes.
        step(&body(vec!["input.x"; 100].join(" - ")));
        let lines: String = (0..100).map(|i| format!("  y{i} := -input.x\n")).collect();
        step(&format!("package t\nresult if {{\n{lines}  y0 != 2\n}}\n"));
    }

    #[test]
    fn evaluation_errors_do_not_quote_the_input() {
        let step = step("package t\nimport rego.v1\nresult := input.headers.authorization + 1\n");
        let req = AuthorizationRequest::new(http::Method::GET, "/").with_header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cr3t-token"),
        );
        match step.decide(&req) {
            Err(e) => {
                assert!(e.is_step());
                let text = format!("{e} {e:?}");
                assert!(!text.contains("s3cr3t"), "{text}");
            }
            // Undefined in non-strict mode is also a fail-closed answer.
            Ok(d) => assert!(!d.is_allow()),
        }
    }

    /// An evaluation ends by the caller's deadline, though its own
    /// `evalTimeout` is longer: it cannot be cut short once it runs.
    #[test]
    fn an_evaluation_ends_by_the_caller_s_deadline() {
        let mut config = OpaConfig {
            query: "data.t.result".into(),
            modules: Modules::Inline(
                [(
                    "t.rego".to_owned(),
                    "package t
import rego.v1
result if count([x | some x in numbers.range(1, 200000)]) > 0
"
                    .to_owned(),
                )]
                .into(),
            ),
            options: OpaOptions::default(),
            module_files: Vec::new(),
            data: None,
            allowed_upstream_headers: Vec::new(),
            eval_timeout: Some(ConfigDuration(Duration::from_secs(5))),
        };
        let step = OpaAuth::new(config.clone()).unwrap();
        let mut req = AuthorizationRequest::new(http::Method::GET, "/");
        assert!(step.decide(&req).unwrap().is_allow(), "in its own time");
        req.extensions.insert(AnswerBy(std::time::Instant::now()));
        let e = step.decide(&req).unwrap_err();
        assert!(e.is_step(), "{e}");
        // And the engine it used serves the next request in full time.
        req.extensions.remove::<AnswerBy>();
        assert!(step.decide(&req).unwrap().is_allow());

        // An evalTimeout longer than the step's time is a config error.
        let context = BuildContext::new("", "", "").with_timeout(Duration::from_secs(1));
        let e = OpaAuth::with_resources(config.clone(), &context).unwrap_err();
        assert!(e.to_string().contains("longer than the step's time"), "{e}");
        config.eval_timeout = Some(ConfigDuration(Duration::from_secs(1)));
        assert!(OpaAuth::with_resources(config.clone(), &context).is_ok());
        // Unset, it is 100 ms, or the step's time when that is shorter.
        config.eval_timeout = None;
        let short = BuildContext::new("", "", "").with_timeout(Duration::from_millis(50));
        let step = OpaAuth::with_resources(config.clone(), &short).unwrap();
        assert_eq!(step.eval_timeout, Duration::from_millis(50));
        // One under a millisecond, under a caller's deadline: no panic.
        config.eval_timeout = Some(ConfigDuration(Duration::from_micros(500)));
        let step = OpaAuth::new(config).unwrap();
        req.extensions
            .insert(AnswerBy(std::time::Instant::now() + Duration::from_secs(1)));
        assert!(step.decide(&req).is_err());
    }

    /// `print` writes nothing of the input anywhere, and keeps nothing of
    /// it in the engine for the next request.
    #[test]
    fn prints_are_dropped() {
        let step = step(
            "package t
import rego.v1
result if {
  print(input.headers.authorization)
  true
}
",
        );
        let req = AuthorizationRequest::new(http::Method::GET, "/").with_header(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cr3t-token"),
        );
        assert!(step.decide(&req).unwrap().is_allow());
        let mut engines = step.engines.lock().unwrap();
        for engine in &mut engines.idle {
            assert!(engine.take_prints().unwrap().is_empty());
        }
        // Gathered, not written to stderr: an engine made as the step's
        // keeps what it printed until it is taken.
        let mut engine = engines.template.clone();
        engine.set_input(input(&req));
        engine.eval_rule(step.rule.clone()).unwrap();
        let printed = engine.take_prints().unwrap();
        assert!(printed.concat().contains("s3cr3t-token"), "{printed:?}");
    }

    #[test]
    fn gloo_style_queries_are_accepted() {
        let mut config = OpaConfig {
            query: "data.t.allow == true".into(),
            modules: Modules::Inline(
                [("t.rego".to_owned(), "package t\nallow := true\n".to_owned())].into(),
            ),
            options: OpaOptions::default(),
            module_files: Vec::new(),
            data: None,
            allowed_upstream_headers: Vec::new(),
            eval_timeout: None,
        };
        let step = OpaAuth::new(config.clone()).unwrap();
        let req = AuthorizationRequest::new(http::Method::GET, "/");
        assert!(step.decide(&req).unwrap().is_allow());
        config.query = "data.t.allow; true".into();
        assert!(OpaAuth::new(config).is_err());
    }
}
