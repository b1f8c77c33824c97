//! Capture benchmark: `Snapshot::create` of a stopped sandbox whose upper is
//! Case A, beside `cp --sparse=always` of the same file, in one run (median
//! of N), with the allocated size of each copy against the source's.
//! Usage: `bench-capture [--runs N]`; needs MSB_KERNEL_DIR (for the one boot
//! that makes the sandbox).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{Config, Sandbox, Snapshot};
use msb_bench::{make_case_a, median, ms, settle};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(7), |v| v.parse())?;
    let case_a = make_case_a(Path::new("bench/data/case-a"))?;
    let work = tempfile::tempdir_in("bench/data")?;
    Config::set_default(Config::new().home(work.path()));
    let allocated = |p: &Path| -> Res<u64> { Ok(std::fs::metadata(p)?.blocks() * 512) };

    let rt = tokio::runtime::Runtime::new()?;
    let (capture, capture_alloc, capture_integrity, cp, cp_alloc, source_alloc) =
        rt.block_on(async {
            let archive = work.path().join("busybox.tar");
            build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "bench/busybox", &archive)?;
            Image::load(&archive, None).await?;
            let sb = Sandbox::builder("cap")
                .image("bench/busybox")
                .create()
                .await?;
            sb.stop().await?;
            let upper = Sandbox::get("cap").await?.upper_path();
            std::fs::remove_file(&upper)?;
            // The sandbox's upper becomes Case A itself (a hard link; capture
            // only reads it), as if the sandbox had written that disk.
            std::fs::hard_link(&case_a, &upper)?;
            let source_alloc = allocated(&upper)?;
            // Interleaved with cp, with `sync` (untimed) before each run, so both
            // start from the same page-cache state.
            let mut times = Vec::new();
            let mut cp_times = Vec::new();
            let (mut alloc, mut cp_alloc) = (0, 0);
            for i in 0..=runs {
                let dest = work.path().join(format!("snap-{i}"));
                settle();
                let t = Instant::now();
                let snap = Snapshot::builder("cap").path(&dest).create().await?;
                let took = t.elapsed();
                alloc = allocated(&snap.upper_path())?;
                Snapshot::remove(dest.to_string_lossy().into_owned(), true).await?;
                let cp_dest = work.path().join(format!("cp-{i}"));
                settle();
                let t = Instant::now();
                let status = Command::new("cp")
                    .arg("--sparse=always")
                    .arg(&upper)
                    .arg(&cp_dest)
                    .status()?;
                let cp_took = t.elapsed();
                if !status.success() {
                    return Err("cp failed".into());
                }
                cp_alloc = allocated(&cp_dest)?;
                std::fs::remove_file(&cp_dest)?;
                if i > 0 {
                    times.push(took);
                    cp_times.push(cp_took);
                }
            }
            let mut with_integrity = Vec::new();
            for i in 0..runs {
                let dest = work.path().join(format!("snap-i-{i}"));
                settle();
                let t = Instant::now();
                Snapshot::builder("cap")
                    .path(&dest)
                    .record_integrity()
                    .create()
                    .await?;
                with_integrity.push(t.elapsed());
                Snapshot::remove(dest.to_string_lossy().into_owned(), true).await?;
            }
            Sandbox::remove("cap").await?;
            Ok::<_, Box<dyn std::error::Error>>((
                median(times),
                alloc,
                median(with_integrity),
                median(cp_times),
                cp_alloc,
                source_alloc,
            ))
        })?;

    println!(
        "Case A capture (the stopped sandbox's upper is Case A), {runs} runs each (median); source allocated {:.1} MB",
        source_alloc as f64 / 1e6
    );
    println!(
        "  cp --sparse=always           {:>8.1} ms  copy allocated {:.1} MB ({:.3}x source)",
        ms(cp),
        cp_alloc as f64 / 1e6,
        cp_alloc as f64 / source_alloc as f64
    );
    println!(
        "  Snapshot::create             {:>8.1} ms  copy allocated {:.1} MB ({:.3}x source)  {:.2}x cp",
        ms(capture),
        capture_alloc as f64 / 1e6,
        capture_alloc as f64 / source_alloc as f64,
        capture.as_secs_f64() / cp.as_secs_f64()
    );
    println!(
        "  Snapshot::create + integrity {:>8.1} ms",
        ms(capture_integrity)
    );
    println!(
        "{}",
        serde_json::json!({"bench": "capture-case-a", "cp_ms": ms(cp), "capture_ms": ms(capture), "capture_integrity_ms": ms(capture_integrity),
            "source_allocated": source_alloc, "capture_allocated": capture_alloc, "cp_allocated": cp_alloc})
    );
    Ok(())
}
