//! The milestones of a node's life, each with a stable journald `MESSAGE_ID`, so that
//! `journalctl MESSAGE_ID=…` finds every boot start, every drain, every failed boot of every
//! node, whatever the message text says. The ids are fixed forever: a changed id breaks the
//! operators' queries and alerts. A new milestone gets a new id (`uuidgen | tr -d -`); an id is
//! never reused. The README lists them.

use crate::telemetry::metrics::HookKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Milestone {
    BootStarted,
    SecretsFetched,
    FilesWritten,
    InstallStarted,
    InstallFinished,
    /// TFE is healthy.
    Ready,
    LaunchReleased,
    TerminationNoticed,
    DrainStarted,
    DrainFinished,
    TerminateReleased,
    BootFailed,
    /// A preflight check failed (the table is in the message).
    PreflightFailed,
}

impl Milestone {
    pub const ALL: [Milestone; 13] = [
        Milestone::BootStarted,
        Milestone::SecretsFetched,
        Milestone::FilesWritten,
        Milestone::InstallStarted,
        Milestone::InstallFinished,
        Milestone::Ready,
        Milestone::LaunchReleased,
        Milestone::TerminationNoticed,
        Milestone::DrainStarted,
        Milestone::DrainFinished,
        Milestone::TerminateReleased,
        Milestone::BootFailed,
        Milestone::PreflightFailed,
    ];

    /// The journal's `MESSAGE_ID`: 128 bits as 32 lowercase hex digits (sd-id128 style).
    pub fn message_id(self) -> &'static str {
        match self {
            Milestone::BootStarted => "47ac0183dac0451ea7aa743ca8c96bfd",
            Milestone::SecretsFetched => "0b120f99f96b4923be4769b5b08c76e3",
            Milestone::FilesWritten => "30d52bc93d92467e83c3861debee838d",
            Milestone::InstallStarted => "f74d4839bf214f1f9eaa8ea0c205b8c4",
            Milestone::InstallFinished => "dbff2567c9604d569a262d65cfd7b9bb",
            Milestone::Ready => "6311dd7a219948e2a87b3962675e1bfc",
            Milestone::LaunchReleased => "150b8b40112842cdb87a4c18d44bfa30",
            Milestone::TerminationNoticed => "49937a1aa53e41a3b7a843e21a42dae9",
            Milestone::DrainStarted => "9567db4d22c949a980a8e3df9564307d",
            Milestone::DrainFinished => "7275cca95c9a4e2280c63123a1595baf",
            Milestone::TerminateReleased => "2ac5e76166064e49ad16d9a17a04cd28",
            Milestone::BootFailed => "e82aeeba7fc7439abc546cc525779a06",
            Milestone::PreflightFailed => "1ca1cd83c74a479ba63a661a44d36018",
        }
    }

    /// A short name, as the docs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::BootStarted => "boot started",
            Milestone::SecretsFetched => "secrets fetched",
            Milestone::FilesWritten => "files written",
            Milestone::InstallStarted => "install started",
            Milestone::InstallFinished => "install finished",
            Milestone::Ready => "TFE ready",
            Milestone::LaunchReleased => "launch released",
            Milestone::TerminationNoticed => "termination noticed",
            Milestone::DrainStarted => "drain started",
            Milestone::DrainFinished => "drain finished",
            Milestone::TerminateReleased => "terminate released",
            Milestone::BootFailed => "boot failed",
            Milestone::PreflightFailed => "preflight failed",
        }
    }

    /// The level its entry is logged at.
    pub fn level(self) -> log::Level {
        match self {
            Milestone::BootFailed | Milestone::PreflightFailed => log::Level::Error,
            _ => log::Level::Info,
        }
    }

    /// The lifecycle hook the milestone belongs to (its entry's `HOOK_NAME`).
    pub fn hook(self) -> HookKind {
        match self {
            Milestone::TerminationNoticed
            | Milestone::DrainStarted
            | Milestone::DrainFinished
            | Milestone::TerminateReleased => HookKind::Terminate,
            _ => HookKind::Launch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_id_is_well_formed_and_unique() {
        let mut seen = BTreeSet::new();
        for m in Milestone::ALL {
            let id = m.message_id();
            assert_eq!(id.len(), 32, "{m:?}: {id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{m:?}: {id} is not lowercase hex"
            );
            assert!(seen.insert(id), "{m:?} shares its id {id}");
        }
        let names: BTreeSet<_> = Milestone::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names.len(), Milestone::ALL.len());
    }

    #[test]
    fn the_readme_lists_every_id() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        for m in Milestone::ALL {
            assert!(
                readme.contains(&format!("| {} | `{}` |", m.as_str(), m.message_id())),
                "README.md has no row `| {} | `{}` |`",
                m.as_str(),
                m.message_id()
            );
        }
    }
}
