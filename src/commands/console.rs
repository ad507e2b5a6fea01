//! Where the commands' output goes: stdout and stderr that may close under
//! them. Rust ignores `SIGPIPE`, so a write to a pipe whose reader left
//! (`check | head -1`) fails with `BrokenPipe`, and std's `println!` panics
//! on it. The commands print through [`out`] and [`err`] instead (the
//! `println!`/`eprintln!` macros of [`crate::commands`] shadow std's): once
//! the reader has left, output stops quietly and the command finishes its
//! work and ends with its own exit code. Stopping half-way instead could
//! leave a replay or a publish half done.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout failed: later lines are dropped, not retried.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// One line on stdout; nothing once stdout is gone.
pub fn out(line: fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        // The reader leaving is normal (`| head`); anything else (a full
        // disk under `> file`) is worth one line where it may still be seen.
        if e.kind() != ErrorKind::BrokenPipe {
            err(format_args!("zoom-dept-sync: cannot write the output: {e}"));
        }
    }
}

/// One line on stderr; a closed stderr is ignored (there is nowhere left
/// to say so, and the exit code still tells).
pub fn err(line: fmt::Arguments<'_>) {
    err_part(format_args!("{line}\n"));
}

/// Text on stderr without a line end (a prompt); errors ignored as [`err`].
pub fn err_part(text: fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(text).and_then(|()| stderr.flush());
}
