//! Integration tests: the daemon against the real broker (`AMQP_URL`, or a
//! RabbitMQ container) and zoom-fake, the one stand-in Zoom (wiremock stands
//! in only for BambooHR's API). One crate so it links once.

mod addresses;
mod big_messages;
mod brake;
mod broker_limits;
mod clumsy_hands;
mod cluster;
mod cluster_harness;
mod cluster_smoke;
mod compose;
mod config_errors;
mod credentials;
mod dead_letters;
mod demo;
mod deploy;
mod docs;
mod explain;
mod faults;
mod helpers;
mod hostile_output;
mod http_limits;
mod ingest;
mod ingest_bamboohr;
mod invalid_input;
mod leave;
mod lookups;
mod moves;
mod operations;
mod ordering;
mod outcomes;
mod primary;
mod privileges;
mod process;
mod proxy;
mod quarantine;
mod rate_limit;
mod reconcile;
mod retries;
mod stale;
mod suite_rules;
mod systemd;
mod tls;
mod toolbox;
mod trail;
mod zoom_fake;
