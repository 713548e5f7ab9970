//! Clients and connection pools shared by every execution on the node.
//!
//! A task asks for a resource by its kind (the Rust type) and a key made of its connection
//! settings (URL, user …): the first caller creates it (lazily, at run time, never in `build`,
//! which also runs during validation), concurrent first callers wait for that one creation, and
//! everyone after gets the same `Arc`. Each resource remembers which flows used it; when a flow
//! is deleted or replaced, the engine calls [`SharedResources::release_flow`] and resources no
//! flow uses any more are dropped (which closes their connections). A failed creation is not
//! kept: the next caller tries again.
//!
//! Secrets in keys: callers put passwords into the key so that two credentials never share a
//! pool; keys are never logged or shown.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

type Shared = Arc<dyn Any + Send + Sync>;

struct Entry {
    cell: Arc<OnceCell<Shared>>,
    users: HashSet<String>,
}

#[derive(Default)]
pub struct SharedResources {
    entries: Mutex<HashMap<(TypeId, String), Entry>>,
}

impl SharedResources {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resource of type `T` for `key`, created by `init` if there is none yet. `user` is the
    /// flow asking (`namespace/flowId`).
    pub async fn get_or_try_init<T, E, F, Fut>(
        &self,
        user: &str,
        key: &str,
        init: F,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut entries = self.entries.lock();
            let entry = entries
                .entry((TypeId::of::<T>(), key.to_owned()))
                .or_insert_with(|| Entry {
                    cell: Arc::new(OnceCell::new()),
                    users: HashSet::new(),
                });
            if !entry.users.contains(user) {
                entry.users.insert(user.to_owned());
            }
            entry.cell.clone()
        };
        let shared = cell
            .get_or_try_init(|| async { init().await.map(|t| Arc::new(t) as Shared) })
            .await?
            .clone();
        // The entry's type is `T` by construction of the map key.
        Ok(shared
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("a resource stored under another type's id")))
    }

    /// Forgets that `user` uses any resource; drops the resources nobody uses any more.
    pub fn release_flow(&self, user: &str) {
        let mut entries = self.entries.lock();
        entries.retain(|_, e| {
            e.users.remove(user);
            !e.users.is_empty()
        });
    }

    /// How many resources are alive (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|e| e.cell.initialized())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Pool(usize);

    #[tokio::test]
    async fn one_creation_shared_then_released_with_its_last_flow() {
        let resources = Arc::new(SharedResources::new());
        let created = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..20 {
            let (resources, created) = (resources.clone(), created.clone());
            handles.push(tokio::spawn(async move {
                let user = if i % 2 == 0 { "ns/a" } else { "ns/b" };
                resources
                    .get_or_try_init::<Pool, String, _, _>(user, "pg://x", || async {
                        tokio::task::yield_now().await;
                        Ok(Pool(created.fetch_add(1, Ordering::SeqCst)))
                    })
                    .await
                    .unwrap()
                    .0
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap(), 0);
        }
        assert_eq!(created.load(Ordering::SeqCst), 1);
        assert_eq!(resources.len(), 1);
        resources.release_flow("ns/a");
        assert_eq!(resources.len(), 1, "flow b still uses it");
        resources.release_flow("ns/b");
        assert_eq!(resources.len(), 0);
    }

    #[tokio::test]
    async fn a_failed_creation_is_retried_by_the_next_caller() {
        let resources = SharedResources::new();
        let r = resources
            .get_or_try_init::<Pool, String, _, _>("f", "k", || async { Err("refused".into()) })
            .await;
        assert!(r.is_err());
        let r = resources
            .get_or_try_init::<Pool, String, _, _>("f", "k", || async { Ok(Pool(7)) })
            .await;
        assert_eq!(r.unwrap().0, 7);
    }
}
