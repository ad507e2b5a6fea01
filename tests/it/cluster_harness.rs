//! A three-node RabbitMQ cluster on this machine, for the tests that prove
//! the daemon runs on the cluster it recommends (issue 23). The nodes are
//! run by `tests/support/rabbitmq-cluster.sh`; this wrapper finds their
//! free ports, names their directory and stops them when dropped. The
//! script's reaper stops them too when the test process dies first
//! (a panic that aborts, a killed run), so no node outlives a run.
//!
//! Each node listens on 127.0.0.1 only, so `guest` may log in: RabbitMQ
//! lets it in over loopback by default (`loopback_users`,
//! https://www.rabbitmq.com/docs/access-control#loopback-users).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::process::Command;

use crate::helpers::free_local_port;

/// The RabbitMQ server the script starts the nodes with.
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// The node letters the script knows, by index.
const LETTERS: [char; 3] = ['a', 'b', 'c'];

/// Held by every cluster test: three nodes boot on two cores in ~15 s,
/// two clusters at once would double that and time out.
pub static CLUSTER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("this machine cannot run a RabbitMQ cluster: {0} is missing")]
    Missing(PathBuf),
    #[error("could not run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error("`rabbitmq-cluster.sh {args}` failed ({status}):\n{stderr}")]
    Failed {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`rabbitmq-cluster.sh {args}` answered {answer:?}, not a node letter")]
    NotANode { args: String, answer: String },
}

/// The script that runs the nodes.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rabbitmq-cluster.sh")
}

/// Whether this machine can run a cluster: the script and RabbitMQ's own
/// server script are there. A cluster test that cannot run must fail,
/// not pass unseen, so [`RabbitCluster::start`] panics with this error.
pub fn can_run_cluster() -> Result<(), ClusterError> {
    for needed in [script(), PathBuf::from(RABBITMQ_SERVER)] {
        if !needed.is_file() {
            return Err(ClusterError::Missing(needed));
        }
    }
    Ok(())
}

/// Three nodes `zds-<tag>-{a,b,c}@localhost`, clustered, each on its own
/// free AMQP port. Node `i` is letter `a`, `b`, `c` for 0, 1, 2.
pub struct RabbitCluster {
    dir: PathBuf,
    ports: [u16; 3],
}

impl RabbitCluster {
    /// Starts the three nodes and joins `b` and `c` to `a`. Panics when the
    /// machine cannot run a cluster or the nodes do not come up.
    pub async fn start() -> Self {
        if let Err(missing) = can_run_cluster() {
            panic!("{missing} (issue 23's cluster tests need RabbitMQ installed)");
        }
        let cluster = Self {
            dir: std::env::temp_dir().join(unique_tag()),
            ports: [0; 3].map(|_| free_local_port().port()),
        };
        let dist = [0; 3].map(|_| free_local_port().port().to_string());
        let mut args: Vec<String> = cluster.ports.iter().map(u16::to_string).collect();
        args.extend(dist);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = cluster.run("start", &args).await {
            drop(cluster); // stops what did start, before the panic
            panic!("the cluster did not start: {e}");
        }
        cluster
    }

    /// The AMQP URL of node `i`, vhost `/`.
    pub fn url(&self, i: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.ports[i])
    }

    /// All three nodes' URLs, `a` first.
    pub fn urls(&self) -> Vec<String> {
        (0..LETTERS.len()).map(|i| self.url(i)).collect()
    }

    /// SIGKILLs node `i`'s Erlang VM (a crash, no goodbye to its peers) and
    /// returns once it is gone.
    pub async fn kill(&self, i: usize) {
        self.on_node("kill", i).await;
    }

    /// Starts node `i` again after [`kill`](Self::kill) or
    /// [`stop_node`](Self::stop_node); returns once it runs and its peers
    /// list it as running.
    pub async fn restart(&self, i: usize) {
        self.on_node("restart", i).await;
    }

    /// Stops node `i` gracefully (`rabbitmqctl stop`), as in a rolling restart.
    pub async fn stop_node(&self, i: usize) {
        self.on_node("stop-node", i).await;
    }

    /// The index of the node that leads quorum queue `queue` in vhost `/`.
    pub async fn leader(&self, queue: &str) -> usize {
        let answer = self.expect("leader", &[queue]).await;
        letter_index(&answer).unwrap_or_else(|| {
            panic!(
                "{}",
                ClusterError::NotANode {
                    args: format!("leader {queue}"),
                    answer,
                }
            )
        })
    }

    /// The indices of the nodes a running member lists as running.
    pub async fn running(&self) -> Vec<usize> {
        let answer = self.expect("running", &[]).await;
        answer
            .chars()
            .map(|c| letter_index(&c.to_string()).expect("a node letter"))
            .collect()
    }

    async fn on_node(&self, command: &str, i: usize) {
        self.expect(command, &[&LETTERS[i].to_string()]).await;
    }

    async fn expect(&self, command: &str, args: &[&str]) -> String {
        match self.run(command, args).await {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `script command DIR args…` and returns what it printed.
    async fn run(&self, command: &str, args: &[&str]) -> Result<String, ClusterError> {
        let output = Command::new(script())
            .arg(command)
            .arg(&self.dir)
            .args(args)
            .env("OWNER_PID", std::process::id().to_string())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| ClusterError::Spawn {
                script: script(),
                source,
            })?;
        checked(command, args, output)
    }
}

impl Drop for RabbitCluster {
    /// Stops all three nodes and deletes their data. Blocking: a drop
    /// cannot await, and the nodes must be gone before the next test.
    fn drop(&mut self) {
        let stopped = std::process::Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .output();
        match stopped {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stopping the cluster in {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("could not stop the cluster: {e}"),
        }
    }
}

fn checked(command: &str, args: &[&str], output: Output) -> Result<String, ClusterError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    Err(ClusterError::Failed {
        args: std::iter::once(command)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn letter_index(answer: &str) -> Option<usize> {
    LETTERS.iter().position(|l| answer == l.to_string())
}

/// The cluster's directory name, which is also its node names' tag: short,
/// and unique per process and cluster, so parallel runs do not clash.
fn unique_tag() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "c{}n{}r{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        fastrand::u16(..)
    )
}
