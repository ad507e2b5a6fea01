//! An input file a command reads whole (`reconcile --hr-export`,
//! `publish --file`): a regular file of at most a stated size, read no
//! further than the size it states. Whatever else a path can name is
//! refused before it is read: a FIFO would block, `/dev/zero` never ends,
//! and a procfs/sysfs file (size 0, content made on read) may hold the
//! process's own secrets (`/proc/self/environ`).

use std::fs::{FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why an input file was not read. `flag` names the option, so the error
/// says which file is meant and what it must be.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not a regular file ({kind}); {flag} must be a regular file of at most {} MiB",
        path.display(), limit >> 20
    )]
    NotRegular {
        path: PathBuf,
        kind: &'static str,
        flag: &'static str,
        limit: u64,
    },
    #[error(
        "{}: over the limit of {} MiB ({limit} bytes) for {flag}",
        path.display(), limit >> 20
    )]
    TooLarge {
        path: PathBuf,
        flag: &'static str,
        limit: u64,
    },
    #[error(
        "{}: changed while read, or not a real file (procfs/sysfs): it holds more than the \
         {size} bytes its size says; copy it to a regular file",
        path.display()
    )]
    Changed { path: PathBuf, size: u64 },
}

/// The file's bytes, when it is a regular file of at most `limit` bytes.
/// Anything else is refused before it is opened; the open file is checked
/// again, and read no further than the size it states plus one byte. More
/// than that: it grew after the check, or it is a procfs/sysfs file, and it
/// is refused without being kept or shown. An empty regular file reads as
/// empty.
pub fn read_bounded(path: &Path, flag: &'static str, limit: u64) -> Result<Vec<u8>, FileError> {
    let open = |source| FileError::Open {
        path: path.into(),
        source,
    };
    let check = Check { path, flag, limit };
    check.regular(&std::fs::metadata(path).map_err(open)?)?;
    let (file, size) = check.open()?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(open)?;
    if data.len() as u64 > size {
        return Err(FileError::Changed {
            path: path.into(),
            size,
        });
    }
    Ok(data)
}

/// What a path is checked against.
pub(crate) struct Check<'a> {
    pub path: &'a Path,
    pub flag: &'static str,
    pub limit: u64,
}

impl Check<'_> {
    /// Opens the path non-blocking, so a path swapped for a FIFO after the
    /// check cannot hang the open, and checks the open file's own kind and
    /// size (what counts from here on; returned). Reading a regular file
    /// ignores the flag.
    pub(crate) fn open(&self) -> Result<(std::fs::File, u64), FileError> {
        let open = |source| FileError::Open {
            path: self.path.into(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.path)
            .map_err(open)?;
        let metadata = file.metadata().map_err(open)?;
        self.regular(&metadata)?;
        Ok((file, metadata.len()))
    }

    fn regular(&self, metadata: &Metadata) -> Result<(), FileError> {
        let kind = metadata.file_type();
        if !kind.is_file() {
            return Err(FileError::NotRegular {
                path: self.path.into(),
                kind: kind_of(kind),
                flag: self.flag,
                limit: self.limit,
            });
        }
        if metadata.len() > self.limit {
            return Err(FileError::TooLarge {
                path: self.path.into(),
                flag: self.flag,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

fn kind_of(kind: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}
