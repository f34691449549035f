//! One test per validation rule, all through the same path the agent uses: config TOML + fetched
//! payloads → decode → validate.

use super::*;

use crate::testing::{self, valid_shared as shared, EXAMPLE_CONFIG as CONFIG};

fn run(
    config_text: &str,
    shared: serde_json::Map<String, serde_json::Value>,
) -> Result<TfeConfig, Vec<Problem>> {
    testing::tfe_config(config_text, shared, vec![])
}

fn problems(config_text: &str, shared: serde_json::Map<String, serde_json::Value>) -> Vec<Problem> {
    run(config_text, shared).expect_err("expected validation problems")
}

fn with_setting(line: &str) -> String {
    CONFIG.replace("[install]", &format!("{line}\n\n[install]"))
}

fn without_setting(key: &str) -> String {
    CONFIG
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} =")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn shared_with(key: &str, value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let mut s = shared();
    s.insert(key.to_string(), value);
    s
}

fn shared_without(key: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut s = shared();
    s.remove(key);
    s
}

/// The problem about `key`, which must be the only one.
fn only(problems: Vec<Problem>, key: &str) -> Problem {
    assert_eq!(
        problems.len(),
        1,
        "expected exactly one problem, got {problems:#?}"
    );
    assert_eq!(problems[0].key, key, "{problems:#?}");
    problems.into_iter().next().unwrap()
}

#[test]
fn a_complete_node_validates() {
    let plan = run(CONFIG, shared()).expect("valid");
    assert_eq!(plan.release_sequence, 504);
    assert_eq!(
        plan.settings["enable_active_active"],
        SettingValue::Plain("1".into())
    );
    assert_eq!(
        plan.settings["production_type"],
        SettingValue::Plain("external".into())
    );
    assert!(plan.settings["enc_password"].is_secret());
    assert!(!plan.settings["hostname"].is_secret());
    assert_eq!(plan.tls_bootstrap_hostname.expose(), "tfe.example.com");
    assert!(plan.license.is_some());
}

#[test]
fn toml_integers_and_booleans_become_strings() {
    let text = CONFIG
        .replace("redis_port = \"6379\"", "redis_port = 6379")
        .replace("redis_use_tls = \"1\"", "redis_use_tls = true")
        .replace(
            "aws_instance_profile = \"1\"",
            "aws_instance_profile = true\nforce_tls = false",
        );
    let plan = run(&text, shared()).unwrap();
    assert_eq!(plan.settings["redis_port"].expose(), "6379");
    assert_eq!(plan.settings["redis_use_tls"].expose(), "1");
    assert_eq!(plan.settings["force_tls"].expose(), "0");
}

#[test]
fn required_keys_are_named_with_where_they_may_come_from() {
    let p = only(
        problems(CONFIG, shared_without("enc_password")),
        "enc_password",
    );
    assert_eq!(
        p.origin,
        Origin::Missing {
            shared_secret: "tfe/shared".into()
        }
    );
    assert!(p.to_string().contains("tfe/shared"), "{p}");
    let p = only(problems(&without_setting("hostname"), shared()), "hostname");
    assert!(p.message.contains("required"));
    for key in [
        "pg_netloc",
        "pg_dbname",
        "pg_user",
        "placement",
        "redis_host",
        "redis_port",
    ] {
        let ps = problems(&without_setting(key), shared());
        assert!(ps.iter().any(|p| p.key == key), "{key}: {ps:#?}");
    }
    only(
        problems(CONFIG, shared_without("pg_password")),
        "pg_password",
    );
}

#[test]
fn empty_required_value_is_refused() {
    let p = only(
        problems(CONFIG, shared_with("enc_password", "".into())),
        "enc_password",
    );
    assert_eq!(p.origin, Origin::secret("tfe/shared"));
}

#[test]
fn every_secret_value_must_be_a_string() {
    let p = only(
        problems(CONFIG, shared_with("capacity_concurrency", 10.into())),
        "capacity_concurrency",
    );
    assert_eq!(p.origin, Origin::secret("tfe/shared"));
    assert!(p.message.contains("JSON string"), "{p}");
    let p = only(
        problems(&with_setting("capacity_memory = 1.5"), shared()),
        "capacity_memory",
    );
    assert_eq!(p.origin, Origin::config("settings.capacity_memory"));
}

#[test]
fn flags_must_be_zero_or_one() {
    let p = only(
        problems(
            &CONFIG.replace("redis_use_tls = \"1\"", "redis_use_tls = \"yes\""),
            shared(),
        ),
        "redis_use_tls",
    );
    assert!(p.message.contains("\"0\" or \"1\""));
    only(
        problems(CONFIG, shared_with("force_tls", "true".into())),
        "force_tls",
    );
}

#[test]
fn hex_keys_must_be_hex() {
    for key in [
        "internal_api_token",
        "registry_session_encryption_key",
        "registry_session_secret_key",
    ] {
        let p = only(problems(CONFIG, shared_with(key, "not-hex!".into())), key);
        assert!(p.message.contains("hex"));
    }
    // The other shared tokens have no format requirement.
    run(CONFIG, shared_with("cookie_hash", "anything at all".into())).unwrap();
}

#[test]
fn release_sequence_must_be_a_positive_integer() {
    for bad in ["0", "-1", "\"504\"", "5.04"] {
        let text = CONFIG.replace(
            "release_sequence = 504",
            &format!("release_sequence = {bad}"),
        );
        let p = only(problems(&text, shared()), "");
        assert_eq!(
            p.origin,
            Origin::config("replicated.release_sequence"),
            "{bad}"
        );
    }
}

