//! The directory audit log (SPEC §9): who created, changed, paused, resumed, deleted
//! a directory, rotated its token, made it authoritative, or approved or rejected its
//! held runs, with the state before and after. Append-only.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::diesel_store::{DieselStore, now, utc};
use super::schema::directory_audit;
use crate::error::SyncError;

/// One entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryAuditEntry {
    /// Position in the log.
    pub seq: i64,
    /// The directory.
    pub directory_id: String,
    /// What happened (`directory.created`, `directory.updated`, `directory.authority_changed`, …).
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// Before, as JSON (`null` when nothing was there).
    pub before_json: String,
    /// After, as JSON.
    pub after_json: String,
    /// When.
    pub at: DateTime<Utc>,
}

type AuditRow = (i64, String, String, String, String, String, NaiveDateTime);

impl DieselStore {
    /// Appends an entry.
    pub async fn audit_directory(
        &self,
        directory: &str,
        action: &str,
        actor: &str,
        before_json: String,
        after_json: String,
    ) -> Result<(), SyncError> {
        let (directory, action, actor) = (directory.to_string(), action.to_string(), actor.to_string());
        self.db
            .write(move |conn| {
                diesel::insert_into(directory_audit::table)
                    .values((
                        directory_audit::directory_id.eq(&directory),
                        directory_audit::action.eq(&action),
                        directory_audit::actor.eq(&actor),
                        directory_audit::before_json.eq(&before_json),
                        directory_audit::after_json.eq(&after_json),
                        directory_audit::created_at.eq(now()),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .await
    }

    /// A directory's entries, newest first, before `before`.
    pub async fn directory_audit(
        &self,
        directory: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DirectoryAuditEntry>, SyncError> {
        let directory = directory.to_string();
        self.db
            .run(move |conn| {
                let mut q = directory_audit::table
                    .filter(directory_audit::directory_id.eq(&directory))
                    .order(directory_audit::seq.desc())
                    .limit(limit as i64)
                    .into_boxed();
                if let Some(b) = before {
                    q = q.filter(directory_audit::seq.lt(b));
                }
                let rows: Vec<AuditRow> = q.load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, directory_id, action, actor, before_json, after_json, at)| DirectoryAuditEntry {
                        seq,
                        directory_id,
                        action,
                        actor,
                        before_json,
                        after_json,
                        at: utc(at),
                    })
                    .collect())
            })
            .await
    }
}
