//! Snapshot index benchmark at 1,000 and 10,000 artifacts (small sparse
//! uppers, manifests in the 0.6.6 format, made here), against the
//! microsandbox 0.6.6 release in the same run (its Python API in-process,
//! from a venv), plus the `msb` CLI as whole processes. Reports reindex,
//! list(), list_dir and get-by-name, and `msb snapshot ls` as a table and
//! as `--json`; ratios per artifact show whether cost is linear in N. Usage: `bench-index [--sizes 1000,10000] [--python VENV_PY]
//! [--work DIR]` (DIR keeps the generated homes for a closer look).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use microsandbox::Snapshot;
use microsandbox::snapshot::{ImageRef, Manifest, SnapshotFormat, UpperLayer};
use msb_bench::ms;
use serde_json::{Value, json};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const GET_SAMPLES: usize = 200;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| msb_bench::flag(&args, name);
    if let Some(n) = flag("--inproc") {
        return in_process(n.parse()?);
    }
    if args.iter().any(|a| a == "--inproc-first-list") {
        return first_list();
    }
    let sizes: Vec<usize> = flag("--sizes")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let python = flag("--python");
    let msb = std::env::current_exe()?.with_file_name("msb");
    let scratch = tempfile::tempdir()?;
    let work_dir = flag("--work").map(PathBuf::from);
    let work = work_dir.as_deref().unwrap_or(scratch.path());
    let mut report = Vec::new();
    for &n in &sizes {
        let ours = work.join(format!("{n}/ours"));
        let snapshots = ours.join("snapshots");
        let t = Instant::now();
        generate(&snapshots, n)?;
        eprintln!("generated {n} artifacts in {:?}", t.elapsed());
        // Let writeback of the new files finish before anything is timed.
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() };
        let inproc: Value = serde_json::from_slice(&run_json(
            Command::new(std::env::current_exe()?)
                .args(["--inproc", &n.to_string()])
                .env("MSB_HOME", &ours),
        )?)?;
        let cli = cli_times(&msb, &ours)?;
        let mut firsts = Vec::new();
        for _ in 0..15 {
            let out = run_json(
                Command::new(std::env::current_exe()?)
                    .arg("--inproc-first-list")
                    .env("MSB_HOME", &ours),
            )?;
            firsts.push(
                serde_json::from_slice::<Value>(&out)?["first_list_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        firsts.sort_by(f64::total_cmp);
        let mut inproc = inproc;
        inproc["first_list_ms"] = json!(firsts[firsts.len() / 2]);
        let theirs = match &python {
            Some(py) => {
                let home = work.join(format!("{n}/theirs"));
                fs::create_dir_all(&home)?;
                std::os::unix::fs::symlink(&snapshots, home.join("snapshots"))?;
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/index_066.py");
                let out = run_json(
                    Command::new(py)
                        .arg(script)
                        .arg(home.join("snapshots"))
                        .arg(GET_SAMPLES.to_string())
                        .env("MSB_HOME", &home),
                )?;
                serde_json::from_slice(&out)?
            }
            None => Value::Null,
        };
        report.push(json!({"n": n, "ours": inproc, "cli": cli, "v066": theirs}));
    }
    print_table(&report);
    println!("{}", json!({"bench": "index", "results": report}));
    Ok(())
}

/// `n` artifacts `snap-00000…` under `dir`: 0.6.6-format manifests, 1 MiB
/// sparse uppers with a few bytes each, creation times a second apart.
fn generate(dir: &Path, n: usize) -> Res<()> {
    fs::create_dir_all(dir)?;
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?;
    for i in 0..n {
        let art = dir.join(format!("snap-{i:05}"));
        fs::create_dir_all(&art)?;
        let upper = fs::File::create(art.join("upper.ext4"))?;
        upper.set_len(1 << 20)?;
        upper.write_all_at(
            format!("artifact {i}").as_bytes(),
            (i as u64 * 4096) % (1 << 20),
        )?;
        let manifest = Manifest {
            schema: 1,
            format: SnapshotFormat::Raw,
            fstype: "ext4".into(),
            image: ImageRef {
                reference: "docker.io/library/python:3.12".into(),
                manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            },
            parent: None,
            created_at: (base + chrono::Duration::seconds(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels: [("i".to_string(), i.to_string())].into_iter().collect(),
            upper: UpperLayer {
                file: "upper.ext4".into(),
                size_bytes: 1 << 20,
                integrity: None,
            },
            source_sandbox: Some("bench".into()),
        };
        fs::write(art.join("manifest.json"), manifest.canonical_bytes())?;
    }
    Ok(())
}

/// Our API in this process (MSB_HOME set by the parent): one JSON line.
fn in_process(n: usize) -> Res<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let t = Instant::now();
        let indexed = Snapshot::reindex_default().await?;
        let reindex = t.elapsed();
        let t = Instant::now();
        Snapshot::reindex_default().await?;
        let reindex_again = t.elapsed();
        let list = median(15, || async {
            Snapshot::list().await.map(|v| assert_eq!(v.len(), n))
        })
        .await?;
        let home = std::env::var("MSB_HOME")?;
        let dir = PathBuf::from(home).join("snapshots");
        let list_dir = median(3, || async {
            Snapshot::list_dir(dir.clone())
                .await
                .map(|v| assert_eq!(v.len(), n))
        })
        .await?;
        let mut gets = Vec::new();
        for k in 0..GET_SAMPLES {
            let name = format!("snap-{:05}", (k * 7919) % n);
            let t = Instant::now();
            Snapshot::get(name).await?;
            gets.push(t.elapsed());
        }
        gets.sort();
        println!(
            "{}",
            json!({
                "indexed": indexed,
                "reindex_ms": ms(reindex), "reindex_again_ms": ms(reindex_again),
                "list_ms": ms(list), "list_dir_ms": ms(list_dir),
                "get_ms": ms(gets[gets.len() / 2]), "get_ms_max": ms(gets[gets.len() - 1]),
            })
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// The first `list()` of a fresh process: the library work `msb snapshot ls`
/// does, with the same cold allocator and mapping (median over processes).
fn first_list() -> Res<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let t = Instant::now();
    let n = rt.block_on(Snapshot::list())?.len();
    println!("{}", json!({"first_list_ms": ms(t.elapsed()), "listed": n}));
    Ok(())
}

/// `msb snapshot reindex`, `msb snapshot ls` and `msb snapshot ls --json`,
/// whole processes, median of 15.
fn cli_times(msb: &Path, home: &Path) -> Res<Value> {
    let mut out = serde_json::Map::new();
    for (what, args) in [
        ("reindex_ms", vec!["snapshot", "reindex"]),
        ("ls_ms", vec!["snapshot", "ls"]),
        ("ls_json_ms", vec!["snapshot", "ls", "--json"]),
    ] {
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let status = Command::new(msb)
                .args(&args)
                .env("MSB_HOME", home)
                .stdout(Stdio::null())
                .status()?;
            times.push(t.elapsed());
            if !status.success() {
                return Err(format!("msb {args:?} failed").into());
            }
        }
        times.sort();
        out.insert(what.into(), json!(ms(times[times.len() / 2])));
    }
    Ok(Value::Object(out))
}

fn run_json(cmd: &mut Command) -> Res<Vec<u8>> {
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed").into());
    }
    Ok(out
        .stdout
        .split(|&b| b == b'\n')
        .rfind(|l| l.starts_with(b"{"))
        .unwrap_or_default()
        .to_vec())
}

async fn median<F, Fut>(runs: usize, mut f: F) -> Res<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = microsandbox::MicrosandboxResult<()>>,
{
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn print_table(report: &[Value]) {
    println!(
        "{:<8} {:<22} {:>12} {:>12} {:>10}",
        "N", "what", "ours (ms)", "0.6.6 (ms)", "0.6.6/ours"
    );
    for r in report {
        let n = &r["n"];
        for (label, key) in [
            ("reindex", "reindex_ms"),
            ("list()", "list_ms"),
            ("list_dir", "list_dir_ms"),
            ("get by name", "get_ms"),
        ] {
            let ours = r["ours"][key].as_f64().unwrap_or(f64::NAN);
            let theirs = r["v066"][key].as_f64().unwrap_or(f64::NAN);
            println!(
                "{n:<8} {label:<22} {ours:>12.2} {theirs:>12.2} {:>9.1}x",
                theirs / ours
            );
        }
        let first = r["ours"]["first_list_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{n:<8} {:<22} {first:>12.2} {:>12} (the first call of a fresh process)",
            "list() first call", "-"
        );
        for (label, key, inproc) in [
            ("CLI msb snapshot reindex", "reindex_ms", "reindex_again_ms"),
            ("CLI msb snapshot ls", "ls_ms", "first_list_ms"),
            ("CLI msb snapshot ls", "ls_ms", "list_ms"),
            ("CLI ls --json", "ls_json_ms", "list_ms"),
        ] {
            let cli = r["cli"][key].as_f64().unwrap_or(f64::NAN);
            let base = r["ours"][inproc].as_f64().unwrap_or(f64::NAN);
            println!(
                "{n:<8} {label:<22} {cli:>12.2} {:>12} {:>9.2}x of in-process {inproc}",
                "-",
                cli / base
            );
        }
        let table = r["cli"]["ls_ms"].as_f64().unwrap_or(f64::NAN);
        let json = r["cli"]["ls_json_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{n:<8} {:<22} {json:>12.2} {:>12} {:>9.2}x of the table ({table:.2} ms)",
            "CLI ls --json vs table",
            "-",
            json / table
        );
    }
}
