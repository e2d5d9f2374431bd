#!/usr/bin/env bash
# One accelerator's check of the automatic training settings, start to finish in at most 8 minutes on
# one H100 or H200: s250M and s1B, AR and MDM, bf16, the chunked loss (model.loss_chunk), and per size
# the least recompute that fits (remat none, then dots, then full; s1B first tries gradient
# accumulation instead of remat). Each point is bench/train_bench.py's real train step in a fresh
# process: step time, tokens/s, MFU (datasheet bf16 peak) and the allocator's peak memory, one JSON
# line per point in OUT/results.jsonl, plus the device and what was tried in OUT/tries.txt.
#
#   bench/gpu_check.sh [OUT]          # default OUT: bench/results/gpu-check-<UTC time>
#   GPU_CHECK_TINY=1 bench/gpu_check.sh OUT   # a tiny CPU-sized run of the same script (tests/test_gpu_check.py)
#
# PYTHON picks the interpreter (default: python); GPU_CHECK_BUDGET_S the overall limit (default 450).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-check-$(date -u +%Y-%m-%dT%H%M%SZ)}
py=${PYTHON:-python}
budget=${GPU_CHECK_BUDGET_S:-450}
mkdir -p "$out"
start=$SECONDS

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  sizes="s0.1M"; batch=4; seq=32; vocab=64; chunk=16; point_s=120
  common=(--steps 2 --warmup 1 --reps 1 --peak_n 256)
  tries_for() { echo "none:2"; }   # remat:micro_batch (exercises accumulation and the chunked loss)
else
  sizes="s250M s1B"; batch=16; seq=2048; vocab=50304; chunk=512; point_s=170
  common=(--steps 5 --warmup 2 --reps 2)
  tries_for() { if [ "$1" = s1B ]; then echo "none:8 dots:0 full:0"; else echo "none:0 dots:0 full:0"; fi; }
fi

{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; "$py" -c 'import jax; print(jax.__version__, jax.devices())'; } > "$out/device.txt" 2>&1

status=0
for size in $sizes; do
  for objective in ar mdm; do
    done_point=0
    for try in $(tries_for "$size"); do
      left=$((budget - (SECONDS - start)))
      if [ "$left" -lt 30 ]; then echo "$size $objective: out of time" | tee -a "$out/tries.txt"; status=1; break; fi
      remat=${try%%:*}; micro=${try##*:}
      t=$(( left < point_s ? left : point_s ))
      timeout "$t" "$py" -m bench.train_bench --size "$size" --objective "$objective" --batch "$batch" \
          --seq_len "$seq" --vocab "$vocab" --remat "$remat" --loss_chunk "$chunk" --micro_batch "$micro" \
          "${common[@]}" --json_out "$out/results.jsonl" > "$out/$size-$objective-$remat-$micro.log" 2>&1
      rc=$?
      echo "$size $objective remat=$remat micro_batch=$micro loss_chunk=$chunk: exit $rc" | tee -a "$out/tries.txt"
      if [ "$rc" = 0 ]; then done_point=1; break; fi
    done
    [ "$done_point" = 1 ] || status=1
  done
done

"$py" - "$out/results.jsonl" <<'PY' | tee "$out/summary.txt"
import json, sys
try:
  rows = [json.loads(l) for l in open(sys.argv[1])]
except FileNotFoundError:
  rows = []
print(f"{'size':6} {'obj':4} {'remat':5} {'micro':5} {'step s':>8} {'tok/s':>10} {'MFU':>6} {'peak GiB':>8}")
for r in rows:
  peak = r.get("device_peak_mb") or r.get("peak_rss_mb") or 0
  print(f"{r['size']:6} {r['objective']:4} {r['remat']:5} {r['micro_batch']:5} {r['step_s']:8.3f} "
        f"{r['tokens_per_s']:10.0f} {100 * r['mfu']:5.1f}% {peak / 1024:8.2f}")
PY
echo "elapsed $((SECONDS - start)) s; results in $out" | tee -a "$out/tries.txt"
exit $status
