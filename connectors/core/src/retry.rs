//! The one retry policy of every connector, as a pure function
//! ([`RetryPolicy::decide`]), and the record of what a pull waited for
//! ([`WaitLog`], [`Waits`], [`WaitNote`]).
//!
//! The policy (`docs/connectors.md`, "Retries and rate limits"):
//!
//! * a throttling answer (429, a 503 carrying `Retry-After`, or a vendor's
//!   own throttling answer such as Google's 403 `rateLimitExceeded`) waits for
//!   `Retry-After`, else for the vendor's reset header, else backs off;
//! * a reset header alone is a wait only when the window is spent
//!   (`Remaining` is 0): a 5xx saying `Remaining: 999999` and a reset a
//!   minute away is not a reason to wait a minute;
//! * 5xx answers, timeouts and dropped connections back off exponentially,
//!   with jitter, from the configured base, each step capped;
//! * a wait the vendor asks for beyond `max_wait` fails the request as
//!   [`ConnectorError::RateLimited`](crate::ConnectorError::RateLimited)
//!   instead of stalling the pull; so do attempts used up.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::http::HttpSettings;

/// What went wrong with one attempt, as the retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The vendor said to slow down: a 429, a 503 with `Retry-After` (how
    /// Graph and SharePoint throttle), or the vendor's own throttling answer
    /// (Google's 403 `rateLimitExceeded`). `status` is the HTTP status.
    Throttled { status: u16 },
    /// A 500, 502, 503 (without `Retry-After`) or 504.
    ServerError { status: u16 },
    /// No answer within the request timeout.
    Timeout,
    /// The connection could not be made, or was reset before the answer was read.
    Connection,
}

impl Trouble {
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttled { status } | Self::ServerError { status } => write!(f, "a {status}"),
            Self::Timeout => f.write_str("a timeout"),
            Self::Connection => f.write_str("a connection error"),
        }
    }
}

/// What one answer's headers said about the vendor's rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateSignal {
    /// `Retry-After`, as a delay from now.
    pub retry_after: Option<Duration>,
    /// Requests left in the current window (Okta's `X-Rate-Limit-Remaining`).
    pub remaining: Option<i64>,
    /// How long until the window resets (Okta's `X-Rate-Limit-Reset`, from now).
    pub reset_in: Option<Duration>,
}

impl RateSignal {
    /// The window is used up: the next request would be throttled.
    pub fn window_spent(&self) -> bool {
        self.remaining.is_some_and(|left| left <= 0)
    }
}

/// Where a wait's length came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The vendor's `Retry-After`.
    RetryAfter,
    /// The vendor's rate-limit reset header.
    RateLimitReset,
    /// Exponential backoff with jitter.
    Backoff,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait `wait`, then send again.
    Retry { wait: Duration, reason: WaitReason },
    /// The attempts are used up.
    GiveUp,
    /// The vendor asked for a wait longer than the longest acceptable one.
    TooLong { wait: Duration },
}

/// The retry knobs of one client: attempts, exponential backoff with equal
/// jitter and a cap, and the longest wait accepted from the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff step; it doubles per retry.
    pub base: Duration,
    /// Largest backoff step.
    pub cap: Duration,
    /// Longest wait accepted from `Retry-After` or a reset header.
    pub max_wait: Duration,
}

