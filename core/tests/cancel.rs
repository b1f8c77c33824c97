//! Cancellation of long calls (issue 15, item 3): a verify of a 4 GiB sparse
//! upper, an export, an import and a sandbox boot, each stopped mid-way by
//! firing a [`CancellationToken`] from another task and (except the boot)
//! by dropping the call's future. A fired token must make the call return
//! `Cancelled` within 100 ms; a dropped call must stop its blocking work as
//! fast, and either way nothing is left behind (no staging directory, no
//! partial archive, no index row, no VM) and the same call then succeeds.
//! The measured latencies are printed (`--nocapture` shows them).
//!
//! "Mid-way" is found through the progress callback: the canceller waits
//! until the call has done some bytes, then a little longer, so the worker
//! is somewhere in its loop, not at a check the callback itself triggers.
//! A sweep of plain timers (fired 0-150 ms after the call starts) covers the
//! phases before and after the loops too.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::artifacts::{make_artifact, make_big_artifact, tree};
use common::{BUSYBOX_REF, TestHome};
use microsandbox::{
    CallOpts, CancellationToken, ExportOpts, IntegrityAlgorithm, MicrosandboxResult,
    ProgressCallback, Sandbox, Snapshot, UpperVerifyStatus,
};
use tokio::sync::Notify;

/// The bound, from `cancel()` to the call returning.
const BOUND: Duration = Duration::from_millis(100);

/// How long a dropped call's worker may take to remove what it staged (it
/// finishes on its own thread after the future is gone).
const CLEANUP: Duration = Duration::from_secs(1);

/// Latencies are measured: the tests of this binary run one at a time so
/// that they do not compete for the machine's two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Take the turn, and flush what the previous test wrote (hundreds of MiB)
/// so its writeback does not slow this one.
async fn my_turn() -> tokio::sync::MutexGuard<'static, ()> {
    let turn = ONE_AT_A_TIME.lock().await;
    // SAFETY: sync(2) takes no arguments and cannot fail.
    tokio::task::spawn_blocking(|| unsafe { libc::sync() })
        .await
        .unwrap();
    turn
}

/// Watches a call's progress: tells the test once `after` bytes are done,
/// and remembers when the last event came.
#[derive(Clone)]
struct MidWay {
    after: u64,
    reached: Arc<Notify>,
    last_event: Arc<Mutex<Option<Instant>>>,
}

impl MidWay {
    fn new(after: u64) -> Self {
        Self {
            after,
            reached: Arc::new(Notify::new()),
            last_event: Arc::default(),
        }
    }

    fn callback(&self) -> ProgressCallback {
        let me = self.clone();
        let notified = Arc::new(std::sync::atomic::AtomicBool::new(false));
        Arc::new(move |event| {
            *me.last_event.lock().unwrap() = Some(Instant::now());
            if event.done_bytes >= me.after
                && event.done_bytes < event.total_bytes
                && !notified.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                me.reached.notify_one();
            }
        })
    }

    async fn reached(&self) {
        self.reached.notified().await;
    }

    fn last_event(&self) -> Option<Instant> {
        *self.last_event.lock().unwrap()
    }
}

/// Run `call` under a fresh token that another task fires once `fire`
/// resolves. `None` if the call ended before the token fired; else the
/// time from `cancel()` to the call's return and whether it returned
/// `Cancelled` (any other error fails the test; success means the token
/// came after the call's last check, while it was committing).
async fn fire_token<T>(
    call: impl Future<Output = MicrosandboxResult<T>>,
    fire: impl Future<Output = ()> + Send + 'static,
) -> Option<(Duration, bool)> {
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            fire.await;
            let at = Instant::now();
            token.cancel();
            at
        })
    };
    let result = token.scope(call).await;
    let returned = Instant::now();
    canceller.abort();
    let fired = canceller.await.ok()?;
    let cancelled = match result {
        Ok(_) => false,
        Err(err) => {
            assert_eq!(err.kind(), "Cancelled", "{err}");
            true
        }
    };
    Some((returned.saturating_duration_since(fired), cancelled))
}

/// [`fire_token`] for a call that must be cancelled: the latency.
async fn cancel_with_token<T>(
    call: impl Future<Output = MicrosandboxResult<T>>,
    fire: impl Future<Output = ()> + Send + 'static,
) -> Duration {
    match fire_token(call, fire).await {
        Some((latency, true)) => latency,
        Some((_, false)) => panic!("the call succeeded although the token fired mid-way"),
        None => panic!("the call ended before the token fired"),
    }
}

