//! The redis probe: a connection of its own (never the cluster store's), built by the same code
//! as the store's (`crate::adapters::redis::client`), then step by step so a failure names its
//! step: TCP and TLS, `AUTH`, `PING`, `ROLE` (or `INFO replication` where `ROLE` is refused),
//! `INFO server` for the version. Only reads: nothing is written. No timeout of its own: the
//! caller bounds the whole probe.

use crate::adapters::redis::client::{self, is_closed, rustls_error, BuildError, Endpoint};
use crate::ports::{ProbeError, RedisProbe};
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisError, Value};

/// What `ROLE` (or `INFO replication`) said.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Master,
    Replica {
        /// "host:port" of the primary it follows, when known.
        primary: Option<String>,
        /// `slave_read_only` from `INFO replication`, when readable.
        read_only: Option<bool>,
    },
    Sentinel,
    /// Neither `ROLE` nor `INFO replication` answered.
    Unknown,
    Other(String),
}

pub(super) async fn probe(p: &RedisProbe) -> Result<String, ProbeError> {
    let address = format!("{}:{}", p.host, p.port);
    let fail = |detail: String| ProbeError::new(&address, scrub(detail, p));
    let client = client::build(&Endpoint {
        host: &p.host,
        port: p.port,
        // AUTH is sent below as its own step, so its failure is told apart from the connect's.
        password: None,
        tls: p.tls,
        ca_bundle: p.ca_bundle.as_deref(),
        database: 0,
        announce: false,
    })
    .map_err(|e| {
        fail(match e {
            BuildError::Address(e) => format!("invalid address: {e}"),
            BuildError::CaBundle(e) => format!("the CA bundle (ca_certs) cannot be used: {e}"),
        })
    })?;
    // The caller's timeout bounds the whole probe; the crate's own (1 s connect, 0.5 s answer)
    // would cut a slow but working link short.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| fail(format!("cannot connect: {}", describe(&e, p))))?;

    let mut note = None;
    if let Some(password) = &p.password {
        let auth: Result<(), RedisError> = ::redis::cmd("AUTH")
            .arg(password.expose())
            .query_async(&mut con)
            .await;
        match auth {
            Ok(()) => {}
            Err(e) if is_auth_unneeded(&e) => {
                // Redis 6+ refuses AUTH when it has no password. Clients differ on this (some
                // ignore it, some fail to connect), so it is said, not failed.
                note = Some(
                    "note: a password is configured but the server has none (AUTH refused as \
                     unneeded): turn redis_use_password_auth off or set requirepass",
                );
            }
            Err(e) => return Err(fail(describe_auth(&e, p))),
        }
    }
    let pong: Result<String, RedisError> = ::redis::cmd("PING").query_async(&mut con).await;
    match pong {
        Ok(reply) if reply == "PONG" => {}
        Ok(reply) => return Err(fail(format!("PING answered {reply:?}, not PONG"))),
        Err(e) => return Err(fail(format!("PING failed: {}", describe(&e, p)))),
    }
    let role = role(&mut con).await.map_err(&fail)?;
    let version = version(&mut con).await;
    match role {
        Role::Master => {}
        Role::Unknown => {
            note.get_or_insert("note: the role could not be read (ROLE and INFO refused)");
        }
        Role::Replica { primary, read_only } => {
            let of = primary.map(|h| format!(" of {h}")).unwrap_or_default();
            let ro = match read_only {
                Some(true) => " (read-only)",
                Some(false) => " (writable)",
                None => "",
            };
            return Err(fail(format!(
                "role is replica{ro}{of}: TFE must write to the primary; point redis_host at the \
                 primary endpoint"
            )));
        }
        Role::Sentinel => {
            return Err(fail(
                "this is a Sentinel, not a Redis server: point redis_host at the primary".into(),
            ))
        }
        Role::Other(r) => {
            return Err(fail(format!(
                "role is {r:?}, not master: point redis_host at the primary endpoint"
            )))
        }
    }
    let role_text = if role == Role::Master {
        "master"
    } else {
        "unknown"
    };
    let mut line = format!(
        "redis {}, role {role_text}{}",
        version.as_deref().unwrap_or("(version unknown)"),
        if p.tls { ", TLS" } else { "" }
    );
    if let Some(note) = note {
        line.push_str("; ");
        line.push_str(note);
    }
    Ok(line)
}

