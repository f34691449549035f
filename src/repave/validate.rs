//! The validate step: the new node's agent reports this pass's release and in-service in the
//! cluster view (the launch hook was released only once TFE was healthy on it), the view is
//! consistent, and then the operator's `--validate-cmd` (e.g. a plan run through the TFE API)
//! exits 0 within its timeout.

use super::progress::Progress;
use super::steps::{Ctx, StepError};
use crate::model::asg::LifecycleState;
use crate::model::lifecycle::Phase;
use crate::model::repave::{Pass, Repave, Step};
use crate::ports::cluster::{ClusterStore, RepaveStore};
use crate::ports::World;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

pub async fn validate<W: World, S: ClusterStore + RepaveStore>(
    ctx: &mut Ctx<'_, W, S>,
    repave: &mut Repave,
    pass: Pass,
    progress: &mut Progress,
) -> Result<String, StepError> {
    let (target, release) = repave.plan.target(pass);
    let (version, release) = (target.version.clone(), release);
    // A heartbeat or two after the node entered service, with room.
    let deadline = Instant::now() + ctx.req.node_ttl * 3 + Duration::from_secs(30);
    let (node, ip) = loop {
        let seen = ctx.observe(repave, Step::Validate, progress).await?;
        let new = seen.group.instances.iter().find(|i| {
            i.lifecycle_state == LifecycleState::InService
                && i.template_version.as_deref() == Some(version.as_str())
        });
        let Some(new) = new else {
            return Err(StepError::Failed(format!(
                "no instance of version {version} is in service any more"
            )));
        };
        let view = seen.view(ctx.req);
        let member = view.as_ref().and_then(|v| {
            v.nodes
                .iter()
                .find(|n| !n.stale && n.record.instance_id == new.instance_id)
        });
        let why_not = match (&view, member) {
            (None, _) => "the cluster view cannot be read".to_string(),
            (Some(_), None) => format!("{} is not in the cluster view", new.instance_id),
            (Some(_), Some(m)) if m.record.phase != Phase::InService => format!(
                "{} reports {} in the cluster view",
                new.instance_id,
                m.record.phase.as_str()
            ),
            (Some(_), Some(m)) if release.is_some_and(|r| r != m.record.release_sequence) => {
                format!(
                    "{} runs release {}, not {}",
                    new.instance_id,
                    m.record.release_sequence,
                    release.unwrap_or_default()
                )
            }
            (Some(v), Some(_)) if !v.consistent => format!(
                "the cluster view is not consistent: {}",
                v.findings
                    .iter()
                    .map(|f| f.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            (Some(_), Some(m)) => break (new.instance_id.clone(), m.record.private_ip.clone()),
        };
        if Instant::now() >= deadline {
            return Err(StepError::Failed(format!(
                "the new node did not validate in the cluster view: {why_not}"
            )));
        }
        ctx.sleep().await;
    };
    let release_text = release.map_or("an unknown release".to_string(), |r| format!("release {r}"));
    let Some(cmd) = repave.plan.validate_cmd.clone() else {
        return Ok(format!(
            "{node} in service on {release_text} in the cluster view, which is consistent"
        ));
    };
    let timeout = Duration::from_secs(repave.plan.validate_timeout_s);
    run_cmd(&cmd, timeout, &repave.plan.group, &node, &ip, release)
        .await
        .map_err(StepError::Failed)?;
    Ok(format!(
        "{node} in service on {release_text} in the cluster view; `{cmd}` passed"
    ))
}

/// `sh -c CMD` with the node in its environment (REPAVE_GROUP, REPAVE_INSTANCE_ID,
/// REPAVE_PRIVATE_IP, REPAVE_RELEASE), killed at `timeout`; its output passes through to the
/// operator's terminal (stderr), the last lines of its stderr are in a failure's reason.
async fn run_cmd(
    cmd: &str,
    timeout: Duration,
    group: &str,
    instance: &str,
    ip: &str,
    release: Option<u64>,
) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("REPAVE_GROUP", group)
        .env("REPAVE_INSTANCE_ID", instance)
        .env("REPAVE_PRIVATE_IP", ip)
        .env(
            "REPAVE_RELEASE",
            release.map(|r| r.to_string()).unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{cmd}` could not be started: {e}"))?;
    let stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut last: Vec<String> = Vec::new();
        if let Some(err) = stderr {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("validate-cmd: {line}");
                last.push(line);
                if last.len() > 3 {
                    last.remove(0);
                }
            }
        }
        last
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for `{cmd}` failed: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            return Err(format!(
                "`{cmd}` did not end within {} s (killed)",
                timeout.as_secs()
            ));
        }
    };
    let last = tail.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd}` failed ({status}){}",
            if last.is_empty() {
                String::new()
            } else {
                format!(": {}", last.join(" / "))
            }
        ))
    }
}
