//! Fault injection on every call (issue 9, proof 1). For every AWS and IMDS call the agent makes
//! during boot and during termination, and every fault kind that applies to it, the real binary
//! runs against the emulator (faults armed on its Auto Scaling API and IMDS) and moto behind the
//! fault proxy (tests/emulator/README.md, "Faults"). Each row checks:
//!
//! * the end result: the phase's hook released with CONTINUE after a transient fault; after a
//!   fault that outlasts the agent's budget, the documented safe result and an error chain in the
//!   log, never a silent exit;
//! * that retries are bounded and backed off, from the arrival times the fault layer recorded;
//! * that what must happen once does: install.sh, node-drain, and no CompleteLifecycleAction of
//!   the agent's own after one whose response was lost (the SDK's retry got "No active Lifecycle
//!   Action", which is success).
//!
//! One row per (call, fault); rows run on a few threads at once, every failure is collected and
//! reported together, and a summary line gives the counts. `FAULT_MATRIX_ONLY=text` runs the rows
//! whose name contains `text`; `FAULT_MATRIX_THREADS=n` sets the parallelism;
//! `FAULT_MATRIX_VERBOSE=1` shows what passing rows saw too.

mod common;

use common::faults::{gaps, Call, FaultNode};
use common::{shared_secret, Hooks, Moto};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Threads running rows at once: the rows mostly wait (on backoff, timeouts, the fake TFE's
/// clock), so more than the 2 cores, but few enough that CPU contention does not blur the timing.
const THREADS: usize = 8;
/// No row may take longer than this (a row that does is a failure: an unbounded retry). The
/// longest budget in the table is the launch hook lookup's: twice a discovery_timeout of 20 s.
const ROW_DEADLINE: Duration = Duration::from_secs(55);
/// How long a hung request hangs: past the agent's attempt timeout below and IMDS's 2 s.
const HANG_S: f64 = 5.0;
/// The SDK's attempt timeout for rows with a hanging AWS call (the default, 20 s, is too slow
/// for a test); the key is documented in the README.
const ATTEMPT_TIMEOUT: &str = r#"[aws] => [aws]\nattempt_timeout = "2s""#;
/// How long the agent retries a Secrets Manager fetch that fails for now (default 2 min): a
/// fault that never ends gives up well within a row's deadline; the key is documented in
/// docs/operate/configuration.md.
const SECRETS_RETRY: &str = r#"[aws] => [aws]\nretry_timeout = "15s""#;
/// Termination noticed within 200 ms; a termination row never waits minutes for a wait state.
const FAST: &str = r#"poll_interval = "1s" => poll_interval = "200ms"
wait_state_timeout = "5m" => wait_state_timeout = "30s""#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `boot`, run to its end.
    Boot,
    /// `run`, booted; the fault is armed once the node is in service, then the group scales in.
    Terminate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// An Auto Scaling Query API action, at the emulator.
    Asg(&'static str),
    /// A Secrets Manager operation, at the fault proxy in front of moto.
    Secrets(&'static str),
    /// An IMDS path after /latest/.
    Imds(&'static str),
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Asg(a) | Target::Secrets(a) | Target::Imds(a) => a,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Throttle,
    Http500,
    Http503,
    Reset,
    Hang,
    Lost,
    Http401,
    Http404,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Throttle => "throttle",
            Kind::Http500 => "http500",
            Kind::Http503 => "http503",
            Kind::Reset => "reset",
            Kind::Hang => "hang",
            Kind::Lost => "lost",
            Kind::Http401 => "http401",
            Kind::Http404 => "http404",
        }
    }
}

/// How many requests the fault spoils.
#[derive(Clone, Copy, Debug)]
enum Dose {
    Count(u32),
    /// Every request for this many seconds from the first one spoiled.
    Window(f64),
    /// Every request until the row ends: the fault outlasts any budget.
    Always,
}

/// What the launch hook ends as when the boot gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launch {
    /// The agent never learnt enough to touch it: no CompleteLifecycleAction; the group's
    /// DefaultResult applies at HeartbeatTimeout.
    Untouched,
    /// Never CONTINUEd: untouched or ABANDONed, depending on how far the boot got.
    NotContinued,
    /// ABANDONed by the agent ([lifecycle].on_failure).
    Abandoned,
    /// The group applied DefaultResult ABANDON at a timeout.
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The phase's hook released with CONTINUE by the agent; boot exits 0.
    Continue,
    /// `boot` exits `exit` with an ERROR line naming `says`.
    BootFails {
        exit: i32,
        says: &'static str,
        launch: Launch,
    },
    /// The group applies the hook's DefaultResult at its timeout (the agent's calls could not
    /// keep it); the agent logs `says` (at ERROR when `error`, else at WARN or ERROR).
    HookTimesOut { says: &'static str, error: bool },
}

/// How the attempts spent on the fault must be spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spacing {
    /// Nothing to assert (the SDK's own full-jitter retries, or timeouts that dominate).
    Any,
    /// Never four attempts within 0.4 s: past the SDK's three, the agent waits (~1 s and up).
    NoBurst,
    /// NoBurst, and the agent's pauses grow. Under a fault that never ends every call of the
    /// agent costs exactly this many requests (the SDK's 3 attempts, the IMDS client's 4 tries),
    /// so the attempts come in rounds and the pause before each round is the agent's backoff:
    /// every one at least 0.4 s (each wait is between half and all of its step, the first step
    /// 1 s), and the third longer than the first (0.5–1 s, then 2–4 s).
    Grows(usize),
    /// The IMDS client's own tries: 100 ms, 200 ms, 400 ms apart (the last gap beats the first).
    ImdsBackoff,
}

