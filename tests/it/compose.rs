//! docker-compose.yml and the shipped broker settings: RabbitMQ's ports are
//! published on loopback only (guest/guest must not face the network), and
//! the broker configs the repository ships cap message size the same way.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// The `max_message_size` every shipped broker config sets: 1 MiB, far
/// above a 64 KiB event's dead letter or audit record, and small enough
/// that `amqp.prefetch` (32) of them fit the pod's 128 Mi (BENCHMARKS.md).
const SHIPPED_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Yaml {
    let path = root().join("docker-compose.yml");
    YamlLoader::load_from_str(&read(&path))
        .expect("docker-compose.yml parses")
        .remove(0)
}

/// The host address of one `ports` entry: short syntax
/// `[HOST_IP:]HOST:CONTAINER[/PROTO]`, or long syntax with `host_ip`.
fn host_ip(entry: &Yaml) -> Option<String> {
    match entry {
        Yaml::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            (parts.len() == 3).then(|| parts[0].to_owned())
        }
        Yaml::Hash(_) => entry["host_ip"].as_str().map(str::to_owned),
        _ => None,
    }
}

#[test]
fn rabbitmq_publishes_its_ports_on_loopback_only() {
    let compose = compose();
    let rabbitmq = &compose["services"]["rabbitmq"];
    // No profile: it runs with every profile (demo and zoom).
    assert!(
        rabbitmq["profiles"].is_badvalue(),
        "rabbitmq has no profile"
    );
    let ports = rabbitmq["ports"]
        .as_vec()
        .expect("rabbitmq publishes ports");
    assert!(!ports.is_empty());
    for entry in ports {
        assert_eq!(
            host_ip(entry).as_deref(),
            Some("127.0.0.1"),
            "rabbitmq port {entry:?} must bind 127.0.0.1"
        );
    }
}

/// `max_message_size = N` in a rabbitmq.conf text.
fn max_message_size(conf: &str) -> Option<u64> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(key, _)| key.trim() == "max_message_size")
        .and_then(|(_, value)| value.trim().parse().ok())
}

#[test]
fn the_shipped_broker_configs_cap_message_size() {
    let compose = compose();
    let volumes = compose["services"]["rabbitmq"]["volumes"]
        .as_vec()
        .expect("rabbitmq volumes");
    let conf = volumes
        .iter()
        .filter_map(Yaml::as_str)
        .find_map(|v| {
            let (source, target) = v.split_once(':')?;
            target
                .starts_with("/etc/rabbitmq/conf.d/")
                .then(|| source.to_owned())
        })
        .expect("compose mounts a file into /etc/rabbitmq/conf.d/");
    let compose_conf = read(&root().join(conf));
    assert_eq!(
        max_message_size(&compose_conf),
        Some(SHIPPED_MAX_MESSAGE_SIZE)
    );

    let k8s = read(&root().join("deploy/kubernetes/rabbitmq/rabbitmq.conf"));
    assert_eq!(max_message_size(&k8s), Some(SHIPPED_MAX_MESSAGE_SIZE));
}
