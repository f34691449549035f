//! [`InstanceMetadata`] over IMDSv2, with a small client of our own: the termination watcher polls
//! IMDS every second for the life of the node, so the client must fetch a new session token the
//! moment IMDS answers 401 (aws-config's client keeps retrying its cached token), reuse one token
//! for hours, and ask for values that never change only once.
//!
//! The endpoint is `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set (as for the AWS SDKs), else
//! `http://169.254.169.254`.

use crate::ports::{Identity, ImdsError, InstanceMetadata};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
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
}

impl Imds {
    pub fn new() -> Self {
        let endpoint = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        let (host, port) = parse_endpoint(&endpoint).unwrap_or_else(|| {
            log::warn!("AWS_EC2_METADATA_SERVICE_ENDPOINT {endpoint:?} is not http://host[:port]; using {DEFAULT_ENDPOINT}");
            ("169.254.169.254".into(), 80)
        });
        Self {
            host,
            port,
            token: tokio::sync::Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
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

    /// One HTTP/1.1 request on a fresh connection (IMDS is link-local: connecting is cheap, and
    /// nothing stays open between polls).
    async fn request(
        &self,
        method: &str,
        path: &str,
        header: &str,
        value: &str,
    ) -> Result<(u16, Bytes), String> {
        let exchange = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connecting to {}:{}: {e}", self.host, self.port))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{}:{}", self.host, self.port))
                .header(header, value)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
    }
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
    use super::parse_endpoint;

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
