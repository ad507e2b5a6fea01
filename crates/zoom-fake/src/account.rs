//! One Zoom account: its directory, tokens, rate-limit counters, faults and
//! page tokens, behind the fake's one mutex. [`Account::call`] decides an
//! API call completely in one short critical section (no await, no JSON),
//! in Zoom's order: token, injected fault, rate limit, then the operation.
//! A call's effect happens when it arrives; added latency only delays the
//! answer, so a client that times out may still have changed the account,
//! as with the real Zoom.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{TokenInvalid, Tokens};
use super::counters::{Counters, Tally};
use super::endpoint::{ApiCall, Op, PageQuery};
use super::faults::{Fault, Faults, Lasting, ScriptedFault};
use super::limits::{Admission, Category, Limits, RateLimiter};
use super::paging::PageTokens;
use super::seed::FakeConfig;
use super::state::{
    Directory, GroupState, GroupSummary, MemberView, Page, Rejection, UserState, UserView,
};

/// A successful API answer, before it is rendered.
#[derive(Debug)]
pub enum Reply {
    NoContent,
    Added {
        ids: Vec<String>,
    },
    User(UserView),
    Groups {
        page: Page<GroupSummary>,
        next: String,
    },
    Members {
        page: Page<MemberView>,
        size: usize,
        next: String,
    },
}

/// How an API call is answered.
#[derive(Debug)]
pub enum Answer {
    Reply(Reply),
    Rejected(Rejection),
    Unauthorized(TokenInvalid),
    /// 429 for the per-second limit (`limit`: the category's, if any).
    Qps {
        category: Category,
        limit: Option<u32>,
        /// Only a scripted 429 has these.
        retry_after: Option<String>,
        limit_type: Option<String>,
    },
    Daily {
        limit: u32,
        resets_at: OffsetDateTime,
    },
    /// An injected error answer.
    Fault {
        status: u16,
        code: u32,
        message: String,
        category: Category,
        retry_after: Option<String>,
        limit_type: Option<String>,
    },
    /// An injected hang: 504 after the delay.
    Hung,
}

/// The answer and how long to wait before giving it.
#[derive(Debug)]
pub struct Decision {
    pub answer: Answer,
    pub delay: Duration,
}

/// What `/_state` shows: sorted, so it reads the same every time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeState {
    pub groups: Vec<GroupState>,
    pub users: Vec<UserState>,
    pub counters: Counters,
}

#[derive(Debug)]
pub struct Account {
    seed: FakeConfig,
    directory: Directory,
    pub(super) tokens: Tokens,
    limiter: RateLimiter,
    faults: Faults,
    counters: Counters,
    pages: PageTokens,
    /// When the first and the latest API call came (since start or reset).
    calls: Option<(Instant, Instant)>,
}

impl Account {
    pub fn new(seed: FakeConfig, start: Instant) -> Self {
        Self {
            directory: Directory::from_seed(&seed),
            tokens: Tokens::new(seed.auth.clone()),
            limiter: RateLimiter::new(seed.limits, start),
            faults: Faults::new(seed.faults.clone()),
            counters: Counters::default(),
            pages: PageTokens::default(),
            calls: None,
            seed,
        }
    }

    /// Decides one API call; `method` and `path` are for scripted faults.
    pub fn call(
        &mut self,
        call: ApiCall,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        now: Instant,
    ) -> Decision {
        let first = self.calls.map_or(now, |(first, _)| first);
        self.calls = Some((first, now));
        let delay = self.faults.latency();
        let category = call.category;
        let (answer, tally) = self.answer(call, method, path, authorization, now);
        self.counters.record(category, tally);
        let delay = match answer {
            Answer::Hung => delay + Duration::from_millis(self.seed.faults.timeout_ms),
            _ => delay,
        };
        Decision { answer, delay }
    }

    fn answer(
        &mut self,
        call: ApiCall,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        now: Instant,
    ) -> (Answer, Tally) {
        if let Err(invalid) = self.tokens.check(authorization, now) {
            return (Answer::Unauthorized(invalid), Tally::Rejected);
        }
        if let Some(fault) = self.faults.pick(method, path, now) {
            return (self.fault(fault, call.category), Tally::Fault);
        }
        match self
            .limiter
            .admit(call.category, now, OffsetDateTime::now_utc())
        {
            Admission::Allowed => {}
            Admission::Qps { limit } => {
                let answer = Answer::Qps {
                    category: call.category,
                    limit: Some(limit),
                    retry_after: None,
                    limit_type: None,
                };
                return (answer, Tally::LimitedQps);
            }
            Admission::Daily { limit, resets_at } => {
                return (Answer::Daily { limit, resets_at }, Tally::LimitedDaily);
            }
        }
        match call.op.and_then(|op| self.perform(op, now)) {
            Ok(reply) => (Answer::Reply(reply), Tally::Ok),
            Err(rejection) => (Answer::Rejected(rejection), Tally::Rejected),
        }
    }

