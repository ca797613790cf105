//! Listener: where the proxy accepts connections and what it does with them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Errors;
use crate::proto;
use crate::util;

pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Http,
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub direction: Direction,
    pub protocol: Protocol,
    /// HTTP routing (set for `Http` and `Auto`).
    pub route_table: Option<Arc<str>>,
    /// Opaque TCP destination (set for `Tcp` and `Auto`).
    pub cluster: Option<Arc<str>>,
    pub detect_timeout: Duration,
    /// Closes a connection idle this long (see the schema for what idle means per protocol).
    pub idle_timeout: Duration,
    pub access_log: Option<AccessLog>,
    pub tls: Option<ListenerTls>,
    pub authorization: Option<crate::authz::Authorization>,
    pub connection_limits: Option<crate::limits::ConnectionLimits>,
}

pub use crate::tls::{ListenerTls, ServerCertificate, TlsMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub format: AccessLogFormat,
    /// Empty: standard output.
    pub path: String,
}

pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

pub(crate) fn validate(l: &proto::Listener, errs: &mut Errors<'_>) -> Option<Listener> {
    let name_ok = errs.check("name", util::name(&l.name)).is_some();
    let address = errs.check("address", util::socket_addr(&l.address));
    let direction = match proto::Direction::try_from(l.direction) {
        Ok(proto::Direction::Inbound) => Some(Direction::Inbound),
        Ok(proto::Direction::Outbound | proto::Direction::Unspecified) => Some(Direction::Outbound),
        Err(_) => {
            errs.push("direction", format!("unknown value {}", l.direction));
            None
        }
    };
    let protocol = match proto::ListenerProtocol::try_from(l.protocol) {
        Ok(proto::ListenerProtocol::Tcp) => Some(Protocol::Tcp),
        Ok(proto::ListenerProtocol::Http) => Some(Protocol::Http),
        Ok(proto::ListenerProtocol::Auto) => Some(Protocol::Auto),
        Ok(proto::ListenerProtocol::Unspecified) => {
            errs.push("protocol", "required: one of TCP, HTTP, AUTO");
            None
        }
        Err(_) => {
            errs.push("protocol", format!("unknown value {}", l.protocol));
            None
        }
    };
    let detect_timeout = errs.check(
        "detectTimeout",
        util::duration(l.detect_timeout.as_ref(), DEFAULT_DETECT_TIMEOUT),
    );
    let idle_default = if l.protocol == proto::ListenerProtocol::Tcp as i32 {
        DEFAULT_TCP_IDLE_TIMEOUT
    } else {
        DEFAULT_HTTP_IDLE_TIMEOUT
    };
    let idle_timeout = errs.check(
        "idleTimeout",
        util::positive_duration(l.idle_timeout.as_ref(), idle_default),
    );
    let access_log = l.access_log.as_ref().and_then(|a| {
        let format = match proto::AccessLogFormat::try_from(a.format) {
            Ok(proto::AccessLogFormat::Unspecified | proto::AccessLogFormat::Json) => {
                AccessLogFormat::Json
            }
            Ok(proto::AccessLogFormat::Text) => AccessLogFormat::Text,
            Err(_) => {
                errs.push(
                    "accessLog.format",
                    format!("unknown value {} (use JSON or TEXT)", a.format),
                );
                return None;
            }
        };
        if a.path.contains('\0') {
            errs.push("accessLog.path", "must not contain NUL");
            return None;
        }
        if l.protocol == proto::ListenerProtocol::Tcp as i32 {
            errs.push(
                "accessLog",
                "only HTTP and AUTO listeners log requests; remove it from a TCP listener",
            );
            return None;
        }
        Some(AccessLog {
            format,
            path: a.path.clone(),
        })
    });
    let tls = l.tls.as_ref().and_then(|t| crate::tls::listener(t, errs));
    let authorization = l
        .authorization
        .as_ref()
        .and_then(|a| crate::authz::validate(a, errs));
    let route_table = (!l.route_table.is_empty()).then(|| Arc::<str>::from(l.route_table.as_str()));
    let cluster = (!l.cluster.is_empty()).then(|| Arc::<str>::from(l.cluster.as_str()));
    if let Some(p) = protocol {
        if matches!(p, Protocol::Http | Protocol::Auto) && route_table.is_none() {
            errs.push("routeTable", "required for HTTP and AUTO listeners");
        }
        if matches!(p, Protocol::Tcp | Protocol::Auto) && cluster.is_none() {
            errs.push("cluster", "required for TCP and AUTO listeners");
        }
        if p == Protocol::Tcp && route_table.is_some() {
            errs.push("routeTable", "not used by a TCP listener; remove it");
        }
        if p == Protocol::Http && cluster.is_some() {
            errs.push(
                "cluster",
                "not used by an HTTP listener (routes pick clusters); remove it",
            );
        }
    }
    if detect_timeout.is_some_and(|d| d.is_zero()) && l.detect_timeout.is_some() {
        errs.push("detectTimeout", "must be greater than zero");
    }
    Some(Listener {
        name: if name_ok {
            l.name.as_str().into()
        } else {
            return None;
        },
        address: address?,
        direction: direction?,
        protocol: protocol?,
        route_table,
        cluster,
        detect_timeout: detect_timeout?,
        idle_timeout: idle_timeout?,
        access_log,
        tls,
        authorization,
        connection_limits: l
            .connection_limits
            .as_ref()
            .map(crate::limits::connection_limits)
            .filter(|c| *c != crate::limits::ConnectionLimits::default()),
    })
}
