//! Which Zoom API a request is, its rate-limit category, and what it asks
//! for. Parsing happens before the account's lock is taken, so the critical
//! section only looks things up; a bad body is kept as a [`Rejection`] and
//! answered only after authentication and rate limiting, in Zoom's order.

use std::borrow::Cow;

use axum::http::Method;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::limits::Category;
use super::state::{MemberRef, Rejection};

/// Zoom's default page size, and the most it returns at once.
pub const DEFAULT_PAGE_SIZE: usize = 30;
pub const MAX_PAGE_SIZE: usize = 300;

/// Members one `POST /groups/{id}/members` may add.
pub const MAX_ADD: usize = 30;

/// `page_size` and `next_page_token` of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub size: usize,
    pub token: Option<String>,
}

/// What an API call asks the account to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Move {
        group: String,
        user: String,
        target: String,
    },
    SetPrimary {
        group: String,
        user: String,
    },
    Add {
        group: String,
        members: Vec<MemberRef>,
    },
    Remove {
        group: String,
        user: String,
    },
    GetUser {
        user: String,
    },
    ListGroups {
        page: PageQuery,
    },
    ListMembers {
        group: String,
        page: PageQuery,
    },
}

/// A recognised API call: its category, and the operation or why the
/// request itself is malformed.
#[derive(Debug)]
pub struct ApiCall {
    pub category: Category,
    pub op: Result<Op, Rejection>,
}

