//! Sandboxes over the C ABI: create (from an image or a snapshot), get,
//! list, remove; a running `MsbSandbox` and the registry's
//! `MsbSandboxHandle` (read as the core's JSON view, `docs/json.md`), with
//! start, stop, status, resume and snapshots (disk and full). Commands are
//! in [`crate::exec`].

use std::ffi::c_char;

use microsandbox::{Sandbox, SandboxHandle};

use crate::{
    MsbCancel, MsbConfig, MsbResult, arg_opt_str, arg_pairs, arg_str, arg_strs, block_on, free_box,
    guard, put, put_json, put_string, snapshot::MsbSnapshot,
};

/// A running sandbox.
pub struct MsbSandbox {
    sandbox: Sandbox,
}

pub(crate) fn boxed_sandbox(sandbox: Sandbox) -> *mut MsbSandbox {
    Box::into_raw(Box::new(MsbSandbox { sandbox }))
}

/// A sandbox as recorded in the registry.
pub struct MsbSandboxHandle {
    pub(crate) handle: SandboxHandle,
}

/// Sandbox handles, as `Sandbox.list` returns them.
pub struct MsbSandboxHandleList {
    handles: Vec<SandboxHandle>,
}

pub(crate) fn handle_ref<'a>(
    h: *const MsbSandboxHandle,
) -> Result<&'a SandboxHandle, microsandbox::MicrosandboxError> {
    // SAFETY: NULL or a live handle of this ABI.
    unsafe { h.as_ref() }.map(|h| &h.handle).ok_or_else(|| {
        microsandbox::MicrosandboxError::InvalidConfig("sandbox handle is NULL".into())
    })
}

fn boxed_handle(handle: SandboxHandle) -> *mut MsbSandboxHandle {
    Box::into_raw(Box::new(MsbSandboxHandle { handle }))
}

/// Create the sandbox `name` and boot it: from `image` or from
/// `from_snapshot` (exactly one); `memory_mib`, `cpus` and
/// `upper_size_bytes` 0 for the defaults; `env_count` variables; `instant`
/// negative for the core's default, 0 to always boot cold, positive to
/// allow instant create (`docs/full-snapshots.md`); `network` the policy
/// (`none`, `public`, `all`; NULL or empty for the default, `public`),
/// `allow_count` allow-list entries (host, address or CIDR) and
/// `port_count` published ports, host port `port_hosts[i]` on 127.0.0.1
/// to guest port `port_guests[i]` (`docs/network.md`).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_sandbox_create(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    name: *const c_char,
    image: *const c_char,
    from_snapshot: *const c_char,
    memory_mib: u32,
    cpus: u32,
    upper_size_bytes: u64,
    env_keys: *const *const c_char,
    env_values: *const *const c_char,
    env_count: usize,
    instant: i32,
    network: *const c_char,
    allow: *const *const c_char,
    allow_count: usize,
    port_hosts: *const u16,
    port_guests: *const u16,
    port_count: usize,
    out: *mut *mut MsbSandbox,
) -> MsbResult {
    guard(|| {
        let mut builder = Sandbox::builder(arg_str(name, "name")?);
        if instant >= 0 {
            builder = builder.instant(instant > 0);
        }
        if let Some(image) = arg_opt_str(image, "image")? {
            builder = builder.image(image);
        }
        if let Some(snapshot) = arg_opt_str(from_snapshot, "from_snapshot")? {
            builder = builder.from_snapshot(snapshot);
        }
        if memory_mib > 0 {
            builder = builder.memory_mib(memory_mib);
        }
        if cpus > 0 {
            builder = builder.cpus(cpus);
        }
        if upper_size_bytes > 0 {
            builder = builder.upper_size_bytes(upper_size_bytes);
        }
        for (k, v) in arg_pairs(env_keys, env_values, env_count, "env")? {
            builder = builder.env(k, v);
        }
        if let Some(policy) = arg_opt_str(network, "network")? {
            builder = builder.network(policy);
        }
        for entry in arg_strs(allow, allow_count, "allow")? {
            builder = builder.allow(entry);
        }
        for (host, guest) in port_pairs(port_hosts, port_guests, port_count)? {
            builder = builder.port(host, guest);
        }
        let sandbox = block_on(config, cancel, builder.create())?;
        put(out, boxed_sandbox(sandbox))
    })
}

/// `count` published ports as (host, guest) pairs from two arrays.
fn port_pairs(
    hosts: *const u16,
    guests: *const u16,
    count: usize,
) -> Result<Vec<(u16, u16)>, microsandbox::MicrosandboxError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if hosts.is_null() || guests.is_null() {
        return Err(microsandbox::MicrosandboxError::InvalidConfig(
            "port arrays are NULL".into(),
        ));
    }
    // SAFETY: the caller passes two arrays of `count` ports.
    let (hosts, guests) = unsafe {
        (
            std::slice::from_raw_parts(hosts, count),
            std::slice::from_raw_parts(guests, count),
        )
    };
    Ok(hosts.iter().copied().zip(guests.iter().copied()).collect())
}

/// The registry handle of a running sandbox (free it on its own).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle(
    sb: *const MsbSandbox,
    out: *mut *mut MsbSandboxHandle,
) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live sandbox.
        let sb = unsafe { sb.as_ref() }.ok_or_else(|| {
            microsandbox::MicrosandboxError::InvalidConfig("sandbox is NULL".into())
        })?;
        put(out, boxed_handle(sb.sandbox.handle().clone()))
    })
}

