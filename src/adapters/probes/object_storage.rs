//! The object_storage probe: TFE's bucket with TFE's settings, through the AWS SDK. HeadBucket,
//! then put, read back and delete one small marker under [`MARKER_PREFIX`]; the key is named
//! after the instance, so a run overwrites (and then deletes) an interrupted run's marker.

use crate::adapters::aws::{count, describe, sdk_config};
use crate::ports::{ObjectStorageProbe, ProbeError, MARKER_PREFIX};
use crate::telemetry::metrics::AwsOperation;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;
use std::time::Duration;

/// One SDK attempt and its connect; the caller's check timeout bounds the whole probe. Short
/// enough that a hung step still leaves time to try the delete.
const ATTEMPT: Duration = Duration::from_secs(2);
const CONNECT: Duration = Duration::from_secs(1);

/// The steps, as the error messages name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    HeadBucket,
    PutObject,
    GetObject,
    DeleteObject,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::HeadBucket => "HeadBucket",
            Step::PutObject => "PutObject",
            Step::GetObject => "GetObject",
            Step::DeleteObject => "DeleteObject",
        }
    }
}

pub(super) async fn probe(p: &ObjectStorageProbe) -> Result<String, ProbeError> {
    let address = address(p);
    let fail = |detail: String| ProbeError::new(address.clone(), detail);
    if !p.marker_key.starts_with(MARKER_PREFIX) {
        // The port's contract; a key elsewhere could be one of TFE's own objects.
        return Err(fail(format!(
            "the marker key {} is not under {MARKER_PREFIX}",
            p.marker_key
        )));
    }
    let client = client(p).await;

    let head = client.head_bucket().bucket(&p.bucket).send().await;
    count(AwsOperation::S3Preflight, &head);
    head.map_err(|e| fail(explain(p, Step::HeadBucket, &e)))?;

    // A fresh body each run, so reading back an older marker is told apart.
    let body = format!(
        "tfe-node-agent preflight marker {:016x}; safe to delete\n",
        fastrand::u64(..)
    );
    let mut put = client
        .put_object()
        .bucket(&p.bucket)
        .key(&p.marker_key)
        .content_type("text/plain")
        .body(ByteStream::from(body.clone().into_bytes()));
    if let Some(key) = &p.sse_kms {
        put = put
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(key.clone());
    }
    let put = put.send().await;
    count(AwsOperation::S3Preflight, &put);
    let put = put.map_err(|e| fail(explain(p, Step::PutObject, &e)))?;
    // In a versioned bucket a plain delete only hides the marker behind a delete marker: delete
    // the version this run wrote instead.
    let version = put.version_id().map(str::to_string);

    let read = read_back(&client, p, &body).await;
    let delete = delete(&client, p, version.as_deref()).await;
    // The first failure is the one to act on; a failed delete after it is said too.
    match (read, delete) {
        (Ok(sse), Ok(())) => Ok(format!(
            "bucket {}: head, put{sse}, get, delete ok",
            p.bucket
        )),
        (Ok(_), Err(d)) => Err(fail(d)),
        (Err(r), Ok(())) => Err(fail(r)),
        (Err(r), Err(d)) => Err(fail(format!("{r}; then {d}"))),
    }
}

/// GetObject and compare the body; what the stored object says about its encryption, for the
/// success line (" (aws:kms key …)" or "").
async fn read_back(client: &Client, p: &ObjectStorageProbe, body: &str) -> Result<String, String> {
    let get = client
        .get_object()
        .bucket(&p.bucket)
        .key(&p.marker_key)
        .send()
        .await;
    count(AwsOperation::S3Preflight, &get);
    let get = get.map_err(|e| explain(p, Step::GetObject, &e))?;
    let sse = get.server_side_encryption().cloned();
    let kms_key = get.ssekms_key_id().map(str::to_string);
    // Twice the marker's size is enough to tell a different object; never read more.
    let limit = body.len() * 2;
    let bytes = get
        .body
        .collect()
        .await
        .map_err(|e| {
            format!(
                "GetObject {}: the marker could not be read: {}",
                p.marker_key,
                crate::error_chain(&e)
            )
        })?
        .into_bytes();
    if bytes.len() > limit || bytes.as_ref() != body.as_bytes() {
        return Err(format!(
            "GetObject {}: the marker read back ({} bytes) is not what was written ({} bytes): \
             something else rewrites or caches objects at this endpoint",
            p.marker_key,
            bytes.len(),
            body.len()
        ));
    }
    match (&p.sse_kms, sse) {
        (None, _) => Ok(String::new()),
        (Some(_), Some(ServerSideEncryption::AwsKms)) => Ok(match kms_key {
            Some(key) => format!(" (aws:kms key {key})"),
            None => " (aws:kms)".into(),
        }),
        (Some(_), other) => Err(format!(
            "GetObject {}: the marker was stored with {} although aws:kms was asked for: \
             the endpoint ignores s3_sse",
            p.marker_key,
            other.as_ref().map_or("no encryption", |s| s.as_str())
        )),
    }
}

