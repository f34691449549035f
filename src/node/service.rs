//! `run`: the agent as a service for the node's whole life. Boot (unless the node is already
//! going), then watch for the end — IMDS, spot, a system shutdown — and run the termination path,
//! which a SIGTERM does not cut short while an ASG termination is in progress.

use crate::config::Settings;
use crate::model::asg::HookResult;
use crate::model::asg::LifecycleState;
use crate::model::lifecycle::{Event, LaunchAnswer, Notice, Source};
use crate::node::boot::{self, BootError};
use crate::node::exit::Exit;
use crate::node::hook::{self, LaunchHook};
use crate::node::operator::{self, Answer, Ask, Inbox, Request};
use crate::node::readiness;
use crate::node::recorder::{RecordError, Recorder};
use crate::node::restart::{self, RestartError};
use crate::node::terminate;
use crate::node::watch::{Change, Seen, Watcher};
use crate::ports::{Clock, Host, Identity, World};
use crate::sys::notify;
use crate::sys::shutdown::{self, ShutdownRx};
use crate::telemetry::metrics::{metrics, Completion, HookKind};
use crate::telemetry::Milestone;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a boot cut short by a termination looks for the launch hook to abandon.
const ABANDON_LOOKUP: Duration = Duration::from_secs(60);
/// While finishing an ASG termination after SIGTERM, ask systemd for this much more time…
const EXTEND_BY: Duration = Duration::from_secs(60);
/// …this often.
const EXTEND_EVERY: Duration = Duration::from_secs(20);

enum BootEnd {
    Booted(Result<(), BootError>),
    Interrupted(Seen),
    Stopped(i32),
}

/// What one turn of the in-service loop met.
enum Turn {
    Change(Change),
    Request(Request),
    Restarted(Result<(), RestartError>),
    Signal(i32),
}

/// An `app restart` under way, polled by the in-service loop beside the watcher.
type Restarting<'a> = Option<Pin<Box<dyn Future<Output = Result<(), RestartError>> + 'a>>>;

