//! `check`: a step-by-step preflight, like an on-demand provisioning run.
//! Each step prints its result; the first that cannot go on ends the run.
//! Secrets are never printed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::printable::Printable;
use super::{Exit, full_settings};
use crate::broker::admin::{Admin, AdminError};
use crate::broker::topology::Topology;
use crate::config::Settings;
use crate::zoom::NoMetrics;
use crate::zoom::{Attempts, Failure, ZoomGroup};

/// Scopes the daemon needs, each as (what for, classic scope, granular scopes).
const NEEDED_SCOPES: &[(&str, &str, &[&str])] = &[
    (
        "move, add and remove group members",
        "group:write:admin",
        &[
            "group:update:member:admin",
            "group:write:member:admin",
            "group:delete:member:admin",
        ],
    ),
    (
        "look users up",
        "user:read:admin",
        &["user:read:user:admin"],
    ),
];

/// Prints each step's outcome and remembers whether one failed.
#[derive(Default)]
struct Report {
    failed: bool,
}

/// Details name Zoom's groups and quote its errors: printed escaped.
impl Report {
    fn ok(&mut self, step: &str, detail: impl AsRef<str>) {
        println!("[ok]   {step}: {}", Printable(detail.as_ref()));
    }

    fn warn(&mut self, step: &str, detail: impl AsRef<str>) {
        println!("[warn] {step}: {}", Printable(detail.as_ref()));
    }

    fn fail(&mut self, step: &str, detail: impl AsRef<str>) {
        self.failed = true;
        println!("[FAIL] {step}: {}", Printable(detail.as_ref()));
    }

    fn exit(&self) -> Exit {
        if self.failed {
            Exit::Problems
        } else {
            Exit::Ok
        }
    }
}

pub async fn run(config: &Path) -> Exit {
    let mut report = Report::default();
    let settings = match full_settings(config) {
        Ok(settings) => settings,
        Err(e) => {
            report.fail("config", e.to_string());
            return Exit::Usage;
        }
    };
    report.ok("config", format!("{} valid", config.display()));
    check_broker(&settings, &mut report).await;
    check_zoom(&settings, &mut report).await;
    report.exit()
}

async fn check_broker(settings: &Settings, report: &mut Report) {
    let admin = match Admin::connect(&settings.amqp, "check").await {
        Ok(admin) => admin,
        Err(e) => return report.fail("broker", e.to_string()),
    };
    report.ok("broker", "reachable");
    let topology = Topology::new(&settings.amqp);
    for queue in [
        settings.amqp.queue.clone(),
        settings.amqp.dead_letter_queue(),
    ] {
        match admin.check_arguments(&topology, &queue).await {
            Ok(()) => report.ok(
                "queue",
                format!("{queue} exists with the expected arguments"),
            ),
            Err(AdminError::MissingQueue { .. }) if settings.amqp.declare_topology => report.warn(
                "queue",
                format!("{queue} does not exist yet; the daemon declares it"),
            ),
            Err(why) => report.fail("queue", format!("{queue}: {why}")),
        }
    }
    check_input_exchange(settings, &admin, report).await;
    check_outcomes(settings, &admin, report).await;
    admin.close().await;
}

/// The receiver's exchange: without it the receiver answers 503 (the
/// daemon consumes regardless). Whether it is bound to the input queue
/// cannot be seen over AMQP; a missing binding shows as the receiver's
/// "routes nothing to queue" error.
async fn check_input_exchange(settings: &Settings, admin: &Admin, report: &mut Report) {
    const STEP: &str = "input exchange";
    let exchange = settings.amqp.input_exchange();
    match admin.exchange_exists(&exchange).await {
        Ok(true) => report.ok(
            STEP,
            format!("{exchange} exists (the receiver publishes through it)"),
        ),
        Ok(false) if settings.amqp.declare_topology => report.warn(
            STEP,
            format!("{exchange} does not exist yet; the daemon declares it and binds it to {}", settings.amqp.queue),
        ),
        Ok(false) => report.fail(
            STEP,
            format!(
                "{exchange} does not exist, and declare_topology = false: the receiver cannot publish until it does \
                 (durable, direct, bound to {queue} with routing key {queue})",
                queue = settings.amqp.queue
            ),
        ),
        Err(e) => report.fail(STEP, e.to_string()),
    }
}

/// The audit trail's exchange and stream: the daemon does not consume
/// without them (it declares them itself when it owns the topology).
async fn check_outcomes(settings: &Settings, admin: &Admin, report: &mut Report) {
    let Some(exchange) = &settings.outcomes.exchange else {
        return;
    };
    let declare = settings.amqp.declare_topology;
    let missing = |report: &mut Report, what: String| {
        if declare {
            report.warn(
                "outcomes",
                format!("{what} does not exist yet; the daemon declares it"),
            );
        } else {
            report.fail(
                "outcomes",
                format!("{what} does not exist, and declare_topology = false: the daemon will not consume until it does"),
            );
        }
    };
    match admin.exchange_exists(exchange).await {
        Ok(true) => report.ok("outcomes", format!("exchange {exchange} exists")),
        Ok(false) => missing(report, format!("exchange {exchange}")),
        Err(e) => report.fail("outcomes", e.to_string()),
    }
    let Some(stream) = &settings.outcomes.stream else {
        return report.warn(
            "outcomes",
            "no outcomes.stream: bind a queue to the exchange, or every record comes back unroutable and no event is acked",
        );
    };
    match admin.counts(stream).await {
        Ok(Some(_)) => report.ok("outcomes", format!("stream {stream} exists")),
        Ok(None) => missing(report, format!("stream {stream}")),
        Err(e) => report.fail("outcomes", e.to_string()),
    }
}