/// The node a row runs on.
#[derive(Clone, Copy, Debug)]
struct Stage {
    /// The hooks' HeartbeatTimeout in seconds.
    launch: u64,
    terminate: u64,
    /// install.sh's length and the seconds until the app reports started: the boot's length.
    install_s: f64,
    app_s: f64,
    drain_s: f64,
    /// Extra config edits ("old => new" lines).
    config: &'static str,
    /// BatchGetSecretValue refused (HTTP 500) for the whole row: secrets come one by one.
    batch_refused: bool,
    /// Seconds between IMDS saying Terminated and the wait state (the group's wait_state_delay).
    wait_state_delay: f64,
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            launch: 60,
            terminate: 60,
            install_s: 0.2,
            app_s: 0.8,
            drain_s: 0.5,
            config: "",
            batch_refused: false,
            wait_state_delay: 0.0,
        }
    }
}

#[derive(Clone, Debug)]
struct Row {
    phase: Phase,
    target: Target,
    kind: Kind,
    dose: Dose,
    end: End,
    /// Most attempts the fault may cost: from the first spoiled request to the first good one.
    max_attempts: usize,
    spacing: Spacing,
    stage: Stage,
}

impl Row {
    fn name(&self) -> String {
        let dose = match self.dose {
            Dose::Count(n) => format!("×{n}"),
            Dose::Window(s) => format!(" for {s}s"),
            Dose::Always => " always".into(),
        };
        let phase = match self.phase {
            Phase::Boot => "boot",
            Phase::Terminate => "termination",
        };
        format!("{phase}: {} {}{dose}", self.target.name(), self.kind.name())
    }

    fn rule(&self) -> Value {
        let mut rule = match self.target {
            Target::Asg(a) | Target::Secrets(a) => json!({"target": "api", "action": a}),
            Target::Imds(p) => json!({"target": "imds", "path": p}),
        };
        rule["kind"] = json!(self.kind.name());
        match self.dose {
            Dose::Count(n) => rule["count"] = json!(n),
            Dose::Window(s) => rule["for_s"] = json!(s),
            Dose::Always => rule["for_s"] = json!(3600),
        }
        if self.kind == Kind::Hang {
            rule["hang_s"] = json!(HANG_S);
        }
        rule
    }

    /// A rough guess of the row's seconds, to start the long rows first.
    fn weight(&self) -> u32 {
        let phase = match self.phase {
            Phase::Boot => 5,
            Phase::Terminate => 10,
        };
        let dose = match self.dose {
            Dose::Always => self.deadline().as_secs() as u32 / 3,
            _ => 0,
        };
        phase + dose + if self.kind == Kind::Hang { 5 } else { 0 }
    }

    /// The longest the row may take: the identity's minute of retries for IMDS that never
    /// answers, else [`ROW_DEADLINE`].
    fn deadline(&self) -> Duration {
        match (self.target, self.dose) {
            (Target::Imds(_), Dose::Always) => Duration::from_secs(90),
            _ => ROW_DEADLINE,
        }
    }

    fn config(&self) -> String {
        let mut text = format!("{FAST}\n{}", self.stage.config);
        if self.kind == Kind::Hang && !matches!(self.target, Target::Imds(_)) {
            text = format!("{text}\n{ATTEMPT_TIMEOUT}");
        }
        if matches!(self.target, Target::Secrets(_)) {
            text = format!("{text}\n{SECRETS_RETRY}");
        }
        text
    }
}

// ------------------------------------------------------------------------------------ the table

