//! `explain`: "what would happen to Jane?" without writing anything (Entra
//! calls its answer "provision on demand"). One lookup in Zoom, the
//! mapping, the calls the daemon would make for an event without
//! `previous_department` (what an HR webhook sends), and whether the brake
//! or a quarantine holds the daemon now. `--apply` publishes that one event
//! to the input queue, so order, limits and the brake still apply.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::output::json;
use super::printable::Printable;
use super::{ConfigArg, Exit, config_error, full_settings};
use crate::broker::admin::Admin;
use crate::config::Settings;
use crate::event::{DepartmentChange, Email, ZoomUserId};
use crate::mapping::GroupId;
use crate::zoom::NoMetrics;
use crate::zoom::{Attempts, UserPath, ZoomUser};

#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["email", "user"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The person's Zoom user id.
    #[arg(long)]
    user: Option<String>,
    /// The person's email.
    #[arg(long)]
    email: Option<String>,
    /// The department the person would move to.
    #[arg(long)]
    department: Option<String>,
    /// Publish that one event to the input queue (needs --department).
    #[arg(long, requires = "department")]
    apply: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One call the daemon would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedCall {
    pub method: &'static str,
    pub path: String,
    /// Zoom's rate-limit category.
    pub category: &'static str,
    pub why: String,
}

#[derive(Serialize)]
struct Explanation {
    zoom_user_id: String,
    email: Option<String>,
    /// Every group Zoom lists for the person, managed or not.
    groups: Vec<GroupLine>,
    department: Option<String>,
    target_group: Option<String>,
    /// Why the department maps to no group, or why nothing changes.
    note: Option<String>,
    calls: Vec<PlannedCall>,
    /// `/readyz` of the daemon: whether it would hold the event now.
    daemon: String,
    published: Option<String>,
}

#[derive(Serialize)]
struct GroupLine {
    id: String,
    managed: bool,
    departments: Vec<String>,
}

pub async fn run(args: ExplainArgs) -> Exit {
    let settings = match full_settings(&args.config.config) {
        Ok(settings) => settings,
        Err(e) => return config_error(e),
    };
    let user = match look_up(&settings, &args).await {
        Ok(user) => user,
        Err(why) => {
            eprintln!("zoom-dept-sync explain: {why}");
            return Exit::Problems;
        }
    };
    let mut explained = explain(&settings, &user, args.department.as_deref());
    explained.daemon = daemon_state(&settings).await;
    if args.apply {
        match publish(&settings, &explained).await {
            Ok(id) => explained.published = Some(id),
            Err(why) => {
                eprintln!("zoom-dept-sync explain: nothing published: {why}");
                return Exit::Problems;
            }
        }
    }
    print(&explained, args.json);
    Exit::Ok
}

