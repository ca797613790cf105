//! The proxy's mesh identity: its workload certificate, key and trust bundle, compiled into
//! the rustls configurations mesh mTLS uses, and swapped whole when renewed. New connections
//! take the current credentials; live ones keep those they were made with. Credentials come
//! from watched files ([`files`]) or from the control plane ([`csr`]).

pub mod csr;
pub mod files;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use remora_control_api::tls::{Identity, IdentitySource};
use rustls::server::WebPkiClientVerifier;

use crate::metrics::{IdentityLabels, Metrics};
use crate::state::Proxy;

/// A usable identity: who this proxy is and the TLS configurations that present it.
pub struct Credentials {
    /// This proxy's SPIFFE id (from its certificate).
    pub id: String,
    pub trust_domain: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Inbound mesh mTLS: client certificates from the bundle's trust domain required.
    pub server: Arc<rustls::ServerConfig>,
    /// Outbound mesh mTLS, offering `http/1.1` or `h2`.
    pub client_h1: Arc<rustls::ClientConfig>,
    pub client_h2: Arc<rustls::ClientConfig>,
    /// Outbound mesh mTLS for opaque TCP (no ALPN).
    pub client_opaque: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Which input a credentials problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    Bundle,
}

#[derive(Debug)]
pub struct BuildError {
    pub part: Part,
    pub message: String,
}

fn err(part: Part) -> impl FnOnce(String) -> BuildError {
    move |message| BuildError { part, message }
}

impl Credentials {
    /// Compiles PEM inputs: the chain must match the key, and its leaf must carry a SPIFFE
    /// id of `trust_domain`.
    pub fn build(
        trust_domain: &str,
        chain: &[u8],
        key: &[u8],
        bundle: &[u8],
    ) -> Result<Self, BuildError> {
        let provider = crate::tls::provider();
        let chain = crate::tls::certs(chain).map_err(err(Part::Cert))?;
        let key = crate::tls::key(key).map_err(err(Part::Key))?;
        let roots = Arc::new(crate::tls::roots(bundle).map_err(err(Part::Bundle))?);
        let leaf = chain[0].as_ref();
        let id = crate::tls::spiffe_id(leaf, trust_domain).map_err(|e| BuildError {
            part: Part::Cert,
            message: format!(
                "the certificate has no SPIFFE id in trust domain {trust_domain:?} ({})",
                e.as_str()
            ),
        })?;
        let (not_before, not_after) = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| {
                (
                    c.validity().not_before.timestamp(),
                    c.validity().not_after.timestamp(),
                )
            })
            .map_err(|e| BuildError {
                part: Part::Cert,
                message: format!("unreadable certificate: {e}"),
            })?;
        let certified = Arc::new(
            rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                BuildError {
                    part: Part::Key,
                    message: format!("does not fit the certificate: {e}"),
                }
            })?,
        );
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| BuildError {
                    part: Part::Bundle,
                    message: e.to_string(),
                })?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(Part::Cert)(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified.clone(),
            )));
        server.alpn_protocols = crate::tls::ALPN.iter().map(|p| p.to_vec()).collect();
        let verifier = Arc::new(crate::tls::verify::MeshServerVerifier::new(
            roots,
            trust_domain.to_owned(),
        ));
        let client = |alpn: &[&[u8]]| -> Result<Arc<rustls::ClientConfig>, BuildError> {
            // Mesh hops are TLS 1.3 only.
            let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| err(Part::Cert)(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified.clone(),
                )));
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(c))
        };
        Ok(Self {
            id,
            trust_domain: trust_domain.to_owned(),
            not_before,
            not_after,
            server: Arc::new(server),
            client_h1: client(&[b"http/1.1"])?,
            client_h2: client(&[b"h2"])?,
            client_opaque: client(&[])?,
        })
    }

    /// Seconds left, from `now`.
    pub fn remaining(&self, now: i64) -> i64 {
        self.not_after - now
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What runs to keep the credentials fresh, and for which settings.
struct Running {
    settings: Identity,
    task: tokio::task::AbortHandle,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identity the apply path prepared: what to run once the configuration is committed.
pub enum Prepared {
    Unchanged,
    None,
    Files {
        settings: Identity,
        credentials: Arc<Credentials>,
        loaded: files::Loaded,
    },
    ControlPlane(Identity),
}

#[derive(Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Credentials>,
    running: Mutex<Option<Running>>,
    /// The `not_after` of the certificate last warned about (one warning per certificate).
    warned: AtomicI64,
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStore")
            .field(
                "current",
                &self.current.load().as_ref().map(|c| c.id.clone()),
            )
            .finish_non_exhaustive()
    }
}

