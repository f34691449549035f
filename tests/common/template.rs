//! Terraform `templatefile()` rendering of the cloud-init templates, for the tests that read or
//! boot them.

/// `text` with every `${name}` replaced by `value(name)`, as Terraform's templatefile() would;
/// panics (naming `template`) on an unknown name, on `$${` (Terraform's escape: the templates need
/// none) and on `%{` (a directive).
pub fn render(template: &str, text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    assert!(
        !text.contains("$${") && !text.contains("%{"),
        "{template}: no Terraform escapes or directives expected"
    );
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("{template}: unterminated ${{ in {after:.40?}"));
        let name = &after[..end];
        let v = value(name)
            .unwrap_or_else(|| panic!("{template}: unknown template variable ${{{name}}}"));
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