const DESCRIBE_INSTANCES: Target = Target::Asg("DescribeAutoScalingInstances");
const DESCRIBE_HOOKS: Target = Target::Asg("DescribeLifecycleHooks");
const HEARTBEAT: Target = Target::Asg("RecordLifecycleActionHeartbeat");
const COMPLETE: Target = Target::Asg("CompleteLifecycleAction");
const BATCH: Target = Target::Secrets("BatchGetSecretValue");
const GET_SECRET: Target = Target::Secrets("GetSecretValue");
const TOKEN: Target = Target::Imds("api/token");
const IDENTITY: [Target; 3] = [
    Target::Imds("meta-data/instance-id"),
    Target::Imds("meta-data/placement/region"),
    Target::Imds("meta-data/local-ipv4"),
];
const TARGET_STATE: Target = Target::Imds("meta-data/autoscaling/target-lifecycle-state");

fn row(phase: Phase, target: Target, kind: Kind, dose: Dose, end: End) -> Row {
    Row {
        phase,
        target,
        kind,
        dose,
        end,
        max_attempts: 0,
        spacing: Spacing::Any,
        stage: Stage::default(),
    }
}

impl Row {
    fn bound(mut self, max_attempts: usize, spacing: Spacing) -> Row {
        self.max_attempts = max_attempts;
        self.spacing = spacing;
        self
    }

    fn on(mut self, stage: Stage) -> Row {
        self.stage = stage;
        self
    }
}

/// Rows of transient faults on one call, each `(kind, count, spacing)` ending in CONTINUE: the
/// fault costs its count of attempts plus the good one.
fn transient(
    phase: Phase,
    target: Target,
    stage: Stage,
    doses: &[(Kind, u32, Spacing)],
) -> Vec<Row> {
    doses
        .iter()
        .map(|&(kind, n, spacing)| {
            row(phase, target, kind, Dose::Count(n), End::Continue)
                .bound(n as usize + 1, spacing)
                .on(stage)
        })
        .collect()
}

/// On an Auto Scaling call: more refusals than the SDK's own three attempts (the agent's retry
/// must carry them, after a pause), two hung attempts and a lost response (the SDK's retry).
const ASG_TRANSIENT: &[(Kind, u32, Spacing)] = &[
    (Kind::Throttle, 4, Spacing::NoBurst),
    (Kind::Http500, 4, Spacing::NoBurst),
    (Kind::Http503, 4, Spacing::NoBurst),
    (Kind::Reset, 4, Spacing::NoBurst),
    (Kind::Hang, 2, Spacing::Any),
    (Kind::Lost, 1, Spacing::Any),
];
/// Within the SDK's three attempts: for calls the agent does not retry itself (Secrets Manager,
/// and the terminate hook's DescribeLifecycleHooks, which falls back instead).
const SDK_TRANSIENT: &[(Kind, u32, Spacing)] = &[
    (Kind::Throttle, 2, Spacing::Any),
    (Kind::Http500, 2, Spacing::Any),
    (Kind::Http503, 2, Spacing::Any),
    (Kind::Reset, 2, Spacing::Any),
    (Kind::Hang, 1, Spacing::Any),
    (Kind::Lost, 1, Spacing::Any),
];
/// Fewer than the IMDS client's four tries per read, 100 ms, 200 ms, 400 ms apart (a 401 costs a
/// try and a new token, no pause), and one request hung past the client's 2 s timeout.
const IMDS_TRANSIENT: &[(Kind, u32, Spacing)] = &[
    (Kind::Http503, 3, Spacing::ImdsBackoff),
    (Kind::Reset, 3, Spacing::ImdsBackoff),
    (Kind::Hang, 1, Spacing::Any),
    (Kind::Http401, 3, Spacing::Any),
];

