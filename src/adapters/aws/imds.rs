//! [`InstanceMetadata`] over IMDSv2, with a small client of our own: the termination watcher polls
//! IMDS every second for the life of the node, so the client must fetch a new session token the
//! moment IMDS answers 401 (aws-config's client keeps retrying its cached token), reuse one token
//! for hours, ask for values that never change only once, and keep one connection alive across
//! polls (a new TCP connection every second was most of the agent's idle CPU, in the kernel).
//!
//! The endpoint is `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set (as for the AWS SDKs), else
//! `http://169.254.169.254`.

use crate::ports::{Identity, ImdsError, InstanceMetadata};
use crate::telemetry::metrics::{metrics, ImdsOutcome};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The longest TTL IMDS grants (6 h); renewed a minute before it ends.
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(60);
/// One request (connect, send, read) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per read: a 401 costs one (then a fresh token), errors and 5xx back off 100 ms, 200 ms…
const ATTEMPTS: u32 = 4;

#[derive(Debug)]
pub struct Imds {
    host: String,
    port: u16,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    cache: Mutex<HashMap<String, String>>,
    /// The kept-alive connection while idle; a request takes it out (a second request meanwhile
    /// opens its own) and puts it back once the answer was read whole.
    idle: Mutex<Option<SendRequest<Empty<Bytes>>>>,
}

impl Imds {
    pub fn new() -> Self {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        Self::with_endpoint(&endpoint).unwrap_or_else(|| {
            log::warn!("AWS_EC2_METADATA_SERVICE_ENDPOINT {endpoint:?} is not http://host[:port]; using {DEFAULT_ENDPOINT}");
            Self::at("169.254.169.254".into(), 80)
        })
    }

    /// IMDS at `endpoint` (`http://host[:port]`); `None` when it is not of that form.
    pub fn with_endpoint(endpoint: &str) -> Option<Self> {
        let (host, port) = parse_endpoint(endpoint)?;
        Some(Self::at(host, port))
    }

    /// "host:port", as an error names it.
    pub fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// One `PUT /latest/api/token` on a connection of its own, outside the session the agent
    /// keeps (no cached token is used or replaced, nothing is retried): what IMDS answered, with
    /// its `Date` header. Preflight's check that a new IMDSv2 session can be had, and its clock
    /// reference. Bounded by the same per-request timeout as every other request.
    pub async fn fresh_token(&self, ttl: Duration) -> Result<TokenAnswer, TokenError> {
        let exchange = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(TokenError::Connect)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TokenError::Exchange(with_cause(&e)))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = Request::builder()
                .method("PUT")
                .uri("/latest/api/token")
                .header("host", self.address())
                .header(
                    "X-aws-ec2-metadata-token-ttl-seconds",
                    ttl.as_secs().max(1).to_string(),
                )
                .body(Empty::<Bytes>::new())
                .map_err(|e| TokenError::Exchange(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| TokenError::Exchange(with_cause(&e)))?;
            let date = response
                .headers()
                .get(hyper::header::DATE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            Ok(TokenAnswer {
                status: response.status().as_u16(),
                date,
            })
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(TokenError::NoAnswer(REQUEST_TIMEOUT)));
        metrics().imds_request(match &answer {
            Ok(TokenAnswer {
                status: 200..=299, ..
            }) => ImdsOutcome::Ok,
            _ => ImdsOutcome::Error,
        });
        answer
    }

    fn at(host: String, port: u16) -> Self {
        Self {
            host,
            port,
            token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            idle: Mutex::new(None),
        }
    }

    /// `Ok(None)` for 404: the item does not exist (yet), which IMDS uses to say "no notice".
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let error = |detail: String| ImdsError {
            path: path.to_string(),
            detail,
        };
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let token = self.token().await.map_err(error)?;
            match self
                .request("GET", path, "X-aws-ec2-metadata-token", &token)
                .await
            {
                Ok((200, body)) => return Ok(Some(String::from_utf8_lossy(&body).into_owned())),
                Ok((404, _)) => return Ok(None),
                Ok((401, _)) => {
                    // Expired or revoked: the next try fetches a new one (no backoff needed).
                    log::debug!("IMDS answered 401 for {path}; fetching a new token");
                    *self.token.lock().await = None;
                    last = "401 Unauthorized".into();
                    continue;
                }
                Ok((status, _)) if status >= 500 || status == 429 => {
                    last = format!("HTTP {status}");
                }
                Ok((status, _)) => return Err(error(format!("HTTP {status}"))),
                Err(e) => last = e,
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Err(error(format!("{last} (after {ATTEMPTS} tries)")))
    }

