//! Sandboxes: create one from an image (boots a microVM), run commands in it,
//! stop and start it, list and remove them. A sandbox is a directory
//! `MSB_HOME/sandboxes/<name>/` (its sparse ext4 `upper.ext4` and `logs/`)
//! plus a registry row; the row appears only once the sandbox booted, so a
//! failed create leaves nothing behind.

mod instant;
mod restore;
mod views;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

pub use crate::runtime::{ExecEvent, ExecOptions, ExecOutput, ExecStdin, ExecStream, ExitStatus};
pub use crate::sandbox_store::{UPPER_FILE, registry};
pub use registry::{SandboxConfig, SandboxState};
pub use restore::RestoreBuilder;

use crate::control::{CallOpts, Control, long_call};
use crate::error::{MicrosandboxError, MicrosandboxResult};
use crate::home::MsbHome;
use crate::image;
use crate::network::{NetworkConfig, NetworkPolicy, PublishedPort};
use crate::publish;
use crate::runtime::{self, BootRequest, ExecSpec};
use crate::sandbox_store::{self, DirLock};
use crate::snapshot::Snapshot;
use registry::SandboxRecord;

fn argv<I, S>(cmd: impl Into<String>, args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut argv = vec![cmd.into()];
    argv.extend(args.into_iter().map(Into::into));
    argv
}

/// Apparent size of a new sandbox's upper disk (sparse: costs what it holds).
pub const DEFAULT_UPPER_SIZE: u64 = 4 << 30;

/// Guest memory unless the builder says otherwise.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// A running sandbox, and the entry points for sandboxes.
#[derive(Debug, Clone)]
pub struct Sandbox {
    handle: SandboxHandle,
}

/// A sandbox as recorded in the registry: its name, configuration and state.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    home: MsbHome,
    name: String,
    dir: PathBuf,
    config: SandboxConfig,
    state: SandboxState,
    created_at: String,
}

/// Configures a new sandbox; see [`Sandbox::builder`].
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    name: String,
    image: Option<String>,
    from_snapshot: Option<String>,
    memory_mib: u32,
    cpus: u32,
    env: BTreeMap<String, String>,
    upper_size_bytes: u64,
    instant: bool,
    network: NetworkOptions,
}

/// The builder's network options as given; parsed and checked by
/// [`SandboxBuilder::create`] (`InvalidConfig`) before anything boots.
#[derive(Debug, Clone, Default)]
struct NetworkOptions {
    policy: Option<String>,
    allow: Vec<String>,
    ports: Vec<PublishedPort>,
}

