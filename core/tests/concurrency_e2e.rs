//! Eight sandboxes created at once on a small machine (issue 22, point 3):
//! every one comes up (under TCG on 2 cores, eight boots share the CPUs and
//! each takes several times its quiet-machine wall time), each is itself
//! (its own hostname and kernel boot id), and all are stopped and removed
//! with no VM left behind. Beside it, without a VM: a thousand
//! `Snapshot::get` calls at once (issue 22's known slow spot).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::artifacts::make_artifact;
use common::{BUSYBOX_REF, TestHome};
use microsandbox::{Sandbox, Snapshot};

/// Sandboxes created at once.
const SANDBOXES: usize = 8;

/// Create `name` from the busybox image; how long it took.
async fn create(name: String) -> (String, microsandbox::MicrosandboxResult<Sandbox>, Duration) {
    let started = Instant::now();
    let created = Sandbox::builder(name.clone())
        .image(BUSYBOX_REF)
        .create()
        .await;
    (name, created, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_sandboxes_booting_at_once_all_come_up() {
    let home = TestHome::new();
    home.run(home.load_busybox()).await;

    let started = Instant::now();
    let tasks: Vec<_> = (0..SANDBOXES)
        .map(|i| tokio::spawn(home.config().scope(create(format!("par-{i}")))))
        .collect();
    let mut sandboxes = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (name, created, took) = task.await.unwrap();
        eprintln!("{name}: create took {:.1} s", took.as_secs_f64());
        match created {
            Ok(sandbox) => sandboxes.push(sandbox),
            Err(e) => failures.push(format!("{name}: {}: {e}", e.kind())),
        }
    }
    eprintln!(
        "{SANDBOXES} creates at once: all done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut boot_ids = BTreeSet::new();
    home.run(async {
        for sandbox in &sandboxes {
            let out = sandbox
                .exec(
                    "sh",
                    ["-c", "hostname; cat /proc/sys/kernel/random/boot_id"],
                )
                .await
                .unwrap();
            let text = out.stdout_text();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(sandbox.name()), "{out:?}");
            boot_ids.insert(lines.next().unwrap_or_default().to_string());
        }
        let removals: Vec<_> = sandboxes
            .iter()
            .map(|s| tokio::spawn(home.config().scope(Sandbox::remove(s.name().to_string()))))
            .collect();
        for removal in removals {
            removal.await.unwrap().unwrap();
        }
        assert_eq!(common::sandbox_names().await, Vec::<String>::new());
    })
    .await;
    assert!(
        failures.is_empty(),
        "not every sandbox came up: {failures:#?}"
    );
    assert_eq!(
        boot_ids.len(),
        SANDBOXES,
        "each is its own VM: {boot_ids:?}"
    );
    let left = home.vm_pids();
    assert!(left.is_empty(), "VMs left: {left:?}");
}

/// Concurrent `Snapshot::get` calls (each looks a name up in the index).
const GETS: usize = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_snapshot_gets_at_once_are_quick() {
    let home = TestHome::new();
    for i in 0..10 {
        make_artifact(
            &home.snapshots_dir().join(format!("s{i}")),
            i as u8,
            None,
            None,
        );
    }
    home.run(async {
        assert_eq!(Snapshot::reindex_default().await.unwrap(), 10);
        // Twice: the first round also opens the pool's connections.
        for round in ["cold", "warm"] {
            let started = Instant::now();
            let gets: Vec<_> = (0..GETS)
                .map(|i| tokio::spawn(home.config().scope(Snapshot::get(format!("s{}", i % 10)))))
                .collect();
            for (i, get) in gets.into_iter().enumerate() {
                let handle = get.await.unwrap().unwrap();
                assert_eq!(handle.name(), Some(format!("s{}", i % 10).as_str()));
            }
            let took = started.elapsed();
            eprintln!(
                "{GETS} concurrent Snapshot::get ({round}): {:.3} s",
                took.as_secs_f64()
            );
            assert!(took < Duration::from_secs(5), "{took:?}");
        }
    })
    .await;
}
