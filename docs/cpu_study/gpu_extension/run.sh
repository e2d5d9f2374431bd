#!/bin/bash
# The CPU study's out-of-reach part, on one NVIDIA H200 (device call of 2026-12-04, ~9 minutes):
# diffusion to 256 epochs at U = 51.2k and 64 at U = 204.8k (4x the CPU study), AR to 32 epochs at both, sizes s0.4M,
# s1M, s3M, the study's own recipe (configs/cpu_study.py: batch 16 x 128, per-family lr from
# docs/cpu_study/lr_choice.json, 32 evaluations per run) plus the multiple-choice task at every
# second evaluation. The machine's Python is 3.12, so its python-stdlib corpus (and tokenizer) differ
# from the CPU study's 3.11 one: these runs compare the families with each other, not with the CPU runs.
# f32 matmuls at full precision, as on the CPU. Run from the repository root with $OUT set; the
# pinned wheels that the device image lacks are carried in .whl/.
export PYTHONUNBUFFERED=1 DLMSCALE_CACHE=/tmp/dlmcache XLA_PYTHON_CLIENT_PREALLOCATE=false \
       JAX_DEFAULT_MATMUL_PRECISION=highest
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 9
export PYTHONPATH=/tmp/site
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 --version
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; git log -1 --format=%H; } 2>&1 | tee $OUT/env.txt
python3 -m dlmscale.data --vocab_size=1024 --seq_len=128 --val_fraction=0.2 > $OUT/prepare.log 2>&1 || { tail -5 $OUT/prepare.log; exit 8; }
W=/tmp/gx; STUDY=configs/cpu_study.py; S=s0.4M+s1M+s3M; COMMON="single_epoch=false,noise_seeds="
SET="--set eval.task_every=2 --set checkpoint.every_steps=3200 --nopin_cpus --noreport --grace_s=20 --status_every=60"
launch() {  # name, config argument, parallel
  timeout -s TERM ${LIMIT_S:-420} python3 -m launch.local --config="$STUDY:$2" --workdir=$W/$1 --parallel=$3 $SET \
    > $OUT/launch_$1.log 2>&1 &
  PIDS="$PIDS $!"
}
launch mdm51 "objectives=mdm,sizes=$S,unique=51200,epochs=256,$COMMON" 3
launch mdm204 "objectives=mdm,sizes=$S,unique=204800,epochs=64,$COMMON" 3
launch ar "objectives=ar,sizes=$S,unique=51200+204800,epochs=32,$COMMON" 3
( for i in $(seq 1 40); do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; sleep 10; done ) > $OUT/gpu_util.txt 2>&1 &
MON=$!
wait $PIDS
kill $MON 2>/dev/null
tar --exclude=checkpoints -czf $OUT/gpu_runs.tgz -C $W .
tail -n 12 $OUT/launch_*.log
echo ALLDONE
