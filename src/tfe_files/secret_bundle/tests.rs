use super::*;
use crate::config;
use crate::ports::SecretPayload;
use std::path::Path;

fn section(extra: &str) -> SecretsSection {
    let text = format!(
        "[secrets]\nshared = \"tfe/shared\"\n{extra}\n[replicated]\nrelease_sequence = 1\n[install]\nscript = \"/i.sh\"\n"
    );
    config::parse(&text, Path::new("a.toml")).unwrap().secrets
}

fn fetched(items: &[(&str, SecretPayload)]) -> BTreeMap<String, SecretPayload> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(s: &str) -> SecretPayload {
    SecretPayload::String(Secret::new(s))
}

#[test]
fn requested_lists_every_configured_id_once() {
    let s = section("license = \"tfe/license\"\nca_bundle = \"tfe/ca\"");
    let ids: Vec<_> = requested(&s).into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, ["tfe/shared", "tfe/license", "tfe/ca"]);
}

#[test]
fn license_from_binary_or_base64_string() {
    let s = section("license = \"tfe/license\"");
    let (b, p) = decode(
        &s,
        fetched(&[("tfe/shared", text("{}")), ("tfe/license", text("UkxJ\n"))]),
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(b.license.unwrap().expose(), b"RLI");
    let (_, p) = decode(
        &s,
        fetched(&[
            ("tfe/shared", text("{}")),
            ("tfe/license", text("not base64!")),
        ]),
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::secret("tfe/license"));
}

#[test]
fn shared_must_be_a_json_object_and_errors_never_quote_it() {
    let s = section("");
    let (_, p) = decode(
        &s,
        fetched(&[("tfe/shared", text("{\"enc_password\": hunter2"))]),
    );
    assert_eq!(p.len(), 1);
    assert!(!p[0].to_string().contains("hunter2"), "{}", p[0]);
    let (_, p) = decode(&s, fetched(&[("tfe/shared", text("[\"hunter2\"]"))]));
    assert!(p[0].message.contains("JSON object"));
    let (_, p) = decode(
        &s,
        fetched(&[(
            "tfe/shared",
            SecretPayload::Binary(SecretBytes::new(vec![1])),
        )]),
    );
    assert!(p[0].message.contains("SecretString"));
}

#[test]
fn pem_secrets_are_checked() {
    let s = section("tls_cert = \"c\"\ntls_key = \"k\"\nca_bundle = \"ca\"");
    let pem = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n";
    let (b, p) = decode(
        &s,
        fetched(&[
            ("tfe/shared", text("{}")),
            ("c", text(pem)),
            ("k", text("oops")),
            ("ca", text(pem)),
        ]),
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::secret("k"));
    assert!(b.tls_cert.is_some() && b.tls_key.is_none());
    assert_eq!(b.ca_bundle.unwrap().0, "ca");
}

#[test]
fn a_missing_payload_is_a_problem_naming_the_id() {
    let s = section("console_password = \"tfe/console\"");
    let (_, p) = decode(&s, fetched(&[("tfe/shared", text("{}"))]));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].origin, Origin::secret("tfe/console"));
}
