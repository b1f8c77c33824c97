//! The one Rust side of the SDK benchmarks (SDK.md "Speed"): the same work
//! the Go, TypeScript and Python SDK benchmarks (bench/go, bench/ts,
//! bench/python) time, on the same data, so that each SDK prints its
//! figures beside Rust's from one run.
//!
//! `bench-sdk-baseline prepare --data DIR` makes the data once: Case A
//! (integrity recorded with msb-sparse-sha256-v1) at `DIR/case-a`, and a
//! home `DIR/home` whose index holds 10,000 small snapshots.
//! `bench-sdk-baseline measure --data DIR [--runs N] [--warmup N]` prints
//! one JSON line of medians: open + verify of Case A, `Snapshot::list()`,
//! 1,000 `get` by name one after another (sequential latency, the measure
//! SDK.md's target is about) and the same 1,000 `get` issued at once and
//! joined on the multi-thread runtime (concurrent throughput, extra
//! information). The SDK benchmarks call it once per round, between
//! their own runs, so that both sides see the same machine load.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use microsandbox::snapshot::integrity::upper_digest_blocking;
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer};
use microsandbox::{Config, IntegrityAlgorithm, Snapshot};
use msb_bench::{flag, make_case_a, time_runs};

/// Snapshots in the benchmark index.
const INDEXED: usize = 10_000;
/// Lookups timed together.
const GETS: usize = 1_000;

/// The name of the `i`th of the `GETS` lookups; every SDK side asks for the
/// same names (`snap-00000`, `snap-00010`, …).
fn get_name(i: usize) -> String {
    format!("snap-{:05}", i * (INDEXED / GETS))
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data = PathBuf::from(flag(&args, "--data").ok_or("--data DIR is required")?);
    let runs: usize = flag(&args, "--runs").map_or(Ok(7), |v| v.parse())?;
    let warmup: usize = flag(&args, "--warmup").map_or(Ok(1), |v| v.parse())?;
    match args.get(1).map(String::as_str) {
        Some("prepare") => prepare(&data),
        Some("measure") => measure(&data, runs, warmup),
        _ => Err(
            "usage: bench-sdk-baseline prepare|measure --data DIR [--runs N] [--warmup N]".into(),
        ),
    }
}

fn manifest(size: u64, integrity: Option<UpperIntegrity>, created_at: String) -> Manifest {
    Manifest {
        schema: 1,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "bench/sdk".into(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
        },
        parent: None,
        created_at,
        labels: Default::default(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: size,
            integrity,
        },
        source_sandbox: None,
    }
}

fn prepare(data: &Path) -> Result<()> {
    let done = data.join("prepared");
    if done.exists() {
        return Ok(());
    }
    let source = make_case_a(&data.join("case-a-source"))?;
    let case_a = data.join("case-a");
    let _ = fs::remove_dir_all(&case_a);
    fs::create_dir_all(&case_a)?;
    fs::hard_link(&source, case_a.join("upper.ext4"))?;
    let algorithm = IntegrityAlgorithm::SparseSha256V1;
    let integrity = UpperIntegrity {
        algorithm: algorithm.name().into(),
        digest: upper_digest_blocking(&source, algorithm, None)?,
    };
    let size = fs::metadata(&source)?.len();
    let m = manifest(size, Some(integrity), "2026-11-23T00:00:00Z".into());
    fs::write(case_a.join("manifest.json"), m.canonical_bytes())?;

    let home = data.join("home");
    let _ = fs::remove_dir_all(&home);
    let snapshots = home.join("snapshots");
    for i in 0..INDEXED {
        let dir = snapshots.join(format!("snap-{i:05}"));
        fs::create_dir_all(&dir)?;
        File::create(dir.join("upper.ext4"))?.set_len(4096)?;
        let created = format!(
            "2026-01-01T{:02}:{:02}:{:02}Z",
            i / 3600 % 24,
            i / 60 % 60,
            i % 60
        );
        fs::write(
            dir.join("manifest.json"),
            manifest(4096, None, created).canonical_bytes(),
        )?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    let indexed = rt.block_on(Config::new().home(&home).scope(Snapshot::reindex_default()))?;
    if indexed != INDEXED {
        return Err(format!("indexed {indexed} of {INDEXED}").into());
    }
    File::create(done)?;
    Ok(())
}

fn measure(data: &Path, runs: usize, warmup: usize) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let config = Config::new().home(data.join("home"));
    let case_a = data
        .join("case-a")
        .to_str()
        .ok_or("non-UTF-8 path")?
        .to_string();
    let verify = time_runs(runs, warmup, || {
        rt.block_on(config.clone().scope(async {
            Snapshot::open(&case_a).await?.verify().await?;
            Ok(())
        }))
    })?;
    let list = time_runs(runs, warmup, || {
        let handles = rt.block_on(config.clone().scope(Snapshot::list()))?;
        if handles.len() != INDEXED {
            return Err(format!("{} handles", handles.len()).into());
        }
        Ok(())
    })?;
    let gets = time_runs(runs, warmup, || {
        rt.block_on(config.clone().scope(async {
            for i in 0..GETS {
                Snapshot::get(get_name(i)).await?;
            }
            Ok(())
        }))
    })?;
    // The configuration scope is task-local, so each spawned lookup carries
    // its own.
    let gets_concurrent = time_runs(runs, warmup, || {
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..GETS {
                set.spawn(config.clone().scope(Snapshot::get(get_name(i))));
            }
            while let Some(got) = set.join_next().await {
                got??;
            }
            Ok(())
        })
    })?;
    println!(
        "{}",
        serde_json::json!({
            "verify_case_a_ms": verify.as_secs_f64() * 1e3,
            "list_10000_ms": list.as_secs_f64() * 1e3,
            "get_1000_ms": gets.as_secs_f64() * 1e3,
            "get_1000_concurrent_ms": gets_concurrent.as_secs_f64() * 1e3,
        })
    );
    Ok(())
}
