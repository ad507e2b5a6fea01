//! The daemon as a child process, for signals and `kill -9`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::{ACCOUNT_ID, CLIENT_ID, CLIENT_SECRET, amqp_url};

pub struct DaemonProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DaemonProcess {
    /// Starts `zoom-dept-sync run` with `config`; secrets and the broker URL
    /// come from the environment, as in production. Logs go to a file.
    pub fn start(config: &str) -> Self {
        Self::start_with_args(config, &[])
    }

    /// As [`DaemonProcess::start`], with more command-line arguments.
    pub fn start_with_args(config: &str, args: &[&str]) -> Self {
        Self::start_against(config, args, &amqp_url())
    }

    /// As [`DaemonProcess::start_with_args`], against another broker URL.
    pub fn start_against(config: &str, args: &[&str], amqp: &str) -> Self {
        Self::start_with_env(config, args, &[("AMQP_URL", Some(amqp))])
    }

    /// As [`DaemonProcess::start_with_args`], with the environment changed:
    /// `(name, Some(value))` sets a variable, `(name, None)` leaves one of
    /// the usual ones (`AMQP_URL`, the `ZOOM_*` secrets) unset.
    pub fn start_with_env(config: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Self {
        Self::start_logging_to(config, args, env, None)
    }

    /// As [`DaemonProcess::start_with_env`]; with `pipe`, stdout and stderr
    /// go to it instead of the log file (a test closes its other end).
    pub fn start_logging_to(
        config: &str,
        args: &[&str],
        env: &[(&str, Option<&str>)],
        pipe: Option<std::io::PipeWriter>,
    ) -> Self {
        let mut vars: BTreeMap<String, String> = [
            ("AMQP_URL", amqp_url().as_str()),
            ("ZOOM_ACCOUNT_ID", ACCOUNT_ID),
            ("ZOOM_CLIENT_ID", CLIENT_ID),
            ("ZOOM_CLIENT_SECRET", CLIENT_SECRET),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (name, value) in env {
            match value {
                Some(value) => vars.insert((*name).to_owned(), (*value).to_owned()),
                None => vars.remove(*name),
            };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_zoom-dept-sync"))
            .args(args)
            .args(["run", "--config"])
            .arg(&config_path)
            .env_clear()
            .envs(&vars)
            .stdin(Stdio::null())
            .stdout(match &pipe {
                Some(pipe) => Stdio::from(pipe.try_clone().expect("pipe")),
                None => Stdio::null(),
            })
            .stderr(match pipe {
                Some(pipe) => Stdio::from(pipe),
                None => Stdio::from(File::create(&log).expect("log file")),
            })
            .spawn()
            .expect("start the daemon");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; its exit code (`None`: killed by a signal).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