impl RetryPolicy {
    pub fn from_settings(settings: &HttpSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts.max(1),
            base: Duration::from_millis(settings.backoff_base_ms),
            cap: Duration::from_millis(settings.backoff_cap_ms),
            max_wait: Duration::from_secs(settings.max_wait_secs),
        }
    }

    /// The wait before retry number `retry` (1-based), with a random jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.backoff_with(retry, rand::random::<f64>())
    }

    /// The wait before retry number `retry` (1-based): half of
    /// `min(cap, base * 2^(retry-1))` plus `jitter` (0 to 1) of the other
    /// half. Equal jitter keeps a floor (a retry never comes at once) while
    /// spreading concurrent requests that failed together.
    pub fn backoff_with(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
        let step = self.base.saturating_mul(factor).min(self.cap);
        let half = step / 2;
        let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        half + half.mul_f64(jitter)
    }

    /// The policy itself: what to do after attempt number `attempt`
    /// (1-based) met `trouble`, the answer's headers saying `signal`.
    /// `jitter` (0 to 1) is the random part of a backoff.
    pub fn decide(&self, trouble: Trouble, signal: &RateSignal, attempt: u32, jitter: f64) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let backoff = RetryDecision::Retry { wait: self.backoff_with(attempt, jitter), reason: WaitReason::Backoff };
        let asked = |wait: Duration, reason: WaitReason| {
            if wait > self.max_wait { RetryDecision::TooLong { wait } } else { RetryDecision::Retry { wait, reason } }
        };
        // A reset that has come already (or a clock ahead of the vendor's) is no wait:
        // back off instead of sending again at once.
        let reset = signal.reset_in.filter(|r| !r.is_zero());
        match trouble {
            Trouble::Throttled { .. } => match (signal.retry_after, reset) {
                (Some(wait), _) => asked(wait, WaitReason::RetryAfter),
                (None, Some(reset)) => asked(reset, WaitReason::RateLimitReset),
                (None, None) => backoff,
            },
            // An error is not a throttle: its rate-limit headers only matter when they say
            // the window is spent (the retry would be throttled), never as a wait by themselves.
            Trouble::ServerError { .. } | Trouble::Timeout | Trouble::Connection => match reset {
                Some(reset) if signal.window_spent() => asked(reset, WaitReason::RateLimitReset),
                _ => backoff,
            },
        }
    }
}

/// What a connector waited for, for a pull's outcome: rate-limit waits and
/// retries after errors. `Display` is the sentence a run's outcome shows,
/// e.g. `waited 3 s for Okta's rate limit (2 waits), 2 retries after 5xx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Whose rate limit (`Okta`, `Microsoft Graph`, `Google`).
    pub vendor: &'static str,
    /// Waits for the rate limit: after a throttling answer, or before a
    /// request whose window the vendor said was spent.
    pub rate_limit_waits: u32,
    /// How long at least one request was waiting for the rate limit
    /// (overlapping waits of concurrent requests count once).
    pub rate_limit_time: Duration,
    /// Retries after a 5xx answer.
    pub retries_after_5xx: u32,
    /// Retries after a request timed out.
    pub retries_after_timeouts: u32,
    /// Retries after the connection failed or was reset.
    pub retries_after_connection_errors: u32,
    /// The backoff slept before those retries, summed over requests.
    pub backoff_time: Duration,
}

impl Waits {
    /// Nothing was waited for.
    pub fn is_empty(&self) -> bool {
        self.rate_limit_waits == 0 && self.retries() == 0
    }

    /// Retries after errors, of every kind.
    pub fn retries(&self) -> u32 {
        self.retries_after_5xx + self.retries_after_timeouts + self.retries_after_connection_errors
    }

    /// What was waited for since `earlier` (a snapshot of the same log).
    pub fn since(&self, earlier: &Waits) -> Waits {
        Waits {
            vendor: self.vendor,
            rate_limit_waits: self.rate_limit_waits.saturating_sub(earlier.rate_limit_waits),
            rate_limit_time: self.rate_limit_time.saturating_sub(earlier.rate_limit_time),
            retries_after_5xx: self.retries_after_5xx.saturating_sub(earlier.retries_after_5xx),
            retries_after_timeouts: self.retries_after_timeouts.saturating_sub(earlier.retries_after_timeouts),
            retries_after_connection_errors: self
                .retries_after_connection_errors
                .saturating_sub(earlier.retries_after_connection_errors),
            backoff_time: self.backoff_time.saturating_sub(earlier.backoff_time),
        }
    }
}

