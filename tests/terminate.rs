//! The termination path, end to end: the real `run` against the Auto Scaling + IMDSv2 emulator,
//! moto and the fake TFE tools. Scale-in, spot and shutdown notices; node-drain exactly once;
//! the terminate hook kept alive and released once, whatever happens to the agent meanwhile.

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(90);
const DRAIN: Duration = Duration::from_secs(60);

/// Polls quickly so the tests do not wait on the defaults.
const FAST: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#;

fn fast_node(hooks: Hooks, knobs: Value) -> Node {
    let node = Node::with(hooks, shared_secret());
    node.set_behaviour(knobs);
    node.write_config(FAST);
    node
}

fn terminate_resolutions(node: &Node) -> Vec<(String, String, String)> {
    node.emulator
        .resolutions()
        .into_iter()
        .filter(|(hook, _, _)| hook == "tfe-terminate")
        .collect()
}

fn terminated(result: &str, cause: &str) -> Vec<(String, String, String)> {
    vec![("tfe-terminate".into(), result.into(), cause.into())]
}

fn state_file(node: &Node) -> Value {
    serde_json::from_str(&std::fs::read_to_string(node.path("state/state.json")).unwrap()).unwrap()
}

#[test]
fn scale_in_drains_once_and_continues_the_terminate_hook_in_one_run() {
    let node = fast_node(Hooks::default(), json!({"drain_duration_s": 1.0}));
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);

    // The launch and the terminate path, each hook released once, by the agent.
    assert_eq!(
        node.emulator.resolutions(),
        vec![
            ("tfe-launch".into(), "CONTINUE".into(), "complete".into()),
            ("tfe-terminate".into(), "CONTINUE".into(), "complete".into()),
        ]
    );
    assert_eq!(node.instance()["lifecycle_state"], "Terminated");
    let drains = node.drains();
    assert_eq!(
        drains["drains_started"],
        1,
        "{drains}\n{log}\n{}",
        std::fs::read_to_string(node.path("state/drain.log")).unwrap_or_default()
    );
    assert_eq!(drains["drains_completed"], 1, "{drains}");
    let drain_calls = node.tool_calls("node-drain");
    assert_eq!(
        drain_calls[0]["argv"],
        json!(["admin", "--tty=0", "node-drain"])
    );
    // Then the app was stopped, after the drain.
    let stops = node.tool_calls("stop");
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(
        log.contains("node-drain: Node drained."),
        "drain output is logged:\n{log}"
    );
    assert!(log.contains("the app reports stopped"), "{log}");

    // IMDS saw about one request per poll: values that never change were asked once.
    let requests = &node.instance()["imds_requests"];
    assert_eq!(requests["/latest/meta-data/instance-id"], 1, "{requests}");
    assert!(
        requests["/latest/meta-data/instance-life-cycle"]
            .as_u64()
            .unwrap_or(0)
            <= 1,
        "{requests}"
    );
    assert!(
        requests["/latest/api/token"].as_u64().unwrap() <= 2,
        "one token, reused: {requests}"
    );

    let state = state_file(&node);
    assert_eq!(state["phase"], "drained", "{state}");
    assert_eq!(
        state["termination"]["hook"]["result"], "CONTINUE",
        "{state}"
    );

    // Drained and released: a SIGTERM now just stops the agent.
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    node.assert_no_secrets_in_calls();
}

#[test]
fn a_drain_longer_than_the_heartbeat_timeout_survives_on_heartbeats() {
    let hooks = Hooks {
        terminate_timeout: 2,
        ..Hooks::default()
    };
    let node = fast_node(hooks, json!({"drain_duration_s": 7.0}));
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );
    assert!(node.emulator.api_calls("RecordLifecycleActionHeartbeat") >= 4);
    assert_eq!(node.drains()["drains_completed"], 1);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));

    // The control: the same hook with nobody beating expires after its 2 s HeartbeatTimeout.
    let bare = fast_node(
        Hooks {
            launch_timeout: 2,
            terminate_timeout: 2,
            ..Hooks::default()
        },
        json!({}),
    );
    bare.emulator.post(
        &format!("/_emulator/instances/{}/terminate", bare.instance_id),
        json!({}),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        terminate_resolutions(&bare),
        terminated("CONTINUE", "heartbeat-timeout"),
        "without heartbeats the emulator applies DefaultResult"
    );
}

