# Example: Terraform Enterprise (Replicated) Active/Active nodes on an EC2 Auto Scaling group, each
# run by tfe-node-agent. See README.md beside this file. Checked by tests/terraform_example.rs.

terraform {
  required_version = ">= 1.3"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}
