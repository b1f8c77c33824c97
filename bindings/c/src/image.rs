//! Images over the C ABI: load an archive, pull from and push to a registry, save an
//! OCI archive, remove, build the busybox archive, list and get; results are
//! the core's `ImageInfo` JSON view (`docs/json.md`).

use std::ffi::{c_char, c_void};

use microsandbox::image::Image;

use crate::{
    MsbCancel, MsbConfig, MsbProgressFn, MsbResult, arg_opt_str, arg_str, block_on, call_opts,
    guard, put_json, put_string,
};

/// Load an OCI layout or `docker save` tar, named `reference` (NULL or
/// empty: the archive's own name); the image as JSON.
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_load(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    archive: *const c_char,
    reference: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out_json: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let archive = arg_str(archive, "archive")?;
        let reference = arg_opt_str(reference, "reference")?.map(str::to_string);
        let call = call_opts(cancel, progress, user);
        let info = block_on(config, cancel, Image::load_with(archive, reference, call))?;
        put_json(out_json, &info)
    })
}

/// Pull `reference` (Docker-style: `python`, `host:5000/app@sha256:…`) from
/// its registry (progress phases `pull`, then `load`); the image as JSON.
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_pull(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    reference: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out_json: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let reference = arg_str(reference, "reference")?;
        let call = call_opts(cancel, progress, user);
        let info = block_on(config, cancel, Image::pull_with(reference, call))?;
        put_json(out_json, &info)
    })
}

/// Push the local image `reference_or_digest` to `target` (`host/repo:tag`),
/// progress phase `push`; its manifest digest into `*out_digest` (free it
/// with `msb_string_free`).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn msb_image_push(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    reference_or_digest: *const c_char,
    target: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
    out_digest: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let key = arg_str(reference_or_digest, "reference_or_digest")?;
        let target = arg_str(target, "target")?;
        let call = call_opts(cancel, progress, user);
        let digest = block_on(config, cancel, Image::push_with(key, target, call))?;
        put_string(out_digest, digest)
    })
}

/// Write the image `reference_or_digest` to `out_path` as an OCI archive
/// other tools read (progress phase `export`); `out_path` is replaced
/// atomically.
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_save(
    config: *const MsbConfig,
    cancel: *const MsbCancel,
    reference_or_digest: *const c_char,
    out_path: *const c_char,
    progress: MsbProgressFn,
    user: *mut c_void,
) -> MsbResult {
    guard(|| {
        let key = arg_str(reference_or_digest, "reference_or_digest")?;
        let out = arg_str(out_path, "out_path")?;
        let call = call_opts(cancel, progress, user);
        block_on(config, cancel, Image::save_with(key, out, call))
    })
}

/// Remove an image and the blobs and root disks no other image uses
/// (`ImageInUse` while a snapshot or sandbox needs it).
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_remove(
    config: *const MsbConfig,
    reference_or_digest: *const c_char,
) -> MsbResult {
    guard(|| {
        let key = arg_str(reference_or_digest, "reference_or_digest")?;
        block_on(config, std::ptr::null(), Image::remove(key))
    })
}

/// The full form of a Docker-style reference (`python` →
/// `docker.io/library/python:latest`), into `*out` (free it with
/// `msb_string_free`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_normalise_reference(
    reference: *const c_char,
    out: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let reference = arg_str(reference, "reference")?;
        put_string(out, microsandbox::normalise_reference(reference)?)
    })
}

/// Write a busybox OCI archive named `reference` to `out_path` from the
/// static busybox binary at `busybox` (NULL or empty: `/bin/busybox`).
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_build_busybox(
    busybox: *const c_char,
    reference: *const c_char,
    out_path: *const c_char,
) -> MsbResult {
    guard(|| {
        let busybox = arg_opt_str(busybox, "busybox")?
            .unwrap_or(microsandbox::image::busybox::DEFAULT_BUSYBOX);
        let reference = arg_str(reference, "reference")?;
        let out = arg_str(out_path, "out_path")?;
        block_on(
            std::ptr::null(),
            std::ptr::null(),
            Image::build_busybox(busybox, reference, out),
        )
    })
}

/// The image with this reference or manifest digest, as JSON.
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_get(
    config: *const MsbConfig,
    reference_or_digest: *const c_char,
    out_json: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let key = arg_str(reference_or_digest, "reference_or_digest")?;
        let info = block_on(config, std::ptr::null(), Image::get(key))?;
        put_json(out_json, &info)
    })
}

/// Every loaded image, as a JSON array.
#[unsafe(no_mangle)]
pub extern "C" fn msb_image_list(
    config: *const MsbConfig,
    out_json: *mut *mut c_char,
) -> MsbResult {
    guard(|| {
        let images = block_on(config, std::ptr::null(), Image::list())?;
        put_json(out_json, &images)
    })
}
