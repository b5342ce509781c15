//! Canonical request paths, so that every authorization decision reads the
//! path the way the upstream application will.
//!
//! A proxy may forward `/%70ublic//x` as is while the application behind
//! it reads `/public/x`; a rule that looked at the raw text would judge
//! another path than the app serves. The canonical form removes such
//! differences: it is absolute, its percent-escapes are well formed with
//! uppercase hex digits, escapes of characters a path may hold as they
//! are (unreserved, sub-delims but `;`, `:` and `@`) are decoded, and runs
//! of `/` are merged. Constructs whose meaning
//! differs between servers (a `.` or `..` segment, which a router that
//! matches the raw path, as Envoy's and axum's do, reads as text and the
//! app resolves; an encoded `/`, a `\`, an encoded control byte, a raw
//! `#`, `;` parameters, which Java servers drop before routing and others
//! keep) are refused or kept as they are, as [`AmbiguousPaths`] says. The
//! query is never touched.

use std::borrow::Cow;
use std::fmt;

/// What to do with a path whose meaning differs between servers: a dot
/// segment, `.` or `..`, raw or encoded (a router that matches the raw
/// path, as Envoy's without `normalize_path` and axum's do, picks its
/// route, and so its AuthConfig or handler, by `/public/../admin`, which
/// the app then resolves to `/admin`; browsers resolve dot segments
/// before they send a request), an encoded `/` (`%2F`), an encoded or raw
/// `\` (`%5C`, `\`), an encoded NUL (`%00`), any other encoded control byte
/// (`%00`-`%1F`, `%7F`), a raw `#`, a raw `;` (Tomcat, Jetty and Spring
/// drop `;` parameters before routing, so `/admin;x/users` is their
/// `/admin/users` and `..;` their `..`; other servers keep them), or a
/// leading `//` (`//public/admin` is host `public`, path `/admin`, to an
/// app that reads the target as a URL reference, as Node's `new URL(url,
/// base)` and Python's `urlsplit` do; when kept, it is merged as any run
/// of `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmbiguousPaths {
    /// Refuse the path with a [`PathError`] (the default).
    #[default]
    Reject,
    /// Keep the construct: dot segments are resolved as RFC 3986 does
    /// (after slashes are merged; a `..` above the root stops at the
    /// root), encoded bytes stay encoded (hex digits uppercased), and a raw
    /// `\` stays a segment character.
    Keep,
}

/// Why a path was refused. Its text names the offending construct, never
/// the path itself (which may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Empty,
    NotAbsolute,
    MalformedEscape,
    EncodedSlash,
    EncodedBackslash,
    EncodedNul,
    EncodedControl(u8),
    EncodedSemicolon,
    RawBackslash,
    RawControl,
    RawFragment,
    Parameters,
    DotSegment,
    NetworkPath,
}

impl PathError {
    fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Empty => f.write_str("the path is empty"),
            ErrorKind::NotAbsolute => f.write_str("the path is not absolute"),
            ErrorKind::MalformedEscape => f.write_str("the path has a malformed percent-encoding"),
            ErrorKind::EncodedSlash => f.write_str("the path has an encoded '/' (%2F)"),
            ErrorKind::EncodedBackslash => f.write_str("the path has an encoded '\\' (%5C)"),
            ErrorKind::EncodedNul => f.write_str("the path has an encoded NUL (%00)"),
            ErrorKind::EncodedControl(byte) => {
                write!(f, "the path has an encoded control character (%{byte:02X})")
            }
            ErrorKind::EncodedSemicolon => f.write_str(
                "the path has an encoded ';' (%3B; a proxy that decodes it makes a parameter)",
            ),
            ErrorKind::RawBackslash => f.write_str("the path has a raw '\\'"),
            ErrorKind::RawControl => f.write_str("the path has a raw control character or space"),
            ErrorKind::RawFragment => f.write_str("the path has a raw '#'"),
            ErrorKind::Parameters => f.write_str(
                "the path has ';' parameters (Java servers drop them before routing, others keep them)",
            ),
            ErrorKind::NetworkPath => f.write_str(
                "the path starts with '//' (an app that reads it as a URL reference reads its \
                 first segment as a host)",
            ),
            ErrorKind::DotSegment => f.write_str(
                "the path has a '.' or '..' segment (a router that matches the raw path reads \
                 another path than the app, which resolves it)",
            ),
        }
    }
}

