//! Config templates.

use crate::PeerError;

/// Replaces every `{{name}}` in `template` with its value from `vars`.
/// A placeholder without a value is an error, so a typo cannot start a
/// peer with a half-written config.
///
/// ```
/// let text = authchain_testkit::render("port: {{port}}", &[("port", "8080".into())]).unwrap();
/// assert_eq!(text, "port: 8080");
/// assert!(authchain_testkit::render("{{nope}}", &[]).is_err());
/// ```
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String, PeerError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| PeerError::new("template: `{{` without a closing `}}`"))?;
        let key = after[..end].trim();
        let value = vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| PeerError::new(format!("template: no value for `{{{{{key}}}}}`")))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn fills_every_placeholder() {
        let out = render(
            "a={{ a }} b={{b}} a={{a}}",
            &[("a", "1".into()), ("b", "2".into())],
        )
        .unwrap();
        assert_eq!(out, "a=1 b=2 a=1");
    }

    #[test]
    fn missing_values_and_unclosed_braces_are_errors() {
        let e = render("x {{port}}", &[]).unwrap_err();
        assert!(e.message().contains("{{port}}"), "{e}");
        assert!(render("x {{port", &[("port", "1".into())]).is_err());
    }
}