pub async fn run<W: World>(
    world: &W,
    cfg: &Settings,
    identity: &Identity,
    recorder: &Recorder,
    signals: &mut ShutdownRx,
    inbox: &mut Inbox,
) -> Exit {
    let fail = |code: Exit, e: &dyn std::error::Error| {
        log::error!("{}", crate::error_chain(e));
        code
    };
    let boot_id = world.host().boot_id();
    if recorder.state().resumable(&boot_id) {
        let detail = recorder
            .state()
            .termination
            .as_ref()
            .map(|t| t.detail.clone())
            .unwrap_or_default();
        log::warn!(
            "the machine rebooted after a drain ({detail}) that did not end the instance; serving again"
        );
        if let Err(e) = recorder.record(Event::Resumed) {
            log::error!("cannot record the resumption: {}", crate::error_chain(&e));
            return Exit::LocalIo;
        }
    }
    let mut watcher =
        Watcher::new(world.imds(), world.clock(), &cfg.termination).reporting_to(recorder);
    let mut boot_failure = None;

    if recorder.state().termination.is_none() {
        let end = {
            let boot = boot::boot(world, cfg, identity, recorder);
            tokio::pin!(boot);
            loop {
                tokio::select! {
                    r = &mut boot => break BootEnd::Booted(r.map(drop)),
                    seen = watcher.next() => break BootEnd::Interrupted(seen),
                    signal = shutdown::wait(signals) => break BootEnd::Stopped(signal),
                    request = inbox.next() => refuse(request, "the agent is booting the node (or checking it after a start); ask again once it is in service"),
                }
            }
        };
        // The boot future is gone: a running install.sh's process group was killed with it.
        let seen = match end {
            BootEnd::Booted(Ok(())) => {
                recorder.ready("in service");
                None
            }
            BootEnd::Booted(Err(e)) => {
                // boot() logged why and released the launch hook; stay to handle the terminate
                // hook when the group replaces this node.
                boot_failure = Some(Exit::of_boot(&e));
                recorder.ready("boot failed; watching for termination");
                None
            }
            BootEnd::Interrupted(seen) => Some(seen),
            BootEnd::Stopped(signal) if world.host().system_stopping().await => {
                Some(shutdown_notice(signal, cfg, world.clock()))
            }
            BootEnd::Stopped(signal) => {
                log::warn!("signal {signal} during boot; stopping (install.sh, if running, was killed; the next start resumes)");
                return Exit::Ok;
            }
        };
        if let Some(seen) = seen {
            let said = format!("{} during boot: abandoning the boot", seen.detail);
            if let Err(code) = record_notice(world, recorder, &seen, &said) {
                return code;
            }
            abandon_launch(world, cfg, recorder).await;
        }
    }

    if recorder.state().termination.is_some() {
        // Started (or restarted) while terminating: systemd must not time the start out and kill
        // the agent mid-drain. A second READY=1 after a boot is harmless.
        recorder.ready("terminating");
    }
    let mut restarting: Restarting<'_> = None;
    loop {
        let unfinished = recorder
            .state()
            .termination
            .as_ref()
            .filter(|t| !t.is_done())
            .map(|t| t.source);
        if let Some(source) = unfinished {
            let signalled =
                match finish_termination(world, cfg, recorder, source, signals, inbox).await {
                    Ok(signalled) => signalled,
                    Err(e) => return fail(Exit::LocalIo, &e),
                };
            if signalled || source == Source::Shutdown {
                recorder.stopping("drained; stopping");
                return Exit::Ok;
            }
            if recorder.state().restorable() {
                recorder.say("drained by an operator; `tfe-node-agent app restart` brings the node back (node-drain has no reverse)");
            }
        }
        let turn = tokio::select! {
            change = watcher.next_change() => Turn::Change(change),
            request = inbox.next() => Turn::Request(request),
            r = poll(&mut restarting) => Turn::Restarted(r),
            signal = shutdown::wait(signals) => Turn::Signal(signal),
        };
        match turn {
            Turn::Change(change) => match change {
                Change::Drain(seen) => {
                    if restarting.take().is_some() {
                        restart::interrupted(
                            recorder,
                            &format!("termination noticed: {}", seen.detail),
                        );
                    }
                    let said = format!("termination noticed: {}", seen.detail);
                    if let Err(code) = record_notice(world, recorder, &seen, &said) {
                        return code;
                    }
                }
                Change::BackInService { from } => {
                    // A signal cuts this short (the hook is left to its DefaultResult) and is
                    // then handled by the next turn of this loop: the watch keeps it.
                    let mut interrupt = signals.clone();
                    tokio::select! {
                        r = serve_launch_again(world, cfg, recorder, &from) => {
                            if let Err(code) = r {
                                return code;
                            }
                        }
                        signal = shutdown::wait(&mut interrupt) => log::warn!(
                            "signal {signal} while answering the launch hook again; leaving it to the group's DefaultResult"
                        ),
                    }
                }
            },
            Turn::Request(request) => {
                let verdict =
                    operator::verdict(&recorder.state(), request.ask, restarting.is_some());
                match (verdict, request.ask) {
                    (Some(answer), _) => {
                        log::info!(
                            "{} requested by {}: {}",
                            request.ask.as_str(),
                            request.by,
                            answer.message
                        );
                        request.answer(answer);
                    }
                    (None, Ask::Drain) => {
                        if let Err(code) = take_drain(world, recorder, request) {
                            return code;
                        }
                    }
                    (None, Ask::AppRestart) => {
                        restarting = Some(Box::pin(restart::restart_app(
                            world,
                            cfg,
                            recorder,
                            request.by.clone(),
                        )));
                        request.answer(Answer::accepted("app restart accepted: /readyz answers 503 until TFE is ready again; follow it in /status.app_restart"));
                    }
                }
            }
            Turn::Restarted(r) => {
                restarting = None;
                // restart_app said how it ended; the node keeps serving (or not) as /readyz says.
                drop(r);
            }
            Turn::Signal(signal) => {
                if restarting.take().is_some() {
                    restart::interrupted(recorder, &format!("signal {signal}: the agent stops; the app may be left stopped or starting (`replicatedctl app status`)"));
                }
                let going = recorder.state().termination.is_some();
                if !going && world.host().system_stopping().await {
                    let said = format!("signal {signal}: the system is shutting down with no ASG termination; draining within [termination].shutdown_drain_timeout");
                    if let Err(code) = record_notice(
                        world,
                        recorder,
                        &shutdown_notice(signal, cfg, world.clock()),
                        &said,
                    ) {
                        return code;
                    }
                    continue;
                }
                recorder.stopping("stopping");
                log::info!(
                    "signal {signal}: stopping{}",
                    if going {
                        ""
                    } else {
                        " (the node keeps serving; this is not a system shutdown)"
                    }
                );
                return boot_failure.unwrap_or(Exit::Ok);
            }
        }
    }
}

/// Answers a request the agent cannot take now.
fn refuse(request: Request, why: &str) {
    log::info!(
        "{} requested by {}: refused: {why}",
        request.ask.as_str(),
        request.by
    );
    request.answer(Answer::refused(why));
}

