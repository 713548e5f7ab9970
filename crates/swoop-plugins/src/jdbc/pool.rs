//! The connection pool both drivers share (one per url + credentials + size, kept in the
//! node's `SharedResources`), and the lease a running task holds.
//!
//! At most `size` connections exist at once (a semaphore), created on demand and kept idle
//! after use. A lease dropped while its statement runs (kill, `timeout`) does not go back to
//! the pool: the driver's [`Connect::abandon`] cancels the statement on the server and closes
//! the connection, so the server stops working for nobody and the pool stays usable.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use swoop_core::registry::{RunContext, TaskError, shared_resource};

use super::query::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a task waits for a free connection (HikariCP's default `connectionTimeout`).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle connection unused for longer than this is checked with a round trip before reuse.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(30);

#[async_trait]
pub trait Connect: Send + Sync + 'static {
    type Conn: Send + 'static;
    /// Opens a connection (errors already classified and free of secrets).
    async fn connect(&self) -> Result<Self::Conn, TaskError>;
    /// Whether `conn` is still usable; `round_trip` asks for a ping rather than a local check.
    async fn alive(&self, conn: &mut Self::Conn, round_trip: bool) -> bool;
    /// Cancels whatever `conn` is running on the server and closes it, in the background.
    fn abandon(&self, conn: Self::Conn);
    /// `host:port/database`, for messages.
    fn target(&self) -> &str;
}

pub struct Pool<C: Connect> {
    connect: Arc<C>,
    idle: Mutex<Vec<(C::Conn, Instant)>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl<C: Connect> Pool<C> {
    pub fn new(connect: C, size: usize) -> Self {
        Self {
            connect: Arc::new(connect),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Connections alive now, busy and idle (for tests).
    pub fn open_connections(&self) -> usize {
        self.size - self.permits.available_permits() + lock(&self.idle).len()
    }

    /// A connection: an idle one, or a new one while fewer than `size` exist.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease<C>, TaskError> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                TaskError::new(format!(
                    "all {} connections of the pool to {} stayed busy for {ACQUIRE_TIMEOUT:?}; raise `connectionPoolSize` or run fewer queries at once",
                    self.size,
                    self.connect.target()
                ))
            })?
            .map_err(|_| TaskError::new("the connection pool is closed"))?;
        loop {
            let candidate = lock(&self.idle).pop();
            let Some((mut conn, since)) = candidate else {
                break;
            };
            if self
                .connect
                .alive(&mut conn, since.elapsed() > CHECK_IDLE_AFTER)
                .await
            {
                return Ok(Lease::new(
                    conn,
                    self.connect.clone(),
                    Some((self.clone(), permit)),
                ));
            }
        }
        let conn = self.connect.connect().await?;
        Ok(Lease::new(
            conn,
            self.connect.clone(),
            Some((self.clone(), permit)),
        ))
    }

    fn put_back(&self, conn: C::Conn) {
        lock(&self.idle).push((conn, Instant::now()));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection lent to one task run. Mark it [`Lease::busy`] before sending a statement and
/// [`Lease::idle`] once the connection is back in a clean state (no transaction, nothing
/// pending): a lease dropped busy is abandoned, one dropped idle goes back to its pool (or is
/// closed, without pooling).
pub struct Lease<C: Connect> {
    conn: Option<C::Conn>,
    connect: Arc<C>,
    pool: Option<(Arc<Pool<C>>, OwnedSemaphorePermit)>,
    busy: bool,
}

impl<C: Connect> Lease<C> {
    fn new(
        conn: C::Conn,
        connect: Arc<C>,
        pool: Option<(Arc<Pool<C>>, OwnedSemaphorePermit)>,
    ) -> Self {
        Self {
            conn: Some(conn),
            connect,
            pool,
            busy: false,
        }
    }

    /// A connection of its own (`connectionPooling: false`), closed after use.
    pub async fn unpooled(connect: C) -> Result<Self, TaskError> {
        let connect = Arc::new(connect);
        let conn = connect.connect().await?;
        Ok(Self::new(conn, connect, None))
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> &str {
        self.connect.target()
    }

    pub fn conn(&mut self) -> &mut C::Conn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until dropped"))
    }

    pub fn busy(&mut self) {
        self.busy = true;
    }

    pub fn idle(&mut self) {
        self.busy = false;
    }

    /// Whether the lease is marked busy.
    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

impl<C: Connect> Drop for Lease<C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        match (&self.pool, self.busy) {
            (_, true) => self.connect.abandon(conn),
            (Some((pool, _)), false) => pool.put_back(conn),
            (None, false) => drop(conn),
        }
    }
}

/// A connection for `connection`: from the pool shared across executions (created on first use
/// with what `connect` returns) or, with `connectionPooling: false`, a fresh one. `connect`
/// parses and checks the settings; with pooling it runs only when the pool is created, not on
/// every execution.
pub async fn lease<C: Connect>(
    ctx: &dyn RunContext,
    connection: &Connection,
    connect: impl FnOnce() -> Result<C, TaskError>,
) -> Result<Lease<C>, TaskError> {
    if connection.pooling {
        let size = connection.pool_size;
        let pool = shared_resource::<Pool<C>, _, _>(ctx, &connection.pool_key(), || async move {
            Ok(Pool::new(connect()?, size))
        })
        .await?;
        pool.acquire().await
    } else {
        Lease::unpooled(connect()?).await
    }
}
