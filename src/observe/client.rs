//! Asking a running agent: one GET over its unix socket or a TCP listener (`status`), or one
//! operator's POST over the unix socket (`drain`, `app restart`).

use crate::config::Endpoint;
use crate::observe::StatusDoc;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// How long the running agent has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// An answer larger than this is not the agent's.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint} did not answer {path} in time")]
    Timeout { endpoint: String, path: String },
    #[error("{endpoint} answered {path} with an error: {detail}")]
    Exchange {
        endpoint: String,
        path: String,
        detail: String,
    },
}

/// `GET path` on `endpoint`: the status code and the body.
pub async fn get(endpoint: &Endpoint, path: &str) -> Result<(u16, String), ClientError> {
    call(endpoint, Method::GET, path, None, TIMEOUT).await
}

/// `POST path` on `endpoint` naming the operator: the status code and the body. The agent
/// waits up to [`TAKE_WITHIN`](crate::node::operator::TAKE_WITHIN) for its service loop.
pub async fn post(
    endpoint: &Endpoint,
    path: &str,
    operator: &str,
) -> Result<(u16, String), ClientError> {
    let timeout = TIMEOUT + crate::node::operator::TAKE_WITHIN;
    call(endpoint, Method::POST, path, Some(operator), timeout).await
}

async fn call(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    operator: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    let name = endpoint.to_string();
    tokio::time::timeout(timeout, exchange(endpoint, method, path, operator, &name))
        .await
        .unwrap_or_else(|_| {
            Err(ClientError::Timeout {
                endpoint: name.clone(),
                path: path.to_string(),
            })
        })
}

async fn exchange(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    operator: Option<&str>,
    name: &str,
) -> Result<(u16, String), ClientError> {
    let connect = |source| ClientError::Connect {
        endpoint: name.to_string(),
        source,
    };
    let failed = |detail: String| ClientError::Exchange {
        endpoint: name.to_string(),
        path: path.to_string(),
        detail,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost");
    if let Some(who) = operator {
        request = request.header(crate::observe::routes::OPERATOR_HEADER, who);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(connect)?;
            send(TokioIo::new(stream), request).await
        }
        Endpoint::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
            send(TokioIo::new(stream), request).await
        }
    }
    .map_err(failed)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn send<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The running agent's `/status` (unix sockets first, then TCP): its body as served and as read,
/// or why no endpoint answered with it (an answer that is not the agent's `/status` is skipped).
pub async fn status(listen: &[Endpoint]) -> Result<(String, StatusDoc), String> {
    let mut endpoints: Vec<&Endpoint> = listen.iter().collect();
    endpoints.sort_by_key(|e| !matches!(e, Endpoint::Unix(_)));
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match get(endpoint, "/status").await {
            Ok((200, body)) => match serde_json::from_str(&body) {
                Ok(doc) => return Ok((body, doc)),
                Err(e) => failures.push(format!("{endpoint}: not the agent's /status ({e})")),
            },
            Ok((code, _)) => failures.push(format!("{endpoint}: HTTP {code}")),
            Err(e) => failures.push(crate::error_chain(&e)),
        }
    }
    if failures.is_empty() {
        return Err("[observe].listen is off".into());
    }
    Err(failures.join("; "))
}

/// [`status`]'s body alone (for the support bundle).
pub async fn status_body(listen: &[Endpoint]) -> Result<String, String> {
    status(listen).await.map(|(body, _)| body)
}