impl std::error::Error for PathError {}

/// Canonicalizes a request target's path part (the query, from the first
/// `?`, is kept byte for byte, untouched, and re-appended). Returns
/// `Ok(None)` when the input is already canonical (the common case: no
/// allocation), `Ok(Some(new))` otherwise.
///
/// The canonical path starts with `/`; its escapes are `%XX` with uppercase
/// hex digits, and escapes of the characters a path may hold as they are
/// (ALPHA, DIGIT, `-`, `.`, `_`, `~`, `!$&'()*+,=`, `:`, `@`; not `;`) are
/// decoded, and non-ASCII characters and `"<>[]^`{|}` are escaped
/// (`/café` is `/caf%C3%A9`); runs of `/` are merged; the dot segments `.`
/// and `..` (after decoding, so `%2e%2e` is `..`) are refused, or when
/// kept removed as RFC 3986 §5.2.4 does (a trailing one leaves a trailing
/// `/`). Other segment text, case included (and, when kept, `;`
/// parameters), is kept.
///
/// # Errors
///
/// When the path is empty or not absolute (`*`, authority-form), has a `%`
/// not followed by two hex digits, or has an ambiguous construct (see
/// [`AmbiguousPaths`]) and `ambiguous` is [`AmbiguousPaths::Reject`].
pub fn canonicalize(
    path_and_query: &str,
    ambiguous: AmbiguousPaths,
) -> Result<Option<String>, PathError> {
    let (path, query) = match path_and_query.bytes().position(|b| b == b'?') {
        Some(at) => path_and_query.split_at(at),
        None => (path_and_query, ""),
    };
    if path.is_empty() {
        return Err(PathError::new(ErrorKind::Empty));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::new(ErrorKind::NotAbsolute));
    };
    if ambiguous == AmbiguousPaths::Reject && rest.starts_with('/') {
        return Err(PathError::new(ErrorKind::NetworkPath));
    }
    if is_canonical(rest, ambiguous) {
        return Ok(None);
    }

    let mut canonical = rewrite(rest, ambiguous)?;
    canonical.push_str(query);
    Ok(Some(canonical))
}

/// Builds the canonical form of `rest` (the path after its leading `/`):
/// normalizes each segment's escapes, merges slashes and removes dot
/// segments (when kept).
fn rewrite(rest: &str, ambiguous: AmbiguousPaths) -> Result<String, PathError> {
    let reject = ambiguous == AmbiguousPaths::Reject;
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    let mut raw_segments = rest.split('/').peekable();
    while let Some(raw) = raw_segments.next() {
        let is_last = raw_segments.peek().is_none();
        let segment = normalize_segment(raw, ambiguous)?;
        if reject && segment.contains(';') {
            return Err(PathError::new(ErrorKind::Parameters));
        }
        match segment.as_str() {
            "." | ".." if reject => return Err(PathError::new(ErrorKind::DotSegment)),
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                segments.push(segment);
                continue;
            }
        }
        // An empty or dot segment at the end leaves a trailing slash.
        trailing_slash = is_last;
    }

    let mut out = String::with_capacity(rest.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Whether `rest` (the path after its leading `/`) is already canonical, so
/// that [`canonicalize`] would return it unchanged. One pass over its
/// bytes; allocates nothing.
fn is_canonical(rest: &str, ambiguous: AmbiguousPaths) -> bool {
    let keep = ambiguous == AmbiguousPaths::Keep;
    let bytes = rest.as_bytes();
    let mut start = 0; // of the current segment
    let mut i = 0;
    loop {
        let Some(&byte) = bytes.get(i) else {
            // The last segment may be empty (a trailing `/`).
            return !matches!(&bytes[start..], b"." | b"..");
        };
        match byte {
            b'/' => {
                if matches!(&bytes[start..i], b"" | b"." | b"..") {
                    return false;
                }
                i += 1;
                start = i;
            }
            b'%' => {
                let canonical_escape = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) if is_upper_hex(hi) && is_upper_hex(lo) => {
                        let byte = hex_value(hi) * 16 + hex_value(lo);
                        !is_decoded(byte) && (keep || !is_ambiguous(byte))
                    }
                    _ => false,
                };
                if !canonical_escape {
                    return false;
                }
                i += 3;
            }
            b';' if !keep => return false,
            byte if is_raw_ambiguous(byte) && !keep => return false,
            byte if is_escaped_raw(byte) => return false,
            _ => i += 1,
        }
    }
}

