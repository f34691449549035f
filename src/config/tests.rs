use super::*;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../packaging/agent.toml.example");

fn parse_str(text: &str) -> Result<AgentConfig, ConfigError> {
    parse(text, Path::new("agent.toml"))
}

#[test]
fn the_documented_example_parses_as_written() {
    let c = parse_str(EXAMPLE).expect("example config");
    assert_eq!(c.secrets.shared, "tfe/shared");
    assert_eq!(c.secrets.license.as_deref(), Some("tfe/license"));
    assert_eq!(c.replicated.release_sequence, toml::Value::Integer(504));
    assert_eq!(c.install.timeout, Duration::from_secs(1200));
    assert_eq!(c.readiness.timeout, Duration::from_secs(1800));
    assert_eq!(c.readiness.poll_interval, Duration::from_secs(5));
    assert_eq!(c.lifecycle.launch_hook.as_deref(), Some("tfe-launch"));
    assert_eq!(c.lifecycle.on_failure, FailureResult::Abandon);
    assert_eq!(c.settings["redis_port"], toml::Value::String("6379".into()));
    assert_eq!(c.paths.state_dir, PathBuf::from("/var/lib/tfe-node-agent"));
    assert_eq!(c.paths.file_owner, "replicated");
}

#[test]
fn unknown_keys_are_named_by_their_dotted_path() {
    let text = EXAMPLE.replace("timeout = \"20m\"", "timeout = \"20m\"\ntimout = \"5m\"")
        + "\n[bogus]\nx = 1\n";
    let err = parse_str(&text).unwrap_err();
    let ConfigError::UnknownKeys { keys, .. } = &err else {
        panic!("expected UnknownKeys, got {err:?}");
    };
    assert_eq!(keys, &["bogus".to_string(), "install.timout".to_string()]);
    assert!(err.to_string().contains("install.timout"), "{err}");
}

#[test]
fn settings_table_is_free_form() {
    let text = EXAMPLE.replace(
        "[install]",
        "capacity_concurrency = 10\nforce_tls = true\n\n[install]",
    );
    let c = parse_str(&text).unwrap();
    assert_eq!(c.settings["capacity_concurrency"], toml::Value::Integer(10));
    assert_eq!(c.settings["force_tls"], toml::Value::Boolean(true));
}

