//! The limits of an HTTP listener: the same four keys in `[http]` (the
//! daemon's `http.listen`) and in `[ingest]` (the receiver's `listen` and
//! `probe_listen`, each with its own cap). See [`crate`] for what
//! each one does.

use std::time::Duration;

use crate::Limits;

/// The first byte of a request to its last header: generous for a sender
/// on a slow link, short enough that a client dribbling its headers holds a
/// connection for seconds, not minutes.
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// A kept-alive connection with no request: senders reuse a connection
/// within seconds, and an idle one at the cap is closed first anyway.
pub const IDLE_TIMEOUT_SECS: u64 = 30;
/// One request from its headers to its answer, body included (a webhook is
/// answered within 1.8 s once its body is in).
pub const REQUEST_TIMEOUT_SECS: u64 = 15;
/// Open connections per listener: the three listeners of
/// `run --with-ingest` together stay under the usual 1,024 file
/// descriptors (the systemd units set `LimitNOFILE=4096`).
pub const MAX_CONNECTIONS: u32 = 256;

/// A listener's limit out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{section}.{key} is {value}: write 1 to 3600 (seconds)")]
    Timeout {
        section: String,
        key: &'static str,
        value: u64,
    },
    #[error("{section}.max_connections is {value}: write 1 to 65535")]
    MaxConnections { section: String, value: u32 },
}

/// The four keys as read from one section.
pub struct Keys<'a> {
    pub section: &'a str,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_connections: u32,
}

impl Keys<'_> {
    /// Each timeout 1 s to 1 hour, the cap 1 to 65,535.
    pub fn check(&self) -> Result<(), LimitError> {
        for (key, value) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(LimitError::Timeout {
                    section: self.section.to_owned(),
                    key,
                    value,
                });
            }
        }
        if !(1..=65_535).contains(&self.max_connections) {
            return Err(LimitError::MaxConnections {
                section: self.section.to_owned(),
                value: self.max_connections,
            });
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections as usize,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Keys {
            section: "",
            header_read_timeout_secs: HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: IDLE_TIMEOUT_SECS,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            max_connections: MAX_CONNECTIONS,
        }
        .limits()
    }
}
