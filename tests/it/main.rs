//! Integration tests: the daemon against the real broker (`AMQP_URL`, or a
//! RabbitMQ container) and a wiremock Zoom. One crate so it links once.

mod config_errors;
mod dead_letters;
mod helpers;
mod invalid_input;
mod lookups;
mod moves;
mod ordering;
mod rate_limit;
mod retries;
