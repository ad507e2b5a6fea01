//! The files under `deploy/`: the Kubernetes manifests, the Grafana
//! dashboard and the Prometheus alerts, checked against the daemon itself.
//! The manifests are read as plain YAML (no cluster, no schemas here; CI
//! also validates them with kubernetes-validate): what is checked is what a
//! schema cannot see — the shipped config loads with the daemon's own
//! loader and agrees with the pods (ports, grace period, failover), the
//! Services, ServiceMonitors and PDBs select the pods they mean, and every
//! metric a dashboard panel or an alert names is one the daemon (or the
//! receiver) really exports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use yaml_rust2::{Yaml, YamlLoader};
use zoom_dept_sync::config::{AmqpSettings, Settings};
use zoom_dept_sync::ingest::signature::Secrets;
use zoom_dept_sync::ingest::{self, Ingest};
use zoom_fake::ScriptedFault;

use crate::helpers::{
    TestApp, amqp_url, engineers, event, eventually, groups_of, spawn_zoom, use_zoom,
};

/// Every metric of the daemon and the receiver starts with it.
const PREFIX: &str = "zoom_dept_sync_";

/// Metrics the alerts may use that other exporters provide.
const EXTERNAL_METRICS: [&str; 1] = [
    // RabbitMQ's rabbitmq_prometheus plugin, per-object metrics
    // (/metrics/per-object): ready + unacknowledged, labels vhost and queue.
    "rabbitmq_queue_messages",
];

/// Labels whose values are open-ended (whatever the mapping or Zoom says):
/// an equality matcher on them is not checked against the samples.
const OPEN_LABELS: [&str; 2] = ["department", "code"];

/// The daemon's worst case from SIGTERM to exit beyond
/// worker.shutdown_grace_secs: the consumer's cancel (2 s), handing the
/// rest back (2 s) and closing (4 x 1 s).
const SHUTDOWN_AFTER_GRACE_SECS: u64 = 8;
/// What terminationGracePeriodSeconds leaves beyond that.
const SHUTDOWN_MARGIN_SECS: u64 = 5;

/// Labels Prometheus adds to every scraped series (a ServiceMonitor sets
/// these; a plain scrape config at least job and instance).
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
    "endpoint",
];

/// BENCHMARKS.md, row 7 (re-run): the daemon's peak RSS.
const BENCHMARK_PEAK_RSS_MIB: f64 = 37.1;

const CONSUMER_SECRETS: [&str; 4] = [
    "ZOOM_ACCOUNT_ID",
    "ZOOM_CLIENT_ID",
    "ZOOM_CLIENT_SECRET",
    "AMQP_URL",
];
const INGEST_SECRETS: [&str; 2] = ["ZDS_INGEST_SECRET", "AMQP_URL"];

const ALERTS: [&str; 7] = [
    "ZoomDeptSyncDeadLetters",
    "ZoomDeptSyncNotReady",
    "ZoomDeptSyncNoSuccess",
    "ZoomDeptSyncQueueMetricsAbsent",
    "ZoomDeptSyncRateLimitStorm",
    "ZoomDeptSyncDailyLimitPause",
    "ZoomDeptSyncQuarantined",
];

// ---- the Kubernetes manifests -------------------------------------------

#[test]
fn the_kustomization_lists_every_manifest_and_every_file_it_names_exists() {
    let dir = k8s_dir();
    let k = kustomization();
    let resources: BTreeSet<String> = strings(&k["resources"]).into_iter().collect();
    assert!(
        !resources.is_empty(),
        "kustomization.yaml lists no resources"
    );
    for file in &resources {
        assert!(dir.join(file).is_file(), "{file}: listed, but no such file");
    }
    let manifests: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| (f.ends_with(".yaml") || f.ends_with(".yml")) && f != "kustomization.yaml")
        .collect();
    let unlisted: Vec<_> = manifests.difference(&resources).collect();
    assert!(
        unlisted.is_empty(),
        "manifests not in kustomization.yaml's resources: {unlisted:?}"
    );

    // The ConfigMap's files exist, and every file of config/ is in it.
    let mut generated = BTreeSet::new();
    for generator in array(&k["configMapGenerator"], "configMapGenerator") {
        for (key, file) in generator_files(generator) {
            assert!(
                dir.join(&file).is_file(),
                "configMapGenerator: {file} missing"
            );
            assert!(generated.insert(key.clone()), "two files with key {key}");
        }
    }
    for entry in std::fs::read_dir(dir.join("config")).expect("deploy/kubernetes/config") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            generated.contains(&name),
            "config/{name} is in no configMapGenerator"
        );
    }

    // The secrets' env files are git-ignored; their templates exist and
    // hold placeholders only.
    let ignored = read(&dir.join(".gitignore"));
    for generator in array(&k["secretGenerator"], "secretGenerator") {
        let name = str_of(&generator["name"], "secretGenerator name");
        for file in strings(&generator["envs"]) {
            assert!(
                ignored.lines().any(|l| gitignore_matches(l.trim(), &file)),
                "secret file {file} is not git-ignored by deploy/kubernetes/.gitignore"
            );
            let template = dir.join(format!("{file}.example"));
            let vars = env_file(&template);
            assert!(!vars.is_empty(), "{}: no variables", template.display());
            for (key, value) in &vars {
                assert!(
                    value.contains("REPLACE_ME"),
                    "{}: {key} is not a placeholder (REPLACE_ME)",
                    template.display()
                );
            }
            let wanted: &[&str] = match name {
                "zoom-dept-sync" => &CONSUMER_SECRETS,
                "zoom-dept-sync-ingest" => &INGEST_SECRETS,
                other => panic!("unexpected secretGenerator {other}"),
            };
            for key in wanted {
                assert!(
                    vars.contains_key(*key),
                    "{}: {key} missing",
                    template.display()
                );
            }
            if name == "zoom-dept-sync-ingest" {
                assert!(
                    !vars.keys().any(|k| k.starts_with("ZOOM_")),
                    "the receiver never calls Zoom: no ZOOM_* in its secret"
                );
            }
        }
    }

    // Both deployments' image is set in `images:`, at this version.
    let images = array(&k["images"], "images");
    for (file, doc) in resources_of_kind("Deployment") {
        for container in containers(&doc) {
            let image = str_of(&container["image"], "image");
            let entry = images
                .iter()
                .find(|i| i["name"] == image)
                .unwrap_or_else(|| {
                    panic!("{file}: image {image} is not in kustomization's images")
                });
            assert!(
                entry["newName"].is_string(),
                "images: {image} has no newName"
            );
            assert_eq!(
                entry["newTag"].as_str(),
                Some(env!("CARGO_PKG_VERSION")),
                "images: {image}'s newTag follows Cargo.toml's version"
            );
        }
    }
}

