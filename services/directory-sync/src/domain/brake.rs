//! The mass-removal brake (SPEC §7): a run that would remove more than a share of an
//! org's members, and at least a minimum number of people, is held for an administrator.

/// Default share, in percent.
pub const DEFAULT_PERCENT: u32 = 10;
/// Default minimum number of removals before the brake can hold a run.
pub const DEFAULT_MIN: u32 = 10;

/// A directory's brake settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brake {
    /// Largest share of an org's members one run may remove unasked (1..=100).
    pub max_percent: u32,
    /// Fewer removals than this never hold a run.
    pub min_removals: u32,
}

impl Default for Brake {
    fn default() -> Self {
        Self { max_percent: DEFAULT_PERCENT, min_removals: DEFAULT_MIN }
    }
}

impl Brake {
    /// Settings from optional inputs, defaults filled in; `None` when out of range.
    pub fn from_input(percent: Option<u32>, min: Option<u32>) -> Option<Self> {
        let max_percent = percent.unwrap_or(DEFAULT_PERCENT);
        if !(1..=100).contains(&max_percent) {
            return None;
        }
        Some(Self { max_percent, min_removals: min.unwrap_or(DEFAULT_MIN) })
    }

    /// Whether `removals` out of `members` must wait for approval. Held when the
    /// removals are at least the minimum and more than the share of the members.
    /// Integer arithmetic: no rounding decides who is removed.
    pub fn holds(&self, removals: u64, members: u64) -> bool {
        removals >= u64::from(self.min_removals.max(1)) && removals * 100 > members * u64::from(self.max_percent)
    }

    /// Whether counting the org's members is needed at all: below the minimum the
    /// brake never holds, so a small change costs no count.
    pub fn may_hold(&self, removals: u64) -> bool {
        removals >= u64::from(self.min_removals.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_above_ten_percent_and_ten_people() {
        let b = Brake::default();
        // 9 of 10 members: most of the org, but fewer than 10 people.
        assert!(!b.holds(9, 10));
        // 10 of 100 is exactly 10%: not more than the share.
        assert!(!b.holds(10, 100));
        assert!(b.holds(11, 100));
        // 10 of 50 is 20% and 10 people.
        assert!(b.holds(10, 50));
        assert!(!b.holds(100, 1000));
        assert!(b.holds(101, 1000));
        assert!(!b.may_hold(9));
        assert!(b.may_hold(10));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(Brake::from_input(None, None), Some(Brake::default()));
        assert_eq!(Brake::from_input(Some(0), None), None);
        assert_eq!(Brake::from_input(Some(101), None), None);
        let b = Brake::from_input(Some(50), Some(1)).unwrap();
        assert!(!b.holds(5, 10));
        assert!(b.holds(6, 10));
        // 100% never holds: nothing removes more than every member.
        assert!(!Brake::from_input(Some(100), Some(1)).unwrap().holds(10, 10));
    }
}
