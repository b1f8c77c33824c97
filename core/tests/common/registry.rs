//! A real registry for the suites: Debian's `docker-registry` (distribution
//! 2.8) on `127.0.0.1:<free port>` with its own storage directory, with
//! optional htpasswd (bcrypt) auth and optional TLS (a certificate
//! from a throwaway CA, made with `openssl`), stopped on drop; `skopeo` as the
//! independent client that pushes images into it; and a tiny TCP proxy that
//! spoils one blob's responses (corrupts or cuts them) to test what a pull
//! does with a hostile registry. Nothing here talks to anything but
//! 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the registry demands.
#[derive(Default, Clone)]
pub struct RegistryOpts {
    /// Basic auth with this user and password (htpasswd, bcrypt).
    pub auth: Option<(String, String)>,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1.
    pub tls: bool,
}

/// A running `docker-registry`, killed on drop.
pub struct TestRegistry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub opts: RegistryOpts,
}

/// Whether the registry tools are installed (`scripts/setup-registry.sh`).
pub fn tools_present() -> bool {
    [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/htpasswd",
    ]
    .iter()
    .all(|p| Path::new(p).exists())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the registry never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl TestRegistry {
    pub fn start(opts: RegistryOpts) -> Self {
        assert!(
            tools_present(),
            "docker-registry, skopeo or htpasswd is missing: run scripts/setup-registry.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if opts.tls {
            // A CA, and a server certificate it signs (webpki refuses a CA
            // certificate used as the server's own).
            let path = |name: &str| dir.path().join(name);
            let (ca, ca_key) = (path("ca.pem"), path("ca-key.pem"));
            let (cert, key, csr) = (path("cert.pem"), path("key.pem"), path("cert.csr"));
            run(Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=msb test CA", "-keyout"])
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca)
                .stderr(Stdio::null()));
            run(Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr)
                .stderr(Stdio::null()));
            let ext = path("san.ext");
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()));
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, pass)) = &opts.auth {
            let htpasswd = dir.path().join("htpasswd");
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            std::fs::write(&htpasswd, line).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: msb-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port);
        Self {
            child,
            dir,
            port,
            opts,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (to trust), with TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Push an OCI archive with skopeo as `<host>/<name>`.
    pub fn push_archive(&self, archive: &Path, name: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, pass)) = &self.opts.auth {
            cmd.arg(format!("--dest-creds={user}:{pass}"));
        }
        cmd.arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.host()));
        run(&mut cmd);
    }

    /// The registry's log so far (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blob GETs the registry has answered.
    pub fn blob_gets(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// Blob files in the registry's storage (one per stored blob, manifests
    /// included): `docker/registry/v2/blobs/sha256/*/*/data`.
    pub fn stored_blobs(&self) -> usize {
        let root = self
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256");
        let mut n = 0;
        for prefix in std::fs::read_dir(root).into_iter().flatten().flatten() {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                n += usize::from(blob.path().join("data").is_file());
            }
        }
        n
    }

    /// How many blob uploads the registry has started (`POST …/blobs/uploads/`).
    pub fn uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }

    /// `skopeo inspect --raw` of `reference`: the manifest's bytes, and
    /// their digest.
    pub fn skopeo_raw(&self, reference: &str) -> (serde_json::Value, String) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some((user, pass)) = &self.opts.auth {
            cmd.arg(format!("--creds={user}:{pass}"));
        }
        let raw = run(cmd.arg(format!("docker://{reference}")));
        let digest = microsandbox::digest::sha256_digest_string(raw.as_bytes());
        (serde_json::from_str(&raw).unwrap(), digest)
    }

    /// A request with curl (for what skopeo cannot do, e.g. an oversized
    /// manifest); returns stdout.
    pub fn curl(&self, args: &[&str]) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        let mut cmd = Command::new("curl");
        cmd.args(["-sSf", "-k"]);
        if let Some((user, pass)) = &self.opts.auth {
            cmd.arg("-u").arg(format!("{user}:{pass}"));
        }
        for arg in args {
            cmd.arg(arg.replace("{base}", &format!("{scheme}://{}", self.host())));
        }
        run(&mut cmd)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does to the responses for one blob.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    /// Flip one byte of the body (same length).
    Corrupt,
    /// Send half the body, then close the connection.
    Cut,
    /// Pad the body with 5 MiB of trailing spaces (still the same JSON),
    /// dropping the digest header.
    Oversize,
    /// Send the body with no `Content-Length` (delimited by the close),
    /// followed by spaces without end until the client stops reading: a
    /// client that reads a whole manifest before checking its size never
    /// returns.
    Endless,
}

