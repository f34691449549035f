//! The one connection of a store: made on first use, bounded in time, dropped when it can no
//! longer be trusted (an I/O error, a timeout, `READONLY`, old age), and remade with backoff —
//! a call while the backoff runs fails at once, so no caller (boot, drain) ever waits on Redis.

use super::client::{self, is_closed, rustls_error};
use super::Limits;
use crate::ports::cluster::{StoreError, StoreTarget};
use crate::sys::retry::Backoff;
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use std::future::Future;
use std::time::Instant;
use tokio::sync::Mutex;

/// The first backoff step after a failed connect; doubles to [`BACKOFF_CAP`].
const BACKOFF_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const BACKOFF_CAP: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) struct Link {
    target: StoreTarget,
    /// `host:port over TLS` / `host:port without TLS`: every error names it.
    pub(super) address: String,
    limits: Limits,
    state: Mutex<State>,
}

struct State {
    client: Option<Client>,
    live: Option<Live>,
    backoff: Backoff,
    /// After a failed connect: no new try before this, and why the last one failed.
    quiet_until: Option<(Instant, String)>,
    /// Counts connections made, so a failed call drops only the connection it used.
    generation: u64,
}

struct Live {
    connection: MultiplexedConnection,
    born: Instant,
    generation: u64,
}

/// A connection handed to one call.
struct Lease {
    connection: MultiplexedConnection,
    generation: u64,
    /// Made for this call: a failure on it is not a connection that died while idle.
    fresh: bool,
}

impl Link {
    pub(super) fn new(target: StoreTarget, limits: Limits) -> Self {
        let address = format!(
            "{}:{} {}",
            target.host,
            target.port,
            if target.tls {
                "over TLS"
            } else {
                "without TLS"
            }
        );
        Link {
            target,
            address,
            limits,
            state: Mutex::new(State {
                client: None,
                live: None,
                backoff: Backoff::new(BACKOFF_FIRST, BACKOFF_CAP),
                quiet_until: None,
                generation: 0,
            }),
        }
    }

    /// Runs `op` on the connection, bounded by the command timeout. A connection that died while
    /// idle (the server restarted, a proxy or `CLIENT KILL` closed it) is noticed only by the
    /// call that uses it next; that call tries once more on a new connection. Every operation of
    /// the store is idempotent, so the second try is safe.
    pub(super) async fn call<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let lease = self.lease().await?;
            let error = match tokio::time::timeout(self.limits.command, op(lease.connection)).await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(_) => {
                    // A late answer could be taken for the next command's: never reuse it.
                    self.forget(lease.generation, "no answer in time").await;
                    return Err(
                        self.unavailable(format!("no answer within {:?}", self.limits.command))
                    );
                }
            };
            if is_auth(&error) {
                // Without a password the connect succeeds and every command then fails with
                // NOAUTH: as hopeless as a refused AUTH, so it backs off the same way.
                let why = self.describe(&error);
                self.back_off(lease.generation, &why).await;
                return Err(self.unavailable(why));
            }
            if is_readonly(&error) {
                // An ElastiCache failover leaves connections on the demoted primary; the next
                // call reconnects (the DNS name then points at the new primary).
                self.forget(lease.generation, "READONLY").await;
            } else if is_broken(&error) {
                self.forget(lease.generation, "the connection broke").await;
                if !lease.fresh && !retried && !error.is_timeout() {
                    retried = true;
                    log::debug!(
                        "cluster store {}: the connection had broken ({}); trying once on a new one",
                        self.address,
                        self.describe(&error)
                    );
                    continue;
                }
            }
            return Err(self.unavailable(self.describe(&error)));
        }
    }

    pub(super) fn unavailable(&self, detail: String) -> StoreError {
        StoreError::Unavailable {
            address: self.address.clone(),
            detail,
        }
    }

    async fn lease(&self) -> Result<Lease, StoreError> {
        let mut state = self.state.lock().await;
        if let Some(live) = &state.live {
            if live.born.elapsed() < self.limits.max_age {
                return Ok(Lease {
                    connection: live.connection.clone(),
                    generation: live.generation,
                    fresh: false,
                });
            }
            // A connection kept forever can stay on a node that is no longer the primary.
            log::debug!(
                "cluster store {}: the connection is older than {:?}; reconnecting",
                self.address,
                self.limits.max_age
            );
            state.live = None;
        }
        if let Some((until, why)) = &state.quiet_until {
            let now = Instant::now();
            if now < *until {
                return Err(self.unavailable(format!(
                    "{why} (next try in {:.1} s)",
                    (*until - now).as_secs_f64()
                )));
            }
        }
        // The lock is held while connecting: concurrent callers wait for this one attempt
        // (bounded by the connect timeout) instead of each opening a connection.
        match self.connect(&mut state).await {
            Ok(connection) => {
                state.generation += 1;
                state.backoff.reset(BACKOFF_FIRST);
                state.quiet_until = None;
                state.live = Some(Live {
                    connection: connection.clone(),
                    born: Instant::now(),
                    generation: state.generation,
                });
                Ok(Lease {
                    connection,
                    generation: state.generation,
                    fresh: true,
                })
            }
            Err(why) => {
                let wait = state.backoff.next_delay();
                state.quiet_until = Some((Instant::now() + wait, why.clone()));
                Err(self.unavailable(why))
            }
        }
    }

    async fn connect(&self, state: &mut State) -> Result<MultiplexedConnection, String> {
        if state.client.is_none() {
            state.client = Some(self.client()?);
        }
        let client = state.client.as_ref().expect("set just above");
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.limits.connect))
            .set_response_timeout(Some(self.limits.command));
        // The crate's connection timeout covers TCP and TLS; AUTH and SELECT follow as commands.
        let bound = self.limits.connect + self.limits.command;
        match tokio::time::timeout(
            bound,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(format!("cannot connect: {}", self.describe(&e))),
            Err(_) => Err(format!("cannot connect: no connection within {bound:?}")),
        }
    }

    fn client(&self) -> Result<Client, String> {
        let t = &self.target;
        client::build(&client::Endpoint {
            host: &t.host,
            port: t.port,
            password: t.password.as_ref(),
            tls: t.tls,
            ca_bundle: t.ca_bundle.as_deref(),
            database: i64::from(t.database),
            announce: true,
        })
        .map_err(|e| match e {
            client::BuildError::Address(e) => format!("invalid address: {}", self.describe(&e)),
            client::BuildError::CaBundle(e) => {
                format!("cannot use the CA bundle: {}", self.describe(&e))
            }
        })
    }

    /// Drops the connection `generation` and starts (or continues) the backoff.
    async fn back_off(&self, generation: u64, why: &str) {
        let mut state = self.state.lock().await;
        if state
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            state.live = None;
        }
        let wait = state.backoff.next_delay();
        state.quiet_until = Some((Instant::now() + wait, why.to_string()));
    }

    async fn forget(&self, generation: u64, why: &str) {
        let mut state = self.state.lock().await;
        if state
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            log::debug!(
                "cluster store {}: dropping the connection ({why})",
                self.address
            );
            state.live = None;
        }
    }

    /// One line about `e` that names the problem and never the password: the crate's own text
    /// is built from the server's answer or the socket's error, neither of which holds it, but
    /// the text is scrubbed anyway so that no future crate version can leak it here.
    pub(super) fn describe(&self, e: &RedisError) -> String {
        let text = describe(e, &self.target);
        match &self.target.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
            _ => text,
        }
    }
}

