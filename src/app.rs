//! Wires the real world (AWS clients, TFE tools) from the config and runs a subcommand.

use crate::adapters::aws::{self, AutoScalingClient, GroupsClient, Imds, SecretsManager};
use crate::adapters::host::SystemHost;
use crate::adapters::probes::SystemProbes;
use crate::adapters::redis::RedisStores;
use crate::adapters::tfe::CliTfe;
use crate::cli::{
    AppCommand, AppConfigCommand, Cli, ClusterCommand, Command, OnFailureArg, RepaveArgs,
    RestartMode,
};
use crate::config::{self, AgentConfig, Settings};
use crate::model::cluster::ClusterView;
use crate::model::repave::{OnFailure, RepaveState};
use crate::model::rollout::RollingView;
use crate::node::app_config::{self, AppConfigError};
use crate::node::boot;
use crate::node::cluster;
use crate::node::drift;
pub use crate::node::exit::Exit;
use crate::node::operator;
use crate::node::preflight;
use crate::node::recorder::Recorder;
use crate::node::rolling_cli;
use crate::node::service;
use crate::node::state::StateStore;
use crate::node::support_bundle::{self, BundleError, TfeBundle};
use crate::observe::{self, summary};
use crate::ports::{
    cluster::RolloutStore, ClusterStore, ClusterStores, Identity, ImdsError, InstanceMetadata,
    Parts, TokioClock,
};
use crate::repave::progress::{Progress, Style};
use crate::repave::{self, RepaveError};
use crate::sys::retry::Backoff;
use crate::sys::shutdown;
use crate::tfe_files::render::{self, Redaction};
use crate::tfe_files::{self, TfeConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

type RealWorld = Parts<
    SecretsManager,
    AutoScalingClient,
    Imds,
    CliTfe,
    TokioClock,
    SystemHost,
    RedisStores,
    SystemProbes,
    GroupsClient,
>;

pub async fn run(cli: Cli) -> Exit {
    let file = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => return fail(Exit::Config, &e),
    };
    // Every rule that needs only agent.toml is checked here, before any AWS call.
    let cfg = match config::settings(file.clone(), &cli.config) {
        Ok(s) => s,
        Err(e) => {
            let code = fail(Exit::Config, &e);
            if matches!(cli.command, Command::Boot | Command::Run) {
                refuse_launch(&file).await;
            }
            return code;
        }
    };
    match cli.command {
        Command::Validate => validate(&cfg).await,
        Command::Render { dry_run } => render_files(&cfg, dry_run).await,
        Command::Boot => boot_once(&cfg).await,
        Command::Run => run_service(&cfg).await,
        Command::Status { json } => status(&cfg, json).await,
        Command::Cluster { json, action } => cluster_command(&cfg, json, action).await,
        Command::Preflight { json } => preflight_command(&cfg, json).await,
        Command::Drain { detach } => observe::operate::drain(&cfg, detach).await,
        Command::App {
            action: AppCommand::Restart { rolling: false },
        } => observe::operate::app_restart(&cfg).await,
        Command::App {
            action: AppCommand::Restart { rolling: true },
        } => rolling_restart(&cfg).await,
        Command::AppConfig {
            action:
                AppConfigCommand::Set {
                    key,
                    value,
                    restart,
                },
        } => match app_config_set(&cfg, &key, &value).await {
            Exit::Ok if restart == Some(RestartMode::Rolling) => rolling_restart(&cfg).await,
            code => code,
        },
        Command::SupportBundle {
            output,
            journal_lines,
            skip_tfe,
        } => {
            let request = support_bundle::Request {
                output,
                journal_lines,
                skip_tfe,
                config_path: cli.config.clone(),
                status: observe::client::status_body(&cfg.listen).await,
            };
            support_bundle_command(&cfg, &request).await
        }
        Command::Drift { json } => drift_command(&cfg, json).await,
        Command::Repave(args) => repave_command(&cfg, args).await,
    }
}

