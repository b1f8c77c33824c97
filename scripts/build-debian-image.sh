#!/usr/bin/env bash
# Usage: scripts/build-debian-image.sh [CACHE_DIR]
# Builds a Debian bookworm root with python3, pip and ca-certificates from
# deb.debian.org (mmdebstrap, variant `essential`, `--mode=unshare`: no root
# needed where user namespaces are allowed) and writes it as an OCI image
# layout archive named local/debian-python:bookworm (one uncompressed layer;
# config with Env PATH and WorkingDir). Prints the archive's path on stdout.
#
# The host's site certificate authorities (/usr/local/share/ca-certificates,
# e.g. a proxy's that re-signs HTTPS) are added to the image's trust store,
# so pip in the guest reaches PyPI as the host does.
#
# Cached: the archive is CACHE_DIR/debian-python-bookworm-<hash>.tar
# (default target/images), <hash> taken from this script's content and those
# certificates, so a machine builds it once per version of this script; a
# run with the archive present only prints its path. Load it with
#   msb image load "$(scripts/build-debian-image.sh)" --tag local/debian-python:bookworm
# Installs mmdebstrap when missing (as root; otherwise prints the command).
set -euo pipefail
cd "$(dirname "$0")/.."

reference=local/debian-python:bookworm
cache=${1:-target/images}
site_cas=/usr/local/share/ca-certificates
key=$(cat "$0" $(find "$site_cas" -name '*.crt' 2>/dev/null | sort) | sha256sum | cut -c1-12)
archive="$cache/debian-python-bookworm-$key.tar"
if [[ -s "$archive" ]]; then
  echo "$archive"
  exit 0
fi

command -v mmdebstrap >/dev/null 2>&1 || scripts/apt-install-missing.sh build-debian-image mmdebstrap >&2
# As a user, --mode=unshare maps the root's owners through newuidmap and a
# subordinate id range of that user.
if [[ $(id -u) -ne 0 ]]; then
  command -v newuidmap >/dev/null 2>&1 || scripts/apt-install-missing.sh build-debian-image uidmap >&2
  user=$(id -un)
  if ! grep -qs "^$user:" /etc/subuid || ! grep -qs "^$user:" /etc/subgid; then
    echo "build-debian-image: $user has no subordinate ids (mmdebstrap --mode=unshare needs them); run:" >&2
    echo "  sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $user" >&2
    exit 1
  fi
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.debian-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# Documentation, man pages and translations are of no use in a sandbox; apt's
# package lists would be stale anyway (pip is what the flow installs with).
echo "build-debian-image: mmdebstrap bookworm (python3 python3-pip ca-certificates) ..." >&2
mmdebstrap --quiet --mode=unshare --variant=essential --format=tar \
  --include=python3,python3-pip,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
  --customize-hook='echo microsandbox > "$1"/etc/hostname' \
  --customize-hook="if ls $site_cas/*.crt >/dev/null 2>&1; then cp $site_cas/*.crt \"\$1\"$site_cas/ && chroot \"\$1\" update-ca-certificates >/dev/null; fi" \
  --skip=output/dev \
  bookworm "$work/layer.tar" http://deb.debian.org/debian >&2

# The OCI layout around the layer, as core/src/image/busybox.rs writes it.
python3 - "$work" "$reference" <<'EOF'
import hashlib, json, os, sys, tarfile

work, reference = sys.argv[1], sys.argv[2]
blobs = os.path.join(work, "oci", "blobs", "sha256")
os.makedirs(blobs)

def put(data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}

layer_path = os.path.join(work, "layer.tar")
h = hashlib.sha256()
with open(layer_path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
layer_digest = h.hexdigest()
layer_size = os.path.getsize(layer_path)
os.rename(layer_path, os.path.join(blobs, layer_digest))

config = put(json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["python3"],
        "WorkingDir": "/root",
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
}, sort_keys=True).encode())
manifest = put(json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + layer_digest, "size": layer_size}],
}, sort_keys=True).encode())
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
    "annotations": {"org.opencontainers.image.ref.name": reference,
                    "io.containerd.image.name": reference},
}]}
with open(os.path.join(work, "oci", "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(work, "oci", "index.json"), "w") as f:
    json.dump(index, f, sort_keys=True)

def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info

with tarfile.open(os.path.join(work, "image.tar"), "w", format=tarfile.GNU_FORMAT) as tar:
    for name in ["oci-layout", "index.json"] + ["blobs/sha256/" + b for b in sorted(os.listdir(blobs))]:
        tar.add(os.path.join(work, "oci", name), arcname=name, recursive=False, filter=fixed)
EOF

sync "$work/image.tar"
mv "$work/image.tar" "$archive"
# Older versions of this script's archives are of no further use.
find "$cache" -maxdepth 1 -name 'debian-python-bookworm-*.tar' ! -path "$archive" -delete
echo "build-debian-image: $archive ($(du -h --apparent-size "$archive" | cut -f1)) in $(($(date +%s) - start)) s" >&2
echo "$archive"
