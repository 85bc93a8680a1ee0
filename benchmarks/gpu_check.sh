#!/usr/bin/env bash
# The CUDA paths, checked on a GPU machine in one go (docs/performance.md has the figures):
#   1. aggregation rules on CUDA vs CPU: same results, speed-up (benchmarks/gpu_aggregation.py);
#   2. local training on CUDA: FL-WBC's cost there, paper and official variants
#      (benchmarks/wbc_overhead.py --device cuda);
#   3. whole `immunefl run`s through Flower's simulation engine with fractional GPUs per client
#      (--gpus-per-client 0.25: Ray packs 4 ClientApp actors on one GPU), beside the same runs on
#      CPU actors with device=cpu; the CNN (default experiment) and ResNet-18. A sampler records
#      which processes hold the GPU, once a second, to show the sharing.
# Every step runs even if one before it failed; each step's exit code is in OUTDIR/steps.txt.
# With GPU_CHECK_TARBALL=FILE, OUTDIR is packed into FILE after every step.
#
#   bash benchmarks/gpu_check.sh OUTDIR [ROUNDS_CNN] [ROUNDS_RESNET] [EXTRA --set ...]
#
# Needs: the project's dependencies importable by `python3`, `immunefl`'s entry points (or
# `python3 -m immunefl.cli`), Fashion-MNIST where `immunefl` finds it (IMMUNEFL_DATA or data-dir).
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTDIR [ROUNDS_CNN] [ROUNDS_RESNET] [--set k=v ...]}
rounds_cnn=${2:-8}
rounds_resnet=${3:-3}
shift $(($# < 3 ? $# : 3))
extra=("$@")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
py=${PYTHON:-python3}

step() {  # step NAME TIMEOUT COMMAND...: run, log to OUTDIR/NAME.log, record the exit code
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name rc=$? seconds=$((SECONDS - t0))" | tee -a "$out/steps.txt"
  # what is done so far, in one file, in case a later step outlives the caller's limit
  [ -z "${GPU_CHECK_TARBALL:-}" ] || tar czf "$GPU_CHECK_TARBALL" -C "$out" --exclude=checkpoint.pt .
}

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
$py -c "import torch, flwr, ray; print(torch.__version__, torch.cuda.get_device_name(0), \
flwr.__version__ if hasattr(flwr, '__version__') else '', ray.__version__)" > "$out/versions.txt" 2>&1

step aggregation 150 $py benchmarks/gpu_aggregation.py --clients 20 50 --json "$out/aggregation.json"
step wbc-paper 60 $py benchmarks/wbc_overhead.py --device cuda --repeat 7
step wbc-official 120 $py benchmarks/wbc_overhead.py --device cuda --repeat 3 --epochs 10 \
  --batch-size 10 --momentum 0.5 --variant official
step test-training 60 $py -m pytest -q -p no:cacheprovider tests/test_training.py

# which processes hold GPU memory, once a second, during the runs
nvidia-smi --query-compute-apps=timestamp,pid,used_memory --format=csv -l 1 \
  > "$out/gpu-apps.csv" 2>&1 &
sampler=$!
run() {  # run NAME GPUS DEVICE MODEL ROUNDS
  step "run-$1" 180 $py -m immunefl.cli run configs/default.yaml --quiet --gpus-per-client "$2" \
    --set device="$3" --set model="$4" --set num-server-rounds="$5" --set run-name="$1" \
    --set results-dir="$out/results" "${extra[@]}"
}
run cnn-gpu 0.25 cuda cnn-fmnist "$rounds_cnn"
run cnn-cpu 0 cpu cnn-fmnist "$rounds_cnn"
run resnet18-gpu 0.25 cuda resnet18 "$rounds_resnet"
run resnet18-cpu 0 cpu resnet18 "$rounds_resnet"
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null

# one line per run: median seconds per round, mean client training seconds, final accuracy
$py - "$out/results" > "$out/runs.txt" 2>&1 <<'EOF'
import json, statistics, sys
from pathlib import Path
for rounds in sorted(Path(sys.argv[1]).glob("**/rounds.jsonl")):
    rows = [json.loads(line) for line in rounds.read_text().splitlines() if line.strip()]
    steady = rows[1:] or rows
    med = lambda key: statistics.median(r[key] for r in steady if key in r)
    print(f"{rounds.parent.relative_to(sys.argv[1])}: rounds {len(rows)}, "
          f"median round {med('round_seconds'):.2f}s, train phase {med('train_phase_seconds'):.2f}s, "
          f"client train {med('client.seconds'):.2f}s, aggregate {med('aggregate_seconds'):.4f}s, "
          f"eval {med('eval_seconds'):.2f}s, final acc {rows[-1]['benign_acc']:.4f}")
EOF
cat "$out/steps.txt" "$out/runs.txt"
[ -z "${GPU_CHECK_TARBALL:-}" ] || tar czf "$GPU_CHECK_TARBALL" -C "$out" --exclude=checkpoint.pt .
