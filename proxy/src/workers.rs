//! Connection workers, one per core like nginx's: each is a thread running its own
//! single-threaded tokio runtime, and every accepted connection lives on one worker for its
//! whole life, with the upstream connections it opens. No work stealing and no cross-thread
//! wake-ups on the request path; idle upstream connections are pooled per worker (see
//! [`current`]). The main runtime keeps the accept loops, the admin server, the file watcher
//! and the control stream.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's worker index: 0 on the main runtime and other threads, 1..=n on workers.
    static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts `n` worker threads (once per process; `n < 2` starts none and connections stay
/// on the main runtime). Each runs until the process exits.
pub fn start(n: usize) -> std::io::Result<()> {
    if n < 2 || WORKERS.get().is_some() {
        return Ok(());
    }
    let mut handles = Vec::with_capacity(n);
    for i in 1..=n {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new()
            .name(format!("remora-worker-{i}"))
            .spawn(move || {
                INDEX.with(|c| c.set(i));
                runtime.block_on(std::future::pending::<()>());
            })?;
    }
    let _ = WORKERS.set(handles);
    Ok(())
}

/// How many pools an endpoint keeps idle connections in: one per worker plus the main one.
pub fn slots() -> usize {
    WORKERS.get().map_or(0, Vec::len) + 1
}

/// The calling thread's slot in per-worker state (0 outside the workers).
pub fn current() -> usize {
    INDEX.with(std::cell::Cell::get)
}

/// Hands an accepted connection to the next worker (or keeps it here when there are
/// none) and runs `serve` on it there. The socket is registered with the worker's own
/// reactor, not the accepting runtime's, so its readiness events are delivered on the
/// thread that serves it.
pub fn spawn_connection<F, Fut>(stream: tokio::net::TcpStream, serve: F)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(handles) = WORKERS.get().filter(|h| !h.is_empty()) else {
        drop(tokio::spawn(serve(stream)));
        return;
    };
    let std_stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "cannot hand the connection to a worker; closing it");
            return;
        }
    };
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % handles.len();
    drop(handles[i].spawn(async move {
        match tokio::net::TcpStream::from_std(std_stream) {
            Ok(stream) => serve(stream).await,
            Err(e) => tracing::debug!(error = %e, "worker cannot register the connection"),
        }
    }));
}
