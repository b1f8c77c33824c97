//! `msb image save`, `msb image rm` and `msb image ls` on a temporary home:
//! exit statuses, JSON shapes, and the error kind of each failure. No
//! registry; one test boots one VM (a sandbox keeps its image in use).

mod common;

use std::path::Path;
use std::process::Output;

use common::{msb, ok};
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use serde_json::Value;

const REF: &str = "local/busybox:cli";

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The error a failed `--json` command printed, after checking it failed.
fn error_kind(out: &Output) -> String {
    assert!(!out.status.success());
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    body["error"]["kind"].as_str().unwrap().to_string()
}

#[test]
fn save_writes_an_archive_that_loads_back_and_rm_removes_the_image() {
    let (home, other, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let archive = work.path().join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), REF, &archive).unwrap();
    let loaded = json_of(&msb(
        home.path(),
        &["--json", "image", "load", archive.to_str().unwrap()],
    ));
    let digest = loaded["manifest_digest"].as_str().unwrap();

    // `ls` still tells where each image came from: a local load.
    let listed = msb(home.path(), &["image", "ls"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains(REF) && text.trim_end().ends_with("local"),
        "{text}"
    );
    let listed = json_of(&msb(home.path(), &["--json", "image", "ls"]));
    assert_eq!(listed[0]["origin"], Value::Null);

    let out = work.path().join("saved.tar");
    let saved = json_of(&msb(
        home.path(),
        &["--json", "image", "save", REF, out.to_str().unwrap()],
    ));
    assert_eq!(saved["manifest_digest"], digest);
    assert_eq!(saved["reference"], REF);
    assert_eq!(saved["path"], out.to_str().unwrap());
    let text = msb(home.path(), &["image", "save", REF, out.to_str().unwrap()]);
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).starts_with(&format!("saved {REF} ({digest}) to ")),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let again = json_of(&msb(
        other.path(),
        &["--json", "image", "load", out.to_str().unwrap()],
    ));
    assert_eq!(again["manifest_digest"], digest);
    assert_eq!(again["reference"], REF);

    let missing = work.path().join("missing.tar");
    let failed = msb(
        home.path(),
        &[
            "--json",
            "image",
            "save",
            "local/none:x",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(error_kind(&failed), "ImageNotFound");
    assert!(!missing.exists());

    let removed = json_of(&msb(home.path(), &["--json", "image", "rm", REF]));
    assert_eq!(removed, serde_json::json!({ "removed": REF }));
    assert_eq!(
        error_kind(&msb(home.path(), &["--json", "image", "rm", REF])),
        "ImageNotFound"
    );
    let text = msb(home.path(), &["image", "rm", REF]);
    assert!(!text.status.success());
    assert!(String::from_utf8_lossy(&text.stderr).starts_with("error[ImageNotFound]"));
    let blobs = home.path().join("images/blobs/sha256");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 0);
}

#[test]
fn an_image_a_sandbox_was_created_from_is_in_use_until_the_sandbox_is_removed() {
    assert!(
        std::env::var_os("MSB_KERNEL_DIR").is_some(),
        "run with `make test` (or set MSB_KERNEL_DIR)"
    );
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    ok(h, &["image", "busybox", "--tag", REF]);
    ok(h, &["create", "box", "--image", REF]);
    ok(h, &["stop", "box"]);
    let refused = msb(h, &["--json", "image", "rm", REF]);
    assert_eq!(error_kind(&refused), "ImageInUse");
    let body: Value = serde_json::from_slice(&refused.stdout).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("sandbox box"), "{message}");
    assert!(
        ok(h, &["image", "ls"]).contains(REF),
        "refused: nothing changed"
    );

    ok(h, &["rm", "box"]);
    ok(h, &["image", "rm", REF]);
    for dir in ["images/blobs/sha256", "images/lower"] {
        let left: Vec<_> = std::fs::read_dir(h.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
}