#[test]
fn bad_duration_is_an_error_naming_the_value() {
    let err = parse_str(&EXAMPLE.replace("\"20m\"", "\"soon\"")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(
        text.contains("soon") && text.contains("install.timeout"),
        "{text}"
    );
}

#[test]
fn on_failure_accepts_only_abandon_or_continue() {
    let c = parse_str(&EXAMPLE.replace("\"abandon\"", "\"continue\"")).unwrap();
    assert_eq!(c.lifecycle.on_failure, FailureResult::Continue);
    assert!(parse_str(&EXAMPLE.replace("\"abandon\"", "\"retry\"")).is_err());
}

#[test]
fn missing_required_section_is_a_parse_error() {
    let text = EXAMPLE.replace("[secrets]", "[secretz]");
    let err = parse_str(&text).unwrap_err();
    assert!(err.to_string().contains("secrets"), "{err}");
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let text = "[secrets]\nshared = \"s\"\n[replicated]\nrelease_sequence = 1\n[install]\nscript = \"/i.sh\"\n";
    let c = parse_str(text).unwrap();
    assert_eq!(c.install.timeout, Duration::from_secs(1200));
    assert_eq!(
        c.tools.replicatedctl,
        PathBuf::from("/usr/local/bin/replicatedctl")
    );
    assert_eq!(c.replicated.tls_bootstrap_type, "self-signed");
    assert!(c.replicated.bypass_preflight_checks);
    assert_eq!(
        c.paths.replicated_conf,
        PathBuf::from("/etc/replicated.conf")
    );
    assert!(c.lifecycle.launch_hook.is_none());
}

#[test]
fn an_unknown_key_with_a_line_break_stays_on_one_log_line() {
    let text = crate::testing::EXAMPLE_CONFIG.replace("[aws]", "[aws]\n\"bad\\nkey\" = 1");
    let err = parse(&text, Path::new("agent.toml"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("bad\\nkey"), "{err}");
}

#[test]
fn every_value_problem_of_agent_toml_is_reported_at_once_before_any_secret() {
    let text = EXAMPLE
        .replace("release_sequence = 504", "release_sequence = 0")
        .replace("\"self-signed\"", "\"letsencrypt\"")
        .replace(
            "bypass_preflight_checks = true",
            "bypass_preflight_checks = true\nlog_level = \"verbose\"",
        )
        .replace("# sha256 = \"…\"", "sha256 = \"zz\"")
        .replace("redis_port = \"6379\"", "redis_port = 6379.5");
    let file = parse(&text, Path::new("agent.toml")).expect("it parses");
    let err = settings(file, Path::new("agent.toml")).expect_err("it is invalid");
    let shown = err.to_string();
    for says in [
        "config file agent.toml: configuration is invalid (5 problem(s))",
        "config replicated.release_sequence: must be a positive integer",
        "config replicated.tls_bootstrap_type: must be one of self-signed, server-path, key-cert",
        "config replicated.log_level: must be one of debug, info, error",
        "config install.sha256: must be a SHA-256 digest",
        "setting \"redis_port\" (from config settings.redis_port): must be a string, integer or boolean, found a float",
    ] {
        assert!(shown.contains(says), "{says:?} not in: {shown}");
    }
}

#[test]
fn settings_are_typed() {
    let file = parse(EXAMPLE, Path::new("agent.toml")).unwrap();
    let s = settings(file, Path::new("agent.toml")).unwrap();
    assert_eq!(s.replicated.release_sequence.get(), 504);
    assert_eq!(
        s.replicated.tls_bootstrap_type,
        TlsBootstrapType::SelfSigned
    );
    assert_eq!(s.settings["redis_port"], "6379");
}

#[test]
fn observe_listen_takes_one_address_a_list_a_socket_or_off() {
    let listen = |value: &str| {
        let text = EXAMPLE.replace("listen = \"127.0.0.1:18800\"", &format!("listen = {value}"));
        settings(parse_str(&text).unwrap(), Path::new("agent.toml")).map(|s| s.listen)
    };
    let example = settings(parse_str(EXAMPLE).unwrap(), Path::new("agent.toml")).unwrap();
    assert_eq!(
        example.listen,
        [Endpoint::Tcp("127.0.0.1:18800".parse().unwrap())]
    );
    let without = EXAMPLE.replace("listen = \"127.0.0.1:18800\"", "");
    let default = settings(parse_str(&without).unwrap(), Path::new("agent.toml")).unwrap();
    assert_eq!(default.listen, example.listen, "the default is loopback");
    assert_eq!(listen("\"off\"").unwrap(), []);
    assert_eq!(
        listen("[\"[::1]:9\", \"unix:/run/tfe-node-agent/agent.sock\"]").unwrap(),
        [
            Endpoint::Tcp("[::1]:9".parse().unwrap()),
            Endpoint::Unix("/run/tfe-node-agent/agent.sock".into())
        ]
    );
    let err = listen("[\"localhost:80\", \"unix:agent.sock\", \"[::1]:9\", \"[::1]:9\"]")
        .unwrap_err()
        .to_string();
    for says in [
        "(3 problem(s))",
        "config observe.listen: \"localhost:80\" is neither ADDR:PORT",
        "config observe.listen: \"unix:agent.sock\": a unix socket needs an absolute file path",
        "config observe.listen: \"[::1]:9\" is listed twice",
    ] {
        assert!(err.contains(says), "{says:?} not in: {err}");
    }
}
