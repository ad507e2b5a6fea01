//! zoom-dept-sync's domain: what an HR event means, where it sends a person,
//! what one event costs in Zoom calls, and what became of it.
//!
//! Nothing here does I/O or needs a runtime. The sync algorithm
//! ([`sync::apply`]) reaches Zoom through the [`sync::ZoomDirectory`] trait,
//! which the Zoom client implements for the daemon and an in-memory
//! directory implements for the unit tests. See ARCHITECTURE.md.

pub mod brake;
pub mod event;
pub mod mapping;
pub mod outcome;
pub mod printable;
pub mod quarantine;
pub mod reconcile;
pub mod sync;
pub mod trail;
pub mod triage;
