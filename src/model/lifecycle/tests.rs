use super::*;
use crate::testing::states::{booting, drain_process, in_service, BOOT_A, BOOT_B};

#[test]
fn happy_path_installs_once_and_releases_once() {
    let mut s = booting();
    assert_eq!(
        s.boot_steps(),
        BootSteps {
            install: true,
            release_launch_hook: true
        }
    );
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    assert_eq!(s.phase, Phase::Installed);
    s.apply(Event::Healthy).unwrap();
    assert_eq!(s.phase, Phase::Ready);
    s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .unwrap();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.launch_hook.map(LaunchAnswer::as_str), Some("CONTINUE"));
    assert_eq!(
        s.boot_steps(),
        BootSteps {
            install: false,
            release_launch_hook: false
        }
    );
}

#[test]
fn a_second_install_or_release_is_refused() {
    let mut s = booting();
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    let before = s.clone();
    let err = s
        .apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap_err();
    assert_eq!(err.why, "install.sh already succeeded on this instance");
    assert_eq!(s, before, "a refused event changes nothing");
    s.apply(Event::Healthy).unwrap();
    s.apply(Event::LaunchReleased(None)).unwrap();
    assert_eq!(s.launch_hook.map(LaunchAnswer::as_str), Some("none"));
    assert!(s
        .apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .is_err());
}

#[test]
fn continue_before_ready_is_refused() {
    let mut s = booting();
    assert!(s
        .apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .is_err());
    assert!(
        s.apply(Event::Healthy).is_err(),
        "healthy needs an install first"
    );
}

#[test]
fn failure_abandons_and_a_restart_retries_without_reinstalling() {
    let mut s = booting();
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    s.apply(Event::BootFailed).unwrap();
    s.apply(Event::LaunchReleased(Some(HookResult::Abandon)))
        .unwrap();
    assert_eq!(s.phase, Phase::BootFailed);
    s.apply(Event::BootStarted).unwrap();
    assert_eq!(s.phase, Phase::Booting);
    assert_eq!(
        s.boot_steps(),
        BootSteps {
            install: false,
            release_launch_hook: false
        }
    );
    s.apply(Event::Healthy).unwrap();
    assert_eq!(s.phase, Phase::Ready);
}

#[test]
fn failure_with_continue_policy_still_records_the_release() {
    let mut s = booting();
    s.apply(Event::BootFailed).unwrap();
    s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .unwrap();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.launch_hook.map(LaunchAnswer::as_str), Some("CONTINUE"));
}

#[test]
fn restart_of_an_in_service_node_stays_in_service() {
    let mut s = booting();
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    s.apply(Event::Healthy).unwrap();
    s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .unwrap();
    s.apply(Event::BootStarted).unwrap();
    assert_eq!(s.phase, Phase::InService);
    s.apply(Event::Healthy).unwrap();
    assert_eq!(s.phase, Phase::InService);
    assert!(s.apply(Event::BootFailed).is_err());
}

// ------------------------------------------------------------------------- termination half

fn notice(source: Source) -> Notice {
    crate::testing::states::notice(source, 1_700_000_000)
}

fn noticed(source: Source) -> NodeState {
    crate::testing::states::noticed(in_service(), notice(source))
}

fn drained(source: Source) -> NodeState {
    let mut s = noticed(source);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    s
}

fn termination(s: &NodeState) -> &Termination {
    s.termination.as_ref().expect("a termination is recorded")
}

fn every_outcome() -> Vec<DrainOutcome> {
    vec![
        DrainOutcome::Drained,
        DrainOutcome::Skipped { why: "x".into() },
        DrainOutcome::CouldNotStart { why: "x".into() },
        DrainOutcome::Failed { exit_code: 3 },
        DrainOutcome::TimedOut { why: "x".into() },
        DrainOutcome::Interrupted,
    ]
}

const ALL_SOURCES: [Source; 6] = [
    Source::Asg,
    Source::Spot,
    Source::Rebalance,
    Source::Maintenance,
    Source::Shutdown,
    Source::Operator,
];

/// Applies `event` expecting a refusal that leaves the state exactly as it was.
fn refused(s: &mut NodeState, event: Event) -> IllegalTransition {
    let before = s.clone();
    let err = s
        .apply(event.clone())
        .expect_err(&format!("{event:?} should be refused"));
    assert_eq!(*s, before, "refusing {event:?} changed the state");
    assert_eq!(err.event, event);
    err
}