impl NetworkOptions {
    fn parse(&self) -> MicrosandboxResult<NetworkConfig> {
        let config = NetworkConfig {
            policy: match &self.policy {
                Some(policy) => policy.parse()?,
                None => NetworkPolicy::default(),
            },
            allow: self
                .allow
                .iter()
                .map(|a| a.parse())
                .collect::<MicrosandboxResult<_>>()?,
            ports: self.ports.clone(),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Sandbox {
    /// Start configuring a sandbox called `name`.
    pub fn builder(name: impl Into<String>) -> SandboxBuilder {
        SandboxBuilder {
            name: name.into(),
            image: None,
            from_snapshot: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            env: BTreeMap::new(),
            upper_size_bytes: DEFAULT_UPPER_SIZE,
            instant: true,
            network: NetworkOptions::default(),
        }
    }

    /// The sandbox called `name` (`SandboxNotFound` otherwise).
    pub async fn get(name: impl Into<String>) -> MicrosandboxResult<SandboxHandle> {
        let name = name.into();
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || SandboxHandle::load(&home, &name)).await
    }

    /// Every sandbox, by name. What killed calls left (a directory
    /// without a row, a VM nobody recorded) is reaped first
    /// (`docs/crash-safety.md`).
    pub async fn list() -> MicrosandboxResult<Vec<SandboxHandle>> {
        let home = MsbHome::resolve()?;
        crate::control::blocking(move || {
            sandbox_store::reap_abandoned(&home)?;
            let mut listed = Vec::new();
            for name in registry::names(&home)? {
                match SandboxHandle::load(&home, &name) {
                    Ok(handle) => listed.push(handle),
                    // Removed since the names were read: not listed.
                    Err(MicrosandboxError::SandboxNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(listed)
        })
        .await
    }

    /// Stop (if running) and delete the sandbox called `name`.
    pub async fn remove(name: impl Into<String>) -> MicrosandboxResult<()> {
        Self::get(name).await?.remove().await
    }

    /// Name of this sandbox.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// The registry view of this sandbox.
    pub fn handle(&self) -> &SandboxHandle {
        &self.handle
    }

    /// Run `cmd` with `args` in the sandbox and wait for it.
    pub async fn exec<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
    ) -> MicrosandboxResult<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.handle.exec(cmd, args).await
    }

    /// [`exec`](Self::exec) with options (env, cwd, timeout, output limit,
    /// cancellation); see [`SandboxHandle::exec_with`].
    pub async fn exec_with<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
        opts: ExecOptions,
    ) -> MicrosandboxResult<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.handle.exec_with(cmd, args, opts).await
    }

    /// Start `cmd` and stream it; see [`SandboxHandle::exec_stream`].
    pub async fn exec_stream<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
        opts: ExecOptions,
    ) -> MicrosandboxResult<ExecStream>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.handle.exec_stream(cmd, args, opts).await
    }

    /// Shut the sandbox down cleanly (forced after a timeout).
    pub async fn stop(&self) -> MicrosandboxResult<()> {
        self.handle.stop().await
    }

    /// Capture the whole VM (memory, CPU and device state, disk) as a full
    /// snapshot. The sandbox stays paused until [`resume`](Self::resume);
    /// the snapshot lives until [`Snapshot::save_named`] or until this
    /// sandbox is removed. `SandboxNotRunning` unless it runs.
    pub async fn snapshot(&self) -> MicrosandboxResult<Snapshot> {
        self.handle.snapshot_full().await
    }

    /// Continue a sandbox paused by [`snapshot`](Self::snapshot) from
    /// exactly where it was. `SandboxNotPaused` unless it is paused.
    pub async fn resume(&self) -> MicrosandboxResult<()> {
        self.handle.resume().await
    }
}

impl SandboxBuilder {
    /// Boot from this image reference or manifest digest (see `msb image ls`).
    pub fn image(mut self, reference: impl Into<String>) -> Self {
        self.image = Some(reference.into());
        self
    }

    /// Boot from a snapshot (bare name, digest or path) instead of an image:
    /// the snapshot pins its image, so this excludes [`image`](Self::image).
    /// The artifact is opened and its recorded integrity verified at
    /// [`create`](Self::create) time; the sandbox gets its own copy of the upper.
    pub fn from_snapshot(mut self, path_or_name: impl Into<String>) -> Self {
        self.from_snapshot = Some(path_or_name.into());
        self
    }

    /// Guest memory in MiB (default 256).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Virtual CPUs (default 1).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Set an environment variable for every command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Instant create (default on): fork a base full snapshot of a freshly
    /// booted guest of the same shape instead of booting, leaving one after
    /// the first cold boot (`docs/full-snapshots.md`). `false` always boots cold.
    pub fn instant(mut self, instant: bool) -> Self {
        self.instant = instant;
        self
    }

    /// Network policy: `public` (the default: no host loopback, private,
    /// link-local or CGNAT ranges), `none` (no interface) or `all`;
    /// enforced on the host (`docs/network.md`). An unknown name fails
    /// [`create`](Self::create) with `InvalidConfig`.
    pub fn network(mut self, policy: impl Into<String>) -> Self {
        self.network.policy = Some(policy.into());
        self
    }

