//! The `zoom-fake` program: what an operator running the demo sees.

/// A misspelt seed key exits 2 with one line naming the key and the file.
#[test]
fn a_bad_seed_file_exits_2_with_one_line_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = dir.path().join("seed.toml");
    std::fs::write(&seed, "[[groups]]\nid = \"g\"\nnmae = \"G\"\n").expect("write seed");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_zoom-fake"))
        .arg("--seed")
        .arg(&seed)
        .output()
        .expect("zoom-fake runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("nmae") && stderr.contains("seed.toml"),
        "{stderr}"
    );
}
