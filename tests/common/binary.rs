//! The real binary as a child process: `serve --demo` on port 0, read its address off stdout.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Starts `switchyard serve --demo` (simulated upstreams answering at once) with the config file
/// `cfg`, from the crate directory; returns the child and its `host:port`.
pub fn spawn_demo(cfg: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--demo-latency-ms", "0", "--listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    (child, addr)
}
