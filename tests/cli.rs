//! The subcommands other than boot: validate, render (and --dry-run), and config errors.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn validate_checks_config_and_secrets_and_writes_nothing() {
    let node = Node::new();
    let run = node.run(&["validate"], T);
    run.assert_code(0);
    assert!(
        run.stdout.contains("configuration is valid"),
        "{}",
        run.stdout
    );
    assert!(!node.path("etc").exists());
    assert!(node.install_runs().is_empty());
    assert!(
        node.emulator.resolutions().is_empty(),
        "validate never touches the hook"
    );
}

#[test]
fn render_dry_run_prints_redacted_files_and_writes_nothing() {
    let node = Node::new();
    let run = node.run(&["render", "--dry-run"], T);
    run.assert_code(0);
    assert!(
        run.stdout.contains("replicated.conf (mode 0600)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\"enc_password\": {\n    \"value\": \"<redacted>\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\"hostname\": {\n    \"value\": \"tfe.example.com\""),
        "{}",
        run.stdout
    );
    assert!(!node.path("etc").exists(), "dry run writes nothing");
}

#[test]
fn render_writes_the_files_and_nothing_else() {
    let node = Node::new();
    node.run(&["render"], T).assert_code(0);
    assert_eq!(mode_of(&node.path("etc/replicated.conf")), 0o600);
    assert_eq!(mode_of(&node.path("etc/ptfe-settings.json")), 0o600);
    assert!(node.install_runs().is_empty());
    assert!(!node.path("state").exists(), "render records no progress");
}

#[test]
fn an_unknown_config_key_is_named_and_exits_3() {
    let node = Node::new();
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        text.replace("[readiness]", "[readiness]\npoll_intervall = \"1s\""),
    )
    .unwrap();
    let run = node.run(&["validate"], T);
    run.assert_code(3);
    assert!(
        run.stderr
            .contains("unknown key(s): readiness.poll_intervall"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_config_file_names_the_path() {
    let node = Node::new();
    std::fs::remove_file(&node.config).unwrap();
    let run = node.run(&["boot"], T);
    run.assert_code(3);
    assert!(
        run.stderr.contains(&node.config.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(node.emulator.resolutions().is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let node = Node::new();
    node.run(&["no-such-command"], T).assert_code(2);
}

#[test]
fn an_invalid_agent_toml_value_is_reported_before_any_aws_call() {
    let node = Node::new();
    node.write_config(
        "release_sequence = 504 => release_sequence = 0\ntls_bootstrap_type = \"self-signed\" => tls_bootstrap_type = \"letsencrypt\"",
    );
    // Secrets Manager and Auto Scaling at a port nobody listens on: had the agent called either,
    // it would have failed with exit 4 after its retries, not exit 3 at once.
    let child = node
        .agent(&["validate"])
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9")
        .env("AWS_ENDPOINT_URL_AUTO_SCALING", "http://127.0.0.1:9")
        .spawn()
        .expect("spawn agent");
    let run = Run::wait(child, Duration::from_secs(20));
    run.assert_code(3);
    for says in [
        "configuration is invalid (2 problem(s))",
        "config replicated.release_sequence: must be a positive integer",
        "config replicated.tls_bootstrap_type: must be one of self-signed, server-path, key-cert",
    ] {
        assert!(run.stderr.contains(says), "{says:?} not in: {}", run.stderr);
    }
    assert_eq!(node.emulator.api_calls("DescribeAutoScalingInstances"), 0);
}