/// Release a running sandbox's handle (the VM keeps running).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_free(sb: *mut MsbSandbox) {
    free_box(sb);
}

/// The sandbox called `name`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_get(
    config: *const MsbConfig,
    name: *const c_char,
    out: *mut *mut MsbSandboxHandle,
) -> MsbResult {
    guard(|| {
        let name = arg_str(name, "name")?;
        let handle = block_on(config, std::ptr::null(), Sandbox::get(name))?;
        put(out, boxed_handle(handle))
    })
}

/// Every sandbox, by name.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_list(
    config: *const MsbConfig,
    out: *mut *mut MsbSandboxHandleList,
) -> MsbResult {
    guard(|| {
        let handles = block_on(config, std::ptr::null(), Sandbox::list())?;
        put(
            out,
            Box::into_raw(Box::new(MsbSandboxHandleList { handles })),
        )
    })
}

/// How many handles `list` holds.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_list_count(list: *const MsbSandboxHandleList) -> usize {
    crate::shielded(0, || {
        // SAFETY: NULL or a live list.
        unsafe { list.as_ref() }.map_or(0, |l| l.handles.len())
    })
}

/// A new handle on the `index`th sandbox of `list` (free it on its own).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_list_get(
    list: *const MsbSandboxHandleList,
    index: usize,
    out: *mut *mut MsbSandboxHandle,
) -> MsbResult {
    guard(|| {
        // SAFETY: NULL or a live list.
        let handle = unsafe { list.as_ref() }
            .and_then(|l| l.handles.get(index))
            .ok_or_else(|| {
                microsandbox::MicrosandboxError::InvalidConfig("index out of range".into())
            })?;
        put(out, boxed_handle(handle.clone()))
    })
}

/// Release a sandbox handle list.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_list_free(list: *mut MsbSandboxHandleList) {
    free_box(list);
}

/// Stop (if running) and delete the sandbox called `name`.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_remove(config: *const MsbConfig, name: *const c_char) -> MsbResult {
    guard(|| {
        let name = arg_str(name, "name")?;
        block_on(config, std::ptr::null(), Sandbox::remove(name))
    })
}

/// The handle's JSON view (`docs/json.md`, "SandboxHandle").
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_json(
    h: *const MsbSandboxHandle,
    out: *mut *mut c_char,
) -> MsbResult {
    guard(|| put_json(out, handle_ref(h)?))
}

/// The sandbox's current state (`running`, `paused`, `stopped`, `crashed`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_status(
    config: *const MsbConfig,
    h: *const MsbSandboxHandle,
    out: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let state = block_on(config, std::ptr::null(), handle_ref(h)?.status())?;
        put_string(out, state.as_str())
    })
}

/// Boot a stopped or crashed sandbox again.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_start(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    out: *mut *mut MsbSandbox,
) -> MsbResult {
    guard(|| {
        let sandbox = block_on(config, cancel, handle_ref(h)?.start())?;
        put(out, boxed_sandbox(sandbox))
    })
}

/// Shut the sandbox down cleanly (forced after a timeout).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_stop(
    config: *const MsbConfig,
    h: *const MsbSandboxHandle,
) -> MsbResult {
    guard(|| block_on(config, std::ptr::null(), handle_ref(h)?.stop()))
}

/// Stop the VM if it runs and delete the sandbox.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_remove(
    config: *const MsbConfig,
    h: *const MsbSandboxHandle,
) -> MsbResult {
    guard(|| block_on(config, std::ptr::null(), handle_ref(h)?.remove()))
}

/// Snapshot this stopped sandbox under a bare name.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_snapshot(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    name: *const c_char,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        let name = arg_str(name, "name")?;
        let snapshot = block_on(config, cancel, handle_ref(h)?.snapshot(name))?;
        put(out, Box::into_raw(Box::new(MsbSnapshot { snapshot })))
    })
}

/// Snapshot this stopped sandbox to an explicit artifact directory.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_snapshot_to(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    path: *const c_char,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        let path = arg_str(path, "path")?;
        let snapshot = block_on(config, cancel, handle_ref(h)?.snapshot_to(path))?;
        put(out, Box::into_raw(Box::new(MsbSnapshot { snapshot })))
    })
}

/// Capture this running (or paused) sandbox whole as a full snapshot
/// (`docs/full-snapshots.md`); the sandbox is left paused until
/// `msb_sandbox_handle_resume`. The artifact lives in the sandbox's
/// directory until it is saved under a name or the sandbox is removed.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_snapshot_full(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    h: *const MsbSandboxHandle,
    out: *mut *mut MsbSnapshot,
) -> MsbResult {
    guard(|| {
        let snapshot = block_on(config, cancel, handle_ref(h)?.snapshot_full())?;
        put(out, Box::into_raw(Box::new(MsbSnapshot { snapshot })))
    })
}

/// Continue a sandbox paused by a full snapshot (`SandboxNotPaused` unless
/// it is paused).
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_resume(
    config: *const MsbConfig,
    h: *const MsbSandboxHandle,
) -> MsbResult {
    guard(|| block_on(config, std::ptr::null(), handle_ref(h)?.resume()))
}

/// Release a sandbox handle.
#[unsafe(no_mangle)]
pub extern "C" fn msb_sandbox_handle_free(h: *mut MsbSandboxHandle) {
    free_box(h);
}
