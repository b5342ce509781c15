//! The one error type of authchain.
//!
//! [`Error`] is opaque, in the manner of `hyper::Error`: ask it what it is
//! with the `is_*` methods, where it happened with [`Error::place`], and why
//! with its `Display` and [`std::error::Error::source`]. A config error
//! names its place in the document as a path, for example
//! `configs[1].pluginAuth.config.AllowedValues: invalid type: ...`.
//!
//! Error text never carries request header values, credentials or the
//! string values of a config document: step authors must keep it that way
//! for the errors they make.

use std::fmt;
use std::path::{Path, PathBuf};

/// A boxed error, as plugins hand them in.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible authchain operation.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    place: Option<String>,
    message: String,
    source: Option<BoxError>,
    /// When not empty, this error is a collection of these problems
    /// (config checks report them all) and its own fields are unused.
    more: Vec<Error>,
    /// The files the failed build read or tried to.
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Config,
    Build,
    Start,
    Step,
    /// A step that panicked: a step error that never fails open.
    Panic,
    /// A step at a limit of its own: a step error that never fails open.
    Overloaded,
    /// A step's answer that cannot be carried out as given, or a failure
    /// that is no outage: a step error that never fails open.
    Invalid,
    Timeout,
    /// The request's time is up (the chain's deadline, or its caller's):
    /// a timeout that never fails open.
    Deadline,
    UnknownConfig,
}

