//! Auto Scaling's vocabulary as types: an instance's lifecycle state, a hook's transition and the
//! result a lifecycle action is completed with. Parsed once where the text comes in (the Auto
//! Scaling adapter, IMDS `target-lifecycle-state`); the flows match on variants.

use std::fmt;

/// The result a lifecycle action is completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::Continue => "CONTINUE",
            HookResult::Abandon => "ABANDON",
        }
    }
}

/// Which transition a lifecycle hook holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`
    Terminating,
    Other(String),
}

impl Transition {
    pub fn parse(text: &str) -> Self {
        match text {
            "autoscaling:EC2_INSTANCE_LAUNCHING" => Transition::Launching,
            "autoscaling:EC2_INSTANCE_TERMINATING" => Transition::Terminating,
            other => Transition::Other(other.to_string()),
        }
    }
}

macro_rules! lifecycle_states {
    ($($variant:ident = $text:literal,)*) => {
        /// An instance's lifecycle state, as DescribeAutoScalingInstances and IMDS
        /// `autoscaling/target-lifecycle-state` spell it; `Warmed:*` are the warm pool's.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum LifecycleState {
            $($variant,)*
            /// A state this agent does not know (a newer API); shown, never acted on.
            Other(String),
        }

        impl LifecycleState {
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => LifecycleState::$variant,)*
                    other => LifecycleState::Other(other.to_string()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(LifecycleState::$variant => $text,)*
                    LifecycleState::Other(text) => text,
                }
            }
        }
    };
}

lifecycle_states! {
    Pending = "Pending",
    PendingWait = "Pending:Wait",
    PendingProceed = "Pending:Proceed",
    Quarantined = "Quarantined",
    InService = "InService",
    Terminating = "Terminating",
    TerminatingWait = "Terminating:Wait",
    TerminatingProceed = "Terminating:Proceed",
    TerminatingRetained = "Terminating:Retained",
    Terminated = "Terminated",
    Detaching = "Detaching",
    Detached = "Detached",
    EnteringStandby = "EnteringStandby",
    Standby = "Standby",
    WarmedPending = "Warmed:Pending",
    WarmedPendingWait = "Warmed:Pending:Wait",
    WarmedPendingProceed = "Warmed:Pending:Proceed",
    WarmedTerminating = "Warmed:Terminating",
    WarmedTerminatingWait = "Warmed:Terminating:Wait",
    WarmedTerminatingProceed = "Warmed:Terminating:Proceed",
    WarmedTerminated = "Warmed:Terminated",
    WarmedStopped = "Warmed:Stopped",
    WarmedRunning = "Warmed:Running",
    WarmedHibernated = "Warmed:Hibernated",
}

impl LifecycleState {
    /// Waiting on a launch hook: `Some(false)` entering service, `Some(true)` entering the warm
    /// pool; `None` when not waiting on a launch hook.
    pub fn launch_wait(&self) -> Option<bool> {
        match self {
            LifecycleState::PendingWait => Some(false),
            LifecycleState::WarmedPendingWait => Some(true),
            _ => None,
        }
    }

    /// Waiting on a terminate hook (leaving the group, or leaving the warm pool for good).
    pub fn is_terminate_wait(&self) -> bool {
        matches!(
            self,
            LifecycleState::TerminatingWait | LifecycleState::WarmedTerminatingWait
        )
    }

    /// Resting in the warm pool.
    pub fn is_warm_pool_resting(&self) -> bool {
        matches!(
            self,
            LifecycleState::WarmedStopped
                | LifecycleState::WarmedRunning
                | LifecycleState::WarmedHibernated
        )
    }

    /// The instance ends (IMDS target state): this instance is to be terminated.
    pub fn is_terminated(&self) -> bool {
        matches!(
            self,
            LifecycleState::Terminated | LifecycleState::WarmedTerminated
        )
    }

    /// Whether an instance whose launch action was already resolved went on into service (or,
    /// for a warm-pool launch, into the pool): a release whose answer was lost, not a lost hook.
    pub fn launch_went_ahead(&self, warm_pool: bool) -> bool {
        match self {
            LifecycleState::InService | LifecycleState::PendingProceed => true,
            LifecycleState::WarmedPendingProceed => warm_pool,
            s => warm_pool && s.is_warm_pool_resting(),
        }
    }

