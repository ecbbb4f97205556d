//! [`PolicyStore`] on diesel: one code base for SQLite and PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use muster_runtime::{Db, DbConnection};

use super::schema::{org_settings, orgs, parent_orgs, settings_history};
use super::{Page, PolicyStore};
use crate::domain::org::{Org, ParentKind, ParentOrg, ProductKind};
use crate::domain::settings::{Mapping, Mode, SettingsData, StoredSettings};
use crate::error::PolicyError;

/// Policy's store on a [`Db`].
#[derive(Clone, Debug)]
pub struct DieselPolicyStore {
    db: Db,
}

impl DieselPolicyStore {
    /// A store over `db` (migrated by `serve`).
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = parent_orgs)]
struct ParentRow {
    id: String,
    name: String,
    kind: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = orgs)]
struct OrgRow {
    id: String,
    parent_id: String,
    name: String,
    product: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Queryable, Insertable, Clone)]
#[diesel(table_name = org_settings)]
struct SettingsRow {
    org_id: String,
    version: i64,
    mode: String,
    advanced_group_mapping: bool,
    role_mappings: String,
    seat_tier_mappings: String,
    updated_by: String,
    updated_at: NaiveDateTime,
}

#[derive(Insertable)]
#[diesel(table_name = settings_history)]
struct HistoryRow {
    org_id: String,
    version: i64,
    mode: String,
    advanced_group_mapping: bool,
    role_mappings: String,
    seat_tier_mappings: String,
    updated_by: String,
    updated_at: NaiveDateTime,
}

fn now() -> NaiveDateTime {
    // Microsecond precision: what both backends store, so a value read back equals the one written.
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t).naive_utc()
}

fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl TryFrom<ParentRow> for ParentOrg {
    type Error = PolicyError;
    fn try_from(r: ParentRow) -> Result<Self, PolicyError> {
        Ok(ParentOrg {
            kind: r.kind.parse().map_err(|e| PolicyError::Corrupt(format!("parent {}: {e}", r.id)))?,
            id: r.id,
            name: r.name,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        })
    }
}

impl TryFrom<OrgRow> for Org {
    type Error = PolicyError;
    fn try_from(r: OrgRow) -> Result<Self, PolicyError> {
        Ok(Org {
            product: r.product.parse().map_err(|e| PolicyError::Corrupt(format!("org {}: {e}", r.id)))?,
            id: r.id,
            parent_id: r.parent_id,
            name: r.name,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
        })
    }
}

fn settings_from_row(r: SettingsRow) -> Result<StoredSettings, PolicyError> {
    let corrupt = |what: &str| PolicyError::Corrupt(format!("settings of org {}: {what}", r.org_id));
    let mode = Mode::from_name(&r.mode).ok_or_else(|| corrupt("mode"))?;
    let role_mappings: Vec<Mapping> = serde_json::from_str(&r.role_mappings).map_err(|_| corrupt("role mappings"))?;
    let seat_tier_mappings: Vec<Mapping> =
        serde_json::from_str(&r.seat_tier_mappings).map_err(|_| corrupt("seat-tier mappings"))?;
    Ok(StoredSettings {
        org_id: r.org_id,
        version: r.version,
        data: SettingsData {
            mode,
            advanced_group_mapping: r.advanced_group_mapping,
            role_mappings,
            seat_tier_mappings,
        },
        updated_at: Some(utc(r.updated_at)),
    })
}

fn page<R, T>(mut rows: Vec<R>, limit: usize, id_of: impl Fn(&T) -> String) -> Result<Page<T>, PolicyError>
where
    T: TryFrom<R, Error = PolicyError>,
{
    // One extra row was fetched to learn whether another page follows.
    let more = rows.len() > limit;
    rows.truncate(limit);
    let items = rows.into_iter().map(T::try_from).collect::<Result<Vec<T>, _>>()?;
    let next_after = if more { items.last().map(id_of) } else { None };
    Ok(Page { items, next_after })
}

fn load_parent(conn: &mut DbConnection, id: &str) -> Result<ParentOrg, PolicyError> {
    parent_orgs::table
        .find(id)
        .first::<ParentRow>(conn)
        .optional()?
        .ok_or_else(|| PolicyError::NotFound { what: "parent org", id: id.to_string() })?
        .try_into()
}

