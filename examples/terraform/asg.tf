# The launch template (IMDSv2, the instance profile, cloud-init user data that writes agent.toml and
# starts the agent) and the Auto Scaling group with its two lifecycle hooks.

locals {
  # Every placeholder of cloud-init/baked-ami.yaml, no more, no less: templatefile() fails on a
  # missing one, and the placeholders in the template's comments count too. agent.toml gets only
  # secret ids and non-secret values (user data is readable by every process on the node).
  user_data_vars = {
    secret_shared_id  = aws_secretsmanager_secret.shared.arn
    secret_license_id = aws_secretsmanager_secret.license.arn
    release_sequence  = var.release_sequence
    tfe_hostname      = var.tfe_hostname
    pg_netloc         = var.pg_netloc
    pg_dbname         = var.pg_dbname
    pg_user           = var.pg_user
    s3_bucket         = var.s3_bucket
    aws_region        = data.aws_region.current.name
    redis_host        = var.redis_host
    launch_hook       = var.launch_hook_name
    terminate_hook    = var.terminate_hook_name
  }

  # cloud-init/package-from-url.yaml has one placeholder more.
  package_from_url_vars = {
    package_url = var.package_url
  }

  user_data = (
    var.package_url == ""
    ? templatefile("${path.module}/../../cloud-init/baked-ami.yaml", local.user_data_vars)
    : templatefile("${path.module}/../../cloud-init/package-from-url.yaml", merge(local.user_data_vars, local.package_from_url_vars))
  )
}

resource "aws_launch_template" "node" {
  name                   = "${var.name}-node"
  description            = "TFE node run by tfe-node-agent"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = var.security_group_ids
  update_default_version = true
  user_data              = base64encode(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  # IMDSv2 only. Hop limit 2, not 1: TFE runs in Docker containers on the node, and a container on
  # Docker's bridge network is one more hop from IMDS; with 1 the session token's response never
  # reaches TFE, which gets its S3 credentials from the instance profile (aws_instance_profile = "1").
  # The agent itself runs on the host and needs only 1.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = var.instance_metadata_tags
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name = "${var.name}-node"
    }
  }
}

resource "aws_autoscaling_group" "tfe" {
  name                = var.name
  vpc_zone_identifier = var.subnet_ids
  min_size            = var.min_size
  max_size            = var.max_size
  desired_capacity    = var.desired_capacity
  target_group_arns   = var.target_group_arns

  # A node is InService (and registered with the target groups) only once the agent has released
  # the launch hook, i.e. TFE on it answers its health check; from then on the load balancer's
  # health check decides, after the grace period.
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period

  # Do not make `terraform apply` wait for InService nodes: a first boot (install.sh and TFE's
  # start) takes up to [install].timeout + [readiness].timeout, far past the 10 minute default.
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  # The hooks are initial_lifecycle_hook blocks, created with the group itself: a separate
  # aws_autoscaling_lifecycle_hook resource is created only after the group, whose first nodes
  # (min_size of them) are already launching by then, without a hook to hold them; their agents
  # would find no wait state and TFE could take traffic before it is ready. Caveat: the provider
  # applies initial_lifecycle_hook when it creates the group; to change a hook of an existing group,
  # use `aws autoscaling put-lifecycle-hook` (or an aws_autoscaling_lifecycle_hook of the same name).
  # No notification target: the agent learns of its own transitions from IMDS, not from SNS/SQS.

  # Launch: held (Pending:Wait) while the agent fetches secrets, runs install.sh and waits for TFE
  # to be healthy; the agent heartbeats every third of heartbeat_timeout and then completes it with
  # CONTINUE (or ABANDON on failure). ABANDON by default: if the agent never answers (it did not
  # start, the node hung), the node is never ready, and the group replaces it.
  initial_lifecycle_hook {
    name                 = var.launch_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_LAUNCHING"
    heartbeat_timeout    = var.launch_heartbeat_timeout
    default_result       = "ABANDON"
  }

  # Terminate: held (Terminating:Wait) while the agent runs `replicated admin node-drain` and stops
  # the app, heartbeating every third of heartbeat_timeout; it then completes it itself, CONTINUE
  # after a good drain, [drain].on_failure (default ABANDON) after a failed one, and always before
  # the hook's total budget runs out. So default_result applies only when no agent is there to
  # decide: the node died or hung, or the agent never started. That says nothing about a drain, and
  # the node goes either way, so CONTINUE: it lets later terminate hooks run, and with an instance
  # lifecycle policy of TerminateHookAbandon = retain (see README.md) it keeps "retained for an
  # operator" meaning what the agent means by ABANDON (a drain that failed), instead of retaining
  # every dead node outside desired capacity.
  initial_lifecycle_hook {
    name                 = var.terminate_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.terminate_heartbeat_timeout
    default_result       = "CONTINUE"
  }

  # Repaving: a new launch template version (AMI, user data, ...) starts an instance refresh that
  # replaces the nodes in batches, keeping min_healthy_percentage of them InService. Each old node
  # is drained by its agent through the terminate hook (node-drain finishes its runs) before it is
  # terminated; each new node counts as healthy only after its launch hook is released, i.e. once
  # TFE on it is ready. With a newer provider, preferences { max_healthy_percentage = 200 } launches
  # the new node before the old one is drained, so capacity never dips.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = var.min_healthy_percentage
    }
  }

  # Provider releases with the instance_lifecycle_policy block can keep a node whose drain failed
  # (the agent's ABANDON) in Terminating:Retained for a look:
  #   instance_lifecycle_policy {
  #     retention_triggers {
  #       terminate_hook_abandon = "retain"
  #     }
  #   }

  tag {
    key                 = "tfe-node-agent"
    value               = "managed"
    propagate_at_launch = true
  }

  # The role's policies must be in place before the first node boots: its agent calls Secrets
  # Manager and Auto Scaling from its first second.
  depends_on = [
    aws_iam_role_policy.agent,
    aws_iam_role_policy.tfe_object_storage,
    aws_iam_role_policy.agent_package,
  ]
}
