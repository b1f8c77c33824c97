//! Full-VM snapshot benchmark (issue 19), every figure beside a cold boot
//! measured in the same run: save (capture of a running 256 MiB guest),
//! restore to first exec, 10 forks of one snapshot all answering an exec,
//! instant create to first exec, the RAM file's size for a 256 MiB and a
//! 1 GiB guest (it follows touched RAM), and the memory (PSS) each of 20
//! live forks adds. Usage: `bench-fullvm [--runs N] [--forks N]`; needs
//! MSB_KERNEL_DIR (set by `make bench-fullvm`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{Config, Sandbox, Snapshot};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const IMAGE: &str = "bench/busybox";

fn arg(args: &[String], name: &str, default: usize) -> Res<usize> {
    Ok(args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(default), |v| v.parse())?)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn first_exec(sb: &Sandbox) -> Res<()> {
    let out = sb.exec("true", Vec::<String>::new()).await?;
    if out.exit_code != 0 {
        return Err("exec failed".into());
    }
    Ok(())
}

/// Proportional set size of process `pid`, in KiB.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The QEMU pid of the sandbox `name`, from its pid file.
fn qemu_pid(home: &Path, name: &str) -> u32 {
    let dir = home.join("sandboxes").join(name);
    let vm = {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(dir.to_string_lossy().as_bytes());
        format!("msb-{}", &hex::encode(hash)[..16])
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::fs::read_to_string(format!("/tmp/msb-{uid}/{vm}/qemu.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = arg(&args, "--runs", 5)?;
    let live_forks = arg(&args, "--forks", 20)?;
    let work = tempfile::tempdir()?;
    let home = work.path().to_path_buf();
    let kernel_dir = PathBuf::from(
        std::env::var("MSB_KERNEL_DIR").map_err(|_| "set MSB_KERNEL_DIR (make does)")?,
    );
    Config::set_default(Config::new().home(&home).guest_assets_dir(&kernel_dir));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(&home, runs, live_forks))
}

async fn run(home: &Path, runs: usize, live_forks: usize) -> Res<()> {
    let archive = home.join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), IMAGE, &archive)?;
    Image::load(&archive, None).await?;

    // Baseline: cold boot to first exec.
    let mut cold = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let sb = Sandbox::builder(format!("cold{i}"))
            .image(IMAGE)
            .instant(false)
            .create()
            .await?;
        first_exec(&sb).await?;
        cold.push(t.elapsed());
        sb.handle().remove().await?;
    }
    let cold = median(cold);

    // Save: capture of a running 256 MiB guest (then resumed, untimed).
    let src = Sandbox::builder("src")
        .image(IMAGE)
        .instant(false)
        .create()
        .await?;
    first_exec(&src).await?;
    let mut saves = Vec::new();
    let mut snap = None;
    for _ in 0..runs {
        let t = Instant::now();
        let s = src.snapshot().await?;
        saves.push(t.elapsed());
        src.resume().await?;
        snap = Some(s);
    }
    let snap = snap.ok_or("no run")?;
    let save = median(saves);

    // Restore to first exec.
    let mut restores = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let sb = snap.restore(format!("r{i}")).await?;
        first_exec(&sb).await?;
        restores.push(t.elapsed());
        sb.handle().remove().await?;
    }
    let restore = median(restores);

    // 10 forks of one snapshot, all answering an exec (started together).
    let t = Instant::now();
    let forks = futures_join_all((0..10).map(|i| {
        let snap = snap.clone();
        async move {
            let sb = snap.restore(format!("ten{i}")).await?;
            let out = sb.exec("true", Vec::<String>::new()).await?;
            assert_eq!(out.exit_code, 0);
            Ok::<_, microsandbox::MicrosandboxError>(sb)
        }
    }))
    .await;
    let ten = t.elapsed();
    for sb in forks {
        sb?.handle().remove().await?;
    }

    // Instant create to first exec (the first create of the shape leaves the base).
    let first = Sandbox::builder("base-maker").image(IMAGE).create().await?;
    first.handle().remove().await?;
    let mut instants = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let sb = Sandbox::builder(format!("i{i}"))
            .image(IMAGE)
            .create()
            .await?;
        first_exec(&sb).await?;
        instants.push(t.elapsed());
        sb.handle().remove().await?;
    }
    let instant = median(instants);

    // RAM file size for a 256 MiB and a 1 GiB guest.
    let ram_alloc = |s: &Snapshot| -> u64 {
        let vm = s.vm().expect("full");
        std::fs::metadata(s.path().join(&vm.ram.file)).map_or(0, |m| m.blocks() * 512)
    };
    let small_ram = ram_alloc(&snap);
    let big = Sandbox::builder("big")
        .image(IMAGE)
        .memory_mib(1024)
        .instant(false)
        .create()
        .await?;
    first_exec(&big).await?;
    let big_snap = big.snapshot().await?;
    let big_ram = ram_alloc(&big_snap);
    big.handle().remove().await?;

    // PSS of live forks.
    let mut pss = Vec::new();
    let mut live = Vec::new();
    for i in 0..live_forks {
        let sb = snap.restore(format!("live{i}")).await?;
        first_exec(&sb).await?;
        live.push(sb);
    }
    for sb in &live {
        pss.push(pss_kib(qemu_pid(home, sb.name())));
    }
    for sb in live {
        sb.handle().remove().await?;
    }
    src.handle().remove().await?;

    let ratio = |d: Duration| d.as_secs_f64() / cold.as_secs_f64();
    println!(
        "full-VM snapshots, TCG, busybox guest, median of {runs} runs (cold boot in the same run)"
    );
    println!("  cold boot to first exec:          {}", ms(cold));
    println!(
        "  save (256 MiB guest):             {}  ({:.3}x cold boot; target <= 50 ms)",
        ms(save),
        ratio(save)
    );
    println!(
        "  restore to first exec:            {}  ({:.3}x cold boot; target <= 100 ms)",
        ms(restore),
        ratio(restore)
    );
    println!(
        "  10 forks, all answering an exec:  {}  ({:.3}x one cold boot; target <= 1 s)",
        ms(ten),
        ratio(ten)
    );
    println!(
        "  instant create to first exec:     {}  ({:.3}x cold boot; target <= 150 ms)",
        ms(instant),
        ratio(instant)
    );
    println!(
        "  RAM file on disk: 256 MiB guest {:.1} MiB, 1 GiB guest {:.1} MiB (follows touched RAM)",
        small_ram as f64 / 1048576.0,
        big_ram as f64 / 1048576.0
    );
    if let (Some(&first), true) = (pss.first(), pss.len() > 1) {
        let rest = &pss[1..];
        let avg = rest.iter().sum::<u64>() as f64 / rest.len() as f64;
        let max = rest.iter().max().copied().unwrap_or(0);
        println!(
            "  {} live forks, PSS per QEMU: first {:.1} MiB, others avg {:.1} MiB, max {:.1} MiB (goal <= 64 MiB per fork above the first)",
            pss.len(),
            first as f64 / 1024.0,
            avg / 1024.0,
            max as f64 / 1024.0
        );
    }
    Ok(())
}

/// Await every future of `futs` concurrently, results in order.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}
