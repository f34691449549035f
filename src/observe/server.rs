//! The accept loops. Bounded in every direction so that no client can hold up the agent, whose
//! loops share this thread: at most [`MAX_CONNECTIONS`] connections are served at once (more are
//! accepted and closed at once, so the kernel's backlog never fills with clients that wait), a
//! request's head must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEAD`] bytes, and no
//! connection lives longer than [`CONNECTION_LIFETIME`]. Bodies are never read.

use super::listen::Listener;
use super::routes;
use crate::node::operator::Door;
use crate::node::view::View;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

pub const MAX_CONNECTIONS: usize = 32;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// hyper's smallest read buffer: a request head larger than this is refused (431).
pub const MAX_HEAD: usize = 8192;
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// "Too many connections" is said at most this often.
const SAY_FULL_EVERY: Duration = Duration::from_secs(60);

/// Serves `listener` until the runtime ends. Accept errors (out of fds) pause the loop briefly
/// instead of spinning.
pub async fn serve(
    listener: Listener,
    view: watch::Receiver<View>,
    slots: Arc<Semaphore>,
    door: Option<Door>,
) {
    let scope = listener.scope();
    let name = listener.name().to_string();
    log::info!("HTTP API listening on {name}");
    let mut said_full: Option<Instant> = None;
    loop {
        let accepted = match &listener {
            Listener::Tcp(l, _) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                log::warn!("HTTP API on {name}: accept failed: {e}; pausing for a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if said_full.is_none_or(|t| t.elapsed() >= SAY_FULL_EVERY) {
                log::warn!("HTTP API on {name}: {MAX_CONNECTIONS} connections are open; closing new ones until some end");
                said_full = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let view = view.clone();
        let door = door.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                // An operator's request waits for the service loop; everything else is
                // answered from the view at once.
                let next = match routes::operator_request(scope, &request) {
                    Some(ask) => Err((ask, routes::requested_by(&request))),
                    None => Ok(routes::answer(scope, &request, &view.borrow())),
                };
                let door = door.clone();
                async move {
                    let response = match next {
                        Ok(response) => response,
                        Err((ask, by)) => routes::operate(door.as_ref(), ask, &by).await,
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true);
            let served = match stream {
                Stream::Tcp(s) => {
                    tokio::time::timeout(
                        CONNECTION_LIFETIME,
                        builder.serve_connection(TokioIo::new(s), service),
                    )
                    .await
                }
                Stream::Unix(s) => {
                    tokio::time::timeout(
                        CONNECTION_LIFETIME,
                        builder.serve_connection(TokioIo::new(s), service),
                    )
                    .await
                }
            };
            if let Ok(Err(e)) = served {
                log::debug!("HTTP API connection ended: {e}");
            }
            drop(permit);
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}
