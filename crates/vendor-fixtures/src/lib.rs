//! The vendors' own examples, for tests: `fixtures/vendor/<vendor>/*.json`.
//!
//! Every format the daemon exchanges with the outside world (Zoom's
//! answers, BambooHR's webhooks and API, Standard Webhooks' signatures) is
//! tested against these copies of the vendors' documents, never against a
//! shape written from our own reading. Each file names its page (`source`)
//! and the day it was read (`read`); `note` says where the vendor is silent
//! or contradicts itself and what we chose. The client's tests, the
//! receiver's tests and zoom-fake's tests all read the same files.
//!
//! Public (and hidden from the docs) so the integration tests share this one
//! loader; the daemon itself never reads a fixture.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The fixtures folder of this source tree.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vendor")
}

/// One vendor example with where it comes from.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    /// The vendor page's address.
    pub source: String,
    /// The day it was read, `YYYY-MM-DD`.
    pub read: String,
    pub title: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub request: Option<Message>,
    #[serde(default)]
    pub response: Option<Message>,
    /// Whatever else the example carries (`vectors`, `scheme`, …).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A request or an answer as the vendor shows it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// A body that is not JSON (a form post), as the page shows it.
    #[serde(default)]
    pub body_text: Option<String>,
}

impl Message {
    /// The body's bytes: the text as shown, or the JSON as compact text.
    pub fn body_bytes(&self) -> Vec<u8> {
        match (&self.body_text, &self.body) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(json)) => json.to_string().into_bytes(),
            (None, None) => Vec::new(),
        }
    }

    /// A header by name, regardless of case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Fixture {
    /// `fixtures/vendor/<relative>`; panics (it is for tests) when the file
    /// is missing or not a fixture.
    pub fn load(relative: &str) -> Self {
        let path = dir().join(relative);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("vendor fixture {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("vendor fixture {}: {e}", path.display()))
    }

    pub fn request(&self) -> &Message {
        self.request.as_ref().expect("the fixture shows a request")
    }

    pub fn response(&self) -> &Message {
        self.response
            .as_ref()
            .expect("the fixture shows a response")
    }

    /// The response's JSON body.
    pub fn response_body(&self) -> &Value {
        self.response()
            .body
            .as_ref()
            .expect("the fixture's response has a JSON body")
    }
}

/// Every fixture file, relative to [`dir`], sorted.
pub fn all() -> Vec<String> {
    let mut found = Vec::new();
    for vendor in std::fs::read_dir(dir()).expect("fixtures/vendor") {
        let vendor = vendor.expect("entry").path();
        if !vendor.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&vendor).expect("vendor folder") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "json") {
                let relative = file.strip_prefix(dir()).expect("under dir");
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// `fixtures/vendor/MANIFEST`: `sha256  path` per fixture. A fixture
    /// removed, added or changed without the manifest fails here: each is a
    /// copy of a vendor's page, so a change must be a deliberate re-read.
    #[test]
    fn every_fixture_is_in_the_manifest_unchanged() {
        let manifest = std::fs::read_to_string(dir().join("MANIFEST")).expect("MANIFEST");
        let listed: Vec<(String, String)> = manifest
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (hash, path) = l.split_once("  ").expect("`sha256  path` lines");
                (path.trim().to_owned(), hash.trim().to_owned())
            })
            .collect();
        let mut paths: Vec<String> = listed.iter().map(|(p, _)| p.clone()).collect();
        paths.sort();
        assert_eq!(paths, all(), "the manifest lists exactly the fixture files");
        for (path, hash) in listed {
            let bytes = std::fs::read(dir().join(&path)).expect("read");
            let got = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(
                got, hash,
                "{path} changed: re-read its source, then update MANIFEST"
            );
        }
    }

    #[test]
    fn every_fixture_names_its_page_and_the_day_it_was_read() {
        let files = all();
        assert!(files.len() >= 20, "{files:?}");
        for file in files {
            let fixture = Fixture::load(&file);
            assert!(
                fixture.source.starts_with("https://"),
                "{file}: {}",
                fixture.source
            );
            let date = time::Date::parse(
                &fixture.read,
                time::macros::format_description!("[year]-[month]-[day]"),
            );
            assert!(date.is_ok(), "{file}: read {:?}", fixture.read);
            assert!(!fixture.title.trim().is_empty(), "{file}: a title");
        }
    }
}
