//! The shared half of every vendor fake: what the kit asks of a fake that has
//! nothing to do with the vendor. A fake built on [`FakeControls`] is only its
//! routes and the vendor's shapes: the failure queue (`fail_next`), the
//! failure after N good requests (`fail_after`), the empty answer
//! (`set_hidden`), cursor expiry, the request log, the count of requests the
//! fake's own credential check refused, and paging of any list by an opaque
//! cursor, keyset or offset, with two faults the kit injects through it: a
//! cursor handed out again (the API sends the connector round in a circle) and
//! a user that disappears after the first page of a listing (the directory
//! changes while it is read). The HTTP half, which calls [`FakeControls::admit`]
//! for every request, is [`crate::fake`] (feature `fake`).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::Failure;

/// Which list a page belongs to: the kit's mid-listing change only touches
/// [`Listing::Users`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Users,
    Groups,
    /// The members of one group (the `scope` of [`FakeControls::page`] names it).
    Members,
}

/// How the vendor's cursors address the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// "After this id": a change between two pages shifts nothing.
    Keyset,
    /// "From this index": an item removed from an earlier page makes the next
    /// page start one item late, so one item is never listed. Real APIs do this
    /// (`$skip`, `offset=`); a connector over one must not trust a listing the
    /// directory changed under.
    Offset,
}

/// One page: its items and the cursor of the next, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A cursor [`FakeControls::page`] cannot continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Not one of this listing's cursors (another listing's, or garbage).
    #[error("the cursor is not one of this listing's")]
    Invalid,
    /// Handed out before [`FakeControls::expire_cursors`].
    #[error("the cursor has expired")]
    Expired,
}

#[derive(Debug, Default)]
enum MidListing {
    #[default]
    Off,
    /// The next users listing hides its first user once its first page is served.
    Armed,
    /// This user is left out of every users listing until `stop_hiding`.
    Hiding(String),
}

#[derive(Debug, Default)]
struct State {
    failures: VecDeque<Failure>,
    fail_after: Option<(usize, Failure)>,
    hidden: bool,
    requests: Vec<String>,
    refused: usize,
    epoch: u64,
    repeat_cursors: bool,
    mid_listing: MidListing,
}

/// What a cursor of [`FakeControls::page`] holds, hex-encoded so that a
/// connector cannot read it (it must treat cursors as opaque).
#[derive(Serialize, Deserialize)]
struct Position {
    epoch: u64,
    scope: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    at: Option<usize>,
}

/// See the module documentation. Shared between the fake's handlers and the kit.
#[derive(Debug, Default)]
pub struct FakeControls {
    state: Mutex<State>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl FakeControls {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking handler must not take the kit down with a poisoned lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // What the kit drives (the `FakeDirectory` defaults forward here).

    /// The next requests answer these failures, one each, in order.
    pub fn fail_next(&self, failures: &[Failure]) {
        self.state().failures.extend(failures.iter().copied());
    }

    /// After `ok_requests` more requests, every request fails with `failure`.
    pub fn fail_after(&self, ok_requests: usize, failure: Failure) {
        self.state().fail_after = Some((ok_requests, failure));
    }

    pub fn clear_failures(&self) {
        let mut st = self.state();
        st.failures.clear();
        st.fail_after = None;
    }

    /// Every list answers empty while set.
    pub fn set_hidden(&self, hidden: bool) {
        self.state().hidden = hidden;
    }

    /// Every cursor handed out so far stops working ([`PageError::Expired`]).
    pub fn expire_cursors(&self) {
        self.state().epoch += 1;
    }

    /// While on, a page asked for with a cursor names that same cursor as its
    /// next one: the API hands a cursor out again.
    pub fn repeat_cursors(&self, on: bool) {
        self.state().repeat_cursors = on;
    }

    /// The next users listing loses its first user once its first page is
    /// served, as if they were deleted while the listing ran.
    pub fn hide_during_next_listing(&self) {
        self.state().mid_listing = MidListing::Armed;
    }

    /// The user [`FakeControls::hide_during_next_listing`] hid, once it has.
    pub fn hidden_during_listing(&self) -> Option<String> {
        match &self.state().mid_listing {
            MidListing::Hiding(id) => Some(id.clone()),
            MidListing::Off | MidListing::Armed => None,
        }
    }

    /// Lists the hidden user again.
    pub fn stop_hiding(&self) {
        self.state().mid_listing = MidListing::Off;
    }

    /// Every request received, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state().requests.len()
    }

    /// How many requests the fake's own credential check refused.
    pub fn refused_count(&self) -> usize {
        self.state().refused
    }

    // What the fake's handlers call.

    /// Records a request (`METHOD /path?query`) and says which injected
    /// failure, if any, it must be answered with.
    pub fn admit(&self, request: String) -> Option<Failure> {
        let mut st = self.state();
        st.requests.push(request);
        if let Some(failure) = st.failures.pop_front() {
            return Some(failure);
        }
        match st.fail_after {
            Some((0, failure)) => Some(failure),
            Some((left, failure)) => {
                st.fail_after = Some((left - 1, failure));
                None
            }
            None => None,
        }
    }

    /// Records that the fake's credential check refused a request.
    pub fn note_refused(&self) {
        self.state().refused += 1;
    }

    pub fn is_hidden(&self) -> bool {
        self.state().hidden
    }

