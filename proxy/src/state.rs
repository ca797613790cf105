//! The state every task shares: the current snapshot, the registry of stateful upstream
//! pieces, the metrics, readiness, the listener manager and the connection tracker.

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use crate::control::ControlStatus;
use crate::listeners::ListenerManager;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::upstream::Registry;

#[derive(Debug)]
pub struct Proxy {
    /// Loaded once per request or connection; replaced whole on each applied update.
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    pub metrics: Metrics,
    /// True once a configuration is applied and its listeners are bound.
    pub ready: AtomicBool,
    /// True from the shutdown signal on: `/ready` answers 503 so load balancers stop sending.
    pub draining: AtomicBool,
    /// Every downstream connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Touched only by the (serialised) apply path and shutdown.
    pub listeners: Mutex<ListenerManager>,
    /// The control stream's state, when the proxy runs with `--control`.
    pub control: Mutex<Option<ControlStatus>>,
    /// Active health checkers, synced on every apply.
    pub checkers: crate::resilience::health_check::Checkers,
    /// Service and node (from the command line), for trace resources.
    pub identity: Mutex<crate::trace::Identity>,
    /// The running tracer, kept across applies while its configuration stays.
    pub tracer: Mutex<Option<std::sync::Arc<crate::trace::Tracer>>>,
    /// Open access-log destinations.
    pub access_logs: crate::access_log::Sinks,
    /// `/tap` subscribers.
    pub tap: std::sync::Arc<crate::tap::Tap>,
    /// The mesh certificate and the TLS configurations built from it.
    pub mesh_identity: std::sync::Arc<crate::identity::IdentityStore>,
    /// How to reach the control plane (set once at start with `--control`).
    pub control_options: std::sync::OnceLock<crate::control::ControlOptions>,
}

impl Proxy {
    pub fn new() -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            registry: Registry::default(),
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            listeners: Mutex::new(ListenerManager::default()),
            control: Mutex::new(None),
            checkers: crate::resilience::health_check::Checkers::default(),
            identity: Mutex::new(crate::trace::Identity::default()),
            tracer: Mutex::new(None),
            access_logs: crate::access_log::Sinks::default(),
            tap: std::sync::Arc::default(),
            mesh_identity: std::sync::Arc::default(),
            control_options: std::sync::OnceLock::new(),
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}
