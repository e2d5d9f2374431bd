#!/bin/bash
# One sitting of the one-GPU study (configs/gpu_study.py): train for at most SITTING_S seconds, then
# commit docs/gpu_study/: the report once every run has finished, else the progress so far. Run it
# again to continue: finished runs are skipped and a stopped run resumes from its last checkpoint.
# Runs of one shape train in stacks of as many as fit the GPU's memory (--stack=auto; the stack's
# log, runs/gpu_study/.stacks/<first run>.log, says how many and why).
# From the repository root, on the GPU machine.
set -u
W=${GPU_STUDY_WORKDIR:-runs/gpu_study}
LIMIT=$(python -c "from configs import gpu_study; print(gpu_study.SITTING_S)")
timeout -s TERM "$LIMIT" python -m launch.local --config=configs/gpu_study.py --workdir="$W" --parallel=1 \
  --stack=auto --noreport
if [ $? -eq 0 ]; then
  python -m analysis.report --runs="$W" --out=docs/gpu_study
else
  python -m launch.manifest --workdir="$W" > docs/gpu_study/PROGRESS.txt 2>&1
fi
git add docs/gpu_study && git commit -m "gpu study: one more sitting's runs, and the report once all have finished" -- docs/gpu_study
