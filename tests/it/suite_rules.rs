//! Rules the test suite keeps for itself (the item 6): no
//! hard-coded port (tests run side by side on one machine; a fixed port
//! collides), no fixed sleep of more than a second (to prove something
//! did not happen, wait on what would show it, or a second at most), and
//! one stand-in Zoom (zoom-fake; wiremock only for BambooHR's API).

use std::path::{Path, PathBuf};

/// The broker's ports come from `AMQP_URL`; 0 asks the OS for a free one.
const ALLOWED_PORTS: [&str; 3] = ["0", "5672", "15672"];

/// Where test code lives (ports); the benchmark's rows may pace a load
/// on purpose, so the sleep rule reads only the first two.
const ROOTS: [&str; 3] = ["tests", "examples/support", "benches/bench"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every line of test code, as `file:line` and the text.
fn test_code_lines(roots: &[&str]) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in roots {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found the test code: {files:?}");
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a test file");
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            lines.push((format!("{name}:{}", n + 1), line.to_owned()));
        }
    }
    lines
}

/// The ports that follow `host:` in `line`.
fn ports_after(line: &str, host: &str) -> Vec<String> {
    line.match_indices(host)
        .map(|(at, _)| {
            line[at + host.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|port| !port.is_empty())
        .collect()
}

#[test]
fn no_test_hard_codes_a_port() {
    let hosts = [["127.0.0.1", ":"].concat(), ["localhost", ":"].concat()];
    let offending: Vec<String> = test_code_lines(&ROOTS)
        .into_iter()
        .filter(|(_, line)| {
            hosts.iter().any(|host| {
                ports_after(line, host)
                    .iter()
                    .any(|p| !ALLOWED_PORTS.contains(&p.as_str()))
            })
        })
        .map(|(at, line)| format!("{at}: {}", line.trim()))
        .collect();
    assert!(
        offending.is_empty(),
        "hard-coded ports (use port 0 or helpers::free_local_port):\n{}",
        offending.join("\n")
    );
}

#[test]
fn no_test_sleeps_a_fixed_second_or_more() {
    let fixed = ["sleep(Duration::", "from_secs("].concat();
    let offending: Vec<String> = test_code_lines(&ROOTS[..2])
        .into_iter()
        .filter(|(_, line)| {
            ports_after(line, &fixed)
                .iter()
                .any(|secs| secs.parse::<u64>().is_ok_and(|s| s > 1))
        })
        .map(|(at, line)| format!("{at}: {}", line.trim()))
        .collect();
    assert!(
        offending.is_empty(),
        "fixed sleeps over a second (wait on a condition instead):\n{}",
        offending.join("\n")
    );
}

#[test]
fn zoom_fake_is_the_one_stand_in_zoom() {
    // BambooHR's API is not Zoom: its stand-in is the only wiremock one.
    let allowed = "tests/it/ingest_bamboohr.rs:";
    let needle = ["wire", "mock::"].concat();
    let offending: Vec<String> = test_code_lines(&ROOTS)
        .into_iter()
        .filter(|(at, line)| line.contains(&needle) && !at.starts_with(allowed))
        .map(|(at, line)| format!("{at}: {}", line.trim()))
        .collect();
    assert!(
        offending.is_empty(),
        "wiremock outside BambooHR's tests (use zoom-fake):\n{}",
        offending.join("\n")
    );
}

#[test]
fn the_port_reader_finds_a_fixed_port_and_lets_port_zero_through() {
    let host = ["127.0.0.1", ":"].concat();
    assert_eq!(ports_after(&format!("\"{host}8080\""), &host), ["8080"]);
    assert_eq!(ports_after(&format!("\"{host}0\""), &host), ["0"]);
    assert!(ports_after("no address here", &host).is_empty());
}