#[test]
fn every_manifest_has_an_api_version_a_kind_and_a_name() {
    let mut seen = BTreeSet::new();
    for (file, doc) in resources() {
        for key in ["apiVersion", "kind"] {
            assert!(
                doc[key].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: no {key}"
            );
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("{file}: no metadata.name"));
        assert!(
            seen.insert((doc["kind"].to_string(), name.to_owned())),
            "{file}: a second {} named {name}",
            doc["kind"]
        );
    }
    let kinds: BTreeSet<String> = resources()
        .iter()
        .map(|(_, d)| {
            format!(
                "{} {}",
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap()
            )
        })
        .collect();
    for wanted in [
        "apps/v1 Deployment",
        "v1 Service",
        "policy/v1 PodDisruptionBudget",
        "monitoring.coreos.com/v1 ServiceMonitor",
    ] {
        assert!(kinds.contains(wanted), "no {wanted} among {kinds:?}");
    }
}

#[test]
fn the_shipped_config_loads_and_fits_the_deployments() {
    let settings = shipped_settings();
    let consumer = deployment_running("run");
    let receiver = deployment_running("ingest");

    assert!(
        settings.amqp.single_active_consumer,
        "two replicas need amqp.single_active_consumer = true (one consumes, one stands by)"
    );
    assert_eq!(
        consumer["spec"]["replicas"], 2,
        "the consumer runs 2 replicas"
    );
    assert!(
        receiver["spec"]["replicas"].as_i64().unwrap_or(1) >= 2,
        "the receiver runs at least 2 replicas"
    );

    // The grace period outlasts the daemon's own worst case: the grace for
    // in-flight events, then the consumer's cancel (2 s), the hand-back
    // (2 s) and closing (4 x 1 s), with a margin.
    let grace = settings.worker.shutdown_grace_secs;
    let termination = consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("the consumer sets terminationGracePeriodSeconds");
    let needed = grace + SHUTDOWN_AFTER_GRACE_SECS + SHUTDOWN_MARGIN_SECS;
    assert!(
        termination >= needed,
        "terminationGracePeriodSeconds {termination} must be at least worker.shutdown_grace_secs \
         {grace} + {SHUTDOWN_AFTER_GRACE_SECS} s (the daemon's worst case) + {SHUTDOWN_MARGIN_SECS} s"
    );

    // Each listens on all interfaces, on its container's port.
    for (deployment, listen, what) in [
        (&consumer, settings.http.listen, "http.listen"),
        (&receiver, settings.ingest.listen, "ingest.listen"),
    ] {
        assert!(
            listen.ip().is_unspecified(),
            "{what} = {listen}: the probes and Prometheus come from outside the pod"
        );
        let container = &containers(deployment)[0];
        let ports: Vec<u64> = array(&container["ports"], "ports")
            .iter()
            .filter_map(|p| p["containerPort"].as_u64())
            .collect();
        assert!(
            ports.contains(&u64::from(listen.port())),
            "{what} = {listen} but the container ports are {ports:?}"
        );
    }

    // `--config` names the mounted ConfigMap's config.toml (departments.toml
    // beside it, as departments_file says).
    for deployment in [&consumer, &receiver] {
        let name = str_of(&deployment["metadata"]["name"], "name");
        let container = &containers(deployment)[0];
        let args = strings(&container["args"]);
        let config = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{name}: no --config"));
        let (dir, file) = config.rsplit_once('/').expect("an absolute path");
        let mount = array(&container["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}"));
        assert_eq!(
            mount["readOnly"], true,
            "{name}: the config is mounted read-only"
        );
        let volume = array(
            &deployment["spec"]["template"]["spec"]["volumes"],
            "volumes",
        )
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{name}: no volume {}", mount["name"]));
        let config_map = str_of(&volume["configMap"]["name"], "configMap volume");
        let keys: Vec<String> = config_map_files(config_map)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert!(
            keys.contains(&file.to_owned()),
            "{name}: {file} not in {keys:?}"
        );
        assert!(keys.contains(&"departments.toml".to_owned()), "{keys:?}");
    }
}

