//! zoom-dept-sync's AMQP adapter: the only crate that speaks AMQP (lapin).
//! Connecting (TLS, refused logins told apart), the topology (queues, the
//! input exchange, dead-lettering), publishing with confirms (events from
//! the receiver, dead letters, the audit trail), and the toolbox's reads
//! (peek, sweep, streams) and the management API. It knows what a message
//! is, not what an event means: the daemon's pipeline (consuming, settling,
//! pausing) is in the package, above it. See ARCHITECTURE.md.

pub mod admin;
pub mod confirm;
pub mod connect;
pub mod dead_letters;
pub mod event_publisher;
pub mod management;
pub mod outcomes;
pub mod redelivery;
pub mod settings;
pub mod topology;
