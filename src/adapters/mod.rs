//! The real outside world behind `crate::ports`: AWS (Secrets Manager, Auto Scaling, IMDSv2), the
//! TFE tools (install.sh, replicatedctl, `replicated admin`), the host (boot id, systemd) and the
//! cluster store (Redis).

pub(crate) mod aws;
pub(crate) mod host;
pub mod probes;
pub mod redis;
pub mod tfe;

/// The repave's AWS side and the SDK configuration it is built from: public for
/// tests/launch_templates.rs, which runs it against moto (the rest of `aws` stays crate-private).
pub use aws::{sdk_config, GroupsClient};
