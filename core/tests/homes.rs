//! Two homes in one process at the same time: two tasks on a multi-thread
//! runtime, each inside its own home's scope, take turns step by step (a
//! barrier between steps, yields inside them) and each sees only its own
//! snapshots through every index call: reindex, list, get, open, list_dir,
//! remove. The same name lives in both homes with different content.
//! (Sandboxes listed from two homes at once: see archive_e2e.rs, which has
//! a VM running in one of them.)

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::TestHome;
use common::artifacts::make_artifact;
use microsandbox::{IntegrityAlgorithm, Snapshot};
use tokio::sync::Barrier;
use tokio::task::yield_now;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_homes_at_once_do_not_see_each_other() {
    let (a, b) = (TestHome::new(), TestHome::new());
    let shared_a = make_artifact(&a.snapshots_dir().join("shared"), 1, None, None);
    let shared_b = make_artifact(
        &b.snapshots_dir().join("shared"),
        2,
        None,
        Some(IntegrityAlgorithm::SparseSha256V1),
    );
    assert_ne!(shared_a.digest(), shared_b.digest());
    let only_a = make_artifact(&a.snapshots_dir().join("only-a"), 3, None, None);
    let only_b = make_artifact(&b.snapshots_dir().join("only-b"), 4, None, None);

    let turn = Arc::new(Barrier::new(2));
    let side = |home: &TestHome, own: Side, other: Side| {
        let turn = turn.clone();
        tokio::spawn(home.config().scope(one_home(turn, own, other)))
    };
    let a_side = Side {
        dir: a.snapshots_dir(),
        only: "only-a",
        shared_digest: shared_a.digest().to_string(),
        only_digest: only_a.digest().to_string(),
    };
    let b_side = Side {
        dir: b.snapshots_dir(),
        only: "only-b",
        shared_digest: shared_b.digest().to_string(),
        only_digest: only_b.digest().to_string(),
    };
    let ta = side(&a, a_side.clone(), b_side.clone());
    let tb = side(&b, b_side, a_side);
    ta.await.unwrap();
    tb.await.unwrap();

    // Each removed its own "shared"; the other's "only-" stayed on its disk.
    for (home, only) in [(&a, "only-a"), (&b, "only-b")] {
        assert!(!home.snapshots_dir().join("shared").exists());
        assert!(home.snapshots_dir().join(only).exists());
    }
    assert!(!a.snapshots_dir().join("only-b").exists());
}

/// What one home holds.
#[derive(Clone)]
struct Side {
    dir: PathBuf,
    only: &'static str,
    shared_digest: String,
    only_digest: String,
}

/// The steps one task runs in its home, in lockstep with the other task.
async fn one_home(turn: Arc<Barrier>, own: Side, other: Side) {
    let names = |listed: &[microsandbox::SnapshotHandle]| {
        let mut names: Vec<String> = listed
            .iter()
            .map(|h| h.name().unwrap_or("-").to_string())
            .collect();
        names.sort();
        names
    };
    let mine = {
        let mut v = vec![own.only.to_string(), "shared".to_string()];
        v.sort();
        v
    };

    turn.wait().await;
    assert_eq!(Snapshot::reindex_default().await.unwrap(), 2);
    yield_now().await;
    assert_eq!(Snapshot::reindex(&own.dir).await.unwrap(), 2);

    for _ in 0..10 {
        turn.wait().await;
        assert_eq!(names(&Snapshot::list().await.unwrap()), mine);
        yield_now().await;
        let shared = Snapshot::get("shared").await.unwrap();
        assert_eq!(shared.digest(), own.shared_digest);
        assert_eq!(
            shared.path(),
            own.dir.join("shared").canonicalize().unwrap()
        );
        yield_now().await;
        assert_eq!(
            Snapshot::open("shared").await.unwrap().digest(),
            own.shared_digest
        );
        assert_eq!(
            Snapshot::get(own.only_digest.as_str())
                .await
                .unwrap()
                .name(),
            Some(own.only)
        );
        for stranger in [other.only, other.only_digest.as_str(), &other.shared_digest] {
            let err = Snapshot::get(stranger).await.unwrap_err();
            assert_eq!(err.kind(), "SnapshotNotFound", "{stranger}");
            yield_now().await;
        }
        let on_disk = Snapshot::list_dir(&own.dir).await.unwrap();
        assert_eq!(on_disk.len(), 2);
    }

    turn.wait().await;
    // A name the other home holds too is removed here only.
    Snapshot::remove("shared", false).await.unwrap();
    yield_now().await;
    let err = Snapshot::remove(other.only, false).await.unwrap_err();
    assert_eq!(err.kind(), "SnapshotNotFound");
    turn.wait().await;
    assert_eq!(names(&Snapshot::list().await.unwrap()), [own.only]);
    assert_eq!(
        Snapshot::get("shared").await.unwrap_err().kind(),
        "SnapshotNotFound"
    );
}
