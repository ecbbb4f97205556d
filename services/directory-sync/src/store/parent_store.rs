//! Reads across a parent's directories, for deciding a person from everything the
//! parent's directories say of them: mirror users by id in any of them, mirror users
//! by email, and each directory's authority.

use std::collections::HashMap;

use diesel::prelude::*;

use super::diesel_store::{CHUNK, DieselStore, UserRow, groups_of_users, now};
use super::schema::{dir_users, directories};
use super::{MirrorUser, SyncStore};
use crate::domain::directory::{Authority, Directory};
use crate::error::SyncError;

/// A mirror user with its direct groups.
pub type UserWithGroups = (MirrorUser, Vec<(String, String)>);

impl DieselStore {
    /// Every directory of a parent, in id order.
    pub async fn parent_directories(&self, parent_id: &str) -> Result<Vec<Directory>, SyncError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.list_directories(Some(parent_id.to_string()), after, 1000).await?;
            out.extend(page.items);
            match page.next_after {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }

    /// Mirror users by (directory, id), with their groups; absent ones are left out.
    pub async fn users_by_refs(&self, refs: Vec<(String, String)>) -> Result<Vec<UserWithGroups>, SyncError> {
        self.db
            .run(move |conn| {
                let mut by_dir: HashMap<String, Vec<String>> = HashMap::new();
                for (d, id) in refs {
                    by_dir.entry(d).or_default().push(id);
                }
                let mut out = Vec::new();
                for (dir, ids) in by_dir {
                    for chunk in ids.chunks(CHUNK) {
                        let rows = dir_users::table
                            .filter(dir_users::directory_id.eq(&dir))
                            .filter(dir_users::id.eq_any(chunk))
                            .load::<UserRow>(conn)?;
                        with_groups(conn, &dir, rows, &mut out)?;
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Mirror users of `directories` whose email is one of `emails` (lowercase), with
    /// their groups.
    pub async fn users_by_emails(
        &self,
        directories_: Vec<String>,
        emails: Vec<String>,
    ) -> Result<Vec<UserWithGroups>, SyncError> {
        self.db
            .run(move |conn| {
                let mut out = Vec::new();
                for dir in &directories_ {
                    for chunk in emails.chunks(CHUNK) {
                        let rows = dir_users::table
                            .filter(dir_users::directory_id.eq(dir))
                            .filter(dir_users::email_lower.eq_any(chunk))
                            .load::<UserRow>(conn)?;
                        with_groups(conn, dir, rows, &mut out)?;
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Sets a directory's authority; answers it as it is after.
    pub async fn set_authority(&self, id: &str, authority: Authority) -> Result<Directory, SyncError> {
        let (id, key) = (id.to_string(), id.to_string());
        self.db
            .write(move |conn| {
                let n = diesel::update(directories::table.find(&id))
                    .set((directories::authority.eq(authority.name()), directories::updated_at.eq(now())))
                    .execute(conn)?;
                if n == 0 {
                    return Err(SyncError::NotFound { what: "directory", id });
                }
                Ok(())
            })
            .await?;
        self.get_directory(&key).await
    }
}

/// Adds `rows` of `dir` with their groups (read only for active users: an inactive
/// user's groups assign nothing).
fn with_groups(
    conn: &mut muster_runtime::DbConnection,
    dir: &str,
    rows: Vec<UserRow>,
    out: &mut Vec<UserWithGroups>,
) -> Result<(), SyncError> {
    let active: Vec<String> = rows.iter().filter(|r| r.active).map(|r| r.id.clone()).collect();
    let mut groups = if active.is_empty() { HashMap::new() } else { groups_of_users(conn, dir, &active)? };
    for r in rows {
        let g = groups.remove(&r.id).unwrap_or_default();
        out.push((MirrorUser::from(r), g));
    }
    Ok(())
}