#[test]
fn a_notice_starts_draining_from_every_boot_phase() {
    let mut installed = booting();
    installed
        .apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
    let mut failed = booting();
    failed.apply(Event::BootFailed).unwrap();
    let mut ready = installed.clone();
    ready.apply(Event::Healthy).unwrap();
    for (name, mut s) in [
        ("new", NodeState::new("i-1")),
        ("booting", booting()),
        ("installed", installed),
        ("ready", ready),
        ("in service", in_service()),
        ("boot failed", failed),
    ] {
        let mut n = notice(Source::Spot);
        n.deadline_at = Some(1_700_000_120);
        s.apply(Event::TerminationNoticed(n)).unwrap();
        assert_eq!(s.phase, Phase::Draining, "{name}");
        assert_eq!(
            *termination(&s),
            Termination {
                source: Source::Spot,
                detail: "spot notice".into(),
                noticed_at: 1_700_000_000,
                boot_id: BOOT_A.into(),
                deadline_at: Some(1_700_000_120),
                asg_noticed_at: None,
                drain: DrainRecord::NotStarted,
                app_stopped: false,
                wait_state_seen_at: None,
                hook: None,
            },
            "{name}"
        );
        assert!(!termination(&s).is_done(), "{name}");
    }
}

#[test]
fn termination_events_need_a_notice_first() {
    let mut s = in_service();
    for event in [
        Event::DrainStarted(drain_process()),
        Event::DrainFinished(DrainOutcome::Skipped { why: "x".into() }),
        Event::AppStopped,
        Event::WaitStateSeen { at: 1 },
        Event::TerminateHookDone(HookOutcome::NotApplicable { why: "x".into() }),
        Event::Resumed,
    ] {
        let err = refused(&mut s, event);
        assert_eq!(err.why, "no termination was noticed");
        assert_eq!(err.phase, Phase::InService);
    }
}