/// `0.4 s`, `3.2 s`, `42 s`, `2 min 5 s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{} s", secs.round() as u64)
    } else {
        let whole = secs.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

impl fmt::Display for Waits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vendor = if self.vendor.is_empty() { "the api" } else { self.vendor };
        let mut parts = Vec::new();
        if self.rate_limit_waits > 0 {
            let mut text = format!("waited {} for {vendor}'s rate limit", human_duration(self.rate_limit_time));
            if self.rate_limit_waits > 1 {
                text.push_str(&format!(" ({} waits)", self.rate_limit_waits));
            }
            parts.push(text);
        }
        let kinds = [
            (self.retries_after_5xx, "5xx", "5xx"),
            (self.retries_after_timeouts, "a timeout", "timeouts"),
            (self.retries_after_connection_errors, "a connection error", "connection errors"),
        ];
        let mut first = true;
        for (n, one, many) in kinds {
            if n == 0 {
                continue;
            }
            let what = if n == 1 { one } else { many };
            parts.push(match (first, n) {
                (true, 1) => format!("1 retry after {what}"),
                (true, _) => format!("{n} retries after {what}"),
                (false, _) => format!("{n} after {what}"),
            });
            first = false;
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why a request is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCause {
    /// After a throttling answer (`reason`: what the wait's length came from).
    Throttled { status: u16, reason: WaitReason },
    /// Before a request: the vendor said the window is spent.
    WindowSpent,
    /// After an error, backing off (or, rarely, until a spent window resets).
    Retry { trouble: Trouble, reason: WaitReason },
}

impl WaitCause {
    /// The cause of a retry after `trouble`, waiting as `reason` says.
    pub fn after(trouble: Trouble, reason: WaitReason) -> Self {
        match trouble {
            Trouble::Throttled { status } => Self::Throttled { status, reason },
            trouble => Self::Retry { trouble, reason },
        }
    }

    /// A wait for the vendor's rate limit (the rest are retries after errors).
    pub fn is_rate_limit(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::WindowSpent => true,
            Self::Retry { reason, .. } => *reason != WaitReason::Backoff,
        }
    }
}

/// One wait, as it starts: what a sink hears to show a pull's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitNote {
    pub vendor: &'static str,
    pub wait: Duration,
    pub cause: WaitCause,
    /// The attempt that failed (0 for a wait before a first attempt).
    pub attempt: u32,
}

impl fmt::Display for WaitNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vendor = if self.vendor.is_empty() { "the api" } else { self.vendor };
        let wait = human_duration(self.wait);
        match self.cause {
            WaitCause::Throttled { status, reason: WaitReason::RetryAfter } => {
                write!(f, "{wait} for {vendor}'s rate limit ({status} with Retry-After)")
            }
            WaitCause::Throttled { status, reason: WaitReason::RateLimitReset } => {
                write!(f, "{wait} for {vendor}'s rate limit window to reset ({status})")
            }
            WaitCause::Throttled { status, reason: WaitReason::Backoff } => {
                write!(f, "{wait} backing off after {vendor}'s rate limit ({status})")
            }
            WaitCause::WindowSpent => write!(f, "{wait} for {vendor}'s rate limit window to reset"),
            WaitCause::Retry { trouble, reason: WaitReason::Backoff } => {
                write!(f, "{wait} before retry {} after {trouble} from {vendor}", self.attempt)
            }
            WaitCause::Retry { trouble, .. } => {
                write!(f, "{wait} for {vendor}'s rate limit window to reset (after {trouble})")
            }
        }
    }
}

/// Notes kept for a sink that is not reading them; older ones are dropped.
const MAX_NOTES: usize = 64;

#[derive(Debug, Default)]
struct LogState {
    waits: Waits,
    /// Requests waiting for the rate limit now, and since when one is.
    rate_waiting: usize,
    rate_since: Option<DateTime<Utc>>,
    notes: VecDeque<WaitNote>,
}

