//! Property tests of the parsers that read untrusted text: the shared secret's JSON (through
//! decoding and validation into the node's settings), `replicatedctl system status` and
//! `app status`, `replicated admin health-check`, and agent.toml. For each: arbitrary input never
//! panics, valid generated input is read back with the right values, and — for the secrets —
//! no output ever shows a secret value.
//!
//! This is the bounded fuzz run of the test command (256 cases per property by default, a few
//! seconds). Longer: `PROPTEST_CASES=20000 cargo test --release --test fuzz_parsers`. The coverage-
//! guided run (AFL) of the same checks lives in `fuzz/` (see fuzz/README.md); the checks themselves
//! are in `tests/parser_oracle/`, shared by both.

mod parser_oracle;

use base64::Engine;
use parser_oracle as oracle;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tfe_node_agent::adapters::tfe::parse;
use tfe_node_agent::config::FailureResult;
use tfe_node_agent::ports::SecretPayload;
use tfe_node_agent::sys::secret::SecretBytes;
use tfe_node_agent::tfe_files::{secret_bundle as secrets, validate};

/// `PROPTEST_CASES` (default 256) sets the cases per property. Failures are not persisted to the
/// source tree: a failure found here becomes a named regression test below.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

// ------------------------------------------------------------------ strategies

/// Any JSON value, nested up to 3 levels.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Lines the tools may print before their JSON: warnings, and the stray config error line, whose
/// Go type names can hold braces (`map[string]interface {}`). No line starts with the JSON's opener.
fn noise_before(open: char) -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("Error parsing config file: json: cannot unmarshal string into Go struct field Params.ReleaseSequence of type int".to_string()),
        Just("Error parsing config file: json: cannot unmarshal array into Go value of type map[string]interface {}".to_string()),
        "[^\n]{0,80}",
    ];
    prop::collection::vec(line, 0..3)
        .prop_filter("no line starts with the JSON's opener", move |lines| {
            lines.iter().all(|l| !l.trim_start().starts_with(open))
        })
        .prop_map(|lines| lines.iter().map(|l| format!("{l}\n")).collect())
}

/// A DNS name the validator accepts.
fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4).prop_map(|l| l.join("."))
}

/// ptfe settings the validator has rules for; the leak tests aim values at them.
const KNOWN_KEYS: &[&str] = &[
    "hostname",
    "enc_password",
    "pg_netloc",
    "pg_dbname",
    "pg_user",
    "pg_password",
    "placement",
    "redis_host",
    "redis_port",
    "redis_pass",
    "redis_use_password_auth",
    "aws_instance_profile",
    "aws_access_key_id",
    "aws_secret_access_key",
    "s3_bucket",
    "s3_region",
    "s3_sse",
    "force_tls",
    "internal_api_token",
    "registry_session_encryption_key",
    "gcs_credentials",
    "azure_account_name",
    "enable_active_active",
    "production_type",
    "ca_certs",
];

fn setting_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_string),
        2 => "[a-z][a-z0-9_]{0,15}",
        1 => any::<String>(),
    ]
}

/// Values aimed at every rule, valid and almost valid: any text, near-hex, hosts and host:port,
/// URLs, placements, ports, flags, `aws:kms`, PEM-ish text.
fn secret_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "[0-9a-f]{0,40}[g-zG-Z_ -]{0,2}[0-9a-fA-F]{0,12}",
        "[a-zA-Z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}(:[0-9]{1,6})?",
        "\\[[0-9a-f:]{2,20}\\]:[0-9]{1,6}",
        "(https?://)?[a-z0-9.-]{1,30}(/[ -~]{0,10})?",
        "placement_[a-z0-9]{0,12}",
        "[0-9+-]{0,7}",
        "[01]|yes|no|true|false|[ -~]{1,3}",
        "aws:kms[ -~]{0,10}",
        "-----BEGIN [ -~]{0,30}",
    ]
}

/// A shared secret's JSON: mostly setting name -> string, sometimes another JSON type (whose
/// strings are secret too), sometimes not an object at all.
fn shared_secret_json() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        8 => secret_value().prop_map(Value::String),
        1 => prop::collection::vec(secret_value().prop_map(Value::String), 0..3).prop_map(Value::Array),
        1 => prop::collection::btree_map(secret_value(), secret_value().prop_map(Value::String), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => arb_json(),
    ];
    prop_oneof![
        9 => prop::collection::btree_map(setting_name(), value, 0..14)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => arb_json(),
    ]
}