#[test]
fn the_drain_starts_at_most_once() {
    let mut s = noticed(Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    assert_eq!(
        termination(&s).drain,
        DrainRecord::Running {
            process: drain_process()
        }
    );
    assert_eq!(s.phase, Phase::Draining);
    let mut other = drain_process();
    other.pid = 7;
    let err = refused(&mut s, Event::DrainStarted(other.clone()));
    assert_eq!(
        err.why,
        "node-drain was already started for this termination"
    );
    // Nor after it finished.
    s.apply(Event::DrainFinished(DrainOutcome::Failed { exit_code: 1 }))
        .unwrap();
    refused(&mut s, Event::DrainStarted(other));
}

#[test]
fn the_drain_finishes_only_after_it_started_or_when_it_never_could() {
    // From NotStarted only the outcomes that need no process are accepted.
    for outcome in every_outcome() {
        let mut s = noticed(Source::Asg);
        let no_process = matches!(
            outcome,
            DrainOutcome::Skipped { .. } | DrainOutcome::CouldNotStart { .. }
        );
        if no_process {
            s.apply(Event::DrainFinished(outcome.clone())).unwrap();
            assert_eq!(
                termination(&s).drain,
                DrainRecord::Finished {
                    outcome: outcome.clone()
                }
            );
        } else {
            let err = refused(&mut s, Event::DrainFinished(outcome.clone()));
            assert_eq!(err.why, "no drain is running");
        }
    }
    // From Running every outcome is accepted, once.
    for outcome in every_outcome() {
        let mut s = noticed(Source::Asg);
        s.apply(Event::DrainStarted(drain_process())).unwrap();
        s.apply(Event::DrainFinished(outcome.clone())).unwrap();
        assert_eq!(
            termination(&s).drain,
            DrainRecord::Finished {
                outcome: outcome.clone()
            }
        );
        for again in every_outcome() {
            refused(&mut s, Event::DrainFinished(again));
        }
    }
}

#[test]
fn the_app_is_stopped_only_after_the_drain() {
    let mut s = noticed(Source::Asg);
    let err = refused(&mut s, Event::AppStopped);
    assert_eq!(err.why, "the app is stopped only after the drain");
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    refused(&mut s, Event::AppStopped);
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    s.apply(Event::AppStopped).unwrap();
    assert!(termination(&s).app_stopped);
}

#[test]
fn the_wait_state_keeps_its_first_sighting() {
    let mut s = noticed(Source::Asg);
    s.apply(Event::WaitStateSeen { at: 100 }).unwrap();
    s.apply(Event::WaitStateSeen { at: 200 }).unwrap();
    assert_eq!(termination(&s).wait_state_seen_at, Some(100));
    assert_eq!(s.phase, Phase::Draining);
}

#[test]
fn the_terminate_hook_is_done_once() {
    for first in [
        HookOutcome::Released {
            result: HookResult::Continue,
        },
        HookOutcome::Released {
            result: HookResult::Abandon,
        },
        HookOutcome::ResolvedElsewhere {
            state: Some("Terminating:Proceed".into()),
        },
        HookOutcome::NotApplicable { why: "x".into() },
    ] {
        let mut s = noticed(Source::Asg);
        s.apply(Event::TerminateHookDone(first.clone())).unwrap();
        assert_eq!(termination(&s).hook, Some(first.clone()));
        let err = refused(
            &mut s,
            Event::TerminateHookDone(HookOutcome::Released {
                result: HookResult::Continue,
            }),
        );
        assert_eq!(err.why, "the terminate hook was already released");
    }
}

#[test]
fn an_asg_termination_is_done_with_the_drain_and_the_hook() {
    // Drain first, then the hook.
    let mut s = drained(Source::Asg);
    assert!(!termination(&s).is_done(), "the hook is still to release");
    assert_eq!(s.phase, Phase::Draining);
    s.apply(Event::AppStopped).unwrap();
    assert_eq!(s.phase, Phase::Draining);
    s.apply(Event::TerminateHookDone(HookOutcome::Released {
        result: HookResult::Continue,
    }))
    .unwrap();
    assert!(termination(&s).is_done());
    assert_eq!(s.phase, Phase::Drained);

    // The hook first (found resolved elsewhere), then the drain.
    let mut s = noticed(Source::Asg);
    s.apply(Event::TerminateHookDone(HookOutcome::ResolvedElsewhere {
        state: None,
    }))
    .unwrap();
    assert_eq!(s.phase, Phase::Draining, "the drain is still running");
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    assert_eq!(s.phase, Phase::Draining);
    s.apply(Event::DrainFinished(DrainOutcome::TimedOut {
        why: "x".into(),
    }))
    .unwrap();
    assert_eq!(s.phase, Phase::Drained);
}

#[test]
fn other_terminations_are_done_with_the_drain_alone() {
    for source in ALL_SOURCES.into_iter().filter(|s| *s != Source::Asg) {
        let mut s = noticed(source);
        s.apply(Event::DrainStarted(drain_process())).unwrap();
        assert_eq!(s.phase, Phase::Draining, "{source:?}");
        s.apply(Event::DrainFinished(DrainOutcome::Failed { exit_code: 2 }))
            .unwrap();
        assert!(termination(&s).is_done(), "{source:?}");
        assert_eq!(s.phase, Phase::Drained, "{source:?}");
        // A hook outcome recorded later changes nothing about that.
        s.apply(Event::TerminateHookDone(HookOutcome::NotApplicable {
            why: "x".into(),
        }))
        .unwrap();
        assert_eq!(s.phase, Phase::Drained, "{source:?}");
    }
}

/// Moves a freshly noticed termination to a later stage.
type Advance = fn(&mut NodeState);

#[test]
fn a_repeated_notice_changes_nothing() {
    let stages: Vec<(&str, Advance)> = vec![
        ("noticed", |_| {}),
        ("running", |s| {
            s.apply(Event::DrainStarted(drain_process())).unwrap();
        }),
        ("drained", |s| {
            s.apply(Event::DrainStarted(drain_process())).unwrap();
            s.apply(Event::DrainFinished(DrainOutcome::Drained))
                .unwrap();
            s.apply(Event::AppStopped).unwrap();
        }),
        ("hook done", |s| {
            s.apply(Event::DrainFinished(DrainOutcome::Skipped {
                why: "x".into(),
            }))
            .unwrap();
            s.apply(Event::TerminateHookDone(HookOutcome::Released {
                result: HookResult::Continue,
            }))
            .unwrap();
        }),
    ];
    for source in ALL_SOURCES {
        for (stage, advance) in &stages {
            let mut s = noticed(source);
            advance(&mut s);
            let before = s.clone();
            // The same notice again, and the same kind seen later with other details.
            s.apply(Event::TerminationNoticed(notice(source))).unwrap();
            let mut later = notice(source);
            later.detail = "seen again".into();
            later.at += 60;
            later.boot_id = BOOT_B.into();
            later.deadline_at = Some(1);
            s.apply(Event::TerminationNoticed(later)).unwrap();
            assert_eq!(s, before, "{source:?} at {stage}");
            // Another non-ASG reason changes nothing either.
            if source != Source::Asg {
                let other = if source == Source::Spot {
                    Source::Shutdown
                } else {
                    Source::Spot
                };
                s.apply(Event::TerminationNoticed(notice(other))).unwrap();
                assert_eq!(s, before, "{source:?} then {other:?} at {stage}");
            }
        }
    }
    // And an ASG termination stays one whatever else is noticed.
    let mut s = noticed(Source::Asg);
    let before = s.clone();
    s.apply(Event::TerminationNoticed(notice(Source::Shutdown)))
        .unwrap();
    assert_eq!(s, before);
}

#[test]
fn an_asg_notice_after_another_drain_escalates() {
    for source in [
        Source::Spot,
        Source::Rebalance,
        Source::Maintenance,
        Source::Shutdown,
    ] {
        let mut s = drained(source);
        s.apply(Event::AppStopped).unwrap();
        assert_eq!(s.phase, Phase::Drained, "{source:?}");
        let mut asg = notice(Source::Asg);
        asg.detail = "target-lifecycle-state Terminated".into();
        s.apply(Event::TerminationNoticed(asg)).unwrap();
        assert_eq!(
            s.phase,
            Phase::Draining,
            "{source:?}: the hook is still to come"
        );
        let t = termination(&s);
        assert_eq!(t.source, Source::Asg);
        assert_eq!(t.detail, "target-lifecycle-state Terminated");
        assert!(!t.is_done());
        assert_eq!(
            t.drain,
            DrainRecord::Finished {
                outcome: DrainOutcome::Drained
            },
            "the drain is not repeated"
        );
        assert_eq!(
            s.termination_steps().unwrap(),
            TerminationSteps {
                drain: DrainStep::Done(DrainOutcome::Drained),
                stop_app: false,
                handle_hook: true,
            },
            "{source:?}"
        );
        assert!(!s.resumable(BOOT_B), "an ASG termination is never resumed");
        s.apply(Event::TerminateHookDone(HookOutcome::Released {
            result: HookResult::Continue,
        }))
        .unwrap();
        assert_eq!(s.phase, Phase::Drained);
    }
    // Escalating while that drain still runs keeps the running drain.
    let mut s = noticed(Source::Rebalance);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::TerminationNoticed(notice(Source::Asg)))
        .unwrap();
    assert_eq!(
        s.termination_steps().unwrap().drain,
        DrainStep::Adopt(drain_process())
    );
}

