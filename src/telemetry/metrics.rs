//! The agent's Prometheus metrics. Every label value comes from a closed set (the enums below
//! and the model's own), never from an instance id, a hook token, an event id or free text, so
//! the whole exposition stays under 150 series whatever happens to the node.

use crate::model::cluster::ClusterView;
use crate::model::drift::{DriftCounts, DriftKind};
use crate::model::lifecycle::{Phase, Source};
use crate::model::preflight::{Report, Verdict};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

/// A closed set of label values, each spelled once.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values!(
    /// Which lifecycle hook.
    HookKind { Launch = "launch", Terminate = "terminate", }
);

label_values!(
    /// How one call ended.
    Outcome { Ok = "ok", Error = "error", }
);

label_values!(
    /// How a lifecycle action ended for this agent.
    Completion {
        Continue = "continue",
        Abandon = "abandon",
        /// "No active Lifecycle Action": it timed out or someone else answered it.
        ResolvedElsewhere = "resolved-elsewhere",
        /// Every try failed: the group's DefaultResult decides.
        Failed = "failed",
    }
);

label_values!(
    /// The AWS calls the agent makes.
    AwsOperation {
        DescribeAutoScalingInstances = "DescribeAutoScalingInstances",
        DescribeLifecycleHooks = "DescribeLifecycleHooks",
        RecordLifecycleActionHeartbeat = "RecordLifecycleActionHeartbeat",
        CompleteLifecycleAction = "CompleteLifecycleAction",
        GetSecretValue = "GetSecretValue",
        BatchGetSecretValue = "BatchGetSecretValue",
        /// The object_storage preflight check's S3 calls (HeadBucket, PutObject, GetObject,
        /// DeleteObject): one label for the four, or the worst case passes the series bound.
        S3Preflight = "S3Preflight",
    }
);

label_values!(
    /// Why an AWS call failed, as far as a dashboard needs to tell.
    AwsErrorCode {
        Throttling = "throttling",
        AccessDenied = "access-denied",
        NotFound = "not-found",
        /// A 4xx the service explained (ValidationError, InvalidParameter…).
        Rejected = "rejected",
        /// A 5xx.
        ServerError = "server-error",
        /// No answer within the attempt timeout.
        Timeout = "timeout",
        /// The request could not be sent (DNS, connect, TLS).
        Connection = "connection",
        /// An answer that could not be read.
        Unreadable = "unreadable",
        Other = "other",
    }
);

label_values!(
    /// How one IMDS request ended.
    ImdsOutcome { Ok = "ok", NotFound = "not-found", Error = "error", }
);

