//! EC2's DescribeLaunchTemplateVersions, the one EC2 call `repave` makes: a Query API request
//! signed here with SigV4 (aws-sigv4) and sent over hyper, so the agent does not compile
//! aws-sdk-ec2 for one action. Credentials, region, timeouts and the retry budget come from the
//! same `SdkConfig` as every SDK client; the endpoint from the SDK's standard variables
//! (`AWS_ENDPOINT_URL_EC2`, then `AWS_ENDPOINT_URL`), else `https://ec2.<region>.amazonaws.com`.

mod wire;

use crate::ports::{AsgError, TemplateRef, TemplateVersion};
use crate::sys::retry::Backoff;
use aws_sdk_autoscaling::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use wire::*;

/// The Query API action (`ec2:DescribeLaunchTemplateVersions` in IAM; tests/iam_policy.rs reads
/// this constant).
pub(crate) const ACTION: &str = "DescribeLaunchTemplateVersions";
const API_VERSION: &str = "2016-11-15";
/// The SigV4 signing name of EC2.
const SIGNING_NAME: &str = "ec2";
/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, Clone)]
pub struct Ec2Client {
    endpoint: String,
    region: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    cached: Arc<Mutex<Option<Credentials>>>,
    attempts: u32,
    attempt_timeout: Duration,
    operation_timeout: Option<Duration>,
    first_backoff: Duration,
    http: HttpClient,
}

/// The endpoint the SDK's own clients would take for EC2, from these variables.
fn endpoint_from(
    var: impl Fn(&str) -> Option<String>,
    configured: Option<&str>,
    region: Option<&str>,
) -> String {
    let ignore =
        var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let chosen = if ignore {
        None
    } else {
        set(var("AWS_ENDPOINT_URL_EC2"))
            .or_else(|| configured.map(str::to_string))
            .or_else(|| set(var("AWS_ENDPOINT_URL")))
    };
    let url = chosen.unwrap_or_else(|| {
        format!(
            "https://ec2.{}.amazonaws.com",
            region.unwrap_or("us-east-1")
        )
    });
    url.trim_end_matches('/').to_string()
}

