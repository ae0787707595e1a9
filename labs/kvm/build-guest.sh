#!/usr/bin/env bash
# Builds the lab's tiny guest from Debian packages only: the vmlinuz of Debian's
# linux-image-amd64 kernel and an initramfs of busybox-static whose /init
#   - loads virtio_pci, virtio_net and virtio_blk (with their module dependencies),
#   - puts 10.10.0.5/24 (or $GUEST_ADDR) on eth0, default route via 10.10.0.1 (or
#     $GUEST_GW),
#   - answers TCP echo on port 7 (busybox nc -ll -e cat); ICMP echo is the kernel's,
#   - if /bin/migroute-guest is there (an archive appended by the lab's
#     kvm::with_agent), runs it in the background, output on the console: UDP
#     reflector, TCP echo, O_DIRECT disk writer and control port (labs/src/guest_agent);
#   - otherwise writes sequence-numbered 512-byte blocks to /dev/vda continuously
#     (block i at sector i mod 2048, "migroute-seq <i>"), so a disk copy under load is
#     exercised.
#
#   bash labs/kvm/build-guest.sh OUT_DIR
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initramfs.gz; idempotent (both present → nothing
# to do). Needs apt-get update to have run once, busybox-static installed and gzip.
set -euo pipefail

out=${1:?usage: build-guest.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# A guest built by another version of this script is rebuilt.
stamp=$(cat "$0" | sha256sum | cut -d' ' -f1)
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.gz" ] &&
    [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build-guest: $out already holds the guest"
    exit 0
fi
rm -f "$out/kvm-verdict"
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "build-guest: busybox-static is not installed" >&2; exit 1; }
addr=${GUEST_ADDR:-10.10.0.5/24}
gw=${GUEST_GW:-10.10.0.1}

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "build-guest: no linux-image-amd64 in apt's lists (apt-get update?)" >&2; exit 1; }
(cd "$work" && apt-get download -q "$kpkg" >/dev/null 2>&1)
dpkg -x "$work"/"$kpkg"_*.deb "$work/k"
kver=$(ls "$work/k/lib/modules" | head -1)
moddir="$work/k/lib/modules/$kver"
# The package leaves modules.dep to the installing host's depmod.
if command -v depmod >/dev/null; then depmod -b "$work/k" "$kver"; else "$busybox" depmod -b "$work/k" "$kver"; fi

rd="$work/rd"
mkdir -p "$rd"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$rd/bin/busybox"

# Module closure of virtio_net and virtio_blk from modules.dep, dependencies first.
declare -A done_mods=()
order=()
add_mod() {
    local rel=$1 dep
    [ -n "${done_mods[$rel]:-}" ] && return
    done_mods[$rel]=1
    for dep in $(awk -F': ' -v m="$rel" '$1 == m { print $2 }' "$moddir/modules.dep"); do
        add_mod "$dep"
    done
    order+=("$rel")
}
for name in virtio_pci virtio_net virtio_blk; do
    rel=$(awk -F: -v n="/$name.ko" 'index($1, n) { print $1; exit }' "$moddir/modules.dep")
    if [ -n "$rel" ]; then
        add_mod "$rel"
    elif ! grep -q "/$name.ko" "$moddir/modules.builtin"; then
        echo "build-guest: $name neither a module nor built into $kver" >&2
        exit 1
    fi
done
: >"$rd/modules.order"
for rel in "${order[@]}"; do
    base=$(basename "$rel")
    case "$base" in
        *.xz) xz -dc "$moddir/$rel" >"$rd/lib/modules/${base%.xz}"; base=${base%.xz} ;;
        *.zst) zstd -qdc "$moddir/$rel" >"$rd/lib/modules/${base%.zst}"; base=${base%.zst} ;;
        *) cp "$moddir/$rel" "$rd/lib/modules/$base" ;;
    esac
    echo "$base" >>"$rd/modules.order"
done

cat >"$rd/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in \$(cat /modules.order); do insmod /lib/modules/\$m; done
ip link set lo up
i=0
while ! ip link show eth0 >/dev/null 2>&1 && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i+1)); done
ip link set eth0 up
ip addr add $addr dev eth0
ip route add default via $gw
echo "migroute-guest: eth0 $addr up, default via $gw"
# TCP echo on port 7.
nc -ll -p 7 -e cat &
if [ -x /bin/migroute-guest ]; then
    # The agent prints "migroute-guest: ready" itself once its ports are open.
    /bin/migroute-guest &
    exec sh -c 'while :; do sleep 3600; done'
fi
# Sequence-numbered blocks on the disk, continuously (/dev/vda appears a little
# after its module loads).
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
if [ -b /dev/vda ]; then
    (
        n=0
        while :; do
            printf 'migroute-seq %016d\n' \$n | dd of=/dev/vda bs=512 seek=\$((n % 2048)) conv=notrunc,sync 2>/dev/null
            n=\$((n+1))
            [ \$((n % 64)) -eq 0 ] && sync
            usleep 20000
        done
    ) &
fi
echo "migroute-guest: ready"
exec sh -c 'while :; do sleep 3600; done'
INIT
chmod +x "$rd/init"

(cd "$rd" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9 >"$work/initramfs.gz"
cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinuz"
mv "$work/initramfs.gz" "$out/initramfs.gz"
mv "$work/vmlinuz" "$out/vmlinuz"
echo "$stamp" >"$out/stamp"
echo "build-guest: $out/vmlinuz ($kver) and initramfs.gz (modules: $(tr '\n' ' ' <"$rd/modules.order"))"
