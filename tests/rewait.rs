//! The launch hook waited on again (issue 9, defect 3). An instance that goes to Standby and back
//! (EnterStandby, ExitStandby) passes through Pending:Wait again and the group fires the launch
//! hook anew; the group's view is authoritative, so the agent releases that wait too, once, and
//! says why it is a second release — under `run`, and in a `boot` whose state record says the
//! hook was released already.

mod common;

use common::*;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(90);
/// The launch hook's HeartbeatTimeout: an unreleased wait ends in ABANDON (and a terminated
/// node) this long after ExitStandby, so a missing release fails in seconds, not an hour.
const LAUNCH_TIMEOUT: u64 = 25;

fn node() -> Node {
    let node = Node::with(
        Hooks {
            launch_timeout: LAUNCH_TIMEOUT,
            ..Hooks::default()
        },
        shared_secret(),
    );
    node.write_config(r#"poll_interval = "1s" => poll_interval = "200ms""#);
    node
}

/// An Auto Scaling Query API call, as the operator's `aws autoscaling …` would make it.
fn asg(node: &Node, action: &str) {
    let body = format!(
        "Action={action}&Version=2011-01-01&AutoScalingGroupName=tfe-asg&InstanceIds.member.1={}&ShouldDecrementDesiredCapacity=false",
        node.instance_id
    );
    let reply = ureq::post(&node.emulator.url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&body);
    assert!(reply.is_ok(), "{action}: {reply:?}");
}

/// EnterStandby, a second in Standby, then ExitStandby: the instance is in Pending:Wait on a new
/// launch action. (AWS spends a while in EnteringStandby and Standby; the emulator none, so the
/// second stands for it: IMDS says Standby for several of the agent's 200 ms polls.)
fn standby_round_trip(node: &Node) {
    asg(node, "EnterStandby");
    assert_eq!(node.instance()["lifecycle_state"], "Standby");
    std::thread::sleep(Duration::from_secs(1));
    asg(node, "ExitStandby");
    let instance = node.instance();
    assert_eq!(instance["lifecycle_state"], "Pending:Wait", "{instance}");
    assert_eq!(instance["actions"][0]["hook"], "tfe-launch", "{instance}");
}

fn launch_resolutions(node: &Node) -> Vec<(String, String, String)> {
    node.emulator
        .resolutions()
        .into_iter()
        .filter(|(hook, _, _)| hook == "tfe-launch")
        .collect()
}

/// Waits (bounded) until the launch hook has been resolved `n` times, by anyone.
fn wait_for_resolutions(node: &Node, n: usize, timeout: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = launch_resolutions(node);
        if seen.len() >= n || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn continued(times: usize) -> Vec<(String, String, String)> {
    vec![("tfe-launch".into(), "CONTINUE".into(), "complete".into()); times]
}

/// A line that names the launch hook and says this release is not the first.
fn says_second_release(log: &str) -> bool {
    log.lines().any(|l| {
        let l = l.to_lowercase();
        l.contains("tfe-launch") && (l.contains("again") || l.contains("second"))
    })
}

#[test]
fn run_releases_the_launch_hook_again_after_each_standby_round_trip() {
    let node = node();
    let mut agent = node.start(&["run"]);
    agent.wait_line("is in service", BOOT);
    assert_eq!(launch_resolutions(&node), continued(1));

    for round in 2..=3 {
        standby_round_trip(&node);
        // Released by the agent well before the hook's HeartbeatTimeout would ABANDON it.
        let seen = wait_for_resolutions(&node, round, Duration::from_secs(LAUNCH_TIMEOUT + 10));
        assert_eq!(
            seen,
            continued(round),
            "round trip {}\n{}",
            round - 1,
            agent.stderr()
        );
        assert_eq!(node.instance()["lifecycle_state"], "InService");
    }
    // Exactly once per wait: no Complete beyond the three waits' three.
    std::thread::sleep(Duration::from_secs(1));
    let completes = node.emulator.api_calls("CompleteLifecycleAction");
    assert_eq!(completes, 3, "{}", agent.stderr());
    let log = agent.stderr();
    assert!(
        says_second_release(&log),
        "no line says why the hook is released again:\n{log}"
    );
    assert_eq!(
        node.install_runs().len(),
        1,
        "standby is no reason to install again"
    );
    assert_eq!(
        node.drains()["drains_started"],
        0,
        "standby is no termination"
    );

    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_boot_whose_record_says_released_still_releases_a_new_wait_once() {
    let node = node();
    node.run(&["boot"], BOOT).assert_code(0);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(node.path("state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["launch_hook"], "CONTINUE", "{state}");

    // With the agent stopped, the instance goes to Standby and back: the group waits again.
    standby_round_trip(&node);
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert_eq!(
        wait_for_resolutions(&node, 2, Duration::from_secs(2)),
        continued(2),
        "{}",
        run.stderr
    );
    assert_eq!(node.instance()["lifecycle_state"], "InService");
    assert_eq!(node.emulator.api_calls("CompleteLifecycleAction"), 2);
    assert!(
        says_second_release(&run.stderr),
        "no line says why the hook is released again:\n{}",
        run.stderr
    );
    assert_eq!(node.install_runs().len(), 1, "no second install");
}
