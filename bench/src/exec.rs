//! `bench-exec`: guest → host output throughput of `msb exec` under TCG
//! (issue 23: ≥ 57 MB/s, 10× the 5.7 MB/s of protocol version 1), with the
//! max RSS of the `msb exec` process, beside in the same run:
//!
//! The bytes come from `dd if=/dev/zero bs=128k` (the producer is not the
//! limit), and, for the issue's own example, from busybox `head -c`, which
//! under TCG writes in small pieces and is itself the limit: the run also
//! times `head -c … > /dev/null` inside the guest (the producer's ceiling).
//!
//! - **raw**: the transport's ceiling. A QEMU with the same machine, kernel,
//!   initramfs and disks plus a second virtio-serial port (`msb.raw`, its own
//!   socket); the guest `dd`s the bytes straight into that port in 32 KiB
//!   writes (the driver's per-write limit) and the bench reads the socket.
//! - **old** (with `--old-msb PATH --old-kernel-dir DIR`): `msb exec` of the
//!   base commit with its own guest (JSON + base64 frames).
//!
//! Usage: `bench-exec --msb target/release/msb [--bytes N] [--old-msb P --old-kernel-dir D]`
//! with `MSB_KERNEL_DIR` set (make bench does).

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{AccelMode, Config, Sandbox};
use microsandbox_guest::protocol::{self, GuestMessage, HostMessage};
use msb_bench::{RawVm, flag};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One measurement: seconds, bytes, max RSS of the process in KiB.
struct Run {
    secs: f64,
    bytes: u64,
    max_rss_kib: Option<i64>,
}

impl Run {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs
    }
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let bytes: u64 = flag(&args, "--bytes").map_or(Ok(200_000_000), |v| v.parse())?;
    let msb = flag(&args, "--msb").map_or_else(
        || {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("msb")))
                .unwrap_or_else(|| PathBuf::from("msb"))
        },
        PathBuf::from,
    );
    let kernel_dir = PathBuf::from(
        std::env::var("MSB_KERNEL_DIR").map_err(|_| "set MSB_KERNEL_DIR (make bench does)")?,
    );
    let work = tempfile::tempdir()?;
    let home = work.path().join("new");

    // New: the SDK boots the sandbox; the `msb` binary runs the exec.
    Config::set_default(
        Config::new()
            .home(&home)
            .guest_assets_dir(&kernel_dir)
            .accel(AccelMode::Tcg),
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let archive = work.path().join("busybox.tar");
        build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "bench/busybox", &archive)?;
        Image::load(&archive, None).await?;
        Sandbox::builder("bench")
            .image("bench/busybox")
            .create()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let blocks = bytes / 131_072;
    let dd_bytes = blocks * 131_072;
    let dd = format!("dd if=/dev/zero bs=131072 count={blocks} 2>/dev/null");
    let head = format!("head -c {bytes} /dev/zero");
    let new = msb_exec(&msb, &home, &kernel_dir, "bench", &dd, dd_bytes)?;
    let new_head = msb_exec(&msb, &home, &kernel_dir, "bench", &head, bytes)?;
    let producer = msb_exec(
        &msb,
        &home,
        &kernel_dir,
        "bench",
        &format!("{head} > /dev/null"),
        bytes,
    )?;
    let (lower, upper) = rt.block_on(async {
        let sb = Sandbox::get("bench").await?;
        sb.stop().await?;
        let h = Sandbox::get("bench").await?;
        Ok::<_, Box<dyn std::error::Error>>((h.config().lower_path.clone(), h.upper_path()))
    })?;

    // Raw: the same VM with a second port, written by dd.
    let (kernel, initramfs) = msb_bench::raw_assets(&home, &kernel_dir)?;
    let raw = raw_port(work.path(), &kernel, &initramfs, &lower, &upper, bytes)?;
    rt.block_on(Sandbox::remove("bench"))?;

    // Old: the base commit's msb with its own guest.
    let old = match (flag(&args, "--old-msb"), flag(&args, "--old-kernel-dir")) {
        (Some(old_msb), Some(old_kernel)) => Some(old_msb_exec(
            Path::new(&old_msb),
            &work.path().join("old"),
            Path::new(&old_kernel),
            &[(dd.as_str(), dd_bytes), (head.as_str(), bytes)],
        )?),
        _ => None,
    };

    println!("bench-exec: {bytes} bytes guest → host under TCG");
    let line = |name: &str, r: &Run| {
        println!(
            "  {name:<22} {:>8.1} MB/s  {:>6.2} s  max RSS {}",
            r.mb_s(),
            r.secs,
            r.max_rss_kib
                .map_or("-".to_string(), |k| format!("{:.1} MB", k as f64 / 1024.0))
        );
    };
    if let Some(old) = &old {
        line("old msb exec, dd", &old[0]);
    }
    line("new msb exec, dd", &new);
    line("raw virtio-serial, dd", &raw);
    if let Some(old) = &old {
        line("old msb exec, head -c", &old[1]);
    }
    line("new msb exec, head -c", &new_head);
    line("guest head -c >/dev/null", &producer);
    println!(
        "{}",
        serde_json::json!({
            "bench": "exec", "bytes": bytes,
            "new_mb_s": new.mb_s(), "new_max_rss_kib": new.max_rss_kib,
            "old_mb_s": old.as_ref().map(|o| o[0].mb_s()), "old_max_rss_kib": old.as_ref().and_then(|o| o[0].max_rss_kib),
            "raw_mb_s": raw.mb_s(),
            "new_head_mb_s": new_head.mb_s(), "old_head_mb_s": old.as_ref().map(|o| o[1].mb_s()),
            "guest_head_only_mb_s": producer.mb_s(),
        })
    );
    Ok(())
}