fn load_org(conn: &mut DbConnection, id: &str) -> Result<Org, PolicyError> {
    orgs::table
        .find(id)
        .first::<OrgRow>(conn)
        .optional()?
        .ok_or_else(|| PolicyError::NotFound { what: "org", id: id.to_string() })?
        .try_into()
}

#[async_trait]
impl PolicyStore for DieselPolicyStore {
    async fn create_parent(&self, name: String, kind: ParentKind) -> Result<ParentOrg, PolicyError> {
        self.db
            .write(move |conn| {
                let at = now();
                let row =
                    ParentRow { id: new_id(), name, kind: kind.name().to_string(), created_at: at, updated_at: at };
                diesel::insert_into(parent_orgs::table).values(&row).execute(conn)?;
                row.try_into()
            })
            .await
    }

    async fn get_parent(&self, id: &str) -> Result<ParentOrg, PolicyError> {
        let id = id.to_string();
        self.db.run(move |conn| load_parent(conn, &id)).await
    }

    async fn list_parents(&self, after: Option<String>, limit: usize) -> Result<Page<ParentOrg>, PolicyError> {
        self.db
            .run(move |conn| {
                let mut q = parent_orgs::table.order(parent_orgs::id).limit(limit as i64 + 1).into_boxed();
                if let Some(after) = after {
                    q = q.filter(parent_orgs::id.gt(after));
                }
                page(q.load::<ParentRow>(conn)?, limit, |p: &ParentOrg| p.id.clone())
            })
            .await
    }

