//! Applying OCI layers, in order, to a root directory: the layer tar (plain,
//! gzip or zstd) is unpacked with ownership and modes kept, and whiteouts are
//! honoured (`.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq`
//! empties its directory of lower-layer content). Whiteouts of a layer are
//! applied before its other entries, whatever their order in the tar.
//! Directory times are set once every layer is in ([`settle_dir_times`]),
//! so the tree, and the root disk built from it, is the same on every
//! machine.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use super::archive::{decompressed, safe_relative};
use crate::error::{MicrosandboxError, MicrosandboxResult};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The mtimes the layers' tars give their directories, by path inside the
/// root (the last layer's wins). Unpacking into a directory moves its
/// mtime to the time of the load, so they are applied at the end.
#[derive(Default)]
pub(crate) struct DirTimes(BTreeMap<PathBuf, u64>);

/// Apply the layer blob at `layer` on top of `root`, noting the mtimes its
/// directories ask for in `dir_times`.
pub(crate) fn apply_layer(
    layer: &Path,
    root: &Path,
    dir_times: &mut DirTimes,
) -> MicrosandboxResult<()> {
    let invalid = |reason: String| MicrosandboxError::ArchiveInvalid {
        path: layer.to_path_buf(),
        reason,
    };
    // Pass 1: whiteouts, which act on the layers below this one.
    for_each_entry(layer, |entry| {
        let path = entry_path(layer, &entry)?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let rel_parent = path.parent().unwrap_or(Path::new(""));
        let is_whiteout = name.starts_with(WHITEOUT_PREFIX);
        if !is_whiteout || !parent_inside_root(layer, root, rel_parent, &path)? {
            return Ok(());
        }
        let parent = root.join(rel_parent);
        if name == OPAQUE_MARKER {
            clear_dir(&parent)?;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            // `.wh..` or `.wh...` would name the directory or its parent.
            if matches!(hidden, "" | "." | "..") {
                return Err(invalid(format!(
                    "whiteout {} names no entry",
                    path.display()
                )));
            }
            remove_any(&parent.join(hidden))?;
        }
        Ok(())
    })?;
    // Pass 2: everything else.
    for_each_entry(layer, |mut entry| {
        let path = entry_path(layer, &entry)?;
        let is_whiteout = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WHITEOUT_PREFIX));
        if is_whiteout || path.as_os_str().is_empty() {
            return Ok(());
        }
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            return Ok(()); // the guest mounts devtmpfs on /dev
        }
        let dest = root.join(&path);
        // Anything but a directory meeting a directory is replaced, so a
        // lower-layer symlink is never written through; never outside the
        // root, where a link among the parents may lead.
        let rel_parent = path.parent().unwrap_or(Path::new(""));
        if parent_inside_root(layer, root, rel_parent, &path)?
            && let Ok(meta) = fs::symlink_metadata(&dest)
            && !(meta.is_dir() && kind.is_dir())
        {
            remove_any(&dest)?;
        }
        if kind.is_dir() {
            dir_times
                .0
                .insert(path.clone(), entry.header().mtime().unwrap_or(0));
        }
        entry.set_preserve_mtime(true);
        entry.unpack_in(root).map_err(|e| {
            invalid(format!(
                "cannot unpack {}: {}",
                path.display(),
                error_chain(&e)
            ))
        })?;
        Ok(())
    })
}

/// Give every directory under `root` (and `root`) the mtime its layers
/// asked for, or 0 for one no tar entry named: a directory's time must not
/// depend on when the image was loaded.
pub(crate) fn settle_dir_times(root: &Path, dir_times: &DirTimes) -> MicrosandboxResult<()> {
    fn visit(root: &Path, rel: &Path, dir_times: &DirTimes) -> MicrosandboxResult<()> {
        let dir = root.join(rel);
        let entries = fs::read_dir(&dir).map_err(|e| MicrosandboxError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| MicrosandboxError::io(&dir, e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| MicrosandboxError::io(entry.path(), e))?
                .is_dir();
            if is_dir {
                visit(root, &rel.join(entry.file_name()), dir_times)?;
            }
        }
        // After the children: setting theirs does not touch this one's, but
        // visiting them first keeps the rule obvious.
        let secs = dir_times.0.get(rel).copied().unwrap_or(0);
        let time = TimeSpec::new(i64::try_from(secs).unwrap_or(0), 0);
        utimensat(
            AT_FDCWD,
            &dir,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| MicrosandboxError::io(&dir, e.into()))
    }
    visit(root, Path::new(""), dir_times)
}