impl AwsOperation {
    pub fn service(self) -> &'static str {
        match self {
            AwsOperation::GetSecretValue | AwsOperation::BatchGetSecretValue => "secretsmanager",
            AwsOperation::S3Preflight => "s3",
            AwsOperation::DescribeAutoScalingInstances
            | AwsOperation::DescribeLifecycleHooks
            | AwsOperation::RecordLifecycleActionHeartbeat
            | AwsOperation::CompleteLifecycleAction => "autoscaling",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SourceLabel(Source);

impl EncodeLabelValue for SourceLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
    release_sequence: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeartbeatLabels {
    hook: HookKind,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompletionLabels {
    hook: HookKind,
    result: Completion,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsRequestLabels {
    service: &'static str,
    operation: AwsOperation,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsErrorLabels {
    service: &'static str,
    operation: AwsOperation,
    code: AwsErrorCode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImdsLabels {
    outcome: ImdsOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterNodeLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MismatchLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreflightLabels {
    check: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoticeLabels {
    source: SourceLabel,
}

type Seconds = Gauge<f64, AtomicU64>;

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    info: Family<InfoLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    live: Gauge,
    ready: Gauge,
    boot_duration: Seconds,
    install_duration: Seconds,
    drain_duration: Seconds,
    heartbeats: Family<HeartbeatLabels, Counter>,
    completions: Family<CompletionLabels, Counter>,
    aws_requests: Family<AwsRequestLabels, Counter>,
    aws_errors: Family<AwsErrorLabels, Counter>,
    imds_requests: Family<ImdsLabels, Counter>,
    health_passing: Gauge,
    health_failing: Gauge,
    notices: Family<NoticeLabels, Counter>,
    cluster_nodes: Family<ClusterNodeLabels, Gauge>,
    cluster_mismatches: Family<MismatchLabels, Gauge>,
    cluster_store_up: Gauge,
    drift_keys: Family<DriftLabels, Gauge>,
    join_refusals: Counter,
    /// One series a check: its last result (the others are removed).
    preflight_checks: Family<PreflightLabels, Gauge>,
    preflight_duration: Seconds,
    resident_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    start_time: Seconds,
}

/// The agent's metrics, process-wide.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Which text format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper that asks for it.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics only when named.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            info: Family::default(),
            phase: Family::default(),
            live: Gauge::default(),
            ready: Gauge::default(),
            boot_duration: Seconds::default(),
            install_duration: Seconds::default(),
            drain_duration: Seconds::default(),
            heartbeats: Family::default(),
            completions: Family::default(),
            aws_requests: Family::default(),
            aws_errors: Family::default(),
            imds_requests: Family::default(),
            health_passing: Gauge::default(),
            health_failing: Gauge::default(),
            notices: Family::default(),
            cluster_nodes: Family::default(),
            cluster_mismatches: Family::default(),
            cluster_store_up: Gauge::default(),
            drift_keys: Family::default(),
            join_refusals: Counter::default(),
            preflight_checks: Family::default(),
            preflight_duration: Seconds::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Counter::default(),
            open_fds: Gauge::default(),
            start_time: Seconds::default(),
            registry: Registry::default(),
        };
        let a = "tfe_node_agent_";
        let r = &mut registry;
        r.register(
            format!("{a}info"),
            "The agent's version and the release sequence it installs (always 1)",
            m.info.clone(),
        );
        r.register(
            format!("{a}phase"),
            "1 for the node's current phase, 0 for the others",
            m.phase.clone(),
        );
        r.register(
            format!("{a}live"),
            "1 while every control loop ticks in time (/livez)",
            m.live.clone(),
        );
        r.register(
            format!("{a}ready"),
            "1 while the node is in service and not going (/readyz)",
            m.ready.clone(),
        );
        r.register(format!("{a}boot_duration_seconds"), "How long the last boot took, from its start to in service or failure (0 until a boot ended in this process)", m.boot_duration.clone());
        r.register(
            format!("{a}install_duration_seconds"),
            "How long install.sh ran (0 until it ran in this process)",
            m.install_duration.clone(),
        );
        r.register(format!("{a}drain_duration_seconds"), "How long node-drain ran, from its start to its end (0 until a drain ended in this process)", m.drain_duration.clone());
        r.register(
            format!("{a}heartbeats"),
            "RecordLifecycleActionHeartbeat calls by hook and outcome",
            m.heartbeats.clone(),
        );
        r.register(
            format!("{a}hook_completions"),
            "Lifecycle actions this agent finished, by hook and result",
            m.completions.clone(),
        );
        r.register(
            format!("{a}aws_requests"),
            "AWS API calls (each after the SDK's own retries) by service, operation and outcome",
            m.aws_requests.clone(),
        );
        r.register(
            format!("{a}aws_errors"),
            "Failed AWS API calls by service, operation and error class",
            m.aws_errors.clone(),
        );
        r.register(
            format!("{a}imds_requests"),
            "Instance metadata requests by outcome",
            m.imds_requests.clone(),
        );
        r.register(
            format!("{a}tfe_health_check_passing"),
            "1 when the last `replicated admin health-check` the agent ran passed",
            m.health_passing.clone(),
        );
        r.register(
            format!("{a}tfe_health_checks_failing"),
            "How many checks the last `replicated admin health-check` reported failing",
            m.health_failing.clone(),
        );
        r.register(
            format!("{a}termination_notices"),
            "Reasons to drain noticed, by source",
            m.notices.clone(),
        );
        r.register(
            format!("{a}cluster_nodes"),
            "Members of the cluster view by state (live, stale), as this node last read it",
            m.cluster_nodes.clone(),
        );
        r.register(
            format!("{a}cluster_mismatches"),
            "Live members disagreeing with the cluster, by kind (release, fingerprint, live)",
            m.cluster_mismatches.clone(),
        );
        r.register(
            format!("{a}cluster_store_up"),
            "1 while the last heartbeat to the cluster store (TFE's Redis) succeeded",
            m.cluster_store_up.clone(),
        );
        r.register(
            format!("{a}config_drift_keys"),
            "Settings TFE runs that differ from the rendered ones, by kind (added, changed, missing), as the last comparison found",
            m.drift_keys.clone(),
        );
        r.register(
            format!("{a}join_refusals"),
            "Times the join guard refused this node",
            m.join_refusals.clone(),
        );
        r.register(
            format!("{a}preflight_checks"),
            "1 for each preflight check's last result (pass, warn, fail, skipped)",
            m.preflight_checks.clone(),
        );
        r.register(
            format!("{a}preflight_duration_seconds"),
            "How long the last preflight run took (all checks run at once)",
            m.preflight_duration.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the agent",
            m.resident_memory.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time of the agent",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the agent",
            m.open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When the agent started, unix seconds",
            m.start_time.clone(),
        );
        for phase in Phase::ALL {
            drop(m.phase.get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            }));
        }
        // Counters every node has exist from the start, so a rate() over them never starts
        // from a missing series.
        for hook in HookKind::ALL {
            for outcome in Outcome::ALL {
                drop(m.heartbeats.get_or_create(&HeartbeatLabels {
                    hook: *hook,
                    outcome: *outcome,
                }));
            }
        }
        for outcome in ImdsOutcome::ALL {
            drop(
                m.imds_requests
                    .get_or_create(&ImdsLabels { outcome: *outcome }),
            );
        }
        for hook in HookKind::ALL {
            for result in Completion::ALL {
                drop(m.completions.get_or_create(&CompletionLabels {
                    hook: *hook,
                    result: *result,
                }));
            }
        }
        for source in Source::ALL {
            drop(m.notices.get_or_create(&NoticeLabels {
                source: SourceLabel(*source),
            }));
        }
        for operation in AwsOperation::ALL {
            for outcome in Outcome::ALL {
                let service = operation.service();
                drop(m.aws_requests.get_or_create(&AwsRequestLabels {
                    service,
                    operation: *operation,
                    outcome: *outcome,
                }));
            }
        }
        Metrics { registry, ..m }
    }

    /// The version and release sequence: set once, when the settings are known.
    pub fn set_info(&self, release_sequence: u64) {
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                version: env!("CARGO_PKG_VERSION"),
                release_sequence: release_sequence.to_string(),
            })
            .set(1);
    }

