//! `drain` and `app restart`: an operator's request to the running agent over its unix socket,
//! then (unless `--detach`) following `/status` until the work ended, within a bound.

use super::client;
use super::StatusDoc;
use crate::config::{Endpoint, Settings};
use crate::model::lifecycle::DrainRecord;
use crate::node::exit::Exit;
use crate::node::operator::{operator_name, Answer, Verdict};
use crate::node::view::RestartStep;
use std::time::Duration;

/// How often `/status` is asked while following.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// Beyond the configured limits, for the agent's own polling and a restart of the agent.
const FOLLOW_MARGIN: Duration = Duration::from_secs(60);

pub const NO_REVERSE: &str = "There is no reverse of node-drain: `tfe-node-agent app restart` brings this node back into service.";

/// `drain [--detach]`.
pub async fn drain(cfg: &Settings, detach: bool) -> Exit {
    let socket = match unix_socket(cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let answer = match ask(socket, "/drain").await {
        Ok(a) => a,
        Err(code) => return code,
    };
    println!("{}", answer.message);
    match answer.verdict {
        Verdict::Refused => return Exit::Refused,
        Verdict::Done => return Exit::Ok,
        Verdict::Accepted | Verdict::Running if detach => {
            println!("detached: follow it with `tfe-node-agent status`");
            return Exit::Ok;
        }
        Verdict::Accepted | Verdict::Running => {}
    }
    let limit = cfg.drain.timeout + cfg.drain.app_stop_timeout + FOLLOW_MARGIN;
    let ended = follow(socket, limit, |doc| {
        let t = doc.view.termination.as_ref()?;
        match &t.drain {
            // The app is stopped after node-drain; the path ends when the activity says so.
            DrainRecord::Finished { outcome } if !doc.view.activity.starts_with("draining") => {
                Some((outcome.succeeded(), outcome.describe()))
            }
            _ => None,
        }
    })
    .await;
    match ended {
        Some((true, describe)) => {
            println!("drained: {describe}; /readyz answers 503.\n{NO_REVERSE}");
            Exit::Ok
        }
        Some((false, describe)) => {
            eprintln!("the drain failed: {describe} (the node stays out of service; see `tfe-node-agent status` and the journal).\n{NO_REVERSE}");
            Exit::OperationFailed
        }
        None => {
            eprintln!("the drain did not end within {} ([drain].timeout + [drain].app_stop_timeout + {}s); it goes on in the agent: `tfe-node-agent status`", humantime::format_duration(limit), FOLLOW_MARGIN.as_secs());
            Exit::OperationFailed
        }
    }
}

/// `app restart`.
pub async fn app_restart(cfg: &Settings) -> Exit {
    let socket = match unix_socket(cfg) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let answer = match ask(socket, "/app/restart").await {
        Ok(a) => a,
        Err(code) => return code,
    };
    println!("{}", answer.message);
    if answer.verdict != Verdict::Accepted {
        return Exit::Refused;
    }
    let limit = cfg.drain.app_stop_timeout + cfg.readiness.timeout + FOLLOW_MARGIN;
    let ended = follow(socket, limit, |doc| {
        let r = doc.view.app_restart.as_ref()?;
        (!r.step.running()).then(|| (r.step, r.detail.clone().unwrap_or_default()))
    })
    .await;
    match ended {
        Some((RestartStep::Succeeded, detail)) => {
            println!("app restarted: {detail}; the node is in service");
            Exit::Ok
        }
        Some((RestartStep::NotReady, detail)) => {
            eprintln!("app restart: {detail}");
            Exit::ReadinessTimeout
        }
        Some((step, detail)) => {
            eprintln!(
                "app restart {}: {detail}",
                if step == RestartStep::Interrupted {
                    "cut short"
                } else {
                    "failed"
                }
            );
            Exit::OperationFailed
        }
        None => {
            eprintln!(
                "the app restart did not end within {}; see `tfe-node-agent status`",
                humantime::format_duration(limit)
            );
            Exit::OperationFailed
        }
    }
}

/// The unix socket of `[observe].listen`: operator requests are served there only.
fn unix_socket(cfg: &Settings) -> Result<&Endpoint, Exit> {
    cfg.listen
        .iter()
        .find(|e| matches!(e, Endpoint::Unix(_)))
        .ok_or_else(|| {
            eprintln!("[observe].listen names no unix socket: the agent takes operator requests there only (TCP is read-only)");
            Exit::Config
        })
}

async fn ask(socket: &Endpoint, path: &str) -> Result<Answer, Exit> {
    match client::post(socket, path, &operator_name()).await {
        Ok((202 | 200 | 409, body)) => serde_json::from_str(&body).map_err(|e| {
            eprintln!("{socket} answered {path} with something else than the agent's answer ({e})");
            Exit::Internal
        }),
        Ok((503, body)) => {
            eprintln!("{}", body.trim_end());
            Err(Exit::Refused)
        }
        Ok((code, body)) => {
            eprintln!(
                "{socket} answered {path} with HTTP {code}: {}",
                body.trim_end()
            );
            Err(Exit::Internal)
        }
        Err(e) => {
            eprintln!("no running agent answered: {}", crate::error_chain(&e));
            Err(Exit::NoAgent)
        }
    }
}

/// Polls `/status` until `ended` says so, printing each new activity; `None` past `limit`. An
/// agent that does not answer for a while (restarted mid-drain) is waited for.
async fn follow<T>(
    socket: &Endpoint,
    limit: Duration,
    ended: impl Fn(&StatusDoc) -> Option<T>,
) -> Option<T> {
    let give_up = tokio::time::Instant::now() + limit;
    let mut said = String::new();
    while tokio::time::Instant::now() < give_up {
        let now = match client::get(socket, "/status").await {
            Ok((200, body)) => match serde_json::from_str::<StatusDoc>(&body) {
                Ok(doc) => {
                    if let Some(end) = ended(&doc) {
                        return Some(end);
                    }
                    doc.view.activity
                }
                Err(e) => format!("not the agent's /status ({e})"),
            },
            Ok((code, _)) => format!("/status answered HTTP {code}"),
            Err(e) => format!(
                "the agent does not answer ({}); waiting",
                crate::error_chain(&e)
            ),
        };
        if now != said {
            println!("... {now}");
            said = now;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    None
}
