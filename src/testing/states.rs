//! The node's record at the points the unit tests start from. Every builder applies events the way
//! the agent does (never sets fields), so each is a state the agent can really be in. Only the
//! model is used here: the state machine's own tests use these too.

use crate::model::asg::HookResult;
use crate::model::lifecycle::{Event, NodeState, Notice, Source};
use crate::model::tfe::TrackedProcess;

/// The instance every fake and record belongs to.
pub const INSTANCE: &str = "i-1";
/// The release sequence of the example config, as install.sh records it.
pub const RELEASE: u64 = 504;
/// The boot the fakes run in (`FakeHost`'s default boot id).
pub const BOOT_A: &str = "boot-a";
/// Another boot: the machine rebooted.
pub const BOOT_B: &str = "boot-b";

/// Nothing recorded yet.
pub fn fresh() -> NodeState {
    NodeState::new(INSTANCE)
}

/// A boot has started.
pub fn booting() -> NodeState {
    apply(fresh(), [Event::BootStarted])
}

/// install.sh succeeded; TFE not yet healthy.
pub fn installed() -> NodeState {
    apply(
        booting(),
        [Event::InstallSucceeded {
            release_sequence: RELEASE,
        }],
    )
}

/// Installed, healthy, and the launch hook released with CONTINUE.
pub fn in_service() -> NodeState {
    apply(
        installed(),
        [
            Event::Healthy,
            Event::LaunchReleased(Some(HookResult::Continue)),
        ],
    )
}

/// A notice from `source` at `at` (unix seconds), seen in boot [`BOOT_A`].
pub fn notice(source: Source, at: u64) -> Notice {
    Notice {
        source,
        detail: format!("{} notice", source.as_str()),
        at,
        boot_id: BOOT_A.into(),
        deadline_at: None,
    }
}

/// `state` with `notice` recorded.
pub fn noticed(state: NodeState, notice: Notice) -> NodeState {
    apply(state, [Event::TerminationNoticed(notice)])
}

/// Wall-clock seconds now (what the flows record, through `Clock::unix_now`).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The node-drain process `FakeTfe` starts, as the record keeps it.
pub fn drain_process() -> TrackedProcess {
    TrackedProcess {
        pid: 4242,
        start_ticks: 991,
        boot_id: BOOT_A.into(),
    }
}

/// `state` after `events`, each of which the state machine must accept.
pub fn apply(mut state: NodeState, events: impl IntoIterator<Item = Event>) -> NodeState {
    for event in events {
        state
            .apply(event.clone())
            .unwrap_or_else(|e| panic!("building a test state: {event:?} was refused: {e}"));
    }
    state
}