    /// Also allow this host name, address or CIDR (e.g. `10.0.0.0/8`),
    /// whatever the policy's ranges say.
    pub fn allow(mut self, host_or_cidr: impl Into<String>) -> Self {
        self.network.allow.push(host_or_cidr.into());
        self
    }

    /// Publish guest TCP port `guest` on the host's 127.0.0.1 port `host`.
    /// A taken host port fails [`create`](Self::create) with `InvalidConfig`.
    pub fn port(mut self, host: u16, guest: u16) -> Self {
        self.network.ports.push(PublishedPort { host, guest });
        self
    }

    /// Apparent size of the upper disk (default 4 GiB; sparse).
    pub fn upper_size_bytes(mut self, bytes: u64) -> Self {
        self.upper_size_bytes = bytes;
        self
    }

    /// Create the sandbox and boot it. Cancelling the call (see
    /// [`control`](crate::control)) kills the half-booted VM and removes
    /// the sandbox.
    pub async fn create(self) -> MicrosandboxResult<Sandbox> {
        let home = MsbHome::resolve()?;
        let handle = long_call(CallOpts::default(), move |control| {
            self.create_blocking(&home, control)
        })
        .await?;
        Ok(Sandbox { handle })
    }

    fn create_blocking(
        self,
        home: &MsbHome,
        control: &Control,
    ) -> MicrosandboxResult<SandboxHandle> {
        validate_name(&self.name)?;
        let network = self.network.parse()?;
        if self.memory_mib < 64 || self.cpus == 0 || self.upper_size_bytes < (64 << 20) {
            return Err(MicrosandboxError::InvalidConfig(
                "memory_mib must be >= 64, cpus >= 1 and the upper at least 64 MiB".into(),
            ));
        }
        // Held from resolving the image until the sandbox's row names it: an
        // `image rm` in between would otherwise find no user and delete the
        // root disk this sandbox is about to boot from (see `image::lock`).
        let store = image::StoreLock::shared(home)?;
        let (image, upper_source) = match (&self.image, &self.from_snapshot) {
            (Some(_), Some(_)) => {
                return Err(MicrosandboxError::InvalidConfig(
                    "image and from_snapshot are mutually exclusive: a snapshot pins its image"
                        .into(),
                ));
            }
            (None, None) => {
                return Err(MicrosandboxError::InvalidConfig(format!(
                    "sandbox '{}' needs an image or a snapshot to boot from",
                    self.name
                )));
            }
            (Some(reference), None) => (
                crate::registry::get_or_pull(home, reference, control)?,
                UpperSource::Fresh(self.upper_size_bytes),
            ),
            (None, Some(snapshot)) => {
                let snap = open_verified_snapshot(home, snapshot, control)?;
                let image = pinned_image(home, &snap)?;
                (image, UpperSource::Snapshot(snap.upper_path()))
            }
        };
        let base = match (&upper_source, self.instant) {
            (UpperSource::Fresh(size), true) => {
                let shape = instant::Shape {
                    image: &image,
                    memory_mib: self.memory_mib,
                    cpus: self.cpus,
                    upper_size_bytes: *size,
                    nic: network.has_interface(),
                };
                Some(instant::base_dir(home, &shape)?)
            }
            _ => None,
        };
        let claim = sandbox_store::claim(home, &self.name)?;
        let dir = claim.dir.clone();
        if let Some(base) = &base {
            let env = command_env(&image, self.env.clone());
            let new = instant::NewSandbox {
                name: &self.name,
                dir: &dir,
                image: &image,
                env,
                network: network.clone(),
            };
            let forked = instant::fork_base(home, base, new, control);
            match forked {
                Ok(Some(handle)) => {
                    drop(store);
                    return Ok(handle);
                }
                Ok(None) => clear_dir(&dir)?,
                Err(e) => {
                    let _ = publish::remove_dir_atomically(&dir);
                    return Err(e);
                }
            }
        }
        let name = self.name.clone();
        let created = self.build_and_boot(home, &dir, image, upper_source, network, control);
        if created.is_err() {
            let _ = publish::remove_dir_atomically(&dir);
        }
        let handle = created?;
        // The row is committed: a remove now sees this sandbox as a user.
        drop(store);
        // The row exists: the directory is no longer a claim in progress
        // (and leaving the base locks it again).
        drop(claim);
        if let Some(base) = &base
            && let Err(e) = instant::leave_base(home, &name, base)
        {
            // The sandbox could not run on after its capture: it is not
            // handed out half-usable.
            let _ = handle.remove_blocking();
            return Err(e);
        }
        Ok(handle)
    }

