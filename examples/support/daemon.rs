//! Starting the real binary for the benchmarks: a config file and a log in
//! `dir`, secrets and the broker URL in the environment, as in production.

use std::path::Path;
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
