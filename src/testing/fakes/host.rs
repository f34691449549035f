//! The fake of the host.

use crate::ports::Host;
use crate::testing::states::BOOT_A;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The machine: its boot id ([`BOOT_A`] unless told) and whether the system is stopping.
pub struct FakeHost {
    boot_id: String,
    stopping: AtomicBool,
    asked: AtomicUsize,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            boot_id: BOOT_A.into(),
            stopping: AtomicBool::new(false),
            asked: AtomicUsize::new(0),
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
}