/// [`fire_token`] at a fixed delay: checks the latency whatever phase the
/// call was in; true if it completed anyway (or first).
async fn sweep<T>(what: &str, call: impl Future<Output = MicrosandboxResult<T>>, ms: u64) -> bool {
    match fire_token(call, after(Duration::from_millis(ms))).await {
        None => {
            eprintln!("{what}, token at {ms} ms: the call ended first");
            true
        }
        Some((latency, cancelled)) => {
            check_latency(&format!("{what}, token at {ms} ms"), latency);
            !cancelled
        }
    }
}

/// Drop `call` once `mid` is reached; returns when it was dropped.
async fn drop_mid_way<T>(
    call: impl Future<Output = MicrosandboxResult<T>>,
    mid: &MidWay,
) -> Instant {
    tokio::select! {
        result = call => panic!("the call ended ({}) before it was dropped", result.is_ok()),
        () = mid.reached() => {}
    }
    Instant::now()
}

/// Wait until `done()` holds, up to [`CLEANUP`]; how long it took.
async fn eventually(what: &str, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < CLEANUP,
            "{what}: still not done after {CLEANUP:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// The names of the hidden entries (staging, temp files) directly in `dir`.
fn hidden_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn check_latency(what: &str, latency: Duration) {
    eprintln!("{what}: {latency:?} from cancel() to return");
    assert!(
        latency < BOUND,
        "{what}: took {latency:?} to return after cancel()"
    );
}

/// Fire `after` a fixed delay (for the timer sweeps).
fn after(delay: Duration) -> impl Future<Output = ()> + Send + 'static {
    tokio::time::sleep(delay)
}

