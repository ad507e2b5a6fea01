//! zoom-dept-sync's daemon: the configuration loader (every section and the
//! rules across them), the delivery pipeline (consuming, per-person order,
//! running the sync algorithm, settling once the outcome is durable,
//! pausing), the people it remembers, health, metrics, systemd and the
//! probe server. It composes the adapters (`zds-amqp`, `zds-zoom`,
//! `zds-receiver`) around the domain (`zds-core`). See ARCHITECTURE.md.

pub mod broker;
pub mod clients;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod ordering;
pub mod people;
pub mod shutdown;
pub mod startup;
pub mod systemd;
pub mod token_gate;
pub mod worker;
