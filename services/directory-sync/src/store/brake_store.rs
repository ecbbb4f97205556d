//! What the mass-removal brake needs across runs: the removals applied to each org
//! (its rolling window), and the one held run per org that further removals join.
//!
//! A run's removals are *reserved* before they are applied: in one transaction the
//! window is summed, the brake consulted, and either the removals are written to the
//! window or the org's hold is taken (or found). Two runs of two directories (or two
//! replicas) of one parent can therefore not both slip under the limit. SQLite has one
//! writer; on PostgreSQL the transaction takes an advisory lock on the org.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use muster_runtime::DbConnection;

use super::SyncStore;
use super::diesel_store::{DieselStore, now};
use super::schema::{org_holds, removal_log};
use crate::domain::brake::Brake;
use crate::error::SyncError;

/// Removal records older than this are pruned (the longest window is a week).
pub const REMOVAL_LOG_KEEP_DAYS: i64 = 8;

/// What the brake says of a run's removals for one org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Go ahead: they are counted in the window (adjust with [`DieselStore::settle_removals`]).
    Granted {
        /// Removals already made within the window before these.
        recent: i64,
    },
    /// Too many: this run now holds the org's removals.
    Held {
        /// Removals already made within the window.
        recent: i64,
    },
    /// Another run already holds the org's removals: add these to it.
    Join {
        /// That run.
        run_id: String,
    },
}

fn lock_org(conn: &mut DbConnection, org: &str) -> Result<(), SyncError> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(format!("brake:{org}"))
            .execute(pg)?;
    }
    Ok(())
}

fn window_sum(conn: &mut DbConnection, org: &str, since: chrono::NaiveDateTime) -> Result<i64, SyncError> {
    // Summed here, not in SQL: SUM(BIGINT) is NUMERIC on PostgreSQL, and a window holds
    // one row per run that removed someone.
    let rows: Vec<i64> = removal_log::table
        .filter(removal_log::org_id.eq(org))
        .filter(removal_log::created_at.ge(since))
        .select(removal_log::removed)
        .load(conn)?;
    Ok(rows.into_iter().sum())
}

impl DieselStore {
    /// Removals applied to `org` since `since`, by every run of every directory.
    pub async fn removals_since(&self, org: &str, since: DateTime<Utc>) -> Result<i64, SyncError> {
        let (org, since) = (org.to_string(), since.naive_utc());
        self.db.run(move |conn| window_sum(conn, &org, since)).await
    }

    /// Reserves `n` removals from `org` for `run` under `brake`, the org having
    /// `members` members now (see the module docs).
    pub async fn reserve_removals(
        &self,
        org: &str,
        run: &str,
        n: i64,
        members: i64,
        brake: Brake,
    ) -> Result<Reservation, SyncError> {
        let (org, run) = (org.to_string(), run.to_string());
        let since =
            (Utc::now() - chrono::Duration::seconds(i64::try_from(brake.window_secs).unwrap_or(3600))).naive_utc();
        self.db
            .write(move |conn| {
                lock_org(conn, &org)?;
                if let Some(held_by) =
                    org_holds::table.find(&org).select(org_holds::run_id).first::<String>(conn).optional()?
                {
                    return Ok(if held_by == run {
                        Reservation::Held { recent: window_sum(conn, &org, since)? }
                    } else {
                        Reservation::Join { run_id: held_by }
                    });
                }
                let recent = window_sum(conn, &org, since)?;
                if brake.holds_with(recent.max(0) as u64, n.max(0) as u64, members.max(0) as u64) {
                    diesel::insert_into(org_holds::table)
                        .values((
                            org_holds::org_id.eq(&org),
                            org_holds::run_id.eq(&run),
                            org_holds::created_at.eq(now()),
                        ))
                        .execute(conn)?;
                    return Ok(Reservation::Held { recent });
                }
                diesel::insert_into(removal_log::table)
                    .values((
                        removal_log::org_id.eq(&org),
                        removal_log::run_id.eq(&run),
                        removal_log::removed.eq(n),
                        removal_log::created_at.eq(now()),
                    ))
                    .execute(conn)?;
                Ok(Reservation::Granted { recent })
            })
            .await
    }

    /// After a granted reservation was applied: the window counts what was really
    /// removed (the guardian guard may have kept some).
    pub async fn settle_removals(&self, org: &str, run: &str, removed: i64) -> Result<(), SyncError> {
        let (org, run) = (org.to_string(), run.to_string());
        self.db
            .write(move |conn| {
                diesel::update(
                    removal_log::table.filter(removal_log::org_id.eq(&org)).filter(removal_log::run_id.eq(&run)),
                )
                .set(removal_log::removed.eq(removed.max(0)))
                .execute(conn)?;
                Ok(())
            })
            .await
    }

    /// The held run an org's removals wait in, if any.
    pub async fn open_hold(&self, org: &str) -> Result<Option<String>, SyncError> {
        let org = org.to_string();
        self.db
            .run(move |conn| {
                Ok(org_holds::table.find(&org).select(org_holds::run_id).first::<String>(conn).optional()?)
            })
            .await
    }

    /// Ends the holds of `run` (approved, rejected, or its run failed).
    pub async fn release_holds(&self, run: &str) -> Result<(), SyncError> {
        let run = run.to_string();
        self.db
            .write(move |conn| {
                diesel::delete(org_holds::table.filter(org_holds::run_id.eq(&run))).execute(conn)?;
                Ok(())
            })
            .await
    }