#[test]
fn the_plan_after_a_restart_says_what_is_left() {
    assert_eq!(in_service().termination_steps(), None);

    let s = noticed(Source::Asg);
    assert_eq!(
        s.termination_steps().unwrap(),
        TerminationSteps {
            drain: DrainStep::Start,
            stop_app: true,
            handle_hook: true,
        }
    );

    let mut s = noticed(Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    assert_eq!(
        s.termination_steps().unwrap(),
        TerminationSteps {
            drain: DrainStep::Adopt(drain_process()),
            stop_app: true,
            handle_hook: true,
        },
        "a running drain is adopted, never started again"
    );

    // Finished: the app is stopped only after a successful drain, and only once.
    for outcome in every_outcome() {
        let mut s = noticed(Source::Asg);
        if !matches!(
            outcome,
            DrainOutcome::Skipped { .. } | DrainOutcome::CouldNotStart { .. }
        ) {
            s.apply(Event::DrainStarted(drain_process())).unwrap();
        }
        s.apply(Event::DrainFinished(outcome.clone())).unwrap();
        let plan = s.termination_steps().unwrap();
        assert_eq!(plan.drain, DrainStep::Done(outcome.clone()));
        assert_eq!(
            plan.stop_app,
            outcome == DrainOutcome::Drained,
            "{outcome:?}"
        );
        assert!(plan.handle_hook);
        if outcome == DrainOutcome::Drained {
            s.apply(Event::AppStopped).unwrap();
            assert!(!s.termination_steps().unwrap().stop_app);
        }
        s.apply(Event::TerminateHookDone(HookOutcome::Released {
            result: HookResult::Abandon,
        }))
        .unwrap();
        assert!(!s.termination_steps().unwrap().handle_hook);
    }
}

#[test]
fn the_hook_result_follows_the_drain_outcome() {
    for outcome in every_outcome() {
        let ok = outcome.succeeded();
        assert_eq!(
            ok,
            matches!(
                outcome,
                DrainOutcome::Drained | DrainOutcome::Skipped { .. }
            ),
            "{outcome:?}"
        );
        assert_eq!(
            hook_result(&outcome, HookResult::Abandon),
            if ok {
                HookResult::Continue
            } else {
                HookResult::Abandon
            },
            "{outcome:?} with on_failure=abandon"
        );
        assert_eq!(
            hook_result(&outcome, HookResult::Continue),
            HookResult::Continue,
            "{outcome:?} with on_failure=continue"
        );
        assert!(!outcome.describe().is_empty());
    }
    assert_eq!(
        DrainOutcome::Failed { exit_code: 3 }.describe(),
        "node-drain failed with exit code 3"
    );
}

#[test]
fn only_a_drain_the_instance_survived_is_resumable() {
    assert!(!in_service().resumable(BOOT_B), "nothing to resume");
    for source in ALL_SOURCES {
        let s = drained(source);
        assert!(
            !s.resumable(BOOT_A),
            "{source:?}: same boot, an agent restart"
        );
        assert_eq!(
            s.resumable(BOOT_B),
            !matches!(source, Source::Asg | Source::Operator),
            "{source:?}: after a reboot (an operator's drain waits for the operator)"
        );
    }
}

#[test]
fn resuming_clears_the_termination_and_restarts_the_app_after_a_drain() {
    // Not started: nothing was stopped.
    let mut s = noticed(Source::Shutdown);
    s.apply(Event::Resumed).unwrap();
    assert_eq!(s.termination, None);
    assert_eq!(s.phase, Phase::Booting);
    assert!(!s.restart_app);

    for (name, advance) in [
        ("running", None),
        ("drained", Some(DrainOutcome::Drained)),
        ("failed", Some(DrainOutcome::Failed { exit_code: 1 })),
        ("interrupted", Some(DrainOutcome::Interrupted)),
    ] {
        let mut s = noticed(Source::Spot);
        s.apply(Event::DrainStarted(drain_process())).unwrap();
        if let Some(outcome) = advance {
            s.apply(Event::DrainFinished(outcome)).unwrap();
        }
        s.apply(Event::Resumed).unwrap();
        assert_eq!(s.termination, None, "{name}");
        assert_eq!(s.phase, Phase::Booting, "{name}");
        assert!(s.restart_app, "{name}");
        // The boot resumes without installing or releasing the launch hook again; healthy
        // again clears the restart, and the node (its launch hook answered CONTINUE before) is
        // in service again — not "ready", waiting for a release that will never come.
        s.apply(Event::BootStarted).unwrap();
        assert_eq!(
            s.boot_steps(),
            BootSteps {
                install: false,
                release_launch_hook: false
            }
        );
        s.apply(Event::Healthy).unwrap();
        assert!(!s.restart_app);
        assert_eq!(s.phase, Phase::InService);
    }

    let mut s = drained(Source::Asg);
    let err = refused(&mut s, Event::Resumed);
    assert_eq!(err.why, "an ASG termination is never undone");
}

#[test]
fn resuming_after_a_drain_that_never_ran_does_not_restart_the_app() {
    for outcome in [
        DrainOutcome::Skipped { why: "x".into() },
        DrainOutcome::CouldNotStart { why: "x".into() },
    ] {
        let mut s = noticed(Source::Shutdown);
        s.apply(Event::DrainFinished(outcome.clone())).unwrap();
        s.apply(Event::Resumed).unwrap();
        assert!(
            !s.restart_app,
            "{outcome:?}: no node-drain ran, so nothing stopped the app"
        );
    }
}

#[test]
fn boot_events_are_refused_once_terminating() {
    for mut s in [noticed(Source::Asg), drained(Source::Spot)] {
        for event in [
            Event::BootStarted,
            Event::InstallSucceeded {
                release_sequence: 505,
            },
            Event::Healthy,
            Event::BootFailed,
            Event::LaunchReleased(None),
            Event::LaunchReleased(Some(HookResult::Continue)),
            Event::LaunchReleased(Some(HookResult::Abandon)),
        ] {
            let err = refused(&mut s, event);
            assert_eq!(
                err.why,
                "the node is terminating; boot events no longer apply"
            );
        }
    }
}

#[test]
fn a_termination_during_boot_may_still_abandon_the_launch_hook() {
    let mut s = booting();
    s.apply(Event::InstallSucceeded {
        release_sequence: 504,
    })
    .unwrap();
    s.apply(Event::TerminationNoticed(notice(Source::Asg)))
        .unwrap();
    refused(&mut s, Event::LaunchReleased(Some(HookResult::Continue)));
    refused(&mut s, Event::LaunchReleased(None));
    refused(&mut s, Event::Healthy);
    let before = s.clone();
    s.apply(Event::LaunchReleased(Some(HookResult::Abandon)))
        .unwrap();
    assert_eq!(s.launch_hook.map(LaunchAnswer::as_str), Some("ABANDON"));
    assert_eq!(s.phase, Phase::Draining, "still draining");
    assert_eq!(
        s.termination, before.termination,
        "the termination is untouched"
    );
    // Once only.
    refused(&mut s, Event::LaunchReleased(Some(HookResult::Abandon)));
}

#[test]
fn a_state_with_a_termination_survives_a_round_trip() {
    let mut s = noticed(Source::Asg);
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::WaitStateSeen { at: 1_700_000_010 }).unwrap();
    let json = serde_json::to_string_pretty(&s).unwrap();
    assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), s);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["phase"], "draining");
    assert_eq!(v["termination"]["source"], "asg");
    assert_eq!(v["termination"]["drain"]["state"], "running");
    assert_eq!(v["termination"]["drain"]["process"]["pid"], 4242);
    assert!(v.get("restart_app").is_none(), "false is not written");

    // Every drain and hook outcome, finished.
    for outcome in every_outcome() {
        let mut s = s.clone();
        s.apply(Event::DrainFinished(outcome.clone())).unwrap();
        s.apply(Event::TerminateHookDone(HookOutcome::Released {
            result: HookResult::Abandon,
        }))
        .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<NodeState>(&json).unwrap(),
            s,
            "{json}"
        );
    }
    for hook in [
        HookOutcome::ResolvedElsewhere {
            state: Some("Terminating:Proceed".into()),
        },
        HookOutcome::NotApplicable { why: "x".into() },
    ] {
        let mut s = s.clone();
        s.apply(Event::TerminateHookDone(hook)).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<NodeState>(&json).unwrap(),
            s,
            "{json}"
        );
    }

    // restart_app is written when set.
    let mut r = drained(Source::Shutdown);
    r.apply(Event::Resumed).unwrap();
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"restart_app\":true"), "{json}");
    assert!(!json.contains("termination"), "{json}");
    assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), r);
}

