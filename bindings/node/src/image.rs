//! Image entry points: load an archive, pull from or push to a registry,
//! save an archive (with progress and cancellation), remove, build the busybox
//! archive from the host's busybox-static, list, get, and the reference
//! normalisation.

use microsandbox::image::busybox::{DEFAULT_BUSYBOX, DEFAULT_BUSYBOX_REF};
use microsandbox::image::{Image, ImageInfo};
use napi::Env;
use napi::bindgen_prelude::PromiseRaw;
use napi_derive::napi;

use crate::call::{CancelToken, NativeConfig, ProgressFn, js_error, spawn, spawn_with_call_opts};

/// A loaded image.
#[napi(object)]
pub struct NativeImageInfo {
    /// Reference it was loaded under.
    pub reference: String,
    /// OCI manifest digest (what snapshots pin).
    pub manifest_digest: String,
    /// Config blob digest.
    pub config_digest: String,
    /// The read-only root disk.
    pub lower_path: String,
    /// Default environment (`KEY=VALUE`).
    pub env: Vec<String>,
    /// Default working directory.
    pub working_dir: String,
    /// RFC 3339 load or pull time.
    pub loaded_at: String,
    /// The registry reference it was pulled from (none: loaded or imported).
    pub origin: Option<String>,
}

impl From<ImageInfo> for NativeImageInfo {
    fn from(i: ImageInfo) -> Self {
        Self {
            reference: i.reference,
            manifest_digest: i.manifest_digest,
            config_digest: i.config_digest,
            lower_path: i.lower_path.to_string_lossy().into_owned(),
            env: i.env,
            working_dir: i.working_dir,
            loaded_at: i.loaded_at,
            origin: i.origin,
        }
    }
}

/// Load an OCI layout or `docker save` archive.
#[napi(ts_return_type = "Promise<NativeImageInfo>")]
pub fn image_load<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    archive: String,
    reference: Option<String>,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, NativeImageInfo>> {
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Image::load_with(archive, reference, call),
        |i| Ok(NativeImageInfo::from(i)),
    )
}

/// Pull an image from its registry (progress `pull`, then `load`).
#[napi(ts_return_type = "Promise<NativeImageInfo>")]
pub fn image_pull<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference: String,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, NativeImageInfo>> {
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Image::pull_with(reference, call),
        |i| Ok(NativeImageInfo::from(i)),
    )
}

/// Push a local image to a registry `target` (progress `push`); the
/// manifest digest.
#[napi(ts_return_type = "Promise<string>")]
pub fn image_push<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference_or_digest: String,
    target: String,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, String>> {
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Image::push_with(reference_or_digest, target, call),
        Ok,
    )
}

/// Write an image to `out` as an OCI archive (progress `export`).
#[napi(ts_return_type = "Promise<void>")]
pub fn image_save<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference_or_digest: String,
    out: String,
    cancel: Option<&CancelToken>,
    progress: Option<ProgressFn>,
) -> napi::Result<PromiseRaw<'env, ()>> {
    spawn_with_call_opts(
        env,
        config,
        cancel,
        progress,
        |call| Image::save_with(reference_or_digest, out, call),
        Ok,
    )
}

/// Remove an image and the blobs and root disks no other image uses.
#[napi(ts_return_type = "Promise<void>")]
pub fn image_remove<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference_or_digest: String,
) -> napi::Result<PromiseRaw<'env, ()>> {
    spawn(
        env,
        config,
        None,
        None,
        Image::remove(reference_or_digest),
        Ok,
    )
}

/// The full form of a Docker-style reference; throws an error whose `code`
/// is `InvalidConfig` for a malformed one.
#[napi(catch_unwind)]
pub fn normalise_reference(env: &Env, reference: String) -> napi::Result<String> {
    microsandbox::normalise_reference(&reference).map_err(|e| js_error(env, &e))
}

/// Write the busybox OCI archive to `out` (default busybox binary and
/// reference when not given).
#[napi(ts_return_type = "Promise<void>")]
pub fn image_build_busybox<'env>(
    env: &'env Env,
    out: String,
    reference: Option<String>,
    busybox: Option<String>,
) -> napi::Result<PromiseRaw<'env, ()>> {
    let work = Image::build_busybox(
        busybox.unwrap_or_else(|| DEFAULT_BUSYBOX.into()),
        reference.unwrap_or_else(|| DEFAULT_BUSYBOX_REF.into()),
        out,
    );
    spawn(env, None, None, None, work, Ok)
}

/// The image with this reference or digest.
#[napi(ts_return_type = "Promise<NativeImageInfo>")]
pub fn image_get<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
    reference: String,
) -> napi::Result<PromiseRaw<'env, NativeImageInfo>> {
    spawn(env, config, None, None, Image::get(reference), |i| {
        Ok(NativeImageInfo::from(i))
    })
}

/// Every loaded image.
#[napi(ts_return_type = "Promise<NativeImageInfo[]>")]
pub fn image_list<'env>(
    env: &'env Env,
    config: Option<NativeConfig>,
) -> napi::Result<PromiseRaw<'env, Vec<NativeImageInfo>>> {
    spawn(env, config, None, None, Image::list(), |list| {
        Ok(list.into_iter().map(NativeImageInfo::from).collect())
    })
}