/// The restart under way, or never.
async fn poll(restarting: &mut Restarting<'_>) -> Result<(), RestartError> {
    match restarting {
        Some(r) => r.as_mut().await,
        None => std::future::pending().await,
    }
}

/// An operator's drain, recorded like any termination notice before it is answered: from here on
/// `/readyz` is 503, and the next turn of the loop runs the termination path (node-drain once).
fn take_drain<W: World>(world: &W, recorder: &Recorder, request: Request) -> Result<(), Exit> {
    let seen = Seen {
        source: Source::Operator,
        detail: format!("drain requested by {} (tfe-node-agent drain)", request.by),
        deadline: None,
    };
    let said = format!("termination noticed: {}", seen.detail);
    match record_notice(world, recorder, &seen, &said) {
        Ok(()) => {
            request.answer(Answer::accepted("drain accepted and recorded: /readyz answers 503; node-drain runs once, then the app stops. There is no reverse of node-drain: `tfe-node-agent app restart` brings the node back"));
            Ok(())
        }
        Err(code) => {
            request.answer(Answer::refused(
                "recording the drain failed; nothing was started (see the agent's log)",
            ));
            Err(code)
        }
    }
}

fn shutdown_notice<C: Clock>(signal: i32, cfg: &Settings, clock: &C) -> Seen {
    Seen {
        source: Source::Shutdown,
        detail: format!("system shutdown (signal {signal})"),
        deadline: Some(clock.unix_now() + cfg.termination.shutdown_drain_timeout.as_secs()),
    }
}

/// Records the notice, then says `said` (the termination-noticed milestone).
fn record_notice<W: World>(
    world: &W,
    recorder: &Recorder,
    seen: &Seen,
    said: &str,
) -> Result<(), Exit> {
    let notice = Notice {
        source: seen.source,
        detail: seen.detail.clone(),
        at: world.clock().unix_now(),
        boot_id: world.host().boot_id(),
        deadline_at: seen.deadline,
    };
    recorder
        .record(Event::TerminationNoticed(notice))
        .map_err(|e| {
            log::warn!("{said}");
            log::error!("{}", crate::error_chain(&e));
            match e {
                RecordError::Refused(_) => Exit::Internal,
                RecordError::Save(_) => Exit::LocalIo,
            }
        })?;
    recorder.milestone_at(log::Level::Warn, Milestone::TerminationNoticed, said);
    Ok(())
}

/// A boot cut short by a termination: the launch hook, if still held, gets ABANDON.
async fn abandon_launch<W: World>(world: &W, cfg: &Settings, recorder: &Recorder) {
    let instance_id = recorder.state().instance_id.clone();
    if recorder.state().launch_hook.is_some() {
        return;
    }
    let found = hook::discover_launch_until(
        world.asg(),
        world.clock(),
        &instance_id,
        cfg.lifecycle.launch_hook.as_deref(),
        world.clock().now() + ABANDON_LOOKUP,
    )
    .await;
    let h = match found {
        Ok(LaunchHook::Active(h)) => h,
        Ok(_) => {
            log::info!(
                "no launch action to abandon (the termination cancelled it, or there was none)"
            );
            return;
        }
        Err((e, tries)) => {
            log::error!(
                "could not look up the launch hook to abandon it ({tries} tries): {}; the group applies its DefaultResult",
                crate::error_chain(&e)
            );
            return;
        }
    };
    let why = "because a termination cut the boot short";
    let released =
        hook::release_saying_why(world.asg(), world.clock(), &h, HookResult::Abandon, why).await;
    if let Some(r) = released {
        let recorded = recorder.record(Event::LaunchReleased(Some(HookResult::Abandon)));
        recorder.milestone_at(
            log::Level::Warn,
            Milestone::LaunchReleased,
            &format!(
                "launch hook {} released with ABANDON ({r:?}): the node will not enter service",
                h.action.hook
            ),
        );
        if let Err(RecordError::Save(e)) = recorded {
            log::error!("{}", crate::error_chain(&e));
        }
    }
}

