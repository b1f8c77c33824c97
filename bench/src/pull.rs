//! Registry pull benchmark: a ~100 MB image (four plain-tar layers of random
//! data, made here as an OCI archive) pushed with skopeo into Debian's
//! `docker-registry` on 127.0.0.1; then, in the same run, interleaved:
//! `skopeo copy docker://… dir:…` of it (the baseline: download only), our
//! cold `Image::pull` into a fresh home (the download, and the whole pull
//! including the root-disk build), and a re-pull of the present image; then
//! `Snapshot::push` and `Snapshot::pull` of Case A (bench-verify's 4 GiB
//! sparse upper holding 8 MiB of random data), as an artifact of format v2
//! pinning a busybox image that both homes have loaded (so the pull times
//! the snapshot, and the push includes putting the ~1 MB image into the
//! fresh repository by digest).
//! Usage: `bench-pull [--runs N] [--layer-mib M]`.

#[path = "../../core/tests/common/registry.rs"]
#[allow(dead_code)]
mod registry;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use microsandbox::image::Image;
use microsandbox::image::busybox::{DEFAULT_BUSYBOX, build_busybox_archive};
use microsandbox::{CallOpts, Config, IntegrityAlgorithm, ProgressPhase, Snapshot};
use msb_bench::{case_a_artifact, flag, make_case_a, median, ms, settle};
use registry::{RegistryOpts, TestRegistry};
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| flag(&args, name);
    let runs: usize = flag("--runs").map_or(Ok(5), |v| v.parse())?;
    let layer_mib: usize = flag("--layer-mib").map_or(Ok(25), |v| v.parse())?;
    fs::create_dir_all("bench/data")?;
    let work = tempfile::tempdir_in("bench/data")?;
    let archive = work.path().join("big.tar");
    let image_bytes = write_random_image(&archive, 4, layer_mib << 20)?;
    let registry = TestRegistry::start(RegistryOpts::default());
    registry.push_archive(&archive, "big:1");
    let reference = format!("{}/big:1", registry.host());
    let rt = tokio::runtime::Runtime::new()?;
    let docker = work.path().join("docker");
    fs::create_dir_all(&docker)?;

    let (mut skopeo, mut download, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let dir = work.path().join(format!("skopeo-{i}"));
        settle();
        let t = Instant::now();
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dir.display()))
            .status()?;
        skopeo.push(t.elapsed());
        assert!(status.success(), "skopeo copy failed");
        fs::remove_dir_all(&dir)?;

        let home = work.path().join(format!("home-{i}"));
        let config = Config::new().home(&home).docker_config_dir(&docker);
        let downloaded: Arc<Mutex<Option<Duration>>> = Arc::default();
        let sink = downloaded.clone();
        settle();
        let t = Instant::now();
        let call = CallOpts {
            progress: Some(Arc::new(move |e| {
                if e.phase == ProgressPhase::Pull && e.done_bytes == e.total_bytes {
                    *sink.lock().unwrap() = Some(t.elapsed());
                }
            })),
            ..CallOpts::default()
        };
        rt.block_on(config.scope(Image::pull_with(&reference, call)))?;
        whole.push(t.elapsed());
        download.push(downloaded.lock().unwrap().expect("no pull progress"));
        if i + 1 < runs {
            fs::remove_dir_all(&home)?;
        }
    }
    let home = work.path().join(format!("home-{}", runs - 1));
    let config = Config::new().home(&home).docker_config_dir(&docker);
    let mut repull = Vec::new();
    for _ in 0..runs.max(5) {
        let t = Instant::now();
        rt.block_on(config.clone().scope(Image::pull(&reference)))?;
        repull.push(t.elapsed());
    }
    let (skopeo, download, whole, repull) = (
        median(skopeo),
        median(download),
        median(whole),
        median(repull),
    );
    let (push, pull) = snapshot_case_a(&rt, &registry, work.path(), &docker, runs)?;
    println!(
        "image: 4 plain-tar layers, {:.1} MB of blobs; median of {runs} runs, loopback registry",
        image_bytes as f64 / 1e6
    );
    println!("skopeo copy docker:// dir:      {:8.1} ms", ms(skopeo));
    println!(
        "msb pull, blobs downloaded:     {:8.1} ms  ({:.2}x skopeo)",
        ms(download),
        download.as_secs_f64() / skopeo.as_secs_f64()
    );
    println!(
        "msb pull, root disk built too:  {:8.1} ms  ({:.2}x skopeo)",
        ms(whole),
        whole.as_secs_f64() / skopeo.as_secs_f64()
    );
    println!("msb re-pull of a present image: {:8.1} ms", ms(repull));
    println!("Case A snapshot push:           {:8.1} ms", ms(push));
    println!("Case A snapshot pull (+import): {:8.1} ms", ms(pull));
    Ok(())
}