#[test]
fn sigterm_mid_drain_neither_aborts_it_nor_continues_early() {
    let node = fast_node(Hooks::default(), json!({"drain_duration_s": 3.0}));
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    agent.wait_line("node-drain started", DRAIN);
    agent.signal(Signal::SIGTERM);
    agent.wait_line("an ASG termination is in progress", Duration::from_secs(10));
    assert!(
        terminate_resolutions(&node).is_empty(),
        "no CONTINUE before the drain ended"
    );
    assert_eq!(agent.wait_exit(DRAIN), Some(0));
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );
    let drains = node.drains();
    assert_eq!(drains["drains_completed"], 1, "{drains}");
    assert_eq!(drains["drains_interrupted"], 0, "{drains}");
}

#[test]
fn killed_mid_drain_then_restarted_waits_for_the_same_drain() {
    let node = fast_node(Hooks::default(), json!({"drain_duration_s": 4.0}));
    let mut first = node.start(&["run"]);
    first.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    first.wait_line("node-drain started", DRAIN);
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));

    let second = node.start(&["run"]);
    let log = second.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    assert!(log.contains("was started before this agent"), "{log}");
    assert!(
        !log.contains("running install.sh"),
        "a terminating node does not boot again:\n{log}"
    );
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );
    let drains = node.drains();
    assert_eq!(drains["drains_started"], 1, "{drains}");
    assert_eq!(drains["drains_completed"], 1, "{drains}");
    assert_eq!(
        node.emulator.api_calls("CompleteLifecycleAction"),
        2,
        "launch + terminate, once each"
    );
}

#[test]
fn terminated_in_imds_before_the_wait_state_exists() {
    let node = fast_node(Hooks::default(), json!({"drain_duration_s": 0.5}));
    let agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.scale_in(3.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    assert!(log.contains("waiting for Terminating:Wait"), "{log}");
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );

    // No hook call was made before the wait state existed, so none was refused.
    let wait_seq = node
        .emulator
        .events("state")
        .iter()
        .find(|e| e["kind"] == "state" && e["to_state"] == "Terminating:Wait")
        .expect("entered Terminating:Wait")["seq"]
        .as_u64()
        .unwrap();
    for e in node.emulator.events("api") {
        let hook_call = e["action"] == "RecordLifecycleActionHeartbeat"
            || e["action"] == "CompleteLifecycleAction";
        if hook_call && e["params"]["LifecycleHookName"] == "tfe-terminate" {
            assert!(
                e["seq"].as_u64().unwrap() > wait_seq,
                "hook call before the wait state: {e}"
            );
            assert_eq!(e["status"], 200, "{e}");
        }
    }
}

