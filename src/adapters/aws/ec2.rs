//! EC2's DescribeLaunchTemplateVersions. (Being written: see issue 15.)

use crate::ports::{AsgError, TemplateRef, TemplateVersion};

#[derive(Debug, Clone)]
pub struct Ec2Client {}

impl Ec2Client {
    pub fn new(_config: &aws_config::SdkConfig) -> Self {
        Ec2Client {}
    }

    pub async fn describe_template_version(
        &self,
        _template: &TemplateRef,
    ) -> Result<Option<TemplateVersion>, AsgError> {
        Err(AsgError::Rejected {
            op: "DescribeLaunchTemplateVersions",
            detail: "not written yet".into(),
        })
    }
}
