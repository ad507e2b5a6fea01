//! The seed file: the account the fake starts with (groups, users, token
//! settings), its rate limits and its faults. TOML or JSON, by the file's
//! extension. Unknown keys are errors, so a typo cannot silently leave a
//! default in force, and references are checked at load (a user in a group
//! that does not exist is a broken seed, not a 404 at demo time).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::faults::FaultsConfig;
use super::limits::Limits;

/// Everything the fake is started with: the seed file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub groups: Vec<SeedGroup>,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub faults: FaultsConfig,
}

/// `[auth]`: what the token endpoint accepts and answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The `scope` of issued tokens.
    #[serde(default = "default_scopes")]
    pub scopes: String,
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
    /// When set, only these credentials get a token; otherwise any do.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
}

fn default_scopes() -> String {
    "group:write:admin user:read:admin".to_owned()
}

fn default_lifetime() -> u64 {
    3600
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            scopes: default_scopes(),
            token_lifetime_secs: default_lifetime(),
            account_id: None,
            client_id: None,
            client_secret: None,
        }
    }
}

/// `[[groups]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedGroup {
    pub id: String,
    pub name: String,
}

/// `[[users]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// One of `groups`.
    #[serde(default)]
    pub primary_group: Option<String>,
}

/// Why a seed file cannot be used.
#[derive(Debug, Error)]
pub enum SeedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the seed file must end in .toml or .json")]
    Extension { path: PathBuf },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: TomlError },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: SeedProblem },
}

/// A TOML seed that does not fit the seed's shape. Shown as the problem and
/// the key it is at (`limits.medum`), without figment's profile prefix.
#[derive(Debug, Error)]
pub struct TomlError(Box<figment::Error>);

impl std::fmt::Display for TomlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.kind)?;
        if !self.0.path.is_empty() {
            write!(f, " (key `{}`)", self.0.path.join("."))?;
        }
        Ok(())
    }
}

/// A seed that parses but does not describe a consistent account.
#[derive(Debug, Error, PartialEq)]
pub enum SeedProblem {
    #[error("group {0:?} is listed twice")]
    DuplicateGroup(String),
    #[error("user {0:?} is listed twice")]
    DuplicateUser(String),
    #[error("email {0:?} belongs to two users")]
    DuplicateEmail(String),
    #[error("user {user:?} is in group {group:?}, which is not in [[groups]]")]
    UnknownGroup { user: String, group: String },
    #[error("user {user:?}: primary_group {group:?} is not one of its groups")]
    PrimaryNotMember { user: String, group: String },
    #[error("an id or email is empty")]
    Empty,
    #[error(
        "faults.{key} = {value} must be between 0 and 1, and the three rates at most 1 together"
    )]
    Rate { key: &'static str, value: f64 },
}

impl FakeConfig {
    /// Reads a seed file: TOML for `.toml`, JSON for `.json`; then checks it.
    pub fn from_file(path: &Path) -> Result<Self, SeedError> {
        let owned = || path.to_path_buf();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
            path: owned(),
            source,
        })?;
        let config = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::from_toml_str(&text).map_err(|source| SeedError::Toml {
                path: owned(),
                source,
            })?,
            Some("json") => serde_json::from_str(&text).map_err(|source| SeedError::Json {
                path: owned(),
                source,
            })?,
            _ => return Err(SeedError::Extension { path: owned() }),
        };
        config.validate().map_err(|problem| SeedError::Invalid {
            path: owned(),
            problem,
        })?;
        Ok(config)
    }

    /// Parses TOML text (not checked: see [`FakeConfig::validate`]).
    pub fn from_toml_str(text: &str) -> Result<Self, TomlError> {
        Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| TomlError(Box::new(e)))
    }

    /// Adds a group (for seeds built in code).
    pub fn group(mut self, id: &str, name: &str) -> Self {
        self.groups.push(SeedGroup {
            id: id.into(),
            name: name.into(),
        });
        self
    }

    /// Adds a user in `groups`, the first of them primary.
    pub fn user(mut self, id: &str, email: &str, groups: &[&str]) -> Self {
        self.users.push(SeedUser {
            id: id.into(),
            email: email.into(),
            first_name: String::new(),
            last_name: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            primary_group: groups.first().map(|g| (*g).to_owned()),
        });
        self
    }

    /// The checks a file gets at load; [`super::spawn`] runs them too.
    pub fn validate(&self) -> Result<(), SeedProblem> {
        let mut groups = HashSet::new();
        for g in &self.groups {
            if g.id.is_empty() {
                return Err(SeedProblem::Empty);
            }
            if !groups.insert(g.id.as_str()) {
                return Err(SeedProblem::DuplicateGroup(g.id.clone()));
            }
        }
        let (mut ids, mut emails) = (HashSet::new(), HashSet::new());
        for u in &self.users {
            if u.id.is_empty() || u.email.is_empty() {
                return Err(SeedProblem::Empty);
            }
            if !ids.insert(u.id.as_str()) {
                return Err(SeedProblem::DuplicateUser(u.id.clone()));
            }
            if !emails.insert(u.email.to_lowercase()) {
                return Err(SeedProblem::DuplicateEmail(u.email.clone()));
            }
            check_user_groups(u, &groups)?;
        }
        self.check_rates()
    }

    fn check_rates(&self) -> Result<(), SeedProblem> {
        let f = &self.faults;
        let rates = [
            ("rate_limit_rate", f.rate_limit_rate),
            ("server_error_rate", f.server_error_rate),
            ("timeout_rate", f.timeout_rate),
        ];
        let total: f64 = rates.iter().map(|(_, r)| r).sum();
        for (key, value) in rates {
            if !(0.0..=1.0).contains(&value) || total > 1.0 {
                return Err(SeedProblem::Rate { key, value });
            }
        }
        Ok(())
    }
}

