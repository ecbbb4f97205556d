//! How audit records and runs name who or what caused a change: `admin:ID`,
//! `sync_run:ID`, `login:REF`, `system:JOB`.

use muster_proto::common::v1::{Actor, actor::Kind};

/// The recorded name of an actor; `None` when the caller named none.
pub fn actor_name(actor: Option<&Actor>) -> Option<String> {
    actor.and_then(|a| a.kind.as_ref()).map(|kind| match kind {
        Kind::AdminId(id) => format!("admin:{id}"),
        Kind::SyncRunId(id) => format!("sync_run:{id}"),
        Kind::LoginUserRef(id) => format!("login:{id}"),
        Kind::System(job) => format!("system:{job}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_named_by_kind() {
        let a = |kind| Actor { kind: Some(kind) };
        assert_eq!(actor_name(Some(&a(Kind::AdminId("ann".into())))).as_deref(), Some("admin:ann"));
        assert_eq!(actor_name(Some(&a(Kind::SyncRunId("r1".into())))).as_deref(), Some("sync_run:r1"));
        assert_eq!(actor_name(Some(&a(Kind::LoginUserRef("u".into())))).as_deref(), Some("login:u"));
        assert_eq!(actor_name(Some(&a(Kind::System("demo".into())))).as_deref(), Some("system:demo"));
        assert_eq!(actor_name(None), None);
        assert_eq!(actor_name(Some(&Actor { kind: None })), None);
    }
}
