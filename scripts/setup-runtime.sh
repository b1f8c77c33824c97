#!/usr/bin/env bash
# Installs the sandbox runtime's host side: QEMU and disk tools from Debian,
# the Debian cloud kernel with the guest's modules, the guest init
# (`msb-guest-init`, built static from guest/) and the network process
# (`msb-netd`, from netd/, runs on the host), into one kernel directory.
# Idempotent: packages and the kernel are fetched only when missing; the
# guest init is rebuilt incrementally and copied when it changed.
#
#   scripts/setup-runtime.sh [KDIR]     KDIR defaults to $MSB_KERNEL_DIR,
#                                       else ~/.microsandbox/kernel
# Result in KDIR: vmlinuz, vmlinux (uncompressed: QEMU boots it through its
# PVH entry, ~0.3 s faster under TCG), version, modules/*.ko, modules.order
# (load order), modules.builtin, msb-guest-init, msb-netd.
set -euo pipefail
cd "$(dirname "$0")/.."

KDIR=${1:-${MSB_KERNEL_DIR:-${MSB_HOME:-$HOME/.microsandbox}/kernel}}
META=linux-image-cloud-amd64
# The modules the guest needs, in the preferred order; their dependencies are
# added before them from modules.dep (erofs needs libcrc32c first).
WANTED=(virtio_ring virtio virtio_mmio virtio_blk libcrc32c erofs overlay virtio_console virtio_balloon virtio_net)
PACKAGES=(qemu-system-x86 e2fsprogs erofs-utils busybox-static kmod cpio lz4 xz-utils zstd)

log() { printf 'setup-runtime: %s\n' "$*" >&2; }

# --- host packages -------------------------------------------------------------
need=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages; run: sudo apt-get install -y ${need[*]}"
        exit 1
    fi
    log "installing: ${need[*]}"
    apt-cache show "${need[0]}" >/dev/null 2>&1 || apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