    pub fn set_phase(&self, current: Phase) {
        for phase in Phase::ALL {
            let value = i64::from(*phase == current);
            self.phase
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(value);
        }
    }

    pub fn set_live(&self, live: bool) {
        self.live.set(i64::from(live));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn boot_took(&self, d: Duration) {
        self.boot_duration.set(d.as_secs_f64());
    }

    pub fn install_took(&self, d: Duration) {
        self.install_duration.set(d.as_secs_f64());
    }

    pub fn drain_took(&self, d: Duration) {
        self.drain_duration.set(d.as_secs_f64());
    }

    pub fn heartbeat(&self, hook: HookKind, outcome: Outcome) {
        self.heartbeats
            .get_or_create(&HeartbeatLabels { hook, outcome })
            .inc();
    }

    /// Heartbeats of `hook` so far: (sent, failed).
    pub fn heartbeats_of(&self, hook: HookKind) -> (u64, u64) {
        let count = |outcome| {
            self.heartbeats
                .get_or_create(&HeartbeatLabels { hook, outcome })
                .get()
        };
        (count(Outcome::Ok), count(Outcome::Error))
    }

    pub fn hook_completed(&self, hook: HookKind, result: Completion) {
        self.completions
            .get_or_create(&CompletionLabels { hook, result })
            .inc();
    }

    /// One AWS call, after the SDK's retries: `Err` names why it failed.
    pub fn aws_request(&self, operation: AwsOperation, result: Result<(), AwsErrorCode>) {
        let service = operation.service();
        let outcome = if result.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        self.aws_requests
            .get_or_create(&AwsRequestLabels {
                service,
                operation,
                outcome,
            })
            .inc();
        if let Err(code) = result {
            self.aws_errors
                .get_or_create(&AwsErrorLabels {
                    service,
                    operation,
                    code,
                })
                .inc();
        }
    }

    pub fn imds_request(&self, outcome: ImdsOutcome) {
        self.imds_requests
            .get_or_create(&ImdsLabels { outcome })
            .inc();
    }

    pub fn health_check(&self, passing: bool, failing: usize) {
        self.health_passing.set(i64::from(passing));
        self.health_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
    }

    pub fn termination_notice(&self, source: Source) {
        self.notices
            .get_or_create(&NoticeLabels {
                source: SourceLabel(source),
            })
            .inc();
    }

    pub fn cluster_store_up(&self, up: bool) {
        self.cluster_store_up.set(i64::from(up));
    }

    /// The last drift comparison: how many keys of each kind differ.
    pub fn drift(&self, counts: &DriftCounts) {
        for kind in DriftKind::ALL {
            self.drift_keys
                .get_or_create(&DriftLabels {
                    kind: kind.as_str(),
                })
                .set(i64::try_from(counts.of(kind)).unwrap_or(i64::MAX));
        }
    }

    pub fn join_refused(&self) {
        self.join_refusals.inc();
    }

    /// The last preflight run: each check's result, and how long the run took.
    pub fn preflight(&self, report: &Report) {
        for check in &report.checks {
            let id = check.id.as_str();
            for verdict in Verdict::ALL {
                if verdict != check.verdict {
                    self.preflight_checks.remove(&PreflightLabels {
                        check: id,
                        result: verdict.as_str(),
                    });
                }
            }
            self.preflight_checks
                .get_or_create(&PreflightLabels {
                    check: id,
                    result: check.verdict.as_str(),
                })
                .set(1);
        }
        self.preflight_duration.set(report.duration.as_secs_f64());
    }

    /// The cluster as this node last read it.
    pub fn cluster(&self, view: &ClusterView) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.cluster_nodes
            .get_or_create(&ClusterNodeLabels { state: "live" })
            .set(count(view.live));
        self.cluster_nodes
            .get_or_create(&ClusterNodeLabels { state: "stale" })
            .set(count(view.stale));
        for (kind, n) in view.mismatch_counts() {
            self.cluster_mismatches
                .get_or_create(&MismatchLabels { kind })
                .set(count(n));
        }
    }