/// Normalizes the escapes of one segment (no `/` inside): decodes escapes of
/// unreserved characters, uppercases the others, and checks the ambiguous
/// constructs.
fn normalize_segment(segment: &str, ambiguous: AmbiguousPaths) -> Result<String, PathError> {
    let reject = ambiguous == AmbiguousPaths::Reject;
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let rest = chars.as_str();
                let byte = match rest.as_bytes() {
                    [hi, lo, ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                        hex_value(*hi) * 16 + hex_value(*lo)
                    }
                    _ => return Err(PathError::new(ErrorKind::MalformedEscape)),
                };
                // The two hex digits are ASCII, so index 2 is a char boundary.
                chars = rest[2..].chars();
                if is_decoded(byte) {
                    out.push(char::from(byte));
                    continue;
                }
                if reject && is_ambiguous(byte) {
                    return Err(PathError::new(match byte {
                        b'/' => ErrorKind::EncodedSlash,
                        b'\\' => ErrorKind::EncodedBackslash,
                        0 => ErrorKind::EncodedNul,
                        b';' => ErrorKind::EncodedSemicolon,
                        _ => ErrorKind::EncodedControl(byte),
                    }));
                }
                push_escape(&mut out, byte);
            }
            '\\' if reject => return Err(PathError::new(ErrorKind::RawBackslash)),
            '#' if reject => return Err(PathError::new(ErrorKind::RawFragment)),
            c if reject && (c == ' ' || c.is_ascii_control()) => {
                return Err(PathError::new(ErrorKind::RawControl));
            }
            // One spelling of each: `/café` is `/caf%C3%A9`, as apps read both.
            c if !c.is_ascii() || is_escaped_raw(c as u8) => {
                for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                    push_escape(&mut out, byte);
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Percent-decodes a path or query component for readers that want decoded
/// text (OPA's `parsed_path` / `parsed_query`): `%XX` becomes its byte, and
/// in a query `+` becomes a space when `plus_is_space`. Invalid UTF-8 after
/// decoding is replaced lossily (U+FFFD). Malformed escapes stay as they
/// are. Borrows `s` when there is nothing to decode.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    let needs_decoding = s.contains('%') || (plus_is_space && s.contains('+'));
    if !needs_decoding {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                out.push(hex_value(hi) * 16 + hex_value(lo));
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

/// Appends `%XX` with uppercase hex digits.
fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0F)]));
}

/// The value of an ASCII hex digit (0 for anything else; callers check).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// An ASCII hex digit in canonical (uppercase) form.
fn is_upper_hex(digit: u8) -> bool {
    matches!(digit, b'0'..=b'9' | b'A'..=b'F')
}