fn describe(e: &RedisError, target: &StoreTarget) -> String {
    if e.code() == Some("NOAUTH") {
        return "authentication failed: the server requires a password and none is set (NOAUTH)"
            .into();
    }
    if is_auth(e) {
        return "authentication failed: the server refused the password (WRONGPASS)".into();
    }
    if is_readonly(e) {
        return "the server is a read-only replica (READONLY): the primary moved; reconnecting"
            .into();
    }
    if let Some(tls) = rustls_error(e) {
        return describe_tls(tls, target);
    }
    if e.is_connection_refusal() {
        return format!("connection refused ({e})");
    }
    if e.is_connection_dropped() || is_closed(e) {
        let hint = if target.tls {
            ""
        } else {
            " (a TLS port? redis_use_tls is off)"
        };
        return format!("the server closed the connection{hint}: {e}");
    }
    if e.is_timeout() {
        // A server without TLS reads a ClientHello as the start of a command and waits for
        // the rest: the handshake never ends.
        let hint = if target.tls {
            " (a plain port? redis_use_tls is on)"
        } else {
            ""
        };
        return format!("no answer in time{hint} ({e})");
    }
    crate::error_chain(e)
}

fn describe_tls(e: &rustls::Error, target: &StoreTarget) -> String {
    use rustls::{CertificateError, Error};
    let roots = if target.ca_bundle.is_some() {
        "the configured CA bundle"
    } else {
        "the system's CAs"
    };
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            format!("TLS: the server's certificate is not signed by {roots} (unknown issuer)")
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "TLS: the server's certificate is not valid for {:?} (name mismatch): {e}",
            target.host
        ),
        Error::InvalidCertificate(_) => format!("TLS: the server's certificate is refused: {e}"),
        Error::InvalidMessage(_) => {
            format!("TLS: the server does not speak TLS on this port (a plain port?): {e}")
        }
        _ => format!("TLS: {e}"),
    }
}

fn is_auth(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
}

fn is_readonly(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || e.code() == Some("READONLY")
}

/// The connection cannot be trusted any more.
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}
