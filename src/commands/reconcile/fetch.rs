//! What Zoom says: the managed groups' members (every page, under the
//! Medium limit), and the people of the export found in none of them
//! (`GET /users/{id or email}`, Light). Reads only.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::{Email, ZoomUserId};
use crate::mapping::{GroupId, Mapping};
use crate::reconcile::{Lookup, Who};
use crate::zoom::{Attempts, Client, Failure, GroupMember, UserPath};

/// Each listing or lookup, retries included, may take this long.
const CALL_BUDGET: Duration = Duration::from_secs(3600);

/// Zoom's codes for a user it does not know (1010 on older accounts).
const UNKNOWN_USER_CODES: [i64; 2] = [1001, 1010];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("listing the members of {group}: {detail}")]
    Members { group: String, detail: String },
    #[error("looking up {who}: {detail}")]
    Lookup { who: String, detail: String },
}

/// Every managed group's members.
pub async fn members(
    client: &Client,
    mapping: &Mapping,
) -> Result<BTreeMap<GroupId, Vec<GroupMember>>, FetchError> {
    let bar = progress();
    let mut all = BTreeMap::new();
    for group in mapping.departments_by_group().keys() {
        let Ok(group) = GroupId::parse(group) else {
            continue;
        };
        bar.set_message(format!("members of {group}"));
        bar.set_position(0);
        let mut on_page = |seen: usize, total: u64| {
            bar.set_length(total.max(seen as u64));
            bar.set_position(seen as u64);
        };
        let listed = client
            .list_group_members(&group, &attempts(), &mut on_page)
            .await
            .map_err(|f| FetchError::Members {
                group: group.to_string(),
                detail: describe(&f),
            })?;
        all.insert(group, listed);
    }
    bar.finish_and_clear();
    Ok(all)
}

/// Zoom's answer for each person; a user Zoom does not know is
/// [`Lookup::NotFound`], any other failure ends the run.
pub async fn lookups(client: &Client, people: &[Who]) -> Result<HashMap<Who, Lookup>, FetchError> {
    let bar = progress();
    bar.set_length(people.len() as u64);
    bar.set_message("looking up people in no managed group");
    let mut answers = HashMap::new();
    for who in people {
        answers.insert(who.clone(), lookup(client, who).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(answers)
}

async fn lookup(client: &Client, who: &Who) -> Result<Lookup, FetchError> {
    let failed = |detail: String| FetchError::Lookup {
        who: match who {
            Who::Id(s) | Who::Email(s) => s.clone(),
        },
        detail,
    };
    let answer = match who {
        Who::Id(id) => {
            let id = ZoomUserId::parse(id).map_err(|e| failed(e.to_string()))?;
            client.get_user(UserPath::Id(&id), &attempts()).await
        }
        Who::Email(email) => {
            let email = Email::parse(email).map_err(|e| failed(e.to_string()))?;
            client.get_user(UserPath::Email(&email), &attempts()).await
        }
    };
    match answer {
        Ok(user) => Ok(Lookup::Found {
            id: user.id,
            groups: user.group_ids,
            email: user.email,
        }),
        Err(Failure::Rejected(e)) if e.code.is_some_and(|c| UNKNOWN_USER_CODES.contains(&c)) => {
            Ok(Lookup::NotFound)
        }
        Err(f) => Err(failed(describe(&f))),
    }
}

fn attempts() -> Attempts {
    Attempts::new(Instant::now() + CALL_BUDGET, CancellationToken::new())
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Rejected(e) | Failure::Exhausted(e) | Failure::Auth(e) => e.to_string(),
        Failure::RateLimited { until } => format!(
            "rate limited by Zoom for {} s more",
            until.saturating_duration_since(Instant::now()).as_secs()
        ),
        Failure::Stopped => "stopped".into(),
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal (the
/// plan on stdout stays clean when piped).
fn progress() -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar
}
