//! The safety threshold of `--apply`: a plan that would change a large part
//! of the managed members is more likely a wrong export (a truncated file,
//! the wrong column) than real drift, so it needs `--allow-large`.

/// The default largest number of changes: 20 % of the managed members
/// (rounded down), at most 500.
pub fn default_max_changes(managed_members: usize) -> usize {
    (managed_members / 5).min(500)
}

/// A plan over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the plan changes {changes} people of {managed_members} managed members, over the limit of \
     {limit} (--max-changes; default 20 % of managed members or 500, whichever is smaller); \
     nothing published; add --allow-large to apply it anyway"
)]
pub struct OverThreshold {
    pub changes: usize,
    pub managed_members: usize,
    pub limit: usize,
}

/// `Ok` when `changes` may be applied: within `max_changes` (or the
/// default), or `allow_large`.
pub fn check_threshold(
    changes: usize,
    managed_members: usize,
    max_changes: Option<usize>,
    allow_large: bool,
) -> Result<(), OverThreshold> {
    let limit = max_changes.unwrap_or_else(|| default_max_changes(managed_members));
    if changes <= limit || allow_large {
        Ok(())
    } else {
        Err(OverThreshold {
            changes,
            managed_members,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_fifth_rounded_down_at_most_500() {
        assert_eq!(default_max_changes(0), 0);
        assert_eq!(default_max_changes(4), 0);
        assert_eq!(default_max_changes(10), 2);
        assert_eq!(default_max_changes(14), 2);
        assert_eq!(default_max_changes(2_500), 500);
        assert_eq!(default_max_changes(2_504), 500);
        assert_eq!(default_max_changes(100_000), 500);
    }

    #[test]
    fn more_than_the_limit_is_refused_unless_allowed() {
        assert_eq!(check_threshold(2, 10, None, false), Ok(()));
        let over = check_threshold(3, 10, None, false).unwrap_err();
        assert_eq!((over.changes, over.managed_members, over.limit), (3, 10, 2));
        assert!(over.to_string().contains("3 people of 10"), "{over}");
        assert_eq!(check_threshold(3, 10, None, true), Ok(()));
        assert_eq!(check_threshold(3, 10, Some(3), false), Ok(()));
        assert!(check_threshold(1, 10, Some(0), false).is_err());
        assert_eq!(check_threshold(0, 0, None, false), Ok(()));
    }
}
