//! What `tfe-node-agent status` prints: a few lines a person reads at a glance.

use super::StatusDoc;
use crate::model::cluster::ClusterView;
use crate::model::lifecycle::{DrainRecord, NodeState, Termination};
use std::fmt::Write as _;
use std::path::Path;

/// The running agent's view.
pub fn running(doc: &StatusDoc) -> String {
    let v = &doc.view;
    let mut out = String::new();
    let since = v
        .phases
        .last()
        .map(|p| {
            humantime::format_duration(std::time::Duration::from_secs(
                doc.served_at.saturating_sub(p.began_at),
            ))
            .to_string()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "instance   {} (group {})",
        v.instance_id,
        v.group.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "phase      {} for {since} — {}",
        v.phase.as_str(),
        v.activity
    );
    let _ = writeln!(
        out,
        "ready      {}   live {}",
        if doc.ready { "yes" } else { "no" },
        if doc.live { "yes" } else { "no" }
    );
    if let Some(r) = v.release_sequence {
        let installed = v.installed_release.map_or("none".into(), |i| i.to_string());
        let _ = writeln!(out, "release    {r} (installed: {installed})");
    }
    for (label, h) in [("launch", &v.launch_hook), ("terminate", &v.terminate_hook)] {
        let _ = writeln!(
            out,
            "{label:<10} hook {} {:?}{}, heartbeats {} sent / {} failed",
            h.name.as_deref().unwrap_or("(none configured)"),
            h.state,
            h.result
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            h.heartbeats_sent,
            h.heartbeats_failed
        );
    }
    if let Some(t) = &v.termination {
        termination(&mut out, t);
    }
    for l in doc.loops.iter().filter(|l| l.stuck) {
        let _ = writeln!(
            out,
            "stuck      {} (no tick for {:.0}s)",
            l.name.as_str(),
            l.since_tick_seconds
        );
    }
    if let Some(e) = &v.last_error {
        let _ = writeln!(out, "last error {} {}", at(e.at), e.chain);
    }
    out
}

/// What state.json records, when no agent answers.
pub fn recorded(state: &NodeState, path: &Path) -> String {
    let mut out = format!("recorded in {}:\n", path.display());
    let _ = writeln!(out, "instance   {}", state.instance_id);
    let _ = writeln!(out, "phase      {}", state.phase.as_str());
    let _ = writeln!(
        out,
        "installed  {}",
        state
            .installed_release
            .map_or("nothing yet".into(), |r| format!("release {r}"))
    );
    let _ = writeln!(
        out,
        "launch     hook answered {}",
        state.launch_hook.map_or("not yet", |a| a.as_str())
    );
    if let Some(t) = &state.termination {
        termination(&mut out, t);
    }
    out
}

/// Unix seconds as an RFC 3339 UTC time.
fn at(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

fn termination(out: &mut String, t: &Termination) {
    let drain = match &t.drain {
        DrainRecord::NotStarted => "not started".to_string(),
        DrainRecord::Running { process } => format!("running (pid {})", process.pid),
        DrainRecord::Finished { outcome } => outcome.describe(),
    };
    let _ = writeln!(
        out,
        "going      {} ({}), noticed at {}",
        t.source.as_str(),
        t.detail,
        t.noticed_at
    );
    let _ = writeln!(out, "drain      {drain}");
    if let Some(h) = &t.hook {
        let _ = writeln!(out, "terminate  {h:?}");
    }
}

/// `tfe-node-agent cluster`: one line per node, then the findings.
pub fn cluster(view: &ClusterView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {} (release {}): {} live, {} stale",
        view.cluster_id.as_deref().unwrap_or("(no identity)"),
        view.release_sequence
            .map_or("unknown".into(), |r| r.to_string()),
        view.live,
        view.stale
    );
    let _ = writeln!(
        out,
        "{:<21} {:<15} {:<11} {:<12} {:>7} {:<8} {:>9}",
        "INSTANCE", "IP", "AZ", "PHASE", "RELEASE", "AGENT", "SEEN"
    );
    for n in &view.nodes {
        let _ = writeln!(
            out,
            "{:<21} {:<15} {:<11} {:<12} {:>7} {:<8} {:>8}s{}",
            n.record.instance_id,
            n.record.private_ip,
            n.record.availability_zone,
            n.record.phase.as_str(),
            n.record.release_sequence,
            n.record.agent_version,
            n.seconds_since_seen,
            if n.stale { " STALE" } else { "" }
        );
    }
    if view.findings.is_empty() {
        let _ = writeln!(out, "consistent");
    }
    for f in &view.findings {
        let _ = writeln!(out, "finding: {}", f.describe());
    }
    if let Some(rolling) = &view.rolling {
        if let Some(l) = &rolling.lease {
            let _ = writeln!(
                out,
                "restart lease: held by {} since {} ({}s, token {})",
                l.owner,
                l.since,
                rolling.now.saturating_sub(l.since),
                l.token
            );
        }
        if let Some(r) = &rolling.rollout {
            let _ = writeln!(
                out,
                "rollout {} by {} at {}: {}; done: {}",
                r.id,
                r.requested_by,
                r.requested_at,
                r.progress(),
                if r.done.is_empty() {
                    "none".into()
                } else {
                    r.done.join(", ")
                }
            );
        }
    }
    out
}
