//! Golden files: the exact bytes for known inputs. Regenerate with UPDATE_GOLDEN=1 after an
//! intended change, and review the diff.

use super::*;
use crate::testing::{self, text, valid_shared, EXAMPLE_CONFIG};
use std::path::Path;

fn golden(name: &str, actual: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "{} differs from the rendered bytes",
        path.display()
    );
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEkey-SECRET\n-----END PRIVATE KEY-----\n";

fn server_path_config() -> String {
    EXAMPLE_CONFIG
        .replace("\"self-signed\"", "\"server-path\"\nlog_level = \"info\"")
        .replace(
            "license = \"tfe/license\"           # optional",
            "license = \"tfe/license\"\nconsole_password = \"tfe/console\"\ntls_cert = \"tfe/tls-cert\"\ntls_key = \"tfe/tls-key\"\nca_bundle = \"tfe/ca\" #",
        )
}

fn server_path_plan() -> TfeConfig {
    testing::tfe_config(
        &server_path_config(),
        valid_shared(),
        vec![
            ("tfe/console", text("console-SECRET")),
            ("tfe/tls-cert", text(PEM_CERT)),
            ("tfe/tls-key", text(PEM_KEY)),
            ("tfe/ca", text(PEM_CERT)),
        ],
    )
    .expect("valid")
}

#[test]
fn example_node_files_match_golden() {
    let cfg = testing::parse(EXAMPLE_CONFIG);
    let plan = testing::tfe_config(EXAMPLE_CONFIG, valid_shared(), vec![]).unwrap();
    let files = render(&plan, &cfg.paths, Redaction::None);
    let names: Vec<_> = files
        .iter()
        .map(|f| (f.path.to_string_lossy().into_owned(), f.mode, f.secret))
        .collect();
    assert_eq!(
        names,
        [
            ("/etc/ptfe-license.rli".to_string(), 0o600, true),
            ("/etc/ptfe-settings.json".to_string(), 0o600, true),
            ("/etc/replicated.conf".to_string(), 0o600, true),
        ]
    );
    assert_eq!(&files[0].bytes[..], b"RLI");
    golden("example.ptfe-settings.json", &files[1].bytes);
    golden("example.replicated.conf", &files[2].bytes);
    // Same inputs, same bytes.
    let again = render(&plan, &cfg.paths, Redaction::None);
    assert_eq!(&again[2].bytes[..], &files[2].bytes[..]);
}

#[test]
fn server_path_node_files_match_golden() {
    let cfg = testing::parse(&server_path_config());
    let files = render(&server_path_plan(), &cfg.paths, Redaction::None);
    let paths: Vec<_> = files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/etc/ptfe-license.rli",
            "/etc/tfe-node-agent/tls/cert.pem",
            "/etc/tfe-node-agent/tls/key.pem",
            "/etc/ptfe-settings.json",
            "/etc/replicated.conf"
        ]
    );
    assert_eq!((files[1].mode, files[2].mode), (0o644, 0o600));
    golden("server-path.ptfe-settings.json", &files[3].bytes);
    golden("server-path.replicated.conf", &files[4].bytes);
}

#[test]
fn replicated_conf_uses_native_json_types() {
    let cfg = testing::parse(EXAMPLE_CONFIG);
    let plan = testing::tfe_config(EXAMPLE_CONFIG, valid_shared(), vec![]).unwrap();
    let conf: Value =
        serde_json::from_slice(&replicated_conf_json(&plan, &cfg.paths, Redaction::None)).unwrap();
    assert_eq!(conf["ReleaseSequence"], serde_json::json!(504));
    assert_eq!(conf["BypassPreflightChecks"], serde_json::json!(true));
    assert_eq!(conf["ImportSettingsFrom"], "/etc/ptfe-settings.json");
    assert_eq!(conf["LicenseFileLocation"], "/etc/ptfe-license.rli");
    let settings: Value = serde_json::from_slice(&settings_json(&plan, Redaction::None)).unwrap();
    for (_, v) in settings.as_object().unwrap() {
        assert!(v["value"].is_string(), "{v}");
    }
}

#[test]
fn redaction_hides_every_secret_value_and_nothing_else() {
    let cfg = testing::parse(&server_path_config());
    let plan = server_path_plan();
    let shown: Vec<u8> = render(&plan, &cfg.paths, Redaction::Secrets)
        .iter()
        .flat_map(|f| f.bytes.to_vec())
        .collect();
    let shown = String::from_utf8(shown).unwrap();
    let mut secrets: Vec<String> = valid_shared()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    secrets.extend([
        "console-SECRET".into(),
        "MIIEkey-SECRET".into(),
        "RLI".into(),
    ]);
    for s in &secrets {
        assert!(
            !shown.contains(s.as_str()),
            "secret value visible in dry-run output"
        );
    }
    assert!(shown.contains("tfe.example.com") && shown.contains(REDACTED));
    golden(
        "server-path.dry-run.replicated.conf",
        &replicated_conf_json(&plan, &cfg.paths, Redaction::Secrets),
    );
}