#[test]
fn an_older_state_file_still_loads() {
    // Written before terminations were recorded.
    let old = r#"{
        "instance_id": "i-1",
        "phase": "in-service",
        "installed_release": 504,
        "launch_hook": "CONTINUE"
    }"#;
    let s: NodeState = serde_json::from_str(old).unwrap();
    assert_eq!(s, in_service());
    assert_eq!(s.termination, None);
    assert!(!s.restart_app);

    // A termination recorded without the later `deadline_at`.
    let old = r#"{
        "instance_id": "i-1",
        "phase": "draining",
        "installed_release": 504,
        "launch_hook": "CONTINUE",
        "termination": {
            "source": "spot",
            "detail": "spot notice",
            "noticed_at": 1700000000,
            "boot_id": "boot-a",
            "drain": {"state": "finished", "outcome": {"kind": "failed", "exit_code": 3}},
            "app_stopped": false,
            "wait_state_seen_at": null,
            "hook": {"kind": "released", "result": "ABANDON"}
        }
    }"#;
    let s: NodeState = serde_json::from_str(old).unwrap();
    let t = termination(&s);
    assert_eq!(t.deadline_at, None);
    assert_eq!(
        t.drain,
        DrainRecord::Finished {
            outcome: DrainOutcome::Failed { exit_code: 3 }
        }
    );
    assert_eq!(
        t.hook,
        Some(HookOutcome::Released {
            result: HookResult::Abandon
        })
    );
}

