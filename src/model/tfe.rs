//! What the TFE tools report, as types: Replicated's system and app status, the health check, and
//! a child process (install.sh, node-drain) the agent started and must find again.

use std::collections::BTreeMap;
use std::fmt;

/// `replicatedctl system status`: every subsystem and whether all are "ready".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemStatus {
    pub statuses: BTreeMap<String, String>,
}

impl SystemStatus {
    pub fn all_ready(&self) -> bool {
        !self.statuses.is_empty() && self.statuses.values().all(|s| s == "ready")
    }
}

/// `replicatedctl app status`, first (only) app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    pub state: AppState,
    pub desired_state: AppState,
    pub is_transitioning: bool,
    pub error: String,
}

impl AppStatus {
    /// The documented "installation is complete" predicate.
    pub fn is_started(&self) -> bool {
        self.state == AppState::Started
            && self.desired_state == AppState::Started
            && !self.is_transitioning
    }
}

/// The app's state in `replicatedctl app status` (`State`, `DesiredState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    Started,
    Starting,
    Stopped,
    Stopping,
    /// A state this agent does not know; shown, never acted on.
    Other(String),
}

impl AppState {
    pub fn parse(text: &str) -> Self {
        match text {
            "started" => AppState::Started,
            "starting" => AppState::Starting,
            "stopped" => AppState::Stopped,
            "stopping" => AppState::Stopping,
            other => AppState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AppState::Started => "started",
            AppState::Starting => "starting",
            AppState::Stopped => "stopped",
            AppState::Stopping => "stopping",
            AppState::Other(text) => text,
        }
    }
}

impl fmt::Display for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for AppState {
    fn from(text: &str) -> Self {
        AppState::parse(text)
    }
}

impl PartialEq<String> for AppState {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AppState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `replicated admin health-check`, judged by its summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub passed: bool,
    /// Names of failed checks (from `checking: <Name>...` blocks that end in an error).
    pub failed_checks: Vec<String>,
    pub summary: String,
}

/// A child the agent started and recorded (node-drain, install.sh), identified well enough to
/// find it again after an agent restart (a pid alone could be reused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackedProcess {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat: clock ticks after boot at which it started.
    pub start_ticks: u64,
    pub boot_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    Running,
    Exited(i32),
    /// Gone without leaving its exit status (killed, or the machine rebooted).
    Vanished,
    /// Ended before it was let run (its starter died before recording it): the tool never ran.
    NeverStarted,
}

/// What `replicated admin support-bundle` printed, as far as it was understood. Its output is not
/// documented (docs/design/tfe-tools.md §5.2 documents only where the bundles go), so every line
/// naming a `support-bundles/…` location is read and the rest is kept as it was printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupportBundleRun {
    /// The job id (an RFC 3339 time), from a location `support-bundles/<job id>/<node ip>/<file>`.
    pub job_id: Option<String>,
    /// Every location named: object keys (`support-bundles/<job>/<ip>/replicated-support….tar.gz`)
    /// in Active/Active, local paths on a Standalone node.
    pub locations: Vec<String>,
    /// The other lines, as printed (not understood, or chatter).
    pub other_lines: Vec<String>,
}

impl SupportBundleRun {
    /// Reads the tool's stdout defensively: never fails, keeps what it does not understand.
    pub fn parse(stdout: &str) -> Self {
        let mut run = SupportBundleRun::default();
        for line in stdout.lines() {
            let line = line.trim_end_matches('\r');
            let found: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || "\"'`,;()<>".contains(c))
                .filter(|t| t.contains("support-bundles/"))
                .collect();
            if found.is_empty() {
                if !line.trim().is_empty() {
                    run.other_lines.push(line.to_string());
                }
                continue;
            }
            for token in found {
                let token = token.trim_end_matches(['.', ':']);
                let at = token.find("support-bundles/").expect("filtered");
                // An object key (maybe as s3://bucket/key or a URL): from `support-bundles/` on;
                // a local path (Standalone) as is.
                let location = if token.starts_with('/') {
                    token
                } else {
                    &token[at..]
                };
                let parts: Vec<&str> = token[at..].split('/').collect();
                if parts.len() >= 4 && run.job_id.is_none() && looks_like_rfc3339(parts[1]) {
                    run.job_id = Some(parts[1].to_string());
                }
                if !run.locations.iter().any(|l| l == location) {
                    run.locations.push(location.to_string());
                }
            }
        }
        run
    }

    /// The key prefix of the job (`support-bundles/<job id>/`), when a job id was found.
    pub fn prefix(&self) -> Option<String> {
        self.job_id
            .as_ref()
            .map(|j| format!("support-bundles/{j}/"))
    }
}

fn looks_like_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || "-:T.Z+".contains(c))
}

#[cfg(test)]
mod support_bundle_tests {
    use super::SupportBundleRun;

    #[test]
    fn locations_and_the_job_id_are_read_from_any_line_naming_them() {
        let out = "Generating support bundle...\r\nSupport bundle uploaded to support-bundles/2026-12-03T17:00:00Z/10.0.1.5/replicated-support123.tar.gz\nuploaded s3://tfe-data/support-bundles/2026-12-03T17:00:00Z/10.0.1.6/replicated-support124.tar.gz.\n";
        let run = SupportBundleRun::parse(out);
        assert_eq!(run.job_id.as_deref(), Some("2026-12-03T17:00:00Z"));
        assert_eq!(
            run.prefix().as_deref(),
            Some("support-bundles/2026-12-03T17:00:00Z/")
        );
        assert_eq!(
            run.locations,
            [
                "support-bundles/2026-12-03T17:00:00Z/10.0.1.5/replicated-support123.tar.gz",
                "support-bundles/2026-12-03T17:00:00Z/10.0.1.6/replicated-support124.tar.gz"
            ]
        );
        assert_eq!(run.other_lines, ["Generating support bundle..."]);
    }

    #[test]
    fn a_standalone_path_is_a_location_without_a_job_id() {
        let run = SupportBundleRun::parse(
            "wrote /var/lib/replicated/support-bundles/replicated-support99.tar.gz\n",
        );
        assert_eq!(
            run.locations,
            ["/var/lib/replicated/support-bundles/replicated-support99.tar.gz"]
        );
        assert_eq!(run.job_id, None);
    }

    #[test]
    fn output_not_understood_is_kept_as_printed() {
        let run = SupportBundleRun::parse("\nsomething else\nsupport-bundles/not-a-time/x/y\n");
        assert_eq!(run.job_id, None);
        assert_eq!(run.locations, ["support-bundles/not-a-time/x/y"]);
        assert_eq!(run.other_lines, ["something else"]);
    }
}
