//! A problem with a node's configuration: which key, where it came from, what is wrong — never
//! the value. Shared by the secret decoding (`secrets`) and the rules (`validate`), which both
//! report them, so neither has to import the other for it.

use std::fmt;

/// Where a value (or the lack of one) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A dotted path in the agent config file, e.g. `settings.redis_port`.
    Config(String),
    /// A secret id in Secrets Manager.
    Secret(String),
    /// Neither: a required value nobody set; names the places it may come from.
    Missing { shared_secret: String },
    /// Written by the agent itself (enable_active_active, production_type).
    Agent,
}

impl Origin {
    pub fn config(path: impl Into<String>) -> Self {
        Origin::Config(path.into())
    }
    pub fn secret(id: impl Into<String>) -> Self {
        Origin::Secret(id.into())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Config(p) => write!(f, "config {p}"),
            Origin::Secret(id) => write!(f, "secret {id:?}"),
            Origin::Missing { shared_secret } => {
                write!(f, "neither config [settings] nor secret {shared_secret:?}")
            }
            Origin::Agent => f.write_str("the agent"),
        }
    }
}

/// One validation failure. `key` is the ptfe setting name, or empty for a whole secret/config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub origin: Origin,
    pub message: String,
}

impl Problem {
    pub fn new(key: &str, origin: Origin, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            origin,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "setting {:?} (from {}): {}",
                self.key, self.origin, self.message
            )
        }
    }
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
