#!/usr/bin/env bash
# Installs Debian's QEMU 7.2 system emulator into a private prefix, beside whatever
# qemu-utils the host has (Debian's qemu-system-x86 7.2 "Breaks" qemu-utils 10, which
# the storage tests need for qemu-storage-daemon 10).
#
#   bash labs/kvm/fetch-qemu.sh PREFIX
#
# Downloads qemu-system-x86, qemu-system-data, qemu-system-common and every library
# package in their dependency closure that is not installed on the host
# (apt-get download, no dpkg database change), extracts them with dpkg -x into
# PREFIX/root and writes PREFIX/bin/qemu-system-x86_64, a wrapper that sets
# LD_LIBRARY_PATH and the firmware directory (-L). Idempotent: a finished prefix (its
# wrapper answers --version) is left alone. Needs apt-get update to have run once.
set -euo pipefail

prefix=${1:?usage: fetch-qemu.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
wrapper="$prefix/bin/qemu-system-x86_64"

if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
    echo "fetch-qemu: $prefix already holds $("$wrapper" --version | head -1)"
    exit 0
fi

debs="$prefix/debs"
root="$prefix/root"
mkdir -p "$debs" "$root" "$prefix/bin"

installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# Dependency closure, stopping at packages the host has. Alternatives ("|") take the
# first one; virtual packages resolve through apt-cache.
want=(qemu-system-x86 qemu-system-data qemu-system-common)
declare -A seen=()
queue=("${want[@]}")
fetch=()
while [ ${#queue[@]} -gt 0 ]; do
    pkg=${queue[0]}
    queue=("${queue[@]:1}")
    [ -n "${seen[$pkg]:-}" ] && continue
    seen[$pkg]=1
    case " ${want[*]} " in
        *" $pkg "*) ;;
        *) installed "$pkg" && continue ;;
    esac
    fetch+=("$pkg")
    while read -r dep; do
        [ -n "$dep" ] && queue+=("$dep")
    done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$pkg" 2>/dev/null |
        awk '/^  (\|)?Depends:/ && !alt { d=$2; if (d ~ /^</) next; print d } { alt = ($1 == "|Depends:") }')
done

echo "fetch-qemu: downloading ${#fetch[@]} packages: ${fetch[*]}"
(cd "$debs" && apt-get download -q "${fetch[@]}" >/dev/null)
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$root"
done

libdirs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
cat >"$wrapper" <<WRAP
#!/bin/sh
# QEMU 7.2 from a private prefix (labs/kvm/fetch-qemu.sh).
export LD_LIBRARY_PATH="$libdirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$root/usr/bin/qemu-system-x86_64" -L "$root/usr/share/qemu" -L "$root/usr/share/seabios" "\$@"
WRAP
chmod +x "$wrapper"
"$wrapper" --version | head -1