    async fn rename_parent(&self, id: &str, name: String) -> Result<ParentOrg, PolicyError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                let n = diesel::update(parent_orgs::table.find(&id))
                    .set((parent_orgs::name.eq(name), parent_orgs::updated_at.eq(now())))
                    .execute(conn)?;
                if n == 0 {
                    return Err(PolicyError::NotFound { what: "parent org", id });
                }
                load_parent(conn, &id)
            })
            .await
    }

    async fn delete_parent(&self, id: &str) -> Result<(), PolicyError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                load_parent(conn, &id)?;
                let children: i64 = orgs::table.filter(orgs::parent_id.eq(&id)).count().get_result(conn)?;
                if children > 0 {
                    return Err(PolicyError::FailedPrecondition {
                        rule: "parent_has_orgs",
                        message: format!("parent org {id} still has {children} org(s); delete them first"),
                    });
                }
                diesel::delete(parent_orgs::table.find(&id)).execute(conn)?;
                Ok(())
            })
            .await
    }

    async fn create_org(&self, parent_id: &str, name: String, product: ProductKind) -> Result<Org, PolicyError> {
        let parent_id = parent_id.to_string();
        self.db
            .write(move |conn| {
                load_parent(conn, &parent_id)?;
                let at = now();
                let row = OrgRow {
                    id: new_id(),
                    parent_id,
                    name,
                    product: product.name().to_string(),
                    created_at: at,
                    updated_at: at,
                };
                diesel::insert_into(orgs::table).values(&row).execute(conn)?;
                row.try_into()
            })
            .await
    }

    async fn get_org(&self, id: &str) -> Result<Org, PolicyError> {
        let id = id.to_string();
        self.db.run(move |conn| load_org(conn, &id)).await
    }

    async fn list_orgs(
        &self,
        parent_id: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<Org>, PolicyError> {
        self.db
            .run(move |conn| {
                let mut q = orgs::table.order(orgs::id).limit(limit as i64 + 1).into_boxed();
                if let Some(parent_id) = parent_id {
                    q = q.filter(orgs::parent_id.eq(parent_id));
                }
                if let Some(after) = after {
                    q = q.filter(orgs::id.gt(after));
                }
                page(q.load::<OrgRow>(conn)?, limit, |o: &Org| o.id.clone())
            })
            .await
    }

    async fn rename_org(&self, id: &str, name: String) -> Result<Org, PolicyError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                let n = diesel::update(orgs::table.find(&id))
                    .set((orgs::name.eq(name), orgs::updated_at.eq(now())))
                    .execute(conn)?;
                if n == 0 {
                    return Err(PolicyError::NotFound { what: "org", id });
                }
                load_org(conn, &id)
            })
            .await
    }

    async fn delete_org(&self, id: &str) -> Result<(), PolicyError> {
        let id = id.to_string();
        self.db
            .write(move |conn| {
                diesel::delete(org_settings::table.find(&id)).execute(conn)?;
                let n = diesel::delete(orgs::table.find(&id)).execute(conn)?;
                if n == 0 {
                    return Err(PolicyError::NotFound { what: "org", id });
                }
                Ok(())
            })
            .await
    }

    async fn get_settings(&self, org_id: &str) -> Result<StoredSettings, PolicyError> {
        let org_id = org_id.to_string();
        self.db
            .run(move |conn| {
                load_org(conn, &org_id)?;
                match org_settings::table.find(&org_id).first::<SettingsRow>(conn).optional()? {
                    Some(row) => settings_from_row(row),
                    None => Ok(StoredSettings { org_id, version: 0, data: SettingsData::default(), updated_at: None }),
                }
            })
            .await
    }

    async fn save_settings(
        &self,
        org_id: &str,
        expected_version: i64,
        data: SettingsData,
        actor: String,
    ) -> Result<StoredSettings, PolicyError> {
        let org_id = org_id.to_string();
        let role_json = serde_json::to_string(&data.role_mappings).map_err(|e| PolicyError::Corrupt(e.to_string()))?;
        let tier_json =
            serde_json::to_string(&data.seat_tier_mappings).map_err(|e| PolicyError::Corrupt(e.to_string()))?;
        let result = self
            .db
            .write(move |conn| {
                load_org(conn, &org_id)?;
                let row = SettingsRow {
                    org_id: org_id.clone(),
                    version: expected_version + 1,
                    mode: data.mode.name().to_string(),
                    advanced_group_mapping: data.advanced_group_mapping,
                    role_mappings: role_json,
                    seat_tier_mappings: tier_json,
                    updated_by: actor,
                    updated_at: now(),
                };
                let written = if expected_version == 0 {
                    diesel::insert_into(org_settings::table).values(&row).execute(conn)?
                } else {
                    // Compare and set: only the version the caller read may be replaced.
                    diesel::update(
                        org_settings::table
                            .filter(org_settings::org_id.eq(&org_id))
                            .filter(org_settings::version.eq(expected_version)),
                    )
                    .set((
                        org_settings::version.eq(row.version),
                        org_settings::mode.eq(&row.mode),
                        org_settings::advanced_group_mapping.eq(row.advanced_group_mapping),
                        org_settings::role_mappings.eq(&row.role_mappings),
                        org_settings::seat_tier_mappings.eq(&row.seat_tier_mappings),
                        org_settings::updated_by.eq(&row.updated_by),
                        org_settings::updated_at.eq(row.updated_at),
                    ))
                    .execute(conn)?
                };
                if written == 0 {
                    let actual = org_settings::table
                        .find(&org_id)
                        .select(org_settings::version)
                        .first::<i64>(conn)
                        .optional()?
                        .unwrap_or(0);
                    return Err(PolicyError::VersionConflict { expected: expected_version, actual });
                }
                let history = HistoryRow {
                    org_id: row.org_id.clone(),
                    version: row.version,
                    mode: row.mode.clone(),
                    advanced_group_mapping: row.advanced_group_mapping,
                    role_mappings: row.role_mappings.clone(),
                    seat_tier_mappings: row.seat_tier_mappings.clone(),
                    updated_by: row.updated_by.clone(),
                    updated_at: row.updated_at,
                };
                diesel::insert_into(settings_history::table).values(&history).execute(conn)?;
                settings_from_row(row)
            })
            .await;
        match result {
            // Two first saves raced: the loser's insert hit the primary key.
            Err(PolicyError::Db(muster_runtime::DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            )))) => Err(PolicyError::VersionConflict { expected: expected_version, actual: expected_version + 1 }),
            other => other,
        }
    }
}