/// An agent.toml that parses but is invalid on an instance: a launch hook the group holds for it
/// gets `[lifecycle].on_failure` at once (the boot cannot start), as a failed boot would.
async fn refuse_launch(file: &AgentConfig) {
    let imds = Imds::new();
    let identity = match identity(&imds).await {
        Ok(id) => id,
        Err(e) => {
            log::error!(
                "cannot answer a held launch hook: {}",
                crate::error_chain(&e)
            );
            return;
        }
    };
    let region = file.aws.region.as_deref().unwrap_or(&identity.region);
    let sdk = aws::sdk_config(region, file.aws.attempt_timeout, file.aws.connect_timeout).await;
    boot::refuse_held_launch(
        &AutoScalingClient::new(&sdk),
        &TokioClock,
        &identity.instance_id,
        &file.lifecycle,
        "because agent.toml is invalid ([lifecycle].on_failure)",
    )
    .await;
}

fn fail(code: Exit, error: &dyn std::error::Error) -> Exit {
    log::error!("{}", crate::error_chain(error));
    code
}

/// Region from `[aws].region`, else from IMDS (so render/validate work off-instance when set).
async fn region(cfg: &Settings, imds: &Imds) -> Result<String, Exit> {
    if let Some(r) = &cfg.aws.region {
        return Ok(r.clone());
    }
    match imds.identity().await {
        Ok(id) => Ok(id.region),
        Err(e) => Err(fail(Exit::Aws, &e)),
    }
}

async fn world(cfg: &Settings, imds: Imds, region: &str) -> RealWorld {
    let sdk = aws::sdk_config(region, cfg.aws.attempt_timeout, cfg.aws.connect_timeout).await;
    Parts {
        secrets: SecretsManager::new(&sdk),
        asg: AutoScalingClient::new(&sdk),
        imds,
        tfe: CliTfe::new(&cfg.tools, cfg.install.sha256.clone(), &cfg.paths.state_dir),
        clock: TokioClock,
        host: SystemHost::new(&cfg.tools.systemctl, &cfg.tools.journalctl),
        stores: RedisStores::default(),
        probes: SystemProbes::default(),
        groups: GroupsClient::new(&sdk),
    }
}

/// The world of a one-shot command run on or off an instance: the region from `[aws].region`,
/// else from IMDS.
async fn command_world(cfg: &Settings) -> Result<RealWorld, Exit> {
    let imds = Imds::new();
    let region = region(cfg, &imds).await?;
    Ok(world(cfg, imds, &region).await)
}

/// [`command_world`] and the node's settings from its secrets, validated.
async fn loaded(cfg: &Settings) -> Result<(RealWorld, TfeConfig), Exit> {
    let w = command_world(cfg).await?;
    match tfe_files::load(&w.secrets, &w.clock, cfg).await {
        Ok(node) => Ok((w, node)),
        Err(e) => Err(fail(Exit::of_configure(&e), &e)),
    }
}

/// `value` as pretty JSON on stdout when `json`, else `text()`.
fn print_doc<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) {
    if json {
        let doc = serde_json::to_string_pretty(value).expect("the document serializes");
        println!("{doc}");
    } else {
        print!("{}", text());
    }
}

async fn validate(cfg: &Settings) -> Exit {
    match loaded(cfg).await {
        Ok((_, plan)) => {
            let secret = plan.settings.values().filter(|v| v.is_secret()).count();
            println!(
                "configuration is valid: {} settings ({} from secrets), release sequence {}",
                plan.settings.len(),
                secret,
                plan.release_sequence
            );
            Exit::Ok
        }
        Err(code) => code,
    }
}

async fn render_files(cfg: &Settings, dry_run: bool) -> Exit {
    let plan = match loaded(cfg).await {
        Ok((_, plan)) => plan,
        Err(code) => return code,
    };
    if dry_run {
        for file in render::render(&plan, &cfg.paths, Redaction::Secrets) {
            println!("==> {} (mode {:04o}) <==", file.path.display(), file.mode);
            println!("{}", String::from_utf8_lossy(&file.bytes).trim_end());
        }
        return Exit::Ok;
    }
    match tfe_files::write(cfg, &plan) {
        Ok(_) => Exit::Ok,
        Err(e) => fail(Exit::of_configure(&e), &e),
    }
}