    fn fault(&self, fault: Fault, route: Category) -> Answer {
        match fault {
            Fault::Hang(_) => Answer::Hung,
            Fault::Answer {
                status: 429,
                category,
                retry_after,
                limit_type,
                ..
            } => {
                let category = category.unwrap_or(route);
                let limit = self.limiter.limits().per_second(category);
                Answer::Qps {
                    category,
                    limit,
                    retry_after,
                    limit_type,
                }
            }
            Fault::Answer {
                status,
                code,
                message,
                category,
                retry_after,
                limit_type,
            } => Answer::Fault {
                status,
                code,
                message,
                category: category.unwrap_or(route),
                retry_after,
                limit_type,
            },
        }
    }

    fn perform(&mut self, op: Op, now: Instant) -> Result<Reply, Rejection> {
        let dir = &mut self.directory;
        match op {
            Op::Move {
                group,
                user,
                target,
            } => dir
                .move_member(&group, &user, &target)
                .map(|()| Reply::NoContent),
            Op::SetPrimary { group, user } => {
                dir.set_primary(&group, &user).map(|()| Reply::NoContent)
            }
            Op::Add { group, members } => dir
                .add_members(&group, &members)
                .map(|ids| Reply::Added { ids }),
            Op::Remove { group, user } => {
                dir.remove_member(&group, &user).map(|()| Reply::NoContent)
            }
            Op::GetUser { user } => dir.user(&user).map(Reply::User),
            Op::ListGroups { page } => {
                let after = self.resume("groups", &page, now)?;
                let listed = self.directory.groups_page(after.as_deref(), page.size);
                let next = self.next_token("groups", &listed, |g| &g.id, now);
                Ok(Reply::Groups { page: listed, next })
            }
            Op::ListMembers { group, page } => {
                let listing = format!("members:{group}");
                let after = self.resume(&listing, &page, now)?;
                let listed = self
                    .directory
                    .members_page(&group, after.as_deref(), page.size)?;
                let next = self.next_token(&listing, &listed, |m| &m.id, now);
                Ok(Reply::Members {
                    page: listed,
                    size: page.size,
                    next,
                })
            }
        }
    }

    /// Where a listing resumes: nowhere for a first page.
    fn resume(
        &self,
        listing: &str,
        page: &PageQuery,
        now: Instant,
    ) -> Result<Option<String>, Rejection> {
        let Some(token) = &page.token else {
            return Ok(None);
        };
        self.pages
            .resolve(token, listing, now)
            .map(|after| Some(after.to_owned()))
            .ok_or_else(|| {
                Rejection::BadRequest("The next page token is invalid or expired.".into())
            })
    }

    /// The token of the page after `page`; "" on the last page.
    fn next_token<T>(
        &mut self,
        listing: &str,
        page: &Page<T>,
        id: impl Fn(&T) -> &String,
        now: Instant,
    ) -> String {
        match page.items.last() {
            Some(last) if page.more => self.pages.issue(listing, id(last), now),
            _ => String::new(),
        }
    }

    pub fn snapshot(&self) -> FakeState {
        let (groups, users) = self.directory.snapshot();
        FakeState {
            groups,
            users,
            counters: self.counters,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limiter.limits()
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limiter.set_limits(limits);
    }

    pub fn next_window_in(&self, now: Instant) -> Duration {
        self.limiter.next_window_in(now)
    }

    /// The counters alone: cheap enough to poll while thousands of users
    /// are seeded (a snapshot copies them all).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// Scripts a fault at run time (see [`super::FakeHandle::script`]).
    pub fn script(&mut self, fault: ScriptedFault, lasting: Lasting) {
        self.faults.add(fault, lasting);
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Time from the first API call to the latest; zero before two calls.
    pub fn first_to_last(&self) -> Duration {
        self.calls
            .map_or(Duration::ZERO, |(first, last)| last.duration_since(first))
    }

    /// Back to the seed: directory, limits, counters, windows, script (faults
    /// added at run time are gone), page tokens, call times. Issued tokens
    /// stay valid, so connected clients keep working.
    pub fn reset(&mut self) {
        self.directory = Directory::from_seed(&self.seed);
        self.limiter.set_limits(self.seed.limits);
        self.limiter.reset();
        self.faults.reset();
        self.counters = Counters::default();
        self.pages = PageTokens::default();
        self.calls = None;
    }
}
