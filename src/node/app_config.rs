//! `app-config set KEY VALUE`: one setting changed in the running app on this node, the way the
//! Active/Active guide says (`replicated admin app-config -k KEY -v VALUE`), with what the guide
//! leaves to the operator done here: the value checked by the rules of boot first, keys whose
//! value comes from Secrets Manager refused (argv is visible to every process on the node), the
//! change recorded, and where to make it permanent said.

use crate::config::Settings;
use crate::model::problem::Problems;
use crate::ports::{TfeTools, ToolError, World};
use crate::sys::fsutil;
use crate::tfe_files::{self, ConfigureError};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The record of changes, in `[paths].state_dir`.
pub const CHANGES_FILE: &str = "config-changes.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum AppConfigError {
    #[error("reading the node's configuration (agent.toml and its secrets) failed")]
    Load(#[source] ConfigureError),
    #[error("setting {key:?} comes from secret {secret_id}: change it in Secrets Manager (JSON key {key:?}), never on a command line; a value in argv is visible to every process on the node")]
    SecretKey { key: String, secret_id: String },
    #[error("{key} = {value:?} is refused by the rules every node boots with: {problems}")]
    Invalid {
        key: String,
        value: String,
        problems: String,
    },
    #[error("replicated admin app-config failed; nothing was recorded")]
    Apply(#[source] ToolError),
    #[error("the change was made, but recording it in {path} failed")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One line of `config-changes.jsonl`. Values of secret-backed keys never get here (refused).
#[derive(Debug, Serialize)]
struct Change<'a> {
    at: u64,
    by: &'a str,
    key: &'a str,
    value: &'a str,
    /// What agent.toml's `[settings]` held for the key then (`null`: not set there).
    was_in_agent_toml: Option<&'a str>,
}

/// What was done, for the command to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: String,
    pub value: String,
    /// agent.toml's `[settings]` value for the key before (what the next repave would bring back).
    pub in_agent_toml: Option<String>,
    pub record: PathBuf,
}

/// Checks, applies and records `key = value`.
pub async fn set<W: World>(
    world: &W,
    cfg: &Settings,
    key: &str,
    value: &str,
    by: &str,
) -> Result<Applied, AppConfigError> {
    // The node's settings as boot would render them: which keys are secret, and that the rest
    // is valid before anything changes.
    let current = tfe_files::load(world.secrets(), world.clock(), cfg)
        .await
        .map_err(AppConfigError::Load)?;
    if current.settings.get(key).is_some_and(|v| v.is_secret()) {
        return Err(AppConfigError::SecretKey {
            key: key.to_string(),
            secret_id: secret_of(cfg, key),
        });
    }
    let mut changed = cfg.clone();
    changed.settings.insert(key.to_string(), value.to_string());
    match tfe_files::load(world.secrets(), world.clock(), &changed).await {
        Ok(_) => {}
        Err(ConfigureError::Invalid(Problems(problems))) => {
            let said: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
            return Err(AppConfigError::Invalid {
                key: key.to_string(),
                value: value.to_string(),
                problems: said.join("; "),
            });
        }
        Err(e) => return Err(AppConfigError::Load(e)),
    }
    world
        .tfe()
        .app_config_set(key, value)
        .await
        .map_err(AppConfigError::Apply)?;
    let in_agent_toml = cfg.settings.get(key).cloned();
    let path = cfg.paths.state_dir.join(CHANGES_FILE);
    let change = Change {
        at: crate::sys::time::unix_now(),
        by,
        key,
        value,
        was_in_agent_toml: in_agent_toml.as_deref(),
    };
    append(&path, &change).map_err(|source| AppConfigError::Record {
        path: path.clone(),
        source,
    })?;
    log::warn!(
        "app-config {key} set to {value:?} by {by} (recorded in {})",
        path.display()
    );
    Ok(Applied {
        key: key.to_string(),
        value: value.to_string(),
        in_agent_toml,
        record: path,
    })
}

/// The secret a secret-backed key comes from.
fn secret_of(cfg: &Settings, key: &str) -> String {
    match (key, &cfg.secrets.ca_bundle) {
        ("ca_certs", Some(id)) => id.clone(),
        _ => cfg.secrets.shared.clone(),
    }
}

/// Appends one JSON line; the file is created 0600 (its directory as the state dir is).
fn append(path: &Path, change: &Change) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fsutil::create_dir(dir, 0o700).map_err(std::io::Error::other)?;
    }
    let mut line = serde_json::to_vec(change).expect("a change serializes");
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // One write: concurrent commands never interleave within a line.
    file.write_all(&line)?;
    file.sync_all()
}

/// What the command prints after a change: where to make it permanent, and what makes it work.
pub fn next_steps(applied: &Applied) -> String {
    let was = match &applied.in_agent_toml {
        Some(v) => format!(" (it says {v:?} now: the next repave would bring that back)"),
        None => " (it is not set there now: the next repave would drop the change)".into(),
    };
    format!(
        "set {key} = {value:?} on this node's app config; recorded in {record}.\n\
         Make it permanent: set `{key} = {value:?}` under [settings] in agent.toml, i.e. in the launch template's user data{was}.\n\
         It takes effect once the app restarts on every node: run `tfe-node-agent app restart --rolling` once (every node, one at a time), or give the last `app-config set` `--restart rolling`. Whether other nodes' app config follows this change is not documented: run this command on each node too (each records its own change).\n",
        key = applied.key,
        value = applied.value,
        record = applied.record.display(),
    )
}