/// A secret other than the shared one: text (any, base64 of anything, PEM-looking) or bytes.
fn other_payload() -> impl Strategy<Value = SecretPayload> {
    prop_oneof![
        secret_value().prop_map(|s| oracle::text_payload(&s)),
        any::<Vec<u8>>().prop_map(|b| {
            oracle::text_payload(&base64::engine::general_purpose::STANDARD.encode(b))
        }),
        "[ -~]{8,40}".prop_map(|s| oracle::text_payload(&format!(
            "-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----\n"
        ))),
        any::<Vec<u8>>().prop_map(|b| SecretPayload::Binary(SecretBytes::new(b))),
    ]
}

/// Every secret of [`oracle::config_with_every_secret`], the shared one as the given JSON.
fn payloads(
    shared: &Value,
    others: [SecretPayload; 5],
    missing: Option<usize>,
) -> BTreeMap<String, SecretPayload> {
    let ids = [
        oracle::LICENSE_ID,
        oracle::CONSOLE_ID,
        oracle::TLS_CERT_ID,
        oracle::TLS_KEY_ID,
        oracle::CA_ID,
    ];
    let mut out: BTreeMap<String, SecretPayload> =
        ids.iter().map(|id| id.to_string()).zip(others).collect();
    out.insert(
        oracle::SHARED_ID.to_string(),
        oracle::text_payload(&shared.to_string()),
    );
    if let Some(i) = missing {
        out.remove(ids[i % ids.len()]);
    }
    out
}

// ------------------------------------------------------------------ replicatedctl system status

proptest! {
    #![proptest_config(config())]

    #[test]
    fn system_status_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        oracle::system_status(&bytes);
    }

    #[test]
    fn system_status_never_panics_on_arbitrary_json(noise in noise_before('{'), value in arb_json()) {
        oracle::system_status(format!("{noise}{value}").as_bytes());
    }

    #[test]
    fn system_status_reads_back_every_subsystem_and_its_status(
        noise in noise_before('{'),
        statuses in prop::collection::btree_map(any::<String>(), prop_oneof!["ready", "initializing", any::<String>()], 0..8),
    ) {
        let text = format!("{noise}{}\n", serde_json::to_string_pretty(&statuses).unwrap());
        let status = parse::system_status(&text).expect("a JSON object of strings parses");
        prop_assert_eq!(&status.statuses, &statuses);
        prop_assert_eq!(status.all_ready(), !statuses.is_empty() && statuses.values().all(|s| s == "ready"));
    }
}

// ------------------------------------------------------------------ replicatedctl app status

/// One app as `replicatedctl app status` prints it, with the fields the agent does not read.
fn app_json(state: &str, desired: &str, transitioning: bool, error: Option<&str>) -> Value {
    let mut app = json!({
        "AppID": "218b78fa2bd6f0044c6a1010a51d5852",
        "Sequence": 504,
        "PatchSequence": 0,
        "State": state,
        "DesiredState": desired,
        "IsCancellable": false,
        "IsTransitioning": transitioning,
        "LastModifiedAt": "2021-01-07T21:15:11.650385151Z"
    });
    if let Some(e) = error {
        app["Error"] = json!(e);
    }
    app
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn app_status_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        oracle::app_status(&bytes);
    }

    #[test]
    fn app_status_never_panics_on_arbitrary_json(noise in noise_before('['), value in arb_json()) {
        oracle::app_status(format!("{noise}[{value}]").as_bytes());
        oracle::app_status(format!("{noise}{value}").as_bytes());
    }

    #[test]
    fn app_status_reads_back_the_first_apps_state(
        noise in noise_before('['),
        state in prop_oneof!["started", "starting", "stopped", "stopping", any::<String>()],
        desired in prop_oneof!["started", "stopped", any::<String>()],
        transitioning in any::<bool>(),
        error in proptest::option::of(any::<String>()),
        more_apps in 0usize..3,
    ) {
        let mut apps = vec![app_json(&state, &desired, transitioning, error.as_deref())];
        apps.extend((0..more_apps).map(|_| app_json("stopped", "stopped", false, None)));
        let text = format!("{noise}{}\n", serde_json::to_string_pretty(&apps).unwrap());
        let app = parse::app_status(&text).expect("a well-formed app status parses");
        prop_assert_eq!(&app.state, &state);
        prop_assert_eq!(&app.desired_state, &desired);
        prop_assert_eq!(app.is_transitioning, transitioning);
        prop_assert_eq!(app.is_started(), state == "started" && desired == "started" && !transitioning);
        prop_assert_eq!(app.error, error.unwrap_or_default());
    }
}

