use super::*;

fn plan(on_failure: OnFailure) -> Plan {
    let from = TemplateRef {
        id: Some("lt-0123456789abcdef0".into()),
        name: Some("tfe".into()),
        version: "1".into(),
    };
    Plan {
        group: "tfe-asg".into(),
        to: from.at("2"),
        from,
        from_release: Some(504),
        to_release: Some(505),
        min_size: 2,
        max_size: 4,
        capacity: 2,
        already_suspended: vec![ScalingProcess::ScheduledActions],
        launch_hook: "tfe-launch".into(),
        terminate_hook: "tfe-terminate".into(),
        drain_budget_s: 3600,
        build_budget_s: 3600,
        validate_cmd: None,
        validate_timeout_s: 300,
        on_failure,
    }
}

fn repave(on_failure: OnFailure) -> Repave {
    Repave::new("r1".into(), "ops@laptop".into(), 1_000, plan(on_failure))
}

/// Runs every step to its end from where the record is, answering the steps it ran.
fn run_to_end(r: &mut Repave, mut now: u64) -> Vec<(Step, Pass)> {
    let mut ran = Vec::new();
    while let Next::Run { step, pass, .. } = r.next() {
        r.start(step, now);
        now += 10;
        r.finish(step, now, "ok".into());
        ran.push((step, pass));
    }
    ran
}

#[test]
fn a_repave_runs_the_seven_steps_once_in_order() {
    let mut r = repave(OnFailure::Stop);
    let ran = run_to_end(&mut r, 2_000);
    let steps: Vec<Step> = ran.iter().map(|(s, _)| *s).collect();
    assert_eq!(steps, Pass::Forward.steps());
    assert_eq!(r.state, RepaveState::Done);
    assert_eq!(r.next(), Next::Ended(RepaveState::Done));
}

#[test]
fn an_interrupted_step_is_resumed_and_one_that_ended_never_runs_again() {
    let mut r = repave(OnFailure::Stop);
    r.start(Step::Suspend, 1);
    r.finish(Step::Suspend, 2, "suspended".into());
    r.start(Step::Drain, 3);
    // The orchestrator died here; a second run reads the record.
    let copy: Repave = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(
        copy.next(),
        Next::Run {
            step: Step::Drain,
            pass: Pass::Forward,
            resumed: true
        }
    );
    let mut r = copy;
    let ran = run_to_end(&mut r, 10);
    assert_eq!(ran.first(), Some(&(Step::Drain, Pass::Forward)));
    assert!(!ran.contains(&(Step::Suspend, Pass::Forward)));
    let drain = r.steps.iter().find(|s| s.step == Step::Drain).unwrap();
    assert_eq!(drain.starts, 2);
    assert_eq!(drain.started_ms, 3, "the first start is kept");
}

#[test]
fn a_failure_without_rollback_resumes_the_processes_and_stops() {
    let mut r = repave(OnFailure::Stop);
    for step in [Step::Suspend, Step::Drain, Step::Point] {
        r.start(step, 1);
        r.finish(step, 2, "ok".into());
    }
    r.start(Step::First, 3);
    r.fail(
        Step::First,
        4,
        "i-new was abandoned: install.sh failed".into(),
    );
    assert_eq!(r.pass, Pass::Abort);
    assert_eq!(
        r.next(),
        Next::Run {
            step: Step::Resume,
            pass: Pass::Abort,
            resumed: false
        }
    );
    run_to_end(&mut r, 5);
    assert_eq!(r.state, RepaveState::Stopped);
    let f = r.failure.as_ref().unwrap();
    assert_eq!((f.step, f.pass), (Step::First, Pass::Forward));
    assert!(r
        .report()
        .contains("failed at first (forward pass): i-new was abandoned"));
}

