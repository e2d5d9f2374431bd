#!/bin/bash
# Device check 1 (H200): train_bench at the cluster grid's largest point, smaller sizes, grid_bench quickstart.
export PYTHONUNBUFFERED=1 DLMSCALE_CACHE=/tmp/dlmcache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 9
export PYTHONPATH=/tmp/site
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc;
  python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"; git log -1 --format=%H; } 2>&1 | tee $OUT/env.txt
timeout 210 python3 -m bench.train_bench --size s1B --objective ar,mdm --batch 16 --seq_len 2048 --vocab 50304 --remat full --steps 3 --warmup 2 --reps 3 --json_out $OUT/tb_s1B.jsonl 2>&1 | tee $OUT/tb_s1B.log | tail -25
timeout 140 python3 -m bench.train_bench --size s10M,s100M --objective ar,mdm --batch 32 --seq_len 1024 --vocab 50304 --steps 5 --warmup 2 --reps 3 --json_out $OUT/tb_small.jsonl 2>&1 | tee $OUT/tb_small.log | tail -12
timeout 160 python3 -m bench.grid_bench --json_out $OUT/grid_bench.jsonl 2>&1 | tee $OUT/grid_bench.log | tail -25
echo ALLDONE