install_kernel() {
    # --- resolve the kernel package ------------------------------------------------
    pkg=$(apt-cache depends "$META" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [[ -z "$pkg" ]]; then
        apt-get update -q
        pkg=$(apt-cache depends "$META" | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    [[ -n "$pkg" ]] || { log "cannot resolve the package $META depends on"; exit 1; }
    kver=${pkg#linux-image-}
    log "kernel package: $pkg (version $kver)"

    # A directory from before a module joined WANTED is redone.
    local have_all=1 m
    for m in "${WANTED[@]}"; do
        grep -qx "$m.ko" "$KDIR/modules.order" 2>/dev/null \
            || grep -qx "$m" "$KDIR/modules.builtin" 2>/dev/null || have_all=0
    done
    if [[ "${FORCE:-0}" != 1 && $have_all == 1 && -f "$KDIR/version" && "$(cat "$KDIR/version")" == "$kver" \
          && -f "$KDIR/vmlinuz" && -f "$KDIR/modules.order" \
          && ( "${VMLINUX:-0}" != 1 || -f "$KDIR/vmlinux" ) ]]; then
        log "$KDIR already holds $kver; nothing to do (FORCE=1 to redo)"
        return 0
    fi

    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chown _apt "$tmp" 2>/dev/null || true  # apt-get download writes as _apt
    (cd "$tmp" && apt-get download -q "$pkg" >&2)
    deb=$(ls "$tmp"/*.deb)
    dpkg-deb -x "$deb" "$tmp/root"

    moddir="$tmp/root/lib/modules/$kver"
    [[ -d "$moddir" ]] || { log "no $moddir in $deb"; exit 1; }
    # The package ships no modules.dep: build it.
    depmod -b "$tmp/root" "$kver"

    # --- compute the load order ----------------------------------------------------
    # modules.dep: "kernel/a/b.ko[.xz]: dep1 dep2 ..." (paths relative to moddir).
    declare -A path_of deps_of
    while IFS= read -r line; do
        mod=${line%%:*}
        rest=${line#*:}
        base=$(basename "$mod"); name=${base%%.ko*}; name=${name//-/_}
        path_of[$name]=$mod
        d=()
        for dep in $rest; do
            b=$(basename "$dep"); n=${b%%.ko*}; d+=("${n//-/_}")
        done
        deps_of[$name]="${d[*]:-}"
    done <"$moddir/modules.dep"

    declare -A builtin_set
    if [[ -f "$moddir/modules.builtin" ]]; then
        while IFS= read -r m; do
            b=$(basename "$m"); n=${b%%.ko*}; builtin_set[${n//-/_}]=1
        done <"$moddir/modules.builtin"
    fi

    order=() builtins=()
    declare -A seen
    visit() {
        local n=$1
        [[ -n "${seen[$n]:-}" ]] && return 0
        seen[$n]=1
        if [[ -n "${builtin_set[$n]:-}" ]]; then builtins+=("$n"); return 0; fi
        if [[ -z "${path_of[$n]:-}" ]]; then log "module $n: neither a module nor built in"; exit 1; fi
        local d
        for d in ${deps_of[$n]}; do visit "$d"; done
        order+=("$n")
    }
    for m in "${WANTED[@]}"; do visit "$m"; done

    # --- install ---------------------------------------------------------------------
    rm -rf "$KDIR.new"
    mkdir -p "$KDIR.new/modules"
    cp "$tmp"/root/boot/vmlinuz-* "$KDIR.new/vmlinuz"
    : >"$KDIR.new/modules.order"
    for n in "${order[@]}"; do
        src="$moddir/${path_of[$n]}"
        dst="$KDIR.new/modules/$n.ko"
        case "$src" in
            *.ko) cp "$src" "$dst" ;;
            *.ko.xz) xz -dc "$src" >"$dst" ;;
            *.ko.zst) zstd -qdc "$src" >"$dst" ;;
            *.ko.gz) gzip -dc "$src" >"$dst" ;;
            *) log "unknown module format: $src"; exit 1 ;;
        esac
        echo "$n.ko" >>"$KDIR.new/modules.order"
    done
    printf '%s\n' "${builtins[@]:-}" | sed '/^$/d' >"$KDIR.new/modules.builtin"

    if [[ "${VMLINUX:-0}" == 1 ]]; then
        # bzImage: the compressed payload sits at setup header fields payload_offset
        # (0x248) / payload_length (0x24c), counted from the end of the setup sectors.
        img="$KDIR.new/vmlinuz"
        u8() { od -An -tu1 -j "$1" -N1 "$img" | tr -d ' '; }
        u32() { od -An -tu4 -j "$1" -N4 "$img" | tr -d ' '; }
        sects=$(u8 $((0x1f1))); ((sects == 0)) && sects=4
        start=$(( (sects + 1) * 512 + $(u32 $((0x248))) ))
        plen=$(u32 $((0x24c)))
        magic=$(od -An -tx1 -j "$start" -N4 "$img" | tr -d ' ')
        case "$magic" in
            02214c18) dec=(lz4 -dc) ;;
            1f8b*) dec=(gzip -dc) ;;
            fd377a58) dec=(xz -dc) ;;
            28b52ffd) dec=(zstd -qdc) ;;
            *) log "unknown kernel payload compression (magic $magic)"; exit 1 ;;
        esac
        # The payload ends with a 4-byte size trailer some tools reject: ignore their complaint.
        tail -c +$((start + 1)) "$img" | head -c "$plen" | "${dec[@]}" >"$KDIR.new/vmlinux" 2>/dev/null || true
        if ! od -An -c -N4 "$KDIR.new/vmlinux" | grep -q 'E   L   F'; then
            log "could not extract vmlinux (${dec[*]})"; exit 1
        fi
    fi
    echo "$kver" >"$KDIR.new/version"
    rm -rf "$KDIR"
    mv "$KDIR.new" "$KDIR"
    log "kernel $kver -> $KDIR; load order: ${order[*]}; built in: ${builtins[*]:-none}"
}

install_guest_init() {
    local bin=target/x86_64-unknown-linux-gnu/release/msb-guest-init
    # Static (crt-static) so it runs as PID 1 with no libc in the initramfs;
    # an explicit --target keeps these flags off build scripts and the host build.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release \
        -p microsandbox-guest --target x86_64-unknown-linux-gnu
    if ! cmp -s "$bin" "$KDIR/msb-guest-init"; then
        install -m 0755 "$bin" "$KDIR/msb-guest-init.new"
        mv "$KDIR/msb-guest-init.new" "$KDIR/msb-guest-init"
        log "guest init -> $KDIR/msb-guest-init"
    fi
}

install_netd() {
    # A host program built with the workspace's dev profile (dependencies at
    # opt-level 3), which reuses the host build of the core instead of a
    # second, release build of everything; stripped of its debug info.
    cargo build -q -p msb-netd
    local bin=target/debug/msb-netd
    strip -o "$KDIR/msb-netd.new" "$bin"
    if cmp -s "$KDIR/msb-netd.new" "$KDIR/msb-netd"; then
        rm -f "$KDIR/msb-netd.new"
    else
        chmod 0755 "$KDIR/msb-netd.new"
        mv "$KDIR/msb-netd.new" "$KDIR/msb-netd"
        log "network process -> $KDIR/msb-netd"
    fi
}

VMLINUX=1
install_kernel
install_guest_init
install_netd
