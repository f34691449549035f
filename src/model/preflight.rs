//! Preflight: the checks that find a broken dependency in seconds, before install.sh, and their
//! report. Pure: which checks exist, what a result is, how a report reads and what the disk
//! thresholds are. The probes themselves are `crate::ports::Probes`; the run is
//! `crate::node::preflight`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One check, by the id an operator names in `[preflight].skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Redis,
    Postgres,
    ObjectStorage,
    License,
    Disk,
    Docker,
    Imds,
    Clock,
    /// After install: the Admin UI (port 8800) is off.
    AdminUi,
    /// After install: every live peer's Vault HA port (8201) is reachable.
    VaultPeers,
}

impl CheckId {
    pub const ALL: [CheckId; 10] = [
        CheckId::Redis,
        CheckId::Postgres,
        CheckId::ObjectStorage,
        CheckId::License,
        CheckId::Disk,
        CheckId::Docker,
        CheckId::Imds,
        CheckId::Clock,
        CheckId::AdminUi,
        CheckId::VaultPeers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Redis => "redis",
            CheckId::Postgres => "postgres",
            CheckId::ObjectStorage => "object_storage",
            CheckId::License => "license",
            CheckId::Disk => "disk",
            CheckId::Docker => "docker",
            CheckId::Imds => "imds",
            CheckId::Clock => "clock",
            CheckId::AdminUi => "admin_ui",
            CheckId::VaultPeers => "vault_peers",
        }
    }

    pub fn parse(text: &str) -> Option<CheckId> {
        CheckId::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Whether the check runs before install.sh (the others need TFE installed).
    pub fn before_install(self) -> bool {
        !matches!(self, CheckId::AdminUi | CheckId::VaultPeers)
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Worth a look, never a reason to stop the boot.
    Warn,
    Fail,
    /// Not run: skipped by `[preflight].skip`, or nothing to check (no such dependency).
    Skipped,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Pass,
        Verdict::Warn,
        Verdict::Fail,
        Verdict::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One check's result: never a secret in `target` or `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: CheckId,
    /// What was checked: an address, a bucket, a path.
    pub target: String,
    pub verdict: Verdict,
    #[serde(with = "seconds")]
    pub duration: Duration,
    /// One line: what was found (pass) or what is wrong, naming the dependency and address.
    pub detail: String,
}

impl CheckResult {
    pub fn new(
        id: CheckId,
        target: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) -> Self {
        CheckResult {
            id,
            target: target.into(),
            verdict,
            duration: Duration::ZERO,
            detail: detail.into(),
        }
    }

    pub fn skipped(id: CheckId, why: impl Into<String>) -> Self {
        CheckResult::new(id, "-", Verdict::Skipped, why)
    }
}

/// Every check of one run, in [`CheckId::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
    #[serde(with = "seconds")]
    pub duration: Duration,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.verdict == Verdict::Fail)
    }

    pub fn passed(&self) -> bool {
        self.failed().next().is_none()
    }

    /// "redis, postgres" — the failed checks' ids.
    pub fn failed_ids(&self) -> String {
        let ids: Vec<&str> = self.failed().map(|c| c.id.as_str()).collect();
        ids.join(", ")
    }

    /// The table `tfe-node-agent preflight` prints and the boot logs: one line a check.
    pub fn table(&self) -> String {
        let width = |f: &dyn Fn(&CheckResult) -> usize, min: usize| {
            self.checks.iter().map(f).max().unwrap_or(0).max(min)
        };
        let id_w = width(&|c| c.id.as_str().len(), 5);
        let target_w = width(&|c| c.target.chars().count(), 6).min(48);
        let mut out = format!(
            "{:id_w$}  {:target_w$}  {:7}  {:>7}  DETAIL\n",
            "CHECK", "TARGET", "RESULT", "TIME"
        );
        for c in &self.checks {
            out.push_str(&format!(
                "{:id_w$}  {:target_w$}  {:7}  {:>6.3}s  {}\n",
                c.id.as_str(),
                c.target,
                c.verdict.as_str(),
                c.duration.as_secs_f64(),
                c.detail
            ));
        }
        out.push_str(&format!(
            "{} checks in {:.3}s: {}\n",
            self.checks.len(),
            self.duration.as_secs_f64(),
            if self.passed() {
                "nothing failed".to_string()
            } else {
                format!("failed: {}", self.failed_ids())
            }
        ));
        out
    }
}

/// Durations as seconds with millisecond precision, as `status --json` readers expect.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// A path install.sh fills, and the free space it needs there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskNeed {
    pub path: &'static str,
    /// Less than this fails the check.
    pub fail_below: u64,
    /// Less than this warns.
    pub warn_below: u64,
    pub why: &'static str,
}

const GIB: u64 = 1 << 30;

