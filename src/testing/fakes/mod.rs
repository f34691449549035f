//! One in-memory fake per port, and [`FakeWorld`] made of them, for the flows' unit tests under
//! tokio's paused clock. The fakes keep the rules the real services keep — a lifecycle action
//! exists only while the instance waits on it and answers "No active Lifecycle Action" once it
//! was completed or expired, a failed fetch fails every secret, a drain is let run once — and
//! record every call with its (tokio) time, so a test asserts on what the flow did.

mod asg;
mod cluster;
mod groups;
mod host;
mod imds;
mod probes;
mod secrets;
mod tfe;

pub use asg::*;
pub use cluster::*;
pub use groups::*;
pub use host::*;
pub use imds::*;
pub use probes::*;
pub use secrets::*;
pub use tfe::*;

use crate::config::Settings;
use crate::model::lifecycle::NodeState;
use crate::node::recorder::Recorder;
use crate::node::state::StateStore;
use crate::ports::{Identity, Parts, TokioClock};
use crate::sys::shutdown::ShutdownRx;
use crate::testing::states::INSTANCE;
use std::path::Path;
use std::time::Duration;

pub const GROUP: &str = "tfe-asg";
pub const LAUNCH_HOOK: &str = "tfe-launch";
pub const TERMINATE_HOOK: &str = "tfe-terminate";

/// The world of the unit tests: every port faked, tokio's clock (paused in the tests).
pub type FakeWorld = Parts<
    FakeSecrets,
    FakeAsg,
    FakeImds,
    FakeTfe,
    TokioClock,
    FakeHost,
    FakeStores,
    FakeProbes,
    FakeGroups,
>;

/// A [`FakeWorld`] of default fakes: valid secrets, an instance waiting on its launch hook
/// (`Pending:Wait`), an on-demand instance IMDS has nothing to say about, TFE that installs at
/// once and is ready, a host that is not stopping. Replace the parts a test is about.
pub fn world() -> FakeWorldBuilder {
    FakeWorldBuilder {
        secrets: FakeSecrets::valid(),
        asg: FakeAsg::launching(),
        imds: FakeImds::on_demand(),
        tfe: FakeTfe::ready(),
        host: FakeHost::default(),
        stores: FakeStores::default(),
        probes: FakeProbes::default(),
        groups: FakeGroups::default(),
    }
}

pub struct FakeWorldBuilder {
    secrets: FakeSecrets,
    asg: FakeAsg,
    imds: FakeImds,
    tfe: FakeTfe,
    host: FakeHost,
    stores: FakeStores,
    probes: FakeProbes,
    groups: FakeGroups,
}

impl FakeWorldBuilder {
    pub fn secrets(mut self, secrets: FakeSecrets) -> Self {
        self.secrets = secrets;
        self
    }
    pub fn asg(mut self, asg: FakeAsg) -> Self {
        self.asg = asg;
        self
    }
    pub fn imds(mut self, imds: FakeImds) -> Self {
        self.imds = imds;
        self
    }
    pub fn tfe(mut self, tfe: FakeTfe) -> Self {
        self.tfe = tfe;
        self
    }
    pub fn host(mut self, host: FakeHost) -> Self {
        self.host = host;
        self
    }
    pub fn stores(mut self, stores: FakeStores) -> Self {
        self.stores = stores;
        self
    }
    pub fn probes(mut self, probes: FakeProbes) -> Self {
        self.probes = probes;
        self
    }
    pub fn groups(mut self, groups: FakeGroups) -> Self {
        self.groups = groups;
        self
    }
    pub fn build(self) -> FakeWorld {
        Parts {
            secrets: self.secrets,
            asg: self.asg,
            imds: self.imds,
            tfe: self.tfe,
            clock: TokioClock,
            host: self.host,
            stores: self.stores,
            probes: self.probes,
            groups: self.groups,
        }
    }
}

/// The identity IMDS reports for [`INSTANCE`].
pub fn identity() -> Identity {
    Identity {
        instance_id: INSTANCE.into(),
        region: "us-east-1".into(),
        private_ipv4: "10.0.0.5".into(),
        availability_zone: "us-east-1a".into(),
    }
}

/// A signal channel as `crate::sys::shutdown::listen` gives one: send `Some(15)` for SIGTERM.
pub fn signals() -> (tokio::sync::watch::Sender<Option<i32>>, ShutdownRx) {
    tokio::sync::watch::channel(None)
}

/// Awaits `work`, which must end within `limit` of (tokio's, paused) time: a flow that would
/// run on forever fails the test instead of hanging it.
pub async fn within<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, work).await {
        Ok(out) => out,
        Err(_) => panic!("did not end within {limit:?}"),
    }
}

// ------------------------------------------------------------------------------ the record

/// A [`Recorder`] whose state.json lives in a temporary directory of its own, with settings
/// whose every path (the rendered files, the state dir) is inside that directory.
pub struct Recorded {
    dir: tempfile::TempDir,
    store: StateStore,
    pub recorder: Recorder,
}

impl Recorded {
    pub fn new(state: NodeState) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = StateStore::new(&dir.path().join("state"));
        let recorder = Recorder::with_state(store.clone(), state);
        Self {
            dir,
            store,
            recorder,
        }
    }

    /// What state.json holds (it must exist: something was recorded).
    pub fn on_disk(&self) -> NodeState {
        assert!(self.store.path().exists(), "nothing was recorded on disk");
        self.store.load(INSTANCE).expect("state.json reads")
    }

    /// The example config with every path inside this directory.
    pub fn settings(&self) -> Settings {
        settings_in(self.dir.path())
    }
}

/// The example config with the rendered files and the state dir under `dir`, owned by whoever
/// runs the tests.
pub fn settings_in(dir: &Path) -> Settings {
    let mut cfg = crate::testing::parse(crate::testing::EXAMPLE_CONFIG);
    let paths = &mut cfg.paths;
    paths.replicated_conf = dir.join("etc/replicated.conf");
    paths.settings = dir.join("etc/ptfe-settings.json");
    paths.license = dir.join("etc/ptfe-license.rli");
    paths.tls_cert = dir.join("etc/tls/cert.pem");
    paths.tls_key = dir.join("etc/tls/key.pem");
    paths.state_dir = dir.join("state");
    // A user no machine has: the files stay the test's own (no chown, whoever runs the tests).
    paths.file_owner = "tfe-node-agent-test-no-such-user".into();
    cfg
}
