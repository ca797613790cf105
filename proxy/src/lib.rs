//! Remora, the sidecar proxy: listeners, protocol detection, HTTP/1.1 + HTTP/2 + TCP proxying,
//! upstream pools, the runtime snapshot, hot reload and the admin server.
//!
//! A request's path: [`listeners`] accept → [`connection`] detects the protocol →
//! [`http::server`] (hyper) → [`http::proxy`] routes and composes the route's layers →
//! [`http::forward`] picks an endpoint and sends over an [`upstream::pool`] connection.
//! Configuration: a file and/or the [`control`] stream feed [`sources`], which merges them;
//! [`apply`] validates, compiles a [`snapshot`] and swaps it in.

pub mod admin;
pub mod app;
pub mod apply;
pub mod cli;
pub mod connection;
pub mod control;
pub mod detect;
pub mod http;
pub mod io;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod snapshot;
pub mod sources;
pub mod state;
pub mod tcp;
pub mod upstream;
pub mod watch;
pub mod workers;