    /// One page of `items` (`(id, item)`, in any order; pages go by id) of
    /// the list `scope` names (`users`, `members/g1`), from `cursor` (none for
    /// the first page), at most `limit` items. Empty while hidden.
    pub fn page<T>(
        &self,
        listing: Listing,
        scope: &str,
        mut items: Vec<(String, T)>,
        cursor: Option<&str>,
        limit: usize,
        paging: Paging,
    ) -> Result<Paged<T>, PageError> {
        let mut st = self.state();
        // Hiding takes effect at the start of a list, as a scope change does at a real
        // IdP between two listings: a list already under way keeps its snapshot (a fake
        // that emptied later pages would make a complete but shorter listing out of a
        // test's timing).
        if st.hidden && cursor.is_none() {
            items.clear();
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        if listing == Listing::Users
            && let MidListing::Hiding(gone) = &st.mid_listing
        {
            items.retain(|(id, _)| id != gone);
        }
        let start = match cursor {
            None => 0,
            Some(text) => {
                let position: Position =
                    unhex(text).and_then(|bytes| serde_json::from_slice(&bytes).ok()).ok_or(PageError::Invalid)?;
                if position.scope != scope {
                    return Err(PageError::Invalid);
                }
                if position.epoch != st.epoch {
                    return Err(PageError::Expired);
                }
                match (paging, position.after, position.at) {
                    (Paging::Keyset, Some(after), None) => items.partition_point(|(id, _)| *id <= after),
                    (Paging::Offset, None, Some(at)) => at.min(items.len()),
                    _ => return Err(PageError::Invalid),
                }
            }
        };
        let end = start.saturating_add(limit.max(1)).min(items.len());
        let page: Vec<(String, T)> = items.drain(start..end).collect();
        // What is left after the drain beyond `start` comes after this page.
        let more = items.len() > start;
        let next = match (more, page.last()) {
            (true, Some((last, _))) => {
                let (after, at) = match paging {
                    Paging::Keyset => (Some(last.clone()), None),
                    Paging::Offset => (None, Some(end)),
                };
                let position = Position { epoch: st.epoch, scope: scope.to_owned(), after, at };
                serde_json::to_vec(&position).ok().map(|bytes| hex(&bytes))
            }
            _ => None,
        };
        let next = match (st.repeat_cursors, cursor) {
            (true, Some(given)) => Some(given.to_owned()),
            _ => next,
        };
        if listing == Listing::Users
            && cursor.is_none()
            && matches!(st.mid_listing, MidListing::Armed)
            && let Some((first, _)) = page.first()
        {
            st.mid_listing = MidListing::Hiding(first.clone());
        }
        Ok(Paged { items: page.into_iter().map(|(_, item)| item).collect(), next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("u{i}"), i)).collect()
    }

    fn all(c: &FakeControls, paging: Paging, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = c.page(Listing::Users, "users", items(n), cursor.as_deref(), 2, paging).unwrap();
            out.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_follow_to_the_end_either_way() {
        let c = FakeControls::new();
        assert_eq!(all(&c, Paging::Keyset, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(all(&c, Paging::Offset, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(all(&c, Paging::Keyset, 0), Vec::<usize>::new());
    }

    #[test]
    fn a_user_gone_mid_listing_shifts_offsets_but_not_keys() {
        for (paging, want) in [(Paging::Keyset, vec![0, 1, 2, 3, 4]), (Paging::Offset, vec![0, 1, 3, 4])] {
            let c = FakeControls::new();
            c.hide_during_next_listing();
            assert_eq!(all(&c, paging, 5), want, "{paging:?}");
            assert_eq!(c.hidden_during_listing().as_deref(), Some("u0"));
            c.stop_hiding();
        }
    }

    #[test]
    fn cursors_expire_repeat_and_stay_in_their_listing() {
        let c = FakeControls::new();
        let first = c.page(Listing::Users, "users", items(5), None, 2, Paging::Keyset).unwrap();
        let cursor = first.next.unwrap();
        let other = c.page(Listing::Members, "members/g1", items(5), Some(&cursor), 2, Paging::Keyset);
        assert_eq!(other.unwrap_err(), PageError::Invalid);
        assert_eq!(c.page(Listing::Users, "users", items(5), Some("zz"), 2, Paging::Keyset), Err(PageError::Invalid));
        c.repeat_cursors(true);
        let again = c.page(Listing::Users, "users", items(5), Some(&cursor), 2, Paging::Keyset).unwrap();
        assert_eq!(again.next.as_deref(), Some(cursor.as_str()));
        c.expire_cursors();
        assert_eq!(
            c.page(Listing::Users, "users", items(5), Some(&cursor), 2, Paging::Keyset),
            Err(PageError::Expired)
        );
    }

    #[test]
    fn failures_come_in_order_then_after_n_requests() {
        let c = FakeControls::new();
        c.fail_next(&[Failure::RateLimited, Failure::ServerError]);
        assert_eq!(c.admit("GET /a".into()), Some(Failure::RateLimited));
        assert_eq!(c.admit("GET /a".into()), Some(Failure::ServerError));
        assert_eq!(c.admit("GET /a".into()), None);
        c.fail_after(1, Failure::Unauthorized);
        assert_eq!(c.admit("GET /b".into()), None);
        assert_eq!(c.admit("GET /b".into()), Some(Failure::Unauthorized));
        assert_eq!(c.admit("GET /b".into()), Some(Failure::Unauthorized));
        c.clear_failures();
        assert_eq!(c.admit("GET /c".into()), None);
        assert_eq!(c.request_count(), 7);
        c.set_hidden(true);
        assert!(c.page(Listing::Groups, "groups", items(3), None, 2, Paging::Keyset).unwrap().items.is_empty());
    }
}