// ------------------------------------------------------------------ replicated admin health-check

/// A check's name as the tool prints it: words, never ending in a dot.
fn check_name() -> impl Strategy<Value = String> {
    "[A-Z][A-Za-z0-9]{0,12}( [A-Za-z0-9]{1,12}){0,3}"
}

/// The failure text after `|- ✗ ERROR: `: any printable line, "PASS" or "PASSWORD" included.
fn error_reason() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,60}",
        "[ -~]{0,20}(PASS|PASSWORD|BYPASS)[ -~]{0,20}",
    ]
}

/// Lines of health-check output, shuffled from its own vocabulary and from anything at all.
fn health_check_lines() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        check_name().prop_map(|n| format!("checking: {n}...")),
        "[ -~]{0,40}".prop_map(|d| format!("|  {d}")),
        Just("|- ✓ PASS".to_string()),
        error_reason().prop_map(|r| format!("|- ✗ ERROR: {r}")),
        Just(String::new()),
        Just("  All checks passed.".to_string()),
        "[0-9-]{1,4}".prop_map(|n| format!("{n} checks failed.")),
        Just("1 check failed.".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn health_check_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        oracle::health_check(&bytes);
    }

    #[test]
    fn health_check_never_panics_on_lines_of_its_own_vocabulary(text in health_check_lines()) {
        oracle::health_check(text.as_bytes());
    }

    #[test]
    fn health_check_reads_back_which_checks_failed(
        noise in prop_oneof![Just(String::new()), Just("Error parsing config file: json: cannot unmarshal string\n".to_string())],
        checks in prop::collection::vec((check_name(), "[ -~]{0,40}", proptest::option::of(error_reason())), 0..8),
    ) {
        let mut text = noise;
        for (name, description, error) in &checks {
            let verdict = match error {
                None => "|- ✓ PASS".to_string(),
                Some(reason) => format!("|- ✗ ERROR: {reason}"),
            };
            text.push_str(&format!("checking: {name}...\n|  {description}\n{verdict}\n\n"));
        }
        let failed: Vec<String> = checks
            .iter()
            .filter(|(_, _, error)| error.is_some())
            .map(|(name, _, _)| name.clone())
            .collect();
        if failed.is_empty() {
            text.push_str("  All checks passed.\n");
        } else {
            text.push_str(&format!("{} checks failed.\n", failed.len()));
        }
        let report = parse::health_check(&text).expect("output with a summary line parses");
        prop_assert_eq!(report.passed, failed.is_empty());
        prop_assert_eq!(report.failed_checks, failed);
    }
}

// ------------------------------------------------------------------ agent.toml

/// The example config with random lines deleted, repeated, cut short or replaced, and random
/// `key = value` lines inserted: close enough to TOML that the parser gets past the syntax.
fn mutated_config() -> impl Strategy<Value = String> {
    let lines: Vec<String> = oracle::EXAMPLE_CONFIG.lines().map(str::to_string).collect();
    let n = lines.len();
    let edit = prop_oneof![
        (0..n).prop_map(|i| (i, 0u8, String::new())),
        (0..n).prop_map(|i| (i, 1u8, String::new())),
        (0..n, any::<String>()).prop_map(|(i, s)| (i, 2u8, s)),
        (
            0..n,
            "[a-z_]{1,12}",
            prop_oneof![
                "\"[ -~]{0,12}\"",
                "-?[0-9]{1,20}",
                "true|false",
                "\\[\\]",
                "\\{\\}",
                "[0-9]{1,4}(ms|s|m|h|d|y|x)?"
            ]
        )
            .prop_map(|(i, k, v)| (i, 3u8, format!("{k} = {v}"))),
        (0..n).prop_map(|i| (i, 4u8, String::new())),
    ];
    prop::collection::vec(edit, 0..6).prop_map(move |edits| {
        let mut lines = lines.clone();
        for (i, op, text) in edits {
            let i = i % lines.len().max(1);
            match op {
                0 if !lines.is_empty() => drop(lines.remove(i)),
                1 if !lines.is_empty() => lines.insert(i, lines[i].clone()),
                2 if !lines.is_empty() => lines[i] = text,
                3 => lines.insert(i.min(lines.len()), text),
                4 if !lines.is_empty() => {
                    let cut = lines[i].len() / 2;
                    lines[i] = lines[i].chars().take(cut).collect();
                }
                _ => {}
            }
        }
        lines.join("\n")
    })
}

