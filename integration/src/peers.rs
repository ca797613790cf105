//! The real peers the tests drive: curl, nghttp, and the project's Python scripts in
//! `integration/peers/` (run with the `.venv-tools` interpreter that `.ci/install-tools`
//! creates).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// The Python interpreter with grpcio, h2 and websockets installed.
pub fn python() -> PathBuf {
    let venv = repo_root().join(".venv-tools/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run .ci/install-tools first",
        venv.display()
    );
    venv
}

pub fn peer_script(name: &str) -> PathBuf {
    repo_root().join("integration/peers").join(name)
}

/// Runs a command, failing the test with its output if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `curl -sS` with extra args; returns (stdout, stderr, success).
pub fn curl(args: &[&str]) -> (String, String, bool) {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// `curl -i` with `args`: the status code (0 when there was no answer) and the whole
/// response text with curl's own messages.
pub fn curl_status(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-i"];
    all.extend_from_slice(args);
    let (out, err, _) = curl(&all);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, format!("{out}{err}"))
}

/// A Python server peer: started with `--port 0`, its port read from `LISTENING <port>`.
pub struct PyServer {
    child: std::process::Child,
    pub port: u16,
}

impl PyServer {
    pub fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(peer_script(script))
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("{script} did not report LISTENING");
        };
        Self { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python client peer; asserts it exits 0 and returns its JSON-lines output.
pub fn py_client(script: &str, args: &[&str]) -> String {
    let out = run(Command::new(python()).arg(peer_script(script)).args(args));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `promtool check metrics` on an exposition; (clean, promtool's output).
pub fn promtool(text: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!(
        "remora-metrics-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::write(&path, text).expect("write metrics");
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display())));
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A listener with a backlog of one that never accepts, its queue already full: connects to
/// it hang until the connector's timeout (the kernel drops further SYNs). Keep the returned
/// value alive for as long as the address must stay in that state.
pub fn unaccepting_listener() -> (
    (socket2::Socket, Vec<std::net::TcpStream>),
    std::net::SocketAddr,
) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let fill: Vec<_> = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    ((socket, fill), addr)
}
