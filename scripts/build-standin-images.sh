#!/usr/bin/env bash
# Build local stand-ins for the images docker/compose.yml and its overlays pull, using only
# Debian's archive and PyPI (for CI, which reaches no image registry):
#
#   immunefl-standin/debian-python:bookworm  debootstrap --variant=minbase bookworm + python3, imported
#   flwr/superlink:$FLWR_VERSION             Flower's entrypoints and user (app, uid 49999, /app)
#   flwr/supernode:$FLWR_VERSION
#   flwr/superexec:$FLWR_VERSION             + a local wheelhouse that docker/Dockerfile installs from
#   prom/prometheus:v2.53.2                  Debian's `prometheus` binary
#   prom/pushgateway:v1.9.0                  Debian's `prometheus-pushgateway` binary
#
#   DOCKER_HOST=unix:///private/docker.sock bash scripts/build-standin-images.sh
#   (refuses the default daemon unless IMMUNEFL_STANDIN_ANY_DAEMON=1: see below)
#
# The debootstrap tarball, the wheelhouse, the Debian binaries and the heavy stand-in images
# (`docker save`) are cached in
# $IMMUNEFL_DOCKER_CACHE (default ~/.cache/immunefl/docker, outside the repository so that fresh
# clones on the same machine reuse it); from scratch it takes a few minutes more.
# Images are built with the classic builder unless DOCKER_BUILDKIT=1 is set.
#
# Torch: PyPI's Linux torch is a multi-GB CUDA build. The wheelhouse takes torch==$TORCH_VERSION
# the way pip finds it (set TORCH_WHEEL=/path/to/torch-...+cpu-...whl for a CPU build); the
# matching torchvision from PyPI is a CUDA build that does not import beside CPU torch, so the
# stand-in superexec checks every dependency but torchvision on import (immunefl only needs
# torchvision for the resnet18 model and the dataset download fallback).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${IMMUNEFL_DOCKER_CACHE:-$HOME/.cache/immunefl/docker}"
FLWR_VERSION="${FLWR_VERSION:-1.41.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
DOCKER="${DOCKER:-docker}"
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
mkdir -p "$CACHE"
log() { echo "standin: $*" >&2; }

# The stand-ins take the names of the real images (flwr/*, prom/*): in a daemon that also serves
# other work they would shadow the real ones. Only a daemon named explicitly is used.
if [ -z "${DOCKER_HOST:-}" ] && [ "${IMMUNEFL_STANDIN_ANY_DAEMON:-0}" != 1 ]; then
  log "refusing to tag stand-ins as flwr/* and prom/* in the default Docker daemon, where they"
  log "would shadow the real images: point DOCKER_HOST at a private daemon (as"
  log "tests/test_compose_e2e.py does), or set IMMUNEFL_STANDIN_ANY_DAEMON=1 to use this one"
  exit 2
fi

