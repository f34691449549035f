//! Preflight: every dependency TFE will use, probed with exactly the settings it will use, all at
//! once and each within `[preflight].check_timeout`, before install.sh runs (and, for the Admin UI
//! and the Vault peers, once TFE is installed). The verdicts are the model's
//! (`crate::model::preflight`); the probes are the world's.

use crate::config::Settings;
use crate::model::cluster::ClusterView;
pub use crate::model::preflight::Report;
use crate::model::preflight::{
    judge_clock, judge_disk, judge_license, CheckId, CheckResult, Verdict, DISK_NEEDS,
};
use crate::ports::{
    ObjectStorageProbe, PortAnswer, PostgresProbe, ProbeError, Probes, RedisProbe, SslMode, World,
    MARKER_PREFIX,
};
use crate::sys::secret::Secret;
use crate::tfe_files::{SettingValue, TfeConfig};
use futures_util::future::{join_all, BoxFuture, FutureExt};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// A preflight run found a dependency broken: each failed check with its one line.
#[derive(Debug, thiserror::Error)]
#[error("preflight failed {stage}: {}", failed.join("; "))]
pub struct PreflightFailed {
    pub stage: Stage,
    pub failed: Vec<String>,
}

impl PreflightFailed {
    pub fn of(stage: Stage, report: &Report) -> Self {
        PreflightFailed {
            stage,
            failed: report
                .failed()
                .map(|c| format!("{} ({}): {}", c.id, c.target, c.detail))
                .collect(),
        }
    }
}

/// When a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    BeforeInstall,
    AfterInstall,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::BeforeInstall => "before install.sh",
            Stage::AfterInstall => "after install",
        })
    }
}

/// The private addresses of the live peers in a cluster view, this instance left out.
pub fn live_peers(view: &ClusterView, me: &str) -> Vec<String> {
    view.nodes
        .iter()
        .filter(|n| !n.stale && n.record.instance_id != me)
        .map(|n| n.record.private_ip.clone())
        .collect()
}

/// TFE's Vault HA port: every node's must be reachable from every other.
pub const VAULT_HA_PORT: u16 = 8201;

/// The checks that run before install.sh: everything but the Admin UI and the Vault peers.
pub async fn before_install<W: World>(
    world: &W,
    cfg: &Settings,
    node: &TfeConfig,
    instance_id: &str,
) -> Report {
    let probes = world.probes();
    let limit = limit(cfg);
    let checks: Vec<(CheckId, BoxFuture<'_, CheckResult>)> = vec![
        (CheckId::Redis, redis(probes, node, limit).boxed()),
        (CheckId::Postgres, postgres(probes, node, limit).boxed()),
        (
            CheckId::ObjectStorage,
            object_storage(probes, node, instance_id, limit).boxed(),
        ),
        (CheckId::License, async { license(node) }.boxed()),
        (CheckId::Disk, async { disk(probes) }.boxed()),
        (CheckId::Docker, docker(probes, cfg, limit).boxed()),
    ];
    let skip = &cfg.preflight.skip;
    let both_skipped = skip.contains(&CheckId::Imds) && skip.contains(&CheckId::Clock);
    let started = Instant::now();
    // One IMDS session answers two checks (it is reachable; its Date is the reference clock), so
    // it runs beside the others rather than as one of them.
    let (mut report, pair) = tokio::join!(run(cfg, checks), async {
        if both_skipped {
            None
        } else {
            Some(imds_and_clock(probes, limit).await)
        }
    });
    for result in pair.into_iter().flat_map(|(imds, clock)| [imds, clock]) {
        report.checks.push(if skip.contains(&result.id) {
            CheckResult::skipped(result.id, SKIPPED)
        } else {
            result
        });
    }
    if both_skipped {
        report
            .checks
            .push(CheckResult::skipped(CheckId::Imds, SKIPPED));
        report
            .checks
            .push(CheckResult::skipped(CheckId::Clock, SKIPPED));
    }
    report.checks.sort_by_key(|r| r.id);
    report.duration = started.elapsed();
    report
}

const SKIPPED: &str = "skipped by [preflight].skip";

/// The checks that need TFE installed: the Admin UI is off, and every live peer's Vault HA port
/// answers (`peers`: their private addresses, from the cluster view; `None`: no cluster view).
pub async fn after_install<W: World>(
    world: &W,
    cfg: &Settings,
    peers: Option<&[String]>,
) -> Report {
    let probes = world.probes();
    let checks: Vec<(CheckId, BoxFuture<'_, CheckResult>)> = vec![
        (
            CheckId::AdminUi,
            admin_ui(probes, &cfg.preflight.admin_ui, limit(cfg)).boxed(),
        ),
        (
            CheckId::VaultPeers,
            vault_peers(probes, peers, limit(cfg)).boxed(),
        ),
    ];
    run(cfg, checks).await
}

