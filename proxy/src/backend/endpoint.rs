//! One address traffic can go to, with what the proxy knows of it: its
//! connections, load, ejection and health state.

use crate::balance::{hash_bytes, Balancer, Candidate, Load};
use crate::body::RequestBody;
use crate::resilience::health::Health;
use crate::resilience::outlier::Outlier;
use crate::transport::Pool;
use std::net::SocketAddr;
use std::sync::Arc;

/// One address traffic can go to.
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) identity: Option<Arc<str>>,
    pub(crate) load: Arc<Load>,
    pub(crate) pool: Arc<Pool<RequestBody>>,
    /// Passive ejection state (consecutive failures, half-open probe).
    pub(crate) outlier: Arc<Outlier>,
    /// Active health-check state.
    pub(crate) health: Arc<Health>,
    pub(super) hash_id: u64,
}

impl Endpoint {
    /// An endpoint outside any backend (the local app, a passthrough destination).
    pub(crate) fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            weight: 1,
            identity: None,
            load: Arc::new(Load::new()),
            pool: Arc::new(Pool::default()),
            outlier: Arc::new(Outlier::default()),
            health: Arc::new(Health::default()),
            hash_id: hash_bytes(addr.to_string().as_bytes()),
        }
    }
}

impl Candidate for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn load(&self) -> &Load {
        &self.load
    }
    fn hash_id(&self) -> u64 {
        self.hash_id
    }
}

/// The endpoints of a backend at one moment, with their balancer.
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) balancer: Balancer,
}
