#!/usr/bin/env bash
# Builds Weft's image without pulling anything: the binaries with the
# host's cargo (release), their root filesystem with image/stage-rootfs.sh
# (the same script the Dockerfile's build stage runs), then an image FROM
# scratch with buildah (or podman) and image/Dockerfile.prebuilt. Then it
# runs both binaries inside the root filesystem (chroot) to show that they
# start with only what the image holds.
# Usage: image/build-local.sh [IMAGE]   (default ghcr.io/weft-mesh/weft:<workspace version>)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
image=${1:-ghcr.io/weft-mesh/weft:$version}

cargo build --release --locked -p weft-proxy -p weft-control-plane --bins
rm -rf image/rootfs
image/stage-rootfs.sh target/release image/rootfs

# The binaries must run with nothing but the staged files.
for b in weft-proxy weft-control-plane; do
  chroot --userspec=1337:1337 image/rootfs /usr/local/bin/$b --version
done

if command -v buildah >/dev/null; then
  buildah build --layers=false -f image/Dockerfile.prebuilt -t "$image" image
elif command -v podman >/dev/null; then
  podman build -f image/Dockerfile.prebuilt -t "$image" image
else
  echo "build-local: neither buildah nor podman is installed (apt-get install buildah)" >&2
  exit 1
fi
echo "built $image"