/// rustls with the process's one crypto provider (aws-lc-rs) and the system's roots; with none
/// found, https calls fail on the certificate (and say so) rather than the client failing here.
fn https_connector(connect: Option<Duration>) -> HttpsConnector<HttpConnector> {
    crate::adapters::redis::client::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(connect);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

impl Ec2Client {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let region = config.region().map(|r| r.as_ref().to_string());
        let endpoint = endpoint_from(
            |name| std::env::var(name).ok(),
            config.endpoint_url(),
            region.as_deref(),
        );
        let timeouts = config.timeout_config();
        let retry = config.retry_config();
        Ec2Client {
            endpoint,
            region,
            credentials: config.credentials_provider(),
            cached: Arc::new(Mutex::new(None)),
            attempts: retry.map_or(3, |r| r.max_attempts()).max(1),
            attempt_timeout: timeouts
                .and_then(|t| t.operation_attempt_timeout())
                .unwrap_or(Duration::from_secs(10)),
            operation_timeout: timeouts.and_then(|t| t.operation_timeout()),
            first_backoff: retry.map_or(Duration::from_secs(1), |r| r.initial_backoff()),
            http: Client::builder(TokioExecutor::new())
                .build(https_connector(timeouts.and_then(|t| t.connect_timeout()))),
        }
    }

    pub async fn describe_template_version(
        &self,
        template: &TemplateRef,
    ) -> Result<Option<TemplateVersion>, AsgError> {
        let call = self.describe_with_retries(template);
        match self.operation_timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(AsgError::Call {
                    op: ACTION,
                    detail: format!(
                        "{} at {}: no answer within {limit:?} (all tries)",
                        describe_template(template),
                        self.endpoint
                    ),
                })
            }),
            None => call.await,
        }
    }

    async fn describe_with_retries(
        &self,
        template: &TemplateRef,
    ) -> Result<Option<TemplateVersion>, AsgError> {
        let body = request_body(template)?;
        let mut backoff = Backoff::new(self.first_backoff, Duration::from_secs(20));
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome =
                match tokio::time::timeout(self.attempt_timeout, self.attempt(&body)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Failure::Transient(format!(
                        "no answer within the attempt timeout ({:?})",
                        self.attempt_timeout
                    ))),
                };
            let failure = match outcome {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let transient = matches!(failure, Failure::Transient(_) | Failure::Throttled(_));
            if !transient || tries >= self.attempts {
                return Err(self.error(template, failure, tries));
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn error(&self, template: &TemplateRef, failure: Failure, tries: u32) -> AsgError {
        let what = describe_template(template);
        let endpoint = &self.endpoint;
        match failure {
            Failure::Throttled(detail) => {
                log::warn!("{ACTION} for {what}: {detail}, {tries} tries");
                AsgError::Throttled { op: ACTION }
            }
            Failure::Transient(detail) => AsgError::Call {
                op: ACTION,
                detail: format!("{what} at {endpoint}: {detail} (after {tries} tries)"),
            },
            Failure::Final(detail) => AsgError::Rejected {
                op: ACTION,
                detail: format!("{what} at {endpoint}: {detail}"),
            },
        }
    }

    /// Credentials from the config's provider, reused until five minutes before they expire.
    async fn credentials(&self) -> Result<Credentials, Failure> {
        if let Some(c) = self.cached.lock().expect("credentials lock").as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
            if fresh {
                return Ok(c.clone());
            }
        }
        let provider = self.credentials.as_ref().ok_or_else(|| {
            Failure::Final("no AWS credentials provider in the SDK configuration".into())
        })?;
        // A provider's failure (IMDS or STS unreachable, no credentials yet) may pass.
        let fresh = provider.provide_credentials().await.map_err(|e| {
            Failure::Transient(format!("no AWS credentials: {}", crate::error_chain(&e)))
        })?;
        *self.cached.lock().expect("credentials lock") = Some(fresh.clone());
        Ok(fresh)
    }

    /// One signed POST and its answer.
    async fn attempt(&self, body: &str) -> Result<Option<TemplateVersion>, Failure> {
        let credentials = self.credentials().await?;
        let request = self.signed_request(&credentials, body)?;
        let response = self.http.request(request).await.map_err(|e| {
            Failure::Transient(format!(
                "the request could not be sent: {}",
                crate::error_chain(&e)
            ))
        })?;
        let status = response.status().as_u16();
        // The attempt's own timeout bounds the read too (`describe_with_retries`).
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                Failure::Transient(format!("the answer (HTTP {status}) could not be read: {e}"))
            })?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        answer(status, &text)
    }

    fn signed_request(
        &self,
        credentials: &Credentials,
        body: &str,
    ) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let region = self
            .region
            .as_deref()
            .ok_or_else(|| Failure::Final("no AWS region in the SDK configuration".into()))?;
        let uri = format!("{}/", self.endpoint);
        let parsed: hyper::Uri = uri
            .parse()
            .map_err(|e| Failure::Final(format!("the endpoint is not a URL: {e}")))?;
        let host = match (parsed.host(), parsed.port_u16()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(Failure::Final("the endpoint has no host".into())),
        };
        let mut request = hyper::Request::builder()
            .method("POST")
            .uri(parsed)
            .header("host", host)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header(
                "user-agent",
                concat!("tfe-node-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Failure::Final(format!("the request could not be built: {e}")))?;
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Failure::Final(format!("the request could not be signed: {e}")))?
            .into();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            uri.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| Failure::Final(format!("the request could not be signed: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Failure::Final(format!("the request could not be signed: {e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

fn describe_template(t: &TemplateRef) -> String {
    match (&t.id, &t.name) {
        (Some(id), _) => format!("launch template {id} version {}", t.version),
        (None, Some(name)) => format!("launch template '{name}' version {}", t.version),
        (None, None) => format!("launch template (no id or name) version {}", t.version),
    }
}

/// RFC 3986 percent-encoding of a form value (all but the unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The form body: the id when the group names one (ids never change), else the name.
fn request_body(t: &TemplateRef) -> Result<String, AsgError> {
    let which = match (&t.id, &t.name) {
        (Some(id), _) => format!("LaunchTemplateId={}", encode(id)),
        (None, Some(name)) => format!("LaunchTemplateName={}", encode(name)),
        (None, None) => {
            return Err(AsgError::Rejected {
                op: ACTION,
                detail: "the launch template has neither an id nor a name".into(),
            })
        }
    };
    Ok(format!(
        "Action={ACTION}&Version={API_VERSION}&{which}&LaunchTemplateVersion.1={}",
        encode(&t.version)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::io::Write;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeLaunchTemplateVersionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>65cadec1-b364-4354-8ca8-4176dexample</requestId>
    <launchTemplateVersionSet>
        <item>
            <createTime>2017-10-31T11:38:52.000Z</createTime>
            <createdBy>arn:aws:iam::123456789012:root</createdBy>
            <defaultVersion>true</defaultVersion>
            <launchTemplateData>
                <imageId>ami-8c1be5f6</imageId>
                <instanceType>t2.micro</instanceType>
                <userData>I2Nsb3VkLWNvbmZpZwo=</userData>
            </launchTemplateData>
            <launchTemplateId>lt-0a20c965061f64abc</launchTemplateId>
            <launchTemplateName>MyLaunchTemplate</launchTemplateName>
            <versionDescription>FirstVersion</versionDescription>
            <versionNumber>1</versionNumber>
        </item>
    </launchTemplateVersionSet>
</DescribeLaunchTemplateVersionsResponse>"#;

    fn error_doc(code: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>it &apos;failed&apos;</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
        )
    }

    #[test]
    fn an_answer_is_read_into_its_version() {
        let v = answer(200, ANSWER).unwrap().unwrap();
        assert_eq!(
            v,
            TemplateVersion {
                template_id: "lt-0a20c965061f64abc".into(),
                template_name: "MyLaunchTemplate".into(),
                version: 1,
                default_version: true,
                user_data: Some("#cloud-config\n".into()),
            }
        );
        let empty = "<DescribeLaunchTemplateVersionsResponse><requestId>x</requestId>\
                     <launchTemplateVersionSet/></DescribeLaunchTemplateVersionsResponse>";
        assert_eq!(answer(200, empty).unwrap(), None);
        assert!(matches!(
            answer(200, "<html>proxy</html>"),
            Err(Failure::Transient(_))
        ));
    }

    #[test]
    fn error_codes_map_to_none_throttled_transient_or_final() {
        for code in NOT_FOUND_CODES {
            assert_eq!(answer(400, &error_doc(code)).unwrap(), None, "{code}");
        }
        assert!(matches!(
            answer(503, &error_doc("RequestLimitExceeded")),
            Err(Failure::Throttled(_))
        ));
        assert!(matches!(
            answer(500, &error_doc("InternalError")),
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            answer(502, "Bad Gateway"),
            Err(Failure::Transient(_))
        ));
        match answer(403, &error_doc("UnauthorizedOperation")) {
            Err(Failure::Final(d)) => {
                assert_eq!(d, "UnauthorizedOperation: it 'failed' (HTTP 403)");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(answer(400, "nonsense"), Err(Failure::Final(_))));
    }

    #[test]
    fn user_data_is_base64_and_maybe_gzip() {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"#cloud-config\nzipped: true\n").unwrap();
        let zipped = engine.encode(gz.finish().unwrap());
        assert_eq!(
            decode_user_data(&zipped).unwrap().as_deref(),
            Some("#cloud-config\nzipped: true\n")
        );
        assert_eq!(decode_user_data("  ").unwrap(), None);
        assert_eq!(
            decode_user_data(&engine.encode([b'a', 0xff, b'b']))
                .unwrap()
                .as_deref(),
            Some("a\u{fffd}b")
        );
        assert!(decode_user_data("not base64!").is_err());
    }

    #[test]
    fn the_body_names_the_template_by_id_first_and_encodes_the_version() {
        let t = TemplateRef {
            id: Some("lt-1".into()),
            name: Some("ignored".into()),
            version: "$Latest".into(),
        };
        assert_eq!(
            request_body(&t).unwrap(),
            "Action=DescribeLaunchTemplateVersions&Version=2016-11-15&LaunchTemplateId=lt-1\
             &LaunchTemplateVersion.1=%24Latest"
        );
        let t = TemplateRef {
            id: None,
            name: Some("tfe/nodes (a)".into()),
            version: "3".into(),
        };
        assert!(request_body(&t)
            .unwrap()
            .ends_with("&LaunchTemplateName=tfe%2Fnodes%20%28a%29&LaunchTemplateVersion.1=3"));
        let none = TemplateRef {
            id: None,
            name: None,
            version: "1".into(),
        };
        assert!(request_body(&none).is_err());
    }

    #[test]
    fn the_endpoint_follows_the_sdk_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let ec2 = &[
            ("AWS_ENDPOINT_URL_EC2", "http://ec2.local:1/"),
            ("AWS_ENDPOINT_URL", "http://all.local:2"),
        ];
        assert_eq!(
            endpoint_from(vars(ec2), Some("http://cfg"), Some("eu-west-1")),
            "http://ec2.local:1"
        );
        let all = &[("AWS_ENDPOINT_URL", "http://all.local:2")];
        assert_eq!(
            endpoint_from(vars(all), Some("http://cfg"), None),
            "http://cfg"
        );
        assert_eq!(endpoint_from(vars(all), None, None), "http://all.local:2");
        assert_eq!(
            endpoint_from(vars(&[]), None, Some("eu-west-1")),
            "https://ec2.eu-west-1.amazonaws.com"
        );
        let ignored = &[
            ("AWS_ENDPOINT_URL_EC2", "http://ec2.local:1"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ];
        assert_eq!(
            endpoint_from(vars(ignored), Some("http://cfg"), Some("eu-west-1")),
            "https://ec2.eu-west-1.amazonaws.com"
        );
    }
}
