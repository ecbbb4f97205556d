//! [`Ledger`] and the reads of membership on diesel: one code base for SQLite and
//! PostgreSQL.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use muster_runtime::{Db, DbConnection};

use super::schema::{apply_keys, audit_log, identity_links, member_events, members, seats, users};
use super::{AuditRecord, EventRecord, Ledger, LinkedUsers, NewLink};
use crate::domain::member::{IdentityLink, LinkRecord, Member, Source, Status, User};
use crate::domain::seats::{SeatLedger, TierSeats};
use crate::error::MembershipError;

/// Every event insert takes this PostgreSQL advisory lock, held to commit, so that
/// sequence numbers are handed out in commit order and a watcher never skips an
/// event that commits after a later-numbered one.
const EVENTS_LOCK: i64 = 7_202_612;

/// Runs a statement on the concrete connection: diesel's combined backend cannot
/// express multi-row inserts, each real backend can.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            DbConnection::Postgres($c) => $body,
            DbConnection::Sqlite($c) => $body,
        }
    };
}

/// Rows per multi-row statement: far under SQLite's and PostgreSQL's bind limits
/// (12 columns x 500 = 6,000 binds), large enough that a 10,000-row batch is 20 statements.
const CHUNK: usize = 500;

#[derive(Queryable, Insertable, Clone)]
#[diesel(table_name = users)]
struct UserRow {
    id: String,
    email: String,
    display_name: String,
    created_at: NaiveDateTime,
}

#[derive(Queryable, Insertable, Clone)]
#[diesel(table_name = members)]
struct MemberRow {
    id: String,
    org_id: String,
    user_id: String,
    role: String,
    seat_tier: Option<String>,
    wanted_seat_tier: Option<String>,
    status: String,
    source: String,
    directory_id: Option<String>,
    version: i64,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    waiting_since: Option<NaiveDateTime>,
}

#[derive(Insertable)]
#[diesel(table_name = audit_log)]
struct NewAudit<'a> {
    org_id: &'a str,
    user_id: &'a str,
    member_id: &'a str,
    action: &'a str,
    actor: &'a str,
    reasons: String,
    before_json: &'a str,
    after_json: &'a str,
    created_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = member_events)]
struct NewEvent<'a> {
    event_type: &'a str,
    org_id: &'a str,
    payload: &'a str,
    created_at: NaiveDateTime,
}

type AuditRow = (i64, String, String, String, String, String, String, String, String, NaiveDateTime);
type EventRow = (i64, String, String, String, NaiveDateTime);

/// Now, at the microsecond precision both backends store.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn user_from(r: UserRow) -> User {
    User { id: r.id, email: r.email, display_name: r.display_name, links: Vec::new() }
}

/// The columns of a user joined through its link, with what the link last reported.
type LinkedUserRow = (String, String, UserRow, Option<String>, Option<String>);

fn linked_user_from((_, _, user, email, display_name): LinkedUserRow) -> (User, LinkRecord) {
    let user = user_from(user);
    let record = LinkRecord { user_id: user.id.clone(), email, display_name };
    (user, record)
}

fn member_from(r: MemberRow, user: User) -> Result<Member, MembershipError> {
    let corrupt = |what: &str| MembershipError::Corrupt(format!("member {}: {what}", r.id));
    Ok(Member {
        status: Status::from_name(&r.status).ok_or_else(|| corrupt("status"))?,
        source: Source::from_name(&r.source).ok_or_else(|| corrupt("source"))?,
        id: r.id,
        org_id: r.org_id,
        user,
        role: r.role,
        seat_tier: r.seat_tier,
        wanted_seat_tier: r.wanted_seat_tier,
        directory_id: r.directory_id,
        version: r.version,
        created_at: r.created_at.and_utc(),
        updated_at: r.updated_at.and_utc(),
        waiting_since: r.waiting_since.map(|t| t.and_utc()),
    })
}

