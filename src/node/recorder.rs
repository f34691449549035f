//! The one owner of the node's state while the agent runs. Every flow records what happened
//! through it: the event is applied to the state machine, the new state is saved atomically, and
//! only then is the transition published (systemd's `STATUS=` today). Nobody else writes
//! `state.json`, and nobody reads it back mid-run: the current state is here, in memory.
//!
//! The flows of one node run on one thread (the agent's runtime is single-threaded) and the two
//! sides of a termination run concurrently in one task, so the state sits in a `RefCell`: every
//! borrow is short and never held across an `.await`.

use crate::model::lifecycle::{Event, IllegalTransition, NodeState, Phase};
use crate::node::state::{StateError, StateStore};
use crate::sys::notify;
use std::cell::{Ref, RefCell};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the node's lifecycle refused a step")]
    Refused(#[from] IllegalTransition),
    #[error("recording the node's progress failed")]
    Save(#[from] StateError),
}

#[derive(Debug)]
pub struct Recorder {
    state: RefCell<NodeState>,
    store: StateStore,
}

impl Recorder {
    /// The recorded state of `instance_id` (a fresh one when nothing, or another instance's
    /// record, is on disk); an unreadable record is an error naming the file.
    pub fn open(store: StateStore, instance_id: &str) -> Result<Self, StateError> {
        let state = store.load(instance_id)?;
        Ok(Self::with_state(store, state))
    }

    /// A recorder for a state already in hand (tests, and the flows' own unit tests).
    pub fn with_state(store: StateStore, state: NodeState) -> Self {
        Self {
            state: RefCell::new(state),
            store,
        }
    }

    /// The current state. Do not hold it across an `.await`.
    pub fn state(&self) -> Ref<'_, NodeState> {
        self.state.borrow()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> NodeState {
        self.state.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// Applies `event`, saves the result, then publishes it. A refused event changes nothing; a
    /// failed save leaves the state in memory as it was before the event (what is on disk).
    pub fn record(&self, event: Event) -> Result<(), RecordError> {
        let mut next = self.state.borrow().clone();
        next.apply(event)?;
        self.store.save(&next)?;
        *self.state.borrow_mut() = next;
        Ok(())
    }

    /// Publishes what the node is doing now (systemd `STATUS=`).
    pub fn say(&self, activity: &str) {
        notify::status(activity);
    }

    /// The node is up (in service, or staying to watch after a failed boot): `READY=1`.
    pub fn ready(&self, activity: &str) {
        notify::ready(activity);
    }

    /// The agent is stopping: `STOPPING=1`.
    pub fn stopping(&self, activity: &str) {
        notify::stopping(activity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::asg::HookResult;

    #[test]
    fn an_event_is_saved_before_it_is_seen_and_a_refused_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("state"));
        let recorder = Recorder::open(store.clone(), "i-1").unwrap();
        recorder
            .record(Event::InstallSucceeded {
                release_sequence: 504,
            })
            .unwrap();
        assert_eq!(recorder.phase(), Phase::Installed);
        assert_eq!(store.load("i-1").unwrap(), recorder.snapshot());

        let before = recorder.snapshot();
        let refused = recorder.record(Event::LaunchReleased(Some(HookResult::Continue)));
        assert!(
            matches!(refused, Err(RecordError::Refused(_))),
            "{refused:?}"
        );
        assert_eq!(recorder.snapshot(), before);
        assert_eq!(store.load("i-1").unwrap(), before);
    }

    #[test]
    fn a_failed_save_keeps_the_state_that_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        // The state dir's parent is a file: nothing can be written.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let recorder = Recorder::with_state(
            StateStore::new(&blocker.join("state")),
            NodeState::new("i-1"),
        );
        let failed = recorder.record(Event::InstallSucceeded {
            release_sequence: 504,
        });
        assert!(matches!(failed, Err(RecordError::Save(_))), "{failed:?}");
        assert_eq!(recorder.snapshot(), NodeState::new("i-1"));
    }
}