/// Where a connector's HTTP client records its waits: a running tally
/// ([`WaitLog::waits`]) and the notes of waits as they start
/// ([`WaitLog::take_notes`], announced by [`WaitLog::noted`]).
#[derive(Debug, Default)]
pub struct WaitLog {
    state: Mutex<LogState>,
    notify: tokio::sync::Notify,
}

impl WaitLog {
    pub fn new(vendor: &'static str) -> Self {
        let log = Self::default();
        log.lock().waits.vendor = vendor;
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tally so far.
    pub fn waits(&self) -> Waits {
        self.lock().waits
    }

    /// The notes of waits started since the last call, oldest first.
    pub fn take_notes(&self) -> Vec<WaitNote> {
        self.lock().notes.drain(..).collect()
    }

    /// Resolves when a note was recorded since the last call resolved.
    pub async fn noted(&self) {
        self.notify.notified().await;
    }

    /// Records a wait that starts now; the returned guard marks its end when
    /// dropped (also when the pull is cancelled mid-wait).
    pub fn begin(self: &Arc<Self>, note: WaitNote, clock: &Arc<dyn Clock>) -> WaitGuard {
        let rate = note.cause.is_rate_limit();
        {
            let mut s = self.lock();
            if rate {
                s.waits.rate_limit_waits = s.waits.rate_limit_waits.saturating_add(1);
                if s.rate_waiting == 0 {
                    s.rate_since = Some(clock.now());
                }
                s.rate_waiting += 1;
            } else {
                if let WaitCause::Retry { trouble, .. } = note.cause {
                    match trouble {
                        Trouble::Timeout => {
                            s.waits.retries_after_timeouts = s.waits.retries_after_timeouts.saturating_add(1)
                        }
                        Trouble::Connection => {
                            s.waits.retries_after_connection_errors =
                                s.waits.retries_after_connection_errors.saturating_add(1)
                        }
                        Trouble::ServerError { .. } | Trouble::Throttled { .. } => {
                            s.waits.retries_after_5xx = s.waits.retries_after_5xx.saturating_add(1)
                        }
                    }
                }
                s.waits.backoff_time = s.waits.backoff_time.saturating_add(note.wait);
            }
            if s.notes.len() >= MAX_NOTES {
                s.notes.pop_front();
            }
            s.notes.push_back(note);
        }
        self.notify.notify_one();
        WaitGuard { log: self.clone(), clock: clock.clone(), rate }
    }

    fn end_rate_wait(&self, now: DateTime<Utc>) {
        let mut s = self.lock();
        s.rate_waiting = s.rate_waiting.saturating_sub(1);
        if s.rate_waiting == 0
            && let Some(since) = s.rate_since.take()
        {
            let waited = now.signed_duration_since(since).to_std().unwrap_or_default();
            s.waits.rate_limit_time = s.waits.rate_limit_time.saturating_add(waited);
        }
    }
}

/// One wait in progress (see [`WaitLog::begin`]).
pub struct WaitGuard {
    log: Arc<WaitLog>,
    clock: Arc<dyn Clock>,
    rate: bool,
}

impl fmt::Debug for WaitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGuard").field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.rate {
            self.log.end_rate_wait(self.clock.now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_wait: Duration::from_secs(900),
        }
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    const TOO_MANY: Trouble = Trouble::Throttled { status: 429 };
    const BOOM: Trouble = Trouble::ServerError { status: 500 };

    #[test]
    fn a_5xx_with_a_far_off_reset_and_plenty_left_backs_off() {
        // The bug of issue 14: Okta's headers on a 500 said the window resets in a minute.
        let signal = RateSignal { retry_after: None, remaining: Some(999_999), reset_in: secs(60) };
        for trouble in [BOOM, Trouble::ServerError { status: 503 }, Trouble::ServerError { status: 504 }] {
            let d = policy().decide(trouble, &signal, 1, 1.0);
            assert_eq!(d, RetryDecision::Retry { wait: Duration::from_millis(500), reason: WaitReason::Backoff });
        }
        let d = policy().decide(Trouble::Timeout, &signal, 2, 0.0);
        assert_eq!(d, RetryDecision::Retry { wait: Duration::from_millis(500), reason: WaitReason::Backoff });
        let d = policy().decide(Trouble::Connection, &signal, 3, 0.5);
        assert_eq!(d, RetryDecision::Retry { wait: Duration::from_millis(1500), reason: WaitReason::Backoff });
    }

