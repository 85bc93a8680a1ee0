#!/usr/bin/env bash
# Install what is missing, then run the whole test suite (unit tests and the real `flwr run`
# end-to-end tests). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IMMUNEFL_TEST_TOOLS=1  # also prometheus, docker-compose, openssl, ssh-keygen (apt)
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
"$VENV/bin/python" -m ruff check .
exec "$VENV/bin/python" -m pytest "$@"