/// Median times of `Snapshot::push` of Case A (integrity recorded) to a
/// fresh repository each run (so no blob is there yet), and of
/// `Snapshot::pull` of it into a fresh home.
fn snapshot_case_a(
    rt: &tokio::runtime::Runtime,
    registry: &TestRegistry,
    work: &Path,
    docker: &Path,
    runs: usize,
) -> Res<(Duration, Duration)> {
    let case_a = make_case_a(Path::new("bench/data/case-a"))?;
    let home = work.join("snap-home");
    let snap = case_a_artifact(
        &case_a,
        &home.join("snapshots/case-a"),
        IntegrityAlgorithm::MerkleSha256V1,
    )?;
    // The image it pins, in the pushing home and in each pulling one.
    let busybox = work.join("busybox.tar");
    build_busybox_archive(Path::new(DEFAULT_BUSYBOX), "bench/busybox", &busybox)?;
    let load = |home: &Path| {
        let config = Config::new().home(home).docker_config_dir(docker);
        rt.block_on(config.scope(Image::load(&busybox, None)))
    };
    let image = load(&home)?;
    let snap = registry::repin(snap.path(), &image.reference, &image.manifest_digest);
    let key = snap.path().to_string_lossy().into_owned();
    let (mut pushes, mut pulls) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let reference = format!("{}/snaps/case-a-{i}:1", registry.host());
        let config = Config::new().home(&home).docker_config_dir(docker);
        settle();
        let t = Instant::now();
        rt.block_on(config.scope(Snapshot::push(key.clone(), reference.clone())))?;
        pushes.push(t.elapsed());
        let target = work.join(format!("snap-pulled-{i}"));
        load(&target)?;
        let config = Config::new().home(&target).docker_config_dir(docker);
        settle();
        let t = Instant::now();
        rt.block_on(config.scope(Snapshot::pull(reference, None)))?;
        pulls.push(t.elapsed());
        fs::remove_dir_all(&target)?;
    }
    Ok((median(pushes), median(pulls)))
}

/// An OCI layout tar with `layers` layers, each a tar holding one file of
/// `layer_bytes` random bytes; returns the total blob size.
fn write_random_image(out: &Path, layers: usize, layer_bytes: usize) -> Res<u64> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for n in 0..layers {
        let mut data = vec![0u8; layer_bytes];
        for chunk in data.chunks_mut(8) {
            // xorshift64*: incompressible enough, and fast.
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let word = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        layer.append_data(&mut header, format!("data/layer-{n}.bin"), data.as_slice())?;
        let layer = layer.into_inner()?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest, "size": layer.len() }));
        diff_ids.push(digest.clone());
        blobs.push((digest, layer));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest, "size": config.len() },
        "layers": layer_descs,
    })
    .to_string()
    .into_bytes();
    let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest, "size": manifest.len(),
                        "annotations": { "org.opencontainers.image.ref.name": "1" } }],
    })
    .to_string();
    let total = blobs.iter().map(|(_, b)| b.len() as u64).sum::<u64>() + config.len() as u64;
    blobs.push((config_digest, config));
    blobs.push((manifest_digest, manifest));
    let mut tar = tar::Builder::new(File::create(out)?);
    let mut add = |name: &str, data: &[u8]| -> Res<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", index.as_bytes())?;
    for (digest, data) in &blobs {
        add(&format!("blobs/sha256/{}", &digest[7..]), data)?;
    }
    tar.into_inner()?.flush()?;
    Ok(total)
}