    /// For values that never change on an instance (id, region, address, life cycle).
    pub async fn get_static(&self, path: &str) -> Result<String, ImdsError> {
        if let Some(v) = self.cache.lock().expect("imds cache").get(path) {
            return Ok(v.clone());
        }
        let value = self.get_optional(path).await?.ok_or_else(|| ImdsError {
            path: path.to_string(),
            detail: "not found (404)".into(),
        })?;
        self.cache
            .lock()
            .expect("imds cache")
            .insert(path.to_string(), value.clone());
        Ok(value)
    }

    async fn token(&self) -> Result<String, String> {
        let mut slot = self.token.lock().await;
        if let Some((token, expires)) = slot.as_ref() {
            if Instant::now() + TOKEN_RENEW_MARGIN < *expires {
                return Ok(token.clone());
            }
        }
        let ttl = TOKEN_TTL.as_secs().to_string();
        let mut backoff = Duration::from_millis(100);
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let asked = Instant::now();
            match self
                .request(
                    "PUT",
                    "/latest/api/token",
                    "X-aws-ec2-metadata-token-ttl-seconds",
                    &ttl,
                )
                .await
            {
                Ok((200, body)) => {
                    let token = String::from_utf8_lossy(&body).trim().to_string();
                    *slot = Some((token.clone(), asked + TOKEN_TTL));
                    return Ok(token);
                }
                Ok((status, _)) if status >= 500 || status == 429 => {
                    last = format!("token request: HTTP {status}");
                }
                Ok((status, _)) => return Err(format!("token request: HTTP {status}")),
                Err(e) => last = format!("token request: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Err(last)
    }

    /// One HTTP/1.1 request, on the kept-alive connection when there is one. IMDS may have closed
    /// that one while it was idle: when it is found closed, or ends before any answer (the server
    /// closed it as the request went out), the request goes out once more on a new connection,
    /// within the same timeout. Anything else (a reset, a timeout, a cut answer) fails this try
    /// as on a new connection, and that connection is not kept.
    async fn request(
        &self,
        method: &str,
        path: &str,
        header: &str,
        value: &str,
    ) -> Result<(u16, Bytes), String> {
        let request = || {
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{}:{}", self.host, self.port))
                .header(header, value)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())
        };
        let exchange = async {
            let kept = self.idle.lock().expect("imds connection").take();
            if let Some(mut sender) = kept {
                if sender.ready().await.is_ok() {
                    match sender.send_request(request()?).await {
                        Ok(response) => return self.read(sender, response).await,
                        Err(e) if e.is_canceled() || e.is_incomplete_message() => {
                            log::debug!(
                                "IMDS closed the kept-alive connection ({e}); reconnecting"
                            );
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            let mut sender = self.connect().await?;
            let response = sender
                .send_request(request()?)
                .await
                .map_err(|e| e.to_string())?;
            self.read(sender, response).await
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        metrics().imds_request(match &answer {
            Ok((200..=299, _)) => ImdsOutcome::Ok,
            Ok((404, _)) => ImdsOutcome::NotFound,
            _ => ImdsOutcome::Error,
        });
        answer
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", self.host, self.port))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Drives the connection; ends when IMDS closes it or its sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Reads the answer whole, then keeps the connection for the next request unless it ended.
    async fn read(
        &self,
        sender: SendRequest<Empty<Bytes>>,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<(u16, Bytes), String> {
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !sender.is_closed() {
            *self.idle.lock().expect("imds connection") = Some(sender);
        }
        Ok((status, body))
    }
}

/// hyper's error and its cause: "connection error: Connection reset by peer (os error 104)".
pub fn with_cause(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// What a token request was answered (the token itself is not kept: nothing uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub status: u16,
    /// The answer's `Date` header, as sent.
    pub date: Option<String>,
}

/// Why a token request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    /// Sent, then the connection failed or closed before an answer (reset, cut).
    #[error("{0}")]
    Exchange(String),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

impl Default for Imds {
    fn default() -> Self {
        Self::new()
    }
}

/// `http://host[:port][/]` → (host, port). IPv6 literals come in brackets.
fn parse_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() || host.contains('/') {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 80,
    };
    Some((host.to_string(), port))
}

impl InstanceMetadata for Imds {
    async fn identity(&self) -> Result<Identity, ImdsError> {
        Ok(Identity {
            instance_id: self.get_static("/latest/meta-data/instance-id").await?,
            region: self
                .get_static("/latest/meta-data/placement/region")
                .await?,
            private_ipv4: self.get_static("/latest/meta-data/local-ipv4").await?,
            availability_zone: self
                .get_static("/latest/meta-data/placement/availability-zone")
                .await?,
        })
    }

    async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        self.get_optional(path).await
    }

    async fn get_static(&self, path: &str) -> Result<String, ImdsError> {
        Imds::get_static(self, path).await
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_endpoint, Imds};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the fake IMDS does with the next request, in arrival order.
    #[derive(Clone, Copy)]
    enum Step {
        Answer(u16),
        /// Answers, then closes the connection (no `Connection: close`): an idle timeout.
        AnswerThenClose(u16),
        /// Reads the request and closes the connection without a word.
        Close,
    }

    /// A fake IMDS on 127.0.0.1 following `steps`; records (connection number, request line).
    async fn fake_imds(steps: Vec<Step>) -> (Imds, Arc<Mutex<Vec<(usize, String)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let steps = Arc::new(Mutex::new(steps.into_iter()));
        let log = seen.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (log, steps) = (log.clone(), steps.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        log.lock().unwrap().push((conn, line));
                        let step = steps.lock().unwrap().next().expect("a step per request");
                        let (status, close) = match step {
                            Step::Answer(s) => (s, false),
                            Step::AnswerThenClose(s) => (s, true),
                            Step::Close => return,
                        };
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
                        if stream.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (Imds::at("127.0.0.1".into(), port), seen)
    }

    const PATH: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

    #[tokio::test]
    async fn one_connection_carries_every_request() {
        use Step::Answer;
        let (imds, seen) =
            fake_imds(vec![Answer(200), Answer(200), Answer(404), Answer(200)]).await;
        assert_eq!(
            imds.get_optional(PATH).await.unwrap().as_deref(),
            Some("ok")
        );
        assert_eq!(imds.get_optional(PATH).await.unwrap(), None);
        assert_eq!(
            imds.get_optional(PATH).await.unwrap().as_deref(),
            Some("ok")
        );
        let seen = seen.lock().unwrap().clone();
        let lines: Vec<_> = seen.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            lines,
            [
                "PUT /latest/api/token HTTP/1.1",
                &format!("GET {PATH} HTTP/1.1"),
                &format!("GET {PATH} HTTP/1.1"),
                &format!("GET {PATH} HTTP/1.1"),
            ]
        );
        assert!(seen.iter().all(|(conn, _)| *conn == 0), "{seen:?}");
    }

    /// IMDS closing the kept-alive connection, while idle or as the next request goes out, costs
    /// none of the read's four tries: three 503s after it still leave the fourth to succeed.
    #[tokio::test]
    async fn a_closed_kept_alive_connection_is_replaced_without_costing_a_try() {
        use Step::{Answer, AnswerThenClose, Close};
        for (case, mut steps) in [
            ("closed while idle", vec![Answer(200), AnswerThenClose(200)]),
            (
                "closed as the request went out",
                vec![Answer(200), Answer(200), Close],
            ),
        ] {
            steps.extend([Answer(503), Answer(503), Answer(503), Answer(200)]);
            let (imds, seen) = fake_imds(steps).await;
            assert_eq!(
                imds.get_optional(PATH).await.unwrap().as_deref(),
                Some("ok")
            );
            // Time for the client to see an idle close (it must cope either way).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let second = imds.get_optional(PATH).await;
            assert_eq!(second.unwrap().as_deref(), Some("ok"), "{case}");
            let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
            assert_eq!(conns.iter().max(), Some(&1), "{case}: {conns:?}");
        }
    }

    #[test]
    fn endpoints() {
        let p = |s| parse_endpoint(s);
        assert_eq!(
            p("http://169.254.169.254"),
            Some(("169.254.169.254".into(), 80))
        );
        assert_eq!(
            p("http://127.0.0.1:8111/"),
            Some(("127.0.0.1".into(), 8111))
        );
        assert_eq!(
            p("http://[fd00:ec2::254]"),
            Some(("fd00:ec2::254".into(), 80))
        );
        assert_eq!(p("http://[::1]:9000/"), Some(("::1".into(), 9000)));
        assert_eq!(p("https://x"), None);
        assert_eq!(p("http://x/latest"), None);
        assert_eq!(
            p("http://[fd00:ec2:0:1]"),
            Some(("fd00:ec2:0:1".into(), 80))
        );
    }
}