/// Values for a generated agent.toml, and what the loader must read back.
#[derive(Debug, Clone)]
struct ConfigValues {
    shared: String,
    license: Option<String>,
    region: Option<String>,
    attempt_timeout: Duration,
    release_sequence: i64,
    tls_bootstrap_type: &'static str,
    bypass_preflight_checks: bool,
    log_level: Option<&'static str>,
    script: String,
    install_timeout: Duration,
    extra_args: Vec<String>,
    readiness_timeout: Duration,
    launch_hook: Option<String>,
    on_failure: FailureResult,
    discovery_timeout: Duration,
    drain_timeout: Duration,
    stop_app: bool,
    state_dir: String,
    settings: BTreeMap<String, toml::Value>,
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![1u64..=100_000_000, 1u64..=600].prop_map(Duration::from_secs)
}

fn config_values() -> impl Strategy<Value = ConfigValues> {
    let text = "[^\u{0}]{0,24}";
    let setting = prop_oneof![
        any::<String>().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    (
        (
            text,
            proptest::option::of(text),
            proptest::option::of("[a-z]{2}-[a-z]{4,9}-[1-9]"),
            1i64..=i64::MAX,
            prop::sample::select(vec!["self-signed", "server-path", "key-cert"]),
            any::<bool>(),
            proptest::option::of(prop::sample::select(vec!["debug", "info", "error"])),
            "/[^\u{0}]{1,30}",
        ),
        (
            duration(),
            prop::collection::vec(any::<String>(), 0..3),
            duration(),
            proptest::option::of(text),
            prop_oneof![Just(FailureResult::Abandon), Just(FailureResult::Continue)],
            duration(),
            any::<bool>(),
            "/[^\u{0}]{1,30}",
            prop::collection::btree_map(any::<String>(), setting, 0..6),
        ),
        (duration(), duration()),
    )
        .prop_map(|(a, b, c)| ConfigValues {
            shared: a.0,
            license: a.1,
            region: a.2,
            attempt_timeout: c.0,
            release_sequence: a.3,
            tls_bootstrap_type: a.4,
            bypass_preflight_checks: a.5,
            log_level: a.6,
            script: a.7,
            install_timeout: b.0,
            extra_args: b.1,
            readiness_timeout: b.2,
            launch_hook: b.3,
            on_failure: b.4,
            discovery_timeout: c.1,
            drain_timeout: b.5,
            stop_app: b.6,
            state_dir: b.7,
            settings: b.8,
        })
}

/// The values as agent.toml text, serialized by the toml crate (so any string is quoted right),
/// durations in humantime's own spelling ("1h 2m 3s").
fn config_text(v: &ConfigValues) -> String {
    let d = |d: Duration| toml::Value::String(humantime::format_duration(d).to_string());
    let s = |s: &str| toml::Value::String(s.to_string());
    let mut secrets = toml::Table::new();
    secrets.insert("shared".into(), s(&v.shared));
    if let Some(l) = &v.license {
        secrets.insert("license".into(), s(l));
    }
    let mut aws = toml::Table::new();
    if let Some(r) = &v.region {
        aws.insert("region".into(), s(r));
    }
    aws.insert("attempt_timeout".into(), d(v.attempt_timeout));
    let mut replicated = toml::Table::new();
    replicated.insert(
        "release_sequence".into(),
        toml::Value::Integer(v.release_sequence),
    );
    replicated.insert("tls_bootstrap_type".into(), s(v.tls_bootstrap_type));
    replicated.insert(
        "bypass_preflight_checks".into(),
        toml::Value::Boolean(v.bypass_preflight_checks),
    );
    if let Some(l) = v.log_level {
        replicated.insert("log_level".into(), s(l));
    }
    let mut install = toml::Table::new();
    install.insert("script".into(), s(&v.script));
    install.insert("timeout".into(), d(v.install_timeout));
    install.insert(
        "extra_args".into(),
        toml::Value::Array(v.extra_args.iter().map(|a| s(a)).collect()),
    );
    let mut readiness = toml::Table::new();
    readiness.insert("timeout".into(), d(v.readiness_timeout));
    let mut lifecycle = toml::Table::new();
    if let Some(h) = &v.launch_hook {
        lifecycle.insert("launch_hook".into(), s(h));
    }
    let on_failure = match v.on_failure {
        FailureResult::Abandon => "abandon",
        FailureResult::Continue => "continue",
    };
    lifecycle.insert("on_failure".into(), s(on_failure));
    lifecycle.insert("discovery_timeout".into(), d(v.discovery_timeout));
    let mut drain = toml::Table::new();
    drain.insert("timeout".into(), d(v.drain_timeout));
    drain.insert("stop_app".into(), toml::Value::Boolean(v.stop_app));
    let mut paths = toml::Table::new();
    paths.insert("state_dir".into(), s(&v.state_dir));
    let settings: toml::Table = v.settings.clone().into_iter().collect();
    let mut root = toml::Table::new();
    for (name, table) in [
        ("aws", aws),
        ("secrets", secrets),
        ("replicated", replicated),
        ("settings", settings),
        ("install", install),
        ("readiness", readiness),
        ("lifecycle", lifecycle),
        ("drain", drain),
        ("paths", paths),
    ] {
        root.insert(name.into(), toml::Value::Table(table));
    }
    toml::to_string(&root).expect("a table serializes")
}

/// Sections of agent.toml and a key each that an unknown key is put beside.
const SECTIONS: &[&str] = &[
    "aws",
    "secrets",
    "replicated",
    "install",
    "tools",
    "readiness",
    "lifecycle",
    "termination",
    "drain",
    "paths",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn agent_config_never_panics_on_arbitrary_text(text in any::<String>()) {
        oracle::agent_config(text.as_bytes());
    }

    #[test]
    fn agent_config_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        oracle::agent_config(&bytes);
    }

    #[test]
    fn agent_config_never_panics_on_a_mutated_example(text in mutated_config()) {
        oracle::agent_config(text.as_bytes());
    }

    #[test]
    fn agent_config_reads_back_every_generated_value(v in config_values()) {
        let text = config_text(&v);
        let c = oracle::parse_config(&text).unwrap_or_else(|e| panic!("{e}\n--- agent.toml ---\n{text}"));
        prop_assert_eq!(&c.secrets.shared, &v.shared);
        prop_assert_eq!(&c.secrets.license, &v.license);
        prop_assert_eq!(&c.aws.region, &v.region);
        prop_assert_eq!(c.aws.attempt_timeout, v.attempt_timeout);
        prop_assert_eq!(&c.replicated.release_sequence, &toml::Value::Integer(v.release_sequence));
        prop_assert_eq!(c.replicated.tls_bootstrap_type.as_str(), v.tls_bootstrap_type);
        prop_assert_eq!(c.replicated.bypass_preflight_checks, v.bypass_preflight_checks);
        prop_assert_eq!(c.replicated.log_level.as_deref(), v.log_level);
        prop_assert_eq!(c.install.script.to_str(), Some(v.script.as_str()));
        prop_assert_eq!(c.install.timeout, v.install_timeout);
        prop_assert_eq!(&c.install.extra_args, &v.extra_args);
        prop_assert_eq!(c.readiness.timeout, v.readiness_timeout);
        prop_assert_eq!(&c.lifecycle.launch_hook, &v.launch_hook);
        prop_assert_eq!(c.lifecycle.on_failure, v.on_failure);
        prop_assert_eq!(c.lifecycle.discovery_timeout, v.discovery_timeout);
        prop_assert_eq!(c.drain.timeout, v.drain_timeout);
        prop_assert_eq!(c.drain.stop_app, v.stop_app);
        prop_assert_eq!(c.paths.state_dir.to_str(), Some(v.state_dir.as_str()));
        prop_assert_eq!(&c.settings, &v.settings);
        // Defaults stay defaults when not written.
        prop_assert_eq!(c.readiness.poll_interval, Duration::from_secs(5));
        prop_assert_eq!(c.paths.file_owner.as_str(), "replicated");
    }

    #[test]
    fn an_unknown_key_in_any_section_is_named_by_its_dotted_path(
        v in config_values(),
        section in prop::sample::select(SECTIONS),
        key in "zz[a-z_]{0,10}",
    ) {
        let text = format!("{}\n[{section}]\n{key} = 1\n", config_text(&v));
        // A section written twice is a TOML error; put the key into the existing one instead.
        let text = if text.matches(&format!("[{section}]\n")).count() > 1 {
            let first = text.find(&format!("[{section}]\n")).unwrap() + section.len() + 3;
            let cut = text.rfind(&format!("\n[{section}]\n")).unwrap();
            format!("{}{key} = 1\n{}", &text[..first], &text[first..cut])
        } else {
            text
        };
        let err = oracle::parse_config(&text).expect_err("an unknown key is an error");
        let shown = err.to_string();
        prop_assert!(shown.contains(&format!("{section}.{key}")), "{}", shown);
    }
}