#[test]
fn the_deployments_are_probed_hardened_and_sized() {
    let (uid, gid) = dockerfile_user();
    let k = kustomization();
    let secret_generators: BTreeSet<String> = array(&k["secretGenerator"], "secretGenerator")
        .iter()
        .map(|g| str_of(&g["name"], "name").to_owned())
        .collect();
    let deployments = resources_of_kind("Deployment");
    assert_eq!(deployments.len(), 2, "the consumer and the receiver");
    let mut problems = Vec::new();
    for (file, d) in &deployments {
        let mut fail = |p: String| problems.push(format!("{file}: {p}"));
        let pod = &d["spec"]["template"]["spec"];
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        if !subset(&d["spec"]["selector"]["matchLabels"], labels) {
            fail("spec.selector does not select its own pod template".into());
        }
        if pod["automountServiceAccountToken"] != false {
            fail("automountServiceAccountToken: false (it never calls the API)".into());
        }
        if pod["enableServiceLinks"] != false {
            fail("enableServiceLinks: false (ZDS_* variables are config keys)".into());
        }
        let containers = containers(d);
        if containers.len() != 1 {
            fail(format!("{} containers, expected 1", containers.len()));
        }
        for c in &containers {
            let effective = |key: &str| {
                let own = &c["securityContext"][key];
                if own.is_null() {
                    pod["securityContext"][key].clone()
                } else {
                    own.clone()
                }
            };
            for (key, want) in [
                ("runAsNonRoot", Value::from(true)),
                ("runAsUser", Value::from(uid)),
                ("runAsGroup", Value::from(gid)),
            ] {
                if effective(key) != want {
                    fail(format!(
                        "securityContext.{key} is {}, want {want}",
                        effective(key)
                    ));
                }
            }
            if effective("seccompProfile")["type"] != "RuntimeDefault" {
                fail("seccompProfile.type: RuntimeDefault".into());
            }
            let sc = &c["securityContext"];
            if sc["allowPrivilegeEscalation"] != false {
                fail("allowPrivilegeEscalation: false".into());
            }
            if sc["readOnlyRootFilesystem"] != true {
                fail("readOnlyRootFilesystem: true".into());
            }
            if !strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_owned()) {
                fail("capabilities.drop: [ALL]".into());
            }

            for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                let get = &c[probe]["httpGet"];
                if get["path"] != path {
                    fail(format!("{probe} is not on {path}: {}", get["path"]));
                }
                if container_port(c, &get["port"]).is_none() {
                    fail(format!(
                        "{probe}'s port {} is no container port",
                        get["port"]
                    ));
                }
            }

            let resources = &c["resources"];
            for kind in ["requests", "limits"] {
                for what in ["cpu", "memory"] {
                    if resources[kind][what].as_str().is_none() {
                        fail(format!("resources.{kind}.{what} is not set"));
                    }
                }
            }
            let mem = |kind: &str| quantity(&resources[kind]["memory"]);
            let cpu = |kind: &str| quantity(&resources[kind]["cpu"]);
            if !(mem("limits") >= mem("requests") && cpu("limits") >= cpu("requests")) {
                fail("resources: limits below requests".into());
            }
            if mem("requests") < BENCHMARK_PEAK_RSS_MIB * 1024.0 * 1024.0 {
                fail(format!(
                    "memory request below the benchmark's peak RSS ({BENCHMARK_PEAK_RSS_MIB} MiB)"
                ));
            }

            // Secrets come as files (`X_FILE`), never as variables: out of
            // /proc/*/environ and `kubectl describe`.
            if c["envFrom"].as_array().is_some_and(|a| !a.is_empty()) {
                fail("envFrom: secrets are mounted as files, not variables".into());
            }
            for var in c["env"].as_array().into_iter().flatten() {
                if !var["valueFrom"]["secretKeyRef"].is_null() {
                    fail(format!(
                        "env {}: a secretKeyRef variable (mount it, set {}_FILE)",
                        var["name"], var["name"]
                    ));
                }
            }
            for (var, problem) in secret_file_problems(d, c, uid, gid, &secret_generators) {
                fail(format!("{var}: {problem}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Each gets only its own secrets, every key of its template as a file.
    for (command, secret) in [
        ("run", "zoom-dept-sync"),
        ("ingest", "zoom-dept-sync-ingest"),
    ] {
        let d = deployment_running(command);
        let c = &containers(&d)[0];
        let mounted: BTreeSet<String> = secret_files(&d, c)
            .into_iter()
            .map(|(_, secret_name, _)| secret_name)
            .collect();
        assert_eq!(
            mounted,
            BTreeSet::from([secret.to_owned()]),
            "`{command}` reads its secrets from the Secret {secret}"
        );
        let template = secret_template(secret);
        let set: BTreeSet<String> = secret_files(&d, c)
            .into_iter()
            .map(|(var, _, _)| var)
            .collect();
        for key in template.keys() {
            assert!(
                set.contains(&format!("{key}_FILE")),
                "`{command}`: {key} is in the Secret {secret} but no {key}_FILE names it"
            );
        }
    }
}

/// (variable, secret name, key) of each `*_FILE` variable of a container
/// that names a file in a mounted secret volume.
fn secret_files(deployment: &Value, container: &Value) -> Vec<(String, String, String)> {
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    let mut found = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = str_of(&var["name"], "env name");
        let Some(path) = name.strip_suffix("_FILE").and(var["value"].as_str()) else {
            continue;
        };
        let Some((dir, key)) = path.rsplit_once('/') else {
            continue;
        };
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == dir);
        let volume = mount.and_then(|m| {
            volumes
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == m["name"])
        });
        if let Some(secret) = volume.and_then(|v| v["secret"]["secretName"].as_str()) {
            found.push((name.to_owned(), secret.to_owned(), key.to_owned()));
        }
    }
    found
}