    /// Drops removal records older than the longest window.
    pub async fn prune_removal_log(&self, at: DateTime<Utc>) -> Result<usize, SyncError> {
        let before = (at - chrono::Duration::days(REMOVAL_LOG_KEEP_DAYS)).naive_utc();
        self.db
            .write(move |conn| {
                Ok(diesel::delete(removal_log::table.filter(removal_log::created_at.lt(before))).execute(conn)?)
            })
            .await
    }
}

impl DieselStore {
    /// Adds held items to `run`, leaving out members it already lists for the same org
    /// (a person whose removal trickles in twice is held once). Returns how many were added.
    pub async fn add_items_once(&self, run: &str, items: Vec<crate::domain::run::RunItem>) -> Result<i64, SyncError> {
        use super::schema::run_items;
        let run_id = run.to_string();
        let listed: Vec<(String, String)> = self
            .db
            .run(move |conn| {
                Ok::<_, SyncError>(
                    run_items::table
                        .filter(run_items::run_id.eq(&run_id))
                        .select((run_items::org_id, run_items::member_id))
                        .load(conn)?,
                )
            })
            .await?;
        let listed: std::collections::HashSet<(String, String)> = listed.into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<_> = items
            .into_iter()
            .filter(|i| {
                let key = (i.org_id.clone(), i.member_id.clone());
                i.member_id.is_empty() || (!listed.contains(&key) && seen.insert(key))
            })
            .collect();
        let added = fresh.len() as i64;
        self.add_items(run, fresh).await?;
        Ok(added)
    }
}

impl DieselStore {
    /// The ids of a directory's held runs.
    pub async fn held_run_ids(&self, directory: &str) -> Result<Vec<String>, SyncError> {
        use super::schema::sync_runs;
        let dir = directory.to_string();
        self.db
            .run(move |conn| {
                Ok(sync_runs::table
                    .filter(sync_runs::directory_id.eq(&dir))
                    .filter(sync_runs::state.eq(crate::domain::run::RunState::Held.name()))
                    .select(sync_runs::id)
                    .load(conn)?)
            })
            .await
    }
}

impl DieselStore {
    /// The directory's run that holds a suspect full listing, if any.
    pub async fn held_listing_run(&self, directory: &str) -> Result<Option<crate::domain::run::SyncRun>, SyncError> {
        use super::schema::sync_runs;
        let dir = directory.to_string();
        let id: Option<String> = self
            .db
            .run(move |conn| {
                Ok::<_, SyncError>(
                    sync_runs::table
                        .filter(sync_runs::directory_id.eq(&dir))
                        .filter(sync_runs::state.eq(crate::domain::run::RunState::Held.name()))
                        .filter(sync_runs::held_listing.is_not_null())
                        .order(sync_runs::id.desc())
                        .select(sync_runs::id)
                        .first(conn)
                        .optional()?,
                )
            })
            .await?;
        match id {
            Some(id) => Ok(Some(self.get_run(&id).await?)),
            None => Ok(None),
        }
    }

    /// Replaces a run's would-sweep items (a held listing's sample) with `items`.
    pub async fn replace_sweep_items(
        &self,
        run: &str,
        items: Vec<crate::domain::run::RunItem>,
    ) -> Result<(), SyncError> {
        use super::schema::run_items;
        let run_id = run.to_string();
        self.db
            .write(move |conn| {
                diesel::delete(
                    run_items::table
                        .filter(run_items::run_id.eq(&run_id))
                        .filter(run_items::kind.eq(crate::domain::run::ItemKind::WouldSweep.name())),
                )
                .execute(conn)?;
                Ok::<_, SyncError>(())
            })
            .await?;
        self.add_items(run, items).await
    }
}

impl DieselStore {
    /// Takes (or renews) the reconcile lease of a parent for `holder` until `now + ttl`:
    /// succeeds when the lease is free, lapsed, or already `holder`'s.
    pub async fn take_parent_lease(
        &self,
        parent: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, SyncError> {
        use super::schema::reconcile_leases;
        let (parent, holder) = (parent.to_string(), holder.to_string());
        let at = now();
        let until = at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
        self.db
            .write(move |conn| {
                let n = diesel::update(
                    reconcile_leases::table
                        .filter(reconcile_leases::parent_id.eq(&parent))
                        .filter(reconcile_leases::holder.eq(&holder).or(reconcile_leases::expires.lt(at))),
                )
                .set((reconcile_leases::holder.eq(&holder), reconcile_leases::expires.eq(until)))
                .execute(conn)?;
                if n == 1 {
                    return Ok(true);
                }
                let held = reconcile_leases::table
                    .find(&parent)
                    .select(reconcile_leases::holder)
                    .first::<String>(conn)
                    .optional()?
                    .is_some();
                if held {
                    return Ok(false);
                }
                let inserted = diesel::insert_into(reconcile_leases::table)
                    .values((
                        reconcile_leases::parent_id.eq(&parent),
                        reconcile_leases::holder.eq(&holder),
                        reconcile_leases::expires.eq(until),
                    ))
                    .execute(conn);
                match inserted {
                    Ok(_) => Ok(true),
                    // Another holder inserted it first.
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Gives a parent's reconcile lease up (when `holder` still has it).
    pub async fn release_parent_lease(&self, parent: &str, holder: &str) -> Result<(), SyncError> {
        use super::schema::reconcile_leases;
        let (parent, holder) = (parent.to_string(), holder.to_string());
        self.db
            .write(move |conn| {
                diesel::delete(
                    reconcile_leases::table
                        .filter(reconcile_leases::parent_id.eq(&parent))
                        .filter(reconcile_leases::holder.eq(&holder)),
                )
                .execute(conn)?;
                Ok(())
            })
            .await
    }
}