/// The instance came back to service (from standby, a warm pool, …): if the group waits on the
/// launch hook again, check that TFE is healthy (holding the hook meanwhile) and release it again
/// — once per wait; the group's view decides, not what was recorded.
async fn serve_launch_again<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    from: &LifecycleState,
) -> Result<(), Exit> {
    let instance_id = recorder.state().instance_id.clone();
    let found = hook::discover_launch_until(
        world.asg(),
        world.clock(),
        &instance_id,
        cfg.lifecycle.launch_hook.as_deref(),
        world.clock().now() + cfg.lifecycle.discovery_timeout,
    )
    .await;
    let h = match found {
        Ok(LaunchHook::Active(h)) => h,
        Ok(other) => {
            log::info!("back in service from {from}; no launch hook to answer ({other:?})");
            return Ok(());
        }
        Err((e, tries)) => {
            log::error!(
                "back in service from {from}, but looking up the launch hook failed after {tries} tries: {}; the group applies its DefaultResult",
                crate::error_chain(&e)
            );
            return Ok(());
        }
    };
    log::warn!(
        "the group waits on launch hook {} again (the instance came back from {from}; released before: {}): releasing it again once TFE is healthy",
        h.action.hook,
        recorder.state().launch_hook.map_or("never", LaunchAnswer::as_str)
    );
    recorder.say("back from standby; checking TFE before releasing the launch hook");
    let ready = hook::hold_while(
        world.asg(),
        world.clock(),
        &h,
        readiness::wait_until_ready(
            world.tfe(),
            world.clock(),
            cfg.readiness.timeout,
            cfg.readiness.poll_interval,
        ),
    )
    .await;
    let result = match ready {
        Ok(()) => {
            if let Err(RecordError::Save(e)) = recorder.record(Event::Healthy) {
                log::error!("{}", crate::error_chain(&e));
                return Err(Exit::LocalIo);
            }
            recorder.milestone(Milestone::Ready, readiness::READY);
            HookResult::Continue
        }
        Err(e) => {
            log::error!(
                "TFE is not healthy after the return to service: {}",
                crate::error_chain(&e)
            );
            cfg.lifecycle.on_failure.hook_result()
        }
    };
    let deadline = hook::release_deadline(world.clock(), &h.info);
    match hook::release(world.asg(), world.clock(), &h.action, result, deadline).await {
        Ok(r) => {
            let event = boot::released_event(&recorder.state(), result);
            let recorded = recorder.record(event);
            recorder.milestone(
                Milestone::LaunchReleased,
                &format!(
                    "launch hook {} released again with {} ({r:?})",
                    h.action.hook,
                    result.as_str()
                ),
            );
            match recorded {
                Ok(()) => {}
                Err(RecordError::Save(e)) => {
                    log::error!("{}", crate::error_chain(&e));
                    return Err(Exit::LocalIo);
                }
                Err(e) => log::warn!("{}", crate::error_chain(&e)),
            }
            recorder.ready(if result == HookResult::Continue {
                "in service"
            } else {
                "launch hook abandoned; watching for termination"
            });
        }
        Err(e) => {
            metrics().hook_completed(HookKind::Launch, Completion::Failed);
            log::error!(
                "could not release launch hook {} again: {}",
                h.action.hook,
                crate::error_chain(&e)
            );
        }
    }
    Ok(())
}

/// Runs the termination path to its end. A signal meanwhile does not cut it short: for an ASG
/// termination systemd is asked for more time until the hook is released; other drains are
/// bounded by their own deadlines. Returns whether a signal arrived.
async fn finish_termination<W: World>(
    world: &W,
    cfg: &Settings,
    recorder: &Recorder,
    source: Source,
    signals: &mut ShutdownRx,
    inbox: &mut Inbox,
) -> Result<bool, terminate::TerminateError> {
    let asg = source.has_hook();
    let work = terminate::terminate(world, cfg, recorder);
    tokio::pin!(work);
    let mut signalled = signals.borrow().is_some();
    if signalled && asg {
        notify::extend_timeout(EXTEND_BY);
    }
    loop {
        tokio::select! {
            r = &mut work => return r.map(|()| signalled),
            signal = shutdown::wait(signals), if !signalled => {
                signalled = true;
                if asg {
                    log::warn!("signal {signal}: an ASG termination is in progress; finishing the drain and the terminate hook first");
                    notify::extend_timeout(EXTEND_BY);
                } else {
                    log::warn!("signal {signal}: finishing the drain within its deadline first");
                }
                recorder.stopping("stopping after the drain");
            }
            _ = world.clock().sleep(EXTEND_EVERY), if signalled && asg => notify::extend_timeout(EXTEND_BY),
            request = inbox.next() => {
                // The drain may have ended while the app still stops: nothing is taken until
                // the termination path returns.
                let answer = operator::verdict(&recorder.state(), request.ask, false)
                    .unwrap_or_else(|| Answer::refused("the drain is still finishing (stopping the app); ask again in a moment"));
                log::info!("{} requested by {}: {}", request.ask.as_str(), request.by, answer.message);
                request.answer(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests;