    fn build_and_boot(
        self,
        home: &MsbHome,
        dir: &Path,
        image: image::ImageInfo,
        upper_source: UpperSource,
        network: NetworkConfig,
        control: &Control,
    ) -> MicrosandboxResult<SandboxHandle> {
        // The caller holds the directory's lock (its claim).
        let upper = dir.join(UPPER_FILE);
        match upper_source {
            UpperSource::Fresh(size) => make_upper(&upper, size)?,
            UpperSource::Snapshot(from) => {
                crate::sparse::copy_sparse(&from, &upper)
                    .map_err(|e| MicrosandboxError::io(&from, e))?;
            }
        }
        let env = command_env(&image, self.env);
        let config = SandboxConfig {
            image_ref: image.reference,
            image_manifest_digest: image.manifest_digest,
            lower_path: image.lower_path,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            env,
            working_dir: image.working_dir,
            vm_name: runtime::vm_name(dir),
            network,
        };
        control.check()?;
        let vm = runtime::boot(home, &boot_request(home, &self.name, dir, &config), control)?;
        let record = SandboxRecord {
            name: self.name.clone(),
            config: config.clone(),
            state: SandboxState::Running,
            pid: Some(vm.pid),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        if let Err(e) = registry::insert(home, &record) {
            runtime::kill(dir, &config.vm_name, vm.pid);
            return Err(e);
        }
        Ok(SandboxHandle::from_record(home, record))
    }
}

impl SandboxHandle {
    fn load(home: &MsbHome, name: &str) -> MicrosandboxResult<Self> {
        Ok(Self::from_record(home, registry::get(home, name)?))
    }

    fn from_record(home: &MsbHome, rec: SandboxRecord) -> Self {
        Self {
            dir: sandbox_store::sandbox_dir(home, &rec.name),
            home: home.clone(),
            name: rec.name,
            config: rec.config,
            state: rec.state,
            created_at: rec.created_at,
        }
    }

    /// The sandbox's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// State when this handle was read (see [`status`](Self::status) for a fresh one).
    pub fn state(&self) -> SandboxState {
        self.state
    }

    /// The current state, checked against the VM process.
    pub async fn status(&self) -> MicrosandboxResult<SandboxState> {
        let (home, name) = (self.home.clone(), self.name.clone());
        crate::control::blocking(move || Ok(registry::get(&home, &name)?.state)).await
    }

    /// Boot configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The image reference the sandbox was created from.
    pub fn image_ref(&self) -> &str {
        &self.config.image_ref
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of the writable upper disk.
    pub fn upper_path(&self) -> PathBuf {
        self.dir.join(UPPER_FILE)
    }

    /// RFC 3339 creation time.
    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    /// Run `cmd` with `args` and wait for it; `SandboxNotRunning` unless running.
    /// Stdin is `/dev/null`; up to [`DEFAULT_OUTPUT_LIMIT`](crate::runtime::exec::DEFAULT_OUTPUT_LIMIT)
    /// (64 MiB) of each output is kept (see [`exec_with`](Self::exec_with)).
    pub async fn exec<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
    ) -> MicrosandboxResult<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exec_with(cmd, args, ExecOptions::default()).await
    }