async fn delete(
    client: &Client,
    p: &ObjectStorageProbe,
    version: Option<&str>,
) -> Result<(), String> {
    let out = client
        .delete_object()
        .bucket(&p.bucket)
        .key(&p.marker_key)
        .set_version_id(version.map(str::to_string))
        .send()
        .await;
    count(AwsOperation::S3Preflight, &out);
    out.map(drop)
        .map_err(|e| explain(p, Step::DeleteObject, &e))
}

/// "s3://bucket", or "endpoint/bucket" for a custom endpoint.
fn address(p: &ObjectStorageProbe) -> String {
    match &p.endpoint {
        Some(_) => format!("{}/{}", endpoint_url(p).unwrap_or_default(), p.bucket),
        None => format!("s3://{}", p.bucket),
    }
}

/// `s3_endpoint` as a URL: a bare host means HTTPS.
fn endpoint_url(p: &ObjectStorageProbe) -> Option<String> {
    let e = p.endpoint.as_deref()?.trim().trim_end_matches('/');
    Some(if e.contains("://") {
        e.to_string()
    } else {
        format!("https://{e}")
    })
}

async fn client(p: &ObjectStorageProbe) -> Client {
    let sdk = sdk_config(&p.region, ATTEMPT, CONNECT).await;
    let mut config = aws_sdk_s3::config::Builder::from(&sdk);
    if let Some(url) = endpoint_url(p) {
        // Path-style (https://endpoint/bucket/key) for a custom endpoint: S3-compatible stores
        // (MinIO, Ceph) rarely have wildcard DNS for bucket subdomains, and S3's VPC interface
        // endpoints accept path-style too. Without s3_endpoint the SDK's own choice stands
        // (virtual-hosted on AWS), as for TFE.
        config = config.endpoint_url(url).force_path_style(true);
    }
    if let Some((id, secret)) = &p.keys {
        config = config.credentials_provider(Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "s3_settings",
        ));
    }
    Client::from_conf(config.build())
}

/// One step's failure in operator words: the step, the object, the service's code, what to do.
fn explain<E>(p: &ObjectStorageProbe, step: Step, err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let what = match step {
        Step::HeadBucket => format!("HeadBucket {}", p.bucket),
        _ => format!("{} {}", step.name(), p.marker_key),
    };
    let raw = describe(err);
    let SdkError::ServiceError(service) = err else {
        return format!("{what}: {raw}");
    };
    let status = service.raw().status().as_u16();
    let code = err.code().unwrap_or_default();
    let message = err.message().unwrap_or_default();
    let objects = format!("arn:aws:s3:::{}/{MARKER_PREFIX}*", p.bucket);
    // S3 says a KMS refusal as AccessDenied naming the kms: action, or as a KMS.* code.
    let kms = p.sse_kms.is_some() && (code.starts_with("KMS.") || message.contains("kms:"));
    let advice = match (step, status) {
        _ if kms && (code == "KMS.NotFoundException" || message.contains("Invalid keyId")) => {
            format!(
                "the KMS key {} does not exist in {}: check s3_sse_kms_key_id",
                kms_key(p),
                p.region
            )
        }
        _ if kms => format!(
            "the KMS key {} does not let this role encrypt: add kms:GenerateDataKey/kms:Decrypt \
             for the role (the key policy and the role's policy)",
            kms_key(p)
        ),
        (Step::HeadBucket, 404) => {
            format!(
                "the bucket does not exist in {}: check s3_bucket and s3_region",
                p.region
            )
        }
        (Step::HeadBucket, 301) => {
            let actual = service
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .unwrap_or("another region");
            format!(
                "the bucket is in {actual}, not in {}: set s3_region",
                p.region
            )
        }
        (Step::HeadBucket, 403) => format!(
            "the node's role may not use the bucket: allow s3:ListBucket on arn:aws:s3:::{}",
            p.bucket
        ),
        (Step::PutObject, 403) => format!(
            "the node's role may not write to the bucket: allow s3:PutObject on {objects} \
             (and check the bucket policy)"
        ),
        (Step::GetObject, 403) => {
            format!("the node's role may not read from the bucket: allow s3:GetObject on {objects}")
        }
        (Step::DeleteObject, 403) => format!(
            "the node's role may not delete from the bucket: allow s3:DeleteObject and \
             s3:DeleteObjectVersion on {objects}"
        ),
        (_, 404) => "the bucket or the marker vanished during the check".into(),
        _ => return format!("{what}: {raw}"),
    };
    // HEAD answers have no body: the SDK's code is made up from the status alone.
    let code = match (step, code) {
        (Step::HeadBucket, _) | (_, "") if status == 404 => "NoSuchBucket",
        (Step::HeadBucket, _) | (_, "") if status == 403 => "AccessDenied",
        (Step::HeadBucket, _) if status == 301 => "PermanentRedirect",
        (_, "") => "an error",
        (_, c) => c,
    };
    // The service's own words name the principal and the action KMS refused.
    let said = if kms && !message.is_empty() {
        format!("; S3 said: {message}")
    } else {
        String::new()
    };
    format!("{what}: {code}: {advice}{said} (HTTP {status})")
}