impl IdentityStore {
    /// The credentials new connections use (None before the first certificate).
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load_full()
    }

    /// Identity is configured and no certificate is there yet (`/ready` waits).
    pub fn waiting(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
            && self.current.load().is_none()
    }

    /// Checks the configured identity and loads file credentials now, so that a bad set
    /// rejects the configuration (errors name the field and file).
    pub fn prepare(&self, settings: Option<&Identity>) -> Result<Prepared, String> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(settings) = settings else {
            return Ok(if running.is_some() {
                Prepared::None
            } else {
                Prepared::Unchanged
            });
        };
        if running.as_ref().is_some_and(|r| &r.settings == settings) {
            return Ok(Prepared::Unchanged);
        }
        match &settings.source {
            IdentitySource::Files { .. } => {
                let loaded = files::Loaded::read(settings)?;
                let credentials = loaded.build(settings).map_err(|e| loaded.describe(&e))?;
                Ok(Prepared::Files {
                    settings: settings.clone(),
                    credentials: Arc::new(credentials),
                    loaded,
                })
            }
            IdentitySource::ControlPlane => Ok(Prepared::ControlPlane(settings.clone())),
        }
    }

    /// Starts (or stops) the source the prepared identity needs.
    pub fn commit(self: &Arc<Self>, prepared: Prepared, proxy: &Arc<Proxy>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match prepared {
            Prepared::Unchanged => {}
            Prepared::None => {
                *running = None;
                self.current.store(None);
            }
            Prepared::Files {
                settings,
                credentials,
                loaded,
            } => {
                self.install(credentials, &settings, "files", &proxy.metrics);
                match files::watch(self.clone(), settings.clone(), loaded, proxy.clone()) {
                    Ok((task, watcher)) => {
                        *running = Some(Running {
                            settings,
                            task,
                            _watcher: Some(watcher),
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the identity files; they will not be reloaded");
                        let task = tokio::spawn(async {}).abort_handle();
                        *running = Some(Running {
                            settings,
                            task,
                            _watcher: None,
                        });
                    }
                }
            }
            Prepared::ControlPlane(settings) => {
                // A certificate for another trust domain is of no use: wait for a new one.
                if self
                    .current
                    .load()
                    .as_ref()
                    .is_some_and(|c| c.trust_domain != settings.trust_domain)
                {
                    self.current.store(None);
                }
                let task = tokio::spawn(csr::run(self.clone(), settings.clone(), proxy.clone()))
                    .abort_handle();
                *running = Some(Running {
                    settings,
                    task,
                    _watcher: None,
                });
            }
        }
    }

    /// Swaps in new credentials, counts the update and warns if they expire soon.
    pub(crate) fn install(
        &self,
        credentials: Arc<Credentials>,
        settings: &Identity,
        source: &'static str,
        metrics: &Metrics,
    ) {
        tracing::info!(
            identity = %credentials.id,
            source,
            expires_in_s = credentials.remaining(unix_now()),
            "mesh certificate loaded"
        );
        self.current.store(Some(credentials));
        count(metrics, source, "ok");
        self.check_expiry(settings.expiry_warning);
    }

    /// Logs a warning (once per certificate) when the certificate expires within `warning`.
    pub(crate) fn check_expiry(&self, warning: Duration) {
        let Some(c) = self.current.load_full() else {
            return;
        };
        let left = c.remaining(unix_now());
        let warning = i64::try_from(warning.as_secs()).unwrap_or(i64::MAX);
        if left <= warning && self.warned.swap(c.not_after, Ordering::Relaxed) != c.not_after {
            tracing::warn!(
                identity = %c.id,
                expires_in_s = left,
                "mesh certificate expires soon; renew it (remora-certs issue) or check the control plane's CA"
            );
        }
    }

    /// The expiry warning threshold of the running identity.
    pub fn expiry_warning(&self) -> Option<Duration> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.settings.expiry_warning)
    }
}

pub(crate) fn count(metrics: &Metrics, source: &'static str, result: &'static str) {
    metrics
        .identity_updates
        .get_or_create(&IdentityLabels { source, result })
        .inc();
}

/// Gauges read at scrape time: the certificate's expiry and whether it is within the
/// warning threshold.
pub fn write_metrics(store: &IdentityStore, out: &mut String) {
    use std::fmt::Write as _;
    let Some(c) = store.current() else {
        return;
    };
    let warning = store
        .expiry_warning()
        .map_or(i64::MAX, |w| i64::try_from(w.as_secs()).unwrap_or(i64::MAX));
    let expiring = u8::from(c.remaining(unix_now()) <= warning);
    let _ = writeln!(
        out,
        "# HELP remora_identity_certificate_expiry_timestamp_seconds When the mesh certificate expires (Unix time)\n\
         # TYPE remora_identity_certificate_expiry_timestamp_seconds gauge\n\
         remora_identity_certificate_expiry_timestamp_seconds {}\n\
         # HELP remora_identity_certificate_expiring 1 while the mesh certificate expires within identity.expiryWarning\n\
         # TYPE remora_identity_certificate_expiring gauge\n\
         remora_identity_certificate_expiring {expiring}",
        c.not_after
    );
}
