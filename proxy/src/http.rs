//! HTTP proxying: serving downstream connections, routing each request, and forwarding it.

pub mod authz;
pub mod body;
pub mod error;
pub mod forward;
pub mod h1_server;
pub mod headers;
pub mod idle;
pub mod limit;
pub mod proxy;
pub mod replay;
pub mod retry;
pub mod server;
