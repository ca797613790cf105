//! The README's first command: `remora-demo` brings up a working mesh, a pushed policy takes
//! effect, and Ctrl-C stops every process it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use remora_integration::peers::curl;
use remora_integration::remora::workspace_binary;
use remora_integration::{control, eventually};

#[test]
fn the_demo_runs_a_mesh_follows_a_push_and_cleans_up_on_ctrl_c() {
    let demo = workspace_binary("remora-integration", "remora-demo");
    let mut child = Command::new(demo)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start remora-demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let mut ready = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        ready |= line.contains("Ctrl-C stops everything");
        printed.push(line);
        if ready {
            break;
        }
    }
    assert!(ready, "the demo did not come up:\n{}", printed.join("\n"));
    let text = printed.join("\n");
    let canary = text
        .split_whitespace()
        .find(|w| w.ends_with("canary-100.yaml"))
        .expect("the demo prints the policy files")
        .to_owned();

    // Through the mesh: web's sidecar → web → web's sidecar → an orders sidecar → orders.
    let (out, _, ok) = curl(&["-s", "localhost:4140/"]);
    assert!(ok && out.contains("\"servedBy\":\"orders-"), "{out}");
    let (out, _, _) = curl(&["-s", "-H", "x-canary: 1", "localhost:4140/"]);
    assert!(out.contains("\"servedBy\":\"orders-v2\""), "{out}");

    // Push the 100% canary with the printed command: every request then reaches v2.
    let pushed = Command::new(control::binary())
        .args(["apply", "-f", &canary, "--server", "http://127.0.0.1:9902"])
        .output()
        .expect("remora-control apply");
    assert!(pushed.status.success(), "{}", control::text(&pushed));
    eventually("traffic follows the push", Duration::from_secs(10), || {
        (0..10)
            .all(|_| curl(&["-s", "localhost:4140/"]).0.contains("orders-v2"))
            .then_some(())
    });

    // Ctrl-C: exit 0, and nothing it started is left listening.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = eventually("the demo exits", Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    for port in [4140, 4141, 4142, 7001, 9090, 9901, 9902] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after the demo stopped"
        );
    }
}
