//! The boot path, end to end: the real binary against moto (Secrets Manager), the Auto Scaling +
//! IMDSv2 emulator and the fake TFE tools. Every run also checks that no secret value appeared in
//! the agent's output or in a TFE tool's argv.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn happy_path_writes_files_installs_once_and_releases_the_launch_hook() {
    let node = Node::new();
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);

    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
    assert_eq!(node.instance()["lifecycle_state"], "InService");
    assert!(node.emulator.api_calls("RecordLifecycleActionHeartbeat") >= 1);

    let installs = node.install_runs();
    assert_eq!(installs.len(), 1);
    assert_eq!(
        installs[0]["argv"],
        json!([
            "disable-replicated-ui",
            "private-address=10.0.1.5",
            "public-address=10.0.1.5",
            "no-proxy",
            "fast-timeouts"
        ])
    );
    node.assert_no_secrets_in_calls();

    // The fake daemon imported the settings: the files were valid, complete and readable by its user.
    let daemon: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node.fake_state().join("daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(daemon["config_ok"], true, "{daemon}");
    assert_eq!(daemon["release_sequence"], 504);

    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    for name in ["replicated.conf", "ptfe-settings.json", "ptfe-license.rli"] {
        let path = node.path("etc").join(name);
        // install.sh ran `chmod a+r` on replicated.conf; the agent took it back.
        assert_eq!(mode_of(&path), 0o600, "{name}");
        assert_eq!(owner_of(&path), nobody, "{name}");
    }
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node.path("etc/ptfe-settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["enc_password"]["value"], SHARED_SECRET_VALUES[0]);
    assert_eq!(settings["enable_active_active"]["value"], "1");
    assert_eq!(
        std::fs::read(node.path("etc/ptfe-license.rli")).unwrap(),
        SHARED_SECRET_VALUES[11].as_bytes()
    );
    assert!(
        run.stderr
            .contains("launch hook tfe-launch released with CONTINUE"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_restart_after_install_does_not_install_again() {
    let node = Node::new();
    node.run(&["boot"], BOOT).assert_code(0);
    let second = node.run(&["boot"], BOOT);
    second.assert_code(0);
    assert!(
        second.stderr.contains("not running it again"),
        "{}",
        second.stderr
    );
    assert_eq!(node.install_runs().len(), 1);
    assert_eq!(
        node.emulator.resolutions().len(),
        1,
        "the hook is released once"
    );
}

#[test]
fn killed_during_install_then_restarted_adopts_the_running_install() {
    // An agent killed with -9 leaves install.sh running (as systemd's KillMode=process does);
    // the restarted agent waits for that run instead of starting a second install.sh.
    let node = Node::new();
    node.set_behaviour(json!({"install_duration_s": 4.0}));
    let first = node.start(&["boot"]);
    first.wait_line("install.sh: ", BOOT);
    drop(first); // SIGKILL

    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert!(
        run.stderr.contains("started by an earlier agent") && run.stderr.contains("waiting for it"),
        "{}",
        run.stderr
    );
    assert_eq!(node.install_runs().len(), 1, "install.sh started twice");
    let ends: Vec<_> = node
        .calls()
        .into_iter()
        .filter(|c| c["tool"] == "install.sh" && c["event"] == "end")
        .collect();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["exit_code"], 0);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
}

#[test]
fn an_install_that_finished_while_the_agent_was_down_is_not_run_again() {
    // The window of defect 5: install.sh succeeds on its own after the agent died, before the
    // agent could record it. Its status file, written by the wrapper, is the record.
    let node = Node::new();
    node.set_behaviour(json!({"install_duration_s": 2.0}));
    let first = node.start(&["boot"]);
    first.wait_line("install.sh: ", BOOT);
    drop(first); // SIGKILL
    let status = node.path("state/install.status");
    wait_for("install.status", BOOT, || status.exists());
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");

    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("taking its success, not running it again"),
        "{}",
        run.stderr
    );
    assert_eq!(node.install_runs().len(), 1, "install.sh started twice");
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
}

#[test]
fn a_hung_leftover_install_is_adopted_and_killed_at_the_install_timeout() {
    let node = Node::new();
    node.set_behaviour(json!({"install_hang": true}));
    node.write_config("timeout = \"20m\" => timeout = \"6s\"");
    let first = node.start(&["boot"]);
    first.wait_line("install.sh: Pulling replicated", BOOT);
    drop(first); // SIGKILL

    let run = node.run(&["boot"], BOOT);
    run.assert_code(5);
    assert!(run.stderr.contains("waiting for it"), "{}", run.stderr);
    assert!(
        run.stderr.contains("did not finish within 6s"),
        "{}",
        run.stderr
    );
    assert_eq!(node.install_runs().len(), 1, "install.sh started twice");
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
}

#[test]
fn killed_after_install_then_restarted_finishes_without_a_second_install() {
    let node = Node::new();
    // The app never comes up during the first run: the agent is killed while it waits.
    node.set_behaviour(json!({"app_started_after_s": 3600}));
    let first = node.start(&["boot"]);
    first.wait_line("waiting for TFE", BOOT);
    drop(first); // SIGKILL
    assert_eq!(node.install_runs().len(), 1);
    assert!(
        node.emulator.resolutions().is_empty(),
        "nothing released yet"
    );

    // The daemon keeps its own clock; let the app start now, and restart the agent.
    node.set_behaviour(json!({"app_started_after_s": 0.1}));
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert_eq!(
        node.install_runs().len(),
        1,
        "no second install after a restart"
    );
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
}

#[test]
fn install_failure_abandons_the_launch_hook() {
    let node = Node::new();
    node.set_behaviour(json!({"install_exit_code": 3}));
    let run = node.run(&["boot"], BOOT);
    run.assert_code(5);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
    assert!(run.stderr.contains("install.sh failed"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("releasing launch hook tfe-launch with ABANDON"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_hanging_install_is_killed_with_its_process_group_at_the_timeout() {
    let node = Node::new();
    node.set_behaviour(json!({"install_hang": true}));
    node.write_config("timeout = \"20m\" => timeout = \"2s\"");
    let run = node.run(&["boot"], BOOT);
    run.assert_code(5);
    assert!(
        run.stderr.contains("did not finish within 2s"),
        "{}",
        run.stderr
    );
    let pid = node.install_child_pid();
    assert!(
        process_gone(pid, Duration::ZERO),
        "install's child {pid} survived"
    );
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
}

#[test]
fn a_pinned_digest_that_differs_refuses_the_script() {
    let node = Node::new();
    node.write_config("# sha256 = \"…\"                   # optional pin: the script is refused if its digest differs => sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"");
    let run = node.run(&["boot"], BOOT);
    run.assert_code(5);
    assert!(run.stderr.contains("refusing to run it"), "{}", run.stderr);
    assert!(node.install_runs().is_empty());
    assert_eq!(node.emulator.resolutions()[0].1, "ABANDON");
}

#[test]
fn readiness_timeout_abandons_the_launch_hook() {
    let node = Node::new();
    node.set_behaviour(json!({"health_failing_checks": ["Terraform Enterprise Health Check"]}));
    // Long enough for a health-check to run to its end before the deadline on a busy machine:
    // the deadline now cuts a probe that is still running.
    node.write_config("timeout = \"30m\" => timeout = \"10s\"");
    let run = node.run(&["boot"], BOOT);
    run.assert_code(6);
    assert!(
        run.stderr.contains("TFE was not ready after"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Terraform Enterprise Health Check"),
        "{}",
        run.stderr
    );
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
}

#[test]
fn on_failure_continue_is_honoured() {
    let node = Node::new();
    node.set_behaviour(json!({"install_exit_code": 1}));
    node.write_config("on_failure = \"abandon\" => on_failure = \"continue\"");
    node.run(&["boot"], BOOT).assert_code(5);
    assert_eq!(node.emulator.resolutions()[0].1, "CONTINUE");
}

#[test]
fn a_boot_longer_than_the_heartbeat_timeout_survives_on_heartbeats() {
    let node = Node::with(
        Hooks {
            launch_timeout: 2,
            ..Hooks::default()
        },
        shared_secret(),
    );
    // About 7 s of boot against a 2 s HeartbeatTimeout.
    node.set_behaviour(json!({"install_duration_s": 3.0, "app_started_after_s": 4.0}));
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
    assert!(node.emulator.api_calls("RecordLifecycleActionHeartbeat") >= 5);
}

#[test]
fn without_heartbeats_the_same_boot_loses_the_hook_to_its_default_result() {
    // The control for the test above: an agent that does not hold the hook (no launch_hook
    // configured) lets the emulator's 2 s HeartbeatTimeout expire and apply DefaultResult.
    let node = Node::with(
        Hooks {
            launch_timeout: 2,
            ..Hooks::default()
        },
        shared_secret(),
    );
    node.set_behaviour(json!({"install_duration_s": 3.0, "app_started_after_s": 4.0}));
    node.write_config("launch_hook = \"tfe-launch\" => # launch_hook unset");
    node.run(&["boot"], BOOT).assert_code(0);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "heartbeat-timeout")
    );
}

#[test]
fn invalid_secrets_write_nothing_name_the_key_and_abandon() {
    let mut shared = shared_secret();
    shared["internal_api_token"] = json!("zz-not-hex-SECRET");
    shared.as_object_mut().unwrap().remove("enc_password");
    let node = Node::with(Hooks::default(), shared);
    let run = node.run(&["boot"], BOOT);
    run.assert_code(3);
    assert!(!run.stderr.contains("zz-not-hex-SECRET"));
    assert!(
        run.stderr.contains(
            "setting \"internal_api_token\" (from secret \"tfe/shared\"): must be a hex value"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("setting \"enc_password\""),
        "{}",
        run.stderr
    );
    assert!(!node.path("etc").exists(), "nothing may be written");
    assert!(node.install_runs().is_empty());
    assert_eq!(node.emulator.resolutions()[0].1, "ABANDON");
}

#[test]
fn a_missing_secret_is_an_aws_error_naming_the_id() {
    let node = Node::new();
    node.write_config("license = \"tfe/license\" => license = \"tfe/no-such-license\"");
    let run = node.run(&["boot"], BOOT);
    run.assert_code(4);
    assert!(run.stderr.contains("tfe/no-such-license"), "{}", run.stderr);
    assert_eq!(node.emulator.resolutions()[0].1, "ABANDON");
}

#[test]
fn a_hook_the_group_does_not_have_is_reported_and_boot_proceeds() {
    let node = Node::new();
    node.write_config("launch_hook = \"tfe-launch\" => launch_hook = \"no-such-hook\"");
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert!(
        run.stderr.contains("has no launch hook named no-such-hook"),
        "{}",
        run.stderr
    );
}

#[test]
fn run_boots_then_stays_until_sigterm() {
    let node = Node::new();
    let mut agent = node.start(&["run"]);
    let seen = agent.wait_line("is in service", BOOT);
    assert!(seen.contains("released with CONTINUE"), "{seen}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.is_running(), "run must stay up after boot");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
}

#[test]
fn a_throttled_hook_lookup_is_retried_beside_the_work_and_the_hook_still_released() {
    // Defect: more throttling than the SDK's own three attempts ended the boot with exit 4 and no
    // word. Now the agent retries with its own backoff while the install runs.
    let node = Node::new();
    node.emulator.post(
        "/_emulator/faults",
        json!({"throttle": {"action": "DescribeAutoScalingInstances", "count": 7}}),
    );
    let run = node.run(&["boot"], BOOT);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("looking up the launch hook failed (try 1)"),
        "{}",
        run.stderr
    );
    // The install did not wait for the lookup to succeed.
    let install_started = run.stderr.find("running ").expect("install started");
    let found = run.stderr.find("holding launch hook").expect("hook found");
    assert!(install_started < found, "{}", run.stderr);
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("CONTINUE", "complete")
    );
}

#[test]
fn a_hook_lookup_that_never_succeeds_is_an_error_with_its_chain_not_a_silent_exit() {
    let node = Node::new();
    node.write_config("# discovery_timeout = \"10m\" => discovery_timeout = \"4s\"");
    node.emulator.post(
        "/_emulator/faults",
        json!({"throttle": {"action": "DescribeAutoScalingInstances", "count": 1000}}),
    );
    let run = node.run(&["boot"], BOOT);
    run.assert_code(4);
    assert!(
        run.stderr
            .contains("boot failed: looking up this instance's launch lifecycle hook failed after")
            && run.stderr.contains("throttled by Auto Scaling"),
        "{}",
        run.stderr
    );
    // The node itself came up; the group's DefaultResult decides the hook.
    assert!(run.stderr.contains("TFE is ready"), "{}", run.stderr);
    assert_eq!(node.emulator.resolutions(), vec![]);
}

#[test]
fn an_unreadable_state_record_exits_7_naming_it_runs_nothing_and_abandons() {
    let node = Node::new();
    std::fs::create_dir_all(node.path("state")).unwrap();
    std::fs::write(node.path("state/state.json"), "{\"instance_id\": \"i-").unwrap();
    let run = node.run(&["boot"], BOOT);
    run.assert_code(7);
    assert!(
        run.stderr.contains("boot failed:") && run.stderr.contains("state.json is corrupt"),
        "{}",
        run.stderr
    );
    assert!(node.install_runs().is_empty(), "install.sh ran");
    assert!(
        !node.path("etc/replicated.conf").exists(),
        "TFE files written"
    );
    assert_eq!(
        std::fs::read_to_string(node.path("state/state.json")).unwrap(),
        "{\"instance_id\": \"i-",
        "the record was overwritten"
    );
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
}

#[test]
fn run_with_an_unreadable_state_record_answers_the_held_launch_hook_too() {
    // What systemd starts is `run`: it must not leave the hook to its timeout either.
    let node = Node::new();
    std::fs::create_dir_all(node.path("state")).unwrap();
    std::fs::write(node.path("state/state.json"), "not json").unwrap();
    let run = node.run(&["run"], BOOT);
    run.assert_code(7);
    assert!(
        run.stderr.contains("state.json is corrupt"),
        "{}",
        run.stderr
    );
    assert!(node.install_runs().is_empty(), "install.sh ran");
    assert_eq!(
        node.emulator.resolutions(),
        launch_resolved("ABANDON", "complete")
    );
}