#[test]
fn a_failure_after_the_drain_rolls_back_when_asked_and_the_rollback_runs_every_step_back() {
    let mut r = repave(OnFailure::Rollback);
    for step in [Step::Suspend, Step::Drain, Step::Point, Step::First] {
        r.start(step, 1);
        r.finish(step, 2, "ok".into());
    }
    r.start(Step::Validate, 3);
    r.fail(Step::Validate, 4, "validate-cmd exited 1".into());
    assert_eq!(r.pass, Pass::Rollback);
    assert_eq!(r.plan.target(r.pass).0.version, "1");
    assert_eq!(r.plan.target(r.pass).1, Some(504));
    let ran = run_to_end(&mut r, 5);
    assert_eq!(
        ran.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        Pass::Rollback.steps()
    );
    assert_eq!(r.state, RepaveState::RolledBack);
}

#[test]
fn no_rollback_before_the_version_changed_nor_of_a_rollback() {
    // The drain failed: the group still points at the old version; nothing to roll back.
    let mut r = repave(OnFailure::Rollback);
    r.start(Step::Suspend, 1);
    r.finish(Step::Suspend, 2, "ok".into());
    r.start(Step::Drain, 3);
    r.fail(Step::Drain, 4, "i-1 drain timed out".into());
    assert_eq!(r.pass, Pass::Abort);

    // The rollback's own failure stops after resuming, and says both.
    let mut r = repave(OnFailure::Rollback);
    for step in [Step::Suspend, Step::Drain, Step::Point] {
        r.start(step, 1);
        r.finish(step, 2, "ok".into());
    }
    r.start(Step::First, 3);
    r.fail(Step::First, 4, "abandoned".into());
    r.start(Step::Drain, 5);
    r.finish(Step::Drain, 6, "ok".into());
    r.start(Step::Point, 7);
    r.fail(Step::Point, 8, "access denied".into());
    assert_eq!(r.pass, Pass::Abort);
    run_to_end(&mut r, 9);
    assert_eq!(r.state, RepaveState::Stopped);
    let why = &r.failure.as_ref().unwrap().why;
    assert!(
        why.starts_with("abandoned; then point (rollback) failed: access denied"),
        "{why}"
    );
}

#[test]
fn failing_to_resume_stops_at_once() {
    let mut r = repave(OnFailure::Stop);
    r.start(Step::Suspend, 1);
    r.fail(Step::Suspend, 2, "throttled".into());
    r.start(Step::Resume, 3);
    r.fail(Step::Resume, 4, "throttled again".into());
    assert_eq!(r.state, RepaveState::Stopped);
    assert_eq!(r.next(), Next::Ended(RepaveState::Stopped));
}

#[test]
fn the_processes_already_suspended_stay_suspended() {
    let p = plan(OnFailure::Stop);
    assert_eq!(
        p.suspends(),
        vec![
            ScalingProcess::AZRebalance,
            ScalingProcess::ReplaceUnhealthy
        ]
    );
}

#[test]
fn downtime_runs_from_the_last_old_node_out_to_the_first_new_in_and_compares_to_its_build() {
    let mut r = repave(OnFailure::Stop);
    r.seen("i-old", Some("1"), 0).left_service_ms = Some(10_000);
    r.last_old_out_ms = Some(10_000);
    let new = r.seen("i-new", Some("2"), 14_000);
    new.in_service_ms = Some(44_000);
    r.first_new_in_ms = Some(44_000);
    assert_eq!(r.downtime_ms(), Some(34_000));
    assert_eq!(r.first_build_ms(), Some(30_000));
    assert!(r.report().contains("downtime 34.0 s"), "{}", r.report());
    assert!(r
        .report()
        .contains("own build took 30.0 s, so the repave added 4.0 s"));
    // Seen twice is one instance.
    r.seen("i-new", Some("2"), 50_000);
    assert_eq!(r.instances.len(), 2);
}

#[test]
fn the_release_comes_from_the_agent_toml_in_the_user_data() {
    let doc = "#cloud-config\nwrite_files:\n  - path: /etc/tfe-node-agent/agent.toml\n    content: |\n      secret_id = \"x\"\n      release_sequence = 505\n";
    assert_eq!(release_in_user_data(doc), Some(505));
    assert_eq!(release_in_user_data("release_sequence_x = 1\n"), None);
    assert_eq!(release_in_user_data("#!/bin/sh\necho hi\n"), None);
    assert_eq!(
        release_in_user_data("  release_sequence=\"506\""),
        Some(506)
    );
}