fn kms_key(p: &ObjectStorageProbe) -> &str {
    match &p.sse_kms {
        Some(Some(key)) => key,
        _ => "(the account's aws/s3 key)",
    }
}

#[cfg(test)]
mod tests {
    //! moto's S3 never asks KMS (it records any key id), so the KMS refusals are checked here on
    //! the shapes S3 documents: AccessDenied naming the kms: action, and KMS.NotFoundException.

    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn probe() -> ObjectStorageProbe {
        ObjectStorageProbe {
            bucket: "tfe-data".into(),
            region: "eu-west-1".into(),
            endpoint: None,
            keys: None,
            sse_kms: Some(Some("arn:aws:kms:eu-west-1:111122223333:key/k-1".into())),
            marker_key: format!("{MARKER_PREFIX}i-1"),
        }
    }

    fn refused(status: u16, code: &str, message: &str) -> SdkError<PutObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw = HttpResponse::new(
            hyper::StatusCode::from_u16(status).unwrap().into(),
            SdkBody::empty(),
        );
        SdkError::service_error(PutObjectError::generic(meta), raw)
    }

    #[test]
    fn a_key_policy_refusing_the_role_names_the_key_and_the_actions() {
        let err = refused(
            403,
            "AccessDenied",
            "User: arn:aws:sts::111122223333:assumed-role/tfe-node/i-1 is not authorized to \
             perform: kms:GenerateDataKey on resource: arn:aws:kms:eu-west-1:111122223333:key/k-1",
        );
        assert_eq!(
            explain(&probe(), Step::PutObject, &err),
            "PutObject tfe-node-agent-preflight/i-1: AccessDenied: the KMS key \
             arn:aws:kms:eu-west-1:111122223333:key/k-1 does not let this role encrypt: add \
             kms:GenerateDataKey/kms:Decrypt for the role (the key policy and the role's policy); \
             S3 said: User: arn:aws:sts::111122223333:assumed-role/tfe-node/i-1 is not authorized \
             to perform: kms:GenerateDataKey on resource: \
             arn:aws:kms:eu-west-1:111122223333:key/k-1 (HTTP 403)"
        );
    }

    #[test]
    fn an_unknown_key_says_so() {
        let err = refused(400, "KMS.NotFoundException", "Invalid keyId k-1");
        let text = explain(&probe(), Step::PutObject, &err);
        assert!(
            text.starts_with(
                "PutObject tfe-node-agent-preflight/i-1: KMS.NotFoundException: the KMS key \
                 arn:aws:kms:eu-west-1:111122223333:key/k-1 does not exist in eu-west-1: check \
                 s3_sse_kms_key_id"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_access_denied_without_kms_is_the_bucket_permission() {
        let mut p = probe();
        p.sse_kms = None;
        let err = refused(403, "AccessDenied", "Access Denied");
        assert_eq!(
            explain(&p, Step::PutObject, &err),
            "PutObject tfe-node-agent-preflight/i-1: AccessDenied: the node's role may not write \
             to the bucket: allow s3:PutObject on arn:aws:s3:::tfe-data/tfe-node-agent-preflight/* \
             (and check the bucket policy) (HTTP 403)"
        );
    }

    #[test]
    fn a_bucket_in_another_region_names_it() {
        let p = probe();
        let mut raw = HttpResponse::new(
            hyper::StatusCode::MOVED_PERMANENTLY.into(),
            SdkBody::empty(),
        );
        raw.headers_mut().insert("x-amz-bucket-region", "us-west-2");
        let err = SdkError::service_error(
            aws_sdk_s3::operation::head_bucket::HeadBucketError::generic(
                ErrorMetadata::builder().build(),
            ),
            raw,
        );
        assert_eq!(
            explain(&p, Step::HeadBucket, &err),
            "HeadBucket tfe-data: PermanentRedirect: the bucket is in us-west-2, not in \
             eu-west-1: set s3_region (HTTP 301)"
        );
    }
}