/// What is wrong with a container's `*_FILE` variables: each names
/// `<mountPath>/<KEY>` of a read-only secret volume (mode 0400, readable
/// through the pod's fsGroup) whose Secret a secretGenerator makes from a
/// template holding KEY, the variable's own name.
fn secret_file_problems(
    deployment: &Value,
    container: &Value,
    uid: u64,
    gid: u64,
    generators: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let pod = &deployment["spec"]["template"]["spec"];
    let mut problems = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = str_of(&var["name"], "env name").to_owned();
        let Some(secret_var) = name.strip_suffix("_FILE") else {
            continue;
        };
        let mut fail = |p: String| problems.push((name.clone(), p));
        let Some(path) = var["value"].as_str() else {
            fail("no value (a path)".into());
            continue;
        };
        let Some((dir, key)) = path.rsplit_once('/') else {
            fail(format!("{path} is not an absolute path"));
            continue;
        };
        if key != secret_var {
            fail(format!("names the key {key}, not {secret_var}"));
        }
        let Some(mount) = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == dir)
        else {
            fail(format!("nothing mounted at {dir}"));
            continue;
        };
        if mount["readOnly"] != true {
            fail(format!("{dir} is not mounted read-only"));
        }
        let Some(volume) = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
        else {
            fail(format!("no volume {}", mount["name"]));
            continue;
        };
        let Some(secret) = volume["secret"]["secretName"].as_str() else {
            fail(format!("{dir} is not a secret volume"));
            continue;
        };
        if !generators.contains(secret) {
            fail(format!("Secret {secret}: no secretGenerator makes it"));
            continue;
        }
        if volume["secret"]["defaultMode"].as_u64() != Some(0o400) {
            fail(format!(
                "secret volume {}: defaultMode {} (want 256, i.e. 0400)",
                volume["name"], volume["secret"]["defaultMode"]
            ));
        }
        // 0400 files belong to root; the kubelet gives them to fsGroup
        // (and adds group read), which is how user {uid} reads them.
        let fs_group = pod["securityContext"]["fsGroup"].as_u64();
        if fs_group != Some(gid) {
            fail(format!(
                "pod securityContext.fsGroup {fs_group:?}: want {gid} so user {uid} can read the 0400 files"
            ));
        }
        if !secret_template(secret).contains_key(key) {
            fail(format!("the Secret {secret}'s template has no key {key}"));
        }
    }
    problems
}

/// The keys of a secretGenerator's env file(s), from their templates.
fn secret_template(secret: &str) -> BTreeMap<String, String> {
    let k = kustomization();
    let generator = array(&k["secretGenerator"], "secretGenerator")
        .iter()
        .find(|g| g["name"] == secret)
        .unwrap_or_else(|| panic!("no secretGenerator {secret}"))
        .clone();
    strings(&generator["envs"])
        .into_iter()
        .flat_map(|file| env_file(&k8s_dir().join(format!("{file}.example"))))
        .collect()
}

/// The receiver's probes and /metrics are on `ingest.probe_listen`, a port
/// of their own: the kubelet probes it and Prometheus scrapes it (a
/// PodMonitor), but the Service that senders reach exposes only the webhook
/// port.
#[test]
fn the_receivers_probes_are_on_their_own_port_which_its_service_does_not_expose() {
    let settings = shipped_settings();
    let receiver = deployment_running("ingest");
    let container = &containers(&receiver)[0];
    let probes = settings.ingest.probe_listen;
    assert!(
        probes.ip().is_unspecified(),
        "ingest.probe_listen = {probes}: the kubelet and Prometheus come from outside the pod"
    );
    assert_ne!(probes.port(), settings.ingest.listen.port());
    let probe_port = u64::from(probes.port());
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = container_port(container, &container[probe]["httpGet"]["port"]);
        assert_eq!(
            port,
            Some(probe_port),
            "{probe} is not on ingest.probe_listen"
        );
    }
    for (file, service) in resources_of_kind("Service") {
        if !subset(
            &service["spec"]["selector"],
            &receiver["spec"]["template"]["metadata"]["labels"],
        ) {
            continue;
        }
        for port in array(&service["spec"]["ports"], "ports") {
            let target = container_port(container, &port["targetPort"]);
            assert_ne!(target, Some(probe_port), "{file} exposes the probe port");
            assert_eq!(
                target,
                Some(u64::from(settings.ingest.listen.port())),
                "{file}: only the webhook port"
            );
        }
    }
    let monitors: Vec<(String, Value)> = resources_of_kind("PodMonitor")
        .into_iter()
        .filter(|(_, m)| {
            subset(
                &m["spec"]["selector"]["matchLabels"],
                &receiver["spec"]["template"]["metadata"]["labels"],
            )
        })
        .collect();
    assert_eq!(monitors.len(), 1, "one PodMonitor scrapes the receiver");
    for (file, monitor) in &monitors {
        for endpoint in array(&monitor["spec"]["podMetricsEndpoints"], "endpoints") {
            assert_eq!(
                container_port(container, &endpoint["port"]),
                Some(probe_port),
                "{file}: scrapes ingest.probe_listen"
            );
            assert_eq!(endpoint["path"], "/metrics", "{file}");
        }
    }
}

