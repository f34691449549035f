//! SIGTERM/SIGINT, turned into a value every long wait can select on. signal-hook runs the handler
//! on its own thread; nothing here exits the process: orchestration decides what a signal means.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

/// Receives `Some(signal number)` once a termination signal arrived.
pub type ShutdownRx = watch::Receiver<Option<i32>>;

pub fn listen() -> std::io::Result<ShutdownRx> {
    let (tx, rx) = watch::channel(None);
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                log::info!("received signal {signal}");
                let _ = tx.send(Some(signal));
            }
        })?;
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