    /// Run `cmd` with `args` under `opts` and wait for it, keeping up to
    /// `opts.output_limit` bytes of each output (64 MiB when `None`; the
    /// rest is read and dropped, and the output says it was truncated). Dropping the future or
    /// firing its token kills the command (`Cancelled`).
    pub async fn exec_with<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
        opts: ExecOptions,
    ) -> MicrosandboxResult<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let limit = opts.output_limit;
        let stream = self.start_exec(argv(cmd, args), opts, false).await?;
        runtime::exec::collect(stream, limit).await
    }

    /// Start `cmd` with `args` under `opts` and return at once: the
    /// command's output and exit as [`ExecEvent`]s, its stdin
    /// ([`ExecStream::take_stdin`]), signals. Output waits in the guest while
    /// the caller does not read (a few MB at most on the host).
    pub async fn exec_stream<I, S>(
        &self,
        cmd: impl Into<String>,
        args: I,
        opts: ExecOptions,
    ) -> MicrosandboxResult<ExecStream>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.start_exec(argv(cmd, args), opts, true).await
    }

    async fn start_exec(
        &self,
        argv: Vec<String>,
        opts: ExecOptions,
        stdin: bool,
    ) -> MicrosandboxResult<ExecStream> {
        let control = Control::new(CallOpts {
            progress: None,
            cancel: opts.cancel.clone(),
        });
        control.check()?;
        let this = self.clone();
        crate::control::blocking(move || {
            let rec = registry::get(&this.home, &this.name)?;
            if rec.state != SandboxState::Running {
                return Err(MicrosandboxError::SandboxNotRunning {
                    name: this.name.clone(),
                    state: rec.state.to_string(),
                });
            }
            let mut env = rec.config.env.clone();
            env.extend(opts.env);
            let spec = ExecSpec {
                argv,
                env,
                cwd: Some(opts.cwd.unwrap_or_else(|| rec.config.working_dir.clone())),
                stdin,
                timeout: opts.timeout,
            };
            runtime::start_exec(&this.dir, &rec.config.vm_name, spec, control)
        })
        .await
    }

    /// Boot a stopped or crashed sandbox again on its upper disk.
    /// Cancelling the call kills the half-booted VM; the sandbox stays as it was.
    pub async fn start(&self) -> MicrosandboxResult<Sandbox> {
        let this = self.clone();
        long_call(CallOpts::default(), move |control| {
            let _lock = DirLock::acquire(&this.dir)?;
            let rec = registry::get(&this.home, &this.name)?;
            if rec.state == SandboxState::Running {
                return Ok(Sandbox {
                    handle: Self::from_record(&this.home, rec),
                });
            }
            if rec.state == SandboxState::Paused {
                runtime::resume(&this.dir, &rec.config.vm_name)?;
                registry::set_state(&this.home, &this.name, SandboxState::Running, rec.pid)?;
                return Ok(Sandbox {
                    handle: Self::load(&this.home, &this.name)?,
                });
            }
            // A start killed mid-boot leaves its VM running unrecorded.
            runtime::reap(&this.dir, &rec.config.vm_name);
            let vm = runtime::boot(
                &this.home,
                &boot_request(&this.home, &this.name, &this.dir, &rec.config),
                control,
            )?;
            registry::set_state(&this.home, &this.name, SandboxState::Running, Some(vm.pid))?;
            Ok(Sandbox {
                handle: Self::load(&this.home, &this.name)?,
            })
        })
        .await
    }

    /// Shut down cleanly (sync, unmount, power off); forced after a timeout.
    /// Stopping a stopped sandbox does nothing.
    pub async fn stop(&self) -> MicrosandboxResult<()> {
        let this = self.clone();
        crate::control::blocking(move || {
            let _lock = DirLock::acquire(&this.dir)?;
            let rec = registry::get(&this.home, &this.name)?;
            if rec.state == SandboxState::Paused {
                // A paused guest cannot shut itself down cleanly.
                let _ = runtime::resume(&this.dir, &rec.config.vm_name);
            }
            if let (true, Some(pid)) = (rec.state.has_vm(), rec.pid) {
                runtime::shutdown(&this.dir, &rec.config.vm_name, pid, runtime::STOP_TIMEOUT);
            }
            let state = if rec.state == SandboxState::Crashed {
                SandboxState::Crashed
            } else {
                SandboxState::Stopped
            };
            registry::set_state(&this.home, &this.name, state, None)
        })
        .await
    }

    /// Stop the VM if it runs, then delete the sandbox's directory and row.
    pub async fn remove(&self) -> MicrosandboxResult<()> {
        let this = self.clone();
        crate::control::blocking(move || this.remove_blocking()).await
    }

    /// The VM goes first, then the row, then the directory (renamed away
    /// first): a remove killed half-way leaves a row whose VM is gone
    /// (`crashed`) or a directory without a row that the next list or
    /// create of the name reaps; never a VM without a row.
    fn remove_blocking(&self) -> MicrosandboxResult<()> {
        // Under the directory's lock: a stop, start or capture in flight
        // ends first, so the directory is never deleted under it (and two
        // removes never delete it at once).
        let locked = match sandbox_store::LockedSandbox::acquire(&self.home, &self.name) {
            Ok(locked) => Some(locked),
            // A row whose directory is gone (a crash between the two) has
            // nothing to lock, and is still removed.
            Err(MicrosandboxError::SandboxNotFound { .. }) if !self.dir.exists() => None,
            Err(e) => return Err(e),
        };
        let rec = match &locked {
            Some(locked) => locked.record.clone(),
            None => registry::get(&self.home, &self.name)?,
        };
        if let (true, Some(pid)) = (rec.state.has_vm(), rec.pid) {
            runtime::kill(&self.dir, &rec.config.vm_name, pid);
        }
        // And a VM an interrupted start left running unrecorded.
        runtime::reap(&self.dir, &rec.config.vm_name);
        registry::delete(&self.home, &self.name)?;
        // Renamed away first: the name is free at once, and whatever the
        // VM just killed still writes cannot bring the directory back.
        crate::publish::remove_dir_atomically(&self.dir)
    }

    /// Snapshot this stopped (or crashed) sandbox under a bare name in the
    /// default snapshots directory.
    pub async fn snapshot(&self, name: &str) -> MicrosandboxResult<Snapshot> {
        Snapshot::builder(self.name.clone())
            .name(name)
            .create()
            .await
    }

    /// Snapshot this stopped (or crashed) sandbox to an explicit path.
    pub async fn snapshot_to(&self, path: impl AsRef<Path>) -> MicrosandboxResult<Snapshot> {
        Snapshot::builder(self.name.clone())
            .path(path.as_ref())
            .create()
            .await
    }

    /// Capture this running sandbox whole; see [`Sandbox::snapshot`].
    pub async fn snapshot_full(&self) -> MicrosandboxResult<Snapshot> {
        let (home, name) = (self.home.clone(), self.name.clone());
        long_call(CallOpts::default(), move |control| {
            crate::snapshot::full::capture_blocking(&home, &name, control)
        })
        .await
    }

    /// Continue this paused sandbox; see [`Sandbox::resume`].
    pub async fn resume(&self) -> MicrosandboxResult<()> {
        let this = self.clone();
        crate::control::blocking(move || {
            let _lock = DirLock::acquire(&this.dir)?;
            let rec = registry::get(&this.home, &this.name)?;
            if rec.state != SandboxState::Paused {
                return Err(MicrosandboxError::SandboxNotPaused {
                    name: this.name.clone(),
                    state: rec.state.to_string(),
                });
            }
            runtime::resume(&this.dir, &rec.config.vm_name)?;
            registry::set_state(&this.home, &this.name, SandboxState::Running, rec.pid)
        })
        .await
    }

    /// Kill the VM without a clean shutdown, as a crash would (for tests and
    /// `msb kill`). The sandbox ends up `crashed`.
    pub async fn kill(&self) -> MicrosandboxResult<()> {
        let this = self.clone();
        crate::control::blocking(move || {
            let rec = registry::get(&this.home, &this.name)?;
            if let Some(pid) = rec.pid {
                runtime::kill(&this.dir, &rec.config.vm_name, pid);
            }
            registry::get(&this.home, &this.name).map(|_| ())
        })
        .await
    }
}

