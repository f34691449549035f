//! What an operator asks of the running agent (`drain`, `app restart`, through the unix socket):
//! the request travels to the service loop, which alone records the node's state, and the answer
//! travels back. Whether a request is taken is decided here, from the recorded state, so the
//! HTTP side never guesses.

use crate::model::lifecycle::{NodeState, Phase};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the HTTP side waits for the service loop to take a request (it may be answering the
/// launch hook again after a standby, which holds it for a while).
pub const TAKE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ask {
    /// Drain this node: node-drain once, the app stopped, `/readyz` 503.
    Drain,
    /// Restart TFE (app stop, app start, readiness); after an operator's drain, the way back.
    AppRestart,
}

impl Ask {
    pub fn as_str(self) -> &'static str {
        match self {
            Ask::Drain => "drain",
            Ask::AppRestart => "app restart",
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Recorded and under way.
    Accepted,
    /// The same work is under way already (a drain running): nothing new was started.
    Running,
    /// The work was done already (the node is drained): nothing was started.
    Done,
    /// Not in this state of the node (the message says why).
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub verdict: Verdict,
    pub message: String,
}

impl Answer {
    pub fn accepted(message: impl Into<String>) -> Self {
        Self::new(Verdict::Accepted, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Verdict::Refused, message)
    }

    fn new(verdict: Verdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            message: message.into(),
        }
    }
}

/// One request on its way to the service loop.
#[derive(Debug)]
pub struct Request {
    pub ask: Ask,
    /// Who asked, as the client said (for the log and the record; never authenticated beyond the
    /// socket's mode).
    pub by: String,
    reply: oneshot::Sender<Answer>,
}

impl Request {
    pub fn answer(self, answer: Answer) {
        // The client may have given up; the work goes on regardless.
        let _ = self.reply.send(answer);
    }
}

/// The HTTP side's end: cheap to clone, one per listener.
#[derive(Debug, Clone)]
pub struct Door(mpsc::Sender<Request>);

/// The service loop's end.
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<Request>);

pub fn door() -> (Door, Inbox) {
    let (tx, rx) = mpsc::channel(8);
    (Door(tx), Inbox(rx))
}

impl Door {
    /// `None` when the service loop did not take the request within [`TAKE_WITHIN`] (or is gone).
    pub async fn ask(&self, ask: Ask, by: &str) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            ask,
            by: by.to_string(),
            reply,
        };
        let sent = async {
            self.0.send(request).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(TAKE_WITHIN, sent).await.ok().flatten()
    }
}

impl Inbox {
    /// The next request; pending forever once every door is gone (no listener serves it).
    pub async fn next(&mut self) -> Request {
        match self.0.recv().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }
}

/// The answer while the agent cannot take new work (booting, draining, restarting): `None` means
/// the state allows `ask` and the caller takes it.
pub fn verdict(state: &NodeState, ask: Ask, restarting: bool) -> Option<Answer> {
    use Verdict::*;
    if let Some(t) = &state.termination {
        let what = format!("{} ({})", t.source.as_str(), t.detail);
        return Some(match (ask, t.is_done()) {
            (Ask::Drain, false) => Answer::new(Running, format!("a drain is running already: {what}; not starting another")),
            (Ask::Drain, true) => Answer::new(Done, format!("the node is drained already: {what}; node-drain is not run again. `tfe-node-agent app restart` brings it back")),
            (Ask::AppRestart, false) => Answer::new(Refused, format!("a drain is running: {what}; restart the app once it ended")),
            (Ask::AppRestart, true) if state.restorable() => return None,
            (Ask::AppRestart, true) => Answer::new(Refused, format!("the instance is going away: {what}; only an operator's drain is undone by an app restart")),
        });
    }
    if restarting {
        return Some(Answer::new(
            Refused,
            "an app restart is running; wait for it to end (`tfe-node-agent status`)",
        ));
    }
    match state.phase {
        Phase::InService => None,
        Phase::BootFailed => Some(Answer::new(Refused, "the node's boot failed: it takes no traffic and TFE may not be installed; see `tfe-node-agent status`")),
        p => Some(Answer::new(Refused, format!("the node is still booting (phase {}); ask again once it is in service", p.as_str()))),
    }
}

/// Who runs this command, for the agent's log and the records: `SUDO_USER` (the person behind
/// sudo), else `USER`, with the uid.
pub fn operator_name() -> String {
    let uid = nix::unistd::getuid();
    let name = ["SUDO_USER", "USER"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    format!("{name} (uid {uid})")
}

/// Who asked, as a client may say it: printable, short, no separators that could forge a log
/// field. Anything else is replaced.
pub fn who(said: Option<&str>) -> String {
    let said = said.unwrap_or("").trim();
    let clean: String = said
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-@()=".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.is_empty() {
        "an unnamed client".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lifecycle::{DrainOutcome, Event, Source};
    use crate::testing::states::{booting, drain_process, in_service, notice, noticed};

    #[test]
    fn only_an_in_service_node_takes_a_drain_and_each_other_state_says_why() {
        assert_eq!(verdict(&in_service(), Ask::Drain, false), None);
        assert_eq!(verdict(&in_service(), Ask::AppRestart, false), None);
        let booting = verdict(&booting(), Ask::Drain, false).unwrap();
        assert_eq!(booting.verdict, Verdict::Refused);
        assert!(booting.message.contains("booting"), "{booting:?}");
        let restarting = verdict(&in_service(), Ask::Drain, true).unwrap();
        assert!(restarting.message.contains("app restart is running"));

        let mut s = noticed(in_service(), notice(Source::Operator, 1));
        let running = verdict(&s, Ask::Drain, false).unwrap();
        assert_eq!(running.verdict, Verdict::Running);
        assert_eq!(
            verdict(&s, Ask::AppRestart, false).unwrap().verdict,
            Verdict::Refused
        );
        s.apply(Event::DrainStarted(drain_process())).unwrap();
        s.apply(Event::DrainFinished(DrainOutcome::Drained))
            .unwrap();
        let done = verdict(&s, Ask::Drain, false).unwrap();
        assert_eq!(done.verdict, Verdict::Done);
        assert!(done.message.contains("app restart"), "{done:?}");
        assert_eq!(verdict(&s, Ask::AppRestart, false), None);
        // An ASG termination joined it: the way back is gone.
        s.apply(Event::TerminationNoticed(notice(Source::Asg, 2)))
            .unwrap();
        let gone = verdict(&s, Ask::AppRestart, false).unwrap();
        assert_eq!(gone.verdict, Verdict::Refused, "{gone:?}");
        assert!(!s.restorable());
    }

    #[test]
    fn who_keeps_a_short_printable_name() {
        assert_eq!(who(Some("alice (uid 1000)")), "alice (uid 1000)");
        assert_eq!(who(Some("a\nFORGED=1")), "a?FORGED=1");
        assert_eq!(who(None), "an unnamed client");
        assert_eq!(who(Some(&"x".repeat(200))).len(), 64);
    }
}
