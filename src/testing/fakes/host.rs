//! The fake of the host.

use crate::ports::{Host, JournalError};
use crate::testing::states::BOOT_A;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The machine: its boot id ([`BOOT_A`] unless told) and whether the system is stopping.
pub struct FakeHost {
    boot_id: String,
    stopping: AtomicBool,
    asked: AtomicUsize,
    /// What `journal` answers (None: journalctl is missing).
    pub journal: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            boot_id: BOOT_A.into(),
            stopping: AtomicBool::new(false),
            asked: AtomicUsize::new(0),
            journal: std::sync::Mutex::new(Some(
                b"2026-12-03T17:00:00+0000 host tfe-node-agent[1]: started\n".to_vec(),
            )),
        }
    }
}

impl FakeHost {
    /// A machine in another boot.
    pub fn booted_as(boot_id: &str) -> Self {
        Self {
            boot_id: boot_id.into(),
            ..Self::default()
        }
    }

    pub fn set_stopping(&self, stopping: bool) {
        self.stopping.store(stopping, Ordering::SeqCst);
    }

    /// How often "is the system stopping" was asked.
    pub fn stopping_asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Host for FakeHost {
    fn boot_id(&self) -> String {
        self.boot_id.clone()
    }
    async fn system_stopping(&self) -> bool {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.stopping.load(Ordering::SeqCst)
    }
    async fn journal(&self, lines: u32) -> Result<Vec<u8>, JournalError> {
        let text = self.journal.lock().unwrap().clone();
        let text = text.ok_or_else(|| JournalError::Missing {
            command: "journalctl".into(),
        })?;
        let all: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let from = all.len().saturating_sub(lines as usize);
        Ok(all[from..].concat())
    }
}
