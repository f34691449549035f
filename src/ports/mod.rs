//! The boundary to the outside world, one file per outside party. The flows (`crate::node`) are
//! generic over one [`World`]; `crate::adapters` implement the ports for real, and
//! `crate::testing` has a fake of each for the unit tests. Ports own their errors: nothing here
//! names an adapter.

mod autoscaling;
mod clock;
pub mod cluster;
mod groups;
mod host;
mod imds;
mod probes;
mod secrets;
mod tfe;

pub use autoscaling::*;
pub use clock::*;
pub use cluster::{ClusterStore, ClusterStores, RepaveStatus, RepaveStore};
pub use groups::*;
pub use host::*;
pub use imds::*;
pub use probes::*;
pub use secrets::*;
pub use tfe::*;

/// Everything outside the agent that a flow may touch. One bound, `W: World`, in every flow
/// signature; a new outside party is a new associated type here, not a new type parameter on
/// every function.
pub trait World: Sync {
    type Secrets: SecretSource;
    type Asg: AutoScaling;
    type Imds: InstanceMetadata;
    type Tfe: TfeTools;
    type Clock: Clock;
    type Host: Host;
    type Stores: ClusterStores;
    type Probes: Probes;
    type Groups: GroupControl;

    fn secrets(&self) -> &Self::Secrets;
    fn asg(&self) -> &Self::Asg;
    fn imds(&self) -> &Self::Imds;
    fn tfe(&self) -> &Self::Tfe;
    fn clock(&self) -> &Self::Clock;
    fn host(&self) -> &Self::Host;
    fn stores(&self) -> &Self::Stores;
    fn probes(&self) -> &Self::Probes;
    fn groups(&self) -> &Self::Groups;
}

/// A [`World`] made of one value per port: the real one (`crate::app`) and the fake one
/// (`crate::testing`) are both this struct.
#[derive(Debug)]
pub struct Parts<S, A, M, T, C, H, K, P, G> {
    pub secrets: S,
    pub asg: A,
    pub imds: M,
    pub tfe: T,
    pub clock: C,
    pub host: H,
    pub stores: K,
    pub probes: P,
    pub groups: G,
}

impl<S, A, M, T, C, H, K, P, G> World for Parts<S, A, M, T, C, H, K, P, G>
where
    S: SecretSource,
    A: AutoScaling,
    M: InstanceMetadata,
    T: TfeTools,
    C: Clock,
    H: Host,
    K: ClusterStores,
    P: Probes,
    G: GroupControl,
{
    type Secrets = S;
    type Asg = A;
    type Imds = M;
    type Tfe = T;
    type Clock = C;
    type Host = H;
    type Stores = K;
    type Probes = P;
    type Groups = G;

    fn secrets(&self) -> &S {
        &self.secrets
    }
    fn asg(&self) -> &A {
        &self.asg
    }
    fn imds(&self) -> &M {
        &self.imds
    }
    fn tfe(&self) -> &T {
        &self.tfe
    }
    fn clock(&self) -> &C {
        &self.clock
    }
    fn host(&self) -> &H {
        &self.host
    }
    fn stores(&self) -> &K {
        &self.stores
    }
    fn probes(&self) -> &P {
        &self.probes
    }
    fn groups(&self) -> &G {
        &self.groups
    }
}
