//! Flaky fakes: which data requests of a vendor fake fail, and how
//! ([`Flakiness`]: a share of them, as the vendor's 429, 500, 503 or a hang
//! ending in 504, from a seed), and the load knobs every fake's gate keeps
//! ([`FakeLoad`]: answers queued by status, the flakiness, a latency, the
//! requests in flight), for tests of pulls under failures.

use std::collections::VecDeque;
use std::time::Duration;

/// How long a flaky fake hangs before it answers 504: a gateway giving up
/// on a slow backend.
pub const FLAKY_HANG: Duration = Duration::from_secs(2);

/// What a flaky fake answers instead of the real answer (each in the
/// vendor's shape, with its rate-limit headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlakyAnswer {
    /// The vendor's throttling answer, with `Retry-After: 1` where the vendor sends one.
    RateLimited,
    /// 500.
    ServerError,
    /// 503.
    Unavailable,
    /// [`FLAKY_HANG`] of silence, then 504.
    Hang,
}

/// What a flaky fake injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlakyTally {
    /// Data requests seen while flaky.
    pub requests: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub unavailable: u64,
    pub hangs: u64,
}

impl FlakyTally {
    pub fn failures(&self) -> u64 {
        self.rate_limited + self.server_errors + self.unavailable + self.hangs
    }
}

/// Picks which data requests of a fake fail, and how: `share` of them, the
/// four [`FlakyAnswer`]s in equal parts, from a seeded sequence (splitmix64)
/// so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Flakiness {
    /// Out of 2^32.
    threshold: u64,
    state: u64,
    tally: FlakyTally,
}

impl Flakiness {
    pub fn new(share: f64, seed: u64) -> Self {
        let share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 0.0 };
        Self { threshold: (share * 4_294_967_296.0) as u64, state: seed, tally: FlakyTally::default() }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next data request: None to answer it as usual.
    pub fn next_answer(&mut self) -> Option<FlakyAnswer> {
        self.tally.requests += 1;
        let roll = self.next_u64();
        if (roll >> 32) >= self.threshold {
            return None;
        }
        let answer = match roll & 3 {
            0 => FlakyAnswer::RateLimited,
            1 => FlakyAnswer::ServerError,
            2 => FlakyAnswer::Unavailable,
            _ => FlakyAnswer::Hang,
        };
        match answer {
            FlakyAnswer::RateLimited => self.tally.rate_limited += 1,
            FlakyAnswer::ServerError => self.tally.server_errors += 1,
            FlakyAnswer::Unavailable => self.tally.unavailable += 1,
            FlakyAnswer::Hang => self.tally.hangs += 1,
        }
        Some(answer)
    }

    pub fn tally(&self) -> FlakyTally {
        self.tally
    }
}

/// What every fake's gate keeps besides its vendor's own answers: answers
/// queued by status, the flakiness, a latency, and the requests in flight.
#[derive(Debug, Default)]
pub struct FakeLoad {
    statuses: VecDeque<(u16, Option<u64>)>,
    flaky: Option<Flakiness>,
    latency: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

impl FakeLoad {
    /// The next request answers `status` (with `Retry-After` when given).
    pub fn fail_next_status(&mut self, status: u16, retry_after: Option<u64>) {
        self.statuses.push_back((status, retry_after));
    }

    /// The status the next request answers, if one was queued.
    pub fn next_status(&mut self) -> Option<(u16, Option<u64>)> {
        self.statuses.pop_front()
    }

    /// See [`FakeDirectory::set_flakiness`](super::FakeDirectory::set_flakiness); 0 turns it off.
    pub fn set_flakiness(&mut self, share: f64, seed: u64) {
        self.flaky = (share > 0.0).then(|| Flakiness::new(share, seed));
    }

    /// What the next data request answers instead, if anything.
    pub fn next_flaky(&mut self) -> Option<FlakyAnswer> {
        self.flaky.as_mut().and_then(Flakiness::next_answer)
    }

    pub fn flaky_tally(&self) -> FlakyTally {
        self.flaky.as_ref().map(Flakiness::tally).unwrap_or_default()
    }

    /// Every data request takes this long to answer, so requests overlap.
    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// A request arrives.
    pub fn arrive(&mut self) {
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    /// A request was answered.
    pub fn leave(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flakiness_fails_its_share_in_four_even_parts_reproducibly() {
        let mut f = Flakiness::new(0.2, 7);
        let answers: Vec<Option<FlakyAnswer>> = (0..10_000).map(|_| f.next_answer()).collect();
        let t = f.tally();
        assert_eq!(t.requests, 10_000);
        assert!((1_800..=2_200).contains(&t.failures()), "{t:?}");
        for kind in [t.rate_limited, t.server_errors, t.unavailable, t.hangs] {
            assert!((400..=600).contains(&kind), "{t:?}");
        }
        let mut again = Flakiness::new(0.2, 7);
        assert!(answers.iter().all(|a| *a == again.next_answer()));
        let mut never = Flakiness::new(0.0, 7);
        assert!((0..1_000).all(|_| never.next_answer().is_none()));
        let mut always = Flakiness::new(1.0, 7);
        assert!((0..1_000).all(|_| always.next_answer().is_some()));
        assert_eq!(Flakiness::new(f64::NAN, 1).next_answer(), None);
    }
}
