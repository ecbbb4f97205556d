//! The mass-removal brake (SPEC §7): removals from an org (and demotions out of the
//! guardian role) are counted over a rolling window, across runs, pushes and pulls;
//! once they would pass a share of the org's members, and at least a minimum number
//! of people, further removals are held for an administrator.

/// Default share, in percent.
pub const DEFAULT_PERCENT: u32 = 10;
/// Default minimum number of removals before the brake can hold a run.
pub const DEFAULT_MIN: u32 = 10;
/// Default window over which removals add up, in seconds.
pub const DEFAULT_WINDOW_SECS: u64 = 3600;
/// Longest window: a week.
pub const MAX_WINDOW_SECS: u64 = 7 * 86_400;

/// A directory's brake settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brake {
    /// Largest share of an org's members removed within the window unasked (1..=100).
    pub max_percent: u32,
    /// Fewer removals than this (within the window) never hold.
    pub min_removals: u32,
    /// How far back removals count, in seconds (60..=a week).
    pub window_secs: u64,
}

impl Default for Brake {
    fn default() -> Self {
        Self { max_percent: DEFAULT_PERCENT, min_removals: DEFAULT_MIN, window_secs: DEFAULT_WINDOW_SECS }
    }
}

impl Brake {
    /// Settings from optional inputs, defaults filled in; `None` when out of range.
    pub fn from_input(percent: Option<u32>, min: Option<u32>, window_secs: Option<u64>) -> Option<Self> {
        let max_percent = percent.unwrap_or(DEFAULT_PERCENT);
        if !(1..=100).contains(&max_percent) {
            return None;
        }
        let window_secs = window_secs.unwrap_or(DEFAULT_WINDOW_SECS);
        if !(60..=MAX_WINDOW_SECS).contains(&window_secs) {
            return None;
        }
        Some(Self { max_percent, min_removals: min.unwrap_or(DEFAULT_MIN), window_secs })
    }

    /// Whether `removals` out of `members` must wait for approval. Held when the
    /// removals are at least the minimum and more than the share of the members.
    /// Integer arithmetic: no rounding decides who is removed.
    pub fn holds(&self, removals: u64, members: u64) -> bool {
        removals >= u64::from(self.min_removals.max(1)) && removals * 100 > members * u64::from(self.max_percent)
    }

    /// Whether `new` removals must wait, given `recent` removals already made from the
    /// org within the window and `members` members now. The share is of the org as it
    /// was before the window's removals (`members + recent`), so trickling removals in
    /// small batches adds up exactly as one large batch would.
    pub fn holds_with(&self, recent: u64, new: u64, members: u64) -> bool {
        new > 0 && self.holds(recent + new, members + recent)
    }

    /// Whether `self` lets more through than `before` (a looser brake): raising the
    /// share, the minimum, or shortening the window. Audited as such.
    pub fn is_looser_than(&self, before: &Brake) -> bool {
        self.max_percent > before.max_percent
            || self.min_removals > before.min_removals
            || self.window_secs < before.window_secs
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
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(Brake::from_input(None, None, None), Some(Brake::default()));
        assert_eq!(Brake::from_input(Some(0), None, None), None);
        assert_eq!(Brake::from_input(Some(101), None, None), None);
        assert_eq!(Brake::from_input(None, None, Some(59)), None);
        assert_eq!(Brake::from_input(None, None, Some(MAX_WINDOW_SECS + 1)), None);
        let b = Brake::from_input(Some(50), Some(1), None).unwrap();
        assert!(!b.holds(5, 10));
        assert!(b.holds(6, 10));
        // 100% never holds: nothing removes more than every member.
        assert!(!Brake::from_input(Some(100), Some(1), None).unwrap().holds(10, 10));
    }

    #[test]
    fn trickled_removals_add_up_like_one_batch() {
        let b = Brake::default();
        // An org of 40: 30 removals arriving two at a time.
        let mut members = 40u64;
        let mut recent = 0u64;
        let mut held_at = None;
        for push in 0..15 {
            if b.holds_with(recent, 2, members) {
                held_at = Some(push);
                break;
            }
            recent += 2;
            members -= 2;
        }
        // 10 removals of an org of 40 is 25%: the fifth push (removals 9 and 10) holds.
        assert_eq!(held_at, Some(4));
        assert_eq!(b.holds(30, 40), b.holds_with(0, 30, 40));
        assert!(!b.holds_with(5, 0, 10), "nothing new never holds");
    }

    #[test]
    fn loosening_is_told_apart() {
        let b = Brake::default();
        assert!(Brake { max_percent: 20, ..b }.is_looser_than(&b));
        assert!(Brake { min_removals: 50, ..b }.is_looser_than(&b));
        assert!(Brake { window_secs: 60, ..b }.is_looser_than(&b));
        assert!(!Brake { max_percent: 5, ..b }.is_looser_than(&b));
        assert!(!b.is_looser_than(&b));
    }
}