/// Runs `checks` concurrently, each within the limit (a check that does not answer fails, naming
/// the limit), skipping those `[preflight].skip` names; results in [`CheckId::ALL`] order.
async fn run<'a>(cfg: &Settings, checks: Vec<(CheckId, BoxFuture<'a, CheckResult>)>) -> Report {
    let started = Instant::now();
    // Each probe is bounded by the limit itself (naming its target); this is the net under a
    // check that is not.
    let net = limit(cfg) + Duration::from_secs(1);
    let timed = checks.into_iter().map(|(id, check)| async move {
        if cfg.preflight.skip.contains(&id) {
            return CheckResult::skipped(id, SKIPPED);
        }
        let began = Instant::now();
        let mut result = match tokio::time::timeout(net, check).await {
            Ok(result) => result,
            Err(_) => CheckResult::new(id, "-", Verdict::Fail, no_answer(net)),
        };
        result.duration = began.elapsed();
        result
    });
    let mut results = join_all(timed).await;
    results.sort_by_key(|r| r.id);
    Report {
        checks: results,
        duration: started.elapsed(),
    }
}

/// One check's time: its own limit, never beyond the whole run's.
fn limit(cfg: &Settings) -> Duration {
    cfg.preflight.check_timeout.min(cfg.preflight.timeout)
}

fn setting<'a>(node: &'a TfeConfig, key: &str) -> Option<&'a str> {
    node.settings
        .get(key)
        .map(SettingValue::expose)
        .filter(|v| !v.is_empty())
}

fn secret(node: &TfeConfig, key: &str) -> Option<Secret> {
    setting(node, key).map(Secret::new)
}

fn on(node: &TfeConfig, key: &str) -> bool {
    setting(node, key) == Some("1")
}

const CHECK_TIMEOUT: &str = "([preflight].check_timeout)";

fn no_answer(limit: Duration) -> String {
    format!(
        "no answer within {} {CHECK_TIMEOUT}",
        humantime::format_duration(limit)
    )
}

/// A probe's answer within `limit`, as a check's result: its line on success, "address: why" on
/// failure.
async fn judged(
    id: CheckId,
    target: String,
    limit: Duration,
    probe: impl std::future::Future<Output = Result<String, ProbeError>>,
) -> CheckResult {
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(found)) => CheckResult::new(id, target, Verdict::Pass, found),
        Ok(Err(e)) => CheckResult::new(id, target, Verdict::Fail, e.to_string()),
        Err(_) => {
            let why = format!("{target}: {}", no_answer(limit));
            CheckResult::new(id, target, Verdict::Fail, why)
        }
    }
}

async fn redis<P: Probes>(probes: &P, node: &TfeConfig, limit: Duration) -> CheckResult {
    let Some(host) = setting(node, "redis_host") else {
        return CheckResult::skipped(
            CheckId::Redis,
            "no redis_host setting: TFE uses no external Redis",
        );
    };
    let probe = RedisProbe {
        host: host.to_string(),
        port: setting(node, "redis_port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(6379),
        password: on(node, "redis_use_password_auth")
            .then(|| secret(node, "redis_pass"))
            .flatten(),
        tls: on(node, "redis_use_tls"),
        ca_bundle: setting(node, "ca_certs").map(str::to_string),
    };
    let target = format!("{}:{}", probe.host, probe.port);
    let mut result = judged(CheckId::Redis, target, limit, probes.redis(&probe)).await;
    if probe.tls && result.verdict == Verdict::Fail && result.detail.ends_with(CHECK_TIMEOUT) {
        // Redis says nothing at all to a TLS client on its plain port.
        result
            .detail
            .push_str("; redis_use_tls is on: is this a plain (non-TLS) port?");
    }
    result
}

async fn postgres<P: Probes>(probes: &P, node: &TfeConfig, limit: Duration) -> CheckResult {
    let Some(netloc) = setting(node, "pg_netloc") else {
        return CheckResult::skipped(
            CheckId::Postgres,
            "no pg_netloc setting: TFE uses no external PostgreSQL",
        );
    };
    let (host, port) = match netloc.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => match p.parse() {
            Ok(port) => (h.trim_matches(['[', ']']), port),
            Err(_) => {
                return CheckResult::new(
                    CheckId::Postgres,
                    netloc,
                    Verdict::Fail,
                    format!("pg_netloc {netloc:?} is not HOST:PORT"),
                )
            }
        },
        _ => (netloc, 5432),
    };
    let params = setting(node, "pg_extra_params").unwrap_or("");
    let sslmode = params
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "sslmode")
        .map(|(_, v)| v);
    let sslmode = match sslmode {
        None => SslMode::Prefer,
        Some(v) => match SslMode::parse(v) {
            Some(mode) => mode,
            None => {
                return CheckResult::new(
                    CheckId::Postgres,
                    netloc,
                    Verdict::Fail,
                    format!("pg_extra_params sslmode={v:?} is not one of disable, require, verify-ca, verify-full"),
                )
            }
        },
    };
    let probe = PostgresProbe {
        host: host.to_string(),
        port,
        user: setting(node, "pg_user").unwrap_or("").to_string(),
        password: secret(node, "pg_password").unwrap_or_else(|| Secret::new("")),
        dbname: setting(node, "pg_dbname").unwrap_or("").to_string(),
        sslmode,
        ca_bundle: setting(node, "ca_certs").map(str::to_string),
    };
    let target = format!("{host}:{port}");
    judged(CheckId::Postgres, target, limit, probes.postgres(&probe)).await
}

