//! Archive benchmark: `Snapshot::export` and `Snapshot::import` of Case A
//! with integrity recorded (median of N each), the archive's size and the
//! imported upper's allocated size against the source's, digests compared;
//! beside the microsandbox 0.6.6 release doing the same in the same run (its
//! Python API in-process, one run each: it takes tens of seconds).
//! Usage: `bench-archive [--runs N] [--python VENV_PY]`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use microsandbox::{Config, ExportOpts, IntegrityAlgorithm, Snapshot};
use msb_bench::{case_a_artifact as artifact, flag, make_case_a, median, ms, settle};
use serde_json::Value;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| flag(&args, name);
    let runs: usize = flag("--runs").map_or(Ok(7), |v| v.parse())?;
    let python = flag("--python");
    let case_a = make_case_a(Path::new("bench/data/case-a"))?;
    let work = tempfile::tempdir_in("bench/data")?;
    Config::set_default(Config::new().home(work.path().join("home")));
    let allocated = |p: &Path| -> Res<u64> { Ok(fs::metadata(p)?.blocks() * 512) };

    let ours = artifact(
        &case_a,
        &work.path().join("ours/case-a"),
        IntegrityAlgorithm::MerkleSha256V1,
    )?;
    let source_alloc = allocated(&ours.upper_path())?;
    let rt = tokio::runtime::Runtime::new()?;
    let (mut exports, mut imports) = (Vec::new(), Vec::new());
    let (mut archive_bytes, mut imported_alloc, mut digests_equal) = (0, 0, true);
    let path = ours.path().to_string_lossy().into_owned();
    for i in 0..=runs {
        let out = work.path().join(format!("out/case-a-{i}.tar.zst"));
        settle();
        let t = Instant::now();
        rt.block_on(Snapshot::export(
            path.clone(),
            out.clone(),
            ExportOpts::default(),
        ))?;
        let export = t.elapsed();
        archive_bytes = fs::metadata(&out)?.len();
        settle();
        let dest = work.path().join(format!("imported-{i}"));
        let t = Instant::now();
        let handle = rt.block_on(Snapshot::import(out, Some(dest.as_path())))?;
        let import = t.elapsed();
        let snap = rt.block_on(handle.open())?;
        imported_alloc = allocated(&snap.upper_path())?;
        digests_equal &= handle.digest() == ours.digest()
            && snap.manifest().upper.integrity == ours.manifest().upper.integrity;
        if i > 0 {
            // Run 0 warms the page cache of the source.
            exports.push(export);
            imports.push(import);
        }
    }
    let plain = work.path().join("out/case-a.tar");
    settle();
    let t = Instant::now();
    rt.block_on(Snapshot::export(
        path.clone(),
        plain.clone(),
        ExportOpts {
            plain_tar: true,
            ..Default::default()
        },
    ))?;
    let plain_ms = ms(t.elapsed());
    let plain_bytes = fs::metadata(&plain)?.len();

    let theirs = match &python {
        Some(py) => {
            let artifact066 = artifact(
                &case_a,
                &work.path().join("theirs/case-a"),
                IntegrityAlgorithm::SparseSha256V1,
            )?;
            settle();
            let out = Command::new(py)
                .arg("bench/py/archive_066.py")
                .arg(artifact066.path())
                .arg(work.path().join("theirs/case-a.tar.zst"))
                .arg(work.path().join("theirs-imported"))
                .env("MSB_HOME", work.path().join("home-066"))
                .stderr(Stdio::inherit())
                .output()?;
            if !out.status.success() {
                return Err("the 0.6.6 archive run failed".into());
            }
            let line = String::from_utf8(out.stdout)?;
            let mut v: Value = serde_json::from_str(line.trim().lines().last().unwrap_or("{}"))?;
            v["digest_equal"] = Value::Bool(v["digest"].as_str() == Some(artifact066.digest()));
            Some(v)
        }
        None => None,
    };

    let (export_ms, import_ms) = (ms(median(exports)), ms(median(imports)));
    println!(
        "Case A: 4 GiB apparent, source upper {source_alloc} bytes allocated; median of {runs}"
    );
    println!("{:<34} {:>14} {:>14}", "", "ours", "0.6.6");
    let theirs_f = |key: &str| theirs.as_ref().and_then(|v| v[key].as_f64());
    let row = |label: &str, ours: f64, theirs: Option<f64>, unit: &str| {
        let theirs = theirs.map_or("-".to_string(), |t| format!("{t:.1}"));
        println!("{label:<34} {ours:>14.1} {theirs:>14} {unit}");
    };
    row("export (ms)", export_ms, theirs_f("export_ms"), "");
    row(
        "archive (MB)",
        archive_bytes as f64 / 1e6,
        theirs_f("archive_bytes").map(|b| b / 1e6),
        "",
    );
    row("import (ms)", import_ms, theirs_f("import_ms"), "");
    row(
        "imported upper allocated (MB)",
        imported_alloc as f64 / 1e6,
        theirs_f("imported_allocated").map(|b| b / 1e6),
        "",
    );
    println!(
        "imported/source allocated: {:.3} (target <= 1.1); digests equal: {digests_equal}",
        imported_alloc as f64 / source_alloc as f64
    );
    println!(
        "plain tar export: {plain_ms:.1} ms, {:.1} MB",
        plain_bytes as f64 / 1e6
    );
    if let Some(v) = &theirs {
        println!(
            "0.6.6 digests equal after its round trip: {}",
            v["digest_equal"]
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "export_ms": export_ms, "import_ms": import_ms, "archive_bytes": archive_bytes,
            "source_allocated": source_alloc, "imported_allocated": imported_alloc,
            "digests_equal": digests_equal, "plain_export_ms": plain_ms, "plain_bytes": plain_bytes,
            "v066": theirs,
        })
    );
    Ok(())
}
