//! Muster's end-to-end tests: real services on 127.0.0.1:0, real gRPC, on SQLite and
//! (whenever it answers, and always under CI) PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs an async test body once on SQLite and once on PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident => $body:ident;)*) => {
        $(
            mod $name {
                use muster_tests::DbKind;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$body(DbKind::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if muster_tests::postgres_available() {
                        super::$body(DbKind::Postgres).await;
                    }
                }
            }
        )*
    };
}

mod deletion;
mod directory;
mod flaky_pull;
mod membership;
mod policy;
mod property;
mod pull;
mod reconcile;
mod replicas;
mod runtime;
mod shutdown;
mod stories;
mod support;
