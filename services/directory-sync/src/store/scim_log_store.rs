//! The SCIM request log on diesel: the per-directory switch (cached, so the HTTP front
//! asks the database at most once per directory per few seconds), batched inserts,
//! newest-first pages, and the prune by each directory's retention.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::Page;
use super::diesel_store::{DieselStore, insert_many};
use super::schema::{directories, scim_requests};
use crate::domain::directory::Kind;
use crate::error::SyncError;

/// How long a cached switch is trusted. Updates through this replica take effect at
/// once (the entry is forgotten); another replica's within this long.
const SWITCH_TTL: Duration = Duration::from_secs(5);

/// Most directories remembered; past this the cache starts over (unknown ids probing
/// the SCIM port must not grow it without bound).
const SWITCH_MAX_ENTRIES: usize = 10_000;

/// Rows per INSERT: 12 columns each, well under SQLite's variable limit.
const INSERT_CHUNK: usize = 200;

/// Which directories log SCIM requests, and for how many days, as last read.
#[derive(Clone, Debug, Default)]
pub struct ScimLogSwitch {
    entries: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

impl ScimLogSwitch {
    fn cached(&self, directory: &str) -> Option<u32> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(directory).filter(|(_, at)| at.elapsed() < SWITCH_TTL).map(|(days, _)| *days)
    }

    fn remember(&self, directory: &str, days: u32) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWITCH_MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(directory.to_string(), (days, Instant::now()));
    }

    /// Drops what is known of a directory (its settings changed).
    pub fn forget(&self, directory: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(directory);
    }
}

/// One logged SCIM exchange, as stored.
#[derive(Queryable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = scim_requests)]
pub struct ScimRequestRow {
    /// UUIDv7.
    pub id: String,
    /// The directory.
    pub directory_id: String,
    /// When the request arrived.
    pub received_at: NaiveDateTime,
    /// HTTP method.
    pub method: String,
    /// Path and query (credential-like query values redacted).
    pub path: String,
    /// Kept request headers, as a JSON object.
    pub request_headers: String,
    /// Redacted, capped request body.
    pub request_body: String,
    /// The request body was cut.
    pub request_truncated: bool,
    /// HTTP status.
    pub status: i32,
    /// Redacted, capped response body.
    pub response_body: String,
    /// The response body was cut.
    pub response_truncated: bool,
    /// Time to answer, in microseconds.
    pub duration_us: i64,
}

impl DieselStore {
    /// The switch the HTTP front consults.
    pub fn scim_log_switch(&self) -> &ScimLogSwitch {
        &self.scim_log
    }

    /// Days a directory's SCIM requests are kept; 0 when its log is off, when it is not
    /// a SCIM directory, or when there is no such directory. Cached for a few seconds.
    pub async fn scim_log_days(&self, directory: &str) -> Result<u32, SyncError> {
        if let Some(days) = self.scim_log.cached(directory) {
            return Ok(days);
        }
        let id = directory.to_string();
        let days = self
            .db
            .run(move |conn| {
                let found: Option<(String, i32)> = directories::table
                    .find(&id)
                    .select((directories::kind, directories::scim_log_days))
                    .first(conn)
                    .optional()?;
                Ok::<_, SyncError>(match found {
                    Some((kind, days)) if kind == Kind::SCIM.name() => u32::try_from(days).unwrap_or(0),
                    _ => 0,
                })
            })
            .await?;
        self.scim_log.remember(directory, days);
        Ok(days)
    }