#[test]
fn redis_port_must_be_a_port() {
    for bad in ["0", "65536", "63x", "-1", "", "06379"] {
        let text = CONFIG.replace("redis_port = \"6379\"", &format!("redis_port = \"{bad}\""));
        let ps = problems(&text, shared());
        assert!(ps.iter().any(|p| p.key == "redis_port"), "{bad}: {ps:#?}");
    }
    run(&CONFIG.replace("\"6379\"", "\"65535\""), shared()).unwrap();
}

#[test]
fn password_auth_needs_redis_pass() {
    let p = only(problems(CONFIG, shared_without("redis_pass")), "redis_pass");
    assert!(p.message.contains("redis_use_password_auth"));
    let text = CONFIG.replace(
        "redis_use_password_auth = \"1\"",
        "redis_use_password_auth = \"0\"",
    );
    run(&text, shared_without("redis_pass")).unwrap();
}

#[test]
fn placement_s3_needs_bucket_and_region() {
    only(
        problems(&without_setting("s3_bucket"), shared()),
        "s3_bucket",
    );
    only(
        problems(&without_setting("s3_region"), shared()),
        "s3_region",
    );
    let ps = problems(&without_setting("aws_instance_profile"), shared());
    let keys: Vec<_> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["aws_access_key_id", "aws_secret_access_key"]);
    only(
        problems(&CONFIG.replace("placement_s3", "placement_ftp"), shared()),
        "placement",
    );
    only(
        problems(&with_setting("s3_sse = \"AES256\""), shared()),
        "s3_sse",
    );
}

#[test]
fn pg_netloc_must_be_host_port() {
    for bad in [
        "db.internal",
        "db.internal:",
        ":5432",
        "db internal:5432",
        "db.internal:99999",
        "postgres://db:5432",
    ] {
        let text = CONFIG.replace("db.internal:5432", bad);
        let p = only(problems(&text, shared()), "pg_netloc");
        assert_eq!(p.origin, Origin::config("settings.pg_netloc"), "{bad}");
    }
    run(
        &CONFIG.replace("db.internal:5432", "[fd00::5]:5432"),
        shared(),
    )
    .unwrap();
    run(
        &CONFIG.replace("db.internal:5432", "10.0.0.5:6432"),
        shared(),
    )
    .unwrap();
}

#[test]
fn the_same_key_from_two_sources_is_an_error() {
    let p = only(
        problems(CONFIG, shared_with("hostname", "other.example.com".into())),
        "hostname",
    );
    assert_eq!(p.origin, Origin::secret("tfe/shared"));
    assert!(p.message.contains("settings.hostname"), "{p}");
}

#[test]
fn active_active_and_production_type_are_fixed() {
    let p = only(
        problems(&with_setting("enable_active_active = \"0\""), shared()),
        "enable_active_active",
    );
    assert!(p.message.contains("\"1\""));
    run(&with_setting("enable_active_active = \"1\""), shared()).unwrap();
    only(
        problems(
            &CONFIG.replace(
                "production_type = \"external\"",
                "production_type = \"disk\"",
            ),
            shared(),
        ),
        "production_type",
    );
    let plan = run(&without_setting("production_type"), shared()).unwrap();
    assert_eq!(plan.settings["production_type"].expose(), "external");
}

#[test]
fn setting_names_and_hostnames_are_checked() {
    only(
        problems(&with_setting("Capacity_Memory = \"512\""), shared()),
        "Capacity_Memory",
    );
    only(
        problems(
            &CONFIG.replace("\"tfe.example.com\"", "\"https://tfe.example.com\""),
            shared(),
        ),
        "hostname",
    );
}

#[test]
fn tls_bootstrap_rules() {
    let text = CONFIG.replace("\"self-signed\"", "\"server-path\"");
    let p = only(problems(&text, shared()), "");
    assert_eq!(p.origin, Origin::config("replicated.tls_bootstrap_type"));
    let text = CONFIG.replace("\"self-signed\"", "\"letsencrypt\"");
    only(problems(&text, shared()), "");
}

#[test]
fn every_problem_is_reported_at_once_and_none_shows_a_value() {
    let mut s = shared_with("internal_api_token", "zz-SECRET-zz".into());
    s.remove("enc_password");
    s.insert("redis_use_tls".into(), "SECRET-FLAG".into());
    // agent.toml's own rules (release_sequence, …) are checked before the secrets are fetched,
    // and all at once: config/tests.rs. Here, everything that needs the secrets.
    let text = CONFIG
        .replace("\"tfe.example.com\"", "\"https://tfe.example.com\"")
        .replace("db.internal:5432", "nope");
    let ps = problems(&text, s);
    assert!(ps.len() >= 5, "{ps:#?}");
    let all = ps
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in ["zz-SECRET-zz", "SECRET-FLAG", "pg-secret", "redis-secret"] {
        assert!(!all.contains(secret), "a value leaked into: {all}");
    }
}

#[test]
fn a_required_setting_of_the_wrong_type_is_one_problem_not_also_missing() {
    let p = problems(
        CONFIG,
        shared_with("enc_password", serde_json::json!(12345)),
    );
    let about: Vec<_> = p.iter().filter(|p| p.key == "enc_password").collect();
    assert_eq!(about.len(), 1, "{p:?}");
    assert!(about[0].message.contains("must be a JSON string"), "{p:?}");
}
