//! Remora, the sidecar proxy: listeners, protocol detection, HTTP/1.1 + HTTP/2 + TCP proxying,
//! upstream pools, the runtime snapshot, hot reload and the admin server.
//!
//! A request's path: [`listeners`] accept and hand the connection to a [`workers`] thread →
//! [`connection`] detects the protocol → [`http::h1_server`] (HTTP/1.1 fast path) or
//! [`http::server`] (hyper: HTTP/2 and the rest) → [`http::proxy`] routes and composes the
//! route's layers → [`http::forward`] picks an endpoint ([`http::retry`] runs the tries of a
//! route with a retry policy; [`resilience`] holds breakers, outlier detection and health
//! checks) and sends with the in-task
//! [`upstream::h1`] client or hyper's HTTP/2 client over an [`upstream::pool`] connection.
//! Configuration: a file and/or the [`control`] stream feed [`sources`], which merges them;
//! [`apply`] validates, compiles a [`snapshot`] and swaps it in.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod apply;
pub mod cli;
pub mod conn_limit;
pub mod connection;
pub mod control;
pub mod detect;
pub mod http;
pub mod identity;
pub mod io;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod resilience;
pub mod snapshot;
pub mod sources;
pub mod state;
pub mod tap;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod watch;
pub mod workers;
