//! Networking benchmark (issue 21): boot to first exec of a busybox sandbox
//! with a network card (policy `public`, its own `msb-netd`) beside one
//! without (`none`), alternating, medians and the ratio (target ≤ 1.1×);
//! and a 100 MB download inside the guest (busybox `wget -O /dev/null` from
//! the gateway, allow-listed `127.0.0.1`; once before through `wc -c`, to
//! check every byte arrives) from a `python3 -m http.server` on the host's
//! loopback, in MB/s beside `curl` on the host of the same file in the same
//! run. Usage: `bench-net [--runs N] [--downloads N]`; needs MSB_KERNEL_DIR
//! (set by `make bench-net`). Traffic stays on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{Config, Sandbox};
use msb_bench::{flag, median, ms};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const IMAGE: &str = "bench/busybox";
/// The file the guest and curl download: 100 MB (10^8 bytes).
const DOWNLOAD_BYTES: u64 = 100_000_000;
/// Where the guest reaches the host's loopback (`docs/network.md`).
const GATEWAY: &str = "10.0.2.2";

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = flag(&args, "--runs").map_or(Ok(7), |v| v.parse())?;
    let downloads: usize = flag(&args, "--downloads").map_or(Ok(3), |v| v.parse())?;
    if runs < 1 || downloads < 1 {
        return Err("--runs and --downloads must be at least 1".into());
    }
    let work = tempfile::tempdir()?;
    let kernel_dir = PathBuf::from(
        std::env::var("MSB_KERNEL_DIR").map_err(|_| "set MSB_KERNEL_DIR (make bench-net does)")?,
    );
    Config::set_default(
        Config::new()
            .home(work.path().join("home"))
            .guest_assets_dir(&kernel_dir)
            .implicit_pull(false),
    );
    let files = work.path().join("www");
    std::fs::create_dir_all(&files)?;
    std::fs::File::create(files.join("100mb.bin"))?.set_len(DOWNLOAD_BYTES)?;
    let server = HttpServer::start(&files)?;
    let url_path = "/100mb.bin";

    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        let archive = work.path().join("busybox.tar");
        build_busybox_archive(Path::new(DEFAULT_BUSYBOX), IMAGE, &archive)?;
        Image::load(&archive, None).await?;
        boots(runs).await?;
        download(&server, url_path, downloads).await
    });
    for name in ["net-on", "net-off", "net-dl"] {
        let _ = rt.block_on(Sandbox::remove(name));
    }
    result
}

/// Boot to first exec, `public` and `none` alternating.
async fn boots(runs: usize) -> Res<()> {
    for (name, policy) in [("net-on", "public"), ("net-off", "none")] {
        Sandbox::builder(name)
            .image(IMAGE)
            .network(policy)
            .create()
            .await?
            .stop()
            .await?;
    }
    let (mut on, mut off) = (Vec::new(), Vec::new());
    // One untimed boot each first: the page cache and the host's lazily
    // loaded pieces then serve both sides alike.
    for round in 0..=runs {
        for (name, times) in [("net-on", &mut on), ("net-off", &mut off)] {
            let handle = Sandbox::get(name).await?;
            let started = Instant::now();
            let sb = handle.start().await?;
            let out = sb.exec("true", Vec::<String>::new()).await?;
            let took = started.elapsed();
            if out.exit_code != 0 {
                return Err(format!("{name}: first exec failed: {out:?}").into());
            }
            sb.stop().await?;
            if round > 0 {
                times.push(took);
            }
        }
    }
    let (on_median, off_median) = (median(on.clone()), median(off.clone()));
    println!("boot to first exec, TCG, {runs} boots each, alternating (median):");
    println!(
        "  network public (eth0 + msb-netd)  {:8.1} ms  {}",
        ms(on_median),
        spread(&on)
    );
    println!(
        "  network none   (no card)          {:8.1} ms  {}",
        ms(off_median),
        spread(&off)
    );
    let ratio = on_median.as_secs_f64() / off_median.as_secs_f64();
    println!("  ratio public / none               {ratio:8.3}x  (target <= 1.1x)");
    println!(
        "{}",
        serde_json::json!({"bench": "net-boot", "runs": runs, "public_median_ms": ms(on_median), "none_median_ms": ms(off_median), "ratio": ratio})
    );
    Ok(())
}

/// The 100 MB download: in the guest through `msb-netd`, and with curl on
/// the host, alternating.
async fn download(server: &HttpServer, path: &str, downloads: usize) -> Res<()> {
    let sb = Sandbox::builder("net-dl")
        .image(IMAGE)
        .network("public")
        .allow("127.0.0.1")
        .create()
        .await?;
    let guest_url = format!("http://{GATEWAY}:{}{path}", server.port);
    let host_url = format!("http://127.0.0.1:{}{path}", server.port);
    // Once, untimed for the table: every byte arrives (counted in the guest).
    let started = Instant::now();
    let out = sb
        .exec("sh", ["-c", &format!("wget -q -O - {guest_url} | wc -c")])
        .await?;
    let counted = started.elapsed();
    let got: u64 = out.stdout_text().trim().parse().unwrap_or(0);
    if out.exit_code != 0 || got != DOWNLOAD_BYTES {
        return Err(format!("guest download got {got} bytes: {out:?}").into());
    }
    let (mut guest, mut host) = (Vec::new(), Vec::new());
    for _ in 0..downloads {
        let started = Instant::now();
        let out = sb
            .exec("wget", ["-q", "-O", "/dev/null", &guest_url])
            .await?;
        let took = started.elapsed();
        if out.exit_code != 0 {
            return Err(format!("guest download failed: {out:?}").into());
        }
        guest.push(took);

        let started = Instant::now();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                &host_url,
            ])
            .output()
            .map_err(|e| format!("curl is needed (scripts/setup-registry.sh installs it): {e}"))?;
        let took = started.elapsed();
        let got: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if !out.status.success() || got != DOWNLOAD_BYTES {
            return Err(format!("curl got {got} bytes: {out:?}").into());
        }
        host.push(took);
    }
    sb.stop().await?;
    let rate = |d: Duration| DOWNLOAD_BYTES as f64 / 1e6 / d.as_secs_f64();
    let (guest_median, host_median) = (median(guest.clone()), median(host.clone()));
    println!(
        "100 MB over HTTP from a python3 http.server on 127.0.0.1, {downloads} downloads each, alternating (median):"
    );
    println!(
        "  guest busybox wget (via msb-netd)  {:8.1} MB/s  ({:.0} ms, exec included)",
        rate(guest_median),
        ms(guest_median)
    );
    println!(
        "  host curl                          {:8.1} MB/s  ({:.0} ms)",
        rate(host_median),
        ms(host_median)
    );
    println!(
        "  guest wget | wc -c (bytes checked) {:8.1} MB/s  (once; the pipe costs guest CPU under TCG)",
        rate(counted)
    );
    println!(
        "{}",
        serde_json::json!({"bench": "net-download", "bytes": DOWNLOAD_BYTES, "downloads": downloads, "guest_mb_s": rate(guest_median), "host_curl_mb_s": rate(host_median), "guest_counted_mb_s": rate(counted)})
    );
    Ok(())
}

/// Min and max of `times`, in ms.
fn spread(times: &[Duration]) -> String {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!("(min {:.1}, max {:.1})", ms(min), ms(max))
}

/// `python3 -m http.server` serving a directory on 127.0.0.1 (a port the
/// kernel picks); stopped when dropped.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> Res<Self> {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("python3 is needed for the HTTP server: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok());
        match port {
            Some(port) => Ok(Self { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("http.server did not report its port: {line:?}").into())
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
