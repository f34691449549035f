//! The postgres probe: connect with exactly TFE's settings (`pg_netloc`, `pg_user`, `pg_password`,
//! `pg_dbname`, the `sslmode` of `pg_extra_params`), authenticate, `SELECT 1`, then
//! `SHOW server_version`. Only reads: nothing is written. No timeout of its own: the caller
//! bounds the whole probe, and the connection's task ends with it.
//!
//! sslmode as libpq means it: `disable` plain; `prefer` TLS when offered, unverified; `require`
//! encrypted, the certificate not verified; `verify-ca` the chain verified against `ca_certs`
//! (or the system roots), the host name not; `verify-full` both.

use crate::ports::{PostgresProbe, ProbeError, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, SimpleQueryMessage};

pub(super) async fn probe(p: &PostgresProbe) -> Result<String, ProbeError> {
    let address = format!("{}:{}", p.host, p.port);
    let fail = |detail: String| ProbeError::new(&address, scrub(detail, p));
    let mut config = tokio_postgres::Config::new();
    config
        .host(&p.host)
        .port(p.port)
        .user(&p.user)
        .password(p.password.expose())
        .dbname(&p.dbname)
        .application_name("tfe-node-agent preflight");
    let (client, connection_task) = match p.sslmode {
        SslMode::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| fail(describe(&e, p)))?;
            (client, Abort(tokio::spawn(drive(connection))))
        }
        mode => {
            let tls_config = tls::client_config(mode, p.ca_bundle.as_deref()).map_err(fail)?;
            config.ssl_mode(match mode {
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
            let (client, connection) = config
                .connect(tls::MakeRustls(tls_config))
                .await
                .map_err(|e| fail(describe(&e, p)))?;
            (client, Abort(tokio::spawn(drive(connection))))
        }
    };
    let one = client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| fail(format!("SELECT 1 failed: {}", describe(&e, p))))?;
    if first_value(&one).as_deref() != Some("1") {
        return Err(fail("SELECT 1 did not answer 1".into()));
    }
    let version = client
        .simple_query("SHOW server_version")
        .await
        .ok()
        .and_then(|rows| first_value(&rows))
        // "15.18 (Debian 15.18-0+deb12u1)": the number is what an operator compares.
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "(version unknown)".into());
    drop(client);
    drop(connection_task);
    Ok(format!(
        "PostgreSQL {version}, database {}, sslmode {}",
        p.dbname,
        p.sslmode.as_str()
    ))
}

/// Runs the connection until it closes; its error (if any) surfaces on the client's calls.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = connection.await;
}

/// Aborts the connection's task when the probe ends, however it ends (the caller's timeout drops
/// the probe mid-way): no socket outlives the check.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

/// One line in an operator's words: never the password (the server's messages do not hold it,
/// and the text is scrubbed anyway).
fn describe(e: &tokio_postgres::Error, p: &PostgresProbe) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD {
            format!(
                "password authentication failed for user {:?}: check pg_password",
                p.user
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            format!("database {:?} does not exist: check pg_dbname", p.dbname)
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().starts_with("no pg_hba.conf entry")
        {
            format!(
                "{} (the server's pg_hba.conf does not admit this client: allow it, or change \
                 sslmode)",
                db.message()
            )
        } else {
            format!("{} {}: {}", db.severity(), code.code(), db.message())
        };
    }
    let chain = crate::error_chain(e);
    if chain.contains("server does not support TLS") {
        return format!(
            "the server does not support SSL but sslmode={}: enable ssl on the server or \
             change sslmode in pg_extra_params",
            p.sslmode.as_str()
        );
    }
    if let Some(tls) = tls::rustls_error(e) {
        return tls::describe(tls, p);
    }
    if let Some(io) = io_error(e) {
        use std::io::ErrorKind as Io;
        match io.kind() {
            Io::ConnectionRefused => {
                return "connection refused: nothing listens on that port (check pg_netloc)".into()
            }
            Io::UnexpectedEof | Io::ConnectionReset | Io::ConnectionAborted
                if p.sslmode != SslMode::Disable =>
            {
                return format!(
                    "the server closed the connection during the TLS handshake: {chain}"
                )
            }
            _ => {}
        }
    }
    if e.is_closed() {
        return format!("the server closed the connection: {chain}");
    }
    chain
}

fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

fn scrub(text: String, p: &PostgresProbe) -> String {
    let pw = p.password.expose();
    if pw.is_empty() {
        text
    } else {
        text.replace(pw, "<redacted>")
    }
}

/// TLS for tokio-postgres over tokio-rustls, with libpq's sslmode meanings.
mod tls {
    use crate::ports::{PostgresProbe, SslMode};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

    /// The rustls configuration for `mode` (not `Disable`).
    pub(super) fn client_config(
        mode: SslMode,
        ca_bundle: Option<&str>,
    ) -> Result<Arc<ClientConfig>, String> {
        crate::adapters::redis::client::install_crypto_provider();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let config = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(roots(ca_bundle)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?;
                let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(Arc::new(config))
    }

    fn roots(ca_bundle: Option<&str>) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match ca_bundle {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("ca_certs is not PEM: {e}"))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err("ca_certs holds no usable CA certificate".into());
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(
                        "no system CA certificates found: set ca_certs for verify-ca/verify-full"
                            .into(),
                    );
                }
            }
        }
        Ok(store)
    }

    /// `require`/`prefer`: encrypted, any certificate (libpq's meaning); the handshake's
    /// signatures are still checked, so the session key is the server's.
    #[derive(Debug)]
    struct Unverified(Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `verify-ca`: the chain must lead to a trusted root; the name is not checked. webpki
    /// checks the chain before the name, so a name mismatch means the chain passed.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    pub(super) struct MakeRustls(pub(super) Arc<ClientConfig>);

    impl<S> MakeTlsConnect<S> for MakeRustls
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type TlsConnect = Connect;
        type Error = io::Error;

        fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
            let name = ServerName::try_from(domain.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Ok(Connect {
                config: self.0.clone(),
                name,
            })
        }
    }

    pub(super) struct Connect {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    }

    impl<S> TlsConnect<S> for Connect
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        type Stream = Stream<S>;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

        fn connect(self, stream: S) -> Self::Future {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Box::pin(async move { Ok(Stream(connector.connect(self.name, stream).await?)) })
        }
    }

    pub(super) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

    impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
        fn channel_binding(&self) -> ChannelBinding {
            // SCRAM without channel binding, as libpq's default (channel_binding=prefer) falls
            // back to; the server never requires it unless told to.
            ChannelBinding::none()
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    /// The rustls error under a failed handshake, wherever in the chain.
    pub(super) fn rustls_error<'a>(
        e: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a rustls::Error> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
            if let Some(r) = s
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(r);
            }
            source = s.source();
        }
        None
    }

    pub(super) fn describe(e: &rustls::Error, p: &PostgresProbe) -> String {
        use rustls::Error;
        match e {
            Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                if p.ca_bundle.is_some() {
                    "TLS: server certificate not trusted (unknown issuer): it is not signed by \
                     the CA in ca_certs"
                        .into()
                } else {
                    "TLS: server certificate not trusted (unknown issuer): set ca_certs to the \
                     CA that signed it"
                        .into()
                }
            }
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "TLS: the server certificate is not valid for {:?} (wrong host name, \
                 sslmode=verify-full): use a name the certificate carries in pg_netloc",
                p.host
            ),
            Error::InvalidCertificate(other) => {
                format!("TLS: server certificate refused: {other:?}")
            }
            Error::InvalidMessage(_) => {
                "TLS: the server does not speak TLS after accepting SSL".into()
            }
            other => format!("TLS: {other}"),
        }
    }
}