#[test]
fn a_launch_hook_the_group_waits_on_again_is_released_again_and_counted() {
    let mut s = booting();
    assert!(
        s.apply(Event::LaunchReleasedAgain(HookResult::Continue))
            .is_err(),
        "a first release is not a second one"
    );
    let mut s = in_service();
    // A restart while the group waits on the hook again (standby exit): boot, healthy, release.
    s.apply(Event::BootStarted).unwrap();
    s.apply(Event::Healthy).unwrap();
    s.apply(Event::LaunchReleasedAgain(HookResult::Continue))
        .unwrap();
    assert_eq!(s.phase, Phase::InService);
    assert_eq!(s.launch_released_again, 1);
    s.apply(Event::LaunchReleasedAgain(HookResult::Abandon))
        .unwrap();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.launch_hook.map(LaunchAnswer::as_str), Some("ABANDON"));
    assert_eq!(s.launch_released_again, 2);
}

#[test]
fn a_state_file_without_the_release_counter_still_reads() {
    let old = r#"{"instance_id":"i-1","phase":"in-service","installed_release":504,"launch_hook":"CONTINUE"}"#;
    let s: NodeState = serde_json::from_str(old).unwrap();
    assert_eq!(s.launch_released_again, 0);
    assert!(!serde_json::to_string(&s)
        .unwrap()
        .contains("launch_released_again"));
}

