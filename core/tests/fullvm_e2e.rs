//! Full-VM snapshots on real QEMU microVMs (TCG here): a guest that counts
//! in memory is captured, resumed and forked; forks continue from the
//! captured count on their own, get their own identity and disk, and never
//! change the artifact; named snapshots, overrides, export/import into
//! another home, capturing a fork, and the bad inputs, each with its kind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{BUSYBOX_REF, TestHome};
use microsandbox::{ExportOpts, Sandbox, SandboxState, Snapshot, SnapshotKind};

/// Starts a counter whose value lives only in a shell variable.
const START_COUNTER: &str = r#"mkfifo /tmp/count.fifo; setsid sh -c 'n=0; trap "echo \$n > /tmp/count.fifo" USR1; while :; do n=$((n+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/count.pid"#;

/// Asks the counter for its value.
const READ_COUNTER: &str = "kill -USR1 $(cat /tmp/count.pid); cat /tmp/count.fifo";

async fn sh(sb: &Sandbox, script: &str) -> String {
    let out = sb.exec("sh", ["-c", script]).await.unwrap();
    assert_eq!(out.exit_code, 0, "{script}: {}", out.stderr_text());
    out.stdout_text().trim().to_string()
}

async fn count(sb: &Sandbox) -> u64 {
    sh(sb, READ_COUNTER).await.parse().unwrap()
}