/// Bytes whose escape is decoded: RFC 3986 unreserved (ALPHA, DIGIT, `-`,
/// `.`, `_`, `~`) and what else a segment holds as it is (sub-delims and
/// `:`, `@`), but `;`, whose decoding would make a parameter.
fn is_decoded(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Bytes whose escape is ambiguous: `/`, `\`, `;` (nginx's `proxy_pass`
/// with a URI decodes it into a parameter), the C0 controls and DEL.
fn is_ambiguous(byte: u8) -> bool {
    matches!(byte, b'/' | b'\\' | b';' | 0x00..=0x1F | 0x7F)
}

/// Raw bytes a path does not hold as they are, but not ambiguous either:
/// non-ASCII (UTF-8) and `"<>[]^`{|}`. Their escape is their canonical
/// form, so that the raw and the escaped spelling, which apps read alike,
/// are one path.
fn is_escaped_raw(byte: u8) -> bool {
    !byte.is_ascii()
        || matches!(
            byte,
            b'"' | b'<' | b'>' | b'[' | b']' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Raw bytes that should not appear in a path: `\`, `#`, controls and
/// space.
fn is_raw_ambiguous(byte: u8) -> bool {
    matches!(byte, b'\\' | b'#' | b' ') || byte.is_ascii_control()
}

#[cfg(test)]
mod tests {
    use super::*;
    use AmbiguousPaths::{Keep, Reject};

    #[derive(Debug, Clone, Copy)]
    enum Expect {
        /// Already canonical.
        Same,
        /// Rewritten to this.
        To(&'static str),
        /// Refused; the message contains this.
        Fails(&'static str),
    }
    use Expect::{Fails, Same, To};

    const CASES: &[(&str, AmbiguousPaths, Expect)] = &[
        // Already canonical.
        ("/public/x", Reject, Same),
        ("/", Reject, Same),
        ("/a/b/?q=%2F..//", Reject, Same),
        ("/a?b=../c", Reject, Same),
        // One spelling of each character: the raw and the escaped, which
        // apps read alike, are one path.
        ("/caf\u{e9}", Reject, To("/caf%C3%A9")),
        ("/caf\u{e9}", Keep, To("/caf%C3%A9")),
        (
            "/a\"b<c>[d]^e`{f|g}",
            Reject,
            To("/a%22b%3Cc%3E%5Bd%5D%5Ee%60%7Bf%7Cg%7D"),
        ),
        ("/a%22b%5B", Reject, Same),
        ("/a/", Reject, Same),
        ("/a;b=c/D", Keep, Same),
        ("/a%20b", Reject, Same),
        ("/a%2Fb", Keep, Same),
        ("/a\\b", Keep, Same),
        ("/...", Reject, Same),
        ("/.a/..b", Reject, Same),
        ("/?", Reject, Same),
        // Dot segments: refused, or resolved when kept.
        ("/public/../secret", Reject, Fails("'.' or '..' segment")),
        (
            "/public/%2e%2e/secret",
            Reject,
            Fails("'.' or '..' segment"),
        ),
        (
            "/public/%2E%2e/secret",
            Reject,
            Fails("'.' or '..' segment"),
        ),
        ("/public/.%2e/secret", Reject, Fails("'.' or '..' segment")),
        ("/public/./x", Reject, Fails("'.' or '..' segment")),
        ("/public/%2E/x", Reject, Fails("'.' or '..' segment")),
        ("/a/.", Reject, Fails("'.' or '..' segment")),
        ("/a//../b", Reject, Fails("'.' or '..' segment")),
        ("/public/../secret", Keep, To("/secret")),
        ("/public/%2e%2e/secret", Keep, To("/secret")),
        ("/public/./x", Keep, To("/public/x")),
        ("/a/b/..", Keep, To("/a/")),
        ("/a/.", Keep, To("/a/")),
        ("/a/..", Keep, To("/")),
        ("/.", Keep, To("/")),
        ("/a/b/../../c", Keep, To("/c")),
        ("/a//../b", Keep, To("/b")),
        ("/a//b/./c", Keep, To("/a/b/c")),
        ("/a/../b//c", Keep, To("/b/c")),
        ("/a//b//c", Reject, To("/a/b/c")),
        // `;` parameters: Java servers drop them, others keep them.
        ("/public/..;/admin", Reject, Fails("';' parameters")),
        ("/public/%2e%2e;x/admin", Reject, Fails("';' parameters")),
        ("/public/.;/x", Reject, Fails("';' parameters")),
        ("/public/;/../admin", Reject, Fails("';' parameters")),
        ("/admin;x/users", Reject, Fails("';' parameters")),
        ("/a;jsessionid=1/b", Reject, Fails("';' parameters")),
        ("/a/..b;c", Reject, Fails("';' parameters")),
        ("/public/..;/admin", Keep, Same),
        ("/a;jsessionid=1/b", Keep, Same),
        ("/a/..b;c", Keep, Same),
        // Encoded, it is one once a proxy decodes it (nginx's proxy_pass
        // with a URI forwards its decoded path): refused too; not in the
        // query.
        ("/a%3Bb/c?x=;", Reject, Fails("encoded ';'")),
        ("/admin%3bx/users", Reject, Fails("encoded ';'")),
        ("/a%3Bb/c?x=;", Keep, Same),
        ("/a/b?x=%3B;", Reject, Same),
        // A fragment never reaches a server: a raw `#` is a smuggled one.
        ("/admin#/../public/x", Reject, Fails("raw '#'")),
        ("/admin%23x", Reject, Same),
        ("/admin#x", Keep, Same),
        ("/..", Reject, Fails("'.' or '..' segment")),
        ("/..", Keep, To("/")),
        ("/a/../../b", Keep, To("/b")),
        ("/../a?x=..", Keep, To("/a?x=..")),
        // Slashes.
        ("/public///x", Reject, To("/public/x")),
        ("//public///x", Reject, Fails("starts with '//'")),
        ("//public///x", Keep, To("/public/x")),
        ("/a//", Reject, To("/a/")),
        ("//", Reject, Fails("starts with '//'")),
        ("//", Keep, To("/")),
        ("//?q", Keep, To("/?q")),
        ("/%2F/evil", Reject, Fails("encoded '/'")),
        // Escapes.
        ("/public/%78", Reject, To("/public/x")),
        ("/%7Euser", Reject, To("/~user")),
        ("/%41%2d%5f%2E", Reject, To("/A-_.")),
        ("/a/%40x", Reject, To("/a/@x")),
        (
            "/%21%24%26%27%28%29%2a%2b%2c%3d%3a%40",
            Reject,
            To("/!$&'()*+,=:@"),
        ),
        ("/a%3F%23%25", Reject, Same),
        ("/caf%c3%a9", Reject, To("/caf%C3%A9")),
        ("/a%3bb?q=%3b", Keep, To("/a%3Bb?q=%3b")),
        ("/%zz", Reject, Fails("malformed percent-encoding")),
        ("/%", Reject, Fails("malformed percent-encoding")),
        ("/%4", Reject, Fails("malformed percent-encoding")),
        ("/%4?1", Reject, Fails("malformed percent-encoding")),
        ("/%+1", Reject, Fails("malformed percent-encoding")),
        ("/\u{e9}%", Reject, Fails("malformed percent-encoding")),
        ("/%\u{e9}", Keep, Fails("malformed percent-encoding")),
        ("/a?%", Reject, Same),
        // Ambiguous constructs.
        ("/a%2fb", Reject, Fails("encoded '/' (%2F)")),
        ("/a%2Fb", Reject, Fails("encoded '/' (%2F)")),
        ("/a%2fb", Keep, To("/a%2Fb")),
        ("/public/..%2fsecret", Reject, Fails("encoded '/' (%2F)")),
        ("/public/..%2fsecret", Keep, To("/public/..%2Fsecret")),
        ("/a\\b", Reject, Fails("raw '\\'")),
        ("/a%5cb", Reject, Fails("encoded '\\' (%5C)")),
        ("/a%5cb", Keep, To("/a%5Cb")),
        ("/a%00b", Reject, Fails("encoded NUL (%00)")),
        ("/a%0a", Reject, Fails("encoded control character (%0A)")),
        ("/a%7f", Reject, Fails("encoded control character (%7F)")),
        ("/a%0a", Keep, To("/a%0A")),
        ("/a b", Reject, Fails("raw control character or space")),
        ("/a\tb", Reject, Fails("raw control character or space")),
        ("/a b", Keep, Same),
        // Not a path.
        ("relative", Reject, Fails("not absolute")),
        ("*", Reject, Fails("not absolute")),
        ("example.com:443", Reject, Fails("not absolute")),
        ("", Reject, Fails("empty")),
        ("?q=1", Reject, Fails("empty")),
    ];

    #[test]
    fn canonicalize_table() {
        for &(input, mode, expect) in CASES {
            let got = canonicalize(input, mode);
            match expect {
                Same => assert_eq!(got, Ok(None), "{input:?} {mode:?}"),
                To(want) => assert_eq!(got, Ok(Some(want.to_owned())), "{input:?} {mode:?}"),
                Fails(text) => {
                    let err = got.expect_err(input);
                    let message = err.to_string();
                    assert!(message.contains(text), "{input:?}: {message}");
                }
            }
        }
    }

    #[test]
    fn canonical_results_are_idempotent() {
        for &(input, mode, expect) in CASES {
            let canonical = match expect {
                Same => input,
                To(want) => want,
                Fails(_) => continue,
            };
            assert_eq!(canonicalize(canonical, mode), Ok(None), "{input:?}");
        }
    }

    #[test]
    fn error_text_does_not_echo_the_path() {
        let err = canonicalize("/token-s3cr3t/%2f", Reject).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
        let err: Box<dyn std::error::Error> = Box::new(err);
        assert_eq!(err.to_string(), "the path has an encoded '/' (%2F)");
    }

    #[test]
    fn long_inputs() {
        let deep = "/a".repeat(100_000);
        assert_eq!(canonicalize(&deep, Reject), Ok(None));
        let climbing = format!("{}/x", "/..".repeat(100_000));
        assert_eq!(canonicalize(&climbing, Keep), Ok(Some("/x".to_owned())));
        assert!(canonicalize(&climbing, Reject).is_err());
        let slashes = "/".repeat(100_000);
        assert_eq!(canonicalize(&slashes, Keep), Ok(Some("/".to_owned())));
        assert!(canonicalize(&slashes, Reject).is_err());
    }

    /// Every string of length ≤ 4 over a small alphabet, in both modes.
    #[test]
    fn brute_force_small_inputs() {
        const ALPHABET: [char; 14] = [
            '/', '.', '%', '2', 'e', 'F', 'a', '?', ';', '#', '3', 'B', '\u{e9}', '|',
        ];
        let mut inputs = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|prefix| ALPHABET.iter().map(move |c| format!("{prefix}{c}")))
                .collect();
            inputs.extend(last.iter().cloned());
        }
        assert_eq!(
            inputs.len(),
            1 + 14 + 14usize.pow(2) + 14usize.pow(3) + 14usize.pow(4)
        );

        for input in &inputs {
            for mode in [Reject, Keep] {
                match canonicalize(input, mode) {
                    Ok(Some(out)) => {
                        assert_ne!(&out, input, "{input:?} {mode:?}");
                        let path = out.split('?').next().unwrap_or_default();
                        assert!(path.starts_with('/'), "{input:?} -> {out:?}");
                        assert!(!path.contains("//"), "{input:?} -> {out:?}");
                        assert!(!path.contains("/./"), "{input:?} -> {out:?}");
                        assert!(!path.contains("/../"), "{input:?} -> {out:?}");
                        assert!(!path.ends_with("/."), "{input:?} -> {out:?}");
                        assert!(!path.ends_with("/.."), "{input:?} -> {out:?}");
                        assert_eq!(canonicalize(&out, mode), Ok(None), "{input:?} -> {out:?}");
                    }
                    Ok(None) => {
                        // The allocation-free check agrees with the rewrite.
                        let path = input.split('?').next().unwrap_or_default();
                        let rest = path.strip_prefix('/').expect("absolute");
                        assert_eq!(rewrite(rest, mode).as_deref(), Ok(path), "{input:?}");
                    }
                    Err(_) => {}
                }
            }
        }
    }

    #[test]
    fn percent_decode_cases() {
        let cases: &[(&str, bool, &str)] = &[
            ("a%20b", false, "a b"),
            ("a+b", true, "a b"),
            ("a+b", false, "a+b"),
            ("%zz", false, "%zz"),
            ("%", true, "%"),
            ("%4", true, "%4"),
            ("%C3%A9", false, "\u{e9}"),
            ("%c3%a9", false, "\u{e9}"),
            ("%FF", false, "\u{FFFD}"),
            ("%2F%3f+", true, "/? "),
            ("caf\u{e9}%21", false, "caf\u{e9}!"),
        ];
        for &(input, plus_is_space, want) in cases {
            assert_eq!(percent_decode(input, plus_is_space), want, "{input:?}");
        }
        assert!(matches!(
            percent_decode("plain+text", false),
            Cow::Borrowed(_)
        ));
    }
}
