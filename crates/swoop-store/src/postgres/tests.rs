//! The PostgreSQL store against a real server: the conformance suite and what only several
//! nodes on one database show.

use super::*;
use crate::conformance::{self, Guarded};
use swoop_testkit::postgres::Postgres;

/// A fresh PostgreSQL server (initdb on a free loopback port), stopped with the store.
async fn server() -> (Postgres, String) {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("the server starts");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    (pg, url)
}

async fn make_store() -> Guarded<Postgres> {
    let (pg, url) = server().await;
    let store = PostgresStore::connect(&url).await.expect("connects");
    Guarded { store, guard: pg }
}

crate::store_conformance_tests!(make_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_across_reopen() {
    let (_pg, url) = server().await;
    conformance::durable_across_reopen(|| {
        let url = url.clone();
        async move {
            let store: Arc<dyn Store> = PostgresStore::connect(&url).await.expect("connects");
            store
        }
    })
    .await;
}

/// Two nodes on one database: the same event offered to both creates one execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_dedup_across_nodes() {
    let (_pg, url) = server().await;
    let a = PostgresStore::connect(&url).await.expect("connects");
    let b = PostgresStore::connect(&url).await.expect("connects");
    let mut created = 0;
    for i in 0..50 {
        let key = DedupKey {
            trigger: "ns/flow/t".into(),
            key: format!("topic/0/{i}"),
        };
        let ea = Execution::new("ns", "flow", 1);
        let eb = Execution::new("ns", "flow", 1);
        let (ra, rb) = tokio::join!(
            a.create_execution(&ea, Some(key.clone())),
            b.create_execution(&eb, Some(key.clone()))
        );
        let (ra, rb) = (ra.expect("a answers"), rb.expect("b answers"));
        created += [&ra, &rb]
            .iter()
            .filter(|r| ***r == Created::Created)
            .count();
        let holder = a
            .execution_for_dedup(&key)
            .await
            .unwrap()
            .expect("recorded");
        for (r, e) in [(&ra, &ea), (&rb, &eb)] {
            match r {
                Created::Created => assert_eq!(holder, e.id),
                Created::Duplicate { existing_id } => assert_eq!(existing_id, &holder),
            }
        }
    }
    assert_eq!(created, 50, "one execution per event");
}

/// Schema migrations run once when nodes start together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let (_pg, url) = server().await;
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url)
    );
    for s in [a, b, c] {
        s.expect("connects")
            .list_flows()
            .await
            .expect("the schema is there");
    }
}

/// A message PostgreSQL rejects (text with a NUL byte) fails alone; the rest of its batch
/// is written (the batch is run again with savepoints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_fails_alone() {
    let (_pg, url) = server().await;
    let store = PostgresStore::connect(&url).await.expect("connects");
    let mut executions: Vec<Execution> =
        (0..200).map(|_| Execution::new("ns", "flow", 1)).collect();
    executions[100].id = "bad\0id".into();
    let results = futures_join(&store, &executions).await;
    for (e, r) in executions.iter().zip(&results) {
        if e.id.contains('\0') {
            assert!(r.is_err(), "the bad one fails");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&Created::Created), "{r:?}");
            assert!(store.get_execution(&e.id).await.unwrap().is_some());
        }
    }
}

