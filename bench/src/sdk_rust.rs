//! The Rust side of the SDK benchmarks (`bench/ts`, and any SDK's): the same
//! work the SDK benchmark does, from the core directly, printed as one JSON
//! line. Modes:
//! `bench-sdk-rust prepare DIR N` makes Case A (`DIR/case-a`, integrity
//! `msb-sparse-sha256-v1`) and N small indexed artifacts (home `DIR/home`);
//! `bench-sdk-rust measure DIR N RUNS [verify|index]` times open + verify of
//! Case A, `list()` of the N snapshots (median of RUNS) and 1,000 `get` by
//! name (total); only the verify or only the index part when asked.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use microsandbox::snapshot::integrity::upper_digest_blocking;
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperIntegrity, UpperLayer};
use microsandbox::{Config, IntegrityAlgorithm, Snapshot};
use msb_bench::{make_case_a, median, ms};
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// How many `get` calls the benchmark times.
const GETS: usize = 1000;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("usage: bench-sdk-rust prepare|measure DIR N [RUNS]")
    };
    let dir = std::path::PathBuf::from(arg(2)?);
    let n: usize = arg(3)?.parse()?;
    match arg(1)?.as_str() {
        "prepare" => prepare(&dir, n),
        "measure" => measure(&dir, n, arg(4)?.parse()?, args.get(5).map(String::as_str)),
        other => Err(format!("unknown mode {other}").into()),
    }
}

fn manifest(
    size: u64,
    integrity: Option<UpperIntegrity>,
    created_at: String,
    i: usize,
) -> Manifest {
    Manifest {
        schema: 1,
        format: SnapshotFormat::Raw,
        fstype: "ext4".into(),
        image: ImageRef {
            reference: "bench/sdk".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
        },
        parent: None,
        created_at,
        labels: [("i".to_string(), i.to_string())].into_iter().collect(),
        upper: UpperLayer {
            file: "upper.ext4".into(),
            size_bytes: size,
            integrity,
        },
        source_sandbox: Some("bench".into()),
    }
}

fn prepare(dir: &Path, n: usize) -> Res<()> {
    let case_a = dir.join("case-a");
    fs::create_dir_all(&case_a)?;
    let upper = make_case_a(&case_a)?;
    let algorithm = IntegrityAlgorithm::SparseSha256V1;
    let integrity = UpperIntegrity {
        algorithm: algorithm.name().into(),
        digest: upper_digest_blocking(&upper, algorithm, None)?,
    };
    let m = manifest(
        fs::metadata(&upper)?.len(),
        Some(integrity),
        "2026-11-23T00:00:00Z".into(),
        0,
    );
    fs::write(case_a.join("manifest.json"), m.canonical_bytes())?;
    let home = dir.join("home");
    let snapshots = home.join("snapshots");
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?;
    for i in 0..n {
        let art = snapshots.join(format!("snap-{i:05}"));
        fs::create_dir_all(&art)?;
        let f = fs::File::create(art.join("upper.ext4"))?;
        f.set_len(1 << 20)?;
        f.write_all_at(
            format!("artifact {i}").as_bytes(),
            (i as u64 * 4096) % (1 << 20),
        )?;
        let created = (base + chrono::Duration::seconds(i as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        fs::write(
            art.join("manifest.json"),
            manifest(1 << 20, None, created, i).canonical_bytes(),
        )?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    let indexed = rt.block_on(Config::new().home(&home).scope(Snapshot::reindex_default()))?;
    println!("{}", json!({ "indexed": indexed }));
    Ok(())
}

fn measure(dir: &Path, n: usize, runs: usize, only: Option<&str>) -> Res<()> {
    let (do_verify, do_index) = (only != Some("index"), only != Some("verify"));
    let rt = tokio::runtime::Runtime::new()?;
    let case_a = dir.join("case-a").to_string_lossy().into_owned();
    let home = dir.join("home");
    rt.block_on(Config::new().home(&home).scope(async {
        let mut verify = Vec::new();
        for _ in 0..if do_verify { runs } else { 0 } {
            let t = Instant::now();
            let snap = Snapshot::open(&case_a).await?;
            snap.verify().await?;
            verify.push(t.elapsed());
        }
        let mut list = Vec::new();
        for _ in 0..if do_index { runs } else { 0 } {
            let t = Instant::now();
            let all = Snapshot::list().await?;
            list.push(t.elapsed());
            if all.len() != n {
                return Err(format!("listed {} of {n}", all.len()).into());
            }
        }
        let mut gets = Vec::new();
        for _ in 0..if do_index { runs.min(5) } else { 0 } {
            let t = Instant::now();
            for k in 0..GETS {
                Snapshot::get(format!("snap-{:05}", (k * 7919) % n)).await?;
            }
            gets.push(t.elapsed());
        }
        let med = |v: Vec<std::time::Duration>| {
            if v.is_empty() {
                None
            } else {
                Some(ms(median(v)))
            }
        };
        let out = json!({
            "verify_ms": med(verify),
            "list_ms": med(list),
            "get1000_ms": med(gets),
        });
        println!("{out}");
        Ok::<_, Box<dyn std::error::Error>>(())
    }))?;
    Ok(())
}
