//! Sandbox entry points: create (from an image or a snapshot), get, list,
//! remove, and a handle's exec, stop, start, status, snapshot (disk and
//! full-VM) and resume calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use microsandbox::{ExecOptions, ExecOutput, MicrosandboxResult, Sandbox, SandboxHandle};
use napi::Env;
use napi::bindgen_prelude::{BigInt, Buffer, PromiseRaw};
use napi_derive::napi;

use crate::call::{CancelToken, NativeConfig, spawn, to_u64};
use crate::exec::NativeExecStream;
use crate::snapshot::NativeSnapshot;

/// What `Sandbox.builder(name)…create()` collected.
#[napi(object)]
pub struct NativeSandboxSpec {
    /// Sandbox name.
    pub name: String,
    /// Image reference or digest.
    pub image: Option<String>,
    /// Snapshot name, digest or path.
    pub from_snapshot: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: Option<u32>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Environment variables as `[key, value]` pairs.
    pub env: Vec<Vec<String>>,
    /// Apparent size of the upper disk.
    pub upper_size_bytes: Option<BigInt>,
    /// Instant create (unset: the core's default).
    pub instant: Option<bool>,
    /// Network policy: `none`, `public` or `all` (unset: `public`).
    pub network: Option<String>,
    /// Hosts, addresses or CIDRs allowed on top of the policy.
    pub allow: Vec<String>,
    /// Published ports: host 127.0.0.1 port to guest port.
    pub ports: Vec<NativePublishedPort>,
}

/// A published port as `.port(host, guest)` collected it.
#[napi(object)]
pub struct NativePublishedPort {
    /// Port on the host's loopback.
    pub host: u32,
    /// Port in the guest.
    pub guest: u32,
}

/// A TCP port number from JS (0 is refused by the core's rules).
fn to_port(value: u32, what: &str) -> MicrosandboxResult<u16> {
    u16::try_from(value).map_err(|_| {
        microsandbox::MicrosandboxError::InvalidConfig(format!(
            "{what} port {value} is out of range: use 1-65535"
        ))
    })
}

/// Options of one exec (env, cwd, timeout, output limit).
#[napi(object)]
pub struct NativeExecOptions {
    /// Added environment variables as `[key, value]` pairs.
    pub env: Option<Vec<Vec<String>>>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<f64>,
    /// Bytes kept of each output (buffered exec).
    pub output_limit: Option<BigInt>,
}

/// A buffered exec's result.
#[napi(object)]
pub struct NativeExecOutput {
    /// Exit status, or 128 + signal.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The timeout killed it.
    pub timed_out: bool,
    /// Captured stdout.
    pub stdout: Buffer,
    /// Captured stderr.
    pub stderr: Buffer,
    /// Stdout went past the output limit.
    pub stdout_truncated: bool,
    /// Stderr went past the output limit.
    pub stderr_truncated: bool,
}

impl From<ExecOutput> for NativeExecOutput {
    fn from(out: ExecOutput) -> Self {
        Self {
            exit_code: out.exit_code,
            signal: out.signal,
            timed_out: out.timed_out,
            stdout: out.stdout.into(),
            stderr: out.stderr.into(),
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
        }
    }
}

pub(crate) fn pairs(list: Vec<Vec<String>>) -> impl Iterator<Item = (String, String)> {
    list.into_iter().map(|pair| {
        let mut it = pair.into_iter();
        (it.next().unwrap_or_default(), it.next().unwrap_or_default())
    })
}

