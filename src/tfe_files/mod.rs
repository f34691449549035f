//! Fetch → decode → validate → render → write: the node's config files from its secrets. Nothing is
//! written unless everything validated, and every file is written atomically.

pub mod fingerprint;
pub mod install_args;
pub mod render;
pub mod secret_bundle;
pub mod validate;

use self::render::{Redaction, RenderedFile};
pub use self::validate::{SettingValue, TfeConfig};
use crate::config::Settings;
pub use crate::model::problem::Problems;
use crate::ports::{Clock, SecretPayload, SecretSource, SecretsError};
use crate::sys::fsutil::{self, FsError};
use crate::sys::retry::Backoff;
use nix::unistd::{Gid, Uid, User};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("fetching secrets from Secrets Manager failed")]
    FetchSecrets(#[source] SecretsError),
    #[error("{0}")]
    Invalid(Problems),
    #[error("writing the node's config files failed")]
    Write(#[source] FsError),
}

/// Fetches and decodes every configured secret in one go, not yet validated: every value the
/// node knows (the support bundle's scan needs them even when they do not validate), and the
/// decoding problems.
pub async fn fetch<S: SecretSource, C: Clock>(
    secrets_port: &S,
    clock: &C,
    cfg: &Settings,
) -> Result<
    (
        secret_bundle::SecretBundle,
        Vec<crate::model::problem::Problem>,
    ),
    ConfigureError,
> {
    let ids: Vec<String> = secret_bundle::requested(&cfg.secrets)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let fetched = fetch_with_retry(secrets_port, clock, cfg, &ids).await?;
    log::info!(
        "fetched {} secret(s) from Secrets Manager: {}",
        ids.len(),
        ids.join(", ")
    );
    Ok(secret_bundle::decode(&cfg.secrets, fetched))
}

/// Fetches every configured secret in one go and validates them with the config.
pub async fn load<S: SecretSource, C: Clock>(
    secrets_port: &S,
    clock: &C,
    cfg: &Settings,
) -> Result<TfeConfig, ConfigureError> {
    let (bundle, problems) = fetch(secrets_port, clock, cfg).await?;
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
pub fn write(cfg: &Settings, tfe: &TfeConfig) -> Result<Vec<RenderedFile>, ConfigureError> {
    let owner = file_owner(&cfg.paths.file_owner);
    if owner.is_none() {
        log::info!(
            "user {:?} does not exist yet; secret files stay root-owned 0600 until install.sh creates it",
            cfg.paths.file_owner
        );
    }
    let files = render::render(tfe, &cfg.paths, Redaction::None);
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
pub fn restrict_after_install(cfg: &Settings, files: &[RenderedFile]) -> Result<(), FsError> {
    let owner = file_owner(&cfg.paths.file_owner);
    for file in files.iter().filter(|f| f.secret) {
        fsutil::restrict(&file.path, file.mode, owner)?;
    }
    Ok(())
}

/// The fetch, retried with backoff and jitter while it fails for now, within
/// `[aws].retry_timeout`; a final answer (not found, denied, undecryptable) ends it at once.
async fn fetch_with_retry<S: SecretSource, C: Clock>(
    secrets_port: &S,
    clock: &C,
    cfg: &Settings,
    ids: &[String],
) -> Result<BTreeMap<String, SecretPayload>, ConfigureError> {
    let give_up = clock.now() + cfg.aws.retry_timeout;
    let mut backoff = Backoff::aws();
    let mut tries = 0;
    loop {
        tries += 1;
        match secrets_port
            .fetch(ids, cfg.secrets.version_stage.as_deref())
            .await
        {
            Ok(fetched) => return Ok(fetched),
            Err(e) if !e.is_transient() => return Err(ConfigureError::FetchSecrets(e)),
            Err(e) => {
                let delay = backoff.next_delay();
                if clock.now() + delay >= give_up {
                    log::error!(
                        "fetching secrets failed {tries} times within [aws].retry_timeout ({}); giving up",
                        humantime::format_duration(cfg.aws.retry_timeout)
                    );
                    return Err(ConfigureError::FetchSecrets(e));
                }
                log::warn!(
                    "fetching secrets failed (try {tries}): {e}; retrying in {:.1}s",
                    delay.as_secs_f32()
                );
                clock.sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::TokioClock;
    use crate::testing::{parse, text, valid_shared, EXAMPLE_CONFIG};
    use std::sync::Mutex;

    /// Secrets Manager that fails for now a set number of times, or with a final answer.
    struct Flaky {
        failures: Mutex<u32>,
        fatal: bool,
        calls: Mutex<Vec<tokio::time::Instant>>,
    }

    impl SecretSource for Flaky {
        async fn fetch(
            &self,
            ids: &[String],
            _: Option<&str>,
        ) -> Result<BTreeMap<String, SecretPayload>, SecretsError> {
            self.calls.lock().unwrap().push(tokio::time::Instant::now());
            let id = ids.join(",");
            if self.fatal {
                return Err(SecretsError::AccessDenied {
                    id,
                    detail: "AccessDeniedException".into(),
                });
            }
            let mut left = self.failures.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(SecretsError::Unavailable {
                    id,
                    detail: "ThrottlingException: Rate exceeded (HTTP 400)".into(),
                });
            }
            let shared = text(&serde_json::Value::Object(valid_shared()).to_string());
            let license =
                SecretPayload::Binary(crate::sys::secret::SecretBytes::new(b"RLI".to_vec()));
            Ok(BTreeMap::from([
                ("tfe/shared".to_string(), shared),
                ("tfe/license".to_string(), license),
            ]))
        }
    }

    fn flaky(failures: u32, fatal: bool) -> Flaky {
        Flaky {
            failures: Mutex::new(failures),
            fatal,
            calls: Mutex::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_fails_for_now_is_retried_with_growing_waits() {
        let cfg = parse(EXAMPLE_CONFIG);
        let source = flaky(4, false);
        load(&source, &TokioClock, &cfg).await.unwrap();
        let calls = source.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 5);
        let gaps: Vec<f64> = calls
            .windows(2)
            .map(|p| (p[1] - p[0]).as_secs_f64())
            .collect();
        crate::sys::retry::assert_backoff_gaps(&gaps, &[1.0, 2.0, 4.0, 8.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_answer_is_not_retried_and_the_budget_ends_the_rest() {
        let cfg = parse(EXAMPLE_CONFIG);
        let denied = flaky(0, true);
        let err = load(&denied, &TokioClock, &cfg).await.unwrap_err();
        assert!(matches!(
            err,
            ConfigureError::FetchSecrets(SecretsError::AccessDenied { .. })
        ));
        assert_eq!(denied.calls.lock().unwrap().len(), 1);

        let start = tokio::time::Instant::now();
        let down = flaky(u32::MAX, false);
        let err = load(&down, &TokioClock, &cfg).await.unwrap_err();
        assert!(matches!(
            err,
            ConfigureError::FetchSecrets(SecretsError::Unavailable { .. })
        ));
        assert!(tokio::time::Instant::now() - start <= cfg.aws.retry_timeout);
        assert!(down.calls.lock().unwrap().len() >= 5);
    }
}
