# The node's secrets: Terraform creates the secrets (names, KMS key), never their values.
#
# Values are put out of band, e.g.
#   aws secretsmanager put-secret-value --secret-id tfe/shared --secret-string file://shared.json
#   aws secretsmanager put-secret-value --secret-id tfe/license --secret-binary fileb://license.rli
# An aws_secretsmanager_secret_version fed from a sensitive variable would also work, but then the
# value is stored in plain text in the Terraform state (and in every plan file): whoever can read
# the state could read TFE's encryption password, database and Redis passwords and the license.
# Out of band, the values exist only in Secrets Manager, readable by the nodes' role.
#
# The names are fixed: packaging/iam-policy.json grants GetSecretValue on tfe/shared-??????,
# tfe/license-??????, tfe/console-??????, tfe/tls-cert-??????, tfe/tls-key-?????? and tfe/ca-??????
# (the six characters are the suffix Secrets Manager appends to a secret's ARN). The optional ones
# (console, tls-cert, tls-key, ca) are not created here; add them the same way and name them in
# agent.toml's [secrets] when needed.

# A customer-managed key for the secrets; the agent's policy may use it only through Secrets Manager
# (kms:Decrypt with kms:ViaService). The default key policy leaves access to IAM policies.
resource "aws_kms_key" "secrets" {
  description             = "${var.name}: TFE node secrets in Secrets Manager"
  enable_key_rotation     = true
  deletion_window_in_days = 30
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${var.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

# SecretString: a JSON object of ptfe setting name -> string, e.g. enc_password, pg_password,
# redis_pass, internal_api_token, ... (see the agent's docs/operate/configuration.md).
resource "aws_secretsmanager_secret" "shared" {
  name        = "tfe/shared"
  description = "TFE node settings that are secret (JSON object of setting -> string); read by tfe-node-agent"
  kms_key_id  = aws_kms_key.secrets.arn
}

# The .rli license: SecretBinary, or base64 in SecretString.
resource "aws_secretsmanager_secret" "license" {
  name        = "tfe/license"
  description = "TFE license (.rli); read by tfe-node-agent"
  kms_key_id  = aws_kms_key.secrets.arn
}