/// The paths install.sh and TFE fill, and how much free space each needs. Replicated's own host
/// preflight looks at the same three; the figures are TFE's: the images of one release take
/// about 10 GiB under Docker's root, and HashiCorp sizes the root volume at 50 GB or more.
pub const DISK_NEEDS: [DiskNeed; 3] = [
    DiskNeed {
        path: "/var/lib/docker",
        fail_below: 10 * GIB,
        warn_below: 40 * GIB,
        why: "Docker's images and containers (TFE's images take about 10 GiB)",
    },
    DiskNeed {
        path: "/var/lib/replicated",
        fail_below: GIB,
        warn_below: 5 * GIB,
        why: "Replicated's state, snapshots and support bundles",
    },
    DiskNeed {
        path: "/tmp",
        fail_below: GIB,
        warn_below: 2 * GIB,
        why: "install.sh's downloads",
    },
];

/// The verdict on `free` bytes where `need` applies, and the line saying so.
pub fn judge_disk(need: &DiskNeed, free: u64) -> (Verdict, String) {
    let gib = |b: u64| b as f64 / GIB as f64;
    let verdict = if free < need.fail_below {
        Verdict::Fail
    } else if free < need.warn_below {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let line = match verdict {
        Verdict::Pass => format!("{} {:.1} GiB free", need.path, gib(free)),
        _ => format!(
            "{} has {:.1} GiB free, {} {:.0} GiB for {}",
            need.path,
            gib(free),
            if verdict == Verdict::Fail {
                "needs at least"
            } else {
                "recommended"
            },
            gib(if verdict == Verdict::Fail {
                need.fail_below
            } else {
                need.warn_below
            }),
            need.why
        ),
    };
    (verdict, line)
}

/// How far this node's clock may be from the instance metadata service's before the check warns
/// or fails. SigV4 rejects requests more than 5 minutes off; TLS and the cluster view's
/// staleness are hurt long before that.
pub const CLOCK_WARN: Duration = Duration::from_secs(5);
pub const CLOCK_FAIL: Duration = Duration::from_secs(60);

/// The verdict on a clock `ahead_ms` milliseconds ahead of the reference (negative: behind).
/// The reference (an HTTP `Date`) has whole seconds, so a second of difference is noise.
pub fn judge_clock(ahead_ms: i64) -> (Verdict, String) {
    let off = Duration::from_millis(ahead_ms.unsigned_abs());
    let side = if ahead_ms >= 0 { "ahead of" } else { "behind" };
    let verdict = if off > CLOCK_FAIL {
        Verdict::Fail
    } else if off > CLOCK_WARN {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    let line = match verdict {
        Verdict::Pass => format!("within {}s of the metadata service's clock", CLOCK_WARN.as_secs()),
        _ => format!(
            "this node's clock is {:.1}s {side} the metadata service's (more than {}s {}): check chrony/timesyncd; SigV4 and TLS fail on a skewed clock",
            off.as_secs_f64(),
            if verdict == Verdict::Fail { CLOCK_FAIL.as_secs() } else { CLOCK_WARN.as_secs() },
            if verdict == Verdict::Fail { "fails" } else { "warns" },
        ),
    };
    (verdict, line)
}

/// A license larger than this is not a license (Replicated's are kilobytes; an airgap bundle is
/// not a license).
pub const LICENSE_MAX_BYTES: usize = 1 << 20;

/// What can be told about a license file without its (undocumented, signed) format: it is there,
/// of a license's size, and not something else pasted by mistake. Its expiry cannot be read from
/// the file; `replicatedctl license inspect` shows it once installed.
pub fn judge_license(bytes: &[u8]) -> (Verdict, String) {
    let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
    let mistaken = text.and_then(|t| {
        if t.starts_with("-----BEGIN") {
            Some("a PEM block (a certificate or key?)")
        } else if t.starts_with('<') {
            Some("an HTML or XML document")
        } else if t.len() < 64 && !t.contains('\n') {
            Some("a short line of text (a placeholder?)")
        } else {
            None
        }
    });
    match (bytes.len(), mistaken) {
        (0, _) => (Verdict::Fail, "the license is empty".into()),
        (n, _) if n > LICENSE_MAX_BYTES => (
            Verdict::Fail,
            format!("the license is {n} bytes, more than a license ({} bytes at most): an airgap bundle?", LICENSE_MAX_BYTES),
        ),
        (n, Some(what)) => (
            Verdict::Fail,
            format!("the license ({n} bytes) is {what}, not a Replicated .rli file"),
        ),
        (n, None) => (
            Verdict::Pass,
            format!("{n} bytes; the expiry is not readable from a .rli (replicatedctl license inspect shows it once installed)"),
        ),
    }
}

#[cfg(test)]
mod tests;
