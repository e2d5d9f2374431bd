#!/usr/bin/env bash
# One accelerator, a whole grid's shapes: the study's sizes (s0.4M, s1M, s3M at 16 x 128 tokens)
# solo and in stacks of 8 / 32 / 64, then an s10M and an s25M stack of 8 at batch 64, start to
# finish in at most 8 minutes on one H100 or H200. Each row is bench/stack_bench.py (the trainer's
# solo step, or its vmapped stack program, built and timed from a fresh start): run-steps/s,
# start-to-first-step and aggregate MFU (datasheet bf16 peak), one JSON line per row in
# OUT/stack.jsonl; nvidia-smi samples the GPU's utilisation every 200 ms throughout into
# OUT/gpu_util.csv; OUT/summary.json has each row's speed-up over solo and the busy fraction.
# Goals (issue text): run-steps/s >= 10x solo at a stack of 32, the GPU busy >= 70% of the time,
# aggregate MFU >= 25% for the s10M-s25M stack.
#
#   bench/gpu_grid.sh [OUT]                   # default OUT: bench/results/gpu-grid-<UTC time>
#   GPU_GRID_TINY=1 bench/gpu_grid.sh OUT     # a tiny CPU-sized run of the same script (tests/test_stack.py)
#
# PYTHON picks the interpreter (default: python); GPU_GRID_BUDGET_S the overall limit (default 450).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-grid-$(date -u +%Y-%m-%dT%H%M%SZ)}
py=${PYTHON:-python}
budget=${GPU_GRID_BUDGET_S:-450}
mkdir -p "$out"
start=$SECONDS

if [ "${GPU_GRID_TINY:-0}" = 1 ]; then
  study=(--sizes=s0.1M --stacks=1,2 --batch=4 --seq_len=32 --vocab=64 --seconds=0.5)
  large=(--sizes=s0.1M --stacks=2 --batch=8 --seq_len=32 --vocab=64 --seconds=0.5)
else
  study=(--sizes=s0.4M,s1M,s3M --stacks=1,8,32,64 --batch=16 --seq_len=128 --vocab=4096 --seconds=4)
  large=(--sizes=s10M,s25M --stacks=8 --batch=64 --seq_len=128 --vocab=4096 --seconds=6)
fi

{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; "$py" -c 'import jax; print(jax.__version__, jax.devices())'; } > "$out/device.txt" 2>&1

sampler=""
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
    > "$out/gpu_util.csv" 2> /dev/null &
  sampler=$!
fi

status=0
for objective in mdm ar; do
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt 60 ]; then echo "study shapes, $objective: out of time" | tee -a "$out/log.txt"; status=1; break; fi
  timeout --signal=KILL "$((left - 60))" "$py" -m bench.stack_bench "${study[@]}" --objective="$objective" \
    --out="$out/stack.jsonl" >> "$out/log.txt" 2>&1 || { echo "study shapes, $objective: exit $?" | tee -a "$out/log.txt"; status=1; }
  [ "${GPU_GRID_TINY:-0}" = 1 ] && break   # one objective is enough to exercise the script
done
left=$((budget - (SECONDS - start)))
if [ "$left" -gt 20 ]; then
  timeout --signal=KILL "$left" "$py" -m bench.stack_bench "${large[@]}" --objective=mdm \
    --out="$out/stack.jsonl" >> "$out/log.txt" 2>&1 || { echo "large stack: exit $?" | tee -a "$out/log.txt"; status=1; }
else
  echo "large stack: out of time" | tee -a "$out/log.txt"; status=1
fi

[ -n "$sampler" ] && kill "$sampler" 2> /dev/null
"$py" -m bench.stack_bench --summarise="$out" > /dev/null || status=1
echo "$out: $(wc -l < "$out/stack.jsonl" 2> /dev/null || echo 0) rows in $((SECONDS - start)) s" | tee -a "$out/log.txt"
exit $status