/// `ROLE`, or `INFO replication` where `ROLE` is refused (renamed away, an ACL without it).
async fn role(con: &mut MultiplexedConnection) -> Result<Role, String> {
    let reply: Result<Value, RedisError> = ::redis::cmd("ROLE").query_async(con).await;
    match reply {
        Ok(Value::Array(items)) => {
            let text = |i: usize| match items.get(i) {
                Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(Value::SimpleString(s)) => Some(s.clone()),
                Some(Value::Int(n)) => Some(n.to_string()),
                _ => None,
            };
            match text(0).as_deref() {
                Some("master") => Ok(Role::Master),
                Some("slave" | "replica") => {
                    let primary = text(1).zip(text(2)).map(|(h, p)| format!("{h}:{p}"));
                    // Whether it refuses writes is only in INFO; not knowing is fine.
                    let read_only = info_replication(con)
                        .await
                        .ok()
                        .and_then(|i| field(&i, "slave_read_only").map(|v| v == "1"));
                    Ok(Role::Replica { primary, read_only })
                }
                Some("sentinel") => Ok(Role::Sentinel),
                Some(other) => Ok(Role::Other(other.to_string())),
                None => Err(format!("ROLE answered {items:?}")),
            }
        }
        Ok(other) => Err(format!("ROLE answered {other:?}")),
        Err(e) if is_connection(&e) => Err(format!("ROLE failed: {e}")),
        Err(_) => match info_replication(con).await {
            Ok(info) => Ok(match field(&info, "role").as_deref() {
                Some("master") => Role::Master,
                Some("slave") => Role::Replica {
                    primary: field(&info, "master_host")
                        .zip(field(&info, "master_port"))
                        .map(|(h, p)| format!("{h}:{p}")),
                    read_only: field(&info, "slave_read_only").map(|v| v == "1"),
                },
                Some(other) => Role::Other(other.to_string()),
                None => Role::Unknown,
            }),
            Err(e) if is_connection(&e) => Err(format!("INFO failed: {e}")),
            Err(_) => Ok(Role::Unknown),
        },
    }
}

async fn info_replication(con: &mut MultiplexedConnection) -> Result<String, RedisError> {
    ::redis::cmd("INFO")
        .arg("replication")
        .query_async(con)
        .await
}

/// `redis_version` from `INFO server`; `None` where INFO is refused.
async fn version(con: &mut MultiplexedConnection) -> Option<String> {
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(con)
        .await
        .ok()?;
    field(&info, "redis_version")
}

/// `name:value` from an INFO reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

fn is_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Redis 6+: "ERR AUTH <password> called without any password configured for the default user".
fn is_auth_unneeded(e: &RedisError) -> bool {
    e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.contains("without any password configured"))
}

fn describe_auth(e: &RedisError, p: &RedisProbe) -> String {
    match e.code() {
        Some("WRONGPASS") => {
            "AUTH failed: wrong password (WRONGPASS): check redis_pass".to_string()
        }
        Some(code) => format!("AUTH failed ({code})"),
        None => format!("AUTH failed: {}", describe(e, p)),
    }
}

/// One line about a connect or command failure, in an operator's words.
fn describe(e: &RedisError, p: &RedisProbe) -> String {
    if e.code() == Some("NOAUTH") {
        return "the server requires a password (NOAUTH) but none is configured: set \
                redis_use_password_auth and redis_pass"
            .into();
    }
    if let Some(tls) = rustls_error(e) {
        return describe_tls(tls, p);
    }
    if e.is_connection_refusal() {
        return "connection refused: nothing listens on that port (check redis_host and \
                redis_port)"
            .into();
    }
    if e.is_connection_dropped() || is_closed(e) {
        return if p.tls {
            "the server closed the connection during the TLS handshake: does it speak TLS on \
             this port? (redis_use_tls is on)"
                .into()
        } else {
            "the server closed the connection: a TLS port? (redis_use_tls is off)".into()
        };
    }
    crate::error_chain(e)
}

fn describe_tls(e: &rustls::Error, p: &RedisProbe) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            if p.ca_bundle.is_some() {
                "TLS: server certificate not trusted (unknown issuer): it is not signed by the \
                 CA in ca_certs"
                    .into()
            } else {
                "TLS: server certificate not trusted (unknown issuer): set ca_certs to the CA \
                 that signed it"
                    .into()
            }
        }
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "TLS: the server certificate is not valid for {:?} (wrong host name): set redis_host \
             to a name the certificate carries",
            p.host
        ),
        Error::InvalidCertificate(other) => {
            format!("TLS: server certificate refused: {other:?}")
        }
        Error::InvalidMessage(_) => "TLS: the server does not speak TLS on this port (a plain \
                                     port? redis_use_tls is on)"
            .into(),
        other => format!("TLS: {other}"),
    }
}

/// The crate's text comes from the server or the socket, neither of which holds the password;
/// scrubbed anyway so that no future crate version can leak it here.
fn scrub(text: String, p: &RedisProbe) -> String {
    match &p.password {
        Some(pw) if !pw.expose().is_empty() => text.replace(pw.expose(), "<redacted>"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn field_reads_info_lines() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.5\r\nmaster_port:6379\r\n\
                    slave_read_only:1\r\n";
        assert_eq!(field(info, "role").as_deref(), Some("slave"));
        assert_eq!(field(info, "master_port").as_deref(), Some("6379"));
        assert_eq!(field(info, "slave_read_only").as_deref(), Some("1"));
        assert_eq!(field(info, "master").as_deref(), None);
    }
}
