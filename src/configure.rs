//! Fetch → decode → validate → render → write: the node's config files from its secrets. Nothing is
//! written unless everything validated, and every file is written atomically.

use crate::config::AgentConfig;
use crate::fsutil::{self, FsError};
use crate::ports::{SecretSource, SecretsError};
use crate::render::{self, Redaction, RenderedFile};
use crate::secrets;
use crate::validate::{self, NodePlan, Problem};
use nix::unistd::{Gid, Uid, User};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("fetching secrets from Secrets Manager failed")]
    FetchSecrets(#[source] SecretsError),
    #[error("{0}")]
    Invalid(Problems),
    #[error("writing the node's config files failed")]
    Write(#[source] FsError),
}

/// All validation problems, one per line in the error text.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration is invalid ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Fetches every configured secret in one go and validates them with the config.
pub async fn plan<S: SecretSource>(
    secrets_port: &S,
    cfg: &AgentConfig,
) -> Result<NodePlan, ConfigureError> {
    let ids: Vec<String> = secrets::requested(&cfg.secrets)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let fetched = secrets_port
        .fetch(&ids, cfg.secrets.version_stage.as_deref())
        .await
        .map_err(ConfigureError::FetchSecrets)?;
    log::info!(
        "fetched {} secret(s) from Secrets Manager: {}",
        ids.len(),
        ids.join(", ")
    );
    let (bundle, problems) = secrets::decode(&cfg.secrets, fetched);
    validate::validate(cfg, bundle, problems).map_err(|p| ConfigureError::Invalid(Problems(p)))
}

/// The uid/gid secret files belong to, or `None` (root) when that user does not exist (yet).
pub fn file_owner(name: &str) -> Option<(Uid, Gid)> {
    match User::from_name(name) {
        Ok(Some(user)) => Some((user.uid, user.gid)),
        _ => None,
    }
}

/// Writes all rendered files. Secret-bearing files go to `owner`; the rest stay root's.
pub fn write(cfg: &AgentConfig, plan: &NodePlan) -> Result<Vec<RenderedFile>, ConfigureError> {
    let owner = file_owner(&cfg.paths.file_owner);
    if owner.is_none() {
        log::info!(
            "user {:?} does not exist yet; secret files stay root-owned 0600 until install.sh creates it",
            cfg.paths.file_owner
        );
    }
    let files = render::render(plan, &cfg.paths, Redaction::None);
    for file in &files {
        if let Some(dir) = file.path.parent() {
            fsutil::create_dir(dir, 0o755).map_err(ConfigureError::Write)?;
        }
        let file_owner = if file.secret { owner } else { None };
        fsutil::atomic_write(&file.path, &file.bytes, file.mode, file_owner)
            .map_err(ConfigureError::Write)?;
        log::info!(
            "wrote {} (mode {:04o}, {} bytes)",
            file.path.display(),
            file.mode,
            file.bytes.len()
        );
    }
    Ok(files)
}

/// install.sh runs `chmod a+r /etc/replicated.conf` (docs/design/tfe-tools.md §1.4); a file
/// holding a password must not stay world-readable. Now that install.sh has created the daemon's
/// user, hand it the files.
pub fn restrict_after_install(cfg: &AgentConfig, files: &[RenderedFile]) -> Result<(), FsError> {
    let owner = file_owner(&cfg.paths.file_owner);
    for file in files.iter().filter(|f| f.secret) {
        fsutil::restrict(&file.path, file.mode, owner)?;
    }
    Ok(())
}
