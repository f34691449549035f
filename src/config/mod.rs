//! Loading the agent config: where it is, how it is parsed, and the structural errors.

mod file;
mod settings;

pub use file::*;
pub use settings::*;

use crate::model::problem::Problems;

use std::path::{Path, PathBuf};

/// Where the agent looks when neither `--config` nor `TFE_NODE_AGENT_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tfe-node-agent/agent.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for this agent: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {problems}")]
    Invalid { path: PathBuf, problems: Problems },
    #[error("config file {path} has unknown key(s): {}", keys.iter().map(|k| k.escape_debug().to_string()).collect::<Vec<_>>().join(", "))]
    UnknownKeys { path: PathBuf, keys: Vec<String> },
}

/// Reads and parses the config file. Unknown keys anywhere (outside the free-form `[settings]`
/// table) are an error naming their dotted path, so a typo never silently falls back to a default.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses config text; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: one_line(&e.to_string()),
    })?;
    // serde_path_to_error names the key a type error is about ("install.timeout").
    let config: AgentConfig =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut |p| {
            unknown.push(p.to_string());
        }))
        .map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: format!("{}: {}", e.path(), one_line(&e.inner().to_string())),
        })?;
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ConfigError::UnknownKeys {
            path: path.to_owned(),
            keys: unknown,
        });
    }
    Ok(config)
}

/// Checks a parsed config file into the settings the flows use.
pub fn settings(file: AgentConfig, path: &Path) -> Result<Settings, ConfigError> {
    Settings::from_file(file).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems: Problems(problems),
    })
}

/// toml's messages span several lines with a source excerpt; a log line wants one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && l != &"^")
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
