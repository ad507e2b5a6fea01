//! The files the commands write (`reconcile --plan-out`, `dead-letters
//! purge --export`) hold personal data, and their paths come from an
//! operator who may be working in a shared directory. So each is created
//! new, with mode 0600, or not at all: `O_CREAT | O_EXCL` refuses any
//! existing path, a symlink included, dangling or not (POSIX `open`: "If
//! O_CREAT and O_EXCL are set, and path names a symbolic link, open() shall
//! fail with [EEXIST]"), so nothing is ever written through a link or
//! appended to an old file. An existing path is a usage error naming it:
//! the operator removes the old file or picks a new name. A file the
//! command created but never wrote to (it stopped on an error first) is
//! removed again, so running it once more does not meet it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Owner read and write only (the umask can only take bits away).
const MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error(
        "{flag} {}: the path exists (a file, a directory or a symlink): nothing is written over or \
         through it; remove it or choose a new name",
        path.display()
    )]
    Exists { flag: &'static str, path: PathBuf },
    #[error("{flag} {}: cannot create it: {source}", path.display())]
    Create {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: cannot write it: {source}", path.display())]
    Write {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file this command created (see the module's doc).
#[derive(Debug)]
pub struct OutputFile {
    flag: &'static str,
    path: PathBuf,
    file: File,
    written: bool,
}

impl OutputFile {
    /// Creates `path` new with mode 0600; `flag` names the option in errors.
    pub fn create(flag: &'static str, path: &Path) -> Result<Self, OutputFileError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AlreadyExists => OutputFileError::Exists {
                    flag,
                    path: path.into(),
                },
                _ => OutputFileError::Create {
                    flag,
                    path: path.into(),
                    source,
                },
            })?;
        Ok(Self {
            flag,
            path: path.into(),
            file,
            written: false,
        })
    }

    /// Appends `line` and a newline, on disk before it returns (a purge
    /// acks the message only after its line is safe).
    pub fn write_line(&mut self, line: &str) -> Result<(), OutputFileError> {
        self.written = true;
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.sync_data())
            .map_err(|source| self.write_error(source))
    }

    /// Replaces what this command wrote so far with `text` (the plan file
    /// is written again once it knows what was published).
    pub fn replace(&mut self, text: &str) -> Result<(), OutputFileError> {
        self.written = true;
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.sync_data())
            .map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: std::io::Error) -> OutputFileError {
        OutputFileError::Write {
            flag: self.flag,
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.written {
            // `unlink` removes a name, never what a link points to.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_new_files_with_mode_0600_and_refuses_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for path in [&target, &link, &dangling] {
            let error = OutputFile::create("--out", path).unwrap_err();
            assert!(matches!(error, OutputFileError::Exists { .. }), "{error}");
            assert!(error.to_string().contains(path.to_str().unwrap()));
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert!(!dir.path().join("nowhere").exists());

        let fresh = dir.path().join("fresh");
        let mut file = OutputFile::create("--out", &fresh).unwrap();
        file.replace("a long first text\n").unwrap();
        file.replace("second\n").unwrap();
        file.write_line("line").unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "second\nline\n");
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(file);
        assert!(fresh.exists(), "a written file stays");
        let unused = dir.path().join("unused");
        drop(OutputFile::create("--out", &unused).unwrap());
        assert!(!unused.exists(), "a file never written to is removed");
    }
}