async fn futures_join(
    store: &Arc<PostgresStore>,
    executions: &[Execution],
) -> Vec<StoreResult<Created>> {
    let tasks: Vec<_> = executions
        .iter()
        .map(|e| {
            let store = store.clone();
            let e = e.clone();
            tokio::spawn(async move { store.create_execution(&e, None).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("joins"));
    }
    out
}

#[tokio::test]
async fn an_unreachable_database_says_where() {
    let e = PostgresStore::connect("postgres://swoop:secret@127.0.0.1:1/swoop")
        .await
        .expect_err("nothing listens on port 1");
    let text = e.to_string();
    assert!(
        text.contains("cannot connect to PostgreSQL at postgres://swoop:***@127.0.0.1:1/swoop"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redacted("postgres://swoop:secret@db:5432/swoop"),
        "postgres://swoop:***@db:5432/swoop"
    );
    assert_eq!(redacted("postgres://db/swoop"), "postgres://db/swoop");
}

// ---------------------------------------------------------------------------------------------
// Several nodes (see `crate::cluster`)

mod cluster {
    use std::time::Duration;

    use super::*;
    use crate::cluster::{ClusterStore, JoinRequest, NodeState, Notice, Roles};

    const LIVENESS: Duration = Duration::from_millis(400);

    async fn node(url: &str, name: &str) -> (Arc<PostgresStore>, String) {
        let store = PostgresStore::connect(url).await.expect("connects");
        let id = store
            .join(&JoinRequest {
                name: name.into(),
                roles: Roles::ALL,
                liveness_timeout: LIVENESS,
            })
            .await
            .expect("joins");
        (store, id)
    }

    /// Heartbeats from `live` until it has declared `dead` DISCONNECTED (bounded).
    async fn until_disconnected(live: &PostgresStore, dead: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let hb = live.heartbeat(true).await.expect("heartbeat");
            assert!(hb.alive);
            if hb.disconnected.iter().any(|d| d == dead) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{dead} stays alive");
            tokio::time::sleep(LIVENESS / 4).await;
        }
    }

    /// Claims, a few at a time, until nothing is left; the ids claimed.
    async fn claim_all(node: &PostgresStore) -> Vec<String> {
        let mut all = Vec::new();
        loop {
            let got = node.claim_orphans(1).await.unwrap();
            if got.is_empty() {
                return all;
            }
            all.extend(got.into_iter().map(|e| e.id));
        }
    }

    fn key(i: usize) -> DedupKey {
        DedupKey {
            trigger: "ns/flow/t".into(),
            key: format!("topic/0/{i}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_node_is_disconnected_and_its_executions_are_claimed_once() {
        let (_pg, url) = server().await;
        let (a, a_id) = node(&url, "a").await;
        let (b, b_id) = node(&url, "b").await;
        let (c, _) = node(&url, "c").await;
        let (d, _) = node(&url, "d").await;
        let mut ids = Vec::new();
        // Enough executions, claimed a few at a time by two nodes at once, that claims of the
        // same rows meet (which once gave a row to both).
        for _ in 0..400 {
            let e = Execution::new("ns", "flow", 1);
            a.create_execution(&e, None).await.unwrap();
            ids.push(e.id);
        }
        // Nothing is claimed while `a` lives.
        assert!(b.claim_orphans(100).await.unwrap().is_empty());
        // `a` stops heartbeating: `b` declares it DISCONNECTED.
        until_disconnected(&b, &a_id).await;
        let nodes = b.nodes().await.unwrap();
        let state = |id: &str| nodes.iter().find(|n| n.id == id).unwrap().state;
        assert_eq!(state(&a_id), NodeState::Disconnected);
        assert_eq!(state(&b_id), NodeState::Running);
        // `b` and `c` claim together: each execution goes to exactly one of them.
        let (cb, cc, cd) = tokio::join!(claim_all(&b), claim_all(&c), claim_all(&d));
        let mut claimed: Vec<_> = cb
            .iter()
            .chain(cc.iter())
            .chain(cd.iter())
            .cloned()
            .collect();
        claimed.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(claimed, expected, "every execution claimed exactly once");
        // `a` wakes up: it learns it is out, and can no longer save what it ran.
        let hb = a.heartbeat(true).await.unwrap();
        assert!(!hb.alive, "a is told it was disconnected");
        let mut e = a.get_execution(&ids[0]).await.unwrap().unwrap();
        e.state.transition(State::Success);
        let err = a
            .save_execution(&e, Durability::Wait)
            .await
            .expect_err("fenced");
        assert!(matches!(err, StoreError::Fenced(_)), "{err}");
        // The new owner can.
        let owner = if cb.contains(&ids[0]) {
            &b
        } else if cc.contains(&ids[0]) {
            &c
        } else {
            &d
        };
        owner.save_execution(&e, Durability::Wait).await.unwrap();
        assert!(
            a.claim_orphans(10).await.unwrap().is_empty(),
            "a dead node claims nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_passes_on_with_a_higher_token_and_fences_the_old_owner() {
        let (_pg, url) = server().await;
        let (a, a_id) = node(&url, "a").await;
        let (b, _) = node(&url, "b").await;
        let t1 = a.acquire_lease("ns/flow/t").await.unwrap().expect("free");
        assert_eq!(
            a.acquire_lease("ns/flow/t").await.unwrap(),
            Some(t1),
            "kept"
        );
        assert_eq!(b.acquire_lease("ns/flow/t").await.unwrap(), None, "held");
        let e = Execution::new("ns", "flow", 1);
        assert_eq!(
            a.create_execution(&e, Some(key(1))).await.unwrap(),
            Created::Created
        );
        // `a` goes silent; its lease expires with its heartbeats.
        until_disconnected(&b, &a_id).await;
        let t2 = b
            .acquire_lease("ns/flow/t")
            .await
            .unwrap()
            .expect("expired");
        assert!(t2 > t1, "{t2} > {t1}");
        // `a`'s next creation for that trigger is refused, in the same transaction.
        let e2 = Execution::new("ns", "flow", 1);
        let err = a
            .create_execution(&e2, Some(key(2)))
            .await
            .expect_err("fenced");
        assert!(matches!(err, StoreError::Fenced(_)), "{err}");
        assert!(a.get_execution(&e2.id).await.unwrap().is_none());
        assert!(a.execution_for_dedup(&key(2)).await.unwrap().is_none());
        let e3 = Execution::new("ns", "flow", 1);
        assert_eq!(
            b.create_execution(&e3, Some(key(2))).await.unwrap(),
            Created::Created
        );
        let leases = b.leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].token, t2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_graceful_stop_keeps_the_lease_for_its_name() {
        let (_pg, url) = server().await;
        let (a, _) = node(&url, "node-a").await;
        let (b, _) = node(&url, "node-b").await;
        let t1 = a.acquire_lease("ns/flow/t").await.unwrap().unwrap();
        a.release_lease("ns/flow/t", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        a.set_node_state(NodeState::TerminatedGracefully)
            .await
            .unwrap();
        assert_eq!(b.acquire_lease("ns/flow/t").await.unwrap(), None, "kept");
        // `a` restarted (same name, new process) takes it back at once.
        let (a2, _) = node(&url, "node-a").await;
        let t2 = a2.acquire_lease("ns/flow/t").await.unwrap().expect("back");
        assert!(t2 > t1);
        // A release without keep frees it at once.
        a2.release_lease("ns/flow/t", None).await.unwrap();
        assert!(b.acquire_lease("ns/flow/t").await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_name_replaces_its_old_node_and_notices_reach_every_node() {
        let (_pg, url) = server().await;
        let (a, a_id) = node(&url, "same").await;
        let mut heard = a.listen().await.unwrap();
        let (a2, a2_id) = node(&url, "same").await;
        assert_ne!(a_id, a2_id);
        assert!(!a.heartbeat(true).await.unwrap().alive, "replaced");
        assert!(a2.heartbeat(true).await.unwrap().alive);
        a2.notify(&Notice::Kill {
            execution_id: "x1".into(),
        })
        .await
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("in time")
            .expect("a notice");
        assert_eq!(
            got,
            Notice::Kill {
                execution_id: "x1".into()
            }
        );
        // A non-executing node creates executions nobody owns: an executing node claims them.
        let web = PostgresStore::connect(&url).await.unwrap();
        web.join(&JoinRequest {
            name: "web".into(),
            roles: Roles::parse("webserver").unwrap(),
            liveness_timeout: LIVENESS,
        })
        .await
        .unwrap();
        let e = Execution::new("ns", "flow", 1);
        web.create_execution(&e, None).await.unwrap();
        let claimed = a2.claim_orphans(10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, e.id);
        assert_eq!(web.execution_owner(&e.id).await.unwrap(), Some(a2_id));
    }
}
