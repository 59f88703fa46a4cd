#!/usr/bin/env bash
# Lays out the runtime image's whole filesystem in DEST from two built
# binaries: /usr/local/bin/weft-proxy and /usr/local/bin/weft-control-plane,
# iptables and ip6tables for the injected init container (`weft-proxy
# iptables` runs them: Debian's xtables multi-call binaries, nf_tables as
# `iptables`/`ip6tables` and the legacy backend as `iptables-legacy`/
# `ip6tables-legacy`, with their extension modules), the shared libraries
# they all load (as `ldd` lists them: glibc's loader, libc,
# libm, libgcc_s; glibc >= 2.34 has DNS and files lookups built into libc, so
# no NSS modules are needed), and the CA bundle (rustls-native-certs reads
# /etc/ssl/certs/ca-certificates.crt). Needs ldd and strip (binutils). Used by the Dockerfile's build stage
# and by image/build-local.sh, so both images hold the same files.
# Usage: stage-rootfs.sh BIN_DIR DEST
set -euo pipefail
bin_dir=$1 dest=$2
bins=("$bin_dir/weft-proxy" "$bin_dir/weft-control-plane")
xtables_dir=/usr/lib/x86_64-linux-gnu/xtables
xtables=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi)
for x in "${xtables[@]}" "$xtables_dir"; do
  [[ -e "$x" ]] || { echo "stage-rootfs: $x is missing (apt-get install iptables)" >&2; exit 1; }
done
mkdir -p "$dest/usr/local/bin" "$dest/usr/sbin" "$dest/etc/ssl/certs" "$dest/tmp" "$dest/run"
for b in "${bins[@]}"; do
  [[ -x "$b" ]] || { echo "stage-rootfs: $b is not an executable" >&2; exit 1; }
  install -m 0755 "$b" "$dest/usr/local/bin/"
  # The release profile keeps DWARF for profiling; the image keeps only the
  # symbols (backtraces still name functions), about a fifth of the size.
  strip --strip-debug "$dest/usr/local/bin/${b##*/}"
done
# iptables: the two multi-call binaries pick their tool from argv[0].
install -m 0755 "${xtables[@]}" "$dest/usr/sbin/"
for t in iptables ip6tables iptables-nft ip6tables-nft; do ln -sf xtables-nft-multi "$dest/usr/sbin/$t"; done
for t in iptables-legacy ip6tables-legacy; do ln -sf xtables-legacy-multi "$dest/usr/sbin/$t"; done
mkdir -p "$dest$xtables_dir"
cp -L "$xtables_dir"/*.so "$dest$xtables_dir/"
# `-p tcp` is looked up in /etc/protocols when libxtables' own table lacks it.
[[ -f /etc/protocols ]] && cp -L /etc/protocols "$dest/etc/protocols"
# Every library path ldd resolves (the `=> /path` ones and the loader),
# copied with its symlink resolved, at the path the binary asks for.
objects=("${bins[@]}" "${xtables[@]}" "$xtables_dir"/*.so)
libs=$(ldd "${objects[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u)
if ldd "${objects[@]}" 2>/dev/null | grep -q "not found"; then
  echo "stage-rootfs: a library is missing:" >&2; ldd "${objects[@]}" >&2; exit 1
fi
for lib in $libs; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$dest/etc/ssl/certs/ca-certificates.crt"
# A writable /tmp is not needed (the root filesystem is read-only in the
# chart); the empty directory only keeps tools that expect it from failing.
chmod 1777 "$dest/tmp"
echo "stage-rootfs: $(printf '%s ' "${bins[@]##*/}")+ iptables + $(echo $libs | wc -w) libraries + CA bundle in $dest"
