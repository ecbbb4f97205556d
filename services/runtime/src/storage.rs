//! Storage: one diesel code base over SQLite (the embedded default, a file) or
//! PostgreSQL (the scale path), picked by the URL's scheme. Migrations are embedded
//! per backend and run at start. Diesel is blocking, so every query runs inside
//! [`Db::run`] / [`Db::write`] on tokio's blocking pool, never on an async worker.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

/// A connection to either backend. Queries written once against diesel's DSL run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL.
    Postgres(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

/// Which database engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path`, `sqlite:path` or a plain file path.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
}

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("database url {0}: expected sqlite://PATH, a file path, or postgres://…")]
    BadUrl(String),
    /// The database could not be reached at start-up.
    #[error("cannot connect to database {target}: {message}")]
    Unreachable {
        /// The database, password removed.
        target: String,
        /// The driver's message.
        message: String,
    },
    /// No pooled connection became free in time, or the database went away.
    #[error("database unavailable: {0}")]
    Pool(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A migration failed.
    #[error("database migration failed on {target}: {message}")]
    Migration {
        /// The database, password removed.
        target: String,
        /// What failed.
        message: String,
    },
    /// The blocking task was cancelled (shutdown).
    #[error("database task cancelled")]
    Cancelled,
}

impl DbError {
    /// Whether the failure is the database being unreachable or overloaded (retryable),
    /// as opposed to a query that is wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Pool(_) | DbError::Unreachable { .. } | DbError::Cancelled)
    }
}

/// Migrations of one service, one set per backend. Functions, because diesel's
/// embedded migrations are consts that are neither `Clone` nor borrowable as a source.
#[derive(Clone, Copy)]
pub struct Migrations {
    /// For SQLite.
    pub sqlite: fn() -> EmbeddedMigrations,
    /// For PostgreSQL.
    pub postgres: fn() -> EmbeddedMigrations,
}

/// A service's [`Migrations`], embedded from its `migrations/sqlite` and
/// `migrations/postgres` directories: `pub const MIGRATIONS: Migrations = muster_runtime::service_migrations!();`
#[macro_export]
macro_rules! service_migrations {
    () => {{
        const SQLITE: ::diesel_migrations::EmbeddedMigrations =
            ::diesel_migrations::embed_migrations!("migrations/sqlite");
        const POSTGRES: ::diesel_migrations::EmbeddedMigrations =
            ::diesel_migrations::embed_migrations!("migrations/postgres");
        fn sqlite() -> ::diesel_migrations::EmbeddedMigrations {
            SQLITE
        }
        fn postgres() -> ::diesel_migrations::EmbeddedMigrations {
            POSTGRES
        }
        $crate::Migrations { sqlite, postgres }
    }};
}

/// Splits a database URL into its backend and what the driver takes.
pub fn parse_url(url: &str) -> Result<(Backend, String), DbError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(DbError::BadUrl(url.to_string()));
        }
        return Ok((Backend::Sqlite, path.to_string()));
    }
    if url.contains("://") || url.is_empty() {
        return Err(DbError::BadUrl(redact_url(url)));
    }
    Ok((Backend::Sqlite, url.to_string()))
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Opens connections of the backend the URL named. It never tries one backend and
/// then the other: that would hide the real error.
#[derive(Debug, Clone)]
pub struct ConnectionFactory {
    backend: Backend,
    target: String,
}

impl ManageConnection for ConnectionFactory {
    type Connection = DbConnection;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.target).map(DbConnection::Postgres),
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.target)?;
                // WAL lets readers run beside the writer; the busy timeout makes a second
                // writer wait instead of failing; foreign keys are off by default in SQLite.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 15000; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                )
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1").map_err(diesel::ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// A pooled database handle, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<ConnectionFactory>,
    backend: Backend,
    target: String,
    // SQLite has one writer at a time; serialising our own writes here turns lock
    // contention into an orderly queue instead of SQLITE_BUSY retries.
    sqlite_writer: Arc<std::sync::Mutex<()>>,
    // Run against a schema newer than this binary knows (a rollback the operator chose).
    allow_newer_schema: bool,
    // Makes connections outside the pool (session locks).
    factory: ConnectionFactory,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).field("target", &self.target).finish()
    }
}