fn row_of(m: &Member) -> MemberRow {
    MemberRow {
        id: m.id.clone(),
        org_id: m.org_id.clone(),
        user_id: m.user.id.clone(),
        role: m.role.clone(),
        seat_tier: m.seat_tier.clone(),
        wanted_seat_tier: m.wanted_seat_tier.clone(),
        status: m.status.name().to_string(),
        source: m.source.name().to_string(),
        directory_id: m.directory_id.clone(),
        version: m.version,
        created_at: m.created_at.naive_utc(),
        updated_at: m.updated_at.naive_utc(),
        waiting_since: m.waiting_since.map(|t| t.naive_utc()),
    }
}

fn load_members(conn: &mut DbConnection, rows: Vec<(MemberRow, UserRow)>) -> Result<Vec<Member>, MembershipError> {
    let _ = conn;
    rows.into_iter().map(|(m, u)| member_from(m, user_from(u))).collect()
}

/// Fills in each member's person's identity links (one query per 500 people).
fn with_links(ledger: &mut SqlLedger<'_>, mut members: Vec<Member>) -> Result<Vec<Member>, MembershipError> {
    let ids: Vec<String> = members.iter().map(|m| m.user.id.clone()).collect();
    let links = ledger.links_of(&ids)?;
    for m in &mut members {
        m.user.links = links.get(&m.user.id).cloned().unwrap_or_default();
    }
    Ok(members)
}

/// What LookupMembers answers for one identity: the member in the org, and the person.
pub type Lookup = (Option<Member>, Option<User>);

fn audit_from(r: AuditRow) -> AuditRecord {
    let (id, org_id, user_id, member_id, action, actor, reasons, before_json, after_json, at) = r;
    AuditRecord {
        id,
        org_id,
        user_id,
        member_id,
        action,
        actor,
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        before_json,
        after_json,
        at: at.and_utc(),
    }
}

/// The [`Ledger`] of one open transaction.
pub struct SqlLedger<'a> {
    conn: &'a mut DbConnection,
}

