//! Command line. Every subcommand reads the same agent config.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tfe-node-agent",
    version,
    about = "Runs a Terraform Enterprise Active/Active node on an EC2 Auto Scaling group"
)]
pub struct Cli {
    /// Agent config file (TOML).
    #[arg(long, global = true, env = "TFE_NODE_AGENT_CONFIG", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Log level: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: log::LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole boot path once; exits 0 when the node is ready and the launch hook released.
    Boot,
    /// Fetch secrets, validate, write the config files; nothing else.
    Render {
        /// Write nothing; print what would be written, every secret value redacted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the agent config and the secrets' contents; write nothing.
    Validate,
    /// Service mode for systemd: boot, then stay running until stopped.
    Run,
    /// Ask the running agent how the node is (else show what state.json records). Exit 0: in
    /// service and ready; 8: the agent runs but the node is not ready; 9: no agent answers.
    Status {
        /// Print the agent's /status document as is.
        #[arg(long)]
        json: bool,
    },
    /// Probe every dependency TFE will use (Redis, PostgreSQL, S3, the license, the host), with
    /// its settings, at once. Exit 0: nothing failed; 12: a check failed.
    Preflight {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drain this node through the running agent (unix socket): node-drain once, the app
    /// stopped, /readyz 503. There is no reverse of node-drain: `app restart` brings the node
    /// back. Exit 0: drained (or drained already); 9: no agent; 15: refused; 16: failed.
    Drain {
        /// Return once the agent accepted the drain; do not follow it.
        #[arg(long)]
        detach: bool,
    },
    /// TFE's app on this node.
    App {
        #[command(subcommand)]
        action: AppCommand,
    },
    /// TFE's app config on this node (`replicated admin app-config`), checked and recorded.
    AppConfig {
        #[command(subcommand)]
        action: AppConfigCommand,
    },
    /// Every node of the cluster from the shared Redis, and what does not match. Exit 0: the
    /// cluster is consistent; 10: it is not; 11: the store cannot be read.
    Cluster {
        /// Print the view as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<ClusterCommand>,
    },
    /// Run TFE's support bundle (`replicated admin support-bundle`: every node's, to the object
    /// store) and write the agent's own as a .tar.gz, refused when any secret value of the node
    /// is in it. Exit 0: both done; 14: refused, nothing written; 17: the agent's bundle was
    /// written but TFE's failed.
    SupportBundle {
        /// Directory for the .tar.gz (default: support-bundles/ in [paths].state_dir).
        #[arg(long)]
        output: Option<PathBuf>,
        /// How many of the unit's last journal entries to include.
        #[arg(long, default_value_t = 1000)]
        journal_lines: u32,
        /// Do not run TFE's support bundle; write only the agent's.
        #[arg(long)]
        skip_tfe: bool,
    },
    /// Compare the settings this node renders with what TFE runs (`replicatedctl app-config
    /// export --hidden`), by key; secret values are compared by digest and never shown. Never
    /// corrects anything. Exit 0: no drift; 13: drift found; 16: the export failed.
    Drift {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Repave the whole group onto a launch template version (a new release or image), the one
    /// way HashiCorp supports for Active/Active: drain every node → 0 → 1 on the new version →
    /// validate → back to N; resumable, one at a time (the cluster store's repave lease). Run
    /// from an operator's machine, CI or a node, with AWS credentials and this agent.toml (for
    /// the cluster store). Exit 0: done (or the dry run's plan); 4: an AWS call failed while
    /// planning; 11: the store cannot be read; 15: refused, nothing changed; 18: stopped at a
    /// safe point or rolled back (the report says where and what next).
    Repave(RepaveArgs),
}

#[derive(Debug, clap::Args)]
pub struct RepaveArgs {
    /// The Auto Scaling group.
    #[arg(long)]
    pub group: String,
    /// The launch template version to move the group to: a number, `$Latest` or `$Default`
    /// (not needed with `--resume`: the record has it).
    #[arg(long = "launch-template-version", required_unless_present = "resume")]
    pub version: Option<String>,
    /// The capacity to come back to (default: the group's desired capacity now).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// A command run (`sh -c`) once the first new node is in service; it must exit 0. Gets
    /// REPAVE_GROUP, REPAVE_INSTANCE_ID, REPAVE_PRIVATE_IP, REPAVE_RELEASE.
    #[arg(long)]
    pub validate_cmd: Option<String>,
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub validate_timeout: std::time::Duration,
    /// What to do when a step fails after the group changed version.
    #[arg(long, value_enum, default_value = "stop")]
    pub on_failure: OnFailureArg,
    /// Print the plan and what was found; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed off a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Continue the repave recorded in the cluster store from its first step that did not end.
    #[arg(long)]
    pub resume: bool,
    /// Repave although the cluster view is not consistent.
    #[arg(long)]
    pub force: bool,
    /// One JSON event per line on stdout (CI).
    #[arg(long)]
    pub json: bool,
    /// How often the group and the cluster view are read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: std::time::Duration,
    /// The repave lease's TTL, renewed every poll: how soon `--resume` may take over from an
    /// orchestrator that is gone.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
}

/// `repave --on-failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailureArg {
    /// Stop at a safe point and say where the group is.
    Stop,
    /// Back to the previous version the same way (see docs/operate/repave.md for its limits).
    Rollback,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Delete the cluster's identity, deliberately: only after a new database and a new
    /// enc_password. The next node to boot creates a new one.
    ResetIdentity {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Restart TFE on this node through the running agent (app stop, app start, until ready);
    /// after `drain`, the way back into service. Exit 0: ready again; 6: not ready within
    /// [readiness].timeout; 9: no agent; 15: refused; 16: failed.
    ///
    /// `--rolling`: every live in-service node of the cluster, one at a time, through the
    /// cluster store's lease; followed until it ends. Exit 0: every node restarted; 11: the
    /// store cannot be read; 15: refused (a rollout runs); 16: a node did not come back (the
    /// rollout stopped) or it did not end in time.
    Restart {
        #[arg(long)]
        rolling: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppConfigCommand {
    /// Set one setting (`replicated admin app-config -k KEY -v VALUE`), checked by the rules of
    /// boot; never a key whose value comes from a secret. Exit 0: set and recorded; 3: invalid;
    /// 15: refused (secret key); 16: the tool failed.
    Set {
        key: String,
        value: String,
        /// `rolling`: then restart TFE on every live node, one at a time (`app restart
        /// --rolling`), so the change takes effect.
        #[arg(long, value_enum)]
        restart: Option<RestartMode>,
    },
}

/// How `app-config set` restarts TFE after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartMode {
    Rolling,
}