impl Db {
    /// Connects to the database the URL names, failing with a message that names it
    /// (password removed) when it cannot be reached. Blocking: call before serving or
    /// from a blocking context.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let (backend, target) = parse_url(url)?;
        let shown = redact_url(url);
        if backend == Backend::Sqlite
            && let Some(parent) = std::path::Path::new(&target).parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            return Err(DbError::Unreachable {
                target: shown,
                message: format!("directory {} does not exist", parent.display()),
            });
        }
        let factory = ConnectionFactory { backend, target: target.clone() };
        let own = factory.clone();
        // Try once directly so the driver's own message reaches the operator; r2d2
        // would only report a timeout.
        factory.connect().map_err(|e| DbError::Unreachable { target: shown.clone(), message: e.to_string() })?;
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(factory)
            .map_err(|e| DbError::Unreachable { target: shown.clone(), message: e.to_string() })?;
        Ok(Self {
            pool,
            backend,
            target: shown,
            sqlite_writer: Arc::new(std::sync::Mutex::new(())),
            allow_newer_schema: false,
            factory: own,
        })
    }

    /// Opens the database a service's config names, off the async workers.
    pub async fn open(cfg: &crate::config::DatabaseConfig) -> Result<Self, DbError> {
        let (url, max) = (cfg.url.clone(), cfg.max_connections);
        let mut db = tokio::task::spawn_blocking(move || Db::connect(url.expose(), max))
            .await
            .map_err(|_| DbError::Cancelled)??;
        db.allow_newer_schema = cfg.allow_newer_schema;
        Ok(db)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database, password removed.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs pending migrations. On PostgreSQL an advisory lock keeps replicas that start
    /// together from migrating at once.
    ///
    /// A database whose schema has migrations this binary does not know (a newer
    /// release ran on it) is refused, unless `database.allow_newer_schema` is set: an
    /// older binary would read and write tables it does not understand.
    pub async fn migrate(&self, migrations: Migrations) -> Result<(), DbError> {
        let (target, allow_newer) = (self.target.clone(), self.allow_newer_schema);
        let report = self
            .run(move |conn| {
                let failed = |message: String| DbError::Migration { target: target.clone(), message };
                match conn {
                    DbConnection::Sqlite(c) => {
                        upgrade(c, (migrations.sqlite)(), allow_newer).map_err(|e| failed(e.to_string()))
                    }
                    DbConnection::Postgres(c) => {
                        c.batch_execute("SELECT pg_advisory_lock(7202611)").map_err(|e| failed(e.to_string()))?;
                        let result = upgrade(c, (migrations.postgres)(), allow_newer);
                        let unlock = c.batch_execute("SELECT pg_advisory_unlock(7202611)");
                        let report = result.map_err(|e| failed(e.to_string()))?;
                        unlock.map_err(|e| failed(e.to_string()))?;
                        Ok(report)
                    }
                }
            })
            .await?;
        if report.newer.is_empty() {
            tracing::info!(database = %self.target, schema = %report.version, applied_now = report.applied_now, "database schema");
        } else {
            tracing::warn!(database = %self.target, schema = %report.version, unknown = ?report.newer,
                "running against a schema newer than this binary (database.allow_newer_schema = true)");
        }
        Ok(())
    }

    /// Takes a PostgreSQL session advisory lock named `name` and holds it for as long
    /// as the returned guard lives, on a connection kept out of the pool. PostgreSQL
    /// releases it the moment that connection ends, so a process that died (even by
    /// SIGKILL) holds nothing, and a live one is always seen. `None`: someone else holds
    /// it. On SQLite (one process) there is nothing to hold and it always succeeds.
    pub async fn try_session_lock(&self, name: &str) -> Result<Option<SessionLock>, DbError> {
        use sha2::Digest;
        if self.backend == Backend::Sqlite {
            return Ok(Some(SessionLock { _conn: None }));
        }
        let digest = sha2::Sha256::digest(name.as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        let factory = self.factory.clone();
        tokio::task::spawn_blocking(move || {
            // Its own connection, outside the pool: when the guard drops, it closes.
            let mut conn = factory.connect().map_err(|e| DbError::Pool(e.to_string()))?;
            let taken: bool = match &mut conn {
                DbConnection::Postgres(c) => {
                    use diesel::RunQueryDsl;
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("pg_try_advisory_lock({key})")))
                        .get_result(c)
                        .map_err(DbError::Query)?
                }
                DbConnection::Sqlite(_) => true,
            };
            Ok(taken.then_some(SessionLock { _conn: Some(conn) }))
        })
        .await
        .map_err(|_| DbError::Cancelled)?
    }

    /// Runs `f` with a pooled connection on the blocking pool. Panics inside `f` are
    /// re-raised here; the caller's tracing span is carried into the closure.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get().map_err(|e| E::from(DbError::Pool(e.to_string())))?;
            f(&mut conn)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(E::from(DbError::Cancelled)),
        }
    }

    /// Runs `f` inside one transaction: all of it commits or none of it. On SQLite our
    /// writers queue on a lock first (see the field's comment).
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        let writer = (self.backend == Backend::Sqlite).then(|| self.sqlite_writer.clone());
        self.run(move |conn| {
            let _guard = writer.as_ref().map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
            conn.transaction(f)
        })
        .await
    }
}

