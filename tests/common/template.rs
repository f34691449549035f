//! Terraform `templatefile()` templates (the cloud-init user data, the IAM policy) as the tests
//! read and render them. Each test binary that includes it uses part of it.
#![allow(dead_code)]

use std::collections::BTreeSet;

/// Walks `text` as templatefile() reads it: `f(literal, Some(name))` for each `${name}` with the
/// literal text before it, then `f(rest, None)`. Panics (naming `template`) on `$${` (Terraform's
/// escape: the templates need none), on `%{` (a directive), on an unterminated `${` and on a
/// placeholder that is not a plain variable name.
fn scan<'a>(template: &str, text: &'a str, mut f: impl FnMut(&'a str, Option<&'a str>)) {
    assert!(
        !text.contains("$${") && !text.contains("%{"),
        "{template}: no Terraform escapes or directives expected"
    );
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("{template}: unterminated ${{ in {after:.40?}"));
        let name = &after[..end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{template}: ${{{name}}} is not a plain variable"
        );
        f(&rest[..start], Some(name));
        rest = &after[end + 1..];
    }
    f(rest, None);
}

/// The names of the `${name}` placeholders in `text`.
pub fn placeholders(template: &str, text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    scan(template, text, |_, name| {
        names.extend(name.map(str::to_owned));
    });
    names
}

/// `text` with every `${name}` replaced by `value(name)`, as templatefile() would; panics (naming
/// `template`) on a name `value` does not know, and as `scan` does.
pub fn render(template: &str, text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    scan(template, text, |literal, name| {
        out.push_str(literal);
        if let Some(name) = name {
            let v = value(name)
                .unwrap_or_else(|| panic!("{template}: unknown template variable ${{{name}}}"));
            out.push_str(&v);
        }
    });
    out
}
