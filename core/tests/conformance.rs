//! Runs every case in `tests/conformance/cases/` through the public API, the
//! same cases every SDK runs. The case format is in
//! `tests/conformance/README.md`.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::TestHome;
use microsandbox::{MicrosandboxError, Snapshot, SnapshotVerifyReport};
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

fn pattern_bytes(write: &Value) -> Vec<u8> {
    let pattern = write["pattern"].as_str().unwrap().as_bytes();
    let len = write["len"].as_u64().unwrap() as usize;
    pattern.iter().copied().cycle().take(len).collect()
}

fn write_at(path: &Path, write: &Value) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&pattern_bytes(write), write["offset"].as_u64().unwrap())
        .unwrap();
}

fn materialize(artifact: &Value, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    if let Some(text) = artifact["manifest_bytes"].as_str() {
        fs::write(dir.join("manifest.json"), text).unwrap();
    }
    if let Some(upper) = artifact.get("upper").filter(|u| !u.is_null()) {
        let path = dir.join("upper.ext4");
        fs::File::create(&path)
            .unwrap()
            .set_len(upper["size"].as_u64().unwrap())
            .unwrap();
        for write in upper["writes"].as_array().unwrap() {
            write_at(&path, write);
        }
    }
}

fn check_error(
    case: &str,
    step: usize,
    err: &MicrosandboxError,
    expect: &Value,
) -> Result<(), String> {
    match expect["error"].as_str() {
        Some(kind) if kind == err.kind() => Ok(()),
        Some(kind) => Err(format!(
            "{case} step {step}: expected {kind}, got {}: {err}",
            err.kind()
        )),
        None => Err(format!(
            "{case} step {step}: unexpected error {}: {err}",
            err.kind()
        )),
    }
}

fn check_open(case: &str, step: usize, snap: &Snapshot, expect: &Value) -> Result<(), String> {
    let ok = expect
        .get("ok")
        .ok_or_else(|| format!("{case} step {step}: expected an error, open succeeded"))?;
    if let Some(digest) = ok["digest"].as_str()
        && digest != snap.digest()
    {
        return Err(format!(
            "{case} step {step}: digest {} != {digest}",
            snap.digest()
        ));
    }
    if let Some(size) = ok["size_bytes"].as_u64()
        && size != snap.size_bytes()
    {
        return Err(format!(
            "{case} step {step}: size {} != {size}",
            snap.size_bytes()
        ));
    }
    Ok(())
}

fn check_verify(
    case: &str,
    step: usize,
    report: &SnapshotVerifyReport,
    expect: &Value,
) -> Result<(), String> {
    let ok = expect
        .get("ok")
        .ok_or_else(|| format!("{case} step {step}: expected an error, verify succeeded"))?;
    let got = serde_json::to_value(&report.upper).unwrap();
    if got != ok["upper"] {
        return Err(format!(
            "{case} step {step}: upper {got} != {}",
            ok["upper"]
        ));
    }
    Ok(())
}

async fn run_case(case: &Value, scratch: &Path, home: &Path) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let artifact = &case["artifact"];
    let dir = match artifact["location"]["name"].as_str() {
        Some(bare) => home.join("snapshots").join(bare),
        None => scratch.join("artifact"),
    };
    if !artifact.is_null() {
        materialize(artifact, &dir);
    }
    let mut opened: Option<Snapshot> = None;
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let expect = &step["expect"];
        match step["op"].as_str().unwrap() {
            "open" => {
                let target = match step["target"].as_str() {
                    Some(t) => t.to_string(),
                    None => dir.to_str().unwrap().to_string(),
                };
                match Snapshot::open(&target).await {
                    Ok(snap) => {
                        check_open(name, i, &snap, expect)?;
                        opened = Some(snap);
                    }
                    Err(err) => return check_error(name, i, &err, expect),
                }
            }
            "verify" => {
                let snap = opened.as_ref().ok_or_else(|| {
                    format!("{name} step {i}: verify needs a successful open first")
                })?;
                match snap.verify().await {
                    Ok(report) => check_verify(name, i, &report, expect)?,
                    Err(err) => check_error(name, i, &err, expect)?,
                }
            }
            "write_upper" => write_at(&dir.join("upper.ext4"), step),
            "delete_upper" => fs::remove_file(dir.join("upper.ext4")).unwrap(),
            other => return Err(format!("{name}: unknown op {other}")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_conformance_case_passes() {
    let home = TestHome::new();
    home.run(run_every_case(home.path())).await;
}

async fn run_every_case(home: &Path) {
    let mut files: Vec<_> = fs::read_dir(conformance_dir().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "case files missing: {files:?}");

    let mut failures = Vec::new();
    let mut ran = 0;
    for file in files {
        let doc: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(doc["format"], "microsandbox-conformance-v1");
        for case in doc["cases"].as_array().unwrap() {
            let scratch = tempfile::tempdir().unwrap();
            if let Err(msg) = run_case(case, scratch.path(), home).await {
                failures.push(msg);
            }
            ran += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(ran >= 58, "only {ran} cases ran");
}

/// The case file must carry every 0.6.6 vector unchanged.
#[test]
fn format_cases_embed_every_vector() {
    let dir = conformance_dir();
    let read = |p: &str| -> Value {
        serde_json::from_str(&fs::read_to_string(dir.join(p)).unwrap()).unwrap()
    };
    let vectors = read("vectors/manifest-v066.json");
    let cases = read("cases/format-v066.json");
    let vector_cases = vectors["cases"].as_array().unwrap();
    assert_eq!(vector_cases.len(), 24);
    for v in vector_cases {
        let case = cases["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == v["name"])
            .unwrap_or_else(|| panic!("vector {} has no case", v["name"]));
        assert_eq!(case["artifact"]["manifest_bytes"], v["manifest_bytes"]);
        if let Some(digest) = v.get("expected_digest") {
            assert_eq!(&case["steps"][0]["expect"]["ok"]["digest"], digest);
            assert_eq!(
                case["steps"][1]["expect"]["ok"]["upper"],
                v["expected_upper"]
            );
        }
    }
}