async fn counting_sandbox(name: &str, cpus: u32) -> (Sandbox, u64) {
    let sb = Sandbox::builder(name)
        .image(BUSYBOX_REF)
        .cpus(cpus)
        .instant(false)
        .create()
        .await
        .unwrap();
    sh(&sb, START_COUNTER).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let c0 = count(&sb).await;
    assert!(c0 > 0, "the counter counts");
    (sb, c0)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn full_snapshots_capture_resume_and_fork() {
    let home = TestHome::new();
    let other = TestHome::new();
    home.run(fork_flow(&home, &other)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_snapshot_bad_input_fails_with_its_kind_and_leaves_nothing() {
    let home = TestHome::new();
    home.run(bad_input(&home)).await;
}

async fn fork_flow(home: &TestHome, other: &TestHome) {
    home.load_busybox().await;
    let (orig, c0) = counting_sandbox("orig", 2).await;

    // Capture: the original is paused, commands wait for resume.
    let snap = orig.snapshot().await.unwrap();
    assert_eq!(snap.kind(), SnapshotKind::Full);
    let digest = snap.digest().to_string();
    assert_eq!(orig.handle().status().await.unwrap(), SandboxState::Paused);
    let err = orig.exec("true", [""; 0]).await.unwrap_err();
    assert_eq!(err.kind(), "SandboxNotRunning");
    let again = orig.snapshot().await.unwrap_err();
    assert_eq!(
        again.kind(),
        "SandboxNotRunning",
        "a paused sandbox was captured already"
    );
    assert!(
        snap.path().starts_with(home.path().join("sandboxes/orig")),
        "an unnamed snapshot lives with its sandbox: {}",
        snap.path().display()
    );
    assert!(
        Snapshot::list().await.unwrap().is_empty(),
        "unnamed: not indexed"
    );

    // The original resumes and keeps counting.
    orig.resume().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(count(&orig).await > c0);

    // Two forks continue from the captured value, independently.
    let f1 = snap.restore("f1").await.unwrap();
    let f2 = snap.restore("f2").await.unwrap();
    let (r1, r2) = (count(&f1).await, count(&f2).await);
    for r in [r1, r2] {
        assert!(
            (c0..c0 + 30).contains(&r),
            "fork resumed at {r}, captured {c0}"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(count(&f1).await > r1);
    sh(&f1, "echo only-in-f1 > /root/mine").await;
    let absent = f2.exec("cat", ["/root/mine"]).await.unwrap();
    assert_ne!(
        absent.exit_code, 0,
        "a file written in one fork is not in another"
    );
    // Not clones: entropy, hostname, clock.
    let random = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(sh(&f1, random).await, sh(&f2, random).await);
    assert_eq!(sh(&f1, "hostname").await, "f1");
    assert_eq!(sh(&f2, "hostname").await, "f2");
    let guest_now: i64 = sh(&f2, "date +%s").await.parse().unwrap();
    assert!(
        (guest_now - now_secs()).abs() <= 5,
        "fork clock {guest_now}"
    );

    // Overrides: env, fewer CPUs, less memory; never more.
    let f3 = snap
        .restore_with("f3", |b| b.env("FORKED", "yes").cpus(1).memory_mib(128))
        .await
        .unwrap();
    assert_eq!(sh(&f3, "echo $FORKED").await, "yes");
    assert_eq!(
        sh(
            &f3,
            "grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online"
        )
        .await
        .lines()
        .last(),
        Some("0")
    );
    let mem_kb: u64 = sh(&f3, "awk '/MemTotal/ {print $2}' /proc/meminfo")
        .await
        .parse()
        .unwrap();
    assert!(mem_kb < 140_000, "balloon took memory back: {mem_kb} kB");
    for (label, err) in [
        (
            "memory",
            snap.restore_with("f9", |b| b.memory_mib(512)).await,
        ),
        ("cpus", snap.restore_with("f9", |b| b.cpus(3)).await),
    ] {
        assert_eq!(err.unwrap_err().kind(), "InvalidConfig", "{label}");
    }
    assert!(!home.path().join("sandboxes/f9").exists());

    // A fork captures too (its RAM is a private mapping, read from QEMU).
    let of_fork = f1.snapshot().await.unwrap();
    let f5 = of_fork.restore("f5").await.unwrap();
    assert!(count(&f5).await >= r1);
    assert_eq!(sh(&f5, "cat /root/mine").await, "only-in-f1");

    // The artifact never changed.
    snap.verify().await.unwrap();
    assert_eq!(
        Snapshot::open(snap.path().to_string_lossy())
            .await
            .unwrap()
            .digest(),
        digest
    );

    // Named: outlives its source, listed with its kind, restores from the index.
    snap.save_named("counted").await.unwrap();
    let listed = Snapshot::list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name(), listed[0].kind()),
        (Some("counted"), SnapshotKind::Full)
    );
    let exported = home.path().join("counted.tar.zst");
    Snapshot::export(
        "counted",
        &exported,
        ExportOpts {
            with_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for sb in [&f1, &f2, &f3, &f5] {
        sb.handle().remove().await.unwrap();
    }
    orig.handle().remove().await.unwrap();
    assert!(
        !snap.path().exists(),
        "unnamed snapshots go with their sandbox"
    );
    let handle = Snapshot::get("counted").await.unwrap();
    let f4 = handle.restore("f4").await.unwrap();
    assert!((c0..c0 + 30).contains(&count(&f4).await));
    f4.handle().remove().await.unwrap();

    // Moved to another home through an archive: it lands verified and forks there.
    other
        .run(async {
            let imported = Snapshot::import(&exported, None).await.unwrap();
            assert_eq!(imported.kind(), SnapshotKind::Full);
            let there = imported.restore("there").await.unwrap();
            assert!((c0..c0 + 30).contains(&count(&there).await));
            there.handle().remove().await.unwrap();
        })
        .await;

    Snapshot::delete("counted").await.unwrap();
    assert_eq!(
        Snapshot::get("counted").await.unwrap_err().kind(),
        "SnapshotNotFound"
    );
}

/// A copy of the artifact `dir` (sparse) in `to`.
fn copy_artifact(dir: &Path, to: &Path) -> PathBuf {
    let status = std::process::Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(dir)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    to.to_path_buf()
}

/// Flip one byte of `file` at the first offset holding data.
fn flip_a_data_byte(file: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let extents = microsandbox::sparse::data_extents(&f, f.metadata().unwrap().len()).unwrap();
    let at = extents[0].0 + 100;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

async fn assert_restore_fails(snapshot_dir: &Path, kind: &str, home: &TestHome) {
    let snap = Snapshot::open(snapshot_dir.to_string_lossy()).await;
    let err = match snap {
        Ok(snap) => snap.restore("victim").await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(
        Sandbox::get("victim").await.unwrap_err().kind(),
        "SandboxNotFound"
    );
    assert!(!home.path().join("sandboxes/victim").exists());
}

async fn bad_input(home: &TestHome) {
    home.load_busybox().await;
    let sb = Sandbox::builder("bad")
        .image(BUSYBOX_REF)
        .instant(false)
        .create()
        .await
        .unwrap();
    assert_eq!(sb.resume().await.unwrap_err().kind(), "SandboxNotPaused");
    sb.stop().await.unwrap();
    assert_eq!(sb.snapshot().await.unwrap_err().kind(), "SandboxNotRunning");
    assert!(
        !home.path().join("sandboxes/bad/snapshots").exists()
            || std::fs::read_dir(home.path().join("sandboxes/bad/snapshots"))
                .unwrap()
                .next()
                .is_none()
    );
    let sb = sb.handle().start().await.unwrap();
    let snap = sb.snapshot().await.unwrap();
    sb.resume().await.unwrap();

    let scratch = home.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    // A tampered RAM file, then a tampered device state.
    let ram = copy_artifact(snap.path(), &scratch.join("ram"));
    flip_a_data_byte(&ram.join("vm.ram"));
    assert_restore_fails(&ram, "SnapshotIntegrity", home).await;
    let state = copy_artifact(snap.path(), &scratch.join("state"));
    flip_a_data_byte(&state.join("vm.state"));
    assert_restore_fails(&state, "SnapshotIntegrity", home).await;
    // A state file from another machine shape (here: another QEMU version),
    // consistently described (vm.json and its digest in the manifest).
    let other = copy_artifact(snap.path(), &scratch.join("other-qemu"));
    let vm_json = std::fs::read_to_string(other.join("vm.json")).unwrap();
    let vm_json = vm_json.replacen("\"qemu\":\"", "\"qemu\":\"0.", 1);
    std::fs::write(other.join("vm.json"), &vm_json).unwrap();
    let mut manifest: microsandbox::snapshot::Manifest =
        serde_json::from_slice(&std::fs::read(other.join("manifest.json")).unwrap()).unwrap();
    manifest.labels.insert(
        "msb.vm".into(),
        microsandbox::snapshot::manifest::sha256_digest_string(vm_json.as_bytes()),
    );
    std::fs::write(other.join("manifest.json"), manifest.canonical_bytes()).unwrap();
    assert_restore_fails(&other, "SnapshotIncompatible", home).await;
    // A missing VM file.
    let missing = copy_artifact(snap.path(), &scratch.join("missing"));
    std::fs::remove_file(missing.join("vm.state")).unwrap();
    assert_restore_fails(&missing, "SnapshotIntegrity", home).await;

    // The source never changed, and still forks.
    snap.verify().await.unwrap();
    sb.handle().remove().await.unwrap();
    assert!(home.vm_pids().is_empty(), "no VM left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn instant_create_forks_a_base_of_the_same_shape() {
    let home = TestHome::new();
    home.run(instant(&home)).await;
}

/// Whether the sandbox `name` booted a kernel (a fork's console shows none).
fn booted_cold(home: &TestHome, name: &str) -> bool {
    let console = home
        .path()
        .join("sandboxes")
        .join(name)
        .join("logs/console.log");
    std::fs::read_to_string(console)
        .unwrap_or_default()
        .contains("Linux version")
}

fn bases(home: &TestHome) -> Vec<PathBuf> {
    std::fs::read_dir(home.path().join("cache/base"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

async fn instant(home: &TestHome) {
    home.load_busybox().await;
    let create = |name: &'static str| Sandbox::builder(name).image(BUSYBOX_REF).env("WHO", name);
    // The first of a shape boots cold and leaves a base; the next forks it.
    let a1 = create("a1").create().await.unwrap();
    assert!(booted_cold(home, "a1"));
    assert_eq!(bases(home).len(), 1);
    assert_eq!(sh(&a1, "echo $WHO").await, "a1");
    let a2 = create("a2").create().await.unwrap();
    assert!(
        !booted_cold(home, "a2"),
        "the second create of a shape forks"
    );
    assert_eq!(sh(&a2, "hostname; echo $WHO").await, "a2\na2");
    // It runs in its own shared RAM: its capture carries no RAM in the
    // device state, as a cold-booted sandbox's.
    let captured = a2.snapshot().await.unwrap();
    let state = captured.vm().unwrap().state.size_bytes;
    assert!(state < 1 << 20, "device state of {state} bytes");
    a2.resume().await.unwrap();
    sh(&a2, "echo mine > /root/f").await;
    assert_ne!(a1.exec("cat", ["/root/f"]).await.unwrap().exit_code, 0);
    let random = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(sh(&a1, random).await, sh(&a2, random).await);
    // The opt-out always boots.
    let a3 = create("a3").instant(false).create().await.unwrap();
    assert!(booted_cold(home, "a3"));
    // Another shape has its own base.
    let a4 = create("a4").memory_mib(320).create().await.unwrap();
    assert!(booted_cold(home, "a4"));
    assert_eq!(bases(home).len(), 2);
    // A damaged base is dropped, the create boots cold and leaves a new one.
    for base in bases(home) {
        std::fs::remove_file(base.join("vm.state")).unwrap();
    }
    let a5 = create("a5").create().await.unwrap();
    assert!(booted_cold(home, "a5"));
    assert_eq!(sh(&a5, "echo $WHO").await, "a5");
    let a6 = create("a6").create().await.unwrap();
    assert!(!booted_cold(home, "a6"));
    for sb in [a1, a2, a3, a4, a5, a6] {
        sb.handle().remove().await.unwrap();
    }
}