/// Fire a little after `mid` is reached.
fn past(mid: &MidWay) -> impl Future<Output = ()> + Send + 'static {
    let mid = mid.clone();
    async move {
        mid.reached().await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

const SWEEP_MS: [u64; 7] = [0, 20, 50, 80, 110, 150, 200];

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn verify_of_a_4_gib_sparse_upper() {
    let _turn = my_turn().await;
    let home = TestHome::new();
    home.run(async {
        // msb-sparse-sha256-v1 hashes the apparent size: ~2 s for 4 GiB.
        let snap = make_big_artifact(
            &home.snapshots_dir().join("case-a"),
            4 << 30,
            4 << 20,
            1,
            Some(IntegrityAlgorithm::SparseSha256V1),
        );
        let before = tree(home.path());

        let mid = MidWay::new(1 << 30);
        let opts = CallOpts {
            progress: Some(mid.callback()),
            ..CallOpts::default()
        };
        let latency = cancel_with_token(snap.verify_with(opts), past(&mid)).await;
        check_latency("verify, token", latency);

        let mid = MidWay::new(1 << 30);
        let opts = CallOpts {
            progress: Some(mid.callback()),
            ..CallOpts::default()
        };
        let dropped = drop_mid_way(snap.verify_with(opts), &mid).await;
        tokio::time::sleep(3 * BOUND).await;
        let stopped = mid.last_event().unwrap().saturating_duration_since(dropped);
        eprintln!("verify, dropped: last progress {stopped:?} after the drop");
        assert!(
            stopped < BOUND,
            "the hashing went on {stopped:?} after the drop"
        );

        for ms in SWEEP_MS {
            assert!(!sweep("verify", snap.verify(), ms).await);
        }

        assert_eq!(tree(home.path()), before, "verify changed files");
        match snap.verify().await.unwrap().upper {
            UpperVerifyStatus::Verified { algorithm, .. } => {
                assert_eq!(algorithm, "msb-sparse-sha256-v1")
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

/// 192 MiB of incompressible data in a 512 MiB upper, no integrity
/// recorded (so an export spends its time writing, not verifying).
fn big_source(home: &TestHome) -> Snapshot {
    make_big_artifact(
        &home.snapshots_dir().join("big"),
        512 << 20,
        192 << 20,
        7,
        None,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn export() {
    let _turn = my_turn().await;
    let home = TestHome::new();
    home.run(async {
        let source = big_source(&home);
        Snapshot::reindex_default().await.unwrap();
        let listed = Snapshot::list().await.unwrap();
        let out_dir = home.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        // An older archive at `out` stays as it was until an export completes.
        let out = out_dir.join("big.tar.zst");
        std::fs::write(&out, b"the previous archive").unwrap();
        let unchanged = |what: &str| {
            assert_eq!(std::fs::read(&out).unwrap(), b"the previous archive", "{what}");
            assert_eq!(hidden_in(&out_dir), Vec::<String>::new(), "{what}");
        };
        let source_tree = tree(source.path());

        for plain_tar in [false, true] {
            let what = if plain_tar { "plain tar" } else { "zstd" };
            let mid = MidWay::new(32 << 20);
            let opts = ExportOpts {
                plain_tar,
                ..Default::default()
            };
            let call = CallOpts {
                progress: Some(mid.callback()),
                ..CallOpts::default()
            };
            let latency =
                cancel_with_token(Snapshot::export_with("big", &out, opts, call), past(&mid)).await;
            check_latency(&format!("export ({what}), token"), latency);
            unchanged(what);

            let mid = MidWay::new(32 << 20);
            let opts = ExportOpts {
                plain_tar,
                ..Default::default()
            };
            let call = CallOpts {
                progress: Some(mid.callback()),
                ..CallOpts::default()
            };
            let dropped = drop_mid_way(Snapshot::export_with("big", &out, opts, call), &mid).await;
            let cleaned = eventually("export's temp file removed", || hidden_in(&out_dir).is_empty()).await;
            let stopped = mid.last_event().unwrap().saturating_duration_since(dropped);
            eprintln!("export ({what}), dropped: temp file gone {cleaned:?} after the drop, last progress {stopped:?} after it");
            assert!(stopped < BOUND, "the export went on {stopped:?} after the drop");
            unchanged(what);
        }
        for (ms, plain_tar) in SWEEP_MS.iter().flat_map(|&ms| [(ms, false), (ms, true)]) {
            let opts = ExportOpts {
                plain_tar,
                ..Default::default()
            };
            let what = format!("export (plain tar: {plain_tar})");
            if sweep(&what, Snapshot::export("big", &out, opts), ms).await {
                std::fs::write(&out, b"the previous archive").unwrap();
            }
            unchanged("sweep");
        }
        let start = Instant::now();
        let opts = ExportOpts {
            plain_tar: true,
            ..Default::default()
        };
        Snapshot::export("big", &out, opts).await.unwrap();
        eprintln!("export (plain tar), not cancelled: {:?}", start.elapsed());
        assert_eq!(Snapshot::list().await.unwrap(), listed, "the index changed");
        assert_eq!(tree(source.path()), source_tree);
        Snapshot::export("big", &out, ExportOpts::default()).await.unwrap();
        assert_ne!(std::fs::read(&out).unwrap(), b"the previous archive");
        assert_eq!(hidden_in(&out_dir), Vec::<String>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn import() {
    let _turn = my_turn().await;
    let home = TestHome::new();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    home.run(async {
        big_source(&home);
        Snapshot::reindex_default().await.unwrap();
        let mut archives = Vec::new();
        for plain_tar in [false, true] {
            let out = work.join(if plain_tar { "big.tar" } else { "big.tar.zst" });
            let opts = ExportOpts {
                plain_tar,
                ..Default::default()
            };
            Snapshot::export("big", &out, opts).await.unwrap();
            archives.push(out);
        }
        // Free the name in the default directory: the imports land there.
        Snapshot::remove("big", true).await.unwrap();
        let dest = work.join("dest");
        make_artifact(&dest.join("neighbour"), 3, None, None);
        let snapshots = home.snapshots_dir();
        let images = home.path().join("images");
        let listed = Snapshot::list().await.unwrap();
        // The image store's lock file is made by the first import that
        // gets as far as publishing (one that beats its token), and stays:
        // it is not a leftover.
        let images_tree = || {
            let mut listed = tree(&images);
            listed.retain(|p| p != &images.join(".lock"));
            listed
        };
        let (dest_before, snapshots_before, images_before) =
            (tree(&dest), tree(&snapshots), images_tree());
        let nothing_left = || {
            tree(&dest) == dest_before
                && tree(&snapshots) == snapshots_before
                && images_tree() == images_before
        };

        for archive in &archives {
            let what = archive.file_name().unwrap().to_string_lossy();
            let quarter = std::fs::metadata(archive).unwrap().len() / 4;
            let mid = MidWay::new(quarter);
            let call = CallOpts {
                progress: Some(mid.callback()),
                ..CallOpts::default()
            };
            let latency = cancel_with_token(
                Snapshot::import_with(archive, Some(dest.as_path()), call),
                past(&mid),
            )
            .await;
            check_latency(&format!("import of {what} into a dest, token"), latency);
            assert!(nothing_left(), "{what}: left {:?}", tree(&dest));
            assert_eq!(Snapshot::list().await.unwrap(), listed, "{what}: index changed");

            let mid = MidWay::new(quarter);
            let call = CallOpts {
                progress: Some(mid.callback()),
                ..CallOpts::default()
            };
            let dropped = drop_mid_way(Snapshot::import_with(archive, None, call), &mid).await;
            let cleaned = eventually("import's staging removed", nothing_left).await;
            let stopped = mid.last_event().unwrap().saturating_duration_since(dropped);
            eprintln!("import of {what}, dropped: staging gone {cleaned:?} after the drop, last progress {stopped:?} after it");
            assert!(stopped < BOUND, "the import went on {stopped:?} after the drop");
            assert_eq!(Snapshot::list().await.unwrap(), listed, "{what}: index changed");
        }
        for (ms, archive) in SWEEP_MS
            .iter()
            .flat_map(|&ms| [(ms, &archives[0]), (ms, &archives[1])])
        {
            let what = format!("import of {}", archive.file_name().unwrap().to_string_lossy());
            if sweep(&what, Snapshot::import(archive, Some(&dest)), ms).await {
                // It got in before the token (a fast disk): take it out again.
                let imported = dest.join("big").to_string_lossy().into_owned();
                Snapshot::remove(imported, true).await.unwrap();
            }
            assert!(nothing_left(), "{what} at {ms} ms: left {:?}", tree(&dest));
        }
        assert_eq!(Snapshot::list().await.unwrap(), listed);

        // The same imports now succeed, under the archive's name.
        let start = Instant::now();
        let into_dest = Snapshot::import(&archives[0], Some(&dest)).await.unwrap();
        eprintln!("import of big.tar.zst, not cancelled: {:?}", start.elapsed());
        assert_eq!(into_dest.path(), dest.join("big").canonicalize().unwrap());
        let into_home = Snapshot::import(&archives[1], None).await.unwrap();
        assert_eq!(into_home.name(), Some("big"));
        assert_eq!(Snapshot::list().await.unwrap().len(), 2);
        assert_eq!(hidden_in(&dest), Vec::<String>::new());
        assert_eq!(hidden_in(&snapshots), Vec::<String>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_create_during_boot() {
    let _turn = my_turn().await;
    let home = TestHome::new();
    home.run(async {
        home.load_busybox().await;
        let sandbox_dir = home.path().join("sandboxes/boot");
        // QEMU writes its console log from its start: fire 300 ms into the boot.
        let console = sandbox_dir.join("logs/console.log");
        let booting = async move {
            let start = Instant::now();
            while !console.exists() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "QEMU never started"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let create = Sandbox::builder("boot").image(BUSYBOX_REF).create();
        let latency = cancel_with_token(create, booting).await;
        eprintln!(
            "sandbox create, token 300 ms into the boot: {latency:?} from cancel() to return"
        );
        let gone = eventually("QEMU gone", || home.vm_pids().is_empty()).await;
        eprintln!("sandbox create: no QEMU {gone:?} after the call returned");
        assert!(!sandbox_dir.exists(), "the sandbox directory is left");
        assert!(common::sandbox_names().await.is_empty());
        let run_dir = vm_run_dir(&sandbox_dir);
        assert!(
            !run_dir.exists(),
            "the VM's run directory {} is left",
            run_dir.display()
        );
        assert!(latency < BOUND, "took {latency:?} to return after cancel()");

        let sb = Sandbox::builder("boot")
            .image(BUSYBOX_REF)
            .create()
            .await
            .unwrap();
        let out = sb.exec("true", Vec::<String>::new()).await.unwrap();
        assert_eq!(out.exit_code, 0);
        sb.stop().await.unwrap();
        Sandbox::remove("boot").await.unwrap();
        assert!(home.vm_pids().is_empty());
    })
    .await;
}

/// Where QEMU keeps the sockets of the VM of `sandbox_dir` (the runtime's
/// naming: `msb-` and 16 hex digits of the directory's sha256).
fn vm_run_dir(sandbox_dir: &Path) -> PathBuf {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(sandbox_dir.to_string_lossy().as_bytes());
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/msb-{uid}/msb-{}", &hex::encode(hash)[..16]))
}
