# Inputs of the example. Values for a deployment go in terraform.tfvars (see
# terraform.tfvars.example); none of them is a secret: secret values never pass through Terraform.

# --- The group and its instances -------------------------------------------------------------

variable "name" {
  description = "Name of the Auto Scaling group; also the prefix of the launch template, IAM role, instance profile and KMS alias. The agent's IAM policy is scoped to the group of exactly this name."
  type        = string
  default     = "tfe"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$", var.name))
    error_message = "name: letters, digits, '-' and '_', at most 51 characters (it prefixes IAM names)."
  }
}

variable "ami_id" {
  description = "AMI with the tfe-node-agent package baked in (its unit enabled or not), or a plain Debian/Ubuntu/RPM AMI when package_url is set. Either way it provides /opt/tfe/install.sh."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of a node (check TFE's hardware requirements for the release)."
  type        = string
  default     = "m5.xlarge"
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone) the group launches nodes in."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of a node: TFE's ports from the load balancer and from the other nodes, outbound to PostgreSQL, Redis, S3 and the AWS APIs."
  type        = list(string)
}

variable "target_group_arns" {
  description = "Load balancer target groups the group registers nodes with (TFE's 443). A node is registered only after its launch hook is released, i.e. once TFE on it is healthy."
  type        = list(string)
}

variable "min_size" {
  description = "Minimum number of nodes."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Maximum number of nodes (mind TFE's Active/Active node limit)."
  type        = number
  default     = 3
}

variable "desired_capacity" {
  description = "Number of nodes to run."
  type        = number
  default     = 2
}

variable "health_check_grace_period" {
  description = "Seconds after a node enters InService before failed ELB health checks count. The launch hook holds the node in Pending:Wait until TFE is healthy, so this does not have to cover the install."
  type        = number
  default     = 300
}

variable "min_healthy_percentage" {
  description = "Instance refresh: the share of desired capacity that stays InService while nodes are repaved."
  type        = number
  default     = 50

  validation {
    condition     = var.min_healthy_percentage >= 0 && var.min_healthy_percentage <= 100
    error_message = "min_healthy_percentage: 0 to 100."
  }
}

variable "instance_metadata_tags" {
  description = "Whether instance tags are readable through IMDS (\"enabled\" or \"disabled\"). The agent does not read tags."
  type        = string
  default     = "disabled"

  validation {
    condition     = contains(["enabled", "disabled"], var.instance_metadata_tags)
    error_message = "instance_metadata_tags: \"enabled\" or \"disabled\"."
  }
}

# --- Lifecycle hooks (names go into the agent's config through user data) ----------------------

variable "launch_hook_name" {
  description = "Name of the launch lifecycle hook; written to agent.toml as [lifecycle].launch_hook."
  type        = string
  default     = "tfe-launch"
}

variable "terminate_hook_name" {
  description = "Name of the terminate lifecycle hook; written to agent.toml as [lifecycle].terminate_hook."
  type        = string
  default     = "tfe-terminate"
}

variable "launch_heartbeat_timeout" {
  description = "Launch hook HeartbeatTimeout in seconds. The agent heartbeats every third of it while it installs TFE and waits for it to be healthy; the hook's total budget is min(48 h, 100 x this)."
  type        = number
  default     = 600

  validation {
    condition     = var.launch_heartbeat_timeout >= 30 && var.launch_heartbeat_timeout <= 7200
    error_message = "launch_heartbeat_timeout: 30 to 7200 seconds (Auto Scaling's limits)."
  }
}

variable "terminate_heartbeat_timeout" {
  description = "Terminate hook HeartbeatTimeout in seconds. The agent heartbeats every third of it while node-drain runs; the hook's total budget, min(48 h, 100 x this), must exceed the agent's [drain].timeout (1 h by default)."
  type        = number
  default     = 300

  validation {
    condition     = var.terminate_heartbeat_timeout >= 30 && var.terminate_heartbeat_timeout <= 7200
    error_message = "terminate_heartbeat_timeout: 30 to 7200 seconds (Auto Scaling's limits)."
  }
}

# --- How the agent gets onto the node ----------------------------------------------------------

variable "package_url" {
  description = "Empty: the AMI has tfe-node-agent baked in (cloud-init/baked-ami.yaml). Else the https:// or s3:// URL of the .deb or .rpm that user data installs first (cloud-init/package-from-url.yaml); an s3:// URL needs the AWS CLI on the AMI (iam.tf grants s3:GetObject on that object)."
  type        = string
  default     = ""

  validation {
    condition     = var.package_url == "" || can(regex("^(https|s3)://[^?]+\\.(deb|rpm)(\\?.*)?$", var.package_url))
    error_message = "package_url: empty, or an https:// or s3:// URL of a .deb or .rpm."
  }
}

# --- TFE's settings (non-secret; the secret ones live in the tfe/shared secret) -----------------

variable "release_sequence" {
  description = "Replicated ReleaseSequence of the TFE release to install (e.g. 504 = v202101-1)."
  type        = number

  validation {
    condition     = var.release_sequence > 0 && floor(var.release_sequence) == var.release_sequence
    error_message = "release_sequence: a positive integer."
  }
}

variable "tfe_hostname" {
  description = "TFE's hostname (the load balancer's DNS name or a record pointing to it)."
  type        = string
}

variable "pg_netloc" {
  description = "PostgreSQL host:port, e.g. the RDS cluster endpoint and 5432."
  type        = string

  validation {
    condition     = can(regex("^[^:]+:[0-9]+$", var.pg_netloc))
    error_message = "pg_netloc: host:port."
  }
}

variable "pg_dbname" {
  description = "PostgreSQL database name."
  type        = string
  default     = "tfe"
}

variable "pg_user" {
  description = "PostgreSQL user (its password is pg_password in the tfe/shared secret)."
  type        = string
  default     = "tfe"
}

variable "s3_bucket" {
  description = "Name of the existing S3 bucket TFE keeps its objects in (in this region). The role gets object access to it; TFE reaches it with the instance profile (aws_instance_profile = \"1\")."
  type        = string
}

variable "redis_host" {
  description = "Redis (ElastiCache) primary endpoint host, TLS on 6379 (its password is redis_pass in the tfe/shared secret)."
  type        = string
}
