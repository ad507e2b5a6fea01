//! zoom-dept-sync: keeps Zoom group membership in step with HR department
//! changes published on RabbitMQ. See `README.md` and `docs/`.

// std's print macros panic on a closed pipe: the commands print through
// their own (`commands::console`), the daemon logs through tracing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

// The domain lives in crates/core (zds-core); its modules keep their paths here.
pub use zds_core::{
    brake, event, mapping, outcome, printable, quarantine, reconcile, sync, trail as outcomes,
    triage,
};

// The daemon (configuration, pipeline, health, metrics) is crates/daemon;
// the adapters and the domain are crates of their own. Their modules keep
// their paths here, for the commands and the integration tests.
pub use zds_daemon::{
    broker, clients, config, health, http, metrics, ordering, people, shutdown, startup, systemd,
    token_gate, worker,
};
pub use zds_http_client::retry;
pub use zds_receiver as ingest;
pub use zds_server as server;
pub use zds_telemetry as telemetry;
pub use zds_zoom as zoom;

pub mod commands;
pub mod control;