    #[test]
    fn a_5xx_when_the_window_is_spent_waits_for_the_reset() {
        let signal = RateSignal { retry_after: None, remaining: Some(0), reset_in: secs(42) };
        let d = policy().decide(BOOM, &signal, 1, 0.3);
        assert_eq!(d, RetryDecision::Retry { wait: Duration::from_secs(42), reason: WaitReason::RateLimitReset });
    }

    #[test]
    fn a_5xx_ignores_retry_after_unless_classified_as_a_throttle() {
        // A 500 or 504 carrying Retry-After is no throttle; the client classifies a 503 with
        // Retry-After as Throttled before it asks.
        let signal = RateSignal { retry_after: secs(60), remaining: None, reset_in: None };
        let d = policy().decide(Trouble::ServerError { status: 504 }, &signal, 1, 0.0);
        assert_eq!(d, RetryDecision::Retry { wait: Duration::from_millis(250), reason: WaitReason::Backoff });
        let d = policy().decide(Trouble::Throttled { status: 503 }, &signal, 1, 0.0);
        assert_eq!(d, RetryDecision::Retry { wait: Duration::from_secs(60), reason: WaitReason::RetryAfter });
    }

    #[test]
    fn a_429_waits_for_retry_after_else_the_reset_else_backs_off() {
        let both = RateSignal { retry_after: secs(1), remaining: Some(0), reset_in: secs(45) };
        assert_eq!(
            policy().decide(TOO_MANY, &both, 1, 0.9),
            RetryDecision::Retry { wait: Duration::from_secs(1), reason: WaitReason::RetryAfter }
        );
        let reset = RateSignal { retry_after: None, remaining: Some(0), reset_in: secs(20) };
        assert_eq!(
            policy().decide(TOO_MANY, &reset, 1, 0.9),
            RetryDecision::Retry { wait: Duration::from_secs(20), reason: WaitReason::RateLimitReset }
        );
        // A reset header on a 429 is the wait whatever Remaining says.
        let reset_left = RateSignal { retry_after: None, remaining: Some(10), reset_in: secs(20) };
        assert_eq!(
            policy().decide(TOO_MANY, &reset_left, 1, 0.9),
            RetryDecision::Retry { wait: Duration::from_secs(20), reason: WaitReason::RateLimitReset }
        );
        let none = RateSignal::default();
        assert_eq!(
            policy().decide(TOO_MANY, &none, 2, 0.0),
            RetryDecision::Retry { wait: Duration::from_millis(500), reason: WaitReason::Backoff }
        );
        // A reset already past is no wait: back off rather than hammer.
        let past = RateSignal { retry_after: None, remaining: Some(0), reset_in: Some(Duration::ZERO) };
        assert_eq!(
            policy().decide(TOO_MANY, &past, 1, 0.0),
            RetryDecision::Retry { wait: Duration::from_millis(250), reason: WaitReason::Backoff }
        );
    }