/// The environment of a new sandbox's commands: the image's, overridden by
/// the builder's.
fn command_env(
    image: &image::ImageInfo,
    builder: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(builder);
    env
}

/// Empty a claimed sandbox directory again (after a fork that did not
/// happen), keeping the directory, and so the name, claimed.
fn clear_dir(dir: &Path) -> MicrosandboxResult<()> {
    for entry in fs::read_dir(dir).map_err(|e| MicrosandboxError::io(dir, e))? {
        let path = entry.map_err(|e| MicrosandboxError::io(dir, e))?.path();
        // The claim's lock stays: the directory is still being created.
        if path.file_name() == Some(OsStr::new(sandbox_store::LOCK_FILE)) {
            continue;
        }
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| MicrosandboxError::io(&path, e))?;
    }
    Ok(())
}

/// Where a new sandbox's upper disk comes from.
enum UpperSource {
    /// A fresh, empty ext4 of this apparent size.
    Fresh(u64),
    /// A copy of a snapshot's upper.
    Snapshot(PathBuf),
}

/// The image a snapshot pins, or `ImageNotFound` naming it and the snapshot.
fn pinned_image(home: &MsbHome, snap: &Snapshot) -> MicrosandboxResult<image::ImageInfo> {
    image::get_blocking(home, snap.image_manifest_digest()).map_err(|_| {
        MicrosandboxError::ImageNotFound {
            reference: format!(
                "{} @ {} (pinned by snapshot {}; load that image first)",
                snap.image_ref(),
                snap.image_manifest_digest(),
                snap.path().display()
            ),
        }
    })
}

