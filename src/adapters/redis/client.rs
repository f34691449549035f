//! Building a `redis` client and reading its errors: shared by the cluster store's link and the
//! preflight probe, so both reach Redis with the same TLS settings and roots.

use crate::sys::secret::Secret;
use ::redis::{
    Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError, TlsCertificates,
};
use std::sync::Once;

/// Where and how to connect.
pub(in crate::adapters) struct Endpoint<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Sent by the crate as AUTH when it connects; `None`: no AUTH.
    pub password: Option<&'a Secret>,
    /// TLS 1.2+ verified against `ca_bundle`, or the system roots without one.
    pub tls: bool,
    pub ca_bundle: Option<&'a str>,
    pub database: i64,
    /// Whether the crate sends `CLIENT SETINFO` with its name when it connects.
    pub announce: bool,
}

#[derive(Debug)]
pub(in crate::adapters) enum BuildError {
    /// The host and port make no address.
    Address(RedisError),
    /// The PEM bundle cannot be used as roots.
    CaBundle(RedisError),
}

/// The client for `e`, set field by field: the password never goes through a URL (no escaping,
/// nothing to leak into a parse error).
pub(in crate::adapters) fn build(e: &Endpoint<'_>) -> Result<Client, BuildError> {
    install_crypto_provider();
    let addr = if e.tls {
        ConnectionAddr::TcpTls {
            host: e.host.to_string(),
            port: e.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(e.host.to_string(), e.port)
    };
    let mut settings = RedisConnectionInfo::default().set_db(e.database);
    if let Some(password) = e.password {
        settings = settings.set_password(password.expose());
    }
    if !e.announce {
        settings = settings.set_skip_set_lib_name();
    }
    let info = addr
        .into_connection_info()
        .map_err(BuildError::Address)?
        .set_redis_settings(settings);
    match (e.ca_bundle, e.tls) {
        (Some(pem), true) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            },
        ),
        // System roots: the crate loads them (rustls-native-certs) when it connects.
        _ => Client::open(info),
    }
    .map_err(BuildError::CaBundle)
}

/// The I/O error under a crate error: tokio-rustls and the socket give an `io::Error`, which the
/// crate keeps in an `Arc`.
pub(in crate::adapters) fn io_error(e: &RedisError) -> Option<&std::io::Error> {
    let inner = std::error::Error::source(e)?;
    inner
        .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        .and_then(|a| a.downcast_ref::<std::io::Error>())
        .or_else(|| inner.downcast_ref::<std::io::Error>())
}

/// The rustls error under a failed handshake.
pub(in crate::adapters) fn rustls_error(e: &RedisError) -> Option<&rustls::Error> {
    io_error(e)?.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The peer closed or reset the connection.
pub(in crate::adapters) fn is_closed(e: &RedisError) -> bool {
    use std::io::ErrorKind as Io;
    io_error(e).is_some_and(|io| {
        matches!(
            io.kind(),
            Io::UnexpectedEof | Io::ConnectionReset | Io::BrokenPipe | Io::ConnectionAborted
        )
    })
}

/// rustls needs a process-wide crypto provider; with more than one compiled in (another
/// dependency may enable `ring`) it cannot pick one and the first TLS connect panics.
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err: one is installed already (by the agent or a test), which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
