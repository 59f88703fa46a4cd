#!/usr/bin/env bash
# Lays out the runtime image's whole filesystem in DEST from two built
# binaries: /usr/local/bin/weft-proxy and /usr/local/bin/weft-control-plane,
# the shared libraries they load (as `ldd` lists them: glibc's loader, libc,
# libm, libgcc_s; glibc >= 2.34 has DNS and files lookups built into libc, so
# no NSS modules are needed), and the CA bundle (rustls-native-certs reads
# /etc/ssl/certs/ca-certificates.crt). Needs ldd and strip (binutils). Used by the Dockerfile's build stage
# and by image/build-local.sh, so both images hold the same files.
# Usage: stage-rootfs.sh BIN_DIR DEST
set -euo pipefail
bin_dir=$1 dest=$2
bins=("$bin_dir/weft-proxy" "$bin_dir/weft-control-plane")
mkdir -p "$dest/usr/local/bin" "$dest/etc/ssl/certs" "$dest/tmp"
for b in "${bins[@]}"; do
  [[ -x "$b" ]] || { echo "stage-rootfs: $b is not an executable" >&2; exit 1; }
  install -m 0755 "$b" "$dest/usr/local/bin/"
  # The release profile keeps DWARF for profiling; the image keeps only the
  # symbols (backtraces still name functions), about a fifth of the size.
  strip --strip-debug "$dest/usr/local/bin/${b##*/}"
done
# Every library path ldd resolves (the `=> /path` ones and the loader),
# copied with its symlink resolved, at the path the binary asks for.
libs=$(ldd "${bins[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
if grep -q "not found" <(ldd "${bins[@]}"); then
  echo "stage-rootfs: a library is missing:" >&2; ldd "${bins[@]}" >&2; exit 1
fi
for lib in $libs; do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$dest/etc/ssl/certs/ca-certificates.crt"
# A writable /tmp is not needed (the root filesystem is read-only in the
# chart); the empty directory only keeps tools that expect it from failing.
chmod 1777 "$dest/tmp"
echo "stage-rootfs: $(printf '%s ' "${bins[@]##*/}")+ $(echo $libs | wc -w) libraries + CA bundle in $dest"
