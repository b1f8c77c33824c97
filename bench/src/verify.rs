//! Verify benchmark on Case A: a 4 GiB sparse `upper.ext4` made by
//! `mkfs.ext4` holding an 8 MiB random file (~75 MB allocated). Times
//! `Snapshot::open` + `verify()` under both integrity algorithms beside the
//! limit baseline, SHA-256 of the allocated bytes alone, in one run, and
//! prints medians and ratios. Usage: `bench-verify [--runs N] [--dir DIR]`.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use microsandbox::snapshot::integrity::{data_extents, upper_digest_blocking};
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer};
use microsandbox::{IntegrityAlgorithm, Snapshot, UpperVerifyStatus};
use msb_bench::{UPPER_APPARENT, data_extent_bytes, make_case_a, time_runs};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = flag(&args, "--runs").map_or(Ok(7), |v| v.parse())?;
    let dir = PathBuf::from(flag(&args, "--dir").unwrap_or_else(|| "bench/data/case-a".into()));
    let upper = make_case_a(&dir)?;
    let data_bytes = data_extent_bytes(&upper)?;
    let allocated = fs::metadata(&upper)?.blocks() * 512;
    println!(
        "Case A: {} apparent, {:.1} MB allocated ({:.1} MB in data extents, the rest unwritten), {runs} runs each (median)",
        UPPER_APPARENT,
        allocated as f64 / 1e6,
        data_bytes as f64 / 1e6
    );

    let rt = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    let baseline = time_runs(runs, 1, || sha256_of_allocated(&upper).map(|_| ()))?;
    rows.push(("baseline: SHA-256 of allocated bytes".to_string(), baseline));
    for algorithm in [
        IntegrityAlgorithm::MerkleSha256V1,
        IntegrityAlgorithm::SparseSha256V1,
    ] {
        let artifact = make_artifact(&dir, &upper, algorithm)?;
        let target = artifact.to_str().ok_or("non-UTF-8 path")?.to_string();
        let took = time_runs(runs, 1, || {
            rt.block_on(async {
                let snap = Snapshot::open(&target).await?;
                match snap.verify().await?.upper {
                    UpperVerifyStatus::Verified { .. } => Ok(()),
                    UpperVerifyStatus::NotRecorded => Err("integrity not recorded".into()),
                }
            })
        })?;
        rows.push((format!("verify {algorithm}"), took));
    }

    println!("{:<44} {:>12} {:>10}", "what", "median", "÷ baseline");
    for (what, took) in &rows {
        println!(
            "{what:<44} {:>9.1} ms {:>9.2}x",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() / baseline.as_secs_f64()
        );
    }
    let json: Vec<_> = rows
        .iter()
        .map(|(what, took)| serde_json::json!({ "what": what, "median_ms": took.as_secs_f64() * 1e3 }))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "bench": "verify-case-a", "allocated_bytes": allocated, "results": json })
    );
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// An artifact directory around a copy-free hard link of `upper`, with
/// integrity recorded under `algorithm`.
fn make_artifact(
    dir: &Path,
    upper: &Path,
    algorithm: IntegrityAlgorithm,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let artifact = dir.join(format!("artifact-{}", algorithm.name()));
    let _ = fs::remove_dir_all(&artifact);
    fs::create_dir_all(&artifact)?;
    fs::hard_link(upper, artifact.join("upper.ext4"))?;
    let manifest = Manifest {
        schema: 1,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "bench/case-a".into(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
        },
        parent: None,
        created_at: "2026-11-23T00:00:00Z".into(),
        labels: Default::default(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: fs::metadata(upper)?.len(),
            integrity: Some(UpperIntegrity {
                algorithm: algorithm.name().into(),
                digest: upper_digest_blocking(upper, algorithm, None)?,
            }),
        },
        source_sandbox: None,
    };
    fs::write(artifact.join("manifest.json"), manifest.canonical_bytes())?;
    Ok(artifact)
}

/// The limit any content check approaches: one SHA-256 pass over the bytes
/// the file actually stores.
fn sha256_of_allocated(path: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in data_extents(&file, len)? {
        let mut offset = start;
        while offset < end {
            let n = (end - offset).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], offset)?;
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