/// `msb exec NAME -- sh -c SCRIPT` with stdout to /dev/null, timed as a
/// whole process (exec start to exit); requires exit status 0.
fn msb_exec(
    msb: &Path,
    home: &Path,
    kernel_dir: &Path,
    name: &str,
    script: &str,
    bytes: u64,
) -> Res<Run> {
    let mut cmd = Command::new(msb);
    cmd.env("MSB_HOME", home)
        .env("MSB_KERNEL_DIR", kernel_dir)
        .env("MSB_ACCEL", "tcg")
        .args(["exec", name, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let started = Instant::now();
    let child = cmd.spawn()?;
    let (status, rss) = wait_rusage(child.id())?;
    let secs = started.elapsed().as_secs_f64();
    if status != 0 {
        return Err(format!("{} exec failed: wait status {status}", msb.display()).into());
    }
    Ok(Run {
        secs,
        bytes,
        max_rss_kib: Some(rss),
    })
}

fn old_msb_exec(
    msb: &Path,
    home: &Path,
    kernel_dir: &Path,
    scripts: &[(&str, u64)],
) -> Res<Vec<Run>> {
    let run = |args: &[&str]| -> Res<()> {
        let st = Command::new(msb)
            .env("MSB_HOME", home)
            .env("MSB_KERNEL_DIR", kernel_dir)
            .env("MSB_ACCEL", "tcg")
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            return Err(format!("old msb {args:?} failed").into());
        }
        Ok(())
    };
    run(&["image", "busybox", "--tag", "bench/busybox"])?;
    run(&["create", "old", "--image", "bench/busybox"])?;
    let runs: Res<Vec<Run>> = scripts
        .iter()
        .map(|(script, bytes)| msb_exec(msb, home, kernel_dir, "old", script, *bytes))
        .collect();
    run(&["rm", "old"])?;
    runs
}

/// Waits for `pid`; returns its raw wait status and max RSS (KiB).
fn wait_rusage(pid: u32) -> Res<(i32, i64)> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes into the two valid, writable locals passed.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok((status, usage.ru_maxrss))
}

/// Boots the raw VM, has the guest `dd` `bytes` into the `msb.raw` port,
/// and times reading them from its socket.
fn raw_port(
    work: &Path,
    kernel: &Path,
    initramfs: &Path,
    lower: &Path,
    upper: &Path,
    bytes: u64,
) -> Res<Run> {
    let dir = work.join("raw");
    std::fs::create_dir_all(&dir)?;
    let agent = dir.join("agent.sock");
    let raw = dir.join("raw.sock");
    let mut child = RawVm {
        dir: &dir,
        kernel,
        initramfs,
        lower,
        upper,
        agent_sock: &agent,
        ports: &[("msb.raw", &raw)],
    }
    .command()
    .spawn()?;
    let result = drive_raw(&agent, &raw, bytes);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn connect(sock: &Path) -> Res<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match UnixStream::connect(sock) {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.into()),
        }
    }
}

fn drive_raw(agent: &Path, raw: &Path, bytes: u64) -> Res<Run> {
    let stream = connect(agent)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            return Err("raw VM did not answer".into());
        }
        protocol::write_message(&mut writer, &HostMessage::Hello)?;
        if let Ok(Some(GuestMessage::Ready { .. })) =
            protocol::read_message::<_, GuestMessage>(&mut reader)
        {
            break;
        }
    }
    let mut port = connect(raw)?;
    let blocks = bytes / 32768;
    let script = format!(
        "for p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name)\" = msb.raw ] && \
         exec dd if=/dev/zero of=/dev/${{p##*/}} bs=32768 count={blocks} 2>/dev/null; done; exit 9"
    );
    let exec = HostMessage::Exec {
        id: 1,
        argv: vec!["sh".into(), "-c".into(), script],
        env: BTreeMap::new(),
        cwd: None,
        stdin: false,
        timeout_ms: None,
        window: None,
    };
    let want = blocks * 32768;
    let started = Instant::now();
    protocol::write_message(&mut writer, &exec)?;
    port.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < want {
        let n = port.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    if got < want {
        return Err(format!("raw port delivered {got} of {want} bytes").into());
    }
    Ok(Run {
        secs,
        bytes: got,
        max_rss_kib: None,
    })
}
