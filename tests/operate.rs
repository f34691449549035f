//! Operating a node without the Admin UI, end to end: the real `run` against the Auto Scaling +
//! IMDSv2 emulator, moto and the fake TFE tools. A manual `drain` through the unix socket runs
//! node-drain once across an agent killed mid-drain, `/readyz` answers 503, TCP refuses it, a
//! terminate wait state during it is heartbeated and released once, and `app restart` brings the
//! node back; `app-config set` refuses secret keys and invalid values, and runs and records a
//! valid change once. No secret value appears in any output.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(90);
const DRAIN: Duration = Duration::from_secs(60);
const COMMAND: Duration = Duration::from_secs(90);

const FAST: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#;

fn listen_tcp_and_unix(socket: &Path) -> String {
    format!(
        "{TEST_LISTEN} => listen = [\"127.0.0.1:0\", \"unix:{}\"]",
        socket.display()
    )
}

fn operated_node(hooks: Hooks, knobs: Value) -> Node {
    let node = Node::with(hooks, shared_secret());
    node.set_behaviour(knobs);
    let socket = node.path("run/agent.sock");
    node.write_config(&format!("{FAST}\n{}", listen_tcp_and_unix(&socket)));
    node
}

fn post(url: &str) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    match agent.post(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

fn get(url: &str) -> (u16, String) {
    match ureq::get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn state_file(node: &Node) -> Value {
    serde_json::from_str(&std::fs::read_to_string(node.path("state/state.json")).unwrap()).unwrap()
}

#[test]
fn a_manual_drain_runs_node_drain_once_across_an_agent_restart_and_app_restart_brings_the_node_back(
) {
    let node = operated_node(Hooks::default(), json!({"drain_duration_s": 4.0}));
    let first = node.start(&["run"]);
    first.wait_line("is in service", BOOT);
    let base = first.api_url(BOOT);
    assert_eq!(get(&format!("{base}/readyz")).0, 200);

    // TCP is read-only: refused, nothing recorded.
    let (code, body) = post(&format!("{base}/drain"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("unix socket only"), "{body}");
    assert!(state_file(&node)["termination"].is_null());

    // Accepted through the socket; recorded before the answer.
    let run = node.run(&["drain", "--detach"], COMMAND);
    run.assert_code(0);
    assert!(
        run.stdout.contains("drain accepted and recorded"),
        "{}",
        run.stdout
    );
    let recorded = state_file(&node);
    assert_eq!(
        recorded["termination"]["source"], "operator",
        "{recorded:#}"
    );
    let (code, readyz) = get(&format!("{base}/readyz"));
    assert_eq!(code, 503, "{readyz}");
    assert!(readyz.contains("operator"), "{readyz}");

    // Killed mid-drain; the next agent adopts the same node-drain.
    first.wait_line("node-drain started", DRAIN);
    first.signal(Signal::SIGKILL);
    let mut first = first;
    first.wait_exit(Duration::from_secs(10));
    let second = node.start(&["run"]);
    second.wait_line(
        &format!(
            "HTTP API listening on unix:{}",
            node.path("run/agent.sock").display()
        ),
        BOOT,
    );
    // A second `drain` while one runs says so and follows it to the end.
    let run = node.run(&["drain"], COMMAND);
    run.assert_code(0);
    assert!(
        run.stdout.contains("a drain is running already") || run.stdout.contains("drained already"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("no reverse of node-drain"),
        "{}",
        run.stdout
    );
    let drains = node.drains();
    assert_eq!(drains["drains_started"], 1, "{drains}");
    assert_eq!(drains["drains_completed"], 1, "{drains}");
    assert_eq!(node.tool_calls("node-drain").len(), 1);
    // And once it ended: drained already, nothing run again.
    let run = node.run(&["drain"], COMMAND);
    run.assert_code(0);
    assert!(run.stdout.contains("drained already"), "{}", run.stdout);
    assert_eq!(node.drains()["drains_started"], 1);
    let log = second.wait_line("the app reports stopped", DRAIN);
    assert!(log.contains("was started before this agent"), "{log}");
    let base = second.api_url(BOOT);
    assert_eq!(get(&format!("{base}/readyz")).0, 503);

    // The way back.
    let run = node.run(&["app", "restart"], COMMAND);
    run.assert_code(0);
    assert!(run.stdout.contains("app restarted"), "{}", run.stdout);
    let (code, readyz) = get(&format!("{base}/readyz"));
    assert_eq!(code, 200, "{readyz}");
    let recorded = state_file(&node);
    assert_eq!(recorded["phase"], "in-service", "{recorded:#}");
    assert!(recorded["termination"].is_null(), "{recorded:#}");
    assert_eq!(node.tool_calls("start").len(), 1, "one app start");
    assert_eq!(node.drains()["drains_started"], 1);
    node.assert_no_secrets_in_calls();
    for text in [second.stderr(), get(&format!("{base}/status")).1] {
        for s in SHARED_SECRET_VALUES {
            assert!(!text.contains(s), "a secret value appeared");
        }
    }
}

#[test]
fn a_terminate_wait_state_during_a_manual_drain_is_heartbeated_and_released_once() {
    let hooks = Hooks {
        terminate_timeout: 6,
        ..Hooks::default()
    };
    let node = operated_node(hooks, json!({"drain_duration_s": 10.0}));
    let agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.run(&["drain", "--detach"], COMMAND).assert_code(0);
    agent.wait_line("node-drain started", DRAIN);
    node.scale_in(0.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    assert!(log.contains("holding terminate hook"), "{log}");
    assert_eq!(
        node.emulator
            .resolutions()
            .into_iter()
            .filter(|(hook, _, _)| hook == "tfe-terminate")
            .collect::<Vec<_>>(),
        vec![(
            "tfe-terminate".to_string(),
            "CONTINUE".to_string(),
            "complete".to_string()
        )]
    );
    assert!(
        node.emulator.api_calls("RecordLifecycleActionHeartbeat") >= 2,
        "a 10 s drain under a 6 s HeartbeatTimeout is kept alive"
    );
    let drains = node.drains();
    assert_eq!(drains["drains_started"], 1, "{drains}");
    // An ASG termination joined it: no way back any more.
    let run = node.run(&["app", "restart"], COMMAND);
    run.assert_code(15);
    assert!(run.stdout.contains("going away"), "{}", run.stdout);
}

#[test]
fn app_config_set_refuses_secret_keys_and_invalid_values_and_records_a_valid_change_once() {
    let node = operated_node(Hooks::default(), json!({}));
    node.run(&["boot"], BOOT).assert_code(0);
    let changes = node.path("state/config-changes.jsonl");
    let sets = || node.tool_calls("app-config").len();

    // A key of the shared secret: refused, nothing run, nothing recorded, no value shown.
    let run = node.run(
        &["app-config", "set", "pg_password", "new-SECRET-value"],
        COMMAND,
    );
    run.assert_code(15);
    assert!(run.stderr.contains("Secrets Manager"), "{}", run.stderr);
    assert!(
        run.stderr.contains("visible to every process"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("new-SECRET-value"), "{}", run.stderr);
    assert_eq!(sets(), 0);
    assert!(!changes.exists());

    // An invalid value: the rule of boot says why.
    let run = node.run(&["app-config", "set", "force_tls", "yes"], COMMAND);
    run.assert_code(3);
    assert!(
        run.stderr.contains("is a flag and must be"),
        "{}",
        run.stderr
    );
    assert_eq!(sets(), 0);
    assert!(!changes.exists());

    // A valid one: run once, recorded, where to make it permanent said.
    let run = node.run(
        &["app-config", "set", "capacity_concurrency", "20"],
        COMMAND,
    );
    run.assert_code(0);
    assert!(
        run.stdout.contains("under [settings] in agent.toml"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("app restart"), "{}", run.stdout);
    let calls = node.tool_calls("app-config");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["argv"],
        json!([
            "admin",
            "--tty=0",
            "app-config",
            "-k",
            "capacity_concurrency",
            "-v",
            "20"
        ])
    );
    let live: Value = serde_json::from_str(
        &std::fs::read_to_string(node.fake_state().join("app-config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(live["capacity_concurrency"], "20");
    let text = std::fs::read_to_string(&changes).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["key"], "capacity_concurrency");
    assert_eq!(lines[0]["value"], "20");
    assert!(lines[0]["by"].as_str().unwrap().contains("uid"), "{text}");
    let mode = std::fs::metadata(&changes).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    node.assert_no_secrets_in_calls();
}
