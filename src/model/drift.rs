//! Config drift, pure: the settings the agent rendered (the desired state) against what TFE runs
//! (`replicatedctl app-config export --hidden`), by key. Secret values are compared by a SHA-256
//! digest computed here and dropped here: the report holds key names, and values only of keys
//! that are not secret.

use crate::sys::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What TFE runs with: every app-config item that has a value (`{}` items, unset, are left out).
/// Values are secrets until shown otherwise: the export includes the hidden ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveSettings {
    pub values: BTreeMap<String, Secret>,
}

/// One desired setting as the comparison needs it.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub value: &'a str,
    /// From Secrets Manager: compared by digest, never shown.
    pub secret: bool,
}

/// Items TFE fills in by itself when the settings leave them out, so their appearance in the
/// export is not drift (docs/operate/drift.md): the eight legacy shared secrets, generated per
/// node since v202104-1 when not set; `installation_type`, which older releases default;
/// `extern_vault_propagate`, which the export shows although nobody sets it. When the agent does
/// render one of them, it is compared like any other setting.
pub const TFE_ADDED: &[&str] = &[
    "install_id",
    "root_secret",
    "user_token",
    "archivist_token",
    "cookie_hash",
    "internal_api_token",
    "registry_session_encryption_key",
    "registry_session_secret_key",
    "installation_type",
    "extern_vault_propagate",
];

/// Parts of a name that mark a live-only item as secret (its value is then never shown).
const SECRET_NAME_PARTS: &[&str] = &[
    "pass",
    "secret",
    "token",
    "key",
    "credential",
    "cookie",
    "install_id",
    "ca_certs",
    "role_id",
];

/// The keys left out of the comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// `[drift].ignore`: left out whatever their kind (node- or site-specific items).
    pub ignore: BTreeSet<String>,
}

impl Allowlist {
    fn skips(&self, key: &str, kind: DriftKind) -> bool {
        self.ignore.contains(key) || (kind == DriftKind::Added && TFE_ADDED.contains(&key))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// TFE runs with an item the rendered settings do not set.
    Added,
    /// Both set it, to different values.
    Changed,
    /// The rendered settings set it; TFE runs without it (unset or empty).
    Missing,
}

impl DriftKind {
    pub const ALL: [DriftKind; 3] = [DriftKind::Added, DriftKind::Changed, DriftKind::Missing];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Added => "added",
            DriftKind::Changed => "changed",
            DriftKind::Missing => "missing",
        }
    }
}

/// One drifted key. `desired`/`live` are shown only for a key that is not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftedKey {
    pub key: String,
    pub kind: DriftKind,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounts {
    pub added: usize,
    pub changed: usize,
    pub missing: usize,
}

impl DriftCounts {
    pub fn of(&self, kind: DriftKind) -> usize {
        match kind {
            DriftKind::Added => self.added,
            DriftKind::Changed => self.changed,
            DriftKind::Missing => self.missing,
        }
    }
}

/// The comparison's result: what `/status` (`drift`), `drift --json` and the log show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    pub drifted: bool,
    pub counts: DriftCounts,
    /// By key name.
    pub keys: Vec<DriftedKey>,
    /// Keys that differ but are allowlisted (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// A value compared without being kept: its SHA-256.
fn digest(value: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(value.as_bytes()).into()
}

/// Whether a live-only item looks secret by its name.
pub fn secret_name(key: &str) -> bool {
    SECRET_NAME_PARTS.iter().any(|part| key.contains(part))
}

/// Desired against live, key by key. An empty value counts as unset on both sides (the agent
/// and HashiCorp's modules leave empty settings out; `app-config -k K -v ""` unsets one).
pub fn compare<'a>(
    desired: impl IntoIterator<Item = (&'a str, Desired<'a>)>,
    live: &LiveSettings,
    allow: &Allowlist,
) -> DriftReport {
    let desired: BTreeMap<&str, Desired> = desired
        .into_iter()
        .filter(|(_, d)| !d.value.is_empty())
        .collect();
    let live_set = |k: &str| live.values.get(k).filter(|v| !v.expose().is_empty());
    let mut report = DriftReport::default();
    let keys: BTreeSet<&str> = desired
        .keys()
        .copied()
        .chain(live.values.keys().map(String::as_str))
        .collect();
    for key in keys {
        let found = match (desired.get(key), live_set(key)) {
            (None, None) => None,
            (Some(d), None) => Some((DriftKind::Missing, d.secret, Some(d.value), None)),
            (None, Some(l)) => Some((DriftKind::Added, secret_name(key), None, Some(l.expose()))),
            (Some(d), Some(l)) => (digest(d.value) != digest(l.expose())).then_some((
                DriftKind::Changed,
                d.secret,
                Some(d.value),
                Some(l.expose()),
            )),
        };
        let Some((kind, secret, desired_value, live_value)) = found else {
            continue;
        };
        if allow.skips(key, kind) {
            report.ignored.push(key.to_string());
            continue;
        }
        let shown = |v: Option<&str>| v.filter(|_| !secret).map(str::to_string);
        report.keys.push(DriftedKey {
            key: key.to_string(),
            kind,
            secret,
            desired: shown(desired_value),
            live: shown(live_value),
        });
        match kind {
            DriftKind::Added => report.counts.added += 1,
            DriftKind::Changed => report.counts.changed += 1,
            DriftKind::Missing => report.counts.missing += 1,
        }
    }
    report.drifted = !report.keys.is_empty();
    report
}

impl DriftedKey {
    /// One line for the log and the `drift` command: the name, and values only when not secret.
    pub fn describe(&self) -> String {
        let value = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "<secret>".into(),
        };
        match self.kind {
            DriftKind::Added => format!(
                "{}: added live (= {}), not in the rendered settings",
                self.key,
                value(&self.live)
            ),
            DriftKind::Changed => format!(
                "{}: changed live: rendered {}, live {}",
                self.key,
                value(&self.desired),
                value(&self.live)
            ),
            DriftKind::Missing => format!(
                "{}: missing live (rendered {})",
                self.key,
                value(&self.desired)
            ),
        }
    }
}

#[cfg(test)]
mod tests;
