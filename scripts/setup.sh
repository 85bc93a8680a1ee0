#!/usr/bin/env bash
# Install everything immunefl needs on a Debian/Ubuntu machine (idempotent):
#   - Debian packages: the Fashion-MNIST IDX files, python3-venv when venv/pip is missing;
#   - a virtual environment in .venv with the project (editable) and its test extras.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${IMMUNEFL_VENV:-$ROOT/.venv}"

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_pkgs=()
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${IMMUNEFL_DATA:-}" ]; then
  apt_pkgs+=(dataset-fashion-mnist)
fi
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt_pkgs+=(python3-venv)
fi
if [ "${IMMUNEFL_TEST_TOOLS:-0}" = 1 ]; then
  # integration tests: a real Prometheus, offline compose validation, TLS certs, node keys
  command -v prometheus >/dev/null 2>&1 || apt_pkgs+=(prometheus)
  command -v docker-compose >/dev/null 2>&1 || apt_pkgs+=(docker-compose)
  command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
  command -v ssh-keygen >/dev/null 2>&1 || apt_pkgs+=(openssh-client)
  # tests/test_compose_e2e.py: a private Docker daemon, offline stand-in images
  # (scripts/build-standin-images.sh: debootstrap, Debian's Prometheus + Pushgateway)
  command -v dockerd >/dev/null 2>&1 || apt_pkgs+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || apt_pkgs+=(debootstrap)
  command -v prometheus-pushgateway >/dev/null 2>&1 || apt_pkgs+=(prometheus-pushgateway)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${apt_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${apt_pkgs[@]}" >/dev/null
  else
    echo "setup: no apt-get; please install: ${apt_pkgs[*]} (or set IMMUNEFL_DATA to the data)" >&2
  fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"setup: Python >= 3.10 required, found {sys.version.split()[0]}")
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.immunefl-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing immunefl and its dependencies into $VENV (torch is large; a few minutes)"
  # pip's and setuptools' notes (e.g. the editable-install banner about same-named folders,
  # which is how this project is laid out on purpose) go to a log, shown if the install fails
  log="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
         "$VENV/bin/python" -m pip install -q -e "$ROOT[test]"; } >"$log" 2>&1 ||
     ! "$VENV/bin/python" -c "import flwr, torch, immunefl, task" 2>>"$log"; then
    cat "$log" >&2
    echo "setup: the install failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
