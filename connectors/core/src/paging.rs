//! Following an API's pages safely. An API that hands out a paging cursor (a
//! page token, a `next` link) a second time sends a connector that trusts it
//! round in a circle: the same pages forever, each written to the sink again.
//! A [`CursorTrail`] remembers the cursors one listing followed and stops it
//! with an error at the first repeat. One string per page is kept: a listing
//! of 100,000 users at 200 a page remembers 500.

use std::collections::HashSet;

use crate::error::ConnectorError;

/// The cursors one listing has followed.
#[derive(Debug, Default)]
pub struct CursorTrail {
    seen: HashSet<String>,
}

impl CursorTrail {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `listing` (for the message: `users`, `members of g1`) is
    /// about to follow `cursor`; an error when it followed it before.
    pub fn follow(&mut self, listing: &str, cursor: &str) -> Result<(), ConnectorError> {
        if self.seen.insert(cursor.to_owned()) {
            Ok(())
        } else {
            Err(ConnectorError::Protocol(format!(
                "{listing}: the api returned a paging cursor it had returned before; \
                 stopping rather than reading the same pages again"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_cursor_stops_the_listing() {
        let mut trail = CursorTrail::new();
        trail.follow("users", "a").unwrap();
        trail.follow("users", "b").unwrap();
        let err = trail.follow("users", "a").unwrap_err();
        assert!(matches!(err, ConnectorError::Protocol(ref m) if m.starts_with("users:")), "{err}");
    }
}
