use super::*;

fn booted() -> NodeState {
    let mut s = NodeState::new("i-1");
    s.apply(Event::BootStarted).unwrap();
    s
}

#[test]
fn happy_path_installs_once_and_releases_once() {
    let mut s = booted();
    assert_eq!(
        s.plan(),
        BootPlan {
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
    assert_eq!(s.launch_hook.as_deref(), Some("CONTINUE"));
    assert_eq!(
        s.plan(),
        BootPlan {
            install: false,
            release_launch_hook: false
        }
    );
}

#[test]
fn a_second_install_or_release_is_refused() {
    let mut s = booted();
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
    assert_eq!(s.launch_hook.as_deref(), Some("none"));
    assert!(s
        .apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .is_err());
}

#[test]
fn continue_before_ready_is_refused() {
    let mut s = booted();
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
    let mut s = booted();
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
        s.plan(),
        BootPlan {
            install: false,
            release_launch_hook: false
        }
    );
    s.apply(Event::Healthy).unwrap();
    assert_eq!(s.phase, Phase::Ready);
}

#[test]
fn failure_with_continue_policy_still_records_the_release() {
    let mut s = booted();
    s.apply(Event::BootFailed).unwrap();
    s.apply(Event::LaunchReleased(Some(HookResult::Continue)))
        .unwrap();
    assert_eq!(s.phase, Phase::BootFailed);
    assert_eq!(s.launch_hook.as_deref(), Some("CONTINUE"));
}

#[test]
fn restart_of_an_in_service_node_stays_in_service() {
    let mut s = booted();
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