    #[test]
    fn attempts_and_the_longest_wait_are_bounded() {
        let none = RateSignal::default();
        assert_eq!(policy().decide(BOOM, &none, 6, 0.0), RetryDecision::GiveUp);
        assert_eq!(policy().decide(TOO_MANY, &none, 7, 0.0), RetryDecision::GiveUp);
        let long = RateSignal { retry_after: secs(86_400), remaining: None, reset_in: None };
        assert_eq!(
            policy().decide(TOO_MANY, &long, 1, 0.0),
            RetryDecision::TooLong { wait: Duration::from_secs(86_400) }
        );
        let spent = RateSignal { retry_after: None, remaining: Some(0), reset_in: secs(3_600) };
        assert_eq!(policy().decide(BOOM, &spent, 1, 0.0), RetryDecision::TooLong { wait: Duration::from_secs(3_600) });
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p =
            RetryPolicy { max_attempts: 5, base: Duration::from_millis(100), cap: Duration::from_secs(1), ..policy() };
        for retry in 1..20 {
            let step = Duration::from_millis(100 * 2u64.pow((retry - 1).min(10))).min(Duration::from_secs(1));
            assert_eq!(p.backoff_with(retry, 0.0), step / 2, "retry {retry}");
            assert_eq!(p.backoff_with(retry, 1.0), step, "retry {retry}");
            let d = p.backoff(retry);
            assert!(d >= step / 2 && d <= step, "retry {retry}: {d:?}");
        }
        // A jitter outside 0..1 (or NaN) never stretches a wait past its step.
        assert_eq!(p.backoff_with(1, 7.0), Duration::from_millis(100));
        assert_eq!(p.backoff_with(1, f64::NAN), Duration::from_millis(50));
        assert_eq!(p.backoff_with(u32::MAX, 0.5), Duration::from_millis(750));
    }

    #[test]
    fn the_tally_counts_overlapping_rate_limit_waits_once_and_reads_as_a_sentence() {
        let manual = Arc::new(ManualClock::new(Utc::now()));
        let clock: Arc<dyn Clock> = manual.clone();
        let log = Arc::new(WaitLog::new("Okta"));
        let throttled = |wait| WaitNote {
            vendor: "Okta",
            wait,
            cause: WaitCause::Throttled { status: 429, reason: WaitReason::RetryAfter },
            attempt: 1,
        };
        let a = log.begin(throttled(Duration::from_secs(3)), &clock);
        let b = log.begin(throttled(Duration::from_secs(3)), &clock);
        manual.advance(Duration::from_secs(3));
        drop(a);
        drop(b);
        let retry = |trouble| WaitNote {
            vendor: "Okta",
            wait: Duration::from_millis(400),
            cause: WaitCause::Retry { trouble, reason: WaitReason::Backoff },
            attempt: 1,
        };
        drop(log.begin(retry(BOOM), &clock));
        drop(log.begin(retry(Trouble::ServerError { status: 503 }), &clock));
        let w = log.waits();
        assert_eq!((w.rate_limit_waits, w.retries_after_5xx, w.retries()), (2, 2, 2));
        assert_eq!(w.backoff_time, Duration::from_millis(800));
        assert_eq!(w.to_string(), "waited 3.0 s for Okta's rate limit (2 waits), 2 retries after 5xx");
        assert_eq!(log.take_notes().len(), 4);
        assert!(log.take_notes().is_empty());
        drop(log.begin(retry(Trouble::Timeout), &clock));
        let since = log.waits().since(&w);
        assert_eq!(since.to_string(), "1 retry after a timeout");
        assert!(Waits::default().is_empty());
        assert_eq!(Waits::default().to_string(), "");
    }

    #[test]
    fn rate_limit_time_follows_the_clock() {
        let manual = Arc::new(ManualClock::new(Utc::now()));
        let clock: Arc<dyn Clock> = manual.clone();
        let log = Arc::new(WaitLog::new("Google"));
        let note =
            WaitNote { vendor: "Google", wait: Duration::from_secs(12), cause: WaitCause::WindowSpent, attempt: 0 };
        let guard = log.begin(note, &clock);
        manual.advance(Duration::from_secs(12));
        drop(guard);
        assert_eq!(log.waits().rate_limit_time, Duration::from_secs(12));
        assert_eq!(log.waits().to_string(), "waited 12 s for Google's rate limit");
        assert_eq!(note.to_string(), "12 s for Google's rate limit window to reset");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2 min 5 s");
    }
}