#[test]
fn services_monitors_and_budgets_select_the_pods_they_mean() {
    let deployments = resources_of_kind("Deployment");
    let pods_selected = |selector: &Value| -> Vec<&Value> {
        deployments
            .iter()
            .map(|(_, d)| d)
            .filter(|d| subset(selector, &d["spec"]["template"]["metadata"]["labels"]))
            .collect()
    };
    let services = resources_of_kind("Service");
    assert_eq!(services.len(), 2, "the consumer's metrics, the receiver");
    for (file, service) in &services {
        let selected = pods_selected(&service["spec"]["selector"]);
        assert_eq!(
            selected.len(),
            1,
            "{file}: selects the pods of {} deployments, want exactly 1",
            selected.len()
        );
        let container = &containers(selected[0])[0];
        for port in array(&service["spec"]["ports"], "ports") {
            let target = &port["targetPort"];
            assert!(
                target.is_string(),
                "{file}: targetPort names a container port"
            );
            assert!(
                container_port(container, target).is_some(),
                "{file}: targetPort {target} is no port of {}",
                selected[0]["metadata"]["name"]
            );
        }
    }

    for (file, monitor) in resources_of_kind("ServiceMonitor") {
        let matching: Vec<&Value> = services
            .iter()
            .map(|(_, s)| s)
            .filter(|s| {
                subset(
                    &monitor["spec"]["selector"]["matchLabels"],
                    &s["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{file}: selects {} Services, want 1",
            matching.len()
        );
        let ports: Vec<&Value> = array(&matching[0]["spec"]["ports"], "ports")
            .iter()
            .map(|p| &p["name"])
            .collect();
        for endpoint in array(&monitor["spec"]["endpoints"], "endpoints") {
            assert!(
                ports.contains(&&endpoint["port"]),
                "{file}: endpoint port {} is not a port name of Service {} ({ports:?})",
                endpoint["port"],
                matching[0]["metadata"]["name"]
            );
            assert_eq!(endpoint["path"], "/metrics", "{file}");
        }
    }

    let budgets = resources_of_kind("PodDisruptionBudget");
    assert!(!budgets.is_empty(), "a PodDisruptionBudget");
    for (file, pdb) in &budgets {
        let selected = pods_selected(&pdb["spec"]["selector"]["matchLabels"]);
        assert_eq!(
            selected.len(),
            1,
            "{file}: selects {} deployments' pods",
            selected.len()
        );
        let replicas = selected[0]["spec"]["replicas"].as_i64().unwrap_or(1);
        assert_eq!(pdb["spec"]["minAvailable"], 1, "{file}: minAvailable 1");
        assert!(
            replicas > 1,
            "{file}: minAvailable 1 of {replicas} would block every drain"
        );
    }
    let consumer = deployment_running("run");
    assert!(
        budgets.iter().any(|(_, p)| {
            pods_selected(&p["spec"]["selector"]["matchLabels"])[0]["metadata"]["name"]
                == consumer["metadata"]["name"]
        }),
        "the consumer has a PodDisruptionBudget"
    );
}

// ---- dashboards and alerts against the real /metrics ---------------------

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_metrics_the_daemon_exports() {
    let daemon = daemon_metrics().await;
    let receiver = receiver_metrics().await;
    let exported = Exported::parse(&daemon).merge(Exported::parse(&receiver));
    for name in [
        "zoom_dept_sync_ready",
        "zoom_dept_sync_events_total",
        "zoom_dept_sync_ingest_requests_total",
    ] {
        assert!(
            exported.names.contains_key(name),
            "{name} not in\n{daemon}\n{receiver}"
        );
    }

    // The dashboard.
    let path = root().join("deploy/grafana/zoom-dept-sync.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).expect("the dashboard is JSON");
    let variables = array(&dashboard["templating"]["list"], "templating.list");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "DS_PROMETHEUS"
            && v["query"] == "prometheus"),
        "a templated Prometheus datasource variable DS_PROMETHEUS"
    );
    let defined: BTreeSet<String> = variables
        .iter()
        .map(|v| str_of(&v["name"], "variable name").to_owned())
        .collect();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let what = format!("variable {}", v["name"]);
        problems.extend(check_expr(&what, query, &exported, &mut used));
        problems.extend(undefined_variables(&what, query, &defined));
    }
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("(no title)");
        let what = format!("panel {title:?}");
        if !ids.insert(panel["id"].to_string()) {
            problems.push(format!("{what}: id {} used twice", panel["id"]));
        }
        if panel["gridPos"]["w"].as_u64().is_none() {
            problems.push(format!("{what}: no gridPos"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("{what}: datasource is not ${{DS_PROMETHEUS}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{what}: no query"));
        }
        for target in &targets {
            let what = format!("{what}, query {}", target["refId"]);
            let expr = target["expr"].as_str().unwrap_or_default();
            problems.extend(check_expr(&what, expr, &exported, &mut used));
            problems.extend(undefined_variables(&what, expr, &defined));
            if target["datasource"]["uid"] != "${DS_PROMETHEUS}" {
                problems.push(format!("{what}: datasource is not ${{DS_PROMETHEUS}}"));
            }
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for label in legend_labels(legend) {
                if !labels_available(expr, &exported).contains(&label) {
                    problems.push(format!(
                        "{what}: legend names label {label}, which the query's series lack"
                    ));
                }
            }
        }
    }
    // What the dashboard is for.
    for wanted in [
        "events_total",
        "dead_letters_total",
        "zoom_call_duration_seconds_bucket",
        "zoom_calls_total",
        "zoom_rate_effective_per_second",
        "zoom_rate_limited_total",
        "events_in_flight",
        "ready",
        "broker_reconnects_total",
        "ingest_requests_total",
    ] {
        if !used.contains(&format!("{PREFIX}{wanted}")) {
            problems.push(format!("no panel shows {PREFIX}{wanted}"));
        }
    }

    // The alerts.
    let mut alerts = BTreeSet::new();
    for rule in alert_rules() {
        let name = str_of(&rule["alert"], "alert").to_owned();
        let what = format!("alert {name}");
        let expr = rule["expr"].as_str().unwrap_or_default();
        problems.extend(check_expr(&what, expr, &exported, &mut BTreeSet::new()));
        alerts.insert(name);
    }
    for wanted in ALERTS {
        if !alerts.contains(wanted) {
            problems.push(format!("no alert {wanted}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_is_documented_and_has_a_firing_and_a_quiet_promtool_test() {
    let queue = shipped_settings().amqp.queue;
    let url = secret_template("zoom-dept-sync")["AMQP_URL"].clone();
    let vhost = match url.rsplit_once('/').map(|(_, v)| v) {
        None | Some("") => "/".to_owned(),
        Some(v) => v.replace("%2f", "/").replace("%2F", "/"),
    };
    let rules = alert_rules();
    for rule in &rules {
        let name = str_of(&rule["alert"], "alert");
        assert!(rule["for"].is_string(), "{name}: no `for`");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.len() > 20),
                "{name}: annotations.{key}"
            );
        }
        // The broker's queue metric names the queue the daemon consumes,
        // in the vhost of the consumer's AMQP_URL.
        let expr = str_of(&rule["expr"], "expr");
        for token in tokens(expr) {
            for (label, value) in &token.equals {
                match label.as_str() {
                    "queue" => assert_eq!(
                        value, &queue,
                        "{name}: queue label vs amqp.queue of config.toml"
                    ),
                    "vhost" => assert_eq!(
                        value, &vhost,
                        "{name}: vhost label vs AMQP_URL of secrets.env.example"
                    ),
                    _ => {}
                }
            }
        }
    }

    let tests = yaml_docs(&root().join("deploy/prometheus/alerts_test.yml"));
    let tests = &tests[0];
    assert!(
        strings(&tests["rule_files"]).contains(&"alerts.yml".to_owned()),
        "alerts_test.yml loads alerts.yml"
    );
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in array(&tests["tests"], "tests") {
        for check in array(&case["alert_rule_test"], "alert_rule_test") {
            let name = str_of(&check["alertname"], "alertname").to_owned();
            match check["exp_alerts"].as_array() {
                Some(alerts) if alerts.is_empty() => quiet.insert(name),
                _ => firing.insert(name),
            };
        }
    }
    for rule in &rules {
        let name = str_of(&rule["alert"], "alert").to_owned();
        assert!(
            firing.contains(&name),
            "alerts_test.yml: no case where {name} fires"
        );
        assert!(
            quiet.contains(&name),
            "alerts_test.yml: no case where {name} stays quiet"
        );
    }
}

/// The daemon's /metrics once every labelled family has a sample: one
/// event applied, then one dead-lettered with a Zoom code, which
/// quarantines (a window of 1). prometheus-client leaves a family without
/// samples out of the exposition altogether, `# TYPE` line included.
async fn daemon_metrics() -> String {
    // U0 (unused), U1, U2 in Engineering.
    let zoom = spawn_zoom(engineers(3)).await;
    let mut app = TestApp::spawn_with(|s| {
        use_zoom(s, &zoom);
        s.worker.quarantine_window = 1;
        s.worker.quarantine_threshold = 1;
    })
    .await;
    app.publish_json(event("deploy-1", "U1", Some("Engineering"), "Sales"))
        .await;
    eventually(
        "the first event is applied",
        Duration::from_secs(20),
        || async { groups_of(&zoom, "U1") == ["grp_sales"] },
    )
    .await;
    // `ready` follows /readyz at each scrape: 1 while consuming ...
    let (_, text) = app.http_get("/metrics").await;
    assert!(text.contains("\nzoom_dept_sync_ready 1\n"), "{text}");
    zoom.script(ScriptedFault::new(
        "PATCH",
        404,
        4130,
        "Group does not exist: grp_sales.",
    ));
    app.publish_json(event("deploy-2", "U2", Some("Engineering"), "Sales"))
        .await;
    eventually(
        "the daemon quarantines",
        Duration::from_secs(20),
        || async {
            app.http_get("/metrics")
                .await
                .1
                .contains("zoom_dept_sync_quarantined{code=\"4130\",department=\"Sales\"} 1")
        },
    )
    .await;
    let (status, text) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    // ... and 0 once quarantined (/readyz 503).
    assert_eq!(app.http_get("/readyz").await.0, 503);
    assert!(text.contains("\nzoom_dept_sync_ready 0\n"), "{text}");
    app.dead_letters(1).await;
    app.stop().await;
    text
}

/// The receiver's /metrics after one unsigned request (counted as
/// `bad_signature`; no broker needed for that).
async fn receiver_metrics() -> String {
    let amqp = AmqpSettings {
        url: amqp_url().into(),
        ..AmqpSettings::default()
    };
    let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
    let shutdown = CancellationToken::new();
    let server = ingest::serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(Ingest::new(&amqp, secrets)),
        shutdown.clone(),
    )
    .await
    .expect("receiver");
    let base = format!("http://{}", server.local_addr);
    let client = reqwest::Client::new();
    let status = client
        .post(format!("{base}/v1/events"))
        .body("{}")
        .send()
        .await
        .expect("POST /v1/events")
        .status();
    assert_eq!(status.as_u16(), 401);
    // On the probe listener: the webhook port serves /v1/... only.
    let text = client
        .get(format!("http://{}/metrics", server.probe_addr))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    shutdown.cancel();
    let _ = server.task.await;
    text
}

/// The series names a PromQL query can use, from an exposition: every
/// sample's name with the label names it carries, and for each `# TYPE`
/// line the names Prometheus stores (`_total` of a counter, `_bucket`,
/// `_sum`, `_count` of a histogram; `None`: no sample to tell the labels).
/// `values`: for each sample name, each label's values in the samples.
#[derive(Default)]
struct Exported {
    names: BTreeMap<String, Option<BTreeSet<String>>>,
    values: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exported {
    fn parse(text: &str) -> Self {
        let mut names: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        let mut values: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("# TYPE name kind");
                let series: Vec<String> = match kind {
                    "counter" => vec![format!("{family}_total")],
                    "histogram" | "gaugehistogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{family}{s}"))
                        .collect(),
                    "summary" => vec![
                        family.into(),
                        format!("{family}_sum"),
                        format!("{family}_count"),
                    ],
                    "info" => vec![format!("{family}_info")],
                    _ => vec![family.to_owned()],
                };
                for name in series {
                    names.entry(name).or_default();
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                let pairs = match line[end..].strip_prefix('{') {
                    Some(rest) => label_pairs(rest),
                    None => Vec::new(),
                };
                let sample = line[..end].to_owned();
                let own = values.entry(sample.clone()).or_default();
                for (label, value) in &pairs {
                    own.entry(label.clone()).or_default().insert(value.clone());
                }
                names
                    .entry(sample)
                    .or_default()
                    .get_or_insert_with(BTreeSet::new)
                    .extend(pairs.into_iter().map(|(label, _)| label));
            }
        }
        Self { names, values }
    }

    fn merge(mut self, other: Self) -> Self {
        for (name, labels) in other.names {
            let entry = self.names.entry(name).or_default();
            if let Some(labels) = labels {
                entry.get_or_insert_with(BTreeSet::new).extend(labels);
            }
        }
        for (name, labels) in other.values {
            let own = self.values.entry(name).or_default();
            for (label, values) in labels {
                own.entry(label).or_default().extend(values);
            }
        }
        self
    }
}

