//! Every error kind of the core is produced by some test: this file holds
//! the cases no other suite covers (`Io`), and a guard that fails when a
//! kind is added to `MicrosandboxError::KINDS` without a test that expects
//! it. `docs/errors.md` names, per kind, the test that produces it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::TestHome;
use common::artifacts::{make_artifact, tree};
use microsandbox::{ExportOpts, MicrosandboxError, Snapshot};

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_is_io_and_names_its_path() {
    let (home, work) = (TestHome::new(), tempfile::tempdir().unwrap());
    home.run(async {
        make_artifact(&home.snapshots_dir().join("base"), 1, None, None);
        Snapshot::reindex_default().await.unwrap();
        // The destination's parent is a regular file: no directory can be
        // made there, which no argument check can see in advance.
        let blocker = work.path().join("not-a-dir");
        fs::write(&blocker, b"x").unwrap();
        let out = blocker.join("base.tar.zst");
        let err = Snapshot::export("base", &out, ExportOpts::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "Io", "{err}");
        match &err {
            MicrosandboxError::Io { path, .. } => {
                assert!(path.starts_with(&blocker), "{}", path.display())
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(fs::read(&blocker).unwrap(), b"x");
        assert_eq!(tree(work.path()), vec![blocker.clone()]);
    })
    .await;
}

/// Sources where tests state the kind they expect: Rust suites compare
/// `err.kind()` with the kind's name, conformance cases name it in
/// `"error"`, SDK suites use their per-kind classes named after it.
fn test_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "core/tests",
        "cli/tests",
        "tests/conformance/cases",
        "tests/seed-examples/tests",
    ] {
        collect(&root.join(dir), &mut files);
    }
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "json")
        ) && !path.ends_with("error_kinds.rs")
        {
            files.push(path);
        }
    }
}

#[test]
fn every_kind_is_expected_by_some_test() {
    let texts: Vec<String> = test_sources()
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    let untested: Vec<&str> = MicrosandboxError::KINDS
        .iter()
        .copied()
        // `Io` is produced in this file, above.
        .filter(|kind| *kind != "Io")
        .filter(|kind| {
            let quoted = format!("\"{kind}\"");
            !texts.iter().any(|t| t.contains(&quoted))
        })
        .collect();
    assert!(
        untested.is_empty(),
        "no test expects these kinds (add one, and a line in docs/errors.md): {untested:?}"
    );
}
