//! Starting the real binary for the benchmarks: a config file and a log in
//! `dir`, secrets and the broker URL in the environment, as in production.
//! Also what every measuring program needs: the binary to measure, the
//! broker's URL, a free port, the daemon's peak RSS.

// Included by each example and the benchmark, which each use a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Starts `binary run` with `config` (written to `dir/<name>.toml`); its
/// log goes to `dir/<name>.log`.
pub fn start(binary: &Path, config: &str, amqp_url: &str, dir: &Path, name: &str) -> Child {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write config");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    // Allocator tuning, when the caller measures memory with it.
    let malloc: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with("MALLOC_"))
        .collect();
    Command::new(binary)
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .envs(malloc)
        .env("AMQP_URL", amqp_url)
        .env("ZOOM_ACCOUNT_ID", "bench")
        .env("ZOOM_CLIENT_ID", "bench")
        .env("ZOOM_CLIENT_SECRET", "bench")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start zoom-dept-sync (build it first, or set ZDS_BIN)")
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// `ZDS_BIN`, else the release build beside this program.
pub fn release_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("ZDS_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.ancestors().nth(3).expect("target dir");
    target.join("release").join("zoom-dept-sync")
}

/// `AMQP_URL`, else the local broker.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The peak RSS of process `pid` (`VmHWM`), in MiB; 0 when unreadable.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