    /// Past the terminate wait: the terminate action no longer exists (for a return to the warm
    /// pool: the instance is back in the pool).
    pub fn is_past_terminate_wait(&self) -> bool {
        matches!(
            self,
            LifecycleState::TerminatingProceed
                | LifecycleState::Terminated
                | LifecycleState::TerminatingRetained
                | LifecycleState::WarmedTerminatingProceed
                | LifecycleState::WarmedTerminated
                | LifecycleState::WarmedPendingProceed
        ) || self.is_warm_pool_resting()
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for LifecycleState {
    fn from(text: &str) -> Self {
        LifecycleState::parse(text)
    }
}

impl PartialEq<&str> for LifecycleState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_and_unknown_ones_are_kept() {
        for text in [
            "Pending:Wait",
            "InService",
            "Terminating:Wait",
            "Warmed:Pending:Wait",
            "Warmed:Hibernated",
            "Terminating:Retained",
        ] {
            assert_eq!(LifecycleState::parse(text).as_str(), text);
        }
        let new = LifecycleState::parse("Warmed:Pending:Retained");
        assert_eq!(new, LifecycleState::Other("Warmed:Pending:Retained".into()));
        assert_eq!(new.to_string(), "Warmed:Pending:Retained");
    }

    #[test]
    fn predicates_follow_the_documented_states() {
        use LifecycleState::*;
        assert_eq!(PendingWait.launch_wait(), Some(false));
        assert_eq!(WarmedPendingWait.launch_wait(), Some(true));
        assert_eq!(InService.launch_wait(), None);
        assert!(TerminatingWait.is_terminate_wait() && WarmedTerminatingWait.is_terminate_wait());
        assert!(InService.launch_went_ahead(false));
        assert!(!WarmedStopped.launch_went_ahead(false));
        assert!(WarmedStopped.launch_went_ahead(true));
        assert!(!Terminated.launch_went_ahead(true));
        assert!(WarmedHibernated.is_past_terminate_wait());
        assert!(!TerminatingWait.is_past_terminate_wait());
        assert!(Terminated.is_terminated() && WarmedTerminated.is_terminated());
        assert_eq!(
            Transition::parse("autoscaling:EC2_INSTANCE_LAUNCHING"),
            Transition::Launching
        );
    }
}

/// An Auto Scaling process that SuspendProcesses/ResumeProcesses name. The repave suspends the
/// three that would fight it: `AZRebalance` and `ReplaceUnhealthy` launch or terminate behind its
/// back, `ScheduledActions` would change the capacity it set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ScalingProcess {
    Launch,
    Terminate,
    AddToLoadBalancer,
    AlarmNotification,
    AZRebalance,
    HealthCheck,
    InstanceRefresh,
    ReplaceUnhealthy,
    ScheduledActions,
    /// A process this agent does not know (a newer API); shown, never suspended or resumed.
    Other(String),
}

impl ScalingProcess {
    /// The ones the repave suspends for its duration.
    pub const REPAVE: [ScalingProcess; 3] = [
        ScalingProcess::AZRebalance,
        ScalingProcess::ReplaceUnhealthy,
        ScalingProcess::ScheduledActions,
    ];

    pub fn parse(text: &str) -> Self {
        match text {
            "Launch" => ScalingProcess::Launch,
            "Terminate" => ScalingProcess::Terminate,
            "AddToLoadBalancer" => ScalingProcess::AddToLoadBalancer,
            "AlarmNotification" => ScalingProcess::AlarmNotification,
            "AZRebalance" => ScalingProcess::AZRebalance,
            "HealthCheck" => ScalingProcess::HealthCheck,
            "InstanceRefresh" => ScalingProcess::InstanceRefresh,
            "ReplaceUnhealthy" => ScalingProcess::ReplaceUnhealthy,
            "ScheduledActions" => ScalingProcess::ScheduledActions,
            other => ScalingProcess::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ScalingProcess::Launch => "Launch",
            ScalingProcess::Terminate => "Terminate",
            ScalingProcess::AddToLoadBalancer => "AddToLoadBalancer",
            ScalingProcess::AlarmNotification => "AlarmNotification",
            ScalingProcess::AZRebalance => "AZRebalance",
            ScalingProcess::HealthCheck => "HealthCheck",
            ScalingProcess::InstanceRefresh => "InstanceRefresh",
            ScalingProcess::ReplaceUnhealthy => "ReplaceUnhealthy",
            ScalingProcess::ScheduledActions => "ScheduledActions",
            ScalingProcess::Other(text) => text,
        }
    }
}

/// The launch template the group points at: by id or name, and a version (a number, `$Latest`
/// or `$Default` as the group records it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: String,
}

impl TemplateRef {
    pub fn at(&self, version: &str) -> TemplateRef {
        TemplateRef {
            version: version.to_string(),
            ..self.clone()
        }
    }

    /// `name` (or the id) and the version, for humans.
    pub fn label(&self) -> String {
        let which = self.name.as_deref().or(self.id.as_deref()).unwrap_or("?");
        format!("{which} version {}", self.version)
    }
}
