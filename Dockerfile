# Weft's image: both binaries, /usr/local/bin/weft-control-plane and
# /usr/local/bin/weft-proxy, on an empty base with only the C runtime they
# load, iptables/ip6tables for the init container, and the CA bundle;
# runs as 1337:1337 (the proxy UID the interception
# rules exclude). Build and push: see the README, "Install on Kubernetes".
# image/Dockerfile.prebuilt makes the same image from binaries built on the host.

# The toolchain the project builds with; Debian 12 (glibc 2.36) underneath.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm

FROM ${RUST_IMAGE} AS build
# iptables for the init container's rules (copied into the image by
# image/stage-rootfs.sh with the libraries and modules it loads).
RUN apt-get update && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weft-proxy -p weft-control-plane --bins \
    && image/stage-rootfs.sh target/release /rootfs

FROM scratch
COPY --from=build /rootfs/ /
# The injector's containers run `weft-proxy` by name, and `weft-proxy
# iptables` runs `iptables`/`ip6tables` (in /usr/sbin) by name.
ENV PATH=/usr/local/bin:/usr/sbin
USER 1337:1337
# No entrypoint: a Pod names the binary (`weft-control-plane serve ...`,
# `weft-proxy run`), and so can `podman run IMAGE weft-proxy --help`.
CMD ["weft-control-plane", "serve", "--kubernetes"]