impl Ledger for SqlLedger<'_> {
    fn lock_org(&mut self, org_id: &str) -> Result<(), MembershipError> {
        // SQLite: writers are already serialised (one writer, and Db::write queues ours).
        if let DbConnection::Postgres(pg) = self.conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind::<Text, _>(org_id)
                .execute(pg)?;
        }
        Ok(())
    }

    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, MembershipError> {
        Ok(users::table.filter(users::email.eq(email)).first::<UserRow>(self.conn).optional()?.map(user_from))
    }

    fn user_by_link(
        &mut self,
        directory_id: &str,
        external_id: &str,
    ) -> Result<Option<(User, LinkRecord)>, MembershipError> {
        Ok(identity_links::table
            .inner_join(users::table)
            .filter(identity_links::directory_id.eq(directory_id))
            .filter(identity_links::external_id.eq(external_id))
            .select((
                identity_links::directory_id,
                identity_links::external_id,
                (users::id, users::email, users::display_name, users::created_at),
                identity_links::email,
                identity_links::display_name,
            ))
            .first::<LinkedUserRow>(self.conn)
            .optional()?
            .map(linked_user_from))
    }

    fn users_for(
        &mut self,
        links: &[(String, String)],
        emails: &[String],
    ) -> Result<(LinkedUsers, HashMap<String, User>), MembershipError> {
        let mut by_directory: HashMap<&str, Vec<&str>> = HashMap::new();
        for (dir, ext) in links {
            by_directory.entry(dir.as_str()).or_default().push(ext.as_str());
        }
        let mut by_link = HashMap::new();
        for (dir, exts) in by_directory {
            for chunk in exts.chunks(CHUNK) {
                let rows: Vec<LinkedUserRow> = identity_links::table
                    .inner_join(users::table)
                    .filter(identity_links::directory_id.eq(dir))
                    .filter(identity_links::external_id.eq_any(chunk))
                    .select((
                        identity_links::directory_id,
                        identity_links::external_id,
                        (users::id, users::email, users::display_name, users::created_at),
                        identity_links::email,
                        identity_links::display_name,
                    ))
                    .load(self.conn)?;
                for row in rows {
                    let key = (row.0.clone(), row.1.clone());
                    by_link.insert(key, linked_user_from(row));
                }
            }
        }
        let mut by_email = HashMap::new();
        for chunk in emails.chunks(CHUNK) {
            for user in users::table.filter(users::email.eq_any(chunk)).load::<UserRow>(self.conn)? {
                by_email.insert(user.email.clone(), user_from(user));
            }
        }
        Ok((by_link, by_email))
    }

    fn members_of(&mut self, org_id: &str, user_ids: &[String]) -> Result<Vec<Member>, MembershipError> {
        let mut out = Vec::new();
        for chunk in user_ids.chunks(CHUNK) {
            let rows = members::table
                .inner_join(users::table)
                .filter(members::org_id.eq(org_id))
                .filter(members::user_id.eq_any(chunk))
                .load::<(MemberRow, UserRow)>(self.conn)?;
            out.extend(load_members(self.conn, rows)?);
        }
        Ok(out)
    }

    fn insert_users(&mut self, users_in: &[User]) -> Result<(), MembershipError> {
        let at = now().naive_utc();
        for chunk in users_in.chunks(CHUNK) {
            let rows: Vec<UserRow> = chunk
                .iter()
                .map(|u| UserRow {
                    id: u.id.clone(),
                    email: u.email.clone(),
                    display_name: u.display_name.clone(),
                    created_at: at,
                })
                .collect();
            on_backend!(self.conn, c => diesel::insert_into(users::table).values(&rows).execute(c))?;
        }
        Ok(())
    }

    fn insert_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError> {
        for chunk in links.chunks(CHUNK) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|l| {
                    (
                        identity_links::directory_id.eq(&l.directory_id),
                        identity_links::external_id.eq(&l.external_id),
                        identity_links::user_id.eq(&l.user_id),
                        identity_links::email.eq(&l.email),
                        identity_links::display_name.eq(&l.display_name),
                    )
                })
                .collect();
            on_backend!(self.conn, c => diesel::insert_into(identity_links::table).values(&rows).execute(c))?;
        }
        Ok(())
    }

    fn update_links(&mut self, links: &[NewLink]) -> Result<(), MembershipError> {
        // Rare (an identity reported a new email or name): one statement each is fine.
        for l in links {
            diesel::update(
                identity_links::table
                    .filter(identity_links::directory_id.eq(&l.directory_id))
                    .filter(identity_links::external_id.eq(&l.external_id)),
            )
            .set((identity_links::email.eq(&l.email), identity_links::display_name.eq(&l.display_name)))
            .execute(self.conn)?;
        }
        Ok(())
    }

    fn update_users(&mut self, users_in: &[User]) -> Result<(), MembershipError> {
        for u in users_in {
            diesel::update(users::table.find(&u.id))
                .set((users::email.eq(&u.email), users::display_name.eq(&u.display_name)))
                .execute(self.conn)?;
        }
        Ok(())
    }

    fn replace_members(&mut self, gone: &[String], rows: &[Member]) -> Result<(), MembershipError> {
        for chunk in gone.chunks(CHUNK) {
            diesel::delete(members::table.filter(members::id.eq_any(chunk))).execute(self.conn)?;
        }
        for chunk in rows.chunks(CHUNK) {
            let rows: Vec<MemberRow> = chunk.iter().map(row_of).collect();
            on_backend!(self.conn, c => diesel::insert_into(members::table).values(&rows).execute(c))?;
        }
        Ok(())
    }

    fn members_by_id(&mut self, org_id: &str, ids: &[String]) -> Result<Vec<Member>, MembershipError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let rows = members::table
                .inner_join(users::table)
                .filter(members::org_id.eq(org_id))
                .filter(members::id.eq_any(chunk))
                .load::<(MemberRow, UserRow)>(self.conn)?;
            out.extend(load_members(self.conn, rows)?);
        }
        Ok(out)
    }

    fn memberships_of_user(&mut self, user_id: &str) -> Result<Vec<Member>, MembershipError> {
        let rows = members::table
            .inner_join(users::table)
            .filter(members::user_id.eq(user_id))
            .order(members::id)
            .load::<(MemberRow, UserRow)>(self.conn)?;
        load_members(self.conn, rows)
    }

    fn links_of(&mut self, user_ids: &[String]) -> Result<HashMap<String, Vec<IdentityLink>>, MembershipError> {
        let mut out: HashMap<String, Vec<IdentityLink>> = HashMap::new();
        for chunk in user_ids.chunks(CHUNK) {
            let rows: Vec<(String, String, String)> = identity_links::table
                .filter(identity_links::user_id.eq_any(chunk))
                .select((identity_links::user_id, identity_links::directory_id, identity_links::external_id))
                .order((identity_links::directory_id, identity_links::external_id))
                .load(self.conn)?;
            for (user, directory_id, external_id) in rows {
                out.entry(user).or_default().push(IdentityLink { directory_id, external_id });
            }
        }
        Ok(out)
    }

    fn member(&mut self, org_id: &str, member_id: &str) -> Result<Option<Member>, MembershipError> {
        let row = members::table
            .inner_join(users::table)
            .filter(members::org_id.eq(org_id))
            .filter(members::id.eq(member_id))
            .first::<(MemberRow, UserRow)>(self.conn)
            .optional()?;
        row.map(|(m, u)| member_from(m, user_from(u))).transpose()
    }

    fn member_of_user(&mut self, org_id: &str, user: &User) -> Result<Option<Member>, MembershipError> {
        let row = members::table
            .filter(members::org_id.eq(org_id))
            .filter(members::user_id.eq(&user.id))
            .first::<MemberRow>(self.conn)
            .optional()?;
        row.map(|m| member_from(m, user.clone())).transpose()
    }

    fn count_active_role(&mut self, org_id: &str, role: &str) -> Result<i64, MembershipError> {
        Ok(members::table
            .filter(members::org_id.eq(org_id))
            .filter(members::role.eq(role))
            .filter(members::status.eq(Status::Active.name()))
            .count()
            .get_result(self.conn)?)
    }

    fn seat_ledger(&mut self, org_id: &str, tiers: &[String]) -> Result<SeatLedger, MembershipError> {
        if tiers.is_empty() {
            return Ok(SeatLedger::new(vec![]));
        }
        let purchased: HashMap<String, Option<i64>> = seats::table
            .filter(seats::org_id.eq(org_id))
            .select((seats::seat_tier, seats::purchased))
            .load::<(String, Option<i64>)>(self.conn)?
            .into_iter()
            .collect();
        let used: HashMap<Option<String>, i64> = members::table
            .filter(members::org_id.eq(org_id))
            .filter(members::status.eq(Status::Active.name()))
            .group_by(members::seat_tier)
            .select((members::seat_tier, diesel::dsl::count_star()))
            .load::<(Option<String>, i64)>(self.conn)?
            .into_iter()
            .collect();
        Ok(SeatLedger::new(
            tiers
                .iter()
                .map(|t| TierSeats {
                    tier: t.clone(),
                    purchased: purchased.get(t).copied().flatten(),
                    used: used.get(&Some(t.clone())).copied().unwrap_or(0),
                })
                .collect(),
        ))
    }

    fn set_seats(&mut self, org_id: &str, tier: &str, purchased: Option<i64>) -> Result<(), MembershipError> {
        // No upsert on the combined connection: update, then insert if nothing was there.
        let n = diesel::update(seats::table.filter(seats::org_id.eq(org_id)).filter(seats::seat_tier.eq(tier)))
            .set(seats::purchased.eq(purchased))
            .execute(self.conn)?;
        if n == 0 {
            diesel::insert_into(seats::table)
                .values((seats::org_id.eq(org_id), seats::seat_tier.eq(tier), seats::purchased.eq(purchased)))
                .execute(self.conn)?;
        }
        Ok(())
    }

    fn pending(&mut self, org_id: &str) -> Result<Vec<Member>, MembershipError> {
        let rows = members::table
            .inner_join(users::table)
            .filter(members::org_id.eq(org_id))
            .filter(members::status.eq(Status::PendingSeat.name()).or(members::wanted_seat_tier.is_not_null()))
            // NULLs (never for a waiting member) would sort differently per backend.
            .order((members::waiting_since.asc(), members::id))
            .load::<(MemberRow, UserRow)>(self.conn)?;
        load_members(self.conn, rows)
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), MembershipError> {
        for chunk in records.chunks(CHUNK) {
            let rows: Vec<NewAudit<'_>> = chunk
                .iter()
                .map(|r| NewAudit {
                    org_id: &r.org_id,
                    user_id: &r.user_id,
                    member_id: &r.member_id,
                    action: &r.action,
                    actor: &r.actor,
                    reasons: serde_json::to_string(&r.reasons).unwrap_or_else(|_| "[]".into()),
                    before_json: &r.before_json,
                    after_json: &r.after_json,
                    created_at: r.at.naive_utc(),
                })
                .collect();
            on_backend!(self.conn, c => diesel::insert_into(audit_log::table).values(&rows).execute(c))?;
        }
        Ok(())
    }

    fn append_events(&mut self, events: &[EventRecord]) -> Result<(), MembershipError> {
        if events.is_empty() {
            return Ok(());
        }
        if let DbConnection::Postgres(pg) = self.conn {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({EVENTS_LOCK})")).execute(pg)?;
        }
        for chunk in events.chunks(CHUNK) {
            let rows: Vec<NewEvent<'_>> = chunk
                .iter()
                .map(|e| NewEvent {
                    event_type: &e.event_type,
                    org_id: &e.org_id,
                    payload: &e.payload,
                    created_at: e.at.naive_utc(),
                })
                .collect();
            // Multi-row VALUES are numbered in list order on both backends, so a
            // batch's events keep their order.
            on_backend!(self.conn, c => diesel::insert_into(member_events::table).values(&rows).execute(c))?;
        }
        Ok(())
    }

    fn stored_apply(&mut self, org_id: &str, key: &str) -> Result<Option<(String, String)>, MembershipError> {
        Ok(apply_keys::table
            .filter(apply_keys::org_id.eq(org_id))
            .filter(apply_keys::idempotency_key.eq(key))
            .select((apply_keys::request_hash, apply_keys::response_hex))
            .first(self.conn)
            .optional()?)
    }

    fn store_apply(&mut self, org_id: &str, key: &str, hash: &str, answer: &str) -> Result<(), MembershipError> {
        diesel::insert_into(apply_keys::table)
            .values((
                apply_keys::org_id.eq(org_id),
                apply_keys::idempotency_key.eq(key),
                apply_keys::request_hash.eq(hash),
                apply_keys::response_hex.eq(answer),
                apply_keys::created_at.eq(now().naive_utc()),
            ))
            .execute(self.conn)?;
        Ok(())
    }
}