/// The labels of `a="x",b="y\"z"}`, with their values as written.
fn label_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '}' => break,
            '=' => {
                assert_eq!(chars.next(), Some('"'), "a quoted label value in {text}");
                let mut value = String::new();
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                    value.push(c);
                }
                pairs.push((std::mem::take(&mut name).trim().to_owned(), value));
            }
            ',' => {}
            c => name.push(c),
        }
    }
    pairs
}

/// Problems with one PromQL expression: names starting with `zoom_dept_sync_`
/// that are not exported, other metric names that are not allowed, label
/// matchers and groupings on labels the series lack, no metric of ours.
/// Adds the metrics it uses to `used`.
fn check_expr(
    what: &str,
    expr: &str,
    exported: &Exported,
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let tokens = tokens(expr);
    let ours: Vec<&Token> = tokens
        .iter()
        .filter(|t| t.ident.starts_with(PREFIX))
        .collect();
    if ours.is_empty() {
        problems.push(format!("{what}: names no {PREFIX}* metric: {expr}"));
    }
    for token in &tokens {
        let name = &token.ident;
        if name.starts_with(PREFIX) {
            used.insert(name.clone());
            match exported.names.get(name) {
                None => problems.push(format!(
                    "{what}: {name} is not exported (by the daemon's or the receiver's /metrics)"
                )),
                Some(Some(labels)) => {
                    for label in &token.matchers {
                        if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                            problems
                                .push(format!("{what}: {name} has no label {label} ({labels:?})"));
                        }
                    }
                    // label="value": a value the daemon really exports.
                    for (label, value) in &token.equals {
                        if TARGET_LABELS.contains(&label.as_str())
                            || OPEN_LABELS.contains(&label.as_str())
                            || value.contains('$')
                        {
                            continue;
                        }
                        let seen = exported.values.get(name).and_then(|l| l.get(label));
                        if !seen.is_some_and(|v| v.contains(value)) {
                            problems.push(format!(
                                "{what}: {name}{{{label}=\"{value}\"}}: no such value in /metrics ({seen:?})"
                            ));
                        }
                    }
                }
                Some(None) => {}
            }
        } else if name.starts_with("rabbitmq_") && !EXTERNAL_METRICS.contains(&name.as_str()) {
            problems.push(format!("{what}: {name} is not a known external metric"));
        }
    }
    let available = labels_available(expr, exported);
    for label in grouping_labels(expr) {
        if !available.contains(&label) {
            problems.push(format!("{what}: groups by {label}, which its series lack"));
        }
    }
    problems
}

