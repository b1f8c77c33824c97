//! Boot benchmark: N consecutive TCG boots of a stopped busybox sandbox
//! through the SDK (`SandboxHandle::start` + first `exec`), beside the
//! baseline, a raw `qemu-system-x86_64` boot of the same kernel, initramfs
//! and disks driven by a minimal client (spawn, connect, hello, exec). Counts
//! hangs (boots that failed or needed the watchdog's retry) and prints
//! medians and the ratio. Usage: `bench-boot [--boots N]`; needs
//! MSB_KERNEL_DIR (set by `make bench`).

use std::collections::BTreeMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{Config, Sandbox, SandboxState};
use microsandbox_guest::protocol::{self, GuestMessage, HostMessage};
use msb_bench::RawVm;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let boots: usize = args
        .iter()
        .position(|a| a == "--boots")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(50), |v| v.parse())?;
    let work = tempfile::tempdir()?;
    let kernel_dir = PathBuf::from(
        std::env::var("MSB_KERNEL_DIR").map_err(|_| "set MSB_KERNEL_DIR (make bench does)")?,
    );
    Config::set_default(
        Config::new()
            .home(work.path())
            .guest_assets_dir(&kernel_dir),
    );

    let rt = tokio::runtime::Runtime::new()?;
    let (sdk, failures, upper, lower) = rt.block_on(async {
        let archive = work.path().join("busybox.tar");
        build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "bench/busybox", &archive)?;
        Image::load(&archive, None).await?;
        let sb = Sandbox::builder("bench")
            .image("bench/busybox")
            .create()
            .await?;
        sb.stop().await?;
        let handle = Sandbox::get("bench").await?;
        let mut times = Vec::new();
        let mut failures = 0;
        for _ in 0..boots {
            let t = Instant::now();
            match handle.start().await {
                Ok(sb) => {
                    let out = sb.exec("true", Vec::<String>::new()).await?;
                    let took = t.elapsed();
                    if out.exit_code != 0 {
                        failures += 1;
                    }
                    times.push(took);
                    sb.stop().await?;
                }
                Err(e) => {
                    eprintln!("boot failed: {e}");
                    failures += 1;
                }
            }
        }
        assert_eq!(handle.status().await?, SandboxState::Stopped);
        let lower = handle.config().lower_path.clone();
        Ok::<_, Box<dyn std::error::Error>>((times, failures, handle.upper_path(), lower))
    })?;
    let (kernel, initramfs) = msb_bench::raw_assets(work.path(), &kernel_dir)?;

    let mut raw = Vec::new();
    let mut raw_failures = 0;
    for i in 0..boots {
        match raw_boot(work.path(), i, &kernel, &initramfs, &lower, &upper) {
            Ok(t) => raw.push(t),
            Err(e) => {
                eprintln!("raw boot failed: {e}");
                raw_failures += 1;
            }
        }
    }
    rt.block_on(Sandbox::remove("bench"))?;

    let (sdk_median, raw_median) = (median(&sdk), median(&raw));
    println!("{boots} boots each, TCG, boot-to-first-exec (median / min / max):");
    println!(
        "  msb start + exec   {} | failures or hangs: {failures}",
        summary(&sdk)
    );
    println!(
        "  raw qemu + exec    {} | failures or hangs: {raw_failures}",
        summary(&raw)
    );
    println!(
        "  ratio (median)     {:.3}x",
        sdk_median.as_secs_f64() / raw_median.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({"bench": "boot", "boots": boots, "sdk_median_ms": ms(sdk_median), "raw_median_ms": ms(raw_median), "sdk_failures": failures, "raw_failures": raw_failures})
    );
    Ok(())
}

/// One raw boot: QEMU in the foreground with the same machine, kernel,
/// initramfs and disks; time from spawn to the first exec's exit.
fn raw_boot(
    work: &Path,
    i: usize,
    kernel: &Path,
    initramfs: &Path,
    lower: &Path,
    upper: &Path,
) -> Res<Duration> {
    let dir = work.join(format!("raw-{i}"));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("agent.sock");
    let started = Instant::now();
    let mut child: Child = RawVm {
        dir: &dir,
        kernel,
        initramfs,
        lower,
        upper,
        agent_sock: &sock,
        ports: &[],
    }
    .command()
    .spawn()?;
    let result = drive_raw(&sock, started);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn drive_raw(sock: &Path, started: Instant) -> Res<Duration> {
    let deadline = started + Duration::from_secs(30);
    let stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.into()),
        }
    };
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    loop {
        if Instant::now() > deadline {
            return Err("raw boot hung".into());
        }
        protocol::write_message(&mut writer, &HostMessage::Hello)?;
        match protocol::read_message::<_, GuestMessage>(&mut reader) {
            Ok(Some(GuestMessage::Ready { .. })) => break,
            Ok(_) | Err(_) => continue,
        }
    }
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))?;
    let exec = HostMessage::Exec {
        id: 1,
        argv: vec!["true".into()],
        env: BTreeMap::new(),
        cwd: None,
        stdin: false,
        timeout_ms: None,
        window: None,
    };
    protocol::write_message(&mut writer, &exec)?;
    loop {
        if let Some(GuestMessage::Exit { id: 1, .. }) =
            protocol::read_message::<_, GuestMessage>(&mut reader)?
        {
            return Ok(started.elapsed());
        }
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(times: &[Duration]) -> String {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!(
        "{:>7.0} / {:>5.0} / {:>5.0} ms",
        ms(median(times)),
        ms(min),
        ms(max)
    )
}
