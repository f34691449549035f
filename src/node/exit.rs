//! Exit codes, one per class of failure, documented in docs/operate/exit-codes.md.

use crate::node::boot::BootError;
use crate::tfe_files::ConfigureError;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// A bug or an unexpected local failure.
    Internal = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The agent config or the secrets' contents are invalid.
    Config = 3,
    /// An AWS call failed (IMDS, Secrets Manager, Auto Scaling).
    Aws = 4,
    /// install.sh failed, timed out, or was refused (digest pin).
    Install = 5,
    /// TFE did not become ready within [readiness].timeout.
    ReadinessTimeout = 6,
    /// Writing files or the state record failed.
    LocalIo = 7,
    /// `status`: the agent runs, but the node is not ready (booting, failed, draining).
    NotReady = 8,
    /// `status`: no agent answers (what state.json records is shown).
    NoAgent = 9,
    /// The join guard refused this node (`boot`/`run`), or `cluster` found the cluster
    /// inconsistent.
    Cluster = 10,
    /// `cluster`: the cluster store could not be read.
    ClusterStore = 11,
    /// A preflight check failed (`boot`/`run` before install.sh, or `preflight`).
    Preflight = 12,
    /// `drift`: TFE runs settings that differ from the rendered ones.
    Drift = 13,
    /// `support-bundle`: refused, a secret value was found in it; nothing was written.
    BundleRefused = 14,
    /// `drain`, `app restart`, `app-config set`: the request was refused (the node is booting, a
    /// drain or restart runs, the key's value comes from a secret); nothing was started.
    Refused = 15,
    /// `drain`, `app restart`, `app-config set`: the work was started and failed (node-drain
    /// failed, the app did not stop or start, the tool refused the change), or did not end in
    /// time; `drift`: the export failed or timed out.
    OperationFailed = 16,
    /// `support-bundle`: the agent's bundle was written, but TFE's (`replicated admin
    /// support-bundle`) failed or timed out.
    TfeBundleFailed = 17,
    /// `repave`: a step failed and the repave stopped at a safe point or rolled back, or its
    /// orchestrator lost the lease to another; the report says where the group is.
    RepaveStopped = 18,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    pub fn of_configure(e: &ConfigureError) -> Exit {
        match e {
            ConfigureError::FetchSecrets(_) => Exit::Aws,
            ConfigureError::Invalid(_) => Exit::Config,
            ConfigureError::Write(_) => Exit::LocalIo,
        }
    }

    pub fn of_boot(e: &BootError) -> Exit {
        match e {
            BootError::DiscoverHook { .. }
            | BootError::Release { .. }
            | BootError::LaunchHookLost { .. } => Exit::Aws,
            BootError::Configure(c) => Exit::of_configure(c),
            BootError::Install(_) => Exit::Install,
            BootError::Readiness(_) => Exit::ReadinessTimeout,
            BootError::Restrict(_) | BootError::State(_) => Exit::LocalIo,
            BootError::Lifecycle(_) => Exit::Internal,
            BootError::JoinRefused(_) => Exit::Cluster,
            BootError::Preflight(_) => Exit::Preflight,
        }
    }
}
