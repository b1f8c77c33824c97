//! `Image`: load an OCI or `docker save` archive, pull from or push to a
//! registry, save an OCI archive, remove, build the busybox image archive,
//! list and get loaded images (`ImageInfo`); `normalise_reference`.

use std::path::PathBuf;

use microsandbox::image::busybox::{DEFAULT_BUSYBOX, DEFAULT_BUSYBOX_REF};
use microsandbox::image::{Image, ImageInfo};
use pyo3::prelude::*;

use crate::call::{convert_all, spawn, spawn_with_call_opts};
use crate::errors::{catch_sync, to_py_err};

/// The full form of a Docker-style reference (`python` →
/// `docker.io/library/python:latest`); `InvalidConfigError` for a
/// malformed one.
#[pyfunction]
pub(crate) fn normalise_reference(reference: &str) -> PyResult<String> {
    catch_sync(|| microsandbox::normalise_reference(reference).map_err(to_py_err))
}

/// Entry points for images.
#[pyclass(name = "Image", module = "microsandbox._native", frozen)]
pub(crate) struct PyImage;

#[pymethods]
impl PyImage {
    /// Load an OCI layout tar or `docker save` tar and build its root disk.
    #[staticmethod]
    #[pyo3(signature = (archive, *, reference=None, progress=None))]
    fn load(
        py: Python<'_>,
        archive: PathBuf,
        reference: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Image::load_with(archive, reference, call)
                .await
                .map(PyImageInfo::from)
        })
    }

    /// Pull `reference` from its registry and build its root disk (progress
    /// `pull`, then `load`); registered under the normalised reference,
    /// which is its `origin`.
    #[staticmethod]
    #[pyo3(signature = (reference, *, progress=None))]
    fn pull(
        py: Python<'_>,
        reference: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Image::pull_with(reference, call)
                .await
                .map(PyImageInfo::from)
        })
    }

    /// Push the local image to a registry `target` as the store holds it
    /// (progress `push`); the manifest digest, the same as the local one.
    #[staticmethod]
    #[pyo3(signature = (reference_or_digest, target, *, progress=None))]
    fn push(
        py: Python<'_>,
        reference_or_digest: String,
        target: String,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Image::push_with(reference_or_digest, target, call).await
        })
    }

    /// Write the image to `out` as an OCI archive other tools read (progress
    /// `export`); `out` is replaced atomically.
    #[staticmethod]
    #[pyo3(signature = (reference_or_digest, out, *, progress=None))]
    fn save(
        py: Python<'_>,
        reference_or_digest: String,
        out: PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn_with_call_opts(py, progress, |call| async move {
            Image::save_with(reference_or_digest, out, call).await
        })
    }

    /// Remove the image and the blobs and root disks no other image uses
    /// (`ImageInUseError` while a snapshot or sandbox needs it).
    #[staticmethod]
    fn remove(py: Python<'_>, reference_or_digest: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move { Image::remove(reference_or_digest).await })
    }

    /// The image with this reference or manifest digest.
    #[staticmethod]
    fn get(py: Python<'_>, reference_or_digest: String) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Image::get(reference_or_digest).await.map(PyImageInfo::from)
        })
    }

    /// Every loaded image, by reference.
    #[staticmethod]
    fn list(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Image::list().await.map(convert_all::<_, PyImageInfo>)
        })
    }

    /// Write a tiny busybox OCI archive to `out` from the host's static busybox.
    #[staticmethod]
    #[pyo3(signature = (out, *, reference=DEFAULT_BUSYBOX_REF.to_string(), busybox=PathBuf::from(DEFAULT_BUSYBOX)))]
    fn build_busybox(
        py: Python<'_>,
        out: PathBuf,
        reference: String,
        busybox: PathBuf,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            Image::build_busybox(busybox, reference, out).await
        })
    }
}

/// A loaded image.
#[pyclass(name = "ImageInfo", module = "microsandbox._native", frozen, get_all)]
pub(crate) struct PyImageInfo {
    /// The image reference.
    reference: String,
    /// The OCI manifest digest.
    manifest_digest: String,
    /// The config blob digest.
    config_digest: String,
    /// The built root disk.
    lower_path: PathBuf,
    /// The image's environment, `KEY=VALUE`.
    env: Vec<String>,
    /// The image's working directory.
    working_dir: String,
    /// RFC 3339 load or pull time.
    loaded_at: String,
    /// The registry reference it was pulled from (`None`: loaded or imported).
    origin: Option<String>,
}

impl From<ImageInfo> for PyImageInfo {
    fn from(info: ImageInfo) -> Self {
        Self {
            reference: info.reference,
            manifest_digest: info.manifest_digest,
            config_digest: info.config_digest,
            lower_path: info.lower_path,
            env: info.env,
            working_dir: info.working_dir,
            loaded_at: info.loaded_at,
            origin: info.origin,
        }
    }
}

#[pymethods]
impl PyImageInfo {
    fn __repr__(&self) -> String {
        format!(
            "ImageInfo(reference={:?}, manifest_digest={:?})",
            self.reference, self.manifest_digest
        )
    }
}