impl Error {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                place: None,
                message: message.into(),
                source: None,
                more: Vec::new(),
                files: Vec::new(),
            }),
        }
    }

    /// An invalid config document or entry. Add the place with [`Error::at`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    /// A plugin could not build its service from a valid-looking config.
    pub fn build(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Build, "cannot build step").with_source(source)
    }

    /// A service failed to start.
    pub fn start(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Start, "cannot start step").with_source(source)
    }

    /// A step failed while authorizing a request. This is not a deny: the
    /// chain turns it into one (fail closed) unless the step fails open.
    pub fn step(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Step, "step failed").with_source(source)
    }

    /// A step panicked: the chain's own catch, or a step's for a task it
    /// ran (`spawn_blocking`'s `JoinError::is_panic`). Its message is not
    /// kept; `failureModeAllow` never lets it through.
    pub fn panicked() -> Self {
        Self::new(Kind::Panic, "step failed: the step panicked")
    }

    /// A step failed where an outage is not the likely cause, or where
    /// letting the request through would skip a check it had begun (a
    /// directory that accepted the user's password but cannot name its
    /// groups, a remote server's refusal the request itself brought
    /// about): a step error that `failureModeAllow` never lets through.
    pub fn step_fail_closed(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Invalid, "step failed").with_source(source)
    }

    /// A step turned the request away at a limit of its own (calls under
    /// way, a queue): clients can fill it, so `failureModeAllow` never
    /// lets it through, as it would an outage of the server it calls.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(Kind::Overloaded, message)
    }

    /// A step answered what cannot be carried out as given (a query
    /// change that would alter the URL's structure): a step error that
    /// `failureModeAllow` never lets through, as the allow it came in
    /// would have been carried out without it.
    pub(crate) fn invalid_answer(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    /// The request's time ran out during a step: the chain's deadline, or
    /// its caller's ([`AnswerBy`](crate::transport::AnswerBy)).
    pub(crate) fn deadline_passed(message: impl Into<String>) -> Self {
        Self::new(Kind::Deadline, message)
    }

    /// A step turned the request away at a limit of its own
    /// ([`overloaded`](Self::overloaded)): a step error (so
    /// [`is_step`](Self::is_step) too) that `failureModeAllow` never lets
    /// through.
    pub fn is_overloaded(&self) -> bool {
        self.inner.kind == Kind::Overloaded
    }

    /// Whether `failureModeAllow` never lets this error through: a panic,
    /// a step's own limit, or the request's time running out (the chain's
    /// or its caller's deadline: the step's own `timeout` is what it rides
    /// out; a run out of time is the caller's failure mode to decide, and
    /// ends waits on the step's own limits too).
    pub fn fails_closed(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Panic | Kind::Overloaded | Kind::Invalid | Kind::Deadline
        )
    }

    /// A step or the chain ran past its time limit.
    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(Kind::Timeout, message)
    }

    /// A request asked for an AuthConfig the current generation lacks.
    pub fn unknown_config(name: &str) -> Self {
        Self::new(Kind::UnknownConfig, format!("no AuthConfig named '{name}'"))
    }

    /// Attaches the error that caused this one.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// Puts the error at `place` (a document path such as
    /// `configs[1].pluginAuth`). A place already set is kept as the tail:
    /// `Error::config("x").at("config").at("configs[0].pluginAuth")` is at
    /// `configs[0].pluginAuth.config`. On a collection of errors
    /// ([`Error::collect`]) it applies to each.
    pub fn at(mut self, place: impl AsRef<str>) -> Self {
        let place = place.as_ref();
        if place.is_empty() {
            return self;
        }
        self.inner.more = std::mem::take(&mut self.inner.more)
            .into_iter()
            .map(|e| e.at(place))
            .collect();
        self.inner.place = Some(match self.inner.place.take() {
            None => place.to_owned(),
            Some(tail) if tail.starts_with('[') => format!("{place}{tail}"),
            Some(tail) => format!("{place}.{tail}"),
        });
        self
    }

    /// Puts the error in a named source (a file name, `document 2`, ...),
    /// written before the place: `auth.yaml document 2: configs[0]: ...`.
    /// On a collection of errors it applies to each.
    pub fn in_source(mut self, origin: impl fmt::Display) -> Self {
        let origin = origin.to_string();
        self.inner.more = std::mem::take(&mut self.inner.more)
            .into_iter()
            .map(|e| e.in_source(&origin))
            .collect();
        let place = match self.inner.place.take() {
            Some(place) => format!("{origin}: {place}"),
            None => origin,
        };
        self.inner.place = Some(place);
        self
    }

    /// Joins several errors into one that reports them all, one per line;
    /// `None` when there are none. [`Error::problems`] lists them again.
    pub fn collect(errors: Vec<Error>) -> Option<Error> {
        if errors.len() <= 1 {
            return errors.into_iter().next();
        }
        let mut all = Error::new(errors[0].inner.kind, "");
        // Flatten, so that a collection of collections lists each problem once.
        all.inner.more = errors
            .into_iter()
            .flat_map(|e| {
                if e.inner.more.is_empty() {
                    vec![e]
                } else {
                    e.inner.more
                }
            })
            .collect();
        Some(all)
    }

    /// The files a failed [generation build](crate::Generation::build)
    /// read, or tried to, through
    /// [`BuildContext::read`](crate::BuildContext::read) (a step's key
    /// list, a policy): a change to one may mend it, so the `authchain`
    /// server watches them to try again. Empty for other errors.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.inner.files.iter().map(PathBuf::as_path)
    }

    pub(crate) fn with_files(mut self, files: Vec<PathBuf>) -> Self {
        self.inner.files = files;
        self
    }

    /// Where the error is, if it belongs to a place in a document (for a
    /// collection, where the first problem is).
    pub fn place(&self) -> Option<&str> {
        match self.inner.more.first() {
            Some(first) => first.place(),
            None => self.inner.place.as_deref(),
        }
    }

    /// The problems this error reports: itself, or each error of a
    /// collection.
    pub fn problems(&self) -> impl Iterator<Item = &Error> {
        let single = self.inner.more.is_empty().then_some(self);
        single.into_iter().chain(self.inner.more.iter())
    }

    /// An invalid config: bad syntax, unknown field, unknown plugin, ...
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// A plugin refused to build its service.
    pub fn is_build(&self) -> bool {
        self.inner.kind == Kind::Build
    }

    /// A service failed to start.
    pub fn is_start(&self) -> bool {
        self.inner.kind == Kind::Start
    }

    /// A step failed at request time.
    pub fn is_step(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Step | Kind::Panic | Kind::Overloaded | Kind::Invalid
        )
    }

    /// A step panicked: a step error (so [`is_step`](Self::is_step)
    /// too) that `failureModeAllow` never lets through, since the step
    /// checked nothing.
    pub fn is_panic(&self) -> bool {
        self.inner.kind == Kind::Panic
    }

    /// A step or chain ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout | Kind::Deadline)
    }

    /// The requested AuthConfig does not exist.
    pub fn is_unknown_config(&self) -> bool {
        self.inner.kind == Kind::UnknownConfig
    }

    fn fmt_one(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(place) = &self.inner.place {
            write!(f, "{place}: ")?;
        }
        f.write_str(&self.inner.message)?;
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inner.more.is_empty() {
            return self.fmt_one(f);
        }
        for (i, problem) in self.inner.more.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            problem.fmt_one(f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(place) = &self.inner.place {
            d.field("place", place);
        }
        d.field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if !self.inner.more.is_empty() {
            d.field("more", &self.inner.more);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Rewrites a serde message so that it carries no value from the document:
/// `invalid type: string "hunter2", expected a sequence` becomes
/// `invalid type: string, expected a sequence`, and `invalid type: integer
/// `12345`` becomes `invalid type: integer` (a numeric PIN or key is a
/// secret too). Config documents hold secrets (API keys, passwords), and
/// errors end up in logs.
pub(crate) fn redact_serde_message(message: &str) -> String {
    let message = redact_scalars(message);
    let message = message.as_str();
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at + "string".len()]);
        let after_quote = &rest[at + "string \"".len()..];
        // serde writes the value with Rust escapes; the value ends at the
        // first unescaped quote.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after_quote.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        match end {
            Some(end) => rest = &after_quote[end + 1..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops the value serde quotes in backticks after a scalar's type:
/// `integer `5``, `floating point `1.5``, `character `x``.
fn redact_scalars(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let found = ["integer `", "floating point `", "character `"]
            .iter()
            .filter_map(|kind| rest.find(kind).map(|at| (at, kind.len())))
            .min();
        let Some((at, len)) = found else { break };
        out.push_str(&rest[..at + len - 2]);
        let after = &rest[at + len..];
        rest = after.find('`').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_nest_from_the_inside_out() {
        let e = Error::config("bad")
            .at("AllowedValues")
            .at("configs[1].pluginAuth.config");
        assert_eq!(
            e.place(),
            Some("configs[1].pluginAuth.config.AllowedValues")
        );
        let e = Error::config("bad").at("[2]").at("configs");
        assert_eq!(e.place(), Some("configs[2]"));
        assert_eq!(
            e.in_source("auth.yaml document 2").to_string(),
            "auth.yaml document 2: configs[2]: bad"
        );
    }

    #[test]
    fn collected_errors_print_one_per_line() {
        let e = Error::collect(vec![
            Error::config("one").at("a"),
            Error::config("two").at("b"),
        ])
        .unwrap();
        assert_eq!(e.to_string(), "a: one\nb: two");
        assert_eq!(e.problems().count(), 2);
        assert!(e.is_config());
        let e = e.at("spec").in_source("f.yaml");
        assert_eq!(e.to_string(), "f.yaml: spec.a: one\nf.yaml: spec.b: two");
        assert_eq!(e.place(), Some("f.yaml: spec.a"));
        let nested = Error::collect(vec![e, Error::config("three")]).unwrap();
        assert_eq!(nested.problems().count(), 3);
        assert!(Error::collect(Vec::new()).is_none());
        let single = Error::collect(vec![Error::config("x")]).unwrap();
        assert_eq!(single.problems().count(), 1);
    }

    #[test]
    fn serde_messages_lose_their_string_values() {
        assert_eq!(
            redact_serde_message(r#"invalid type: string "hunter2", expected a sequence"#),
            "invalid type: string, expected a sequence"
        );
        assert_eq!(
            redact_serde_message(r#"invalid value: string "a\"b", expected x; string "c""#),
            "invalid value: string, expected x; string"
        );
        assert_eq!(
            redact_serde_message("unknown field `foo`, expected one of `a`, `b`"),
            "unknown field `foo`, expected one of `a`, `b`"
        );
        assert_eq!(redact_serde_message(r#"string "open"#), "string");
        assert_eq!(
            redact_serde_message("invalid type: integer `48213977`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            redact_serde_message(
                "invalid value: floating point `3.5`, expected u16; character `q`"
            ),
            "invalid value: floating point, expected u16; character"
        );
        assert_eq!(redact_serde_message("integer `9"), "integer");
    }
}
