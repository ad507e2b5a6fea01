//! Secrets from the environment or from a file it names (`X_FILE`).
//!
//! systemd's `LoadCredential=` and Kubernetes' secret volumes hand a secret
//! over as a file, which keeps it out of `/proc/<pid>/environ`, `systemctl
//! show` and `docker inspect`. So every secret variable `X` may instead be
//! given as `X_FILE=/path`: the file is read and one trailing newline (`\n`
//! or `\r\n`, as `echo` and editors leave) is dropped. [`secret_var`] is the
//! one place that rule lives; every secret is read through it.
//!
//! An empty variable counts as unset (compose files pass `X: ${X:-}`), so
//! only two non-empty ones conflict: setting both is an error rather than a
//! silent choice, since one of them is then stale. An empty file gives an
//! empty value, which the caller treats as it treats an empty variable.

use std::path::Path;

use super::{ConfigError, EnvLookup};

/// The value of the secret variable `name`: from `name` itself, or read
/// from the file `name_FILE` names. `None` when neither is set (or both
/// are empty). Errors, naming the variables and never the value, when both
/// are set or the file cannot be read.
pub fn secret_var(env: EnvLookup<'_>, name: &str) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{name}_FILE");
    let value = env(name).filter(|v| !v.is_empty());
    let file = env(&file_var).filter(|v| !v.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!(
            "both {name} and {file_var} are set; set only one (the value, or the file holding it)"
        ))),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_secret_file(&file_var, Path::new(&path)).map(Some),
        (None, None) => Ok(None),
    }
}

/// The largest secret file read: secrets are short; a device or a wrong
/// path must not fill the memory or block start-up.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(file_var: &str, path: &Path) -> Result<String, ConfigError> {
    let unreadable = |e: std::io::Error| {
        ConfigError(format!(
            "{file_var} = {}: cannot read the file: {e}",
            path.display()
        ))
    };
    // Opening a FIFO for reading blocks until a writer comes: look first.
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() || meta.len() > MAX_SECRET_FILE {
        return Err(ConfigError(format!(
            "{file_var} = {}: not a regular file of at most 64 KiB",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(unreadable)?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SECRET_FILE), &mut bytes)
        .map_err(unreadable)?;
    let mut text = String::from_utf8(bytes).map_err(|_| {
        ConfigError(format!(
            "{file_var} = {}: the file is not UTF-8 text",
            path.display()
        ))
    })?;
    if text.ends_with("\r\n") {
        text.truncate(text.len() - 2);
    } else if text.ends_with('\n') {
        text.truncate(text.len() - 1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    fn from_file(content: &[u8]) -> Result<Option<String>, ConfigError> {
        let f = file(content);
        let path = f.path().to_str().unwrap().to_owned();
        secret_var(&lookup(&[("SECRET_FILE", &path)]), "SECRET")
    }

    #[test]
    fn the_variable_alone_is_used_as_it_is() {
        let env = lookup(&[("SECRET", "value \n")]);
        assert_eq!(
            secret_var(&env, "SECRET").unwrap().as_deref(),
            Some("value \n")
        );
    }

    #[test]
    fn the_file_alone_is_read_less_one_trailing_newline() {
        assert_eq!(from_file(b"s3cret\n").unwrap().as_deref(), Some("s3cret"));
        assert_eq!(from_file(b"s3cret\r\n").unwrap().as_deref(), Some("s3cret"));
        assert_eq!(from_file(b"s3cret").unwrap().as_deref(), Some("s3cret"));
        assert_eq!(
            from_file(b"s3cret\n\n").unwrap().as_deref(),
            Some("s3cret\n"),
            "only one newline goes"
        );
        assert_eq!(
            from_file(b"  s3cret \t\n").unwrap().as_deref(),
            Some("  s3cret \t"),
            "other white space stays"
        );
        assert_eq!(
            from_file(b"line one\nline two\n").unwrap().as_deref(),
            Some("line one\nline two")
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_value() {
        assert_eq!(from_file(b"").unwrap().as_deref(), Some(""));
        assert_eq!(from_file(b"\n").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn both_set_is_an_error_naming_both_and_neither_value() {
        let f = file(b"from-file");
        let path = f.path().to_str().unwrap().to_owned();
        let env = lookup(&[("SECRET", "from-env"), ("SECRET_FILE", &path)]);
        let error = secret_var(&env, "SECRET").unwrap_err().to_string();
        assert!(
            error.contains("SECRET ") && error.contains("SECRET_FILE"),
            "{error}"
        );
        assert!(
            !error.contains("from-env") && !error.contains("from-file"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let f = file(b"from-file\n");
        let path = f.path().to_str().unwrap().to_owned();
        let env = lookup(&[("SECRET", ""), ("SECRET_FILE", &path)]);
        assert_eq!(
            secret_var(&env, "SECRET").unwrap().as_deref(),
            Some("from-file"),
            "the file wins over an empty variable"
        );
        let env = lookup(&[("SECRET", "from-env"), ("SECRET_FILE", "")]);
        assert_eq!(
            secret_var(&env, "SECRET").unwrap().as_deref(),
            Some("from-env"),
            "the variable wins over an empty _FILE"
        );
        assert_eq!(secret_var(&lookup(&[]), "SECRET").unwrap(), None);
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_the_variable_and_the_path() {
        let env = lookup(&[("SECRET_FILE", "/nonexistent/zds/secret")]);
        let error = secret_var(&env, "SECRET").unwrap_err().to_string();
        assert!(error.contains("SECRET_FILE"), "{error}");
        assert!(error.contains("/nonexistent/zds/secret"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let env = lookup(&[("SECRET_FILE", dir.path().to_str().unwrap())]);
        let error = secret_var(&env, "SECRET").unwrap_err().to_string();
        assert!(error.contains("SECRET_FILE"), "a directory: {error}");
    }

    #[test]
    fn a_file_that_is_not_text_is_an_error_without_its_bytes() {
        let error = from_file(&[0xff, 0xfe, b's']).unwrap_err().to_string();
        assert!(
            error.contains("SECRET_FILE") && error.contains("UTF-8"),
            "{error}"
        );
    }

    #[test]
    fn a_device_a_fifo_or_a_huge_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let huge = dir.path().join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        for path in [Path::new("/dev/zero"), &fifo, &huge] {
            let lookup = lookup(&[("SECRET_FILE", path.to_str().unwrap())]);
            let err = secret_var(&lookup, "SECRET").unwrap_err().to_string();
            assert!(
                err.contains("SECRET_FILE") && err.contains("not a regular file of at most 64 KiB"),
                "{}: {err}",
                path.display()
            );
        }
    }
}