/// Labels the series of an expression can carry: those of its metrics
/// (all of them, when one has no sample to tell), the target's, `le`.
fn labels_available(expr: &str, exported: &Exported) -> BTreeSet<String> {
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| (*s).to_owned()).collect();
    labels.insert("le".into());
    for token in tokens(expr) {
        match exported.names.get(&token.ident) {
            Some(Some(own)) => labels.extend(own.iter().cloned()),
            Some(None) => labels.extend(token.matchers.iter().cloned()),
            None if EXTERNAL_METRICS.contains(&token.ident.as_str()) => {
                labels.extend(token.matchers.iter().cloned());
            }
            None => {}
        }
    }
    labels
}

/// An identifier of a query, with the label names of its `{…}` matchers
/// and the (label, value) of its equality (`=`) matchers.
struct Token {
    ident: String,
    matchers: BTreeSet<String>,
    equals: Vec<(String, String)>,
}

/// The identifiers of a PromQL query outside string literals, `[ranges]`
/// and `$variables`: metric names, functions, keywords, label names.
fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut matchers = BTreeSet::new();
            let mut equals = Vec::new();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j < chars.len() && chars[j] == '{' {
                // label op "value", …
                j += 1;
                let mut name = String::new();
                let mut op = String::new();
                while j < chars.len() && chars[j] != '}' {
                    match chars[j] {
                        '"' | '\'' | '`' => {
                            let end = skip_string(&chars, j);
                            let label = name.trim().to_owned();
                            if !label.is_empty() {
                                matchers.insert(label.clone());
                                if op == "=" {
                                    let value = chars[j + 1..end.saturating_sub(1).max(j + 1)]
                                        .iter()
                                        .collect();
                                    equals.push((label, value));
                                }
                            }
                            name.clear();
                            op.clear();
                            j = end;
                            continue;
                        }
                        '=' | '!' | '~' => op.push(chars[j]),
                        ',' => {}
                        c => name.push(c),
                    }
                    j += 1;
                }
                i = j + 1;
            }
            tokens.push(Token {
                ident,
                matchers,
                equals,
            });
        } else if c.is_ascii_digit() {
            // A number or a duration (5m): no identifier.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    tokens
}

/// The index after the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The labels of every `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`,
/// `group_left (…)` and `group_right (…)`.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['(']) {
        let before = rest[..at].trim_end();
        let keyword = before
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default();
        let after = &rest[at + 1..];
        if matches!(
            keyword,
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            let end = after.find(')').expect("closing parenthesis");
            labels.extend(
                after[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        rest = after;
    }
    labels
}

/// `{{label}}` in a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// `$name` / `${name}` references that no templating variable defines.
fn undefined_variables(what: &str, query: &str, defined: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for part in query.split('$').skip(1) {
        let name: String = part
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with("__") && !defined.contains(&name) {
            problems.push(format!("{what}: ${name} is no templating variable"));
        }
    }
    problems
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for panel in array(&dashboard["panels"], "panels") {
        all.push(panel.clone());
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested.iter().cloned());
        }
    }
    all
}

