//! The real outside world behind `crate::ports`: AWS (Secrets Manager, Auto Scaling, IMDSv2), the
//! TFE tools (install.sh, replicatedctl, `replicated admin`) and the host (boot id, systemd).

pub(crate) mod aws;
pub(crate) mod host;
pub mod redis;
pub mod tfe;
