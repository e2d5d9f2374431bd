#!/bin/bash
# Device check 2 (H200): capture the GPU target description, AOT-compile s1B for it, s100M train_bench.
export PYTHONUNBUFFERED=1 DLMSCALE_CACHE=/tmp/dlmcache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 9
export PYTHONPATH=/tmp/site
cd .aotwt
timeout 60 python3 bench/capture_gpu_target.py $OUT/h200_target.txtpb 2>&1 | tee $OUT/capture.log
timeout 150 python3 -m launch.aot --config=configs/datacons.py:scale=cluster,sizes=s1B,unique=25M,epochs=1 \
  --topology=gpu:1x1 --gpu_target_config=$OUT/h200_target.txtpb --set batch_size=16 --set eval.batch_size=16 \
  --nosuggest --json=$OUT/aot_gpu_s1B.json 2>&1 | tee $OUT/aot_gpu.log | tail -30
echo ALLDONE
