//! zoom-dept-sync: keeps Zoom group membership in step with HR department
//! changes published on RabbitMQ. See `README.md` and `docs/`.

// std's print macros panic on a closed pipe: the commands print through
// their own (`commands::console`), the daemon logs through tracing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

// The domain lives in crates/core (zds-core); its modules keep their paths here.
pub use zds_core::{
    brake, event, mapping, outcome, printable, quarantine, reconcile, sync, triage,
};

pub mod broker;
pub mod clients;
pub mod commands;
pub mod config;
pub mod control;
pub mod health;
pub mod http;
pub use zds_receiver as ingest;
pub mod metrics;
pub mod ordering;
pub mod outcomes;
pub use zds_http_client::retry;
pub mod people;
pub use zds_server as server;
pub mod shutdown;
pub mod startup;
pub mod systemd;
pub use zds_telemetry as telemetry;
pub mod token_gate;
pub mod worker;
pub use zds_zoom as zoom;