// ------------------------------------------------------------------ shared secret → settings

/// A valid node: each setting with its value and whether it comes from the shared secret (else
/// from agent.toml's [settings], as a TOML string, or an integer or boolean where that fits).
fn valid_node() -> impl Strategy<Value = Vec<(String, toml::Value, bool)>> {
    let text = "[^\u{0}]{1,30}";
    let s = |st: BoxedStrategy<String>| st.prop_map(toml::Value::String).boxed();
    let fixed: Vec<(&str, BoxedStrategy<toml::Value>)> = vec![
        ("hostname", s(hostname().boxed())),
        ("enc_password", s(text.boxed())),
        (
            "pg_netloc",
            (hostname(), 1u16..)
                .prop_map(|(h, p)| toml::Value::String(format!("{h}:{p}")))
                .boxed(),
        ),
        ("pg_dbname", s(text.boxed())),
        ("pg_user", s(text.boxed())),
        ("pg_password", s(text.boxed())),
        (
            "placement",
            Just(toml::Value::String("placement_s3".into())).boxed(),
        ),
        ("s3_bucket", s("[a-z0-9-]{3,30}".boxed())),
        ("s3_region", s("[a-z]{2}-[a-z]{4,9}-[1-9]".boxed())),
        (
            "aws_instance_profile",
            Just(toml::Value::String("1".into())).boxed(),
        ),
        ("redis_host", s(hostname().boxed())),
        (
            "redis_port",
            prop_oneof![
                (1u16..).prop_map(|p| toml::Value::String(p.to_string())),
                (1u16..).prop_map(|p| toml::Value::Integer(p.into())),
            ]
            .boxed(),
        ),
        (
            "redis_use_tls",
            prop_oneof![
                any::<bool>().prop_map(toml::Value::Boolean),
                prop::sample::select(vec!["0", "1"]).prop_map(|f| toml::Value::String(f.into())),
            ]
            .boxed(),
        ),
        ("internal_api_token", s("[0-9a-fA-F]{1,64}".boxed())),
        ("registry_session_secret_key", s("[0-9a-f]{32}".boxed())),
    ];
    let fixed: Vec<BoxedStrategy<(String, toml::Value, bool)>> = fixed
        .into_iter()
        .map(|(k, v)| {
            (v, any::<bool>())
                .prop_map(move |(v, from_secret)| (k.to_string(), v, from_secret))
                .boxed()
        })
        .collect();
    let extra =
        prop::collection::btree_map("x_[a-z0-9_]{0,12}", (any::<String>(), any::<bool>()), 0..5);
    (fixed, extra).prop_map(|(mut node, extra)| {
        node.extend(
            extra
                .into_iter()
                .map(|(k, (v, sec))| (k, toml::Value::String(v), sec)),
        );
        node
    })
}

