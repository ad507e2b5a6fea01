//! The documentation stays true to the code and to itself: links and
//! anchors resolve, the README stays short and gives the command CI runs,
//! the configuration reference lists exactly the keys the config structs
//! accept, and every `ZDS_` variable it names is one the code reads.
//! No broker needed: these read files only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use zoom_dept_sync::config::INGEST_SECRET_VAR;
use zoom_dept_sync::config::keys::{accepted_keys, env_var};

/// The README is the front page: what it is, the demo, the test command,
/// links. Anything longer belongs in `docs/`.
const README_MAX_LINES: usize = 250;
/// A line longer than this is a paragraph nobody can review in a diff.
const MAX_LINE_CHARS: usize = 1000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// README.md, ARCHITECTURE.md and every Markdown file under docs/.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The lines of a Markdown text outside fenced code blocks, with their
/// numbers (1-based).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// `line` with its code spans removed (a span opens with a run of
/// backticks and closes with a run of the same length).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].bytes().take_while(|&b| b == b'`').count();
        let after = &rest[start + run..];
        let fence = "`".repeat(run);
        match after.find(&fence) {
            Some(end) => rest = &after[end + run..],
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor a Markdown file defines, with GitHub's `-1`, `-2` suffixes
/// for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// The inline link targets of a Markdown text, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find([')', ' ']).unwrap_or(after.len());
            found.push((number, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    found
}

/// Why `target`, linked from `file`, does not resolve; `None` when it does.
fn broken(file: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("a file's directory").join(path)
    };
    if !resolved.exists() {
        return Some(format!("{} does not exist", resolved.display()));
    }
    let fragment = fragment?;
    if resolved.extension().is_none_or(|e| e != "md") {
        return Some(format!("#{fragment} on a file that is not Markdown"));
    }
    if anchors(&read(&resolved)).contains(fragment) {
        None
    } else {
        Some(format!(
            "{} has no heading #{fragment}",
            relative(&resolved)
        ))
    }
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut failures = Vec::new();
    for file in doc_files() {
        for (line, target) in links(&read(&file)) {
            if let Some(why) = broken(&file, &target) {
                failures.push(format!("{}:{line}: ({target}): {why}", relative(&file)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "broken links:\n{}",
        failures.join("\n")
    );
}

#[test]
fn no_line_is_over_1000_characters() {
    let mut failures = Vec::new();
    for file in doc_files() {
        for (i, line) in read(&file).lines().enumerate() {
            let chars = line.chars().count();
            if chars > MAX_LINE_CHARS {
                failures.push(format!("{}:{}: {chars} characters", relative(&file), i + 1));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "lines too long:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_readme_is_at_most_250_lines() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; move the detail to docs/"
    );
}

/// The `cargo test` line `.ci/run` runs, and the `AMQP_URL` it defaults to.
fn ci_test_command() -> (String, String) {
    let ci = read(&root().join(".ci/run"));
    let after_step = ci
        .split("step \"cargo test")
        .nth(1)
        .expect(".ci/run has a `step \"cargo test…\"`");
    let command = after_step
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo test"))
        .expect("a cargo test line after the step")
        .to_owned();
    let url = ci
        .split("AMQP_URL=\"${AMQP_URL:-")
        .nth(1)
        .and_then(|rest| rest.split("}\"").next())
        .expect(".ci/run exports a default AMQP_URL")
        .to_owned();
    (command, url)
}

/// The README's `### Tests` section, up to the next heading.
fn readme_tests_section() -> String {
    let readme = read(&root().join("README.md"));
    let start = readme.find("\n### Tests\n").expect("README has ### Tests");
    let body = &readme[start + "\n### Tests\n".len()..];
    let end = body.find("\n#").unwrap_or(body.len());
    body[..end].to_owned()
}

#[test]
fn the_readme_gives_the_test_command_ci_runs() {
    let (command, url) = ci_test_command();
    let expected = format!("AMQP_URL={url} {command}");
    let section = readme_tests_section();
    assert!(
        section.lines().any(|l| l.trim() == expected),
        "README's Tests section should give `{expected}` (what .ci/run runs); it has:\n{section}"
    );
}

/// The keys in the first column of the tables of docs/configuration.md
/// whose header starts with `key`, each with its `env var` cell.
fn documented_keys() -> Vec<(String, String)> {
    let text = read(&root().join("docs/configuration.md"));
    let mut keys = Vec::new();
    let mut in_key_table = false;
    for (_, line) in prose_lines(&text) {
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.first() == Some(&"key") {
            in_key_table = true;
            continue;
        }
        if !in_key_table || cells.first().is_some_and(|c| c.starts_with("---")) {
            continue;
        }
        let key = cells[0].trim_matches('`').to_owned();
        let env = cells.get(1).unwrap_or(&"").trim_matches('`').to_owned();
        keys.push((key, env));
    }
    keys
}

#[test]
fn the_configuration_reference_lists_exactly_the_accepted_keys() {
    let accepted: BTreeSet<String> = accepted_keys().into_iter().collect();
    let rows = documented_keys();
    let documented: BTreeSet<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty(),
        "keys the config structs accept but docs/configuration.md does not list: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "keys docs/configuration.md lists but the config structs refuse: {unknown:?}"
    );
    for (key, env) in &rows {
        assert!(
            env.starts_with(&env_var(key)),
            "docs/configuration.md gives {env:?} for {key}; the override is {}",
            env_var(key)
        );
    }
}

/// Every `ZDS_…` name in `text` (placeholders such as `ZDS_<SECTION>` and
/// trailing `__` dropped).
fn zds_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("ZDS_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = name.trim_end_matches('_');
        if name.len() > "ZDS".len() {
            names.insert(name.to_owned());
        }
    }
    names
}

/// The Rust sources that read environment variables: the daemon, the
/// examples and the benchmarks.
fn code_text() -> String {
    let mut text = String::new();
    let mut dirs = vec![
        root().join("src"),
        root().join("examples"),
        root().join("benches"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source dir") {
            let path = entry.expect("source entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&read(&path));
            }
        }
    }
    text
}

#[test]
fn every_zds_variable_the_docs_name_is_read_by_the_code() {
    let overrides: BTreeSet<String> = accepted_keys().iter().map(|k| env_var(k)).collect();
    let code = code_text();
    let read_by_code = |name: &str| {
        name == INGEST_SECRET_VAR
            || overrides.contains(name)
            // A key of the free-form `[departments]` table.
            || name.starts_with(&format!("{}__", env_var("departments")))
            || code.contains(&format!("\"{name}\""))
    };
    let mut failures = Vec::new();
    for file in doc_files() {
        for name in zds_names(&read(&file)) {
            // `<SECRET>_FILE`: any secret variable, from a file.
            let base = name.strip_suffix("_FILE").unwrap_or(&name);
            if !read_by_code(&name) && !read_by_code(base) {
                failures.push(format!("{}: {name}", relative(&file)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "ZDS_ variables no code reads:\n{}",
        failures.join("\n")
    );
}

/// The relative link targets of `file`, without their fragments.
fn link_paths(file: &Path) -> BTreeSet<String> {
    links(&read(file))
        .into_iter()
        .map(|(_, target)| target.split('#').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_readme_links_every_guide_and_the_index_every_decision() {
    let readme = link_paths(&root().join("README.md"));
    let index = link_paths(&root().join("docs/decisions/README.md"));
    let mut missing = Vec::new();
    for file in doc_files() {
        let path = relative(&file);
        let record = path
            .strip_prefix("docs/decisions/")
            .filter(|name| *name != "README.md");
        let listed = match record {
            _ if path == "README.md" => true,
            Some(name) => index.contains(name),
            None => readme.contains(&path),
        };
        if !listed {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "not linked from README.md (guides) or docs/decisions/README.md (records): {missing:?}"
    );
}