/// Filters of a member listing.
#[derive(Clone, Debug, Default)]
pub struct MemberFilter {
    /// Role.
    pub role: Option<String>,
    /// Seat tier.
    pub seat_tier: Option<String>,
    /// Status.
    pub status: Option<Status>,
    /// Source.
    pub source: Option<Source>,
    /// Lowercased email prefix.
    pub email_prefix: Option<String>,
}

/// Filters of an audit listing.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Person.
    pub user_id: Option<String>,
    /// Actor.
    pub actor: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Membership's database.
#[derive(Clone, Debug)]
pub struct MembershipStore {
    db: Db,
}

impl MembershipStore {
    /// Over `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Runs `f` on a [`Ledger`] inside one transaction: all of it commits, or nothing.
    pub async fn transact<T, F>(&self, f: F) -> Result<T, MembershipError>
    where
        F: FnOnce(&mut SqlLedger<'_>) -> Result<T, MembershipError> + Send + 'static,
        T: Send + 'static,
    {
        self.db.write(move |conn| f(&mut SqlLedger { conn })).await
    }

    /// Runs `f` on a [`Ledger`] inside a transaction that is always rolled back: a dry
    /// run (its session writes nothing anyway; the rollback makes sure of it). Takes
    /// no write lock, so a preview never holds up real changes.
    pub async fn dry_run<T, F>(&self, f: F) -> Result<T, MembershipError>
    where
        F: FnOnce(&mut SqlLedger<'_>) -> Result<T, MembershipError> + Send + 'static,
        T: Send + 'static,
    {
        self.db
            .run(move |conn| {
                let mut out = None;
                let rolled_back = conn.transaction::<(), MembershipError, _>(|conn| {
                    out = Some(f(&mut SqlLedger { conn }));
                    Err(MembershipError::from(diesel::result::Error::RollbackTransaction))
                });
                // The Err above is the rollback we asked for; the answer is what `f` said
                // (nothing was written either way).
                match (out, rolled_back) {
                    (Some(result), _) => result,
                    (None, Err(e)) => Err(e),
                    (None, Ok(())) => Err(MembershipError::Corrupt("dry run produced nothing".into())),
                }
            })
            .await
    }

    /// One member, with their person's links.
    pub async fn member(&self, org_id: String, member_id: String) -> Result<Option<Member>, MembershipError> {
        self.db
            .run(move |conn| {
                let mut ledger = SqlLedger { conn };
                match ledger.member(&org_id, &member_id)? {
                    Some(m) => Ok(with_links(&mut ledger, vec![m])?.pop()),
                    None => Ok(None),
                }
            })
            .await
    }

    /// A page of an org's members after `after` (member id), in join order.
    pub async fn list_members(
        &self,
        org_id: String,
        filter: MemberFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Member>, i64), MembershipError> {
        self.db
            .run(move |conn| {
                // The same filters select the page and count every match.
                macro_rules! filtered {
                    ($q:expr) => {{
                        let mut q = $q.filter(members::org_id.eq(&org_id)).into_boxed();
                        if let Some(role) = &filter.role {
                            q = q.filter(members::role.eq(role));
                        }
                        if let Some(tier) = &filter.seat_tier {
                            q = q.filter(members::seat_tier.eq(tier));
                        }
                        if let Some(status) = filter.status {
                            q = q.filter(members::status.eq(status.name()));
                        }
                        if let Some(source) = filter.source {
                            q = q.filter(members::source.eq(source.name()));
                        }
                        if let Some(prefix) = &filter.email_prefix {
                            q = q.filter(users::email.like(like_prefix(prefix)).escape('\\'));
                        }
                        q
                    }};
                }
                let total: i64 = filtered!(members::table.inner_join(users::table)).count().get_result(conn)?;
                let mut q = filtered!(members::table.inner_join(users::table)).order(members::id).limit(limit as i64);
                if let Some(after) = &after {
                    q = q.filter(members::id.gt(after));
                }
                let rows = q.load::<(MemberRow, UserRow)>(conn)?;
                let members = load_members(conn, rows)?;
                Ok((with_links(&mut SqlLedger { conn }, members)?, total))
            })
            .await
    }

    /// For each (directory id, external id, lowercased email), the person it resolves to
    /// (a directory identity wins over an email) and their member in `org_id`, both with
    /// the person's links. One query per 500 of each kind.
    pub async fn lookup(
        &self,
        org_id: String,
        identities: Vec<(String, String, String)>,
    ) -> Result<Vec<Lookup>, MembershipError> {
        self.db
            .run(move |conn| {
                let mut ledger = SqlLedger { conn };
                let links: Vec<(String, String)> = identities
                    .iter()
                    .filter(|(d, x, _)| !d.is_empty() && !x.is_empty())
                    .map(|(d, x, _)| (d.clone(), x.clone()))
                    .collect();
                let emails: Vec<String> =
                    identities.iter().map(|(_, _, e)| e.clone()).filter(|e| !e.is_empty()).collect();
                let (by_link, by_email) = ledger.users_for(&links, &emails)?;
                let user_of = |(d, x, e): &(String, String, String)| -> Option<User> {
                    by_link.get(&(d.clone(), x.clone())).map(|(u, _)| u).or_else(|| by_email.get(e)).cloned()
                };
                let mut wanted: Vec<String> = identities.iter().filter_map(user_of).map(|u| u.id).collect();
                wanted.sort();
                wanted.dedup();
                let people_links = ledger.links_of(&wanted)?;
                let members: HashMap<String, Member> = ledger
                    .members_of(&org_id, &wanted)?
                    .into_iter()
                    .map(|mut m| {
                        m.user.links = people_links.get(&m.user.id).cloned().unwrap_or_default();
                        (m.user.id.clone(), m)
                    })
                    .collect();
                Ok(identities
                    .iter()
                    .map(|i| match user_of(i) {
                        Some(mut user) => {
                            user.links = people_links.get(&user.id).cloned().unwrap_or_default();
                            (members.get(&user.id).cloned(), Some(user))
                        }
                        None => (None, None),
                    })
                    .collect::<Vec<Lookup>>())
            })
            .await
    }

    /// Seat use of an org: the ledger for `tiers`, pending counts per wanted tier (key
    /// `None` = any tier).
    pub async fn seat_usage(
        &self,
        org_id: String,
        tiers: Vec<String>,
    ) -> Result<(SeatLedger, HashMap<Option<String>, i64>), MembershipError> {
        self.db
            .run(move |conn| {
                let ledger = SqlLedger { conn }.seat_ledger(&org_id, &tiers)?;
                let pending: HashMap<Option<String>, i64> = members::table
                    .filter(members::org_id.eq(&org_id))
                    .filter(members::status.eq(Status::PendingSeat.name()).or(members::wanted_seat_tier.is_not_null()))
                    .group_by(members::wanted_seat_tier)
                    .select((members::wanted_seat_tier, diesel::dsl::count_star()))
                    .load::<(Option<String>, i64)>(conn)?
                    .into_iter()
                    .collect();
                Ok((ledger, pending))
            })
            .await
    }

    /// A page of an org's audit log, newest first, before id `before`.
    pub async fn list_audit(
        &self,
        org_id: String,
        filter: AuditFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, MembershipError> {
        self.db
            .run(move |conn| {
                let mut q = audit_log::table
                    .filter(audit_log::org_id.eq(org_id))
                    .order(audit_log::id.desc())
                    .limit(limit as i64)
                    .into_boxed();
                if let Some(before) = before {
                    q = q.filter(audit_log::id.lt(before));
                }
                if let Some(user) = filter.user_id {
                    q = q.filter(audit_log::user_id.eq(user));
                }
                if let Some(actor) = filter.actor {
                    q = q.filter(audit_log::actor.eq(actor));
                }
                if let Some(since) = filter.since {
                    q = q.filter(audit_log::created_at.ge(since.naive_utc()));
                }
                if let Some(until) = filter.until {
                    q = q.filter(audit_log::created_at.lt(until.naive_utc()));
                }
                Ok(q.load::<AuditRow>(conn)?.into_iter().map(audit_from).collect())
            })
            .await
    }

    /// Up to `limit` events after `after`, in sequence order.
    pub async fn events_after(
        &self,
        after: i64,
        org_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, MembershipError> {
        self.db
            .run(move |conn| {
                let mut q = member_events::table
                    .filter(member_events::sequence.gt(after))
                    .order(member_events::sequence)
                    .limit(limit as i64)
                    .into_boxed();
                if let Some(org) = org_id {
                    q = q.filter(member_events::org_id.eq(org));
                }
                Ok(q.load::<EventRow>(conn)?
                    .into_iter()
                    .map(|(sequence, event_type, org_id, payload, at)| EventRecord {
                        sequence,
                        event_type,
                        org_id,
                        payload,
                        at: at.and_utc(),
                    })
                    .collect())
            })
            .await
    }
}
