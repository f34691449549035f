//! Persists [`NodeState`] in `[paths].state_dir/state.json`, atomically, so a restarted or rebooted
//! agent resumes instead of repeating work.

use crate::model::lifecycle::NodeState;
use crate::sys::fsutil::{self, FsError};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt ({detail}); inspect it, then remove it to start over")]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    Write(#[from] FsError),
}

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The recorded state of `instance_id`. A state recorded for another instance (a state dir
    /// baked into the AMI) is ignored: nothing recorded there happened on this instance.
    pub fn load(&self, instance_id: &str) -> Result<NodeState, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(NodeState::new(instance_id))
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: NodeState = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if state.instance_id != instance_id {
            log::warn!(
                "state file {} belongs to instance {}, not {instance_id}; starting fresh",
                path.display(),
                state.instance_id
            );
            return Ok(NodeState::new(instance_id));
        }
        Ok(state)
    }

    /// Whatever is recorded, for whichever instance (`status` off the running agent): `None`
    /// when nothing is.
    pub fn recorded(&self) -> Result<Option<NodeState>, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    pub fn save(&self, state: &NodeState) -> Result<(), StateError> {
        fsutil::create_dir(&self.dir, 0o700)?;
        let mut bytes = serde_json::to_vec_pretty(state).expect("state always serializes");
        bytes.push(b'\n');
        fsutil::atomic_write(&self.path(), &bytes, 0o600, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::{Event, Phase};

    #[test]
    fn round_trip_and_foreign_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("state"));
        let mut s = store.load("i-1").unwrap();
        assert_eq!(s.phase, Phase::Booting);
        s.apply(Event::InstallSucceeded {
            release_sequence: 504,
        })
        .unwrap();
        store.save(&s).unwrap();
        assert_eq!(store.load("i-1").unwrap(), s);
        assert_eq!(store.load("i-2").unwrap(), NodeState::new("i-2"));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), "{not json").unwrap();
        let err = store.load("i-1").unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