/// Why `explain` could not look the person up or publish the event.
#[derive(Debug, thiserror::Error)]
enum ExplainError {
    #[error("{0}")]
    Client(#[from] crate::zoom::HttpClientError),
    #[error("{flag}: {source}")]
    Field {
        flag: &'static str,
        source: crate::event::FieldError,
    },
    #[error("--user or --email is needed")]
    NoOne,
    #[error("looking the person up in Zoom: {0}")]
    Lookup(crate::zoom::Failure),
    #[error("{0}")]
    Time(#[from] time::error::Format),
    #[error("{0}")]
    Invalid(#[from] crate::event::InvalidPayload),
    #[error("{0}")]
    Broker(#[from] crate::broker::admin::AdminError),
}

/// `GET /users/{id or email}` through the daemon's own client (its rate
/// limits and token rules); the only call made.
async fn look_up(settings: &Settings, args: &ExplainArgs) -> Result<ZoomUser, ExplainError> {
    let client = crate::clients::zoom(settings, Arc::new(NoMetrics))?;
    let attempts = Attempts::new(
        Instant::now() + Duration::from_secs(30),
        CancellationToken::new(),
    );
    let (id, email);
    let path = match (&args.user, &args.email) {
        (Some(user), _) => {
            id = ZoomUserId::parse(user).map_err(|source| ExplainError::Field {
                flag: "--user",
                source,
            })?;
            UserPath::Id(&id)
        }
        (None, Some(address)) => {
            email = Email::parse(address).map_err(|source| ExplainError::Field {
                flag: "--email",
                source,
            })?;
            UserPath::Email(&email)
        }
        (None, None) => return Err(ExplainError::NoOne),
    };
    client
        .get_user(path, &attempts)
        .await
        .map_err(ExplainError::Lookup)
}

fn explain(settings: &Settings, user: &ZoomUser, department: Option<&str>) -> Explanation {
    let by_group = settings.mapping.departments_by_group();
    let groups = user
        .group_ids
        .iter()
        .map(|g| GroupLine {
            id: g.clone(),
            managed: GroupId::parse(g).is_ok_and(|g| settings.mapping.is_managed(&g)),
            departments: by_group.get(g).cloned().unwrap_or_default(),
        })
        .collect();
    let target = department.and_then(|d| settings.mapping.group_of(d.trim()).cloned());
    let (calls, note) = match (department, &target) {
        (None, _) => (Vec::new(), None),
        (Some(d), None) => (
            Vec::new(),
            Some(format!(
                "{d:?} maps to no group: the event would be {} (worker.unmapped)",
                match settings.worker.unmapped {
                    crate::config::Unmapped::Skip => "skipped",
                    crate::config::Unmapped::DeadLetter => "dead-lettered as unmapped_department",
                }
            )),
        ),
        (Some(_), Some(to)) => planned_calls(settings, user, to),
    };
    Explanation {
        zoom_user_id: user.id.clone(),
        email: user.email.clone(),
        groups,
        department: department.map(str::to_owned),
        target_group: target.map(|g| g.as_str().to_owned()),
        note,
        calls,
        daemon: String::new(),
        published: None,
    }
}

/// The calls the daemon makes for an event without `previous_department`
/// (the worker's lookup-then-place, `worker.rs`): the lookup, then a move
/// from the first managed group, an add, or nothing, then a removal from
/// each other managed group, and `set_primary` when configured.
pub fn planned_calls(
    settings: &Settings,
    user: &ZoomUser,
    to: &GroupId,
) -> (Vec<PlannedCall>, Option<String>) {
    let call = |method, path: String, category, why: String| PlannedCall {
        method,
        path,
        category,
        why,
    };
    let id = &user.id;
    let mut calls = vec![call(
        "GET",
        format!("/users/{id}"),
        "light",
        "the person's current groups".into(),
    )];
    let mut managed: Vec<GroupId> = user
        .group_ids
        .iter()
        .filter_map(|g| GroupId::parse(g).ok())
        .filter(|g| settings.mapping.is_managed(g))
        .collect();
    managed.sort();
    let already = managed.contains(to);
    let others: Vec<&GroupId> = managed.iter().filter(|g| *g != to).collect();
    let (first, rest) = match (already, others.split_first()) {
        (false, None) => {
            let why = format!("in no managed group: add to {to}");
            calls.push(call("POST", format!("/groups/{to}/members"), "medium", why));
            (None, &[][..])
        }
        (false, Some((from, rest))) => {
            let why = format!("move from {from} to {to}");
            let path = format!("/groups/{from}/members/{id}");
            calls.push(call("PATCH", path, "medium", why));
            (Some(*from), rest)
        }
        (true, _) => (None, &others[..]),
    };
    for other in rest {
        let why = format!("leave {other}, another managed group");
        let path = format!("/groups/{other}/members/{id}");
        calls.push(call("DELETE", path, "light", why));
    }
    let note =
        (already && rest.is_empty()).then(|| format!("already in {to} only: nothing to write"));
    // The daemon makes it after an add, a move and "already applied"
    // alike: Zoom's answers never say which group is primary.
    let _ = first;
    if settings.worker.set_primary {
        let path = format!("/groups/{to}/members/{id}");
        let why = format!("make {to} the primary group (worker.set_primary)");
        calls.push(call("PATCH", path, "medium", why));
    }
    (calls, note)
}

/// What the running daemon's `/readyz` says: held by the brake or a
/// quarantine, or taking events.
async fn daemon_state(settings: &Settings) -> String {
    match crate::control::readiness(settings.http.listen).await {
        Some((200, _)) => {
            "ready: the event would be taken now (the brake counts its writes)".into()
        }
        Some((_, text)) if text.contains("brake engaged") => {
            format!("held by the brake: {}", text.trim())
        }
        Some((_, text)) if text.contains("quarantined") => {
            format!("held by a quarantine: {}", text.trim())
        }
        Some((code, text)) => format!("not ready ({code}): {}", text.trim()),
        None => format!("no daemon answers on {}", settings.http.listen),
    }
}

/// The one event, validated as the consumer will, published with a confirm.
async fn publish(settings: &Settings, explained: &Explanation) -> Result<String, ExplainError> {
    let now = OffsetDateTime::now_utc();
    let event_id = format!("explain-{}-{}", now.unix_timestamp(), now.nanosecond());
    let body = serde_json::json!({
        "event_id": event_id,
        "zoom_user_id": explained.zoom_user_id,
        "email": explained.email,
        "new_department": explained.department,
        "occurred_at": now.format(&Rfc3339)?,
    })
    .to_string();
    DepartmentChange::parse(body.as_bytes())?;
    let admin = Admin::connect(&settings.amqp, "explain").await?;
    let published = match admin.publisher().await {
        Ok(publisher) => {
            publisher
                .publish_event(&settings.amqp.queue, body.as_bytes(), &event_id, &[])
                .await
        }
        Err(e) => Err(e),
    };
    admin.close().await;
    Ok(published.map(|()| event_id)?)
}

fn print(explained: &Explanation, as_json: bool) {
    if as_json {
        println!("{}", json(explained));
        return;
    }
    let email = explained.email.as_deref().unwrap_or("-");
    println!(
        "person: {} ({})",
        Printable(&explained.zoom_user_id),
        Printable(email)
    );
    for g in &explained.groups {
        let managed = match (g.managed, g.departments.is_empty()) {
            (true, false) => format!("managed: {}", Printable(&g.departments.join(", "))),
            (true, true) => "managed".to_owned(),
            (false, _) => "not managed (never touched)".to_owned(),
        };
        println!("  group {}: {managed}", Printable(&g.id));
    }
    if let Some(d) = &explained.department {
        let target = explained.target_group.as_deref().unwrap_or("-");
        println!(
            "department \"{}\" → group {}",
            Printable(d),
            Printable(target)
        );
    }
    for call in &explained.calls {
        println!(
            "  would call {} {} ({}): {}",
            call.method,
            Printable(&call.path),
            call.category,
            Printable(&call.why)
        );
    }
    if let Some(note) = &explained.note {
        println!("  {}", Printable(note));
    }
    // `/readyz`'s lines stay lines, each escaped.
    for (i, line) in explained.daemon.lines().enumerate() {
        let label = if i == 0 { "daemon: " } else { "        " };
        println!("{label}{}", Printable(line));
    }
    if let Some(id) = &explained.published {
        println!("published event {id} to the input queue");
    }
}
