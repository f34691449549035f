//! SIGTERM/SIGINT, turned into a value every long wait can select on. The runtime's own signal
//! driver receives them (no thread of our own); nothing here exits the process: orchestration
//! decides what a signal means.

use nix::libc::{SIGINT, SIGTERM};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Receives `Some(signal number)` once a termination signal arrived.
pub type ShutdownRx = watch::Receiver<Option<i32>>;

/// Installs the handlers now; a task of the current runtime hands each signal to the channel.
pub fn listen() -> std::io::Result<ShutdownRx> {
    let (tx, rx) = watch::channel(None);
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                Some(()) = term.recv() => SIGTERM,
                Some(()) = interrupt.recv() => SIGINT,
                else => return,
            };
            log::info!("received signal {signal}");
            let _ = tx.send(Some(signal));
        }
    });
    Ok(rx)
}

/// Waits until a termination signal has arrived.
pub async fn wait(rx: &mut ShutdownRx) -> i32 {
    loop {
        if let Some(signal) = *rx.borrow_and_update() {
            return signal;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