impl ApiCall {
    /// `None` for a path that is no Zoom API the fake serves (404).
    pub fn parse(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Option<Self> {
        let rest = path.strip_prefix("/v2/")?;
        let segments: Vec<Cow<'_, str>> = rest.split('/').map(decode).collect::<Option<_>>()?;
        let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
        let owned = |s: &str| s.to_owned();
        let (category, op) = match (method.as_str(), segments.as_slice()) {
            ("PATCH", ["groups", g, "members", u]) => (Category::Medium, patch(g, u, body)),
            ("POST", ["groups", g, "members"]) => (Category::Medium, add(g, body)),
            ("DELETE", ["groups", g, "members", u]) => (
                Category::Light,
                Ok(Op::Remove {
                    group: owned(g),
                    user: owned(u),
                }),
            ),
            ("GET", ["users", u]) => (Category::Light, Ok(Op::GetUser { user: owned(u) })),
            ("GET", ["groups"]) => (
                Category::Medium,
                page(query).map(|page| Op::ListGroups { page }),
            ),
            ("GET", ["groups", g, "members"]) => (
                Category::Medium,
                page(query).map(|page| Op::ListMembers {
                    group: owned(g),
                    page,
                }),
            ),
            _ => return None,
        };
        Some(ApiCall { category, op })
    }
}

/// A path segment, percent-decoded; `None` for an empty or non-UTF-8 one.
fn decode(segment: &str) -> Option<Cow<'_, str>> {
    let decoded = percent_decode_str(segment).decode_utf8().ok()?;
    (!decoded.is_empty()).then_some(decoded)
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::BadRequest(message.into())
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum PatchBody {
    Move { target_group_id: String },
    SetPrimary {},
}

fn patch(group: &str, user: &str, body: &[u8]) -> Result<Op, Rejection> {
    let body: PatchBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid request body: {e}.")))?;
    let (group, user) = (group.to_owned(), user.to_owned());
    match body {
        PatchBody::Move { target_group_id } if target_group_id.is_empty() => {
            // Zoom's documented 300 (fixture `zoom/error.300.json`).
            Err(bad("The target_group_id can not be empty."))
        }
        PatchBody::Move { target_group_id } => Ok(Op::Move {
            group,
            user,
            target: target_group_id,
        }),
        PatchBody::SetPrimary {} => Ok(Op::SetPrimary { group, user }),
    }
}

#[derive(Deserialize)]
struct AddBody {
    members: Vec<AddMember>,
}

#[derive(Deserialize)]
struct AddMember {
    id: Option<String>,
    email: Option<String>,
}

fn add(group: &str, body: &[u8]) -> Result<Op, Rejection> {
    let body: AddBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid request body: {e}.")))?;
    if body.members.is_empty() || body.members.len() > MAX_ADD {
        return Err(bad(format!("members must list 1 to {MAX_ADD} users.")));
    }
    let members = body
        .members
        .into_iter()
        .map(|m| match (m.id, m.email) {
            (Some(id), _) if !id.is_empty() => Ok(MemberRef::Id(id)),
            (_, Some(email)) if !email.is_empty() => Ok(MemberRef::Email(email)),
            _ => Err(bad("Each member needs an id or an email.")),
        })
        .collect::<Result<_, _>>()?;
    Ok(Op::Add {
        group: group.to_owned(),
        members,
    })
}

/// `page_size` (default 30, at most 300) and `next_page_token`.
fn page(query: Option<&str>) -> Result<PageQuery, Rejection> {
    let mut page = PageQuery {
        size: DEFAULT_PAGE_SIZE,
        token: None,
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "page_size" => {
                let size: usize = value
                    .parse()
                    .map_err(|_| bad(format!("Invalid field: page_size={value}.")))?;
                page.size = match size {
                    0 => DEFAULT_PAGE_SIZE,
                    n => n.min(MAX_PAGE_SIZE),
                };
            }
            "next_page_token" if !value.is_empty() => page.token = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str, query: Option<&str>, body: &str) -> ApiCall {
        ApiCall::parse(&method, path, query, body.as_bytes()).expect("an API path")
    }

    #[test]
    fn routes_have_zooms_categories() {
        let move_body = r#"{"action":"move","target_group_id":"g2"}"#;
        let call = parse(Method::PATCH, "/v2/groups/g1/members/u1", None, move_body);
        assert_eq!(call.category, Category::Medium);
        assert_eq!(
            call.op,
            Ok(Op::Move {
                group: "g1".into(),
                user: "u1".into(),
                target: "g2".into()
            })
        );
        let call = parse(Method::DELETE, "/v2/groups/g1/members/u1", None, "");
        assert_eq!(call.category, Category::Light);
        let call = parse(Method::GET, "/v2/users/jane%40example.com", None, "");
        assert_eq!(
            (call.category, call.op),
            (
                Category::Light,
                Ok(Op::GetUser {
                    user: "jane@example.com".into()
                })
            )
        );
        assert!(ApiCall::parse(&Method::GET, "/v2/meetings", None, b"").is_none());
        assert!(ApiCall::parse(&Method::PUT, "/v2/groups", None, b"").is_none());
    }

    #[test]
    fn bad_bodies_and_queries_are_code_300() {
        for body in ["", "{}", r#"{"action":"fly"}"#, r#"{"action":"move"}"#] {
            let call = parse(Method::PATCH, "/v2/groups/g/members/u", None, body);
            assert_eq!(call.op.expect_err(body).code(), 300, "{body}");
        }
        let call = parse(
            Method::PATCH,
            "/v2/groups/g/members/u",
            None,
            r#"{"action":"set_primary"}"#,
        );
        assert_eq!(
            call.op,
            Ok(Op::SetPrimary {
                group: "g".into(),
                user: "u".into()
            })
        );
        // Zoom's Add group members takes at most 30 members a call (its
        // schema's `maximum`, fixture `zoom/groups.members.add.request.json`).
        let documented = zds_vendor_fixtures::Fixture::load("zoom/groups.members.add.request.json");
        let maximum = &documented.rest["documented_schema"]["properties"]["members"]["maximum"];
        assert_eq!(maximum.as_u64(), Some(MAX_ADD as u64));
        let too_many = format!(r#"{{"members":[{}]}}"#, vec![r#"{"id":"u"}"#; 31].join(","));
        let call = parse(Method::POST, "/v2/groups/g/members", None, &too_many);
        assert_eq!(call.op.expect_err("31 members").code(), 300);
        let call = parse(Method::GET, "/v2/groups", Some("page_size=ten"), "");
        assert_eq!(call.op.expect_err("page size").code(), 300);
    }

    #[test]
    fn page_sizes_are_clamped() {
        let call = parse(
            Method::GET,
            "/v2/groups/g/members",
            Some("page_size=1000&next_page_token=t"),
            "",
        );
        let page = PageQuery {
            size: 300,
            token: Some("t".into()),
        };
        assert_eq!(
            call.op,
            Ok(Op::ListMembers {
                group: "g".into(),
                page
            })
        );
    }
}
