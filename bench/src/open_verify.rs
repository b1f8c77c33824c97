//! Open + verify of given artifact directories from Rust, for the SDK
//! benchmarks that run the same work beside it (`bench/python/bench.py`
//! alternates rounds of this and of its own calls, so both see the same
//! machine load). One untimed warm-up, then `--runs` timed rounds per
//! artifact. Usage: `bench-open-verify [--runs N] DIR…`; prints one JSON
//! line `{"results": [{"path", "times_ms": […]}]}`.

use std::time::Instant;

use microsandbox::{Snapshot, UpperVerifyStatus};
use msb_bench::{flag, ms};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = flag(&args, "--runs").map_or(Ok(1), |v| v.parse())?;
    let dirs: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--runs"))
        .map(|(_, a)| a)
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    let open_and_verify = |dir: &str| rt.block_on(open_and_verify(dir));
    let mut results = Vec::new();
    for dir in dirs {
        open_and_verify(dir)?;
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            open_and_verify(dir)?;
            times.push(ms(started.elapsed()));
        }
        results.push(json!({"path": dir, "times_ms": times}));
    }
    println!("{}", json!({ "results": results }));
    Ok(())
}

async fn open_and_verify(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let snap = Snapshot::open(dir).await?;
    match snap.verify().await?.upper {
        UpperVerifyStatus::Verified { .. } => Ok(()),
        UpperVerifyStatus::NotRecorded => Err("integrity not recorded".into()),
    }
}
