//! The `msb` binary end to end: human and JSON output, exit codes and error
//! kinds, against artifacts from the conformance cases.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::msb;
use serde_json::Value;

/// Materialize the conformance case `name` of `suite` as `$home/snapshots/<as_name>`.
fn artifact_from_case(home: &Path, suite: &str, name: &str, as_name: &str) -> (PathBuf, Value) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/conformance/cases/{suite}.json"));
    let doc: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone();
    let dir = home.join("snapshots").join(as_name);
    fs::create_dir_all(&dir).unwrap();
    let manifest = case["artifact"]["manifest_bytes"].as_str().unwrap();
    fs::write(dir.join("manifest.json"), manifest).unwrap();
    let upper = &case["artifact"]["upper"];
    let f = fs::File::create(dir.join("upper.ext4")).unwrap();
    f.set_len(upper["size"].as_u64().unwrap()).unwrap();
    for w in upper["writes"].as_array().unwrap() {
        let pattern = w["pattern"].as_str().unwrap().as_bytes();
        let len = w["len"].as_u64().unwrap() as usize;
        let bytes: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
        f.write_all_at(&bytes, w["offset"].as_u64().unwrap())
            .unwrap();
    }
    (dir, case)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn inspect_and_verify_by_bare_name() {
    let home = tempfile::tempdir().unwrap();
    let (_, case) = artifact_from_case(
        home.path(),
        "integrity",
        "msb-merkle-sha256-v1/sparse-1mib",
        "base",
    );
    let expected_digest = case["steps"][0]["expect"]["ok"]["digest"].as_str().unwrap();
    let expected_upper = &case["steps"][1]["expect"]["ok"]["upper"];

    let out = msb(home.path(), &["snapshot", "inspect", "base"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(expected_digest), "{text}");
    assert!(text.contains("docker.io/library/python:3.12"), "{text}");

    let out = msb(home.path(), &["snapshot", "inspect", "--json", "base"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["digest"], expected_digest);
    assert_eq!(v["size_bytes"], 1048576);
    assert_eq!(v["image_ref"], "docker.io/library/python:3.12");
    assert!(v["upper_allocated_bytes"].is_u64());

    let out = msb(home.path(), &["snapshot", "verify", "--json", "base"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["digest"], expected_digest);
    assert_eq!(&v["upper"], expected_upper);

    let out = msb(home.path(), &["snapshot", "verify", "base"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("verified")
    );
}

#[test]
fn failures_exit_non_zero_with_their_kind() {
    let home = tempfile::tempdir().unwrap();
    let (dir, _) = artifact_from_case(
        home.path(),
        "integrity",
        "msb-sparse-sha256-v1/small-dense",
        "s",
    );
    fs::write(dir.join("upper.ext4"), vec![b'x'; 4096]).unwrap();

    let out = msb(home.path(), &["snapshot", "verify", "s"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error[SnapshotIntegrity]"),
        "{}",
        stderr(&out)
    );

    let out = msb(home.path(), &["snapshot", "verify", "--json", "s"]);
    assert!(!out.status.success());
    assert_eq!(json(&out)["error"]["kind"], "SnapshotIntegrity");

    let out = msb(home.path(), &["snapshot", "inspect", "missing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error[SnapshotNotFound]"),
        "{}",
        stderr(&out)
    );

    fs::write(dir.join("manifest.json"), "{").unwrap();
    let out = msb(home.path(), &["snapshot", "inspect", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error[ManifestInvalid]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn upper_digest_matches_the_golden_vectors() {
    let home = tempfile::tempdir().unwrap();
    for algorithm in ["msb-merkle-sha256-v1", "msb-sparse-sha256-v1"] {
        let name = format!("{algorithm}/unaligned");
        let (dir, case) = artifact_from_case(home.path(), "integrity", &name, "u");
        let upper = dir.join("upper.ext4");
        let args = [
            "upper",
            "digest",
            "--json",
            "--algorithm",
            algorithm,
            upper.to_str().unwrap(),
        ];
        let out = msb(home.path(), &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let expected = &case["steps"][1]["expect"]["ok"]["upper"]["digest"];
        assert_eq!(&json(&out)["digest"], expected);
    }
    let out = msb(
        home.path(),
        &["upper", "digest", "--algorithm", "crc32", "/dev/null"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error[InvalidConfig]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn export_and_import_through_the_cli() {
    let home = tempfile::tempdir().unwrap();
    let (_, case) = artifact_from_case(
        home.path(),
        "integrity",
        "msb-merkle-sha256-v1/sparse-1mib",
        "base",
    );
    let digest = case["steps"][0]["expect"]["ok"]["digest"].as_str().unwrap();
    let archive = home.path().join("out/base.tar.zst");
    let archive_arg = archive.to_str().unwrap();
    let out = msb(
        home.path(),
        &["snapshot", "export", "--json", "base", archive_arg],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["bytes"], fs::metadata(&archive).unwrap().len());

    let dest = home.path().join("elsewhere");
    let dest_arg = dest.to_str().unwrap();
    let out = msb(
        home.path(),
        &[
            "snapshot",
            "import",
            "--json",
            archive_arg,
            "--dest",
            dest_arg,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["digest"], digest);
    assert!(dest.join("base/manifest.json").is_file());

    let out = msb(
        home.path(),
        &["snapshot", "import", "--dest", dest_arg, archive_arg],
    );
    assert!(
        out.status.success(),
        "re-import is a no-op: {}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("imported"));

    let junk = home.path().join("junk.tar");
    fs::write(&junk, b"not an archive at all").unwrap();
    let out = msb(home.path(), &["snapshot", "import", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error[ArchiveInvalid]"),
        "{}",
        stderr(&out)
    );
}

/// `msb snapshot ls|reindex|rm --json` print the documented views
/// (`docs/json.md`): every field present, `null` for absent ones.
#[test]
fn listing_prints_the_documented_handle_view() {
    let home = tempfile::tempdir().unwrap();
    let (dir, case) = artifact_from_case(
        home.path(),
        "integrity",
        "msb-merkle-sha256-v1/sparse-1mib",
        "base",
    );
    let digest = case["steps"][0]["expect"]["ok"]["digest"].as_str().unwrap();
    assert_eq!(
        json(&msb(home.path(), &["snapshot", "ls", "--json"])),
        Value::Array(vec![])
    );

    let out = msb(home.path(), &["snapshot", "reindex", "--json"]);
    assert_eq!(json(&out), serde_json::json!({"indexed": 1}));
    let out = msb(home.path(), &["snapshot", "ls", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let row = &rows.as_array().unwrap()[0];
    let keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "digest",
        "name",
        "parent_digest",
        "image_ref",
        "format",
        "size_bytes",
        "created_at",
        "path",
        "child_count",
        "kind",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(row["digest"], digest);
    assert_eq!(row["name"], "base");
    assert_eq!(row["parent_digest"], Value::Null);
    assert_eq!(row["format"], "raw");
    assert_eq!(row["kind"], "disk");
    assert_eq!(row["size_bytes"], 1048576);
    assert_eq!(row["child_count"], 0);
    assert!(row["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(row["path"], dir.canonicalize().unwrap().to_str().unwrap());

    let out = msb(
        home.path(),
        &[
            "snapshot",
            "ls",
            "--dir",
            home.path().join("snapshots").to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(json(&out)[0]["digest"], digest);

    let out = msb(home.path(), &["snapshot", "rm", "--json", digest]);
    assert_eq!(json(&out), serde_json::json!({"removed": digest}));
    let out = msb(home.path(), &["snapshot", "ls", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
}