/// Open the snapshot named by `key` (index name, digest or path, else a bare
/// name or path on disk) and verify its recorded integrity.
fn open_verified_snapshot(
    home: &MsbHome,
    key: &str,
    control: &Control,
) -> MicrosandboxResult<Snapshot> {
    let snap = crate::snapshot::resolve::resolve(home, key)?.open()?;
    snap.verify_stamped(home, control)?;
    Ok(snap)
}

/// Sandbox names: 1–63 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> MicrosandboxResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(MicrosandboxError::InvalidConfig(format!(
            "invalid sandbox name {name:?}: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit"
        )))
    }
}

fn boot_request(home: &MsbHome, name: &str, dir: &Path, config: &SandboxConfig) -> BootRequest {
    BootRequest {
        hostname: name.to_string(),
        vm_name: config.vm_name.clone(),
        sandbox_dir: dir.to_path_buf(),
        lower: config.lower_path.clone(),
        upper: dir.join(UPPER_FILE),
        memory_mib: config.memory_mib,
        cpus: config.cpus,
        network: config.network.clone(),
        dns_upstream: home.dns_upstream(),
    }
}

/// A new sparse ext4 upper disk of `size` bytes.
fn make_upper(path: &Path, size: u64) -> MicrosandboxResult<()> {
    File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(|e| MicrosandboxError::io(path, e))?;
    let args = [
        OsStr::new("-q"),
        OsStr::new("-F"),
        OsStr::new("-E"),
        // A sparse file reads zeros where nothing was written: zeroing the
        // journal would only allocate 64 MiB in every upper and snapshot.
        OsStr::new("root_owner=0:0,lazy_journal_init=1"),
        path.as_os_str(),
    ];
    crate::tools::run_tool("mkfs.ext4", args, "e2fsprogs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_are_checked() {
        for ok in ["api", "api-restored", "a.b_c", "9lives"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(64)] {
            assert_eq!(
                validate_name(bad).unwrap_err().kind(),
                "InvalidConfig",
                "{bad}"
            );
        }
    }
}