fn alert_rules() -> Vec<Value> {
    let docs = yaml_docs(&root().join("deploy/prometheus/alerts.yml"));
    array(&docs[0]["groups"], "groups")
        .iter()
        .flat_map(|g| array(&g["rules"], "rules").clone())
        .collect()
}

// ---- reading the files ----------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, as JSON values (easier to walk).
fn yaml_docs(path: &Path) -> Vec<Value> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .iter()
        .map(|doc| to_json(doc, path))
        .collect()
}

fn to_json(yaml: &Yaml, path: &Path) -> Value {
    match yaml {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Null => Value::Null,
        Yaml::Array(items) => Value::Array(items.iter().map(|i| to_json(i, path)).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => panic!("{}: a key that is no scalar: {other:?}", path.display()),
                    };
                    (key, to_json(v, path))
                })
                .collect(),
        ),
        // An alias (`*name`) stands for what its anchor holds.
        Yaml::Alias(_) => Value::String("<alias>".into()),
        Yaml::BadValue => panic!("{}: a value YAML cannot represent", path.display()),
    }
}

fn kustomization() -> Value {
    yaml_docs(&k8s_dir().join("kustomization.yaml")).remove(0)
}

/// Every document of every resource file, with its file name.
fn resources() -> Vec<(String, Value)> {
    strings(&kustomization()["resources"])
        .into_iter()
        .flat_map(|file| {
            yaml_docs(&k8s_dir().join(&file))
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

fn resources_of_kind(kind: &str) -> Vec<(String, Value)> {
    resources()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind)
        .collect()
}

/// The Deployment whose container runs `zoom-dept-sync COMMAND`.
fn deployment_running(command: &str) -> Value {
    let mut found: Vec<Value> = resources_of_kind("Deployment")
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| containers(d).iter().any(|c| c["args"][0] == command))
        .collect();
    assert_eq!(found.len(), 1, "one Deployment runs `{command}`");
    found.remove(0)
}

fn containers(deployment: &Value) -> Vec<Value> {
    array(
        &deployment["spec"]["template"]["spec"]["containers"],
        "containers",
    )
    .clone()
}

/// The container port a probe or Service names (by name or number).
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    array(&container["ports"], "ports").iter().find_map(|p| {
        let matches = match port {
            Value::String(name) => p["name"] == name.as_str(),
            Value::Number(n) => p["containerPort"].as_u64() == n.as_u64(),
            _ => false,
        };
        matches.then(|| p["containerPort"].as_u64()).flatten()
    })
}

/// `selector`'s labels all in `labels`.
fn subset(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object().filter(|s| !s.is_empty()) else {
        return false;
    };
    selector.iter().all(|(k, v)| &labels[k] == v)
}

/// (key, file) of a configMapGenerator: `files: [path]` or `[key=path]`.
fn generator_files(generator: &Value) -> Vec<(String, String)> {
    strings(&generator["files"])
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, file)) => (key.to_owned(), file.to_owned()),
            None => (
                entry.rsplit('/').next().expect("a file name").to_owned(),
                entry,
            ),
        })
        .collect()
}

fn config_map_files(name: &str) -> Vec<(String, String)> {
    let k = kustomization();
    let generator = array(&k["configMapGenerator"], "configMapGenerator")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no configMapGenerator {name}"))
        .clone();
    generator_files(&generator)
}

/// The consumer's ConfigMap written out as it is mounted, loaded by the
/// daemon's own loader with stand-in secrets: the shipped config is valid.
fn shipped_settings() -> Settings {
    let consumer = deployment_running("run");
    let volume = &consumer["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"];
    let dir = tempfile::tempdir().expect("temp dir");
    for (key, file) in config_map_files(str_of(volume, "config volume")) {
        std::fs::copy(k8s_dir().join(&file), dir.path().join(&key)).expect("copy");
    }
    let env = |name: &str| match name {
        "ZOOM_ACCOUNT_ID" | "ZOOM_CLIENT_ID" | "ZOOM_CLIENT_SECRET" => Some("stand-in".to_owned()),
        "AMQP_URL" => Some("amqp://user:password@rabbitmq:5672/%2f".to_owned()),
        _ => None,
    };
    Settings::load(&dir.path().join("config.toml"), &env)
        .unwrap_or_else(|e| panic!("deploy/kubernetes/config/config.toml: {e}"))
}

/// `USER uid:gid` of the Dockerfile's runtime image.
fn dockerfile_user() -> (u64, u64) {
    let dockerfile = read(&root().join("Dockerfile"));
    let user = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the Dockerfile sets USER");
    let (uid, gid) = user
        .trim()
        .split_once(':')
        .unwrap_or((user.trim(), user.trim()));
    (
        uid.parse().expect("a numeric uid in USER"),
        gid.parse().expect("a numeric gid in USER"),
    )
}

/// KEY=VALUE lines of an env file (comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", path.display()));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A .gitignore line that ignores `file` (exact, or `*.ext`).
fn gitignore_matches(pattern: &str, file: &str) -> bool {
    pattern == file
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| !suffix.contains('/') && file.ends_with(suffix))
}

/// A Kubernetes quantity in base units: `500m` CPU = 0.5, `64Mi` = 64 × 2^20.
fn quantity(value: &Value) -> f64 {
    let text = value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string());
    let units = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("m", 1e-3),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().expect("a number") * factor;
        }
    }
    text.parse()
        .unwrap_or_else(|_| panic!("not a quantity: {text}"))
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {value}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {value}"))
}