fn rows() -> Vec<Row> {
    use Phase::{Boot, Terminate};
    let mut rows = Vec::new();

    // ---- boot: IMDS identity (the token, then instance-id, region, local-ipv4). Past the
    // client's four tries per read, the agent retries the identity for a minute (1 s doubling
    // to 10 s): a 404 ("not yet") and a 6 s outage are carried.
    // A 401 on the token request itself does not apply: IMDS answers it 400, 403 or 503.
    rows.extend(transient(
        Boot,
        TOKEN,
        Stage::default(),
        &IMDS_TRANSIENT[..3],
    ));
    for path in IDENTITY {
        rows.extend(transient(Boot, path, Stage::default(), IMDS_TRANSIENT));
        rows.push(
            row(Boot, path, Kind::Http404, Dose::Count(1), End::Continue).bound(2, Spacing::Any),
        );
        rows.push(
            row(Boot, path, Kind::Http503, Dose::Window(6.0), End::Continue)
                .bound(24, Spacing::NoBurst),
        );
    }
    // An IMDS that never answers: after that minute, exit 4 with the chain. The agent does not
    // know its instance, so the hook is left to the group's DefaultResult.
    let gone = End::BootFails {
        exit: 4,
        says: "token",
        launch: Launch::Untouched,
    };
    rows.push(row(Boot, TOKEN, Kind::Http503, Dose::Always, gone).bound(60, Spacing::Grows(4)));

    // ---- boot: Auto Scaling
    let discovery = Stage {
        config: r#"[lifecycle] => [lifecycle]\ndiscovery_timeout = "20s""#,
        ..Stage::default()
    };
    rows.extend(transient(
        Boot,
        DESCRIBE_INSTANCES,
        Stage::default(),
        ASG_TRANSIENT,
    ));
    rows.extend(transient(
        Boot,
        DESCRIBE_HOOKS,
        Stage::default(),
        ASG_TRANSIENT,
    ));
    for (target, launch) in [
        (DESCRIBE_INSTANCES, Launch::Untouched),
        (DESCRIBE_HOOKS, Launch::NotContinued),
    ] {
        let end = End::BootFails {
            exit: 4,
            says: target.name(),
            launch,
        };
        // 20 s of backoff from ~1 s beside the work (about five rounds of the SDK's three
        // attempts), then the documented last look after it: at most as long again.
        rows.push(
            row(Boot, target, Kind::Throttle, Dose::Always, end)
                .bound(36, Spacing::Grows(3))
                .on(discovery),
        );
    }
    // Heartbeats every ~3.3 s (HeartbeatTimeout 10 s) through a boot of ~7 s.
    let beating = Stage {
        launch: 10,
        install_s: 1.0,
        app_s: 6.0,
        ..Stage::default()
    };
    rows.extend(transient(Boot, HEARTBEAT, beating, ASG_TRANSIENT));
    // A boot of ~8 s against a HeartbeatTimeout of 4 s that no heartbeat gets through to.
    let starved = Stage {
        launch: 4,
        install_s: 1.0,
        app_s: 7.0,
        ..Stage::default()
    };
    rows.push(
        row(
            Boot,
            HEARTBEAT,
            Kind::Throttle,
            Dose::Always,
            End::HookTimesOut {
                says: HEARTBEAT.name(),
                error: false,
            },
        )
        .bound(30, Spacing::NoBurst)
        .on(starved),
    );
    rows.extend(transient(Boot, COMPLETE, Stage::default(), ASG_TRANSIENT));
    // The release is retried until shortly before the action would expire without heartbeats
    // (0.9 × HeartbeatTimeout, 20 s here: about five rounds), then the group's DefaultResult.
    rows.push(
        row(
            Boot,
            COMPLETE,
            Kind::Throttle,
            Dose::Always,
            End::BootFails {
                exit: 4,
                says: COMPLETE.name(),
                launch: Launch::TimedOut,
            },
        )
        .bound(18, Spacing::Grows(3))
        .on(Stage {
            launch: 20,
            ..Stage::default()
        }),
    );

    // ---- boot: Secrets Manager (both secrets in one BatchGetSecretValue; GetSecretValue per
    // secret when the batch call is refused)
    rows.extend(transient(Boot, BATCH, Stage::default(), SDK_TRANSIENT));
    // A refused batch is documented to fall back to GetSecretValue.
    rows.push(row(Boot, BATCH, Kind::Throttle, Dose::Always, End::Continue).bound(6, Spacing::Any));
    let unreachable = End::BootFails {
        exit: 4,
        says: "tfe/shared",
        launch: Launch::Abandoned,
    };
    // A fault that never ends: the agent's own rounds (the SDK's 3 attempts each) with growing
    // pauses, within [aws].retry_timeout (15 s here): at most 6 rounds fit.
    rows.push(
        row(Boot, BATCH, Kind::Reset, Dose::Always, unreachable).bound(18, Spacing::Grows(3)),
    );
    let one_by_one = Stage {
        batch_refused: true,
        ..Stage::default()
    };
    rows.extend(transient(Boot, GET_SECRET, one_by_one, SDK_TRANSIENT));
    rows.push(
        // Each round starts with the refused batch call, whose own time blurs the pauses
        // between rounds; their growth is asserted on the batch row above.
        row(Boot, GET_SECRET, Kind::Throttle, Dose::Always, unreachable)
            .bound(18, Spacing::NoBurst)
            .on(one_by_one),
    );

    // ---- termination: IMDS target-lifecycle-state, polled every 200 ms
    rows.extend(transient(
        Terminate,
        TARGET_STATE,
        Stage::default(),
        IMDS_TRANSIENT,
    ));
    rows.push(
        row(
            Terminate,
            TARGET_STATE,
            Kind::Http404,
            Dose::Count(3),
            End::Continue,
        )
        .bound(4, Spacing::Any),
    );
    // A 3 s outage: the watcher says so (once) and notices the termination after it.
    rows.push(
        row(
            Terminate,
            TARGET_STATE,
            Kind::Http503,
            Dose::Window(3.0),
            End::Continue,
        )
        .bound(24, Spacing::NoBurst),
    );

    // ---- termination: Auto Scaling
    // IMDS says Terminated 1 s before the wait state exists: the agent polls for it meanwhile.
    let delayed = Stage {
        wait_state_delay: 1.0,
        ..Stage::default()
    };
    rows.extend(transient(
        Terminate,
        DESCRIBE_INSTANCES,
        delayed,
        ASG_TRANSIENT,
    ));
    // Terminating:Wait never seen within wait_state_timeout: the drain goes on, the hook is left
    // to its DefaultResult (CONTINUE, at HeartbeatTimeout 4 s).
    rows.push(
        row(
            Terminate,
            DESCRIBE_INSTANCES,
            Kind::Throttle,
            Dose::Always,
            End::HookTimesOut {
                says: "Terminating:Wait",
                error: true,
            },
        )
        .bound(15, Spacing::NoBurst)
        .on(Stage {
            terminate: 4,
            config: r#"wait_state_timeout = "30s" => wait_state_timeout = "6s""#,
            ..delayed
        }),
    );
    // Past the SDK's attempts the agent holds the hook with the shortest HeartbeatTimeout AWS
    // allows (30 s) instead of describing it again: within them is the transient case here.
    rows.extend(transient(
        Terminate,
        DESCRIBE_HOOKS,
        Stage::default(),
        SDK_TRANSIENT,
    ));
    // Without HeartbeatTimeout the hook is still held and completed by name.
    rows.push(
        row(
            Terminate,
            DESCRIBE_HOOKS,
            Kind::Throttle,
            Dose::Always,
            End::Continue,
        )
        .bound(15, Spacing::NoBurst),
    );
    // A drain of 6 s, heartbeats every ~3.3 s (HeartbeatTimeout 10 s).
    let draining = Stage {
        terminate: 10,
        drain_s: 6.0,
        ..Stage::default()
    };
    rows.extend(transient(Terminate, HEARTBEAT, draining, ASG_TRANSIENT));
    rows.push(
        row(
            Terminate,
            HEARTBEAT,
            Kind::Throttle,
            Dose::Always,
            End::HookTimesOut {
                says: HEARTBEAT.name(),
                error: false,
            },
        )
        .bound(24, Spacing::NoBurst)
        .on(Stage {
            terminate: 3,
            drain_s: 6.0,
            ..Stage::default()
        }),
    );
    rows.extend(transient(
        Terminate,
        COMPLETE,
        Stage::default(),
        ASG_TRANSIENT,
    ));
    rows.push(
        row(
            Terminate,
            COMPLETE,
            Kind::Throttle,
            Dose::Always,
            End::HookTimesOut {
                says: COMPLETE.name(),
                error: true,
            },
        )
        .bound(18, Spacing::Grows(3))
        .on(Stage {
            terminate: 20,
            ..Stage::default()
        }),
    );
    rows
}