fn exec_options(
    opts: Option<NativeExecOptions>,
    cancel: Option<&CancelToken>,
) -> Result<ExecOptions, microsandbox::MicrosandboxError> {
    let mut out = ExecOptions {
        cancel: cancel.map(|c| c.inner.clone()),
        ..ExecOptions::default()
    };
    if let Some(opts) = opts {
        out.env = pairs(opts.env.unwrap_or_default()).collect::<BTreeMap<_, _>>();
        out.cwd = opts.cwd;
        if let Some(ms) = opts.timeout_ms {
            if !(ms.is_finite() && ms >= 0.0) {
                return Err(microsandbox::MicrosandboxError::InvalidConfig(
                    "timeoutMs must be a finite number >= 0".into(),
                ));
            }
            out.timeout = Some(Duration::from_secs_f64(ms / 1000.0));
        }
        if let Some(limit) = opts.output_limit {
            let limit = to_u64(&limit, "outputLimit")?;
            out.output_limit = Some(usize::try_from(limit).unwrap_or(usize::MAX));
        }
    }
    Ok(out)
}

/// A sandbox as the registry records it (the core's `SandboxHandle`).
#[napi]
pub struct NativeSandbox {
    inner: SandboxHandle,
}

impl From<Sandbox> for NativeSandbox {
    fn from(sb: Sandbox) -> Self {
        Self {
            inner: sb.handle().clone(),
        }
    }
}

impl From<SandboxHandle> for NativeSandbox {
    fn from(inner: SandboxHandle) -> Self {
        Self { inner }
    }
}

#[napi]
impl NativeSandbox {
    /// The sandbox's name.
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// State when this handle was read.
    #[napi(getter, catch_unwind)]
    pub fn state(&self) -> String {
        self.inner.state().to_string()
    }

    /// Image reference it was created from.
    #[napi(getter, catch_unwind)]
    pub fn image_ref(&self) -> String {
        self.inner.image_ref().to_string()
    }

    /// RFC 3339 creation time.
    #[napi(getter, catch_unwind)]
    pub fn created_at(&self) -> String {
        self.inner.created_at().to_string()
    }

    /// The sandbox directory.
    #[napi(getter, catch_unwind)]
    pub fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// The current state, checked against the VM.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn status<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let h = self.inner.clone();
        spawn(
            env,
            config,
            None,
            None,
            async move { h.status().await },
            |s| Ok(s.to_string()),
        )
    }

    /// Run a command and wait for it.
    #[napi(ts_return_type = "Promise<NativeExecOutput>")]
    pub fn exec<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        cmd: String,
        args: Vec<String>,
        opts: Option<NativeExecOptions>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeExecOutput>> {
        let h = self.inner.clone();
        let opts = exec_options(opts, cancel);
        let work = async move { h.exec_with(cmd, args, opts?).await };
        spawn(env, config, cancel, None, work, |out| {
            Ok(NativeExecOutput::from(out))
        })
    }

    /// Start a command and stream it.
    #[napi(ts_return_type = "Promise<NativeExecStream>")]
    pub fn exec_stream<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        cmd: String,
        args: Vec<String>,
        opts: Option<NativeExecOptions>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeExecStream>> {
        let h = self.inner.clone();
        let opts = exec_options(opts, cancel);
        let work = async move { h.exec_stream(cmd, args, opts?).await };
        spawn(env, config, cancel, None, work, |s| {
            Ok(NativeExecStream::new(s))
        })
    }

    /// Shut down cleanly.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let h = self.inner.clone();
        spawn(env, config, None, None, async move { h.stop().await }, Ok)
    }

    /// Boot a stopped or crashed sandbox again.
    #[napi(ts_return_type = "Promise<NativeSandbox>")]
    pub fn start<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
        let h = self.inner.clone();
        spawn_sandbox(env, config, cancel, async move { h.start().await })
    }

    /// Stop if running and delete.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn remove<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let h = self.inner.clone();
        spawn(env, config, None, None, async move { h.remove().await }, Ok)
    }

    /// Snapshot under a bare name.
    #[napi(ts_return_type = "Promise<NativeSnapshot>")]
    pub fn snapshot<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        name: String,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
        let h = self.inner.clone();
        let work = async move { h.snapshot(&name).await };
        spawn(env, config, cancel, None, work, |s| {
            Ok(NativeSnapshot::from(s))
        })
    }

    /// Capture the whole running VM (a full snapshot); leaves it paused.
    #[napi(ts_return_type = "Promise<NativeSnapshot>")]
    pub fn snapshot_full<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
        let h = self.inner.clone();
        let work = async move { h.snapshot_full().await };
        spawn(env, config, cancel, None, work, |s| {
            Ok(NativeSnapshot::from(s))
        })
    }

    /// Continue a sandbox paused by a full snapshot.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn resume<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let h = self.inner.clone();
        spawn(env, config, None, None, async move { h.resume().await }, Ok)
    }

    /// Snapshot to an explicit path.
    #[napi(ts_return_type = "Promise<NativeSnapshot>")]
    pub fn snapshot_to<'env>(
        &self,
        env: &'env Env,
        config: Option<NativeConfig>,
        path: String,
        cancel: Option<&CancelToken>,
    ) -> napi::Result<PromiseRaw<'env, NativeSnapshot>> {
        let h = self.inner.clone();
        let work = async move { h.snapshot_to(path).await };
        spawn(env, config, cancel, None, work, |s| {
            Ok(NativeSnapshot::from(s))
        })
    }
}