#[test]
fn scale_in_during_install_kills_it_and_releases_the_terminate_hook() {
    // install.sh blocks (like an installer waiting on a prompt) with a child in its group.
    let node = fast_node(Hooks::default(), json!({"install_hang": true}));
    let mut agent = node.start(&["run"]);
    agent.wait_line("install.sh: Pulling replicated", BOOT);
    node.scale_in(0.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with CONTINUE", DRAIN);
    assert!(log.contains("during boot: abandoning the boot"), "{log}");
    assert!(log.contains("TFE was never installed"), "{log}");
    assert_eq!(node.drains()["drains_started"], 0, "nothing to drain");
    // install.sh's process group was killed with the boot.
    let pid = node.install_child_pid();
    assert!(
        process_gone(pid, Duration::from_secs(5)),
        "install.sh's child {pid} survived"
    );
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn spot_interruption_during_install_abandons_the_launch_hook() {
    let hooks = Hooks {
        spot: true,
        ..Hooks::default()
    };
    let node = fast_node(hooks, json!({"install_duration_s": 60.0}));
    node.write_config(&format!(
        "{FAST}\n{}",
        r#"# spot_poll_interval = "5s" => spot_poll_interval = "200ms""#
    ));
    let agent = node.start(&["run"]);
    agent.wait_line("running ", BOOT);
    node.emulator.post(
        &format!("/_emulator/instances/{}/imds", node.instance_id),
        json!({"spot_instance_action": {"action": "terminate", "time": "2099-01-01T00:00:00Z"}}),
    );
    agent.wait_line("launch hook tfe-launch released with ABANDON", DRAIN);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
    assert_eq!(node.drains()["drains_started"], 0);
}

#[test]
fn throttled_heartbeats_back_off_and_the_hook_still_completes() {
    // The SDK's standard retry sleeps up to 1 s + 2 s between its three attempts, the agent then
    // waits 1 s, and the fourth refusal costs up to 1 s more: about 5 s before the first heartbeat
    // lands. So HeartbeatTimeout 8 s (4 s lost the hook now and then on a busy machine), and a
    // drain longer than that, so only the heartbeats that got through keep the hook alive.
    let hooks = Hooks {
        terminate_timeout: 8,
        ..Hooks::default()
    };
    let node = fast_node(hooks, json!({"drain_duration_s": 12.0}));
    let agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    // More refusals than the SDK's own three attempts: the agent's backoff must carry it.
    node.emulator.post(
        "/_emulator/faults",
        json!({"throttle": {"action": "RecordLifecycleActionHeartbeat", "count": 4}}),
    );
    node.scale_in(0.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with", DRAIN);
    assert!(log.contains("throttled"), "{log}");
    assert_eq!(
        terminate_resolutions(&node),
        terminated("CONTINUE", "complete")
    );
    let throttled = node
        .emulator
        .events("api")
        .iter()
        .filter(|e| {
            e["action"] == "RecordLifecycleActionHeartbeat" && e["error_code"] == "Throttling"
        })
        .count();
    assert_eq!(throttled, 4);
}

#[test]
fn a_failed_drain_abandons_and_the_group_retains_the_node() {
    let hooks = Hooks {
        retain: true,
        ..Hooks::default()
    };
    let node = fast_node(
        hooks,
        json!({"drain_duration_s": 0.3, "drain_exit_code": 2}),
    );
    let agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    node.scale_in(0.0);
    let log = agent.wait_line("terminate hook tfe-terminate released with ABANDON", DRAIN);
    assert!(log.contains("node-drain failed with exit code 2"), "{log}");
    assert!(
        node.tool_calls("stop").is_empty(),
        "a failed drain leaves the app for an operator"
    );
    assert_eq!(
        terminate_resolutions(&node),
        terminated("ABANDON", "complete")
    );
    assert_eq!(node.instance()["lifecycle_state"], "Terminating:Retained");
}

/// A fake `systemctl is-system-running` answering `answer`.
fn fake_systemctl(node: &Node, answer: &str) -> String {
    let path = node.path("systemctl");
    std::fs::write(&path, format!("#!/bin/sh\necho {answer}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!(
        "{FAST}\n# systemctl = \"/usr/bin/systemctl\" => systemctl = \"{}\" #",
        path.display()
    )
}

#[test]
fn a_plain_system_shutdown_gets_a_bounded_drain() {
    let node = fast_node(Hooks::default(), json!({"drain_duration_s": 0.5}));
    node.write_config(&fake_systemctl(&node, "stopping"));
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(DRAIN), Some(0));
    let log = agent.stderr();
    assert!(
        log.contains("the system is shutting down with no ASG termination"),
        "{log}"
    );
    assert_eq!(node.drains()["drains_completed"], 1);
    assert!(
        terminate_resolutions(&node).is_empty(),
        "no ASG termination, no hook call"
    );
    assert_eq!(state_file(&node)["termination"]["source"], "shutdown");
}

#[test]
fn stopping_only_the_agent_does_not_drain() {
    let node = fast_node(Hooks::default(), json!({}));
    node.write_config(&fake_systemctl(&node, "running"));
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(agent.stderr().contains("this is not a system shutdown"));
    assert_eq!(node.drains()["drains_started"], 0);
}