// ------------------------------------------------------------------------------------ one row

/// What a row saw, for the failure report.
struct Seen {
    issues: Vec<String>,
    stderr: String,
    calls: Vec<Call>,
}

impl Seen {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.issues.push(what());
        }
    }
}

fn hook_resolutions(node: &FaultNode, hook: &str) -> Vec<(String, String)> {
    node.emulator
        .resolutions()
        .into_iter()
        .filter(|(h, _, _)| h == hook)
        .map(|(_, result, cause)| (result, cause))
        .collect()
}

fn timed_out(r: &[(String, String)], result: &str) -> bool {
    r.len() == 1
        && r[0].0 == result
        && (r[0].1 == "heartbeat-timeout" || r[0].1 == "global-timeout")
}

fn logged(stderr: &str, says: &str, error_only: bool) -> bool {
    stderr.lines().any(|l| {
        l.contains(says) && (l.contains(" ERROR ") || (!error_only && l.contains(" WARN ")))
    })
}

/// The requests of the row's call since `since` (emulator or proxy sequence number).
fn calls_of(node: &FaultNode, target: Target, since: u64) -> Vec<Call> {
    let all = match target {
        Target::Asg(a) => node.emulator.calls(a),
        Target::Secrets(a) => node.proxy.calls(a),
        Target::Imds(p) => node.emulator.imds_calls(p),
    };
    all.into_iter().filter(|c| c.seq >= since).collect()
}