#[test]
fn a_return_to_the_warm_pool_expects_a_hook_and_is_resumed_on_the_next_boot() {
    let mut s = noticed(Source::WarmPool);
    let t = s.termination.clone().unwrap();
    assert!(!t.is_done(), "the terminate hook is still to be released");
    assert!(Source::WarmPool.has_hook() && Source::Asg.has_hook());
    assert!(!Source::Spot.has_hook() && !Source::Shutdown.has_hook());
    let boot = t.boot_id.clone();
    assert!(!s.resumable(&boot), "not on the same boot");
    assert!(s.resumable("the-boot-after-leaving-the-pool"));
    s.apply(Event::Resumed).unwrap();
    assert!(s.termination.is_none());
}

#[test]
fn a_recorded_drain_that_never_ran_may_be_started_again_but_not_a_finished_one() {
    let mut s = noticed(Source::Asg);
    assert!(
        s.apply(Event::DrainNeverRan).is_err(),
        "nothing recorded yet"
    );
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainNeverRan).unwrap();
    assert_eq!(
        s.termination.as_ref().unwrap().drain,
        DrainRecord::NotStarted
    );
    s.apply(Event::DrainStarted(drain_process())).unwrap();
    s.apply(Event::DrainFinished(DrainOutcome::Drained))
        .unwrap();
    assert!(
        s.apply(Event::DrainNeverRan).is_err(),
        "a finished drain ran"
    );
}

#[test]
fn an_operators_drain_is_undone_by_an_app_restart_and_nothing_else_is() {
    // Ended: back in service at once (the launch hook was answered CONTINUE before).
    for outcome in every_outcome() {
        let mut s = noticed(Source::Operator);
        assert!(!s.restorable(), "still draining");
        refused(&mut s, Event::Restored);
        s.apply(Event::DrainStarted(drain_process())).unwrap();
        s.apply(Event::DrainFinished(outcome.clone())).unwrap();
        assert!(s.restorable(), "{outcome:?}");
        s.apply(Event::Restored).unwrap();
        assert_eq!(s.termination, None, "{outcome:?}");
        assert_eq!(s.phase, Phase::InService, "{outcome:?}");
        assert!(!s.restart_app);
        // Restored, it can be drained again: a new termination starts a new drain.
        s.apply(Event::TerminationNoticed(notice(Source::Operator)))
            .unwrap();
        assert_eq!(termination(&s).drain, DrainRecord::NotStarted);
    }
    // Another source, or an ASG termination that joined the operator's drain: never.
    for source in ALL_SOURCES.into_iter().filter(|s| *s != Source::Operator) {
        let mut s = drained(source);
        assert!(!s.restorable(), "{source:?}");
        let err = refused(&mut s, Event::Restored);
        assert_eq!(
            err.why, "only an operator's drain is undone by an app restart",
            "{source:?}"
        );
    }
    let mut s = drained(Source::Operator);
    s.apply(Event::TerminationNoticed(notice(Source::Asg)))
        .unwrap();
    assert_eq!(termination(&s).source, Source::Asg);
    assert!(!s.restorable());
    refused(&mut s, Event::Restored);
    // A reboot does not undo an operator's drain either.
    assert!(!drained(Source::Operator).resumable(BOOT_B));
}