async fn object_storage<P: Probes>(
    probes: &P,
    node: &TfeConfig,
    instance_id: &str,
    limit: Duration,
) -> CheckResult {
    match setting(node, "placement") {
        Some("placement_s3") => {}
        Some(other) => {
            return CheckResult::skipped(
                CheckId::ObjectStorage,
                format!("placement {other}: only S3 is checked (Azure and GCS are not)"),
            )
        }
        None => {
            return CheckResult::skipped(
                CheckId::ObjectStorage,
                "no placement setting: TFE keeps its objects on disk",
            )
        }
    }
    let keys = match (
        on(node, "aws_instance_profile"),
        setting(node, "aws_access_key_id"),
    ) {
        (false, Some(id)) => Some((
            id.to_string(),
            secret(node, "aws_secret_access_key").unwrap_or_else(|| Secret::new("")),
        )),
        _ => None,
    };
    let probe = ObjectStorageProbe {
        bucket: setting(node, "s3_bucket").unwrap_or("").to_string(),
        region: setting(node, "s3_region").unwrap_or("").to_string(),
        endpoint: setting(node, "s3_endpoint").map(str::to_string),
        keys,
        sse_kms: (setting(node, "s3_sse") == Some("aws:kms"))
            .then(|| setting(node, "s3_sse_kms_key_id").map(str::to_string)),
        marker_key: format!("{MARKER_PREFIX}{instance_id}"),
    };
    let target = format!("s3://{}", probe.bucket);
    judged(
        CheckId::ObjectStorage,
        target,
        limit,
        probes.object_storage(&probe),
    )
    .await
}

fn license(node: &TfeConfig) -> CheckResult {
    match &node.license {
        None => CheckResult::skipped(CheckId::License, "no [secrets].license configured"),
        Some(bytes) => {
            let (verdict, line) = judge_license(bytes.expose());
            CheckResult::new(CheckId::License, "[secrets].license", verdict, line)
        }
    }
}