/// From the first spoiled request to the first good one after it (or to the end).
fn attempts(calls: &[Call]) -> &[Call] {
    let Some(first) = calls.iter().position(Call::faulted) else {
        return &[];
    };
    let end = calls[first..]
        .iter()
        .position(|c| !c.faulted())
        .map_or(calls.len(), |i| first + i + 1);
    &calls[first..end]
}

fn run_row(moto: &Moto, row: &Row) -> Seen {
    let stage = row.stage;
    let hooks = Hooks {
        launch_timeout: stage.launch,
        terminate_timeout: stage.terminate,
        ..Hooks::default()
    };
    let node = FaultNode::behind(moto, hooks);
    node.set_behaviour(json!({"install_duration_s": stage.install_s,
                              "app_started_after_s": stage.app_s,
                              "drain_duration_s": stage.drain_s}));
    node.write_config(&row.config());
    if stage.batch_refused {
        node.proxy
            .arm(json!([{"target": "api", "action": "BatchGetSecretValue",
                               "kind": "http500", "for_s": 3600}]));
    }
    let arm = || -> u64 {
        match row.target {
            Target::Secrets(_) => {
                let since = node.proxy.next_seq();
                node.proxy.arm(json!([row.rule()]));
                since
            }
            _ => {
                let since = node.emulator.next_seq();
                node.emulator.arm(json!([row.rule()]));
                since
            }
        }
    };
    let mut seen = Seen {
        issues: Vec::new(),
        stderr: String::new(),
        calls: Vec::new(),
    };
    let hook = match row.phase {
        Phase::Boot => "tfe-launch",
        Phase::Terminate => "tfe-terminate",
    };
    let since;
    let mut exit = None;
    let mut agent = None;
    match row.phase {
        Phase::Boot => {
            since = arm();
            let run = node.run(&["boot"], row.deadline());
            exit = run.code;
            seen.stderr = run.stderr;
        }
        Phase::Terminate => {
            let mut a = node.start(&["run"]);
            let up = wait(Duration::from_secs(40), || {
                a.stderr().contains("is in service") || !a.is_running()
            });
            if !up || !a.is_running() {
                seen.stderr = a.stderr();
                seen.issues
                    .push("never in service before the fault was armed".into());
                return seen;
            }
            since = arm();
            node.scale_in(stage.wait_state_delay);
            let says = match row.end {
                End::HookTimesOut { says, .. } => Some(says),
                _ => None,
            };
            let finished = wait(row.deadline(), || {
                let state = state_file(&node);
                let done = !state["termination"]["hook"].is_null()
                    && state["termination"]["drain"]["state"] == "finished";
                done || says.is_some_and(|s| logged(&a.stderr(), s, true))
            });
            // Late calls (an extra Complete, say) would show up in this second.
            std::thread::sleep(Duration::from_secs(1));
            seen.stderr = a.stderr();
            seen.check(finished, || {
                format!("the termination did not finish within {:?}", row.deadline())
            });
            agent = Some(a);
        }
    }
    let calls = calls_of(&node, row.target, since);
    let faulted = calls.iter().filter(|c| c.faulted()).count();
    let tried = attempts(&calls);

    // ---- the end result
    let resolutions = hook_resolutions(&node, hook);
    let completes: Vec<Call> = node
        .emulator
        .calls("CompleteLifecycleAction")
        .into_iter()
        .filter(|c| c.params["LifecycleHookName"] == hook)
        .collect();
    match row.end {
        End::Continue => {
            if row.phase == Phase::Boot {
                seen.check(exit == Some(0), || format!("boot exited {exit:?}, not 0"));
            }
            seen.check(
                resolutions == [("CONTINUE".to_string(), "complete".to_string())],
                || format!("{hook} resolutions {resolutions:?}, not one CONTINUE by the agent"),
            );
            let ok = completes.iter().filter(|c| c.status == Some(200)).count();
            seen.check(ok == 1, || {
                format!("{ok} successful CompleteLifecycleAction for {hook}, not 1")
            });
            if let Dose::Count(n) = row.dose {
                seen.check(faulted == n as usize, || {
                    format!("the fault spoiled {faulted} requests, not {n}: the row did not exercise it")
                });
            }
        }
        End::BootFails {
            exit: code,
            says,
            launch,
        } => {
            seen.check(exit == Some(code), || {
                format!("boot exited {exit:?}, not {code}")
            });
            seen.check(logged(&seen.stderr, says, true), || {
                format!("no ERROR line naming {says:?}: a silent give-up")
            });
            let settled = match launch {
                Launch::TimedOut => wait(Duration::from_secs(8), || {
                    timed_out(&hook_resolutions(&node, hook), "ABANDON")
                }),
                _ => true,
            };
            let resolutions = hook_resolutions(&node, hook);
            let fits = match launch {
                Launch::Untouched => {
                    completes.is_empty() && resolutions.iter().all(|(_, cause)| cause != "complete")
                }
                Launch::NotContinued => resolutions.iter().all(|(r, _)| r == "ABANDON"),
                Launch::Abandoned => resolutions == [("ABANDON".into(), "complete".into())],
                Launch::TimedOut => settled,
            };
            seen.check(fits, || {
                format!("{hook} resolutions {resolutions:?}, expected {launch:?}")
            });
            seen.check(
                !completes.iter().any(|c| {
                    c.status == Some(200) && c.params["LifecycleActionResult"] == "CONTINUE"
                }),
                || "the agent CONTINUEd a launch it gave up on".into(),
            );
        }
        End::HookTimesOut { says, error } => {
            let result = if hook == "tfe-launch" {
                "ABANDON"
            } else {
                "CONTINUE"
            };
            let settled = wait(Duration::from_secs(12), || {
                timed_out(&hook_resolutions(&node, hook), result)
            });
            seen.check(settled, || {
                format!(
                    "{hook} resolutions {:?}, not one {result} at a timeout",
                    hook_resolutions(&node, hook)
                )
            });
            seen.check(logged(&seen.stderr, says, error), || {
                format!(
                    "no {} line naming {says:?}",
                    if error { "ERROR" } else { "WARN or ERROR" }
                )
            });
        }
    }

    // ---- what must happen once
    let installs = node.install_runs().len();
    let want_install = row.end == End::Continue || matches!(row.end, End::HookTimesOut { .. });
    if want_install {
        seen.check(installs == 1, || {
            format!("install.sh ran {installs} times, not once")
        });
    } else {
        seen.check(installs <= 1, || format!("install.sh ran {installs} times"));
    }
    if row.phase == Phase::Terminate {
        let drains = node.drains()["drains_started"].as_u64().unwrap_or(0);
        seen.check(drains == 1, || {
            format!("node-drain started {drains} times, not once")
        });
    }
    if row.target == COMPLETE && row.kind == Kind::Lost {
        // The lost Complete and the SDK's retry of it ("No active Lifecycle Action"): nothing more.
        let n = completes.iter().filter(|c| c.seq >= since).count();
        seen.check(n == 2, || {
            format!("{n} CompleteLifecycleAction requests for {hook} after the lost one's arming, not 2 (the lost one and the SDK's retry)")
        });
        let retry = completes.iter().filter(|c| c.seq >= since).nth(1);
        seen.check(
            retry.is_some_and(|c| c.error_code.as_deref() == Some("ValidationError")),
            || format!("the retry of the lost Complete was not refused as done: {retry:?}"),
        );
    }
    if row.kind == Kind::Http401 {
        // Every 401 revoked the token: each must be followed by a new one (boot: plus the first).
        let first = usize::from(row.phase == Phase::Boot);
        let tokens = calls_of(&node, TOKEN, since).len();
        seen.check(tokens >= faulted + first, || {
            format!("{faulted} requests refused with 401 but only {tokens} tokens fetched")
        });
    }
    if let (Target::Imds(path), Dose::Window(_)) = (row.target, row.dose) {
        // The outage is reported, but not once per poll.
        let lines = seen
            .stderr
            .lines()
            .filter(|l| l.contains(path) && (l.contains(" WARN ") || l.contains(" ERROR ")))
            .count();
        seen.check((1..=3).contains(&lines), || {
            format!("{lines} WARN/ERROR lines about {path} during the outage, not 1 to 3")
        });
    }

    // ---- bounded and backed off
    seen.check(tried.len() <= row.max_attempts, || {
        format!(
            "{} attempts on the fault, more than the budget's {}",
            tried.len(),
            row.max_attempts
        )
    });
    let g = gaps(tried);
    match row.spacing {
        Spacing::Any => {}
        Spacing::NoBurst | Spacing::Grows(_) => {
            let burst = tried.windows(4).find(|w| w[3].t - w[0].t < 0.4);
            seen.check(burst.is_none(), || {
                format!("four attempts within 0.4 s, no backoff: gaps {g:.2?}")
            });
            if let Spacing::Grows(round) = row.spacing {
                let pauses: Vec<f64> = (1..)
                    .take_while(|k| k * round < tried.len())
                    .map(|k| tried[k * round].t - tried[k * round - 1].t)
                    .collect();
                seen.check(pauses.len() >= 3 && pauses[2] > pauses[0], || {
                    format!("the pauses between rounds of {round} do not grow: {pauses:.2?}")
                });
                seen.check(pauses.iter().all(|p| *p >= 0.4), || {
                    format!(
                        "a round of {round} came without a pause before it: pauses {pauses:.2?}"
                    )
                });
            }
        }
        Spacing::ImdsBackoff => {
            seen.check(
                g.len() >= 2 && g.iter().all(|d| *d >= 0.05) && g[g.len() - 1] > g[0],
                || format!("IMDS retries not backed off: gaps {g:.2?}"),
            );
        }
    }
    drop(agent);
    seen.calls = calls;
    seen
}

