# The nodes' IAM role and instance profile: the agent's own policy, exactly as the repo ships it, and
# separately what TFE itself needs for its object storage.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

locals {
  # Every placeholder of packaging/iam-policy.json, no more, no less.
  agent_policy_vars = {
    # `name`: works with provider 5 and 6 (6 also has `region` and marks `name` deprecated).
    region     = data.aws_region.current.name
    account_id = data.aws_caller_identity.current.account_id
    kms_key_id = aws_kms_key.secrets.key_id
    # The variable, not aws_autoscaling_group.tfe.name: the group depends on this policy (it must
    # be in place before the first node boots), so the policy cannot depend on the group.
    asg_name = var.name
    # Preflight deletes its marker's own version in a versioned bucket (the marker prefix only).
    s3_bucket = var.s3_bucket
  }

  # Every placeholder of packaging/iam-repave-policy.json, no more, no less.
  repave_policy_vars = {
    region     = data.aws_region.current.name
    account_id = data.aws_caller_identity.current.account_id
    kms_key_id = aws_kms_key.secrets.key_id
    asg_name   = var.name
    # Pointing the group at a version of this template needs RunInstances from it, and passing the
    # nodes' role to EC2 (its instance profile).
    launch_template_id = aws_launch_template.node.id
    node_role_name     = aws_iam_role.node.name
  }
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  description        = "TFE nodes of the ${var.name} Auto Scaling group (tfe-node-agent and TFE)"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = aws_iam_role.node.name
}

# tfe-node-agent: read the node's secrets (and decrypt them through Secrets Manager), heartbeat and
# complete this group's lifecycle actions, describe the instance and the hooks. The file is the
# contract checked against the agent's code by tests/iam_policy.rs; it is used here unchanged.
resource "aws_iam_role_policy" "agent" {
  name   = "tfe-node-agent"
  role   = aws_iam_role.node.id
  policy = templatefile("${path.module}/../../packaging/iam-policy.json", local.agent_policy_vars)
}

# TFE itself, not the agent: settings say aws_instance_profile = "1", so TFE's containers use this
# role (through IMDS, hence the hop limit of 2 in the launch template) for object storage in
# var.s3_bucket. Kept apart from the agent's policy so each can be reviewed on its own; the agent's
# object_storage preflight check uses these grants on purpose (a missing one fails preflight, not
# TFE). If the bucket uses SSE-KMS with a customer-managed key, also grant kms:Decrypt and
# kms:GenerateDataKey on that key.
data "aws_iam_policy_document" "tfe_object_storage" {
  statement {
    sid       = "TfeBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = ["arn:aws:s3:::${var.s3_bucket}"]
  }

  statement {
    sid       = "TfeObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:aws:s3:::${var.s3_bucket}/*"]
  }
}

resource "aws_iam_role_policy" "tfe_object_storage" {
  name   = "tfe-object-storage"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.tfe_object_storage.json
}

# Only with an s3:// package_url: cloud-init/package-from-url.yaml downloads the agent's package
# with the AWS CLI, as this role.
resource "aws_iam_role_policy" "agent_package" {
  count = startswith(var.package_url, "s3://") ? 1 : 0

  name = "tfe-node-agent-package"
  role = aws_iam_role.node.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "DownloadAgentPackage"
      Effect   = "Allow"
      Action   = "s3:GetObject"
      Resource = "arn:aws:s3:::${trimprefix(var.package_url, "s3://")}"
    }]
  })
}

# `tfe-node-agent repave`, run by an operator or CI: its own policy, attached to whoever runs the
# repave and never to the nodes' role (a node never changes its group). The file is checked against
# the orchestrator's code by tests/iam_policy.rs; it is used here unchanged.
resource "aws_iam_policy" "repave" {
  name        = "${var.name}-repave"
  description = "tfe-node-agent repave of the ${var.name} Auto Scaling group"
  policy      = templatefile("${path.module}/../../packaging/iam-repave-policy.json", local.repave_policy_vars)
}