/// The world of this instance (region from the config, else its identity) and its recorder; an
/// unreadable state record refuses the boot (saying why, answering a held launch hook).
async fn instance_world(
    cfg: &Settings,
    imds: Imds,
    identity: &Identity,
) -> Result<(RealWorld, Recorder), Exit> {
    let region = cfg.aws.region.as_deref().unwrap_or(&identity.region);
    let w = world(cfg, imds, region).await;
    match Recorder::open(StateStore::new(&cfg.paths.state_dir), &identity.instance_id) {
        Ok(recorder) => Ok((w, recorder)),
        Err(unreadable) => {
            let error = boot::refuse_to_boot(&w, cfg, identity, unreadable).await;
            Err(Exit::of_boot(&error))
        }
    }
}

/// How long a failing IMDS is retried for the instance's identity at start (each try already
/// makes four requests with a short backoff): a metadata service that hiccups while the instance
/// boots must not cost a restart of the unit.
const IDENTITY_BUDGET: Duration = Duration::from_secs(60);

async fn identity(imds: &Imds) -> Result<Identity, ImdsError> {
    let give_up = tokio::time::Instant::now() + IDENTITY_BUDGET;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    loop {
        match imds.identity().await {
            Ok(id) => return Ok(id),
            Err(e) => {
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay >= give_up {
                    return Err(e);
                }
                log::warn!(
                    "reading the instance identity failed: {e}; retrying in {:.1}s",
                    delay.as_secs_f32()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn boot_once(cfg: &Settings) -> Exit {
    let imds = Imds::new();
    let identity = match identity(&imds).await {
        Ok(id) => id,
        Err(e) => return fail(Exit::Aws, &e),
    };
    let (w, recorder) = match instance_world(cfg, imds, &identity).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    match boot::boot(&w, cfg, &identity, &recorder).await {
        Ok(_) => Exit::Ok,
        // boot() already logged the whole chain before releasing the hook.
        Err(e) => Exit::of_boot(&e),
    }
}

async fn run_service(cfg: &Settings) -> Exit {
    let mut signals = match shutdown::listen() {
        Ok(rx) => rx,
        Err(e) => return fail(Exit::Internal, &e),
    };
    let imds = Imds::new();
    let identity = tokio::select! {
        id = identity(&imds) => match id {
            Ok(id) => id,
            Err(e) => return fail(Exit::Aws, &e),
        },
        signal = shutdown::wait(&mut signals) => {
            log::info!("signal {signal} before the instance identity was known: stopping");
            return Exit::Ok;
        }
    };
    let (w, recorder) = match instance_world(cfg, imds, &identity).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    recorder.configured(cfg);
    let (door, mut inbox) = operator::door();
    start_api(cfg, &recorder, &door);
    recorder.set_door(door);
    tokio::spawn(observe::watchdog::run());
    service::run(&w, cfg, &identity, &recorder, &mut signals, &mut inbox).await
}

/// The HTTP API on every `[observe].listen` endpoint. One that cannot be bound is logged with
/// its reason and left out: observability never stops a node from booting or draining.
fn start_api(cfg: &Settings, recorder: &Recorder, door: &operator::Door) {
    let slots = Arc::new(Semaphore::new(observe::server::MAX_CONNECTIONS));
    for endpoint in &cfg.listen {
        match observe::bind(endpoint) {
            Ok(listener) => {
                // Only the unix socket (root only) takes an operator's requests.
                let door = (listener.scope() == observe::Scope::Operator).then(|| door.clone());
                tokio::spawn(observe::serve(
                    listener,
                    recorder.subscribe(),
                    slots.clone(),
                    door,
                ));
            }
            Err(e) => log::error!(
                "the HTTP API is not served there ([observe].listen): {}",
                crate::error_chain(&e)
            ),
        }
    }
}

/// `cluster`: the cluster view from the store this node's settings name (the secrets are read
/// for the Redis password), or `cluster reset-identity`.
async fn cluster_command(cfg: &Settings, json: bool, action: Option<ClusterCommand>) -> Exit {
    let (w, node) = match loaded(cfg).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(target) = cluster::store_target(&cfg.cluster, &node) else {
        eprintln!(
            "no cluster store: [cluster].enabled is false, or no redis_host setting names a Redis"
        );
        return Exit::Config;
    };
    let address = format!("{}:{}", target.host, target.port);
    let store = w.stores.open(target);
    if let Some(ClusterCommand::ResetIdentity { yes }) = action {
        return reset_identity(&store, &address, cfg.cluster.node_ttl, yes).await;
    }
    match store.read().await {
        Ok(snapshot) => {
            let mut view =
                ClusterView::assess(&snapshot, cfg.cluster.node_ttl, cfg.cluster.max_nodes);
            view.rolling = match store.read_rollout().await {
                Ok(s) => Some(RollingView {
                    lease: s.lease,
                    rollout: s.rollout,
                    now: s.now,
                }),
                Err(e) => {
                    eprintln!(
                        "reading the rolling restart failed: {}",
                        crate::error_chain(&e)
                    );
                    None
                }
            };
            print_doc(json, &view, || summary::cluster(&view));
            if view.consistent {
                Exit::Ok
            } else {
                Exit::Cluster
            }
        }
        Err(e) => fail(Exit::ClusterStore, &e),
    }
}

/// `app restart --rolling`: a rollout over the live in-service nodes, followed until it ends.
async fn rolling_restart(cfg: &Settings) -> Exit {
    let (w, node) = match loaded(cfg).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(target) = cluster::store_target(&cfg.cluster, &node) else {
        eprintln!("no cluster store: [cluster].enabled is false, or no redis_host setting names a Redis; `app restart` restarts this node alone");
        return Exit::Config;
    };
    let store = w.stores.open(target);
    match rolling_cli::start(&store, cfg, operator::operator_name()).await {
        Ok(rollout) => {
            println!(
                "rollout {} started by {}: {} node(s), one at a time: {}",
                rollout.id,
                rollout.requested_by,
                rollout.instances.len(),
                rollout.instances.join(", ")
            );
            let bound = rolling_cli::follow_bound(cfg, rollout.instances.len());
            rolling_cli::follow(&store, &rollout.id, bound).await
        }
        Err(e) => fail(e.exit(), &e),
    }
}

/// `drift`: the comparison `run` makes every `[drift].interval`, once, now.
async fn drift_command(cfg: &Settings, json: bool) -> Exit {
    let (w, node) = match loaded(cfg).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match drift::check(&w.tfe, &node, &drift::allowlist(&cfg.drift)).await {
        Ok((report, _live)) => {
            print_doc(json, &report, || drift::table(&report));
            if report.drifted {
                Exit::Drift
            } else {
                Exit::Ok
            }
        }
        Err(e) => fail(Exit::OperationFailed, &e),
    }
}

/// `preflight`: every check before install.sh, and the ones after install when state.json says
/// TFE was installed here. Runs whatever `[preflight].enabled` says: it was asked for.
async fn preflight_command(cfg: &Settings, json: bool) -> Exit {
    let imds = Imds::new();
    // One try: an unreachable IMDS is one of the findings, not a reason to wait a minute.
    let identity = imds.identity().await;
    let region = match (&cfg.aws.region, &identity) {
        (Some(r), _) => r.clone(),
        (None, Ok(id)) => id.region.clone(),
        (None, Err(e)) => return fail(Exit::Aws, e),
    };
    let instance_id = identity.map_or_else(|_| "unknown-instance".into(), |id| id.instance_id);
    let w = world(cfg, imds, &region).await;
    let node = match tfe_files::load(&w.secrets, &w.clock, cfg).await {
        Ok(node) => node,
        Err(e) => return fail(Exit::of_configure(&e), &e),
    };
    let mut report = preflight::before_install(&w, cfg, &node, &instance_id).await;
    let installed = StateStore::new(&cfg.paths.state_dir)
        .recorded()
        .ok()
        .flatten()
        .is_some_and(|s| s.installed_release.is_some());
    if installed {
        let peers = live_peers(&w, cfg, &node, &instance_id).await;
        let after = preflight::after_install(&w, cfg, peers.as_deref()).await;
        report.checks.extend(after.checks);
        report.duration += after.duration;
    }
    print_doc(json, &report, || report.table());
    if report.passed() {
        Exit::Ok
    } else {
        Exit::Preflight
    }
}

/// The live peers' addresses from the cluster store, for the Vault peers check; `None` without
/// a store or when it cannot be read (said).
async fn live_peers(
    w: &RealWorld,
    cfg: &Settings,
    node: &TfeConfig,
    instance_id: &str,
) -> Option<Vec<String>> {
    let target = cluster::store_target(&cfg.cluster, node)?;
    match w.stores.open(target).read().await {
        Ok(snapshot) => {
            let view = ClusterView::assess(&snapshot, cfg.cluster.node_ttl, None);
            Some(preflight::live_peers(&view, instance_id))
        }
        Err(e) => {
            log::warn!(
                "no cluster view for the Vault peers check: {}",
                crate::error_chain(&e)
            );
            None
        }
    }
}

async fn reset_identity<S: ClusterStore>(
    store: &S,
    address: &str,
    node_ttl: Duration,
    yes: bool,
) -> Exit {
    let snapshot = match store.read().await {
        Ok(s) => s,
        Err(e) => return fail(Exit::ClusterStore, &e),
    };
    let Some(identity) = snapshot.identity.clone() else {
        println!("cluster store {address} has no cluster identity; nothing to reset");
        return Exit::Ok;
    };
    // Live members restore the identity they joined on their next heartbeat: a reset is for a
    // cluster with none left (after scaling the group to 0).
    let live = ClusterView::assess(&snapshot, node_ttl, None).live;
    if live > 0 {
        eprintln!("{live} node(s) of cluster {} are live and would restore its identity at their next heartbeat: scale the group to 0 first (`tfe-node-agent cluster` lists them)", identity.cluster_id);
        return Exit::Cluster;
    }
    if !yes {
        eprintln!(
            "This deletes cluster {} (release {}) from {address}. Do it only after moving to a new database with a new enc_password: nodes with the old enc_password can then join again.\nType the cluster id to confirm:",
            identity.cluster_id, identity.release_sequence
        );
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || line.trim() != identity.cluster_id {
            eprintln!("not confirmed; nothing changed");
            return Exit::Usage;
        }
    }
    match store.reset_identity().await {
        Ok(()) => {
            log::warn!(
                "cluster identity {} deleted from {address} by an operator",
                identity.cluster_id
            );
            println!(
                "cluster identity {} deleted; the next node to boot creates a new one",
                identity.cluster_id
            );
            Exit::Ok
        }
        Err(e) => fail(Exit::ClusterStore, &e),
    }
}

/// `app-config set KEY VALUE` ([`app_config::set`]).
async fn app_config_set(cfg: &Settings, key: &str, value: &str) -> Exit {
    let w = match command_world(cfg).await {
        Ok(w) => w,
        Err(code) => return code,
    };
    let by = operator::operator_name();
    match app_config::set(&w, cfg, key, value, &by).await {
        Ok(applied) => {
            print!("{}", app_config::next_steps(&applied));
            Exit::Ok
        }
        Err(e) => {
            let code = match &e {
                AppConfigError::Load(c) => Exit::of_configure(c),
                AppConfigError::SecretKey { .. } => Exit::Refused,
                AppConfigError::Invalid { .. } => Exit::Config,
                AppConfigError::Apply(_) => Exit::OperationFailed,
                AppConfigError::Record { .. } => Exit::LocalIo,
            };
            fail(code, &e)
        }
    }
}

/// `status`: the running agent's `/status` (unix socket first, then TCP), else what
/// `state.json` records.
async fn status(cfg: &Settings, json: bool) -> Exit {
    let why = match observe::client::status(&cfg.listen).await {
        Ok((body, doc)) => {
            if json {
                print!("{body}");
            } else {
                print!("{}", summary::running(&doc));
            }
            return if doc.ready { Exit::Ok } else { Exit::NotReady };
        }
        Err(why) => why,
    };
    eprintln!("no running agent answered: {why}");
    let store = StateStore::new(&cfg.paths.state_dir);
    match store.recorded() {
        Ok(Some(state)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&state).expect("state serializes")
                );
            } else {
                print!("{}", summary::recorded(&state, &store.path()));
            }
        }
        Ok(None) => eprintln!(
            "nothing recorded: {} does not exist",
            store.path().display()
        ),
        Err(e) => eprintln!("{}", crate::error_chain(&e)),
    }
    Exit::NoAgent
}

/// `support-bundle`: TFE's bundle and the agent's (node/support_bundle.rs), and where they went.
async fn support_bundle_command(cfg: &Settings, request: &support_bundle::Request) -> Exit {
    let w = match command_world(cfg).await {
        Ok(w) => w,
        Err(code) => return code,
    };
    match support_bundle::run(&w, cfg, request).await {
        Ok(written) => {
            print!("{}", support_bundle::describe_tfe(&written.tfe));
            println!("agent bundle: {} (mode 0600)", written.path.display());
            for (name, size) in &written.files {
                println!("  {name} ({size} bytes)");
            }
            match written.tfe {
                TfeBundle::Failed(_) => Exit::TfeBundleFailed,
                _ => Exit::Ok,
            }
        }
        Err(e) => {
            let code = match &e {
                BundleError::Refused(_) => Exit::BundleRefused,
                BundleError::Secrets(c) => Exit::of_configure(c),
                BundleError::Archive(_) | BundleError::Write(_) => Exit::LocalIo,
            };
            fail(code, &e)
        }
    }
}

/// `repave`: the orchestrator (`crate::repave`) with this agent.toml's cluster store.
async fn repave_command(cfg: &Settings, args: RepaveArgs) -> Exit {
    use std::io::IsTerminal;
    // Only what the cluster store needs: the shared secret (redis_pass) and the CA bundle (the
    // ca_certs setting), so the repave's IAM policy grants no license or TLS key. The rest of
    // the settings are still checked by the rules of boot.
    let mut store_only = cfg.clone();
    store_only.secrets.license = None;
    store_only.secrets.console_password = None;
    store_only.secrets.tls_cert = None;
    store_only.secrets.tls_key = None;
    store_only.replicated.tls_bootstrap_type = config::TlsBootstrapType::SelfSigned;
    let (w, node) = match loaded(&store_only).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(target) = cluster::store_target(&cfg.cluster, &node) else {
        eprintln!("no cluster store: [cluster].enabled is false, or no redis_host setting names a Redis; the repave records its steps and follows the nodes there");
        return Exit::Config;
    };
    let store = w.stores.open(target);
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown host".into());
    let req = repave::Request {
        group: args.group,
        version: args.version.unwrap_or_default(),
        capacity: args.capacity,
        validate_cmd: args.validate_cmd,
        validate_timeout: args.validate_timeout,
        on_failure: match args.on_failure {
            OnFailureArg::Stop => OnFailure::Stop,
            OnFailureArg::Rollback => OnFailure::Rollback,
        },
        dry_run: args.dry_run,
        resume: args.resume,
        force: args.force,
        poll: args.poll_interval,
        lease_ttl: args.lease_ttl,
        node_ttl: cfg.cluster.node_ttl,
        max_nodes: cfg.cluster.max_nodes,
        owner: format!(
            "{} on {host} (pid {})",
            operator::operator_name(),
            std::process::id()
        ),
    };
    let style = match (args.json, std::io::stdout().is_terminal()) {
        (true, _) => Style::Json,
        (false, true) => Style::Terminal,
        (false, false) => Style::Lines,
    };
    let yes = args.yes;
    let confirm = move |group: &str| {
        if yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!("not on a terminal: pass --yes to repave without a question");
            return false;
        }
        eprintln!("Type the group name ({group}) to repave it:");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok() && line.trim() == group
    };
    match repave::run(&w, &store, &req, &mut Progress::new(style), &confirm).await {
        Ok(None) => Exit::Ok,
        Ok(Some(r)) if r.state == RepaveState::Done => Exit::Ok,
        Ok(Some(_)) => Exit::RepaveStopped,
        Err(e) => {
            let code = match &e {
                RepaveError::Refused(_) | RepaveError::LeaseHeld { .. } => Exit::Refused,
                RepaveError::Aws { .. } => Exit::Aws,
                RepaveError::Store(_) => Exit::ClusterStore,
                RepaveError::LeaseLost { .. } => Exit::RepaveStopped,
            };
            fail(code, &e)
        }
    }
}