fn state_file(node: &FaultNode) -> Value {
    std::fs::read_to_string(node.path("state/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Puts the directory of the interpreter that `python3` runs first on PATH, for the emulator, the
/// proxy and the fake TFE tools this test starts (hundreds of Python starts): a version manager's
/// `python3` shim (pyenv's is a bash script running several more) costs more CPU than the
/// interpreter's own start, and this test's timing assertions want the CPU. Nothing changes where
/// `python3` is the interpreter itself.
fn python_without_shims() {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.dirname(os.path.realpath(sys.executable)))",
        ])
        .output()
        .expect("python3 runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !dir.is_empty() {
        let path = std::env::var("PATH").unwrap_or_default();
        // The only test in this binary, and no thread started yet: nobody reads the environment
        // while it changes.
        std::env::set_var("PATH", format!("{dir}:{path}"));
    }
}

/// Polls `done` every 100 ms until it holds or `timeout` passes.
fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------------ the matrix

#[test]
fn every_call_survives_every_fault_with_the_right_hook_result_bounded_retries_and_no_repeats() {
    let only = std::env::var("FAULT_MATRIX_ONLY").unwrap_or_default();
    // FAULT_MATRIX_VERBOSE=1: the calls and the log tail of passing rows too.
    let verbose = std::env::var_os("FAULT_MATRIX_VERBOSE").is_some();
    python_without_shims();
    let threads = std::env::var("FAULT_MATRIX_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(THREADS);
    let all = rows();
    let calls: BTreeSet<String> = all
        .iter()
        .map(|r| format!("{:?} {}", r.phase, r.target.name()))
        .collect();
    let kinds: BTreeSet<&str> = all.iter().map(|r| r.kind.name()).collect();
    let mut chosen: Vec<Row> = all
        .iter()
        .filter(|r| r.name().contains(&only))
        .cloned()
        .collect();
    // Popped from the end: the longest rows start first, so none is left alone at the end.
    chosen.sort_by_key(Row::weight);
    let queue = Mutex::new(chosen);
    let total = queue.lock().unwrap().len();
    assert!(total > 0, "no row matches FAULT_MATRIX_ONLY={only:?}");
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    // One moto for every row (each row has its own proxy in front of it, and its own emulator).
    let moto = Moto::with_secrets(shared_secret());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let Some(row) = queue.lock().unwrap().pop() else {
                    return;
                };
                let t0 = Instant::now();
                let outcome = catch_unwind(AssertUnwindSafe(|| run_row(&moto, &row)));
                let took = t0.elapsed().as_secs_f32();
                let report = match outcome {
                    Ok(seen) if seen.issues.is_empty() && !verbose => {
                        eprintln!("ok   {:5.1}s  {}", took, row.name());
                        continue;
                    }
                    Ok(seen) => {
                        let verdict = if seen.issues.is_empty() {
                            "ok  "
                        } else {
                            "FAIL"
                        };
                        let mut text = format!("{verdict} {:5.1}s  {}\n", took, row.name());
                        for issue in &seen.issues {
                            let _ = writeln!(text, "    - {issue}");
                        }
                        let _ = writeln!(
                            text,
                            "    calls of {} (t, status, fault):",
                            row.target.name()
                        );
                        for c in seen.calls.iter().take(40) {
                            let _ =
                                writeln!(text, "      {:7.3} {:?} {:?}", c.t, c.status, c.fault);
                        }
                        let tail: Vec<&str> = seen.stderr.lines().rev().take(25).collect();
                        let _ = writeln!(text, "    agent log (last {} lines):", tail.len());
                        for line in tail.iter().rev() {
                            let _ = writeln!(text, "      {line}");
                        }
                        text
                    }
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        format!(
                            "FAIL {:5.1}s  {}\n    - panicked: {why}\n",
                            took,
                            row.name()
                        )
                    }
                };
                eprint!("{report}");
                if report.starts_with("FAIL") {
                    failures.lock().unwrap().push(report);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    println!(
        "fault matrix: {total} rows ({} calls × their fault kinds; {} kinds: {}), {} passed, {} failed, {:.0} s with {threads} threads",
        calls.len(),
        kinds.len(),
        kinds.iter().copied().collect::<Vec<_>>().join(", "),
        total - failures.len(),
        failures.len(),
        started.elapsed().as_secs_f32()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} fault rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