async fn check_zoom(settings: &Settings, report: &mut Report) {
    let client = match crate::clients::zoom(settings, Arc::new(NoMetrics)) {
        Ok(client) => client,
        Err(e) => return report.fail("zoom", e.to_string()),
    };
    let scopes = match client.granted_scopes().await {
        Ok(scopes) => scopes,
        // The same words as the daemon's /readyz: refused credentials, or
        // an endpoint that is away.
        Err(e) => return report.fail("token", crate::token_gate::reason(&e)),
    };
    report.ok("token", "granted");
    check_scopes(&scopes, report);
    let attempts = Attempts::new(
        Instant::now() + Duration::from_secs(60),
        CancellationToken::new(),
    );
    match client.list_groups(&attempts).await {
        Ok(groups) => check_groups(settings, &groups, report),
        Err(e) => report.fail(
            "groups",
            format!("GET /groups failed: {}", failure_text(&e)),
        ),
    }
    check_groups_model(settings.worker.set_primary, report);
}

/// Zoom's "new groups and settings experience" (the default for accounts
/// created since 2026-01-10) decides settings by group priority, set in the
/// web portal; the primary group counts only for Information Barriers
/// there. Zoom's API shows neither the experience nor the priorities, so
/// this says what `worker.set_primary` means on either kind of account.
fn check_groups_model(set_primary: bool, report: &mut Report) {
    const STEP: &str = "groups model";
    const UNSEEN: &str =
        "Zoom's API does not show whether this account uses the new groups and settings experience";
    if set_primary {
        report.warn(
            STEP,
            format!("{UNSEEN}; if it does, worker.set_primary changes only Information Barriers, and settings follow the groups' priority order in the web portal"),
        );
    } else {
        report.ok(
            STEP,
            format!("{UNSEEN}; if it does, settings follow the groups' priority order in the web portal (see docs/how-it-works.md: Zoom's groups model)"),
        );
    }
}

fn failure_text(failure: &Failure) -> String {
    match failure {
        Failure::Rejected(e) | Failure::Exhausted(e) | Failure::Auth(e) => e.to_string(),
        Failure::RateLimited { .. } => "rate-limited past the retry budget".into(),
        Failure::Stopped => "stopped".into(),
    }
}

fn check_scopes(scopes: &[String], report: &mut Report) {
    if scopes.is_empty() {
        return report.warn(
            "scopes",
            "the token answer lists no scopes; cannot check them",
        );
    }
    for (what, classic, granular) in NEEDED_SCOPES {
        let has = |s: &str| scopes.iter().any(|g| g == s);
        if has(classic) || granular.iter().all(|s| has(s)) {
            report.ok("scopes", format!("{what}: granted"));
        } else {
            let wanted = std::iter::once(*classic)
                .chain(std::iter::once(granular.join(" + ").as_str()).filter(|g| !g.is_empty()))
                .collect::<Vec<_>>()
                .join(", or ");
            report.fail("scopes", format!("{what}: missing ({wanted})"));
        }
    }
}

fn check_groups(settings: &Settings, groups: &[ZoomGroup], report: &mut Report) {
    for (group, departments) in settings.mapping.departments_by_group() {
        let list = departments.join(", ");
        match groups.iter().find(|g| g.id == group) {
            None => report.fail(
                "groups",
                format!("{group} (for {list}) does not exist in Zoom"),
            ),
            Some(found) => {
                report.ok(
                    "groups",
                    format!(
                        "{group} \"{}\" exists, {} members ({list})",
                        found.name, found.total_members
                    ),
                );
                if departments.len() > 1 {
                    report.warn(
                        "groups",
                        format!(
                            "{group} is shared by {} departments: {list}",
                            departments.len()
                        ),
                    );
                }
                if found.total_members == 0 {
                    report.warn(
                        "groups",
                        format!("{group} \"{}\" has no members", found.name),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(scopes: &str) -> bool {
        let scopes: Vec<String> = scopes.split_whitespace().map(str::to_owned).collect();
        let mut report = Report::default();
        check_scopes(&scopes, &mut report);
        report.failed
    }

    #[test]
    fn every_member_write_the_daemon_makes_needs_its_scope() {
        assert!(!fails("group:write:admin user:read:admin"));
        assert!(!fails(
            "group:update:member:admin group:write:member:admin group:delete:member:admin user:read:user:admin"
        ));
        // Removing a user from another managed group, and `leave`, need it.
        assert!(fails(
            "group:update:member:admin group:write:member:admin user:read:user:admin"
        ));
        assert!(fails("group:write:admin"));
    }
}
