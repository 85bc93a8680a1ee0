#!/usr/bin/env bash
# The main job: install what is missing, then run the default experiment (configs/default.yaml:
# FedAvg, Fashion-MNIST IID, 100 clients, 10 per round, 50 rounds) on the local simulation engine.
# Extra arguments go to `immunefl run`, e.g. `bash scripts/demo.sh --set num-server-rounds=10`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/immunefl" run configs/default.yaml "$@"
