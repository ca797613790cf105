//! Remora's one configuration schema: the protobuf messages, their YAML/JSON mapping, and the
//! validation that turns them into domain types or errors naming resource and field.
//!
//! Flow: [`load::from_yaml`] (or the control stream) yields a [`proto::Config`];
//! [`config::validate`] turns it into a [`config::Config`] or an [`InvalidConfig`] listing
//! every problem found.

pub mod authz;
pub mod cluster;
pub mod config;
pub mod error;
pub mod limits;
pub mod listener;
pub mod load;
pub mod proto;
pub mod resilience;
pub mod route;
pub mod tls;
mod util;

pub use config::{Config, validate};
pub use error::{InvalidConfig, ValidationError};