    /// Stores logged exchanges in one transaction.
    pub async fn insert_scim_requests(&self, rows: Vec<ScimRequestRow>) -> Result<usize, SyncError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.db
            .write(move |conn| {
                let mut n = 0;
                for chunk in rows.chunks(INSERT_CHUNK) {
                    n += insert_many!(conn, scim_requests::table, chunk)?;
                }
                Ok(n)
            })
            .await
    }

    /// A directory's logged exchanges with ids below `before` (all when none), newest first.
    pub async fn list_scim_requests(
        &self,
        directory: &str,
        before: Option<String>,
        limit: usize,
    ) -> Result<Page<ScimRequestRow>, SyncError> {
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                let mut q = scim_requests::table
                    .filter(scim_requests::directory_id.eq(dir))
                    .order(scim_requests::id.desc())
                    .limit(limit as i64 + 1)
                    .into_boxed();
                if let Some(b) = before {
                    q = q.filter(scim_requests::id.lt(b));
                }
                let mut items = q.load::<ScimRequestRow>(conn)?;
                let more = items.len() > limit;
                items.truncate(limit);
                let next_after = if more { items.last().map(|r| r.id.clone()) } else { None };
                Ok(Page { items, next_after })
            })
            .await
    }

    /// Deletes logged exchanges older than their directory's retention at `now`, and
    /// every row of a directory that no longer logs (turned off, or deleted).
    pub async fn prune_scim_requests(&self, now: DateTime<Utc>) -> Result<usize, SyncError> {
        self.db
            .write(move |conn| {
                let logging: Vec<(String, i32)> = directories::table
                    .filter(directories::scim_log_days.gt(0))
                    .select((directories::id, directories::scim_log_days))
                    .load(conn)?;
                let mut n = 0;
                for (dir, days) in &logging {
                    let before = (now - chrono::Duration::days(i64::from(*days))).naive_utc();
                    n += diesel::delete(
                        scim_requests::table
                            .filter(scim_requests::directory_id.eq(dir))
                            .filter(scim_requests::received_at.lt(before)),
                    )
                    .execute(conn)?;
                }
                let still_logging = directories::table.filter(directories::scim_log_days.gt(0)).select(directories::id);
                n += diesel::delete(scim_requests::table.filter(scim_requests::directory_id.ne_all(still_logging)))
                    .execute(conn)?;
                Ok(n)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use muster_runtime::Db;

    use super::*;
    use crate::domain::brake::Brake;
    use crate::store::{DirectoryPatch, NewDirectory, SyncStore};

    async fn store() -> (DieselStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).unwrap();
        db.migrate(crate::MIGRATIONS).await.unwrap();
        (DieselStore::new(db), dir)
    }

    async fn directory(s: &DieselStore, days: u32) -> String {
        let d = s
            .create_directory(NewDirectory {
                parent_id: "p".into(),
                kind: Kind::SCIM,
                display_name: "d".into(),
                config_json: "{}".into(),
                sync_interval_secs: 0,
                brake: Brake::default(),
                scim_token_hash: None,
                scim_log_days: days,
            })
            .await
            .unwrap();
        d.id
    }

    fn row(dir: &str, age: chrono::Duration) -> ScimRequestRow {
        ScimRequestRow {
            id: uuid::Uuid::now_v7().to_string(),
            directory_id: dir.into(),
            received_at: (Utc::now() - age).naive_utc(),
            method: "GET".into(),
            path: "/Users".into(),
            request_headers: "{}".into(),
            request_body: String::new(),
            request_truncated: false,
            status: 200,
            response_body: "{}".into(),
            response_truncated: false,
            duration_us: 5,
        }
    }

    #[tokio::test]
    async fn prune_keeps_each_directory_its_days_and_pages_newest_first() {
        let (s, _tmp) = store().await;
        let (logging, off) = (directory(&s, 2).await, directory(&s, 0).await);
        let old = row(&logging, chrono::Duration::days(3));
        let recent = row(&logging, chrono::Duration::hours(1));
        let newest = row(&logging, chrono::Duration::zero());
        let rows = vec![
            old,
            recent.clone(),
            newest.clone(),
            row(&off, chrono::Duration::zero()),
            row("gone", chrono::Duration::zero()),
        ];
        assert_eq!(s.insert_scim_requests(rows).await.unwrap(), 5);
        assert_eq!(s.scim_log_days(&logging).await.unwrap(), 2);
        assert_eq!(s.scim_log_days(&off).await.unwrap(), 0);
        assert_eq!(s.scim_log_days("gone").await.unwrap(), 0);

        // Older than 2 days, the directory that does not log, the deleted one: gone.
        assert_eq!(s.prune_scim_requests(Utc::now()).await.unwrap(), 3);
        let first = s.list_scim_requests(&logging, None, 1).await.unwrap();
        assert_eq!(first.items, vec![newest]);
        let second = s.list_scim_requests(&logging, first.next_after, 1).await.unwrap();
        assert_eq!(second.items, vec![recent]);
        assert_eq!(second.next_after, None);

        // Turning the log off is seen at once by this replica, and prunes the rest.
        s.update_directory(&logging, DirectoryPatch { scim_log_days: Some(0), ..Default::default() }).await.unwrap();
        assert_eq!(s.scim_log_days(&logging).await.unwrap(), 0);
        assert_eq!(s.prune_scim_requests(Utc::now()).await.unwrap(), 2);
    }
}
