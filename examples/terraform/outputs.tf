output "autoscaling_group_name" {
  description = "Name of the Auto Scaling group (the agent's policy is scoped to it)."
  value       = aws_autoscaling_group.tfe.name
}

output "autoscaling_group_arn" {
  description = "ARN of the Auto Scaling group."
  value       = aws_autoscaling_group.tfe.arn
}

output "launch_template_id" {
  description = "ID of the nodes' launch template."
  value       = aws_launch_template.node.id
}

output "node_role_arn" {
  description = "ARN of the nodes' IAM role."
  value       = aws_iam_role.node.arn
}

output "repave_policy_arn" {
  description = "ARN of the policy to attach to whoever runs tfe-node-agent repave (an operator, CI)."
  value       = aws_iam_policy.repave.arn
}

output "instance_profile_name" {
  description = "Name of the nodes' instance profile."
  value       = aws_iam_instance_profile.node.name
}

output "secrets_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the node secrets."
  value       = aws_kms_key.secrets.arn
}

output "secret_ids" {
  description = "ARNs of the secrets whose values are to be put out of band (aws secretsmanager put-secret-value) before the first node boots."
  value = {
    shared  = aws_secretsmanager_secret.shared.arn
    license = aws_secretsmanager_secret.license.arn
  }
}

output "lifecycle_hooks" {
  description = "Names of the lifecycle hooks the agents hold and release."
  value = {
    launch    = var.launch_hook_name
    terminate = var.terminate_hook_name
  }
}