/// A TCP proxy on 127.0.0.1 in front of a plain-HTTP registry: one request
/// per connection (it forces `Connection: close`), the responses for
/// requests whose path contains `target` spoiled. Runs until the process
/// ends (its thread only accepts on its own port).
pub struct SpoilingProxy {
    pub port: u16,
    /// How many requests for the target it has spoiled.
    pub spoiled: Arc<AtomicUsize>,
}

impl SpoilingProxy {
    pub fn start(upstream_port: u16, target: String, spoil: Spoil) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spoiled = Arc::new(AtomicUsize::new(0));
        let counter = spoiled.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (target, counter) = (target.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(client, upstream_port, &target, spoil, &counter);
                });
            }
        });
        Self { port, spoiled }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve_one(
    mut client: TcpStream,
    upstream_port: u16,
    target: &str,
    spoil: Spoil,
    spoiled: &AtomicUsize,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && first[0] == 0x16 {
        // A TLS handshake (a client trying HTTPS first): refuse it, as a
        // plain-HTTP server's garbled answer would.
        return client.shutdown(Shutdown::Both);
    }
    let (head, body_start) = read_head(&mut client)?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    upstream.write_all(&body_start)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let is_target = path.contains(target) && head.starts_with("GET ");
    if is_target && let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        let body = end + 4;
        if response.len() > body {
            spoiled.fetch_add(1, Ordering::SeqCst);
            match spoil {
                Spoil::Oversize => {
                    let head = String::from_utf8_lossy(&response[..end]).into_owned();
                    let mut body = response[body..].to_vec();
                    body.resize(body.len() + (5 << 20), b' ');
                    let mut lines: Vec<String> = head
                        .split("\r\n")
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            !l.starts_with("content-length:")
                                && !l.starts_with("docker-content-digest:")
                        })
                        .map(str::to_string)
                        .collect();
                    lines.push(format!("Content-Length: {}", body.len()));
                    response = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
                    response.extend_from_slice(&body);
                }
                Spoil::Endless => {
                    let head = String::from_utf8_lossy(&response[..end]).into_owned();
                    let lines: Vec<&str> = head
                        .split("\r\n")
                        .filter(|l| {
                            let l = l.to_ascii_lowercase();
                            !l.starts_with("content-length:")
                                && !l.starts_with("docker-content-digest:")
                        })
                        .collect();
                    client.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
                    client.write_all(&response[body..])?;
                    let spaces = [b' '; 64 << 10];
                    // Until the client hangs up (a write fails), or 1 GiB.
                    for _ in 0..(1 << 14) {
                        client.write_all(&spaces)?;
                    }
                    return client.shutdown(Shutdown::Both);
                }
                Spoil::Corrupt => {
                    let last = response.len() - 1;
                    response[last] ^= 0xff;
                }
                Spoil::Cut => {
                    let half = body + (response.len() - body) / 2;
                    client.write_all(&response[..half])?;
                    return client.shutdown(Shutdown::Both);
                }
            }
        }
    }
    client.write_all(&response)?;
    client.shutdown(Shutdown::Both)
}

/// Rewrite the manifest of the artifact in `dir` to pin the image
/// `reference` @ `digest` (one of the home's), and open it: an artifact
/// made without a VM that a push can carry with its image.
pub fn repin(dir: &Path, reference: &str, digest: &str) -> microsandbox::Snapshot {
    use microsandbox::snapshot::manifest::{ImageRef, Manifest};
    let path = dir.join("manifest.json");
    let mut manifest = Manifest::parse(&std::fs::read(&path).unwrap(), &path).unwrap();
    manifest.image = ImageRef {
        reference: reference.into(),
        manifest_digest: digest.into(),
    };
    std::fs::write(&path, manifest.canonical_bytes()).unwrap();
    microsandbox::Snapshot::open_dir(dir).unwrap()
}