fn disk<P: Probes>(probes: &P) -> CheckResult {
    let mut worst = Verdict::Pass;
    let mut lines = Vec::new();
    for need in &DISK_NEEDS {
        let (verdict, line) = match probes.disk_space(Path::new(need.path)) {
            Ok(space) => {
                let (verdict, line) = judge_disk(need, space.free_bytes);
                if space.measured == Path::new(need.path) {
                    (verdict, line)
                } else {
                    (verdict, format!("{line} (on {})", space.measured.display()))
                }
            }
            Err(e) => (Verdict::Fail, e.to_string()),
        };
        worst = match (worst, verdict) {
            (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
            (Verdict::Warn, _) | (_, Verdict::Warn) => Verdict::Warn,
            _ => Verdict::Pass,
        };
        lines.push(line);
    }
    let paths: Vec<&str> = DISK_NEEDS.iter().map(|n| n.path).collect();
    CheckResult::new(CheckId::Disk, paths.join(" "), worst, lines.join("; "))
}

/// Docker must be there already only when install.sh is told not to install it.
async fn docker<P: Probes>(probes: &P, cfg: &Settings, limit: Duration) -> CheckResult {
    let needs_docker = cfg.install.extra_args.iter().any(|a| {
        let flag = a.replace('_', "-");
        flag == "no-docker" || flag == "airgap"
    });
    if !needs_docker {
        return CheckResult::skipped(CheckId::Docker, "install.sh installs Docker itself");
    }
    let socket = &cfg.preflight.docker_socket;
    let target = socket.display().to_string();
    let probe = async {
        let version = probes.docker(socket).await?;
        Ok(format!("Docker Engine {version}"))
    };
    judged(CheckId::Docker, target, limit, probe).await
}

async fn imds_and_clock<P: Probes>(probes: &P, limit: Duration) -> (CheckResult, CheckResult) {
    let began = Instant::now();
    let target = "IMDSv2";
    let answer = tokio::time::timeout(limit, probes.imds_clock()).await;
    let took = began.elapsed();
    let (mut imds, mut clock) = match answer {
        Ok(Ok(ahead_ms)) => {
            let (verdict, line) = judge_clock(ahead_ms);
            (
                CheckResult::new(
                    CheckId::Imds,
                    target,
                    Verdict::Pass,
                    "a session token and its answer",
                ),
                CheckResult::new(CheckId::Clock, target, verdict, line),
            )
        }
        Ok(Err(e)) => (
            CheckResult::new(
                CheckId::Imds,
                target,
                Verdict::Fail,
                format!("instance metadata {e}"),
            ),
            CheckResult::new(
                CheckId::Clock,
                target,
                Verdict::Skipped,
                "no reference clock: IMDS did not answer",
            ),
        ),
        Err(_) => (
            CheckResult::new(
                CheckId::Imds,
                target,
                Verdict::Fail,
                format!(
                    "instance metadata: no answer within {}",
                    humantime::format_duration(limit)
                ),
            ),
            CheckResult::new(
                CheckId::Clock,
                target,
                Verdict::Skipped,
                "no reference clock: IMDS did not answer",
            ),
        ),
    };
    imds.duration = took;
    clock.duration = took;
    (imds, clock)
}

async fn admin_ui<P: Probes>(probes: &P, address: &str, limit: Duration) -> CheckResult {
    let answer = match tokio::time::timeout(limit, probes.port(address)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::new(address, no_answer(limit))),
    };
    let (verdict, line) = match answer {
        Ok(PortAnswer::Refused) => (Verdict::Pass, "nothing listens: the Admin UI is off".to_string()),
        // With disable-replicated-ui, Replicated itself still answers 502 there.
        Ok(PortAnswer::Open { http_status: Some(502) }) => (
            Verdict::Pass,
            "answers 502: the Admin UI is off (Replicated's own answer without it)".to_string(),
        ),
        Ok(PortAnswer::Open { http_status }) => (
            Verdict::Fail,
            format!(
                "something serves here ({}): the Admin UI must be off in Active/Active (install.sh disable-replicated-ui); its changes would be lost at the next repave",
                http_status.map_or("no HTTP status".into(), |s| format!("HTTP {s}"))
            ),
        ),
        Err(e) => (Verdict::Fail, e.to_string()),
    };
    CheckResult::new(CheckId::AdminUi, address, verdict, line)
}

async fn vault_peers<P: Probes>(
    probes: &P,
    peers: Option<&[String]>,
    limit: Duration,
) -> CheckResult {
    let id = CheckId::VaultPeers;
    let peers = match peers {
        None => return CheckResult::skipped(id, "no cluster view"),
        Some([]) => return CheckResult::skipped(id, "no live peers in the cluster view"),
        Some(p) => p,
    };
    let answers = join_all(peers.iter().map(|ip| async move {
        let address = if ip.contains(':') {
            format!("[{ip}]:{VAULT_HA_PORT}")
        } else {
            format!("{ip}:{VAULT_HA_PORT}")
        };
        let answer = tokio::time::timeout(limit, probes.port(&address)).await;
        (address, answer)
    }))
    .await;
    let mut unreachable = Vec::new();
    for (address, answer) in &answers {
        match answer {
            Ok(Ok(PortAnswer::Open { .. })) => {}
            Ok(Ok(PortAnswer::Refused)) => unreachable.push(format!("{address} refused")),
            Ok(Err(e)) => unreachable.push(e.to_string()),
            Err(_) => unreachable.push(format!("{address} no answer (a security group?)")),
        }
    }
    let target = format!("{} peer(s)", answers.len());
    if unreachable.is_empty() {
        CheckResult::new(
            id,
            target,
            Verdict::Pass,
            format!("{} peer(s) answer on {VAULT_HA_PORT}", answers.len()),
        )
    } else {
        CheckResult::new(
            id,
            target,
            Verdict::Fail,
            format!(
                "Vault HA port {VAULT_HA_PORT} not reachable: {}",
                unreachable.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests;