fn for_each_entry(
    layer: &Path,
    mut visit: impl FnMut(tar::Entry<'_, Box<dyn std::io::Read>>) -> MicrosandboxResult<()>,
) -> MicrosandboxResult<()> {
    let invalid = |reason: String| MicrosandboxError::ArchiveInvalid {
        path: layer.to_path_buf(),
        reason,
    };
    let file = File::open(layer).map_err(|e| MicrosandboxError::io(layer, e))?;
    let reader = decompressed(BufReader::new(file)).map_err(|e| invalid(e.to_string()))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive
        .entries()
        .map_err(|e| invalid(format!("layer is not a tar: {e}")))?
    {
        visit(entry.map_err(|e| invalid(format!("corrupt layer entry: {e}")))?)?;
    }
    Ok(())
}

/// The entry's path inside the image root; `ArchiveInvalid` for `layer`
/// when it has none or would leave the root.
fn entry_path(
    layer: &Path,
    entry: &tar::Entry<'_, Box<dyn std::io::Read>>,
) -> MicrosandboxResult<std::path::PathBuf> {
    let invalid = |reason: String| MicrosandboxError::ArchiveInvalid {
        path: layer.to_path_buf(),
        reason,
    };
    let raw = entry
        .path()
        .map_err(|e| invalid(format!("bad entry name: {e}")))?;
    safe_relative(&raw)
        .ok_or_else(|| invalid(format!("entry {} leaves the image root", raw.display())))
}

/// `err` and its sources, joined: tar's own messages hide the OS error.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Whether the directory `rel_parent` of the entry `path` exists inside
/// `root` once the links on the way are followed (`false` when it does not
/// exist: there is nothing in it to remove). `ArchiveInvalid` when a link
/// leads it out of the root: removing or writing there would touch the
/// host (a layer can make `up -> ../..` and then name `up/file`).
fn parent_inside_root(
    layer: &Path,
    root: &Path,
    rel_parent: &Path,
    path: &Path,
) -> MicrosandboxResult<bool> {
    let Ok(real) = fs::canonicalize(root.join(rel_parent)) else {
        return Ok(false);
    };
    let real_root = fs::canonicalize(root).map_err(|e| MicrosandboxError::io(root, e))?;
    if real.starts_with(&real_root) {
        Ok(real.is_dir())
    } else {
        Err(MicrosandboxError::ArchiveInvalid {
            path: layer.to_path_buf(),
            reason: format!(
                "entry {} leads out of the image root through a link",
                path.display()
            ),
        })
    }
}

fn remove_any(path: &Path) -> MicrosandboxResult<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.map_err(|e| MicrosandboxError::io(path, e))
}

fn clear_dir(dir: &Path) -> MicrosandboxResult<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| MicrosandboxError::io(dir, e))?;
        remove_any(&entry.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&[u8]>)]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (entry_name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, entry_name, *data).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder
                        .append_data(&mut header, entry_name, &[][..])
                        .unwrap();
                }
            }
        }
        builder.finish().unwrap();
        path
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let base = layer(
            dir.path(),
            "l1",
            &[
                ("etc/", None),
                ("etc/keep", Some(b"k")),
                ("etc/gone", Some(b"g")),
                ("opt/", None),
                ("opt/old", Some(b"o")),
            ],
        );
        // The opaque marker comes after new content in the tar on purpose.
        let top = layer(
            dir.path(),
            "l2",
            &[
                ("etc/.wh.gone", Some(b"")),
                ("opt/new", Some(b"n")),
                ("opt/.wh..wh..opq", Some(b"")),
            ],
        );
        let mut times = DirTimes::default();
        apply_layer(&base, &root, &mut times).unwrap();
        apply_layer(&top, &root, &mut times).unwrap();
        assert!(root.join("etc/keep").exists());
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("opt/old").exists());
        assert_eq!(fs::read(root.join("opt/new")).unwrap(), b"n");
        assert!(!root.join("opt/.wh..wh..opq").exists());
    }

    #[test]
    fn directory_times_come_from_the_layers_not_the_load() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut times = DirTimes::default();
        let files = [
            ("etc/", None),
            ("etc/keep", Some(&b"k"[..])),
            ("implicit/x", Some(&b"x"[..])),
        ];
        apply_layer(&layer(dir.path(), "l1", &files), &root, &mut times).unwrap();
        let mtime = |p: &str| fs::metadata(root.join(p)).unwrap().mtime();
        assert!(mtime("etc") > 0, "unpacking into etc moved its time");
        settle_dir_times(&root, &times).unwrap();
        assert_eq!((mtime(""), mtime("etc"), mtime("implicit")), (0, 0, 0));
    }

    #[test]
    fn a_file_can_replace_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut times = DirTimes::default();
        apply_layer(
            &layer(dir.path(), "l1", &[("x/", None), ("x/y", Some(b"1"))]),
            &root,
            &mut times,
        )
        .unwrap();
        apply_layer(
            &layer(dir.path(), "l2", &[("x", Some(b"file"))]),
            &root,
            &mut times,
        )
        .unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"file");
    }
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    /// A layer of `(name, kind, link target or body)`, names written raw.
    fn raw_layer(path: &Path, entries: &[(&str, tar::EntryType, &str)]) {
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, extra) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mode(0o644);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            let body = if kind.is_symlink() {
                header.set_link_name(extra).unwrap();
                &[][..]
            } else {
                extra.as_bytes()
            };
            header.set_size(body.len() as u64);
            header.set_cksum();
            builder.append(&header, body).unwrap();
        }
        builder.finish().unwrap();
    }

    /// Found by the `image_layer` fuzz target: an entry or a whiteout
    /// under a link that leads out of the root removed host files.
    #[test]
    fn nothing_outside_the_root_is_removed_through_links_or_dot_names() {
        use tar::EntryType::{Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("victim"), b"v").unwrap();
        fs::write(outside.join("sub/victim"), b"v").unwrap();
        let cases: [&[(&str, tar::EntryType, &str)]; 4] = [
            &[("up", Symlink, "../outside"), ("up/victim", Regular, "x")],
            &[("up/.wh.victim", Regular, "")],
            &[("up/sub/.wh..wh..opq", Regular, "")],
            &[("etc/.wh...", Regular, "")],
        ];
        let mut times = DirTimes::default();
        for (i, entries) in cases.iter().enumerate() {
            let path = dir.path().join(format!("l{i}"));
            raw_layer(&path, entries);
            let err = apply_layer(&path, &root, &mut times).unwrap_err();
            assert_eq!(err.kind(), "ArchiveInvalid", "case {i}: {err}");
        }
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"v");
        assert_eq!(fs::read(outside.join("sub/victim")).unwrap(), b"v");
        assert!(root.join("etc").is_dir());
    }
}
