//! zoom-dept-sync: keeps Zoom group membership in step with HR department
//! changes published on RabbitMQ. See `README.md`.

// std's print macros panic on a closed pipe: the commands print through
// their own (`commands::console`), the daemon logs through tracing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod brake;
pub mod broker;
pub mod commands;
pub mod config;
pub mod control;
pub mod event;
pub mod fake;
pub mod health;
pub mod http;
pub mod ingest;
pub mod mapping;
pub mod metrics;
pub mod ordering;
pub mod outcome;
pub mod outcomes;
pub mod people;
pub mod printable;
pub mod quarantine;
pub mod reconcile;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod systemd;
pub mod telemetry;
pub mod token_gate;
pub mod triage;
#[doc(hidden)]
pub mod vendor;
pub mod worker;
pub mod zoom;
