//! [`InstanceMetadata`] over IMDSv2 with aws-config's client (token handling, 401 refresh and
//! retries are the client's). The endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT if set.

use crate::ports::{Identity, ImdsError, InstanceMetadata};
use aws_config::imds::client::error::ImdsError as SdkImdsError;
use aws_config::imds::Client;

#[derive(Debug, Clone)]
pub struct Imds {
    client: Client,
}

impl Imds {
    pub fn new() -> Self {
        Self {
            client: Client::builder().build(),
        }
    }

    /// `Ok(None)` for 404: the item does not exist (yet), which IMDS uses to say "no notice".
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>, ImdsError> {
        match self.client.get(path).await {
            Ok(v) => Ok(Some(String::from(v))),
            Err(SdkImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => {
                Ok(None)
            }
            Err(e) => Err(ImdsError {
                path: path.to_string(),
                detail: aws_sdk_autoscaling::error::DisplayErrorContext(&e).to_string(),
            }),
        }
    }

    async fn get(&self, path: &str) -> Result<String, ImdsError> {
        self.get_optional(path).await?.ok_or_else(|| ImdsError {
            path: path.to_string(),
            detail: "not found (404)".into(),
        })
    }
}

impl Default for Imds {
    fn default() -> Self {
        Self::new()
    }
}

impl InstanceMetadata for Imds {
    async fn identity(&self) -> Result<Identity, ImdsError> {
        Ok(Identity {
            instance_id: self.get("/latest/meta-data/instance-id").await?,
            region: self.get("/latest/meta-data/placement/region").await?,
            private_ipv4: self.get("/latest/meta-data/local-ipv4").await?,
        })
    }
}