# ---- 1. base image: debootstrap minbase bookworm with python3 -> docker import
base_tar="$CACHE/bookworm-minbase-python3.tar"
if [ ! -s "$base_tar" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
  [ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
  rootfs="$CACHE/rootfs.tmp"
  rm -rf "$rootfs"
  log "debootstrap bookworm (minbase + python3) from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
  rm -rf "$rootfs"
fi

# ---- 2. wheelhouses (built on this host, for CPython 3.11 = bookworm's python3)
# keyed by the dependency list too: a dependency added to pyproject.toml gets a new wheelhouse
app_reqs="$("$PYTHON" "$ROOT/docker/requirements.py" "$ROOT/pyproject.toml")"
reqs_key="$(printf '%s\n%s\n' "$app_reqs" "${TORCH_WHEEL:-}" | sha256sum | cut -c1-12)"
wheels="$CACHE/wheels-flwr$FLWR_VERSION-torch$TORCH_VERSION-$reqs_key"
if [ ! -f "$wheels/.complete" ]; then
  log "wheelhouse in $wheels (pip download)"
  rm -rf "$wheels" && mkdir -p "$wheels/flwr" "$wheels/app"
  reqs="$wheels/app-requirements.txt"
  printf '%s\n' "$app_reqs" >"$reqs"
  torch_req="torch==$TORCH_VERSION"
  [ -n "${TORCH_WHEEL:-}" ] && torch_req="$TORCH_WHEEL"
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64 \
    --implementation cp -d "$wheels/flwr" "flwr==$FLWR_VERSION"
  "$PYTHON" -m pip download -q -d "$wheels/app" "$torch_req"
  "$PYTHON" -m pip download -q --no-deps -d "$wheels/app" "torchvision==$TORCHVISION_VERSION"
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64 \
    --implementation cp -d "$wheels/app" "flwr==$FLWR_VERSION" "$torch_req" \
    -r <(grep -v -e '^torch' "$reqs")
  touch "$wheels/.complete"
fi

# ---- 3. Debian's Prometheus and Pushgateway binaries
debs="$CACHE/prometheus-debs"
if [ ! -x "$debs/bin/prometheus" ] || [ ! -x "$debs/bin/pushgateway" ]; then
  log "Debian packages prometheus, prometheus-pushgateway (apt-get download)"
  rm -rf "$debs" && mkdir -p "$debs/unpacked" "$debs/bin"
  (cd "$debs" && apt-get download prometheus prometheus-pushgateway >/dev/null)
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$debs/unpacked"; done
  cp "$debs/unpacked/usr/bin/prometheus" "$debs/bin/prometheus"
  cp "$debs/unpacked/usr/bin/prometheus-pushgateway" "$debs/bin/pushgateway"
  rm -rf "$debs/unpacked" "$debs"/*.deb
fi

# ---- 4. images. The heavy ones (base, Flower, superexec + wheelhouse) are saved in the cache
# after a build and loaded from it next time (IMMUNEFL_STANDIN_IMAGE_CACHE=0: always build);
# the thin ones (superlink, supernode, Prometheus, Pushgateway) are always built.
heavy=(immunefl-standin/debian-python:bookworm "immunefl-standin/flwr:$FLWR_VERSION"
       "flwr/superexec:$FLWR_VERSION")
key=$({ cat "$ROOT/docker/standin/Dockerfile.flwr" "$ROOT/docker/standin/Dockerfile.superexec"
        ls "$wheels/flwr" "$wheels/app"; echo "$FLWR_VERSION"; stat -c %s "$base_tar"; } |
      sha256sum | cut -c1-16)
saved="$CACHE/standin-images-$key.tar"
have() {  # have IMAGE...: all there, built from this key (Dockerfiles, wheels, base)
  local image
  for image in "$@"; do
    [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "org.immunefl.standin-key"}}' \
        "$image" 2>/dev/null)" = "$key" ] || return 1
  done
}
if [ "${IMMUNEFL_STANDIN_IMAGE_CACHE:-1}" = 1 ] && [ -s "$saved" ] && ! have "${heavy[@]}"; then
  log "docker load of the cached stand-in base images ($(basename "$saved"))"
  "$DOCKER" load -q -i "$saved" >/dev/null
fi
if ! have immunefl-standin/debian-python:bookworm; then
  log "docker import of the base image"
  "$DOCKER" import -c 'CMD ["/bin/bash"]' -c "LABEL org.immunefl.standin-key=$key" "$base_tar" \
    immunefl-standin/debian-python:bookworm >/dev/null
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
build() {  # build TAG DOCKERFILE CONTEXT_DIR [--build-arg ...]
  local tag=$1 file=$2 dir=$3
  shift 3
  log "building $tag"
  "$DOCKER" build -q --network none -t "$tag" -f "$ROOT/docker/standin/$file" "$@" "$dir" >/dev/null
}
mkdir -p "$ctx/flwr" "$ctx/app" "$ctx/prom" "$ctx/empty"
cp -al "$wheels/flwr" "$ctx/flwr/wheelhouse" 2>/dev/null || cp -a "$wheels/flwr" "$ctx/flwr/wheelhouse"
cp -al "$wheels/app" "$ctx/app/wheelhouse" 2>/dev/null || cp -a "$wheels/app" "$ctx/app/wheelhouse"
cp -a "$debs/bin" "$ctx/prom/bin"
built_heavy=0
if ! have "immunefl-standin/flwr:$FLWR_VERSION"; then
  build "immunefl-standin/flwr:$FLWR_VERSION" Dockerfile.flwr "$ctx/flwr" \
    --build-arg "FLWR_VERSION=$FLWR_VERSION" --label "org.immunefl.standin-key=$key"
  built_heavy=1
fi
for name in superlink supernode; do
  build "flwr/$name:$FLWR_VERSION" Dockerfile.entrypoint "$ctx/empty" \
    --build-arg "BASE=immunefl-standin/flwr:$FLWR_VERSION" --build-arg "ENTRYPOINT_BIN=flower-$name"
done
if [ "$built_heavy" = 1 ] || ! have "flwr/superexec:$FLWR_VERSION"; then
  build "flwr/superexec:$FLWR_VERSION" Dockerfile.superexec "$ctx/app" \
    --build-arg "BASE=immunefl-standin/flwr:$FLWR_VERSION" --label "org.immunefl.standin-key=$key"
  built_heavy=1
fi
if [ "$built_heavy" = 1 ] && [ "${IMMUNEFL_STANDIN_IMAGE_CACHE:-1}" = 1 ]; then
  log "saving the stand-in base images to the cache"
  rm -f "$CACHE"/standin-images-*.tar
  "$DOCKER" save -o "$saved.tmp" "${heavy[@]}" && mv "$saved.tmp" "$saved"
fi
build prom/prometheus:v2.53.2 Dockerfile.prometheus "$ctx/prom" --build-arg BINARY=prometheus
build prom/pushgateway:v1.9.0 Dockerfile.prometheus "$ctx/prom" --build-arg BINARY=pushgateway
log "done: flwr/superlink, flwr/supernode, flwr/superexec:$FLWR_VERSION, prom/prometheus, prom/pushgateway"