fn check_user_groups(user: &SeedUser, groups: &HashSet<&str>) -> Result<(), SeedProblem> {
    if let Some(group) = user.groups.iter().find(|g| !groups.contains(g.as_str())) {
        return Err(SeedProblem::UnknownGroup {
            user: user.id.clone(),
            group: group.clone(),
        });
    }
    if let Some(primary) = &user.primary_group
        && !user.groups.contains(primary)
    {
        return Err(SeedProblem::PrimaryNotMember {
            user: user.id.clone(),
            group: primary.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write seed");
        (dir, path)
    }

    #[test]
    fn a_toml_seed_loads_with_defaults() {
        let (_dir, path) = write(
            "s.toml",
            "[[groups]]\nid = \"g1\"\nname = \"One\"\n\n\
             [[users]]\nid = \"u1\"\nemail = \"a@x.com\"\ngroups = [\"g1\"]\n\n\
             [limits]\nmedium = 5\n",
        );
        let config = FakeConfig::from_file(&path).expect("valid seed");
        assert_eq!(config.users[0].groups, ["g1"]);
        assert_eq!(config.limits.medium, Some(5));
        assert_eq!(
            config.limits.light, None,
            "a table names every limit it wants"
        );
        assert_eq!(config.auth.token_lifetime_secs, 3600);
        assert_eq!(config.faults.timeout_ms, 30_000);
    }

    #[test]
    fn a_json_seed_loads() {
        let (_dir, path) = write("s.json", r#"{"groups":[{"id":"g","name":"G"}]}"#);
        let config = FakeConfig::from_file(&path).expect("valid seed");
        assert_eq!(config.groups.len(), 1);
        assert_eq!(config.limits, Limits::default(), "no table: the Pro plan");
    }

    #[test]
    fn an_unknown_key_names_the_key() {
        let (_dir, path) = write("s.toml", "[limits]\nmedum = 5\n");
        let error = FakeConfig::from_file(&path).expect_err("typo").to_string();
        assert!(error.contains("medum"), "{error}");
        assert!(error.contains("s.toml"), "{error}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let (_dir, path) = write("s.toml", "[faults]\nlatency_ms = \"fast\"\n");
        let error = FakeConfig::from_file(&path).expect_err("type").to_string();
        assert!(error.contains("latency_ms"), "{error}");
    }

    #[test]
    fn broken_references_are_refused() {
        let (_dir, path) = write(
            "s.toml",
            "[[users]]\nid = \"u1\"\nemail = \"a@x.com\"\ngroups = [\"nope\"]\n",
        );
        let error = FakeConfig::from_file(&path)
            .expect_err("unknown group")
            .to_string();
        assert!(error.contains("\"nope\""), "{error}");
        let dup = FakeConfig::default()
            .user("u1", "a@x.com", &[])
            .user("u2", "A@x.com", &[]);
        assert_eq!(
            dup.validate(),
            Err(SeedProblem::DuplicateEmail("A@x.com".into()))
        );
    }

    #[test]
    fn other_extensions_and_missing_files_are_refused() {
        let (_dir, path) = write("s.yaml", "");
        assert!(matches!(
            FakeConfig::from_file(&path),
            Err(SeedError::Extension { .. })
        ));
        let missing = FakeConfig::from_file(Path::new("/nonexistent/seed.toml"));
        assert!(matches!(missing, Err(SeedError::Read { .. })));
    }

    #[test]
    fn rates_over_one_are_refused() {
        let mut config = FakeConfig::default();
        config.faults.server_error_rate = 0.7;
        config.faults.timeout_rate = 0.5;
        assert!(matches!(config.validate(), Err(SeedProblem::Rate { .. })));
    }

    #[test]
    fn the_example_seed_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../demo/zoom-fake.seed.toml");
        let config = FakeConfig::from_file(&path).expect("example seed");
        assert!(config.groups.len() >= 4 && config.users.len() >= 6);
    }
}