    /// The exposition in `format`, with the process metrics read now.
    pub fn encode(&self, format: Format) -> String {
        self.refresh_process();
        let mut text = String::with_capacity(8 * 1024);
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        if let Err(e) = encoded {
            // Writing into a String cannot fail; say so rather than serve half a page silently.
            let _ = writeln!(text, "# encoding failed: {e}");
        }
        text
    }

    fn refresh_process(&self) {
        let Some(p) = super::process::read() else {
            return;
        };
        self.resident_memory
            .set(i64::try_from(p.resident_bytes).unwrap_or(i64::MAX));
        let cpu = p.cpu_seconds - self.cpu_seconds.get();
        if cpu > 0.0 {
            self.cpu_seconds.inc_by(cpu);
        }
        self.open_fds
            .set(i64::try_from(p.open_fds).unwrap_or(i64::MAX));
        self.start_time.set(p.start_time_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preflight::{CheckId, CheckResult};

    /// Every label of every family at once (the worst case) stays under 150 series.
    #[test]
    fn the_whole_exposition_stays_under_150_series_whatever_happens() {
        let m = Metrics::new();
        m.set_info(504);
        m.set_phase(Phase::InService);
        for hook in HookKind::ALL {
            for outcome in Outcome::ALL {
                m.heartbeat(*hook, *outcome);
            }
            for result in Completion::ALL {
                m.hook_completed(*hook, *result);
            }
        }
        for op in AwsOperation::ALL {
            m.aws_request(*op, Ok(()));
            for code in AwsErrorCode::ALL {
                m.aws_request(*op, Err(*code));
            }
        }
        for outcome in ImdsOutcome::ALL {
            m.imds_request(*outcome);
        }
        for source in Source::ALL {
            m.termination_notice(*source);
        }
        m.cluster_store_up(true);
        m.join_refused();
        m.drift(&DriftCounts {
            added: 1,
            changed: 2,
            missing: 3,
        });
        m.cluster(&ClusterView {
            cluster_id: Some("c".into()),
            release_sequence: Some(504),
            live: 2,
            stale: 1,
            nodes: Vec::new(),
            findings: Vec::new(),
            consistent: true,
            rolling: None,
        });
        // Every verdict of every check in turn: one series a check remains.
        for verdict in Verdict::ALL {
            let checks = CheckId::ALL
                .iter()
                .map(|id| CheckResult::new(*id, "-", verdict, "-"))
                .collect();
            m.preflight(&Report {
                checks,
                duration: Duration::from_millis(5),
            });
        }
        let text = m.encode(Format::Prometheus);
        for family in [
            "cluster_nodes",
            "cluster_mismatches",
            "cluster_store_up",
            "join_refusals_total",
            "preflight_checks",
            "preflight_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE tfe_node_agent_{family} ")),
                "{family} is not exposed:\n{text}"
            );
        }
        assert_eq!(
            text.matches("tfe_node_agent_preflight_checks{").count(),
            CheckId::ALL.len(),
            "{text}"
        );
        assert!(
            text.contains("tfe_node_agent_preflight_checks{check=\"redis\",result=\"skipped\"} 1"),
            "{text}"
        );
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series < 150, "{series} series:\n{text}");
        assert!(
            text.contains("tfe_node_agent_phase{phase=\"in-service\"} 1"),
            "{text}"
        );
        assert!(text.contains("tfe_node_agent_info{version=\""), "{text}");
        assert!(
            text.contains("tfe_node_agent_aws_errors_total{service=\"autoscaling\",operation=\"CompleteLifecycleAction\",code=\"throttling\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tfe_node_agent_heartbeats_total counter"),
            "{text}"
        );
        let open = m.encode(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2")),
            Format::Prometheus
        );
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
