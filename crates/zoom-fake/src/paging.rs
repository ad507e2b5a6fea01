//! `next_page_token`s. Zoom's tokens are opaque and expire after 15 minutes;
//! the fake's are random strings that remember where the page ended (the
//! last id, so a listing stays consistent while members move) and what was
//! listed, so a token from another group's listing, a made-up one or an
//! expired one is refused with code 300, as Zoom does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a token may be used.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Tokens kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug)]
struct Cursor {
    listing: String,
    after: String,
    issued: Instant,
}

/// The tokens handed out and not yet expired.
#[derive(Debug)]
pub struct PageTokens {
    issued: HashMap<String, Cursor>,
    rng: fastrand::Rng,
}

impl Default for PageTokens {
    fn default() -> Self {
        Self {
            issued: HashMap::new(),
            rng: fastrand::Rng::new(),
        }
    }
}

impl PageTokens {
    /// A token for the page of `listing` that follows `after`.
    pub fn issue(&mut self, listing: &str, after: &str, now: Instant) -> String {
        if self.issued.len() >= SWEEP_AT {
            self.issued
                .retain(|_, c| now.duration_since(c.issued) < TOKEN_LIFETIME);
        }
        let token: String = (0..32).map(|_| self.rng.alphanumeric()).collect();
        let cursor = Cursor {
            listing: listing.to_owned(),
            after: after.to_owned(),
            issued: now,
        };
        self.issued.insert(token.clone(), cursor);
        token
    }

    /// Where a page of `listing` starts: `None` for an unknown, foreign or
    /// expired token.
    pub fn resolve(&self, token: &str, listing: &str, now: Instant) -> Option<&str> {
        let cursor = self.issued.get(token)?;
        let fresh = now.saturating_duration_since(cursor.issued) < TOKEN_LIFETIME;
        (fresh && cursor.listing == listing).then_some(cursor.after.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_only_for_its_listing_and_its_lifetime() {
        let mut tokens = PageTokens::default();
        let now = Instant::now();
        let token = tokens.issue("group:eng", "u7", now);
        assert_eq!(tokens.resolve(&token, "group:eng", now), Some("u7"));
        assert_eq!(tokens.resolve(&token, "group:sales", now), None);
        assert_eq!(tokens.resolve("made-up", "group:eng", now), None);
        assert_eq!(
            tokens.resolve(&token, "group:eng", now + TOKEN_LIFETIME),
            None
        );
    }
}
