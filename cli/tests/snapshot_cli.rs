//! `msb snapshot create|ls|rm|reindex` and `msb create --from-snapshot` on a
//! real sandbox, and crash safety: `msb snapshot create` killed at many
//! points leaves either nothing visible (no artifact, no index row) or a
//! complete, verifiable artifact.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{msb, ok};
use serde_json::Value;

fn indexed(home: &Path) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(home, &["snapshot", "ls", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn snapshot_commands_and_kill_safety() {
    assert!(
        std::env::var_os("MSB_KERNEL_DIR").is_some(),
        "run with `make test`"
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(h, &["image", "busybox", "--tag", "local/busybox:snap"]);
    ok(h, &["create", "src", "--image", "local/busybox:snap"]);
    ok(
        h,
        &["exec", "src", "--", "sh", "-c", "echo kept > /root/kept"],
    );
    let out = msb(h, &["snapshot", "create", "src", "--name", "early"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[SnapshotSandboxRunning]"));
    ok(h, &["stop", "src"]);

    let created: Value = serde_json::from_str(&ok(
        h,
        &[
            "snapshot",
            "create",
            "src",
            "--name",
            "base",
            "--label",
            "stage=one",
            "--integrity",
            "--json",
        ],
    ))
    .unwrap();
    let digest = created["digest"].as_str().unwrap().to_string();
    assert_eq!(created["labels"]["stage"], "one");
    assert_eq!(created["source_sandbox"], "src");
    assert!(created["integrity"]["digest"].is_string());
    assert!(ok(h, &["snapshot", "verify", "base"]).starts_with("verified"));
    let rows = indexed(h);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "base");
    assert_eq!(rows[0]["digest"], digest.as_str());
    assert_eq!(rows[0]["image_ref"], "local/busybox:snap");
    assert_eq!(rows[0]["parent_digest"], Value::Null);
    let out = msb(h, &["snapshot", "create", "src", "--name", "base"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error[SnapshotAlreadyExists]"));

    ok(h, &["create", "copy", "--from-snapshot", "base"]);
    assert_eq!(
        ok(h, &["exec", "copy", "--", "cat", "/root/kept"]),
        "kept\n"
    );
    ok(h, &["rm", "copy"]);

    // Make the capture slow enough to kill mid-way: put 256 MiB of data in
    // the stopped sandbox's upper (raw bytes past the filesystem's used part).
    let upper = h.join("sandboxes/src/upper.ext4");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&upper)
        .unwrap();
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 + 3) as u8).collect();
    for i in 0..256u64 {
        file.write_all_at(&chunk, (2 << 30) + i * (1 << 20))
            .unwrap();
    }
    drop(file);
    for delay_ms in [2u64, 10, 30, 60, 120, 250, 500, 900] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_msb"))
            .env("MSB_HOME", h)
            .args([
                "snapshot",
                "create",
                "src",
                "--name",
                "victim",
                "--integrity",
                "--force",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let dir = h.join("snapshots/victim");
        let row = indexed(h).into_iter().find(|r| r["name"] == "victim");
        if dir.exists() {
            // Published before the kill: it must be whole.
            let out = msb(h, &["snapshot", "verify", "victim"]);
            assert!(
                out.status.success(),
                "partial artifact after a kill at {delay_ms} ms"
            );
        } else {
            assert!(
                row.is_none(),
                "index row without an artifact after a kill at {delay_ms} ms"
            );
        }
        let out = msb(
            h,
            &[
                "snapshot",
                "ls",
                "--dir",
                h.join("snapshots").to_str().unwrap(),
                "--json",
            ],
        );
        let visible: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(visible.as_array().unwrap().len() <= 2);
    }
    // A later create cleans what killed ones left in staging.
    ok(
        h,
        &["snapshot", "create", "src", "--name", "victim", "--force"],
    );
    let leftovers: Vec<_> = std::fs::read_dir(h.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");

    assert!(ok(h, &["snapshot", "reindex"]).contains("indexed 2"));
    ok(h, &["snapshot", "rm", "victim"]);
    ok(h, &["snapshot", "rm", &digest]);
    assert!(indexed(h).is_empty());
    ok(h, &["rm", "src"]);
}