/// A session lock of [`Db::try_session_lock`]: released when dropped (its connection closes).
pub struct SessionLock {
    _conn: Option<DbConnection>,
}

/// What a migration run found and did.
struct SchemaReport {
    /// The latest migration version applied.
    version: String,
    /// Migrations applied by this run.
    applied_now: usize,
    /// Applied versions this binary does not know.
    newer: Vec<String>,
}

fn upgrade<C, B>(
    conn: &mut C,
    source: EmbeddedMigrations,
    allow_newer: bool,
) -> Result<SchemaReport, Box<dyn std::error::Error + Send + Sync>>
where
    C: MigrationHarness<B>,
    B: diesel::backend::Backend,
    EmbeddedMigrations: diesel::migration::MigrationSource<B>,
{
    use diesel::migration::MigrationSource;
    let known: std::collections::BTreeSet<String> =
        MigrationSource::<B>::migrations(&source)?.iter().map(|m| m.name().version().to_string()).collect();
    let applied: Vec<String> = conn.applied_migrations()?.iter().map(|v| v.to_string()).collect();
    let newer: Vec<String> = applied.iter().filter(|v| !known.contains(*v)).cloned().collect();
    if !newer.is_empty() && !allow_newer {
        return Err(format!(
            "the database's schema is newer than this binary: it has migrations {} that this release does not know \
             (a newer release ran on it). Run the newer release, or set database.allow_newer_schema = true to run anyway \
             (see docs/operations.md, upgrades and rollback)",
            newer.join(", ")
        )
        .into());
    }
    let applied_now = conn.run_pending_migrations(source)?.len();
    let version = conn.applied_migrations()?.iter().map(|v| v.to_string()).max().unwrap_or_else(|| "none".into());
    Ok(SchemaReport { version, applied_now, newer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_their_backend() {
        assert_eq!(parse_url("sqlite://a/b.db").unwrap(), (Backend::Sqlite, "a/b.db".into()));
        assert_eq!(parse_url("sqlite:x.db").unwrap(), (Backend::Sqlite, "x.db".into()));
        assert_eq!(parse_url("/tmp/x.db").unwrap(), (Backend::Sqlite, "/tmp/x.db".into()));
        assert_eq!(parse_url("postgres://h/db").unwrap().0, Backend::Postgres);
        assert!(matches!(parse_url("mysql://h/db"), Err(DbError::BadUrl(_))));
        assert!(matches!(parse_url(""), Err(DbError::BadUrl(_))));
    }

    #[test]
    fn passwords_never_shown() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn missing_sqlite_directory_is_named() {
        let err = Db::connect("sqlite:///nonexistent-dir-xyz/a.db", 1).unwrap_err();
        assert!(err.to_string().contains("nonexistent-dir-xyz"), "{err}");
    }

    #[test]
    fn unreachable_postgres_is_named() {
        let err = Db::connect("postgres://nobody:pw@127.0.0.1:1/none", 1).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        assert!(!shown.contains("pw@"), "{shown}");
    }
}