/// What the validator must produce for a TOML value: strings as they are, integers in decimal,
/// booleans as "1"/"0"; values from the secret are always strings.
fn as_setting(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => (if *b { "1" } else { "0" }).to_string(),
        other => panic!("not generated: {other:?}"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_shared_secret_never_panics_on_arbitrary_text(config in 0u8..3, text in any::<String>()) {
        oracle::shared_secret(config, text.as_bytes());
    }

    #[test]
    fn the_shared_secret_never_panics_on_arbitrary_json(config in 0u8..3, value in arb_json()) {
        oracle::shared_secret(config, value.to_string().as_bytes());
    }

    #[test]
    fn a_valid_node_is_accepted_with_every_setting_from_where_it_was_set(node in valid_node()) {
        let mut config = oracle::config_without_settings();
        let mut settings = toml::Table::new();
        let mut shared = serde_json::Map::new();
        for (key, value, from_secret) in &node {
            if *from_secret {
                shared.insert(key.clone(), Value::String(as_setting(value)));
            } else {
                settings.insert(key.clone(), value.clone());
            }
        }
        let table = toml::to_string(&settings).unwrap();
        config = config.replace("[settings]\n", &format!("[settings]\n{table}\n"));
        let cfg = oracle::settings(&config).unwrap_or_else(|e| panic!("{e}\n{config}"));
        let mut fetched = oracle::valid_other_secrets();
        fetched.insert(oracle::SHARED_ID.into(), oracle::text_payload(&Value::Object(shared).to_string()));
        // A valid node is where `render --dry-run` shows files: none of them may show a secret.
        oracle::no_secret_shown(&cfg, &fetched);
        let (bundle, problems) = secrets::decode(&cfg.secrets, fetched);
        let plan = match validate::validate(&cfg, bundle, problems) {
            Ok(plan) => plan,
            Err(problems) => panic!("a valid node was refused: {problems:#?}\n--- agent.toml ---\n{config}"),
        };
        for (key, value, from_secret) in &node {
            let got = &plan.settings[key.as_str()];
            prop_assert_eq!(got.expose(), as_setting(value), "setting {}", key);
            prop_assert_eq!(got.is_secret(), *from_secret, "setting {}", key);
        }
        prop_assert_eq!(plan.settings["enable_active_active"].expose(), "1");
        prop_assert_eq!(plan.settings["production_type"].expose(), "external");
        prop_assert_eq!(plan.release_sequence, 504);
        let hostname = node.iter().find(|(k, _, _)| k == "hostname").map(|(_, v, _)| as_setting(v));
        prop_assert_eq!(Some(plan.tls_bootstrap_hostname.expose().to_string()), hostname);
        prop_assert_eq!(plan.license.map(|l| l.expose().to_vec()), Some(b"RLI\x00Qz7Lq2Wv9Xc4\x01".to_vec()));
    }

    #[test]
    fn a_license_in_base64_is_read_back_byte_for_byte(
        bytes in prop::collection::vec(any::<u8>(), 1..2048),
        wrap in 1usize..100,
    ) {
        // Base64 as a tool would print it: wrapped into lines, maybe with a final newline.
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let wrapped: Vec<String> = b64.as_bytes().chunks(wrap).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let cfg = oracle::settings(oracle::EXAMPLE_CONFIG).unwrap();
        let fetched = BTreeMap::from([
            (oracle::SHARED_ID.to_string(), oracle::text_payload("{}")),
            (oracle::LICENSE_ID.to_string(), oracle::text_payload(&(wrapped.join("\n") + "\n"))),
        ]);
        let (bundle, problems) = secrets::decode(&cfg.secrets, fetched);
        prop_assert!(problems.is_empty(), "{:?}", problems);
        prop_assert_eq!(bundle.license.map(|l| l.expose().to_vec()), Some(bytes));
    }

    // The most important property: whatever the secrets hold, nothing the agent prints about
    // them — a problem, the error it logs, a Debug dump, `render --dry-run` — shows a value.

    #[test]
    fn no_output_shows_a_value_of_an_arbitrary_shared_secret(config in 0u8..3, shared in shared_secret_json()) {
        oracle::shared_secret(config, shared.to_string().as_bytes());
    }

    #[test]
    fn no_output_shows_a_value_of_any_secret(
        shared in shared_secret_json(),
        others in [other_payload(), other_payload(), other_payload(), other_payload(), other_payload()],
        missing in proptest::option::of(0usize..5),
    ) {
        let cfg = oracle::settings(&oracle::config_with_every_secret()).unwrap();
        oracle::no_secret_shown(&cfg, &payloads(&shared, others, missing));
    }

    #[test]
    fn no_output_shows_even_one_character_of_a_secret_drawn_from_its_own_alphabet(
        config in 0u8..3,
        shared in prop::collection::btree_map(setting_name(), "[α-ωА-Я]{0,12}", 0..14),
        other in "[α-ωА-Я]{0,12}",
    ) {
        // Values too short for a substring search (a port, a flag) are checked here: drawn from
        // letters no setting name, secret id, config or message uses, so no letter of them may
        // show anywhere.
        let configs = oracle::configs();
        let cfg = oracle::settings(&configs[config as usize % configs.len()]).unwrap();
        let mut fetched = oracle::valid_other_secrets();
        fetched.insert(oracle::SHARED_ID.into(), oracle::text_payload(&json!(shared).to_string()));
        fetched.insert(oracle::CONSOLE_ID.into(), oracle::text_payload(&other));
        fetched.insert(oracle::TLS_KEY_ID.into(), oracle::text_payload(&format!("-----BEGIN PRIVATE KEY-----\n{other}\n-----END PRIVATE KEY-----\n")));
        let out = oracle::shown(&cfg, &fetched);
        let public: String = shared.keys().cloned().collect();
        let shown: Vec<char> = out.chars().filter(|c| ('α'..='ω').contains(c) || ('А'..='Я').contains(c)).filter(|c| !public.contains(*c)).collect();
        prop_assert!(shown.is_empty(), "secret letters {:?} show in:\n{}", shown, out);
    }
}

// ------------------------------------------------------------------ regressions found by the properties above

/// Found by `health_check_reads_back_which_checks_failed`: a failed check whose reason said PASS
/// (`✗ ERROR: PASSWORD authentication failed`) was counted as passed, so the readiness message
/// named no failing check. The verdict is the marker before the reason.
#[test]
fn a_failed_check_whose_reason_says_pass_is_still_named_as_failed() {
    let text = "checking: Postgres Health Check...\n|  checks the database\n|- ✗ ERROR: PASSWORD authentication failed for user tfe\n\n\
                checking: Vault Server Health Check...\n|  checks vault\n|- ✓ PASS\n\n1 checks failed.\n";
    let report = parse::health_check(text).unwrap();
    assert!(!report.passed);
    assert_eq!(
        report.failed_checks,
        vec!["Postgres Health Check".to_string()]
    );
}

/// Found by `a_valid_node_is_accepted_with_every_setting_from_where_it_was_set`: a `hostname` given
/// in the shared secret became `TlsBootstrapHostname` as plain text, so `render --dry-run` (and
/// the plan's Debug) showed it although every value from the secret is to be redacted.
#[test]
fn a_hostname_from_the_shared_secret_is_redacted_in_the_dry_run_rendering() {
    let config = oracle::EXAMPLE_CONFIG.replace("hostname = \"tfe.example.com\"\n", "");
    let cfg = oracle::settings(&config).unwrap();
    let shared = json!({
        "hostname": "tfe-Qz7secret.example.com",
        "enc_password": "767fee4e6046de48943df2decc55f3cd",
        "pg_password": "pg-secret",
        "redis_pass": "redis-secret",
    });
    let mut fetched = oracle::valid_other_secrets();
    fetched.insert(
        oracle::SHARED_ID.into(),
        oracle::text_payload(&shared.to_string()),
    );
    oracle::no_secret_shown(&cfg, &fetched);

    // The value is still written where it belongs.
    let (bundle, problems) = secrets::decode(&cfg.secrets, fetched);
    let plan = validate::validate(&cfg, bundle, problems).expect("valid");
    let conf = tfe_node_agent::tfe_files::render::replicated_conf_json(
        &plan,
        &cfg.paths,
        tfe_node_agent::tfe_files::render::Redaction::None,
    );
    let conf: Value = serde_json::from_slice(&conf).unwrap();
    assert_eq!(conf["TlsBootstrapHostname"], "tfe-Qz7secret.example.com");
}

/// Found by `system_status_reads_back_every_subsystem_and_its_status` and its app-status twin, once
/// their warning lines could hold braces: the stray `Error parsing config file: …` line is a Go
/// error, and Go type names such as `map[string]interface {}` hold both `[` and `{`. The JSON was
/// looked for from the first such character, inside the warning, and the output was refused.
#[test]
fn a_warning_whose_go_type_names_hold_brackets_is_skipped_before_the_json() {
    let warning = "Error parsing config file: json: cannot unmarshal array into Go value of type map[string]interface {}\n";
    let status = parse::system_status(&format!(
        "{warning}{{\n    \"Replicated\": \"ready\",\n    \"Retraced\": \"ready\"\n}}\n"
    ))
    .expect("system status after the warning");
    assert!(status.all_ready());
    let app = parse::app_status(&format!(
        "{warning}[\n  {{\"State\": \"started\", \"DesiredState\": \"started\", \"IsTransitioning\": false}}\n]\n"
    ))
    .expect("app status after the warning");
    assert!(app.is_started());
}

/// Every AFL seed (`fuzz/seeds/TARGET/`) and every recorded AFL finding (`fuzz/regressions/TARGET/`,
/// one file per crash, minimized) through its target's checks, so a finding stays fixed.
///
/// The first finding was the check's own: a CA bundle shares its PEM framing
/// (`-----END CERTIFICATE-----`) with the TLS certificate, which is public and shown, and the
/// shared text was taken for a leak of the bundle.
#[test]
fn every_fuzz_seed_and_recorded_finding_passes_its_targets_checks() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for kind in ["seeds", "regressions"] {
        for target in [
            "shared_secret",
            "system_status",
            "app_status",
            "health_check",
            "agent_config",
        ] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                eprintln!("{}", path.display());
                match target {
                    "shared_secret" => {
                        if let Some((&config, secret)) = bytes.split_first() {
                            oracle::shared_secret(config, secret);
                        }
                    }
                    "system_status" => oracle::system_status(&bytes),
                    "app_status" => oracle::app_status(&bytes),
                    "health_check" => oracle::health_check(&bytes),
                    _ => oracle::agent_config(&bytes),
                }
                ran += 1;
            }
        }
    }
    assert!(ran > 10, "only {ran} inputs under {}", fuzz.display());
}