/// Create a sandbox and boot it.
#[napi(ts_return_type = "Promise<NativeSandbox>")]
pub fn sandbox_create<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    spec: NativeSandboxSpec,
    cancel: Option<&CancelToken>,
) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
    let work = async move {
        let mut b = Sandbox::builder(spec.name);
        if let Some(image) = spec.image {
            b = b.image(image);
        }
        if let Some(snap) = spec.from_snapshot {
            b = b.from_snapshot(snap);
        }
        if let Some(mib) = spec.memory_mib {
            b = b.memory_mib(mib);
        }
        if let Some(cpus) = spec.cpus {
            b = b.cpus(cpus);
        }
        for (k, v) in pairs(spec.env) {
            b = b.env(k, v);
        }
        if let Some(size) = spec.upper_size_bytes {
            b = b.upper_size_bytes(to_u64(&size, "upperSizeBytes")?);
        }
        if let Some(instant) = spec.instant {
            b = b.instant(instant);
        }
        if let Some(policy) = spec.network {
            b = b.network(policy);
        }
        for entry in spec.allow {
            b = b.allow(entry);
        }
        for port in spec.ports {
            b = b.port(to_port(port.host, "host")?, to_port(port.guest, "guest")?);
        }
        b.create().await
    };
    spawn_sandbox(env, config, cancel, work)
}

/// [`spawn`] for a call that makes a running sandbox (create, start,
/// restore): the Promise resolves to its handle.
pub(crate) fn spawn_sandbox<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    cancel: Option<&CancelToken>,
    work: impl Future<Output = MicrosandboxResult<Sandbox>> + Send + 'static,
) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
    spawn(env, config, cancel, None, work, |sb| {
        Ok(NativeSandbox::from(sb))
    })
}

/// The sandbox called `name`.
#[napi(ts_return_type = "Promise<NativeSandbox>")]
pub fn sandbox_get<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name: String,
) -> napi::Result<PromiseRaw<'env, NativeSandbox>> {
    spawn(env, config, None, None, Sandbox::get(name), |h| {
        Ok(NativeSandbox::from(h))
    })
}

/// Every sandbox, by name.
#[napi(ts_return_type = "Promise<NativeSandbox[]>")]
pub fn sandbox_list<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
) -> napi::Result<PromiseRaw<'env, Vec<NativeSandbox>>> {
    spawn(env, config, None, None, Sandbox::list(), |list| {
        Ok(list.into_iter().map(NativeSandbox::from).collect())
    })
}

/// Stop (if running) and delete the sandbox called `name`.
#[napi(ts_return_type = "Promise<void>")]
pub fn sandbox_remove<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    name: String,
) -> napi::Result<PromiseRaw<'env, ()>> {
    spawn(env, config, None, None, Sandbox::remove(name), Ok)
}
